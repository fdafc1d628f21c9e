"""The CPU backend: buffers for a compiled program and steps run by the CPU executor."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from eventkernel.compiler import Compiled
from eventkernel.cpu.executor import RunOptions, poison, run_dynamic, run_static
from eventkernel.engine.step import StepInputs
from eventkernel.ir.graph import DType, TensorKind
from eventkernel.tasks import Step

TORCH_DTYPES = {DType.BF16: torch.bfloat16, DType.F32: torch.float32, DType.I32: torch.int32}


@dataclass
class StepResult:
    logits: torch.Tensor          # [S, vocab] fp32
    next_tokens: torch.Tensor     # [S] greedy tokens


class CpuBackend:
    """Runs a compiled program on CPU worker threads.

    ``schedule``: "static" (one queue per worker, from the cost model) or "dynamic"
    (a shared ready queue). ``seed``: draw random interleavings (jitter / pop order).
    """

    name = "cpu"

    def __init__(self, compiled: Compiled, weights: dict[str, torch.Tensor],
                 num_workers: int = 4, schedule: str = "static", seed: int | None = None,
                 poison_intermediates: bool = True, timeout_s: float = 60.0) -> None:
        if schedule not in ("static", "dynamic"):
            raise ValueError(f"schedule must be 'static' or 'dynamic', got {schedule!r}")
        self.compiled = compiled
        self.num_workers = num_workers
        self.schedule = schedule
        self.options = RunOptions(seed=seed, timeout_s=timeout_s)
        self.poison_intermediates = poison_intermediates
        program = compiled.program
        hull = program.max_binding
        self.buffers: dict[str, torch.Tensor] = {}
        for name, tensor in program.tensors.items():
            if tensor.kind is TensorKind.WEIGHT:
                if name not in weights:
                    raise KeyError(f"weight {name!r} was not provided")
                self.buffers[name] = weights[name]
            else:
                # NOTE: state (the KV cache, most of the memory) is left unwritten, as on the
                # GPU: a slot is read only after this step or an earlier one wrote it, and
                # zeroing gigabytes was most of the CPU backend's start-up.
                alloc = torch.empty if tensor.kind is TensorKind.STATE else torch.zeros
                self.buffers[name] = alloc(tensor.concrete_shape(hull),
                                           dtype=TORCH_DTYPES[tensor.dtype])
        self.intermediates = [n for n, t in program.tensors.items()
                              if t.kind in (TensorKind.ACTIVATION, TensorKind.OUTPUT)]
        self.row_dims = {n: t.shape[0] for n, t in program.tensors.items() if t.shape}

    def reseed(self, seed: int | None) -> None:
        self.options = RunOptions(seed=seed, timeout_s=self.options.timeout_s)

    def run(self, inputs: StepInputs) -> StepResult:
        bucket = self.compiled.bucket(inputs.num_tokens, inputs.num_seqs)
        inputs.write(self.buffers)
        if self.poison_intermediates:
            poison(self.buffers, self.intermediates)
        step = Step(inputs.num_tokens, inputs.num_seqs, self.buffers, self.row_dims)
        if self.schedule == "static":
            run_static(self.compiled.static(bucket, self.num_workers), step, self.options)
        else:
            run_dynamic(self.compiled.dynamic(bucket), self.num_workers, step, self.options)
        s = inputs.num_seqs
        return StepResult(self.buffers["logits"][:s].clone(),
                          self.buffers["next_tokens"][:s].clone())
