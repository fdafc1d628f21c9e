"""``eventkernel inspect``: build, lower, derive, verify and schedule, then summarise."""
from __future__ import annotations

import time

from eventkernel.build import BuildOptions, build
from eventkernel.events.verify import verify
from eventkernel.ir.graph import DType
from eventkernel.models.config import Limits


def limit_options(limits: Limits, workers: int | None) -> BuildOptions:
    """The build options of a program cut for ``workers`` CUDA workers within ``limits``
    (nothing runs: no GPU needed)."""
    if limits.num_pages:
        raise ValueError("inspect and compile size the KV cache themselves: leave num_pages 0")
    return BuildOptions(backend="cuda", max_tokens_per_step=limits.max_tokens,
                        max_seqs=limits.max_seqs, max_context=limits.max_context,
                        page_size=limits.page_size,
                        dtype="bf16" if limits.dtype is DType.BF16 else "f32",
                        num_workers=workers)


def fingerprint_buckets(limits: Limits) -> list[dict[str, int]]:
    """The buckets a fingerprint covers: the smallest, a middle one and the largest."""
    return [{"T": 1, "S": 1},
            {"T": min(16, limits.max_tokens), "S": min(8, limits.max_seqs, limits.max_tokens)},
            {"T": limits.max_tokens, "S": limits.max_seqs}]


def fingerprint_model(model: str, limits: Limits | BuildOptions, workers: int | None = None):
    """The :class:`~eventkernel.fingerprint.Fingerprint` of ``model``'s compiled step, built
    within ``limits`` for ``workers`` (or with the build options given instead)."""
    from eventkernel.fingerprint import fingerprint
    options = limits if isinstance(limits, BuildOptions) else limit_options(limits, workers)
    compiled = build(model, options, stage="compiled").compiled
    return fingerprint(compiled, fingerprint_buckets(compiled.limits),
                       compiled.target.num_workers)


def inspect_model(model: str, options: BuildOptions, all_buckets: bool = False) -> str:
    """Summary of the compiled step; verifies the smallest and largest bucket, or every
    bucket (every shape a step can have) with ``all_buckets``."""
    start = time.perf_counter()
    compiled = build(model, options, stage="compiled").compiled
    config, limits, workers = compiled.config, compiled.limits, compiled.target.num_workers
    program, plan = compiled.program, compiled.plan
    lines = [f"model {model}: {config.arch}, {config.num_layers} layers, hidden "
             f"{config.hidden_size}, {config.num_parameters() / 1e9:.2f} B parameters",
             f"limits: {limits.max_tokens} tokens/step (T), {limits.max_seqs} sequences (S), "
             f"{limits.max_context} context, pages of {limits.page_size}; {workers} workers", ""]
    buckets = compiled.buckets() if all_buckets else [{"T": 1, "S": 1}, program.max_binding]
    bound = [compiled.bound(b) for b in buckets]
    # Per op kind: grids, tasks at T=S=1 and at the maxima, events in/out.
    fan_in = {}
    fan_out = {}
    for ev in plan.events:
        fan_in[ev.consumer] = fan_in.get(ev.consumer, 0) + 1
        fan_out[ev.producer] = fan_out.get(ev.producer, 0) + 1
    first_layer = program.grids[:12]          # the embedding and the first layer
    lines.append(f"{'grid':<28}{'task grid':<34}{'tile':<34}{'tasks@1':>8}{'tasks@max':>10}"
                 f"{'in':>4}{'out':>4}")
    for g in first_layer:
        grid = " x ".join(f"{n}={d}" for n, d in zip(g.coord_names, g.grid))
        tile = ",".join(f"{k}={v}" for k, v in g.tile.items() if not isinstance(v, bool))
        lines.append(f"{g.name:<28}{grid:<34}{tile[:33]:<34}{g.num_tasks(buckets[0]):>8}"
                     f"{g.num_tasks(buckets[1]):>10}{fan_in.get(g.index, 0):>4}"
                     f"{fan_out.get(g.index, 0):>4}")
    lines.append(f"... ({len(program.grids)} grids in all; the layers repeat)")
    lines.append("")
    lines.append("event tensors of the first layer:")
    for ev in plan.events[:10]:
        lines.append(f"  {ev}")
    lines.append(f"  ... ({len(plan.events)} event tensors in all)")
    lines.append("")
    for b, be in zip(buckets, bound):
        tasks = int(sum(e.sum() for e in be.exists))
        waits = int(sum(len(w.values) for w in be.waits))
        used = {int(k) for w in be.waits for k in w.values}
        full = sum(1 for k in used if be.targets[k] >= 32)
        t0 = time.perf_counter()
        report = verify(be)
        t_verify = time.perf_counter() - t0
        t0 = time.perf_counter()
        sched = compiled.static(b, workers)
        t_sched = time.perf_counter() - t0
        lines.append(f"step T={b['T']} S={b['S']}: {tasks} tasks, {len(used)} events "
                     f"({full} with >= 32 producers), {waits} waits "
                     f"({waits / max(tasks, 1):.2f} per task); static schedule on {workers} "
                     f"workers predicts {sched.predicted_s * 1e3:.3f} ms "
                     f"(built and proven deadlock-free in {t_sched:.2f} s)")
        lines.append(f"  verification ({t_verify:.2f} s): {report}")
    timings = ", ".join(f"{k} {v:.2f} s" for k, v in compiled.timings.items())
    lines.append("")
    lines.append(f"compile passes: {timings}")
    lines.append(f"total {time.perf_counter() - start:.1f} s")
    return "\n".join(lines)
