"""The megakernel as a benchmark runner: ``runner(config, num_tokens, context_len) -> step``.

Each step is ``num_tokens`` sequences decoding one token each with ``context_len`` tokens
of context, launched exactly as the engine launches it (inputs already on the GPU).
"""
from __future__ import annotations

import time
from typing import Any

from eventkernel.compiler import compile_model
from eventkernel.engine.kv_cache import BlockManager
from eventkernel.engine.step import build_step
from eventkernel.ir.graph import DType
from eventkernel.lower import Target
from eventkernel.models.config import Limits, ModelConfig
from eventkernel.models.decoder import random_graph_weights


class MegakernelRunner:
    """Compiles each model once (for the largest batch and context asked for) and
    serves every (tokens, context) point from that one kernel."""

    def __init__(self, max_tokens: int, max_context: int, seed: int = 0,
                 trace: bool = False, options: tuple[str, ...] = (),
                 cold_compile: bool = True, passes: dict | None = None,
                 target: dict | None = None) -> None:
        """``options``: kernel build options (``-D...``); ``passes``: keyword arguments of
        ``compile_model`` (e.g. ``{"fuse_silu_mul": True}``); ``target``: fields of the
        ``Target`` the program is cut for (e.g. ``{"waves": 2}``: fewer, larger tasks);
        ``cold_compile``: also time a kernel compile into an empty cache (the warm-up
        report's cold figure; costs one more compile per model)."""
        self.max_tokens, self.max_context, self.seed = max_tokens, max_context, seed
        self.trace, self.options, self.cold_compile = trace, options, cold_compile
        self.passes, self.target = passes or {}, target or {}
        self.backends: dict[str, Any] = {}
        self.build_parts_s: dict[str, float] = {}  # of the last model built

    def backend(self, config: dict):
        from eventkernel.cuda.backend import CudaBackend
        from eventkernel.cuda.launch import device_info
        key = repr(sorted(config.items()))
        if key not in self.backends:
            self.backends.clear()                         # one model on the GPU at a time
            t0 = time.perf_counter()
            compiled = self.compile(config, device_info().sm_count)
            t1 = time.perf_counter()
            weights = random_graph_weights(compiled.graph, self.seed, "cuda")
            t2 = time.perf_counter()
            cold_s = self._cold_kernel_compile_s(compiled) if self.cold_compile else 0.0
            t3 = time.perf_counter()
            backend = CudaBackend(compiled, weights, trace=self.trace, options=self.options)
            t4 = time.perf_counter()
            # The backend's own compile hits the disk cache the cold compile just filled.
            self.build_parts_s = {"compiler passes": t1 - t0, "weights": t2 - t1,
                                  "kernel cold cache": cold_s,
                                  "kernel warm cache": backend.compile_s,
                                  "load + tables": t4 - t3 - backend.compile_s}
            self.backends[key] = backend
        return self.backends[key]

    def compile(self, config: dict, num_workers: int):
        """The compiled program this runner builds for ``config`` (no GPU needed)."""
        limits = Limits(max_tokens=self.max_tokens, max_seqs=self.max_tokens,
                        max_context=self.max_context + 16, dtype=DType.BF16)
        target = Target(num_workers=num_workers, **self.target)
        return compile_model(ModelConfig.from_hf(config), limits, target, **self.passes)

    def compile_kernel(self, compiled, cache_dir: str | None = None) -> None:
        """Generate and compile the kernel the backend will load into the disk cache (no
        GPU needed), with this runner's trace flag and build options."""
        from eventkernel.cuda.codegen import generate
        from eventkernel.cuda.compile import compile_cuda
        source = generate(compiled.program, trace=self.trace).source
        compile_cuda(source, options=self.options, cache_dir=cache_dir, name="ek_step")

    def _cold_kernel_compile_s(self, compiled) -> float:
        """Generate + compile the kernel into an empty cache (what a first run pays)."""
        import tempfile
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as cache:
            self.compile_kernel(compiled, cache)
        return time.perf_counter() - t0

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
