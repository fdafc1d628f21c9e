"""The megakernel as a benchmark runner: ``runner(config, num_tokens, context_len) -> step``.

Each step is ``num_tokens`` sequences decoding one token each with ``context_len`` tokens
of context, launched exactly as the engine launches it (inputs already on the GPU).
"""
from __future__ import annotations

import time
from typing import Any

from eventkernel.build import BuildOptions, build
from eventkernel.cuda.tuning import KernelTuning
from eventkernel.engine.kv_cache import BlockManager
from eventkernel.engine.step import build_step


class MegakernelRunner:
    """Compiles each model once (for the largest batch and context asked for) and
    serves every (tokens, context) point from that one kernel."""

    def __init__(self, max_tokens: int, max_context: int, seed: int = 0,
                 trace: bool = False, tuning: KernelTuning = KernelTuning(),
                 cold_compile: bool = True, passes: dict | None = None,
                 target: dict | None = None) -> None:
        """``tuning``: the kernel's tuning constants; ``passes``: keyword arguments of
        ``compile_model`` (e.g. ``{"fuse_silu_mul": True}``); ``target``: fields of the
        ``Target`` the program is cut for (e.g. ``{"waves": 2}``: fewer, larger tasks);
        ``cold_compile``: also time a kernel compile into an empty cache (the warm-up
        report's cold figure; costs one more compile per model, in a worker process, unless
        ``precompile()`` did it before)."""
        self.max_tokens, self.max_context, self.seed = max_tokens, max_context, seed
        self.trace, self.tuning, self.cold_compile = trace, tuning, cold_compile
        self.passes, self.target = passes or {}, target or {}
        if set(self.passes) - {"fuse_silu_mul"}:
            raise ValueError(f"unknown compile passes {sorted(set(self.passes))}; "
                             f"known: fuse_silu_mul")
        self.backends: dict[str, Any] = {}
        self.build_parts_s: dict[str, float] = {}  # of the last model built
        self.precompiled: dict[str, dict[str, float]] = {}  # config key -> cold figures
        self._background: Any = None  # a precompile running in a thread (a Future)

    def precompile(self, configs: list[dict], num_workers: int, processes: int = 4,
                   cache_dir: str | None = None) -> float:
        """Compile the kernels of ``configs`` cold, in parallel worker processes (CPU only),
        into the disk cache the backends then load from; returns the wall time. Do it before
        anything is timed: the workers would take CPU from the baselines' compiles.

        Each worker starts with an empty HOME, cache and temporary directory, so that the
        cold figure cannot come from a cache keyed on the user's directories (on the GPU
        machine a "cold" compile in the same process once took 0.2 s instead of ~30 s)."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from eventkernel.cuda.compile import DEFAULT_CACHE_DIR
        cache_dir = str(cache_dir or DEFAULT_CACHE_DIR)  # the workers' HOME is not ours
        jobs = [(self._params(), config, num_workers, cache_dir)
                for config in configs if _key(config) not in self.precompiled]
        if not jobs:
            return 0.0
        start = time.perf_counter()
        with ProcessPoolExecutor(min(processes, len(jobs)), initializer=_empty_user_dirs,
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            for (_, config, _, _), cold in zip(jobs, pool.map(_precompile_job, jobs)):
                self.precompiled[_key(config)] = cold
        return time.perf_counter() - start

    def precompile_in_background(self, configs: list[dict], num_workers: int,
                                 processes: int = 4, cache_dir: str | None = None) -> None:
        """``precompile`` in a thread, while the baselines compile; the first ``backend()``
        (or ``wait_for_precompile()``) waits for it."""
        from concurrent.futures import ThreadPoolExecutor
        pool = ThreadPoolExecutor(1, thread_name_prefix="ek-precompile")
        self._background = pool.submit(self.precompile, configs, num_workers, processes,
                                       cache_dir)
        pool.shutdown(wait=False)

    def wait_for_precompile(self) -> float | None:
        """Wall seconds of the background precompile (None if none ran); raises its error."""
        if self._background is None:
            return None
        return self._background.result()

    def _params(self) -> dict:
        return {"max_tokens": self.max_tokens, "max_context": self.max_context,
                "trace": self.trace, "tuning": self.tuning, "passes": self.passes,
                "target": self.target}

    def backend(self, config: dict):
        from eventkernel.cuda.launch import device_info
        key = _key(config)
        if key not in self.backends:
            self.wait_for_precompile()
            self.backends.clear()                         # one model on the GPU at a time
            if key not in self.precompiled and self.cold_compile:
                self.precompile([config], device_info().sm_count)  # in this build's time
            cold = self.precompiled.get(key)
            built = build(config, self.options_for(None), stage="backend")
            backend, parts = built.backend, built.timings
            # The backend's own compile hits the disk cache the cold compile just filled.
            self.build_parts_s = {"compiler passes": parts["compile"],
                                  "weights": parts["weights"], **(cold or {}),
                                  "kernel warm cache": backend.compile_s,
                                  "load + tables": parts["backend"] - backend.compile_s}
            self.backends[key] = backend
        return self.backends[key]

    def compile(self, config: dict, num_workers: int):
        """The compiled program this runner builds for ``config`` (no GPU needed)."""
        return build(config, self.options_for(num_workers), stage="compiled").compiled

    def program(self, config: dict, num_workers: int):
        """The task program of ``config``: what the kernel's source is generated from."""
        return build(config, self.options_for(num_workers), stage="program").program

    def options_for(self, num_workers: int | None) -> BuildOptions:
        """The build options of this runner's kernels, cut for ``num_workers`` (None: the
        GPU's SM count): every point's batch and context fit in one program."""
        return BuildOptions(backend="cuda", max_tokens_per_step=self.max_tokens,
                            max_seqs=self.max_tokens, max_context=self.max_context + 16,
                            dtype="bf16", num_workers=num_workers, target=self.target,
                            fuse_silu_mul=bool(self.passes.get("fuse_silu_mul", False)),
                            tuning=self.tuning, trace=self.trace, seed=self.seed)

    def compile_kernel(self, program, cache_dir: str | None = None, refresh: bool = False):
        """Generate and compile the kernel of ``program`` (a task program) into the disk
        cache the backend will load from (no GPU needed), with this runner's trace flag and
        tuning; ``refresh``: compile even when it is cached. Returns the
        CompiledKernel."""
        from eventkernel.cuda.codegen import generate
        from eventkernel.cuda.compile import compile_cuda
        source = generate(program, trace=self.trace, tuning=self.tuning).source
        return compile_cuda(source, cache_dir=cache_dir, name="ek_step", refresh=refresh)

    def _cold_kernel_compile(self, program, cache_dir: str | None = None) -> dict[str, float]:
        """Generate + compile the kernel as a first run would, then store it in the cache:
        {"kernel cold cache": generate + compile seconds, "nvrtc": NVRTC's own seconds}."""
        t0 = time.perf_counter()
        kernel = self.compile_kernel(program, cache_dir, refresh=True)
        return {"kernel cold cache": time.perf_counter() - t0, "nvrtc": kernel.compile_seconds}

    def __call__(self, config: dict, num_tokens: int, context_len: int):
        backend = self.backend(config)
        limits = backend.compiled.limits
        blocks = BlockManager(limits.total_pages, limits.page_size, limits.pages_per_seq)
        chunks = []
        for seq in range(num_tokens):
            blocks.allocate(seq, context_len - 1)
            chunks.append((seq, context_len - 1, [(7 * seq + 3) % 1000]))
        bucket = backend.prepare(build_step(chunks, blocks))

        def step() -> None:
            backend.launch(bucket)
        step.reset = lambda: None
        step.predicted_ms = bucket.schedule.predicted_s * 1e3     # the CPU-side simulation
        step.backend = backend
        step.bucket = bucket
        return step

    def close(self) -> None:
        self.backends.clear()


def _key(config: dict) -> str:
    return repr(sorted(config.items()))


def _empty_user_dirs() -> None:
    """Worker initializer: fresh, empty HOME, cache and temporary directories."""
    import os
    import tempfile
    root = tempfile.mkdtemp(prefix="ek-cold-")
    for var, sub in (("HOME", "home"), ("XDG_CACHE_HOME", "cache"), ("TMPDIR", "tmp")):
        os.makedirs(os.path.join(root, sub))
        os.environ[var] = os.path.join(root, sub)
    tempfile.tempdir = None  # re-read TMPDIR


def _precompile_job(job) -> dict[str, float]:
    params, config, num_workers, cache_dir = job
    runner = MegakernelRunner(params["max_tokens"], params["max_context"],
                              trace=params["trace"], tuning=params["tuning"],
                              passes=params["passes"], target=params["target"])
    # The events are not needed for the kernel's source: the bench process derives them.
    return runner._cold_kernel_compile(runner.program(config, num_workers), cache_dir)


def trace_step(config: dict, num_tokens: int, context_len: int, path: str) -> list:
    """Run one decode step of an instrumented build and write its timeline to ``path``
    (Chrome trace JSON, one track per SM); prints the per-type and per-SM summary."""
    import torch

    from eventkernel.bench.trace import summarize, to_chrome_trace
    runner = MegakernelRunner(num_tokens, context_len, trace=True, cold_compile=False)
    step = runner(config, num_tokens, context_len)
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    records = step.backend.trace_records(step.bucket)
    to_chrome_trace(records, path)
    summarize(records)
    runner.close()
    return records
