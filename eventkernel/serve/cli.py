"""The ``eventkernel`` command line: generate, inspect, compile, bench."""
from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eventkernel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate text (default model: SmolLM2-135M-Instruct)")
    gen.add_argument("prompt", nargs="?", default="What is the capital of France?")
    gen.add_argument("--model", default=None, help="model directory or .gguf (default: built-in)")
    gen.add_argument("--max-tokens", type=int, default=64)
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--stop", action="append", default=None)
    gen.add_argument("--chat", action=argparse.BooleanOptionalAction, default=True,
                     help="wrap the prompt in the model's chat template (default: on)")
    gen.add_argument("--backend", choices=("auto", "cpu", "cuda"), default="auto")
    gen.add_argument("--max-context", type=int, default=1024)

    ins = sub.add_parser("inspect", help="compile a model's step and summarise its tasks/events")
    ins.add_argument("model", help="preset name, config.json or model directory")
    ins.add_argument("--all-buckets", action="store_true",
                     help="verify every shape bucket, not just the smallest and largest")
    ins.add_argument("--fingerprint", action="store_true",
                     help="print only a stable hash of tasks, regions, events, wait counts and "
                          "queues (three buckets), to check that a change leaves them alone")
    _limit_args(ins)

    comp = sub.add_parser("compile", help="write the CUDA megakernel source and sm_90a cubin")
    comp.add_argument("model", help="preset name, config.json or model directory")
    comp.add_argument("--out", default="build/kernel", help="output folder")
    _limit_args(comp)

    sub.add_parser("bench", help="decode-step latency against baselines and the floor "
                   "(eventkernel bench --help; --trace FILE adds a per-SM timeline)")

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv[:1]) if argv[:1] == ["bench"] else parser.parse_args(argv)
    try:
        if args.command == "bench":       # its own options: eventkernel bench --help
            return _bench(argv[1:])
        if args.command == "generate":
            return _generate(args)
        if args.command == "inspect":
            from eventkernel.serve.inspect import fingerprint_model, inspect_model
            if args.fingerprint:
                print(fingerprint_model(args.model, _limits(args), args.workers))
            else:
                print(inspect_model(args.model, _limits(args), args.workers, args.all_buckets))
            return 0
        if args.command == "compile":
            from eventkernel.cuda.aot import compile_command
            return compile_command(args.model, _limits(args), args.workers, args.out)
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"eventkernel {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 1


def _bench(argv: list[str]) -> int:
    import time

    started = time.monotonic()
    import torch

    from eventkernel.bench.run import build_parser, main as bench_main, resolve_options
    from eventkernel.models.presets import preset_config
    trace = None
    if "--trace" in argv:                 # ours, not the benchmark's: take it out first
        i = argv.index("--trace")
        trace, argv = argv[i + 1], argv[:i] + argv[i + 2:]
    runner = None
    options = resolve_options(build_parser().parse_args(argv))
    if trace is not None and not torch.cuda.is_available():
        raise RuntimeError("--trace needs a CUDA GPU (it records the megakernel's tasks)")
    if options.jobs > 1 and len(options.models) > 1 and torch.cuda.is_available():
        from eventkernel.bench.run import run_jobs
        status = 1 if run_jobs(options, argv, started).errors else 0   # a process per model
    else:
        if torch.cuda.is_available():
            from eventkernel.bench.megakernel import MegakernelRunner
            from eventkernel.cuda.launch import device_info
            # --quick: no cold-compile measurement (the kernel cache serves what it has).
            runner = MegakernelRunner(max(options.tokens), max(options.contexts),
                                      cold_compile=not options.quick)
            if not options.quick:
                # Every model's kernel, cold, in parallel worker processes (CPU only) while
                # the first model's baselines compile: the warm-up report then shows builds
                # with a warm cache and the cold compile apart.
                runner.precompile_in_background([preset_config(m) for m in options.models],
                                                device_info().sm_count)
        status = bench_main(argv, eventkernel_runner=runner, started=started)
        if runner is not None and not options.quick:
            print(f"eventkernel: {len(options.models)} kernel(s) compiled cold, in parallel, "
                  f"in {runner.wait_for_precompile():.1f} s (next to the first baselines)")
    if trace is not None:
        if runner is not None:
            runner.close()
        from eventkernel.bench.megakernel import trace_step
        trace_step(preset_config(options.models[0]), options.tokens[0], options.contexts[0],
                   trace)
        print(f"trace: {trace} (open it in https://ui.perfetto.dev)")
    return status


def _limit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-tokens", type=int, default=64, help="tokens per step (T max)")
    p.add_argument("--max-seqs", type=int, default=8, help="sequences per step (S max)")
    p.add_argument("--max-context", type=int, default=4096)
    p.add_argument("--page-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=132, help="SMs / worker count to cut for")


def _limits(args):
    from eventkernel.models.config import Limits
    return Limits(max_tokens=args.max_tokens, max_seqs=args.max_seqs,
                  max_context=args.max_context, page_size=args.page_size)


def _generate(args) -> int:
    from eventkernel.serve.llm import LLM
    from eventkernel.serve.sampling import SamplingParams
    params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature,
                            top_p=args.top_p, top_k=args.top_k, seed=args.seed, stop=args.stop)
    start = time.perf_counter()
    llm = LLM(args.model, backend=args.backend, max_context=args.max_context)
    print(f"[eventkernel] {args.model or 'SmolLM2-135M-Instruct (built-in)'} ready in "
          f"{time.perf_counter() - start:.1f} s on the {llm.backend_name} backend",
          file=sys.stderr)
    stream = llm.tokenizer.stream_decoder()

    def on_token(_: int, token: int) -> None:
        if token not in llm.tokenizer.eos_token_ids:
            sys.stdout.write(stream.push(token))
            sys.stdout.flush()

    if args.chat:
        out = llm.chat([{"role": "user", "content": args.prompt}], params, on_token=on_token)
    else:
        out = llm.generate(args.prompt, params, on_token=on_token)
    sys.stdout.write(stream.flush() + "\n")
    s = llm.last_stats
    prefill_tps = s.prompt_tokens / s.prefill_s if s.prefill_s else 0.0
    decode_ms = 1e3 * s.decode_s / s.decode_steps if s.decode_steps else 0.0
    decode_tps = 1e3 / decode_ms if decode_ms else 0.0
    print(f"[eventkernel] prompt {s.prompt_tokens} tokens at {prefill_tps:.1f} tok/s; "
          f"generated {len(out[0].token_ids)} tokens at {decode_tps:.1f} tok/s "
          f"({decode_ms:.1f} ms/step); backend {llm.backend_name}; "
          f"finish: {out[0].finish_reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
