"""Time build variants of the megakernel on batch-1 decode steps (one device call).

Usage (repository root, on the GPU machine):
  PYTHONPATH=. python3 scripts/variants.py MODELS [VARIANTS] [--trace] [--tokens=N,...]

MODELS: comma-separated presets. VARIANTS: comma-separated names from VARIANTS below
(default: all). Every (model, variant) kernel is first compiled in parallel into the
kernel cache (CPU only), then each variant is timed alone, untraced, context 512, at
each N tokens per step (N sequences of one token; default 1).
``--trace`` times instrumented builds instead and prints the mean linear task time.
"""
from __future__ import annotations

import multiprocessing
import sys
import time

from eventkernel.cuda.tuning import KernelTuning

# name -> kernel tuning; COMPILE_PASSES and TARGETS: variants that change the compile
# passes or the tiling target instead. (The weight-ring variants are gone with the ring: it
# was slower than the GEMV tasks with L2 look-ahead, bench/results/README.md.)
DEFAULT = KernelTuning()
VARIANTS = {
    "baseline": DEFAULT,                              # GEMV tasks (tensor cores from 2 rows);
                                                      # L2 asked for the first 32 KB of the
                                                      # next task's weights
    "fused-gate": DEFAULT,                            # silu_mul fused into down_proj
    "waves-2": DEFAULT,                               # at most 2 linear tasks per worker
    "waves-1": DEFAULT,                               # ... one (fewer, larger tasks)
    "no-l2-prefetch": DEFAULT.replace(lookahead=0),
    "l2-16k": DEFAULT.replace(l2_prefetch_bytes=16384),
    "l2-64k": DEFAULT.replace(l2_prefetch_bytes=65536),
    "l2-2-tasks": DEFAULT.replace(lookahead=2),
    "l2-whole-tiles": DEFAULT.replace(lookahead=2, l2_prefetch_bytes=0),  # before session 5
    "sleep-256": DEFAULT.replace(wait_max_sleep_ns=256),  # longer wait backoff
    "gemv-batch-8": DEFAULT.replace(gemv_batch=8),    # fewer weight loads in flight
    "gemv-late": DEFAULT.replace(gemv_early=False),   # first weight batch after the wait
    "no-mma-gemv": DEFAULT.replace(mma_gemv_min_rows=0),  # every GEMV on CUDA cores
    "mma-gemv-4": DEFAULT.replace(mma_gemv_min_rows=4),   # 2-3 rows on CUDA cores
    "mma-batch-8": DEFAULT.replace(mma_gemv_batch=8),  # tensor-core GEMV: 8 steps in flight
    "mma-groups-1": DEFAULT.replace(mma_gemv_groups=1),  # LinearTask above 16 rows (before
                                                      # session 8: the tensor-core GEMV
                                                      # runs up to 64 rows, 16 at a time)
    "mma-early": DEFAULT.replace(mma_gemv_batch=8, mma_gemv_groups=1,  # + first batch before
                                 mma_gemv_early=True),  # the wait (session 6; spills)
    "fence": DEFAULT.replace(notify_fence=True),      # a full fence before each notify
}
COMPILE_PASSES = {"fused-gate": {"fuse_silu_mul": True}}
TARGETS = {"waves-2": {"waves": 2}, "waves-1": {"waves": 1}}
CONTEXT = 512


def _precompile(job: tuple[str, str, bool, int, int]) -> str:
    """Compile one variant into the kernel cache exactly as MegakernelRunner will ask."""
    model, name, trace, sm_count, tokens = job
    from eventkernel.models.presets import preset_config
    start = time.perf_counter()
    runner = _runner(name, trace, tokens)
    runner.compile_kernel(runner.program(preset_config(model), sm_count))
    return f"{model} {name} {tokens} tok: {time.perf_counter() - start:.0f} s"


def _runner(name: str, trace: bool, tokens: int = 1, **kwargs):
    """The benchmark runner that builds variant ``name`` for ``tokens`` tokens per step."""
    from eventkernel.bench.megakernel import MegakernelRunner
    return MegakernelRunner(tokens, CONTEXT, trace=trace,
                            tuning=VARIANTS[name],
                            passes=COMPILE_PASSES.get(name), target=TARGETS.get(name), **kwargs)


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    trace = "--trace" in sys.argv
    token_list = next(([int(t) for t in a.split("=", 1)[1].split(",")]
                       for a in sys.argv if a.startswith("--tokens=")), [1])
    models = args[0].split(",")
    names = args[1].split(",") if len(args) > 1 else list(VARIANTS)
    from eventkernel.cuda.launch import device_info
    sm_count = device_info().sm_count
    jobs = [(m, n, trace, sm_count, t) for m in models for n in names for t in token_list]
    with multiprocessing.get_context("spawn").Pool(min(len(jobs), 14)) as pool:
        for line in pool.imap_unordered(_precompile, jobs):
            print("compiled", line, flush=True)

    import torch

    from eventkernel.bench.timing import time_fn
    from eventkernel.models.presets import preset_config
    rows = []
    for model, name, _, _, tokens in jobs:
        runner = _runner(name, trace, tokens, cold_compile=False)
        step = runner(preset_config(model), tokens, CONTEXT)
        ms = time_fn(step, 10, 100, device="cuda").median_ms
        linear_us = float("nan")
        if trace:
            torch.cuda.synchronize()
            lin = [r for r in step.backend.trace_records(step.bucket)
                   if r.task_type == "linear"]
            linear_us = sum(r.end_ns - r.start_ns for r in lin) / len(lin) / 1e3
        rows.append((model, name, tokens, ms, linear_us))
        print(f"{model:<14}{name:<16}{tokens:>4}{ms:8.3f} ms", flush=True)
        runner.close()
        torch.cuda.empty_cache()
    print(f"{'model':<14}{'variant':<16}{'tok':>4}{'ms/step':>10}{'linear us':>12}")
    for model, name, tokens, ms, lin in rows:
        print(f"{model:<14}{name:<16}{tokens:>4}{ms:>10.3f}{lin:>12.2f}")


if __name__ == "__main__":
    main()
