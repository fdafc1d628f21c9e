"""The CUDA backend: one cooperative launch of the generated megakernel per step.

At load: generate the source, compile it (NVRTC, cached on disk), allocate every buffer
on the GPU, and write the runtime state. Per shape bucket (first use, no compilation):
build the static schedule and upload its queues and event tables. Per step: copy the
step's inputs, launch, read the logits.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from eventkernel.compiler import Compiled
from eventkernel.cpu.backend import TORCH_DTYPES, StepResult
from eventkernel.cuda.codegen import POINTER_TABLE, KernelSource, generate
from eventkernel.cuda.compile import compile_cuda
from eventkernel.cuda.launch import LoadedModule, require_hopper
from eventkernel.cuda.records import TaskRecord
from eventkernel.cuda.tuning import KernelTuning
from eventkernel.cuda.wire import (BUCKET, DEBUG_STATE, ENTRY_EVENTS, RUNTIME, STEP_SHAPE,
                                   TASK_DESC, THREADS, TRACE_RECORD)
from eventkernel.engine.step import StepInputs
from eventkernel.events.bind import BoundEvents
from eventkernel.ir.graph import DType, TensorKind
from eventkernel.schedule.static import StaticSchedule

STEP_INPUTS = ("tokens", "positions", "query_start", "context_lens", "block_table",
               "slot_mapping", "logits_indices")


class KernelStuck(RuntimeError):
    """A debug build's bounded wait expired: the kernel stopped instead of hanging."""


class _Bucket:
    """Device copies of one bucket's static schedule and event tables."""

    def __init__(self, schedule: StaticSchedule, grid_kind, device,
                 buffers: dict[str, torch.Tensor] | None = None) -> None:
        bound: BoundEvents = schedule.bound
        if bound.extents and buffers is None:
            raise ValueError("a program with run-time extents needs the device buffers")
        coords = bound.plan.space.coords
        # Run-time counts: a wait's target -(1 + i) names entry i of runtime_counts.
        runtime = bound.runtime_counts
        runtime_index = {k: i for i, k in enumerate(sorted(runtime))}
        targets = bound.targets.astype(np.int64).copy()
        for k, i in runtime_index.items():
            targets[k] = -(1 + i)
        entries = [(g, t) for q in schedule.queues for g, t in q]
        # One pad entry (and one pad table element) at the end: the kernel reads an entry
        # ahead of the one it runs.
        desc = np.zeros(len(entries) + 1, TASK_DESC.dtype)
        events = np.zeros(len(entries) + 1, ENTRY_EVENTS.dtype)
        waits, notifies = [0], [0]
        wait_counter, wait_target, notify_counter = [], [], []
        i = 0
        for queue in schedule.queues:
            # A worker waits on a counter once: its later tasks run after that wait anyway.
            waited: set[int] = set()
            for g, t in queue:
                kind, slot = grid_kind[g]
                c = list(coords[g][t]) + [0, 0, 0]
                row = [k for k in bound.waits[g].row(t).tolist() if k not in waited]
                waited.update(row)
                notify = bound.notifies[g].row(t).tolist()
                extent = bound.grid_extent[g] if bound.grid_extent else None
                desc[i] = (kind, slot, c[0], c[1], c[2], len(row), len(notify),
                           0 if extent is None else 1 + extent[0])
                events[i] = (row[0] if row else 0, int(targets[row[0]]) if row else 0,
                             notify[0] if notify else 0, 0)
                i += 1
                wait_counter += row
                wait_target += targets[row].tolist()
                waits.append(len(wait_counter))
                notify_counter += notify
                notifies.append(len(notify_counter))
        begin = np.cumsum([0] + [len(q) for q in schedule.queues])

        def dev(values, dtype=torch.int32):
            return torch.tensor(np.asarray(values), dtype=dtype, device=device)

        self.tensors = {
            "queue": torch.from_numpy(desc.view(np.uint8).copy()).to(device),
            "events": torch.from_numpy(events.view(np.uint8).copy()).to(device),
            "queue_begin": dev(begin), "wait_begin": dev(waits),
            "wait_counter": dev(wait_counter + [0]), "wait_target": dev(wait_target + [0]),
            "notify_begin": dev(notifies), "notify_counter": dev(notify_counter + [0]),
            "extents": dev([buffers[name].data_ptr() + 4 * index
                            for name, index in bound.extents] + [0], torch.int64),
            "runtime_counts": dev([runtime[k] for k in sorted(runtime)] + [(0, 0, 0, 0)]),
        }
        record = {name: t.data_ptr() for name, t in self.tensors.items()}
        record |= {"num_counters": bound.num_counters, "num_workers": schedule.num_workers}
        self.table = torch.from_numpy(BUCKET.pack([record]).view(np.uint8).copy()).to(device)
        self.schedule = schedule


class CudaBackend:
    """Runs a compiled program as one persistent kernel per step on a Hopper GPU.

    Build modes: ``debug`` (bounded event waits: a stuck step raises KernelStuck) and
    ``trace`` (per-task timestamps, :meth:`trace_records`); ``tuning``: the kernel's tuning
    constants (default: the measured best)."""

    name = "cuda"

    def __init__(self, compiled: Compiled, weights: dict[str, torch.Tensor], *,
                 debug: bool = False, trace: bool = False, device: int | None = None,
                 cache_dir: str | None = None, tuning: KernelTuning = KernelTuning(),
                 kernel_dir: str | None = None) -> None:
        if compiled.limits.dtype is not DType.BF16:
            raise ValueError("the CUDA backend runs bf16 programs: compile with dtype bf16")
        info = require_hopper(device)
        self.device = torch.device("cuda", torch.cuda.current_device() if device is None
                                   else device)
        self.compiled = compiled
        self.debug = debug
        self.trace = trace
        self.tuning = tuning
        self.num_workers = info.sm_count
        start = time.perf_counter()
        self.kernel_source: KernelSource = generate(compiled.program, trace=trace,
                                                    tuning=tuning)
        if kernel_dir is not None:       # ahead of time: `eventkernel compile`
            from eventkernel.cuda.aot import load_kernel
            cubin = load_kernel(kernel_dir, self.kernel_source)
        else:
            cubin = compile_cuda(self.kernel_source.source, debug=debug, cache_dir=cache_dir,
                                 name="ek_step").cubin
        self.compile_s = time.perf_counter() - start
        self.module = LoadedModule(cubin)
        self.smem = self._smem_bytes()
        self.func = self.module.get_function("ek_step", max_dynamic_smem=self.smem)
        self._allocate(weights)
        self.buckets: dict[tuple, _Bucket] = {}

    def _smem_bytes(self) -> int:
        func = self.module.get_function("ek_smem_sizes")
        out = torch.zeros(self.kernel_source.num_smem_entries, dtype=torch.int32,
                          device=self.device)
        self.module.launch(func, 1, 1, 0, [out])
        return max(1024, int(out.max().item()))

    def _allocate(self, weights: dict[str, torch.Tensor]) -> None:
        program = self.compiled.program
        hull = program.max_binding
        self.buffers: dict[str, torch.Tensor] = {}
        for name in self.kernel_source.buffers:
            tensor = program.tensors[name]
            dtype = TORCH_DTYPES[tensor.dtype]
            if tensor.kind is TensorKind.WEIGHT:
                self.buffers[name] = weights[name].to(self.device, dtype).contiguous()
            else:
                self.buffers[name] = torch.zeros(tensor.concrete_shape(hull), dtype=dtype,
                                                 device=self.device)
        pointers = [self.buffers[n].data_ptr() for n in self.kernel_source.buffers]
        pointer_table = torch.tensor(pointers, dtype=torch.uint64, device=self.device)
        torch.cuda.synchronize(self.device)
        self.module.copy_to_global(POINTER_TABLE, pointer_table.data_ptr(), 8 * len(pointers))
        num_counters = sum(e.size for e in self.compiled.plan.events)
        self.counters = torch.zeros(2 * max(1, num_counters), dtype=torch.int32,
                                    device=self.device)
        self.step_state = torch.zeros(2, dtype=torch.int32, device=self.device)
        self.debug_state = torch.zeros(DEBUG_STATE.dtype.itemsize, dtype=torch.uint8,
                                       device=self.device)
        max_tasks = sum(len(c) for c in self.compiled.plan.space.coords)
        trace_bytes = TRACE_RECORD.dtype.itemsize * (max_tasks if self.trace else 1)
        self.trace_buffer = torch.zeros(trace_bytes, dtype=torch.uint8, device=self.device)
        # StepShape (wire.py): the input pointers are fixed; prepare() writes the counts.
        self.shape_image = STEP_SHAPE.pack([{
            "num_tokens": 0, "num_seqs": 0,
            "max_pages_per_seq": self.compiled.limits.pages_per_seq,
            **{name: self.buffers[name].data_ptr() for name in STEP_INPUTS}}])
        self.shape_host = torch.from_numpy(self.shape_image.view(np.uint8)).pin_memory()
        self.shape_dev = torch.zeros_like(self.shape_host, device=self.device)
        record = {"counters": self.counters.data_ptr(), "max_counters": max(1, num_counters),
                  "pad0": 0, "step": self.step_state.data_ptr(),
                  "debug": self.debug_state.data_ptr() if self.debug else 0,
                  "shape": self.shape_dev.data_ptr(),
                  "trace": self.trace_buffer.data_ptr() if self.trace else 0}
        self.runtime = torch.from_numpy(RUNTIME.pack([record]).view(np.uint8).copy()).to(
            self.device)
        self.inputs_host = {n: torch.zeros_like(self.buffers[n], device="cpu").pin_memory()
                            for n in STEP_INPUTS}

    def bucket(self, bucket: dict[str, int]) -> _Bucket:
        key = tuple(sorted(bucket.items()))
        if key not in self.buckets:
            schedule = self.compiled.static(bucket, self.num_workers)
            self.buckets[key] = _Bucket(schedule, self.kernel_source.grid_kind, self.device,
                                        self.buffers)
        return self.buckets[key]

    def launch(self, bucket: _Bucket) -> None:
        self.module.launch_cooperative(self.func, self.num_workers, THREADS, self.smem,
                                       [self.runtime, bucket.table])

    def prepare(self, inputs: StepInputs) -> _Bucket:
        """Copy the step's inputs and shape to the GPU (asynchronously)."""
        bucket = self.bucket(self.compiled.bucket(inputs.num_tokens, inputs.num_seqs))
        inputs.write(self.inputs_host)
        for name in STEP_INPUTS:
            self.buffers[name].copy_(self.inputs_host[name], non_blocking=True)
        shape = self.shape_host.numpy().view(STEP_SHAPE.dtype)
        shape["num_tokens"], shape["num_seqs"] = inputs.num_tokens, inputs.num_seqs
        self.shape_dev.copy_(self.shape_host, non_blocking=True)
        return bucket

    def run(self, inputs: StepInputs) -> StepResult:
        bucket = self.prepare(inputs)
        self.launch(bucket)
        if self.debug:
            self.check_debug(bucket)
        s = inputs.num_seqs
        return StepResult(self.buffers["logits"][:s].float().cpu(),
                          self.buffers["next_tokens"][:s].cpu())

    def trace_records(self, bucket: _Bucket) -> list[TaskRecord]:
        """The last launch's tasks as timeline records (instrumented build only)."""
        if not self.trace:
            raise RuntimeError("this backend was built without trace=True")
        raw = self.trace_buffer.cpu().numpy().view(TRACE_RECORD.dtype)
        grids = self.compiled.program.grids
        coords = self.compiled.plan.space.coords
        records = []
        entries = [(g, t) for q in bucket.schedule.queues for g, t in q]
        origin = int(raw["wait_start"][:len(entries)].min())
        for e, (g, t) in enumerate(entries):
            wait0, run0, end, sm = (int(v) for v in raw[e])
            c = tuple(int(v) for v in coords[g][t])
            cost = grids[g].cost(c, bucket.schedule.bound.binding)
            records.append(TaskRecord(int(sm), grids[g].task_type, c, run0 - origin,
                                      end - origin, run0 - wait0,
                                      cost.weight_bytes + cost.activation_bytes))
        return records

    def check_debug(self, bucket: _Bucket) -> None:
        state = self.debug_state.cpu().numpy().view(DEBUG_STATE.dtype)[0]
        if not state["abort"]:
            return
        worker, entry, counter, observed, target = (
            int(state[f]) for f in ("worker", "task", "event", "observed", "target"))
        grids = self.compiled.program.grids
        schedule = bucket.schedule
        flat = [(g, t) for q in schedule.queues for g, t in q]
        g, t = flat[entry]
        coords = tuple(int(v) for v in self.compiled.plan.space.coords[g][t])
        bound = schedule.bound
        eid = int(np.searchsorted(bound.counter_base, counter, "right") - 1)
        event = self.compiled.plan.events[eid]
        raise KernelStuck(
            f"worker {worker} stopped in task {grids[g].name}{coords}: it waited on "
            f"{event.name}[{counter - bound.counter_base[eid]}] ({grids[event.producer].name}"
            f" -> {grids[event.consumer].name}) which had {observed} of {target} notifies")
