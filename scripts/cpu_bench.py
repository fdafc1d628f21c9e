"""eventkernel's CPU backend against transformers on the built-in model, in one process.

    .venv/bin/python scripts/cpu_bench.py [--tokens 64] [--threads 1,2] [--out FILE]

For each thread count (the process's CPU affinity is narrowed to that many cores, so both
systems see the same machine) and each load (idle, and busy: one other process spinning on
a core for the length of the run), both systems decode the same chat prompt greedily for
``--tokens`` tokens (EOS ignored), each twice, best kept; the tokens must be identical. Prints
a table of tokens/s and the ratio; ``--out`` writes it as JSON with the machine and commit.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import multiprocessing
import os
import pathlib
import platform
import subprocess
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROMPT = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x += 1


@contextlib.contextmanager
def busy(on: bool, cores: set[int], seconds: float):
    """A second CPU-bound process pinned to the first of ``cores`` (bounded in time)."""
    if not on:
        yield
        return
    proc = multiprocessing.get_context("spawn").Process(target=_spin, args=(seconds,),
                                                        daemon=True)
    proc.start()
    with contextlib.suppress(OSError):
        os.sched_setaffinity(proc.pid, {min(cores)})
    try:
        yield
    finally:
        proc.terminate()
        proc.join(5)


def time_eventkernel(llm, prompt_ids: list[int], tokens: int) -> tuple[float, list[int]]:
    from eventkernel import SamplingParams

    params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)
    start = time.perf_counter()
    out = llm.generate([prompt_ids], params)[0]
    return time.perf_counter() - start, list(out.token_ids)


def time_transformers(model, prompt_ids: list[int], tokens: int) -> tuple[float, list[int]]:
    ids = torch.tensor([prompt_ids])
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=tokens, min_new_tokens=tokens, pad_token_id=0)
    return time.perf_counter() - start, out[0, len(prompt_ids):].tolist()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--loads", default="idle,busy")
    ap.add_argument("--out", type=pathlib.Path)
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM

    from eventkernel import LLM
    from eventkernel.models.default import default_model_path

    all_cores = sorted(os.sched_getaffinity(0))
    gguf = default_model_path()
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        if threads > len(all_cores):
            print(f"skipping {threads} threads: this process may use {len(all_cores)} cores")
            continue
        cores = set(all_cores[:threads])
        os.sched_setaffinity(0, cores)
        llm = LLM(backend="cpu")                  # its CPU plan reads the affinity mask
        prompt_ids = llm.tokenizer.apply_chat_template(PROMPT)
        torch.set_num_threads(threads)
        hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                  dtype=torch.float32).eval()
        time_eventkernel(llm, prompt_ids, 4)      # warm both (first-step costs not timed)
        time_transformers(hf, prompt_ids, 4)
        for load in args.loads.split(","):
            with busy(load == "busy", cores, seconds=600):
                ek = [time_eventkernel(llm, prompt_ids, args.tokens) for _ in range(2)]
                ref = [time_transformers(hf, prompt_ids, args.tokens) for _ in range(2)]
            same = all(t == ref[0][1] for _, t in ek + ref)
            ek_tps = args.tokens / min(s for s, _ in ek)
            hf_tps = args.tokens / min(s for s, _ in ref)
            rows.append({"threads": threads, "load": load, "eventkernel_tok_s": ek_tps,
                         "transformers_tok_s": hf_tps, "ratio": ek_tps / hf_tps,
                         "same_tokens": same, "tokens": args.tokens,
                         "prompt_tokens": len(prompt_ids)})
        del llm, hf
    os.sched_setaffinity(0, set(all_cores))

    print(f"{'threads':>7} {'load':>5} {'eventkernel':>12} {'transformers':>13} {'ratio':>6}"
          f" {'same':>5}")
    for r in rows:
        print(f"{r['threads']:>7} {r['load']:>5} {r['eventkernel_tok_s']:>10.1f}/s "
              f"{r['transformers_tok_s']:>11.1f}/s {r['ratio']:>6.2f} {str(r['same_tokens']):>5}")
    if args.out:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip()
        args.out.write_text(json.dumps({
            "machine": {"cpu": platform.processor() or platform.machine(),
                        "cores": len(all_cores), "torch": torch.__version__},
            "commit": commit, "date": datetime.datetime.now(datetime.UTC).isoformat(),
            "command": sys.argv, "results": rows}, indent=1) + "\n")
    return 0 if all(r["same_tokens"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
