"""The ``eventkernel`` command line: generate, inspect, compile, bench."""
from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import time
import warnings

# NOTE: kept light (argparse only): the heavy imports happen inside main()'s try, so that a
# Ctrl-C or a bad argument during them ends in one line, not a traceback.


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``eventkernel <command>: error: ...``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command but bench's own options (``eventkernel bench --help``)."""
    from eventkernel import build as build_module
    defaults = {f.name: f.default for f in dataclasses.fields(build_module.BuildOptions)}
    context_help = (f"tokens of context per sequence (default: the model's "
                    f"max_position_embeddings, at most {build_module.DEFAULT_MAX_CONTEXT}, "
                    f"and what fits in memory)")
    parser = _Parser(prog="eventkernel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    gen = sub.add_parser("generate", help="generate text (default model: SmolLM2-135M-Instruct)")
    gen.add_argument("prompt", nargs="?", default="What is the capital of France?")
    gen.add_argument("--model", default=None,
                     help="smollm2-135m-instruct (built-in, the default), a preset (random "
                          "weights), a model directory, a .gguf file or a Hugging Face id in the "
                          "local cache (nothing is downloaded)")
    gen.add_argument("--max-tokens", type=int, default=64, help="tokens to generate")
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--stop", action="append", default=None)
    gen.add_argument("--chat", action=argparse.BooleanOptionalAction, default=True,
                     help="wrap the prompt in the model's chat template (default: on)")
    gen.add_argument("--backend", choices=("auto", "cpu", "cuda"), default=defaults["backend"])
    gen.add_argument("--max-context", type=int, default=None, help=context_help)
    gen.add_argument("--verbose", action="store_true",
                     help="report the start-up split (resolve, tokenizer, compile, weights, "
                          "backend, first step)")

    ins = sub.add_parser("inspect", help="compile a model's step and summarise its tasks/events")
    ins.add_argument("model", help="preset name, config.json, model directory or .gguf")
    ins.add_argument("--all-buckets", action="store_true",
                     help="verify every shape bucket, not just the smallest and largest")
    ins.add_argument("--fingerprint", action="store_true",
                     help="print only a stable hash of tasks, regions, events, wait counts and "
                          "queues (three buckets), to check that a change leaves them alone")
    _limit_args(ins, defaults, context_help)

    comp = sub.add_parser("compile", help="write the CUDA megakernel source and sm_90a cubin")
    comp.add_argument("model", help="preset name, config.json, model directory or .gguf")
    comp.add_argument("--out", default="build/kernel", help="output folder")
    _limit_args(comp, defaults, context_help)

    from eventkernel.serve.server import add_parser as add_serve_parser
    add_serve_parser(sub)
    sub.add_parser("bench", help="decode-step latency against baselines and the floor "
                   "(eventkernel bench --help; --trace FILE adds a per-SM timeline)")
    return parser


def _limit_args(p: argparse.ArgumentParser, defaults: dict, context_help: str) -> None:
    p.add_argument("--max-tokens", type=int, default=defaults["max_tokens_per_step"],
                   help="tokens per step (T max)")
    p.add_argument("--max-seqs", type=int, default=defaults["max_seqs"],
                   help="sequences per step (S max)")
    p.add_argument("--max-context", type=int, default=None, help=context_help)
    p.add_argument("--page-size", type=int, default=defaults["page_size"])
    p.add_argument("--workers", type=int, default=None,
                   help="SMs / worker count to cut for (default: this GPU's, else 132)")


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (2: bad input, 130: interrupted)."""
    started = time.perf_counter()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and not argv[0].startswith("-") else "eventkernel"
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv[:1] if argv[:1] == ["bench"] else argv)
        except SystemExit as done:          # --help (0) or a bad argument (2), said already
            return done.code if isinstance(done.code, int) else 2
        command = args.command
        if command == "bench":       # its own options: eventkernel bench --help
            from eventkernel.bench.run import command as bench_command
            try:
                return bench_command(argv[1:], started=time.monotonic())
            except SystemExit as done:      # its --help or a bad argument, said already
                return done.code if isinstance(done.code, int) else 2
        if command == "generate":
            return _generate(args, started)
        if command == "serve":
            from eventkernel.serve.server import main as serve_main
            return serve_main(args)
        options = _build_options(args)
        if command == "inspect":
            from eventkernel.serve.inspect import fingerprint_model, inspect_model
            if args.fingerprint:
                print(fingerprint_model(args.model, options))
            else:
                print(inspect_model(args.model, options, args.all_buckets))
            return 0
        if command == "compile":
            from eventkernel.serve.compile import compile_command
            return compile_command(args.model, options, args.out)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)       # a second Ctrl-C: no traceback
        print(f"eventkernel {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the user's mistakes, in one line
        if not _is_user_error(err):
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        one_line = " ".join(str(message).split())
        print(f"eventkernel {command}: error: {one_line}", file=sys.stderr)
        return 2
    return 1


def _is_user_error(err: Exception) -> bool:
    """Errors that describe bad input (arguments, models, checkpoints, configs, limits,
    prompts) or a machine that cannot run the request: reported in one line."""
    # NOTE: ValueError covers BuildError, ModelConfigError, CheckpointError and WeightError;
    # OSError covers the missing files; a chat template's own checks raise jinja2 errors.
    return (isinstance(err, (ValueError, TypeError, KeyError, OSError, RuntimeError,
                             ImportError))
            or type(err).__module__.startswith("jinja2"))


def _build_options(args):
    from eventkernel.build import BuildOptions
    return BuildOptions(backend="cuda", max_tokens_per_step=args.max_tokens,
                        max_seqs=args.max_seqs, max_context=args.max_context,
                        page_size=args.page_size, num_workers=args.workers)


def _generate(args, started: float) -> int:
    from eventkernel.build import BuildOptions, plan_build
    from eventkernel.engine.engine import check_request
    from eventkernel.engine.sampling import SamplingParams
    from eventkernel.serve.llm import LLM, RandomWeightsWarning, load_source_tokenizer
    params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature,
                            top_p=args.top_p, top_k=args.top_k, seed=args.seed, stop=args.stop)
    if not args.prompt:
        raise ValueError("the prompt is empty: give some text")
    options = BuildOptions(backend=args.backend, max_context=args.max_context)
    if args.verbose:
        print(f"[eventkernel] loading {args.model or 'the built-in model'}", file=sys.stderr,
              flush=True)
    plan = plan_build(args.model, options)                  # the config only: no weights
    if params.max_tokens >= plan.limits.max_context:
        raise ValueError(f"--max-tokens {params.max_tokens} leaves no room for a prompt in "
                         f"the {plan.limits.max_context} tokens of context; lower it or raise "
                         f"--max-context (at most {plan.config.max_position_embeddings})")
    start = time.perf_counter()
    tokenizer = load_source_tokenizer(plan.source)
    tokenizer_s = time.perf_counter() - start
    if args.chat:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": args.prompt}])
    else:
        ids = tokenizer.encode(args.prompt)
    check_request(ids, params, plan.limits, plan.config.vocab_size)   # before the weights
    if plan.source.random_weights:
        print(f"[eventkernel] {plan.source.describe()}: the text will be noise",
              file=sys.stderr)
    with warnings.catch_warnings():      # said above already
        warnings.simplefilter("ignore", RandomWeightsWarning)
        llm = LLM(plan, tokenizer=tokenizer)
    print(f"[eventkernel] {plan.source.describe()} ready in "
          f"{time.perf_counter() - started:.1f} s on the {llm.backend_name} backend "
          f"(max context {plan.limits.max_context})", file=sys.stderr)
    stream = tokenizer.stream_decoder()

    def on_token(_: int, token: int) -> None:
        if token not in tokenizer.eos_token_ids:
            text = stream.push(token)
            sys.stdout.write(text)
            sys.stdout.flush()

    try:
        out = llm.generate([ids], params, on_token=on_token)
    finally:                                 # also on Ctrl-C: the text so far, then a newline
        sys.stdout.write(stream.flush() + "\n")
        sys.stdout.flush()
    s = llm.last_stats
    if args.verbose:
        split = {**llm.startup_s, "tokenizer": tokenizer_s, "first step": s.first_step_s}
        print("[eventkernel] start-up: " + ", ".join(f"{k} {v:.2f} s" for k, v in split.items()),
              file=sys.stderr)
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
