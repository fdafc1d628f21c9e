"""Trace one decode step of a preset on the GPU: per-task timeline and summary.

Usage: PYTHONPATH=. python3 scripts/trace_step.py MODEL TOKENS CONTEXT OUT.json
"""
from __future__ import annotations

import sys

import torch

from eventkernel.bench.megakernel import MegakernelRunner
from eventkernel.bench.trace import summarize, to_chrome_trace
from eventkernel.models.presets import preset_config


def main() -> None:
    model, tokens, context, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    runner = MegakernelRunner(max(tokens, 1), context, trace=True)
    step = runner(preset_config(model), tokens, context)
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    records = step.backend.trace_records(step.bucket)
    to_chrome_trace(records, out)
    summarize(records)
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
