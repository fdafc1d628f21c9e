"""Tuning constants of the megakernel: one typed, validated dataclass.

The kernel's performance knobs (look-ahead, batch sizes, wait backoff, ...) are fields of
:class:`KernelTuning`. They reach the kernel as ``constexpr`` values in
``namespace ek::tuning``, which :meth:`KernelTuning.c_declarations` emits at the top of the
generated source, before any header is included; the headers read ``tuning::kX``. A build
differs from another only through its source, so the compile cache key covers the tuning.

The only preprocessor switches left are the build modes ``EK_DEBUG`` (bounded waits, see
``events.cuh``) and ``EK_TRACE`` (per-task timestamps, ``runtime/trace.cuh``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# NOTE: a source declares its tuning with this line; compile_cuda adds the defaults to a
# source without one (a hand-written test kernel), never a second block.
TUNING_NAMESPACE = "namespace ek::tuning {"


@dataclass(frozen=True, slots=True)
class KernelTuning:
    """Compile-time tuning of the megakernel. The defaults are the measured best on an
    H200 (bench/results/README.md); every other value is a variant to measure."""

    lookahead: int = 1                # tasks ahead whose first weight bytes go to L2
    l2_prefetch_bytes: int = 32768    # bytes of a tile the look-ahead asks L2 for (0: all)
    gemv_batch: int = 16              # GemvTask: 16-byte weight loads a lane keeps in flight
    gemv_early: bool = True           # GemvTask: first weight batch flies during the wait
    mma_gemv_min_rows: int = 2        # 0: off; N: steps of N.. rows take GemvMmaTask
    mma_gemv_batch: int = 4           # GemvMmaTask: 32-column steps in flight per warp
    mma_gemv_groups: int = 4          # GemvMmaTask: steps of up to N x 16 rows (1: LinearTask
                                      # takes the steps of more than 16 rows)
    mma_gemv_early: bool = False      # GemvMmaTask: first batch during the wait (spills)
    wait_max_spins: int = 1 << 22     # debug builds: polls before a wait gives up
    wait_max_sleep_ns: int = 64       # backoff cap between polls of an event counter
    notify_fence: bool = False        # a full GPU fence before each notify (not needed)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            want = bool if field.type in ("bool", bool) else int
            if type(value) is not want:
                raise TypeError(f"KernelTuning.{field.name} must be {want.__name__}, "
                                f"got {value!r}")
        _check(self.lookahead >= 0, "lookahead must be >= 0 (0: no L2 look-ahead)")
        _check(self.l2_prefetch_bytes >= 0, "l2_prefetch_bytes must be >= 0 (0: whole tiles)")
        _check(self.gemv_batch >= 1, "gemv_batch must be >= 1")
        _check(self.mma_gemv_min_rows >= 0, "mma_gemv_min_rows must be >= 0 (0: off)")
        _check(self.mma_gemv_batch >= 1, "mma_gemv_batch must be >= 1")
        _check(self.mma_gemv_groups >= 1, "mma_gemv_groups must be >= 1")
        _check(not (self.mma_gemv_early and self.mma_gemv_groups > 1),
               "mma_gemv_early loads one group's first batch: use it with mma_gemv_groups=1")
        _check(self.wait_max_spins >= 1, "wait_max_spins must be >= 1")
        _check(1 <= self.wait_max_sleep_ns < 1 << 31, "wait_max_sleep_ns must be >= 1")

    def c_declarations(self) -> str:
        """``namespace ek::tuning`` with one ``constexpr`` per field (``kLookahead``...)."""
        lines = ["/// Tuning of this build (eventkernel.cuda.tuning.KernelTuning).",
                 TUNING_NAMESPACE]
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            c_type = "bool" if isinstance(value, bool) else "int"
            literal = str(value).lower() if isinstance(value, bool) else str(value)
            lines.append(f"constexpr {c_type} {_constant_name(field.name)} = {literal};")
        lines.append("}  // namespace ek::tuning")
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> KernelTuning:
        """From ``"field=value ..."`` (e.g. ``"mma_gemv_min_rows=0 notify_fence=true"``):
        the defaults with those fields replaced."""
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        changes: dict[str, int | bool] = {}
        for item in text.split():
            name, sep, value = item.partition("=")
            if not sep or name not in types:
                raise ValueError(f"KernelTuning: {item!r} is not FIELD=VALUE with FIELD one "
                                 f"of {', '.join(types)}")
            if types[name] in ("bool", bool):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(f"KernelTuning: {name} takes true or false, not {value!r}")
                changes[name] = value.lower() in ("true", "1")
            else:
                changes[name] = int(value, 0)
        return cls(**changes)

    def replace(self, **changes) -> KernelTuning:
        """A copy with ``changes`` (validated)."""
        return dataclasses.replace(self, **changes)


def with_tuning(source: str, tuning: KernelTuning | None) -> str:
    """``source`` with its tuning declared: ``tuning`` (default: the defaults) ahead of a
    source that declares none; a source that declares its own must get ``tuning=None``."""
    if TUNING_NAMESPACE in source:
        if tuning is not None:
            raise ValueError("this source declares its tuning already (a generated kernel): "
                             "pass the tuning to generate(), not to the compiler")
        return source
    return (tuning or KernelTuning()).c_declarations() + source


def _constant_name(field: str) -> str:
    return "k" + "".join(part.capitalize() for part in field.split("_"))


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(f"KernelTuning: {message}")
