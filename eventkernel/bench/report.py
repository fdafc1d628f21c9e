"""Benchmark results: dataclasses, a JSON file with every number, a table, and a plot.

The JSON file is the record; the table and the plot are views of it. ``plot`` needs only the
JSON file and matplotlib, so it runs on a machine without a GPU (matplotlib is not assumed to
be installed where the benchmark runs).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

FLOOR = "floor"  # the system name of the bandwidth-floor rows


@dataclasses.dataclass(slots=True)
class Environment:
    """Where and how the numbers were taken."""

    device_name: str
    driver_version: str | None
    torch_version: str
    cuda_version: str | None
    triton_version: str | None
    transformers_version: str | None
    python_version: str
    git_commit: str | None
    git_dirty: bool | None
    date: str
    command_line: list[str]

    @classmethod
    def collect(cls, device: Any, argv: Sequence[str] | None = None) -> Environment:
        """Gather versions, the GPU name and driver, and the git commit of this checkout."""
        import torch

        is_cuda = str(device).startswith("cuda") and torch.cuda.is_available()
        commit, dirty = _git_state()
        cpu_name = platform.processor() or platform.machine()
        return cls(
            device_name=torch.cuda.get_device_name(device) if is_cuda else cpu_name,
            driver_version=_nvidia_driver() if is_cuda else None,
            torch_version=torch.__version__,
            cuda_version=torch.version.cuda,
            triton_version=_module_version("triton"),
            transformers_version=_module_version("transformers"),
            python_version=platform.python_version(),
            git_commit=commit,
            git_dirty=dirty,
            date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            command_line=list(sys.argv if argv is None else argv),
        )


@dataclasses.dataclass(slots=True)
class StepResult:
    """One (model, system, tokens per step, context) measurement; times in milliseconds."""

    model: str
    system: str
    num_tokens: int
    context_len: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    iters: int
    bytes_per_step: int
    floor_ms: float
    predicted_ms: float | None = None   # the static schedule's cost-model prediction

    @property
    def tokens_per_s(self) -> float:
        return self.num_tokens / (self.median_ms * 1e-3)

    @property
    def fraction_of_floor(self) -> float:
        """floor / measured: 1.0 means the step ran at the measured copy bandwidth."""
        return self.floor_ms / self.median_ms

    @property
    def achieved_gb_per_s(self) -> float:
        return self.bytes_per_step / (self.median_ms * 1e-3) / 1e9

    def to_dict(self) -> dict:
        derived = ("tokens_per_s", "fraction_of_floor", "achieved_gb_per_s")
        return {**dataclasses.asdict(self), **{name: getattr(self, name) for name in derived}}


@dataclasses.dataclass(slots=True)
class WarmupResult:
    """Start-up cost of one system for one model and context, in seconds.

    ``per_batch_s`` maps tokens per step to the time of its first calls (compile + CUDA graph
    capture for torch.compile); ``first_step_s`` and ``all_ready_s`` count from the start,
    model build included. ``build_parts_s`` splits the build where the system reports it
    (the megakernel: compiler passes, weights, kernel compile with a cold and with a warm
    disk cache, module load).
    """

    model: str
    system: str
    context_len: int
    build_s: float
    per_batch_s: dict[int, float]
    first_step_s: float
    all_ready_s: float
    build_parts_s: dict[str, float] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["per_batch_s"] = {str(k): v for k, v in self.per_batch_s.items()}
        return data


@dataclasses.dataclass(slots=True)
class BenchReport:
    environment: Environment
    bandwidth_bytes_per_s: float
    results: list[StepResult] = dataclasses.field(default_factory=list)
    warmups: list[WarmupResult] = dataclasses.field(default_factory=list)
    errors: list[dict] = dataclasses.field(default_factory=list)  # measurements that failed
    wall_s: float | None = None  # the whole run so far, from the start of the command

    def to_dict(self) -> dict:
        return {
            "environment": dataclasses.asdict(self.environment),
            "wall_s": self.wall_s,
            "bandwidth_bytes_per_s": self.bandwidth_bytes_per_s,
            "results": [r.to_dict() for r in self.results],
            "warmups": [w.to_dict() for w in self.warmups],
            "errors": list(self.errors),
        }

    @classmethod
    def from_dict(cls, data: dict) -> BenchReport:
        step_fields = {f.name for f in dataclasses.fields(StepResult)}
        warmups = []
        for w in data.get("warmups", []):
            per_batch = {int(k): float(v) for k, v in w["per_batch_s"].items()}
            warmups.append(WarmupResult(**{**w, "per_batch_s": per_batch}))
        return cls(
            environment=Environment(**data["environment"]),
            bandwidth_bytes_per_s=data["bandwidth_bytes_per_s"],
            results=[StepResult(**{k: r[k] for k in step_fields if k in r})
                     for r in data["results"]],
            warmups=warmups,
            errors=list(data.get("errors", [])),
            wall_s=data.get("wall_s"),
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> BenchReport:
        return cls.from_dict(json.loads(Path(path).read_text()))


def format_table(report: BenchReport) -> str:
    """One row per result: latency, throughput, fraction of floor, speed-up vs each baseline."""
    baselines = sorted({r.system for r in report.results} - {FLOOR, "eventkernel"})
    by_key = {(r.model, r.num_tokens, r.context_len, r.system): r for r in report.results}
    header = ["model", "tok/step", "context", "system", "ms/step", "p10-p90", "tok/s", "floor%"]
    header += [f"x vs {b}" for b in baselines]
    rows = [header]
    order = sorted(report.results,
                   key=lambda r: (r.model, r.context_len, r.num_tokens, r.system != FLOOR,
                                  r.system))
    for r in order:
        row = [r.model, str(r.num_tokens), str(r.context_len), r.system, f"{r.median_ms:.3f}",
               f"{r.p10_ms:.3f}-{r.p90_ms:.3f}", f"{r.tokens_per_s:,.0f}",
               f"{100 * r.fraction_of_floor:.1f}"]
        for b in baselines:
            base = by_key.get((r.model, r.num_tokens, r.context_len, b))
            useful = base is not None and r.system not in (b, FLOOR)
            row.append(f"{base.median_ms / r.median_ms:.2f}" if useful else "")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    bandwidth = f"copy bandwidth {report.bandwidth_bytes_per_s / 1e9:.1f} GB/s"
    took = "" if report.wall_s is None else f", whole run {report.wall_s:.0f} s"
    text = [f"{report.environment.device_name}, {bandwidth}{took}", *lines]
    if report.warmups:
        text += ["", "warm-up (s): system, model, context, build, per tokens/step, first, all"]
        for w in report.warmups:
            per_batch = " ".join(f"{k}:{v:.1f}" for k, v in sorted(w.per_batch_s.items()))
            text.append(f"  {w.system} {w.model} ctx {w.context_len}: build {w.build_s:.1f}, "
                        f"[{per_batch}], first {w.first_step_s:.1f}, all {w.all_ready_s:.1f}")
            if w.build_parts_s:
                parts = ", ".join(f"{k} {v:.1f}" for k, v in w.build_parts_s.items())
                text.append(f"    build = {parts}")
    for error in report.errors:
        text.append(f"FAILED {error['model']} {error['system']} tokens={error['num_tokens']} "
                    f"context={error['context_len']}: {error['error']}")
    return "\n".join(text)


def plot(json_path: str | Path, png_path: str | Path) -> Path:
    """Latency vs tokens per step, one panel per model, one line per system and context.

    The floor is drawn dashed. Needs matplotlib (CPU only); uses no global pyplot state.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise RuntimeError("plotting needs matplotlib: pip install 'matplotlib>=3.8'") from error

    report = BenchReport.load(json_path)
    models = sorted({r.model for r in report.results})
    if not models:
        raise ValueError(f"{json_path} holds no results to plot")
    figure = Figure(figsize=(5.5 * len(models), 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(models), squeeze=False)[0]
    systems = sorted({r.system for r in report.results} - {FLOOR})
    contexts = sorted({r.context_len for r in report.results})
    colors = {s: f"C{i}" for i, s in enumerate(systems)}
    markers = {c: m for c, m in zip(contexts, "osD^v<>p*")}
    dashes = {c: d for c, d in zip(contexts, ["--", ":", "-.", (0, (5, 1, 1, 1, 1, 1))] * 3)}
    tokens = sorted({r.num_tokens for r in report.results})
    for ax, model in zip(axes, models):
        for system in [*systems, FLOOR]:
            for context in contexts:
                points = sorted((r.num_tokens, r.median_ms) for r in report.results
                                if (r.model, r.system, r.context_len) == (model, system, context))
                if not points:
                    continue
                xs, ys = zip(*points)
                if system == FLOOR:
                    ax.plot(xs, ys, color="black", linestyle=dashes[context], linewidth=1,
                            label=f"floor, ctx {context}")
                else:
                    ax.plot(xs, ys, color=colors[system], marker=markers[context],
                            label=f"{system}, ctx {context}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(tokens, [str(t) for t in tokens])
        ax.set_title(model)
        ax.set_xlabel("tokens per step")
        ax.set_ylabel("ms per step")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    figure.suptitle(report.environment.device_name)
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png_path, dpi=120)
    return png_path


def _git_state() -> tuple[str | None, bool | None]:
    root = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True,
                                text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, bool(status.strip())


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def _module_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m eventkernel.bench.report RESULTS.json [PLOT.png]``: print table, plot."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not 1 <= len(args) <= 2:
        print("usage: python -m eventkernel.bench.report RESULTS.json [PLOT.png]", file=sys.stderr)
        return 2
    print(format_table(BenchReport.load(args[0])))
    if len(args) == 2:
        print(f"plot: {plot(args[0], args[1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
