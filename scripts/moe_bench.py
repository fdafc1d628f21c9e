"""Qwen3-30B-A3B decode on the megakernel, against the floor and transformers, in one run.

Random bf16 weights are made on the GPU (no checkpoint). Per tokens-per-step count (one
sequence per token, each with ``--context`` tokens of context) the megakernel step is timed
with CUDA events over repeated launches; the floor is the bytes the step must read
(attention, router, the experts the step actually routed to, norms, the LM head, the KV
cache) over the H200's measured 4.27 TB/s. The baseline is transformers'
Qwen3MoeForCausalLM (bf16, eager, its dynamic cache) on the same GPU, timed after the
megakernel's weights are freed. Writes a JSON record (device, date, commit, command).

    PYTHONPATH=. python3 scripts/moe_bench.py --tokens 1 --out bench/results/x.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time

import torch

from eventkernel.compiler import compile_model
from eventkernel.cuda.backend import CudaBackend
from eventkernel.engine.kv_cache import BlockManager
from eventkernel.engine.step import build_step
from eventkernel.ir.graph import DType
from eventkernel.lower import Target
from eventkernel.models.config import Limits, ModelConfig
from eventkernel.models.decoder import random_graph_weights
from eventkernel.models.presets import preset_config

HBM_BYTES_PER_S = 4.27e12      # H200 streaming read, measured (REFERENCES.md)


def step_bytes(config: ModelConfig, backend: CudaBackend, tokens: int, context: int) -> int:
    """Bytes a step must read: every dense weight once, the routed experts once, the KV
    cache of every sequence, the embedding rows."""
    d, e_bytes = config.hidden_size, 2
    attn = (config.qkv_size * d + d * config.q_size + 2 * d + 2 * config.head_dim) * e_bytes
    expert = 3 * config.moe_intermediate_size * d * e_bytes
    total = 0
    for i in range(config.num_layers):
        work = backend.buffers[f"moe_work.{i}"].cpu()
        experts = {int(e) for e in work[1:1 + int(work[0, 0]), 0]}
        total += attn + config.num_experts * d * e_bytes + len(experts) * expert
    kv = tokens * context * 2 * config.kv_size * e_bytes * config.num_layers
    return total + kv + config.vocab_size * d * e_bytes + tokens * d * e_bytes + d * e_bytes


def time_megakernel(config, tokens: int, context: int, repeat: int, weights=None):
    limits = Limits(max_tokens=tokens, max_seqs=tokens, max_context=context + 16,
                    dtype=DType.BF16)
    start = time.perf_counter()
    compiled = compile_model(config, limits, Target(num_workers=132))
    compile_s = time.perf_counter() - start
    weights = weights or random_graph_weights(compiled.graph, seed=0, device="cuda")
    start = time.perf_counter()
    backend = CudaBackend(compiled, weights)
    kernel_s = time.perf_counter() - start
    blocks = BlockManager(limits.total_pages, limits.page_size, limits.pages_per_seq)
    gen = torch.Generator().manual_seed(tokens)
    chunks = [(i, context - 1, [int(torch.randint(0, config.vocab_size, (1,), generator=gen))])
              for i in range(tokens)]
    inputs = build_step(chunks, blocks)
    bucket = backend.prepare(inputs)
    for _ in range(5):
        backend.launch(bucket)
    torch.cuda.synchronize()
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    for _ in range(repeat):
        backend.launch(bucket)
    end.record()
    torch.cuda.synchronize()
    ms = begin.elapsed_time(end) / repeat
    floor_ms = step_bytes(config, backend, tokens, context) / HBM_BYTES_PER_S * 1e3
    items = [int(backend.buffers[f"moe_work.{i}"][0, 0]) for i in range(config.num_layers)]
    del backend
    return weights, {"tokens": tokens, "context": context, "ms": ms, "floor_ms": floor_ms,
                     "fraction_of_floor": floor_ms / ms, "compile_s": compile_s,
                     "kernel_load_s": kernel_s, "work_items_per_layer": sum(items) / len(items)}


def trace_summary(config, tokens: int, context: int, weights) -> list[str]:
    """One traced step (the instrumented build): per task type its tasks, the summed time
    they ran and waited, and the step's span."""
    limits = Limits(max_tokens=tokens, max_seqs=tokens, max_context=context + 16,
                    dtype=DType.BF16)
    compiled = compile_model(config, limits, Target(num_workers=132))
    backend = CudaBackend(compiled, weights, trace=True)
    blocks = BlockManager(limits.total_pages, limits.page_size, limits.pages_per_seq)
    inputs = build_step([(i, context - 1, [i + 1]) for i in range(tokens)], blocks)
    bucket = backend.prepare(inputs)
    for _ in range(3):
        backend.launch(bucket)
    torch.cuda.synchronize()
    records = backend.trace_records(bucket)
    span = max(r.end_ns for r in records) - min(r.start_ns - r.wait_ns for r in records)
    by_type: dict[str, list] = {}
    for r in records:
        by_type.setdefault(r.task_type, []).append(r)
    lines = [f"traced {tokens} tok: span {span / 1e3:.0f} us, {len(records)} tasks on "
             f"{len({r.sm for r in records})} SMs"]
    for name, rs in sorted(by_type.items(), key=lambda kv: -sum(r.end_ns - r.start_ns
                                                                  for r in kv[1])):
        run = sum(r.end_ns - r.start_ns for r in rs) / 1e3
        wait = sum(r.wait_ns for r in rs) / 1e3
        lines.append(f"  {name:<14} {len(rs):>7} tasks  run {run:>9.0f} us (sum over SMs, "
                     f"{run / len(rs):.2f} each)  wait {wait:>9.0f} us")
    del backend
    return lines


def time_transformers(raw: dict, tokens: int, context: int, steps: int) -> float:
    from transformers import AutoConfig, AutoModelForCausalLM
    raw = {k: v for k, v in raw.items() if k not in ("architectures",)}
    config = AutoConfig.for_model(raw.pop("model_type"), **raw)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    gen = torch.Generator(device="cuda").manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (tokens, context), device="cuda", generator=gen)
    with torch.no_grad():
        out = model(ids, use_cache=True)
        cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        for _ in range(2):
            out = model(nxt, past_key_values=cache, use_cache=True)
            nxt = out.logits[:, -1:].argmax(-1)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            out = model(nxt, past_key_values=cache, use_cache=True)
            nxt = out.logits[:, -1:].argmax(-1)
        torch.cuda.synchronize()
    ms = (time.perf_counter() - start) / steps * 1e3
    del model, cache, out
    torch.cuda.empty_cache()
    return ms


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, nargs="+", default=[1])
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--layers", type=int, default=48)
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("--hf-steps", type=int, default=10)
    p.add_argument("--out", default=None)
    p.add_argument("--commit", default=None, help="the commit measured (default: git's HEAD)")
    p.add_argument("--trace", action="store_true",
                   help="also run one traced step per count and print time per task type")
    args = p.parse_args()
    raw = {**preset_config("qwen3-30b-a3b"), "num_hidden_layers": args.layers}
    config = ModelConfig.from_hf(raw)
    rows, weights = [], None
    for tokens in args.tokens:
        weights, row = time_megakernel(config, tokens, args.context, args.repeat, weights)
        rows.append(row)
        print(f"megakernel {tokens} tok: {row['ms']:.3f} ms/step, floor {row['floor_ms']:.3f} "
              f"ms ({row['fraction_of_floor']:.1%}), {row['work_items_per_layer']:.1f} items "
              f"a layer, compile {row['compile_s']:.1f} s", flush=True)
    if args.trace:
        for tokens in args.tokens:
            for line in trace_summary(config, tokens, args.context, weights):
                print(line, flush=True)
    del weights
    torch.cuda.empty_cache()
    for row in rows:
        row["transformers_eager_ms"] = time_transformers(raw, row["tokens"], args.context,
                                                         args.hf_steps)
        print(f"transformers eager {row['tokens']} tok: {row['transformers_eager_ms']:.2f} "
              f"ms/step", flush=True)
    commit = args.commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                           capture_output=True, text=True).stdout.strip()
    record = {"device": torch.cuda.get_device_name(), "date": str(datetime.date.today()),
              "commit": commit, "command": "PYTHONPATH=. python3 " + " ".join(sys.argv),
              "model": f"qwen3-30b-a3b ({args.layers} layers, random bf16 weights)",
              "rows": rows}
    print(json.dumps(record, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
