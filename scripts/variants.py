"""Time build variants of the megakernel on one preset step (one device call).

Usage: PYTHONPATH=. python3 scripts/variants.py MODEL TOKENS CONTEXT
"""
from __future__ import annotations

import sys

import torch

from eventkernel.bench.megakernel import MegakernelRunner
from eventkernel.bench.timing import time_fn
from eventkernel.models.presets import preset_config

VARIANTS = {
    "baseline": (),                                   # GEMV tasks, L2 prefetch 2 tasks ahead
    "no-l2-prefetch": ("-DEK_LOOKAHEAD=0",),
    "lookahead-4": ("-DEK_LOOKAHEAD=4",),
    "no-fence": ("-DEK_NOTIFY_NO_FENCE",),
    "weight-ring": ("-DEK_WEIGHT_RING",),             # the worker-wide shared-memory ring
    "ring-2": ("-DEK_WEIGHT_RING", "-DEK_RING_STAGES=2"),
    "ring-no-l2": ("-DEK_WEIGHT_RING", "-DEK_RING_NO_L2_PREFETCH"),
    "ring-inline-pump": ("-DEK_WEIGHT_RING", "-DEK_RING_INLINE_PUMP"),
}


def _print_ring_phases(step) -> None:
    """Mean phases of the ring linear tasks per linear name (weight-ring trace builds)."""
    raw = step.backend.trace_buffer.cpu().view(-1, 8).tolist()
    grids = step.backend.compiled.program.grids
    entries = [g for q in step.bucket.schedule.queues for g, _ in q]
    by_name: dict[str, list] = {}
    for e, g in enumerate(entries):
        if grids[g].task_type != "linear":
            continue
        wait0, run0, end, _, staged, chunks_done, chunk_wait, pump = raw[e]
        if staged == 0:
            continue
        name = grids[g].name.split(".")[-1]
        by_name.setdefault(name, []).append(
            (staged - run0, chunks_done - staged, chunk_wait, pump, end - chunks_done))
    print(f"  {'linear':<14}{'n':>6}{'stage':>8}{'chunks':>8}{'c-wait':>8}{'pump':>8}{'tail':>8} us")
    agg: dict[str, list] = {}
    for name, vals in by_name.items():
        agg.setdefault(name.split(":")[-1], []).extend(vals)
    for name, vals in sorted(agg.items()):
        m = [sum(v[i] for v in vals) / len(vals) / 1e3 for i in range(5)]
        print(f"  {name:<14}{len(vals):>6}" + "".join(f"{x:>8.2f}" for x in m))


def main() -> None:
    model, tokens, context = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    names = sys.argv[4].split(",") if len(sys.argv) > 4 else list(VARIANTS)
    rows = []
    for name in names:
        runner = MegakernelRunner(tokens, context, trace=True, options=VARIANTS[name])
        step = runner(preset_config(model), tokens, context)
        t = time_fn(step, 5, 30, device="cuda")
        torch.cuda.synchronize()
        recs = step.backend.trace_records(step.bucket)
        lin = [r for r in recs if r.task_type == "linear"]
        mean = sum(r.end_ns - r.start_ns for r in lin) / len(lin) / 1e3
        rows.append((name, t.median_ms, mean))
        if "-DEK_WEIGHT_RING" in VARIANTS[name]:
            _print_ring_phases(step)
        runner.close()
        torch.cuda.empty_cache()
    print(f"{'variant':<16}{'ms/step':>10}{'linear us':>12}")
    for name, ms, lin in rows:
        print(f"{name:<16}{ms:>10.3f}{lin:>12.2f}")


if __name__ == "__main__":
    main()
