"""The composition root: (model, options) -> checked plan -> compiled program (+ backend).

Every front end goes through here, so all share one set of defaults: the ``LLM`` API,
``eventkernel compile``, ``eventkernel inspect`` and the bench's megakernel runner.

- :func:`plan_build` resolves the model (its configuration only, never the weights) and
  checks every option and limit against the model and the machine;
- :func:`build` compiles the plan and, for ``stage="backend"``, reads the weights and makes
  the backend.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from eventkernel.compiler import Compiled, compile_model, lower_model
from eventkernel.cpu.plan import CpuPlan, cpu_plan
from eventkernel.cuda.tuning import KernelTuning
from eventkernel.ir.graph import DType, Graph
from eventkernel.lower import Program, Target
from eventkernel.models.config import Limits, ModelConfig
from eventkernel.models.source import ModelSource, load_weights, resolve_model

# NOTE: the default context is the model's max_position_embeddings capped here: 4096 keeps the
# built-in model's KV cache at 1.5 GB in fp32 on the CPU (8 sequences) and is what inspect and
# compile always used; longer contexts are one --max-context away, up to the model's maximum.
DEFAULT_MAX_CONTEXT = 4096
# Workers a program is cut for on the CUDA backend when no GPU is here to ask (H100 / H200).
HOPPER_SM_COUNT = 132
# The share of the available memory that weights + KV cache may take.
MEMORY_HEADROOM = 0.9
BACKENDS = ("auto", "cpu", "cuda")
STAGES = ("program", "compiled", "backend")


class BuildError(ValueError):
    """An option or limit that cannot work with this model on this machine."""


@dataclass(frozen=True, slots=True)
class BuildOptions:
    """How to build a model's step: limits, backend and compile options, checked here.

    ``max_context``: tokens of context per sequence; None: the model's
    ``max_position_embeddings``, at most ``DEFAULT_MAX_CONTEXT`` and what fits in memory.
    ``dtype``: "bf16" or "f32"; None: bf16 on cuda, f32 on cpu. ``num_workers``: workers the
    program is cut for (None: the GPU's SM count on cuda, the CPU plan's on cpu).
    ``target``: more ``Target`` fields (e.g. ``{"waves": 2}``); ``tuning``: the CUDA
    kernel's tuning constants (a ``KernelTuning``; None: its defaults); ``seed``: of the random weights of a preset.
    """

    backend: str = "auto"
    max_tokens_per_step: int = 64
    max_seqs: int = 8
    max_context: int | None = None
    page_size: int = 16
    dtype: str | None = None
    num_workers: int | None = None
    fuse_silu_mul: bool = False
    target: tuple[tuple[str, Any], ...] = ()
    tuning: KernelTuning | None = None
    trace: bool = False
    debug: bool = False
    kernel_dir: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise BuildError(f"backend must be one of {', '.join(BACKENDS)}, "
                             f"got {self.backend!r}")
        for name in ("max_tokens_per_step", "max_seqs", "page_size"):
            _check_positive(name, getattr(self, name))
        for name in ("max_context", "num_workers"):
            if getattr(self, name) is not None:
                _check_positive(name, getattr(self, name))
        if self.max_seqs > self.max_tokens_per_step:
            raise BuildError(f"max_seqs ({self.max_seqs}) cannot exceed max_tokens_per_step "
                             f"({self.max_tokens_per_step}): every sequence brings a token "
                             f"per step")
        if self.dtype not in (None, "bf16", "f32"):
            raise BuildError(f"dtype must be bf16 or f32, got {self.dtype!r}")
        if isinstance(self.target, Mapping):
            object.__setattr__(self, "target", tuple(sorted(self.target.items())))
        fields = {f.name for f in dataclasses.fields(Target)}
        unknown = [k for k, _ in self.target if k not in fields]
        if unknown or "num_workers" in dict(self.target):
            raise BuildError(f"target: unknown or reserved field(s) {unknown or ['num_workers']}"
                             f"; Target has {', '.join(sorted(fields - {'num_workers'}))}")
        if self.tuning is not None and not isinstance(self.tuning, KernelTuning):
            raise BuildError(f"tuning must be a KernelTuning, got {self.tuning!r}")
        for name in ("fuse_silu_mul", "trace", "debug"):
            if not isinstance(getattr(self, name), bool):
                raise BuildError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not _is_int(self.seed):
            raise BuildError(f"seed must be an integer, got {self.seed!r}")


@dataclass(frozen=True, slots=True)
class BuildPlan:
    """A resolved, checked build: the model source, the backend, limits and target.

    Nothing large was read to make it; ``resolve_s`` is how long resolving took.
    """

    source: ModelSource
    options: BuildOptions
    backend: str                 # "cpu" | "cuda"
    limits: Limits
    target: Target
    stage: str = "backend"       # what it was checked for (see plan_build)
    cpu: CpuPlan | None = None   # the CPU backend's use of the cores
    resolve_s: float = 0.0

    @property
    def config(self) -> ModelConfig:
        return self.source.config


@dataclass(slots=True)
class Built:
    """What :func:`build` made: the plan's program, its compiled events (``stage`` compiled
    or backend) and its backend (``stage`` backend), with seconds per part."""

    plan: BuildPlan
    graph: Graph
    program: Program
    compiled: Compiled | None = None
    backend: Any = None
    timings: dict[str, float] = field(default_factory=dict)


def plan_build(model: Any, options: BuildOptions | None = None, *,
               stage: str = "backend") -> BuildPlan:
    """Resolve ``model`` and check ``options`` against it, reading no weights.

    ``model``: a name ``resolve_model`` knows (None: the built-in model, a preset, a path, a
    Hugging Face id in the local cache), a :class:`ModelSource`, a :class:`ModelConfig` or a
    Hugging Face config dict (both: random weights). ``stage``: what :func:`build` will make;
    for "backend" (the model will run) the context is also capped by the model's positions
    and the memory the KV cache needs.
    """
    start = time.perf_counter()
    options = BuildOptions() if options is None else options
    if not isinstance(options, BuildOptions):
        raise TypeError(f"options must be a BuildOptions, got {type(options).__name__}")
    if stage not in STAGES:
        raise BuildError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    runs = stage == "backend"
    backend = pick_backend(options.backend, need_gpu=runs)      # the machine, then the model
    dtype = options.dtype or ("bf16" if backend == "cuda" else "f32")
    if backend == "cuda" and dtype != "bf16":
        raise BuildError("the CUDA backend runs bf16 programs: use dtype bf16 (or the cpu "
                         "backend for f32)")
    source = as_source(model, shapes_only=not runs)
    if runs and source.kind in ("hf-dir", "hf-cache") and source.path is not None \
            and source.path.is_dir() and not any(source.path.glob("*.safetensors")):
        raise BuildError(f"{source.path} has a config.json but no *.safetensors weights: "
                         f"inspect/compile can use it, running needs the weights")
    cpu = None
    if backend == "cpu":                 # one plan of the machine's cores (cpu/plan.py)
        cpu = cpu_plan(options.num_workers)
        target = dataclasses.replace(cpu.target, **dict(options.target))
    else:
        target = Target(num_workers=options.num_workers or _gpu_workers(),
                        **dict(options.target))
    dtype_bytes = 2 if dtype == "bf16" else 4
    max_context = _max_context(source, options, backend, dtype_bytes, runs)
    try:
        limits = Limits(max_tokens=options.max_tokens_per_step, max_seqs=options.max_seqs,
                        max_context=max_context, page_size=options.page_size,
                        dtype=DType.BF16 if dtype == "bf16" else DType.F32)
    except ValueError as err:
        raise BuildError(str(err)) from None
    return BuildPlan(source, options, backend, limits, target, stage, cpu,
                     time.perf_counter() - start)


def build(model: Any, options: BuildOptions | None = None, *,
          stage: str = "backend") -> Built:
    """Build ``model`` (anything :func:`plan_build` takes, or a :class:`BuildPlan`) up to
    ``stage``: "program" (the task program: all a kernel's source depends on), "compiled"
    (with events; schedules are built per bucket on demand) or "backend" (weights read and
    the backend made, ready to run steps)."""
    if stage not in STAGES:
        raise BuildError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    if isinstance(model, BuildPlan):
        if options is not None:
            raise TypeError("a BuildPlan carries its options: pass either a plan or options")
        plan = model
        if stage == "backend" and plan.stage != "backend":
            raise BuildError(f"this plan was checked for stage {plan.stage!r} only (not the "
                             f"memory and positions a running model needs): plan it with "
                             f"stage='backend'")
    else:
        plan = plan_build(model, options, stage=stage)
    opts, config = plan.options, plan.config
    timings = {"resolve": plan.resolve_s}
    start = time.perf_counter()
    if stage == "program":
        graph, program, _ = lower_model(config, plan.limits, plan.target,
                                        fuse_silu_mul=opts.fuse_silu_mul)
        timings["compile"] = time.perf_counter() - start
        return Built(plan, graph, program, timings=timings)
    compiled = compile_model(config, plan.limits, plan.target, fuse_silu_mul=opts.fuse_silu_mul)
    timings["compile"] = time.perf_counter() - start
    built = Built(plan, compiled.graph, compiled.program, compiled, timings=timings)
    if stage == "backend":
        start = time.perf_counter()
        weights = _graph_weights(plan, compiled.graph)
        timings["weights"] = time.perf_counter() - start
        start = time.perf_counter()
        built.backend = _make_backend(plan, compiled, weights)
        timings["backend"] = time.perf_counter() - start
    return built


def as_source(model: Any, shapes_only: bool = False) -> ModelSource:
    """``model`` as a :class:`ModelSource`: resolved by name, or shapes given as a config.
    ``shapes_only`` (nothing will run): a model directory's config.json is enough."""
    if isinstance(model, ModelSource):
        return model
    if isinstance(model, ModelConfig):
        return ModelSource("custom", "preset", None, model.to_hf(), model)
    if isinstance(model, Mapping):
        cfg = dict(model)
        return ModelSource(str(cfg.get("_name_or_path") or "custom"), "preset", None, cfg,
                           ModelConfig.from_hf(cfg))
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a name, a path, a ModelSource or a config, "
                        f"got {type(model).__name__}")
    if shapes_only and model is not None and os.path.isdir(model) and os.path.isfile(
            os.path.join(model, "config.json")):
        model = os.path.join(model, "config.json")
    if model is not None and os.fspath(model).endswith(".json") and os.path.isfile(model):
        with open(model, encoding="utf-8") as file:   # a config.json alone: shapes only
            try:
                cfg = json.load(file)
            except json.JSONDecodeError as err:
                raise BuildError(f"{os.fspath(model)}: not valid JSON ({err})") from None
        return ModelSource(os.fspath(model), "preset", None, cfg, ModelConfig.from_hf(cfg))
    return resolve_model(model)


def pick_backend(requested: str, need_gpu: bool = True) -> str:
    """'auto' -> 'cuda' on a Hopper GPU with the CUDA toolchain, else 'cpu'. 'cuda' without
    such a GPU is an error only when the backend will run (``need_gpu``)."""
    if requested not in BACKENDS:
        raise BuildError(f"backend must be one of {', '.join(BACKENDS)}, got {requested!r}")
    if requested == "cpu" or (requested == "cuda" and not need_gpu):
        return requested       # NOTE: no probe: a compile-only process makes no CUDA context
    problem = cuda_problem()
    if requested == "cuda" and problem:
        raise BuildError(f"the CUDA backend cannot run here: {problem}; use --backend cpu")
    return "cpu" if problem else "cuda"


def cuda_problem() -> str | None:
    """Why the CUDA backend cannot run here, or None when it can."""
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible"
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) != (9, 0):
        return (f"{torch.cuda.get_device_name()} is sm_{major}{minor}; the megakernel needs a "
                f"Hopper GPU (sm_90)")
    try:
        from eventkernel.cuda import backend as _  # noqa: F401
    except ImportError as err:
        return f"the CUDA backend is not available ({err})"
    return None


def available_memory(backend: str) -> tuple[int, str]:
    """(bytes the backend may still allocate, what that memory is)."""
    if backend == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        # NOTE: blocks torch's allocator holds but no tensor uses are free to us too.
        cached = torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
        return free + cached, "free GPU memory"
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "available RAM"


def _gpu_workers() -> int:
    if cuda_problem() is None:
        from eventkernel.cuda.launch import device_info
        return device_info().sm_count
    return HOPPER_SM_COUNT


def _max_context(source: ModelSource, options: BuildOptions, backend: str, dtype_bytes: int,
                 runs: bool) -> int:
    """The context limit: the one asked for, checked, or the default, fitted."""
    config = source.config
    positions = config.max_position_embeddings
    asked = options.max_context
    if not runs:
        return asked or min(positions, DEFAULT_MAX_CONTEXT)
    if asked is not None and asked > positions:
        raise BuildError(f"max_context {asked} is over the {positions} positions "
                         f"{source.name} was trained for (max_position_embeddings); "
                         f"use --max-context {positions} or less")
    context = asked or min(positions, DEFAULT_MAX_CONTEXT)
    weights = config.num_parameters() * dtype_bytes
    per_token = config.kv_bytes_per_token(dtype_bytes)
    available, what = available_memory(backend)
    budget = int(available * MEMORY_HEADROOM) - weights
    page = options.page_size
    fits = max(budget, 0) // (per_token * options.max_seqs) // page * page
    if fits >= context:
        return context
    if asked is None and fits >= page:
        return fits                     # the default, shrunk to what fits
    kv = per_token * options.max_seqs * -(-context // page) * page
    raise BuildError(
        f"max_context {context} x max_seqs {options.max_seqs} needs a KV cache of "
        f"{_gb(kv)} ({per_token} bytes per token) plus {_gb(weights)} of weights, but this "
        f"machine has {_gb(available)} of {what}; "
        + (f"use --max-context {fits} or less, or fewer sequences (max_seqs)" if fits >= page
           else "the weights alone do not fit: use a smaller model or a machine with more "
                "memory"))


def _graph_weights(plan: BuildPlan, graph: Graph) -> dict:
    import torch

    from eventkernel.models.decoder import graph_weights, random_graph_weights
    device = "cuda" if plan.backend == "cuda" else "cpu"
    if plan.source.random_weights:
        return random_graph_weights(graph, plan.options.seed, device)
    # NOTE: in the program's dtype, each tensor to the backend's device as it is read:
    # no fp32 (nor bf16) copy of the model on the host (a 30B MoE is 61 GB in bf16).
    dtype = torch.bfloat16 if plan.limits.dtype is DType.BF16 else torch.float32
    checkpoint = load_weights(plan.source, dtype, device=device)
    return graph_weights(graph, checkpoint.weights, consume=True)


def _make_backend(plan: BuildPlan, compiled: Compiled, weights: dict):
    opts = plan.options
    if plan.backend == "cuda":
        from eventkernel.cuda.backend import CudaBackend
        kwargs = {"debug": opts.debug, "trace": opts.trace, "tuning": opts.tuning,
                  "kernel_dir": opts.kernel_dir}
        return CudaBackend(compiled, weights, **{k: v for k, v in kwargs.items() if v})
    from eventkernel.cpu.backend import CpuBackend
    if plan.cpu is not None:
        import torch
        torch.set_num_threads(plan.cpu.torch_threads)
    return CpuBackend(compiled, weights, num_workers=plan.cpu.num_workers,
                      poison_intermediates=False)


def _check_positive(name: str, value: Any) -> None:
    if not _is_int(value) or value < 1:
        raise BuildError(f"{name} must be a positive integer, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _gb(num_bytes: int) -> str:
    return f"{num_bytes / 1e9:.1f} GB"
