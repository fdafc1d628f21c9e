"""Trace one decode step of a preset on the GPU: per-task timeline and summary.

Usage: PYTHONPATH=. python3 scripts/trace_step.py MODEL TOKENS CONTEXT OUT.json
(the same as ``eventkernel bench --models MODEL --tokens TOKENS --contexts CONTEXT
--trace OUT.json``, without the benchmarks).
"""
from __future__ import annotations

import sys

from eventkernel.bench.megakernel import trace_step
from eventkernel.models.presets import preset_config


def main() -> None:
    model, tokens, context, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    records = trace_step(preset_config(model), tokens, context, out)
    by_type: dict[str, list] = {}
    for r in records:
        by_type.setdefault(r.task_type, []).append(r)
    span = max(r.end_ns for r in records) - min(r.start_ns - r.wait_ns for r in records)
    print(f"step span {span / 1e3:.1f} us over {len(records)} tasks")
    for kind, rs in sorted(by_type.items()):
        run = sum(r.end_ns - r.start_ns for r in rs) / len(rs) / 1e3
        wait = sum(r.wait_ns for r in rs) / len(rs) / 1e3
        print(f"{kind:>12}: {len(rs):6d} tasks, run {run:7.2f} us, wait {wait:7.2f} us")


if __name__ == "__main__":
    main()
