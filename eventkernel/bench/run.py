"""``eventkernel bench``: decode-step latency of the megakernel, its baselines and the floor.

For every model, context length and tokens per step, each system is timed on the same GPU
in this process: the eventkernel megakernel (when a runner is plugged in), the gpt-fast-style
torch.compile baseline, transformers with a compiled static cache, and the bandwidth floor.
Start-up cost (model build, compile and CUDA-graph capture per batch size) is recorded too.
Results go to a JSON file (saved after every system, so a cut-off run keeps what it measured)
and a printed table; plot them anywhere with ``python -m eventkernel.bench.report FILE PNG``.

Example: ``python -m eventkernel.bench.run --models llama-3.2-1b --quick``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

from eventkernel.models import presets
from eventkernel.bench.report import FLOOR, BenchReport, Environment, StepResult, WarmupResult

StepFn = Callable[[], Any]
Runner = Callable[[dict, int, int], StepFn]  # (config, num_tokens, context_len) -> step
BASELINES = ("torch-compile", "hf", FLOOR)
EVENTKERNEL = "eventkernel"
READY_CALLS = 3  # reduce-overhead: 1st call compiles, 2nd records the CUDA graph, 3rd replays


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _name_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [v.strip().lower() for v in text.split(",") if v.strip()]
        unknown = [n for n in names if n not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {list(choices)}")
        return names
    return parse


class _Parser(argparse.ArgumentParser):
    """Errors in one line: ``eventkernel bench: error: ...`` (exit code 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="eventkernel bench", description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=_name_list(presets.preset_names()),
                        default=["llama-3.2-1b"], help="comma-separated presets")
    parser.add_argument("--tokens", type=_int_list, default=None,
                        help="tokens per step (sequences x 1 token), default 1,4,16,64")
    parser.add_argument("--contexts", type=_int_list, default=None,
                        help="cached tokens per sequence, default 512,4096")
    parser.add_argument("--baselines", type=_name_list(BASELINES), default=None,
                        help=f"subset of {','.join(BASELINES)} (default: all; --quick: "
                             f"torch-compile,{FLOOR})")
    parser.add_argument("--quick", action="store_true",
                        help="tokens 1,16, context 512, torch.compile and the floor only, fewer "
                             "iterations (unless given): about a minute per small model")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls (default 10)")
    parser.add_argument("--iters", type=int, default=None, help="timed calls (default 100)")
    parser.add_argument("--device", default=None, help="default cuda if available, else cpu")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument("--eager", action="store_true", help="no torch.compile (CPU smoke runs)")
    parser.add_argument("--static-baselines", action="store_true",
                        help="compile the baselines for every shape (torch.compile dynamic=False;"
                             " default: torch's own, with batch and context marked dynamic: a"
                             " graph for batch 1 and one for other batches, transformers also"
                             " one per batch-1 context; a CUDA graph per shape)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--copy-bytes", type=int, default=1 << 30,
                        help="buffer size for the copy-bandwidth measurement")
    parser.add_argument("--name", default=None, help="result name, default <date>-<models>")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the JSON results go (default: bench/results/<name>.json "
                             "under the current directory)")
    parser.add_argument("--plot", type=Path, default=None, help="also write this PNG")
    parser.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                        help="start no new measurement after this long (results so far kept)")
    parser.add_argument("--fail-fast", action="store_true",
                        help="stop at the first failing measurement instead of recording it")
    parser.add_argument("--jobs", type=int, default=1,
                        help="models measured at once, one process each, as GPU memory allows "
                             "(default 1). Compiles overlap; warm-up calls and timing take "
                             "the GPU one process at a time. The whole comparison: --jobs 3")
    parser.add_argument("--bandwidth", type=float, default=None, help=argparse.SUPPRESS)
    return parser


def resolve_options(options: argparse.Namespace) -> argparse.Namespace:
    """Fill defaults that depend on --quick and on the machine."""
    import torch

    quick = options.quick
    options.tokens = options.tokens or ([1, 16] if quick else [1, 4, 16, 64])
    # transformers' compile is the slowest and its baseline the weaker one: not in a quick run
    options.baselines = options.baselines or (["torch-compile", FLOOR] if quick
                                              else list(BASELINES))
    options.contexts = options.contexts or ([512] if quick else [512, 4096])
    options.warmup = options.warmup if options.warmup is not None else (3 if quick else 10)
    options.iters = options.iters if options.iters is not None else (20 if quick else 100)
    options.device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if options.out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        name = options.name or f"{stamp}-{'+'.join(options.models)}"
        options.out = Path("bench") / "results" / f"{name}.json"
    return options


def main(argv: Sequence[str] | None = None, eventkernel_runner: Runner | None = None,
         started: float | None = None) -> int:
    """Command-line entry. ``eventkernel_runner(config, num_tokens, context_len) -> step``
    adds the megakernel rows; without it only the baselines and the floor are measured.
    ``started``: ``time.monotonic()`` at the command's start (default: now), for ``wall_s``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    options = resolve_options(build_parser().parse_args(argv))
    report = run_benchmarks(options, eventkernel_runner, ["eventkernel", "bench", *argv],
                            started)
    return 1 if report.errors else 0


def command(argv: Sequence[str], started: float | None = None) -> int:
    """``eventkernel bench ARGS``: the baselines, plus the megakernel rows on a Hopper GPU
    (without one, a line says why they are missing); ``--trace FILE`` also writes a per-SM
    timeline of one step. ``started``: ``time.monotonic()`` at the command's start."""
    from eventkernel.build import cuda_problem
    started = time.monotonic() if started is None else started
    argv = list(argv)
    trace = None
    if "--trace" in argv:                 # ours, not the benchmark's: take it out first
        i = argv.index("--trace")
        if i + 1 >= len(argv):
            raise ValueError("--trace needs a file name (the Chrome trace JSON to write)")
        trace, argv = argv[i + 1], argv[:i] + argv[i + 2:]
    options = resolve_options(build_parser().parse_args(argv))
    problem = cuda_problem()
    if trace is not None and problem:
        raise RuntimeError(f"--trace needs a CUDA GPU (it records the megakernel's tasks): "
                           f"{problem}")
    runner = None
    if problem:
        print(f"{EVENTKERNEL}: no megakernel rows: {problem}; the megakernel needs a Hopper "
              f"GPU (sm_90); measuring the baselines and the floor only", flush=True)
    if options.jobs > 1 and len(options.models) > 1 and not problem:
        status = 1 if run_jobs(options, argv, started).errors else 0   # a process per model
    else:
        if not problem:
            from eventkernel.bench.megakernel import MegakernelRunner
            from eventkernel.cuda.launch import device_info
            # --quick: no cold-compile measurement (the kernel cache serves what it has).
            runner = MegakernelRunner(max(options.tokens), max(options.contexts),
                                      cold_compile=not options.quick)
            if not options.quick:
                # Every model's kernel, cold, in parallel worker processes (CPU only) while
                # the first model's baselines compile: the warm-up report then shows builds
                # with a warm cache and the cold compile apart.
                runner.precompile_in_background(
                    [presets.preset_config(m) for m in options.models], device_info().sm_count)
        report = run_benchmarks(options, runner, ["eventkernel", "bench", *argv], started)
        status = 1 if report.errors else 0
        if runner is not None and not options.quick:
            print(f"{EVENTKERNEL}: {len(options.models)} kernel(s) compiled cold, in parallel, "
                  f"in {runner.wait_for_precompile():.1f} s (next to the first baselines)")
    if trace is not None:
        if runner is not None:
            runner.close()
        from eventkernel.bench.megakernel import trace_step
        trace_step(presets.preset_config(options.models[0]), options.tokens[0],
                   options.contexts[0], trace)
        print(f"trace: {trace} (open it in https://ui.perfetto.dev)")
    return status


def run_benchmarks(options: argparse.Namespace, eventkernel_runner: Runner | None = None,
                   command_line: Sequence[str] | None = None,
                   started: float | None = None) -> BenchReport:
    """Measure every system of ``options`` and write the JSON report (and PNG if asked)."""
    import torch

    from eventkernel.bench import baseline, timing

    started = time.monotonic() if started is None else started

    deadline = None if options.time_limit is None else time.monotonic() + options.time_limit
    dtype = getattr(torch, options.dtype)
    device = options.device
    report = _new_report(options, command_line)
    dtype_bytes = torch.empty((), dtype=dtype).element_size()
    factories: list[tuple[str, Callable[[], Runner]]] = []
    compile_ = not options.eager
    # NOTE: torch's default (dynamic=None); the runners mark batch and context dynamic.
    dynamic = False if options.static_baselines else None
    suffix = "-eager" if options.eager else ""  # eager numbers must not pass for compiled ones
    if "torch-compile" in options.baselines:
        factories.append(("torch-compile" + suffix, lambda: baseline.TorchCompileRunner(
            device, dtype=dtype, compile=compile_, max_batch=max(options.tokens),
            max_context=max(options.contexts), seed=options.seed, dynamic=dynamic)))
    if "hf" in options.baselines:
        factories.append(("hf" + suffix, lambda: baseline.HFRunner(
            device, dtype=dtype, compile=compile_, seed=options.seed, dynamic=dynamic)))
    if eventkernel_runner is not None:  # last: its cold compile may still run in background
        factories.append((EVENTKERNEL, lambda: eventkernel_runner))

    for model in options.models:
        config = presets.preset_config(model)
        floors = {}
        for context in options.contexts:
            for tokens in options.tokens:
                num_bytes = timing.decode_bytes(config, tokens, context, dtype_bytes)
                floors[tokens, context] = (num_bytes, timing.floor_ms(
                    num_bytes, report.bandwidth_bytes_per_s))
                if FLOOR in options.baselines:
                    ms = floors[tokens, context][1]
                    report.results.append(StepResult(model, FLOOR, tokens, context, ms, ms, ms,
                                                     ms, 0, num_bytes, ms))
        for system, make_runner in factories:
            _bench_system(report, options, model, config, system, make_runner(), floors,
                          deadline, started)
    report.wall_s = time.monotonic() - started
    report.save(options.out)
    _show(report, options)
    return report


def sweep_order(tokens: Sequence[int], contexts: Sequence[int]) -> list[tuple[int, int]]:
    """(tokens per step, context) points in the order they are measured.

    The second point changes tokens and context at once: torch.compile's automatic dynamic
    shapes then make both symbolic in one recompile (changed one at a time, each change
    would cost a compile of its own, 30-90 s for an 8B model).
    """
    points = [(t, c) for c in contexts for t in tokens]
    if len(tokens) > 1 and len(contexts) > 1:
        points.remove((tokens[1], contexts[-1]))
        points.insert(1, (tokens[1], contexts[-1]))
    return points


def _bench_system(report: BenchReport, options, model: str, config: dict, system: str,
                  runner: Runner, floors: dict, deadline: float | None,
                  started: float) -> None:
    """Warm up and time one system over every context and tokens-per-step pair.

    The report file is rewritten after every measurement, so a run cut off keeps its numbers.
    Warm-up is reported per context: the model build (charged to the first point's context),
    then the first calls of each tokens-per-step point (compile, CUDA-graph capture).
    """
    from eventkernel.bench import timing

    start = time.perf_counter()
    build_s = {context: 0.0 for context in options.contexts}
    per_batch: dict[int, dict[int, float]] = {context: {} for context in options.contexts}
    first_step_s: dict[int, float] = {}
    built = False
    for tokens, context in sweep_order(options.tokens, options.contexts):
        label = f"{model} {system} tokens={tokens} context={context}"
        if deadline is not None and time.monotonic() > deadline:
            report.errors.append({"model": model, "system": system, "num_tokens": tokens,
                                  "context_len": context, "error": "skipped: --time-limit"})
            continue
        try:
            t0 = time.perf_counter()
            step = runner(config, tokens, context)
            if not built:  # the first call builds the model (weights, compiled wrapper)
                build_s[context], built = time.perf_counter() - t0, True
                t0 = time.perf_counter()
            reset = getattr(step, "reset", None)
            for call in range(READY_CALLS):
                if reset is not None:
                    reset()
                with gpu_turn() if call else contextlib.nullcontext():  # 1st: the compile
                    step()
                    _synchronize(options.device)
            ready_s = per_batch[context][tokens] = time.perf_counter() - t0
            first_step_s.setdefault(context, build_s[context] + ready_s)
            with gpu_turn():
                measured = timing.time_fn(step, options.warmup, options.iters,
                                          before_each=reset, device=options.device)
            predicted = getattr(step, "predicted_ms", None)
        except Exception as error:  # noqa: BLE001 - one failing point must not end a sweep
            if options.fail_fast:
                raise
            report.errors.append({"model": model, "system": system, "num_tokens": tokens,
                                  "context_len": context, "error": repr(error)})
            print(f"FAILED {label}: {error!r}\n{traceback.format_exc(limit=4)}", flush=True)
            continue
        finally:
            step = None
            _release_memory(options.device)
        num_bytes, floor = floors[tokens, context]
        result = StepResult(model, system, tokens, context, measured.median_ms,
                            measured.p10_ms, measured.p90_ms, measured.min_ms,
                            measured.iters, num_bytes, floor, predicted)
        report.results.append(result)
        report.wall_s = time.monotonic() - started
        report.save(options.out)
        guess = "" if predicted is None else f", schedule predicted {predicted:.3f} ms"
        print(f"{label}: {result.median_ms:.3f} ms ({100 * result.fraction_of_floor:.1f}% "
              f"of floor{guess}), ready in {ready_s:.1f} s", flush=True)
    for context in options.contexts:
        if per_batch[context]:
            ready = dict(sorted(per_batch[context].items()))
            report.warmups.append(WarmupResult(
                model, system, context, build_s[context], ready, first_step_s[context],
                build_s[context] + sum(ready.values()),
                dict(getattr(runner, "build_parts_s", {})) if build_s[context] else {}))
    close = getattr(runner, "close", None)
    if close is not None:
        close()
    _release_memory(options.device)
    print(f"{model} {system}: done in {time.perf_counter() - start:.1f} s", flush=True)


GPU_LOCK_ENV = "EK_BENCH_GPU_LOCK"


@contextlib.contextmanager
def gpu_turn():
    """Hold the GPU alone while timing (and capturing), when ``--jobs`` runs several bench
    processes: an exclusive lock on the file named by $EK_BENCH_GPU_LOCK; nothing without."""
    path = os.environ.get(GPU_LOCK_ENV)
    if not path:
        yield
        return
    import fcntl
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def peak_bytes(config: dict, options: argparse.Namespace) -> int:
    """GPU memory one model's bench process may hold: weights and the KV cache of the
    largest point, plus 10 % and 2 GiB (CUDA graphs, activations, allocator slack)."""
    from eventkernel.bench import timing
    dtype_bytes = 4 if options.dtype == "float32" else 2
    need = timing.decode_bytes(config, max(options.tokens), max(options.contexts) + 32,
                               dtype_bytes)
    return int(need * 1.1) + (2 << 30)


def run_jobs(options: argparse.Namespace, argv: Sequence[str],
             started: float | None = None) -> BenchReport:
    """``--jobs N``: one ``eventkernel bench`` process per model, at most N at once and
    only as many as fit in GPU memory together (``peak_bytes``); merged into one report.

    The processes compile (torch.compile, the megakernel) side by side and take turns on
    the GPU (``gpu_turn``) for everything they time or capture; a model's systems still
    run one after the other in its process. The copy bandwidth is measured once, here.
    """
    import torch

    started = time.monotonic() if started is None else started
    device = options.device
    report = _new_report(options, ["eventkernel", "bench", *argv])
    print(f"{len(options.models)} models, up to {options.jobs} at once", flush=True)
    is_cuda = torch.device(device).type == "cuda"
    budget = 0.9 * torch.cuda.get_device_properties(device).total_memory if is_cuda else 1e30
    peaks = {m: peak_bytes(presets.preset_config(m), options) for m in options.models}
    base_argv = _without_options(argv, ("--models", "--out", "--plot", "--name", "--jobs",
                                        "--time-limit", "--bandwidth"))
    # Each process's own JSON (rewritten after every measurement) lives next to the result,
    # so that whatever stops this process, what was measured is merged or can be.
    parts = Path(options.out).with_suffix(".parts")
    parts.mkdir(parents=True, exist_ok=True)
    # NOTE: each torch.compile starts a pool of Triton compile workers, one per core by
    # default: N processes would run N x cores workers.
    threads = max(1, (os.cpu_count() or 1) // min(options.jobs, len(options.models)))
    env = {**os.environ, GPU_LOCK_ENV: str(parts / "gpu.lock"),
           "TORCHINDUCTOR_COMPILE_THREADS": os.environ.get("TORCHINDUCTOR_COMPILE_THREADS",
                                                           str(threads))}
    # Past --time-limit a process starts nothing new; one stuck in a build is stopped later.
    hard_stop = None if options.time_limit is None else started + options.time_limit + 60
    pending = sorted(options.models, key=lambda m: -peaks[m])  # largest first
    running: dict[str, subprocess.Popen] = {}
    signal.signal(signal.SIGTERM, _interrupt)  # e.g. `timeout`: merge before exiting
    try:
        while pending or running:
            for model, proc in list(running.items()):
                if proc.poll() is not None:
                    del running[model]
            if hard_stop is not None and time.monotonic() > hard_stop:
                break
            in_use = sum(peaks[m] for m in running)
            for model in list(pending):
                fits = not running or in_use + peaks[model] <= budget
                if len(running) < options.jobs and fits:
                    command = [sys.executable, "-m", "eventkernel.serve.cli", "bench", *base_argv,
                               "--models", model, "--out", str(parts / f"{model}.json"),
                               "--bandwidth", repr(report.bandwidth_bytes_per_s)]
                    if options.time_limit is not None:
                        left = options.time_limit - (time.monotonic() - started)
                        command += ["--time-limit", f"{max(left, 0.0):.0f}"]
                    running[model] = subprocess.Popen(command, env=env)
                    pending.remove(model)
                    in_use += peaks[model]
            time.sleep(0.5)
    finally:  # also on Ctrl-C or SIGTERM (below): stop the rest, keep what they measured
        for proc in running.values():
            proc.terminate()
        for proc in running.values():
            proc.wait()
        _merge_parts(report, options, parts, pending, started)
        if all((parts / f"{m}.json").exists() for m in options.models) and not running:
            shutil.rmtree(parts)  # all merged (a process stopped early keeps them for a look)
    _show(report, options)
    return report


def _new_report(options: argparse.Namespace, command_line: Sequence[str] | None) -> BenchReport:
    """An empty report with the environment and the copy bandwidth (measured alone on the
    GPU, or given by ``--bandwidth``), which it prints."""
    from eventkernel.bench import timing

    with gpu_turn():
        bandwidth = options.bandwidth or timing.measure_copy_bandwidth(options.device,
                                                                       options.copy_bytes)
    report = BenchReport(environment=Environment.collect(options.device, command_line),
                         bandwidth_bytes_per_s=bandwidth)
    print(f"{report.environment.device_name}: copy bandwidth {bandwidth / 1e9:.1f} GB/s",
          flush=True)
    return report


def _show(report: BenchReport, options: argparse.Namespace) -> None:
    """Print the table and where the results went; write the plot if asked."""
    from eventkernel.bench import report as report_module

    print(report_module.format_table(report))
    print(f"results: {options.out}")
    if options.plot is not None:
        print(f"plot: {report_module.plot(options.out, options.plot)}")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _merge_parts(report: BenchReport, options: argparse.Namespace, parts: Path,
                 not_started: list[str], started: float) -> None:
    """Collect the per-model JSONs of ``run_jobs`` into ``report`` and save it."""
    for model in options.models:
        path = parts / f"{model}.json"
        if not path.exists():
            why = "not started (--time-limit)" if model in not_started else \
                "its bench process wrote no results (see its output above)"
            report.errors.append({"model": model, "system": "all", "num_tokens": 0,
                                  "context_len": 0, "error": why})
            continue
        part = BenchReport.load(path)
        report.results += part.results
        report.warmups += part.warmups
        report.errors += part.errors
    report.wall_s = time.monotonic() - started
    report.save(options.out)


def _without_options(argv: Sequence[str], names: Sequence[str]) -> list[str]:
    """``argv`` without the options ``names`` and their values (``--x v`` or ``--x=v``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in names:
            skip = True
        elif not any(arg.startswith(name + "=") for name in names):
            out.append(arg)
    return out


def _synchronize(device: Any) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _release_memory(device: Any) -> None:
    import torch

    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
