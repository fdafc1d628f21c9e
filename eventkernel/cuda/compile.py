"""Compile CUDA C++ (the task templates plus generated code) to an sm_90a cubin.

Two compilers, one result type:

- ``compile_cuda``: NVRTC in-process (``cuda.bindings.nvrtc``), cached on disk by a hash of
  everything that affects the binary (source, options, arch, NVRTC version, package
  version, the template headers). This is what the runtime uses.
- ``compile_with_nvcc``: the ``nvcc`` command line, which also gives ptxas' resource report
  (registers, spills, stack frame) per kernel. Tests and tuning use it.

What a build is made of is all in its source: the tuning constants
(:class:`~eventkernel.cuda.tuning.KernelTuning`, declared by a generated source, added by
the compilers to one that declares none) and the trace mode; the compilers add only the
debug mode (``EK_DEBUG``). No other ``-D`` option exists.

Needs (runtime pin for the lead): ``cuda-bindings>=13.0`` and an NVRTC 13 runtime
(``nvidia-cuda-nvrtc`` 13.x wheel, or a CUDA 13 toolkit). The templates include no CUDA
toolkit header, so NVRTC needs no toolkit include directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from eventkernel.cuda.tuning import KernelTuning, with_tuning

INCLUDE_DIR = Path(__file__).resolve().parent / "include"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "eventkernel"
_CACHE_FORMAT = 1


class CudaCompileError(RuntimeError):
    """A CUDA compilation failed or its compiler is missing; the message has the log."""


@dataclasses.dataclass(frozen=True, slots=True)
class ResourceUsage:
    """Per-kernel resources. From nvcc all fields are set; from cuobjdump the spill
    counts are unknown (None) and ``local_bytes`` (stack + spills) is set instead."""

    registers: int
    shared_bytes: int
    spill_stores: int | None
    spill_loads: int | None
    stack_frame: int
    local_bytes: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class CompiledKernel:
    """A cubin and what is known about how it was made."""

    cubin: bytes
    name: str
    arch: str
    compiler: str  # "nvrtc" or "nvcc"
    resources: dict[str, ResourceUsage] | None  # kernel name -> usage; None when unknown
    compile_seconds: float
    cache_hit: bool
    log: str = ""

    def max_registers(self) -> int | None:
        if not self.resources:
            return None
        return max(r.registers for r in self.resources.values())


# ---------------------------------------------------------------------------------------
# NVRTC


def compile_cuda(
    source: str,
    *,
    arch: str = "sm_90a",
    tuning: KernelTuning | None = None,
    debug: bool = False,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    name: str = "ek",
    refresh: bool = False,
) -> CompiledKernel:
    """Compile ``source`` with NVRTC to a cubin for ``arch``.

    The package's include directory is on the include path (``#include "eventkernel.cuh"``).
    ``tuning``: the tuning constants declared ahead of a source that declares none (default:
    the defaults); a generated source declares its own (``generate(..., tuning=)``).
    ``debug`` defines ``EK_DEBUG`` (bounded event waits) and adds line info. Results are
    cached under ``cache_dir`` (default ``~/.cache/eventkernel``); ``cache_hit`` says
    whether this call compiled. ``refresh``: compile even when cached (a cold compile's
    time), then store the result.
    """
    nvrtc = _import_nvrtc()
    source = with_tuning(source, tuning)
    full_options = _nvrtc_options(arch, debug)
    version = _nvrtc_version(nvrtc)
    key = _cache_key("nvrtc", source, full_options, arch, version)
    cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    if use_cache and not refresh:
        hit = _cache_load(cache, key, name, arch, "nvrtc")
        if hit is not None:
            return hit

    start = time.perf_counter()
    cubin, log = _nvrtc_compile(nvrtc, source, full_options, name, arch)
    seconds = time.perf_counter() - start
    kernel = CompiledKernel(
        cubin=cubin,
        name=name,
        arch=arch,
        compiler="nvrtc",
        resources=_cuobjdump_resources(cubin),
        compile_seconds=seconds,
        cache_hit=False,
        log=log,
    )
    if use_cache:
        _cache_store(cache, key, kernel)
    return kernel


def nvrtc_available() -> bool:
    """True when cuda-bindings and an NVRTC runtime can compile here (no GPU needed)."""
    try:
        _nvrtc_version(_import_nvrtc())
    except Exception:  # noqa: BLE001 - missing package or missing libnvrtc
        return False
    return True


def _import_nvrtc():
    try:
        from cuda.bindings import nvrtc
    except ImportError as exc:
        raise CudaCompileError(
            "compile_cuda needs NVRTC through the cuda-bindings package: "
            "pip install 'cuda-bindings>=13.0' 'nvidia-cuda-nvrtc==13.*' "
            "(or use compile_with_nvcc)"
        ) from exc
    return nvrtc


def _nvrtc_options(arch: str, debug: bool) -> list[str]:
    full = [f"--gpu-architecture={arch}", "-std=c++17", f"-I{INCLUDE_DIR}"]
    if debug:
        full += ["-DEK_DEBUG", "-lineinfo"]
    return full


def _nvrtc_version(nvrtc) -> str:
    err, major, minor = nvrtc.nvrtcVersion()
    _nvrtc_check(nvrtc, err, "nvrtcVersion")
    return f"{major}.{minor}"


def _nvrtc_check(nvrtc, err, what: str, log: str = "") -> None:
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        _, text = nvrtc.nvrtcGetErrorString(err)
        detail = text.decode() if isinstance(text, bytes) else str(text)
        message = f"{what} failed: {detail}"
        if log:
            message += "\n--- NVRTC log ---\n" + log
        raise CudaCompileError(message)


def _nvrtc_compile(nvrtc, source: str, options: list[str], name: str, arch: str):
    err, prog = nvrtc.nvrtcCreateProgram(source.encode(), f"{name}.cu".encode(), 0, [], [])
    _nvrtc_check(nvrtc, err, "nvrtcCreateProgram")
    try:
        encoded = [opt.encode() for opt in options]
        (compile_err,) = nvrtc.nvrtcCompileProgram(prog, len(encoded), encoded)
        log = _nvrtc_log(nvrtc, prog)
        if compile_err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise CudaCompileError(
                f"NVRTC failed to compile '{name}' for {arch} (options: {' '.join(options)})\n"
                f"--- NVRTC log ---\n{log}"
            )
        err, size = nvrtc.nvrtcGetCUBINSize(prog)
        _nvrtc_check(nvrtc, err, "nvrtcGetCUBINSize", log)
        if size == 0:
            raise CudaCompileError(
                f"NVRTC produced no cubin for '{name}': arch '{arch}' must be a real "
                "architecture such as sm_90a, not a virtual compute_XX"
            )
        cubin = bytearray(size)
        (err,) = nvrtc.nvrtcGetCUBIN(prog, cubin)
        _nvrtc_check(nvrtc, err, "nvrtcGetCUBIN", log)
        return bytes(cubin), log
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def _nvrtc_log(nvrtc, prog) -> str:
    err, size = nvrtc.nvrtcGetProgramLogSize(prog)
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS or size <= 1:
        return ""
    buffer = bytearray(size)
    nvrtc.nvrtcGetProgramLog(prog, buffer)
    return bytes(buffer).rstrip(b"\0").decode(errors="replace")


# ---------------------------------------------------------------------------------------
# nvcc


def find_nvcc(nvcc: str | os.PathLike | None = None) -> str:
    """Path of nvcc: the argument, else PATH, else /usr/local/cuda/bin/nvcc."""
    candidates = [str(nvcc)] if nvcc is not None else ["nvcc", "/usr/local/cuda/bin/nvcc"]
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return found
    raise CudaCompileError(
        "nvcc was not found (looked for "
        + ", ".join(candidates)
        + "): install the CUDA 13 toolkit or pass nvcc='/path/to/nvcc'"
    )


def compile_with_nvcc(
    source: str,
    *,
    arch: str = "sm_90a",
    tuning: KernelTuning | None = None,
    debug: bool = False,
    name: str = "ek",
    nvcc: str | os.PathLike | None = None,
    timeout_s: float = 600.0,
) -> CompiledKernel:
    """Compile ``source`` with nvcc to a cubin and parse ptxas' resource report
    (``-Xptxas -v``) into ``resources`` (one entry per kernel). Not cached. ``tuning`` and
    ``debug`` as for :func:`compile_cuda`."""
    nvcc_path = find_nvcc(nvcc)
    source = with_tuning(source, tuning)
    virtual = arch.replace("sm_", "compute_")
    with tempfile.TemporaryDirectory(prefix="ek-nvcc-") as tmp:
        src = Path(tmp) / f"{name}.cu"
        out = Path(tmp) / f"{name}.cubin"
        src.write_text(source)
        command = [
            nvcc_path, "-cubin", f"-gencode=arch={virtual},code={arch}", "-std=c++17",
            "-Xptxas", "-v", f"-I{INCLUDE_DIR}", "-o", str(out), str(src),
        ]
        if debug:
            command[1:1] = ["-DEK_DEBUG", "-lineinfo"]
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        seconds = time.perf_counter() - start
        log = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise CudaCompileError(
                f"nvcc failed to compile '{name}' for {arch} (exit {proc.returncode})\n"
                f"command: {' '.join(command)}\n--- nvcc log ---\n{log}"
            )
        cubin = out.read_bytes()
    return CompiledKernel(
        cubin=cubin,
        name=name,
        arch=arch,
        compiler="nvcc",
        resources=parse_ptxas_report(log),
        compile_seconds=seconds,
        cache_hit=False,
        log=log,
    )


_ENTRY = re.compile(r"Compiling entry function '([^']+)'")
_PROPERTIES = re.compile(r"Function properties for (\S+)")
_FRAME = re.compile(
    r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads"
)
_USED = re.compile(r"Used (\d+) registers(.*)")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas_report(log: str) -> dict[str, ResourceUsage]:
    """Kernel name -> ResourceUsage from ``ptxas -v`` output (entry functions only)."""
    frames: dict[str, tuple[int, int, int]] = {}
    used: dict[str, tuple[int, int]] = {}
    entry = None
    properties_of = None
    for line in log.splitlines():
        if match := _ENTRY.search(line):
            entry = match.group(1)
        elif match := _PROPERTIES.search(line):
            properties_of = match.group(1)
        elif (match := _FRAME.search(line)) and properties_of is not None:
            frames[properties_of] = tuple(int(g) for g in match.groups())
            properties_of = None
        elif (match := _USED.search(line)) and entry is not None:
            smem = _SMEM.search(match.group(2))
            used[entry] = (int(match.group(1)), int(smem.group(1)) if smem else 0)
            entry = None
    report = {}
    for kernel, (registers, shared) in used.items():
        stack, stores, loads = frames.get(kernel, (0, 0, 0))
        report[kernel] = ResourceUsage(
            registers=registers,
            shared_bytes=shared,
            spill_stores=stores,
            spill_loads=loads,
            stack_frame=stack,
        )
    return report


# ---------------------------------------------------------------------------------------
# cuobjdump (resource report for NVRTC cubins, when the tool is installed)

_CUOBJ_FUNCTION = re.compile(r"Function (\S+):")
_CUOBJ_FIELDS = re.compile(r"(REG|STACK|SHARED|LOCAL):(\d+)")


def _cuobjdump_resources(cubin: bytes) -> dict[str, ResourceUsage] | None:
    tool = shutil.which("cuobjdump") or shutil.which("/usr/local/cuda/bin/cuobjdump")
    if tool is None:
        return None
    with tempfile.TemporaryDirectory(prefix="ek-cuobjdump-") as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        try:
            proc = subprocess.run(
                [tool, "--dump-resource-usage", str(path)],
                capture_output=True, text=True, timeout=60,
            )
        except (OSError, subprocess.SubprocessError):
            return None
    if proc.returncode != 0:
        return None
    return parse_cuobjdump_report(proc.stdout)


def parse_cuobjdump_report(text: str) -> dict[str, ResourceUsage]:
    """Kernel name -> ResourceUsage from ``cuobjdump --dump-resource-usage``."""
    report = {}
    function = None
    for line in text.splitlines():
        if match := _CUOBJ_FUNCTION.search(line):
            function = match.group(1)
            continue
        fields = dict(_CUOBJ_FIELDS.findall(line))
        if function is not None and "REG" in fields:
            report[function] = ResourceUsage(
                registers=int(fields["REG"]),
                shared_bytes=int(fields.get("SHARED", 0)),
                spill_stores=None,
                spill_loads=None,
                stack_frame=int(fields.get("STACK", 0)),
                local_bytes=int(fields.get("LOCAL", 0)),
            )
            function = None
    return report


# ---------------------------------------------------------------------------------------
# disk cache


def headers_digest(include_dir: Path = INCLUDE_DIR) -> str:
    """sha256 over every template header (path and contents)."""
    digest = hashlib.sha256()
    for path in sorted(include_dir.rglob("*.cuh")):
        digest.update(str(path.relative_to(include_dir)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _package_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("eventkernel")
    except (ImportError, PackageNotFoundError):
        return "unknown"


def _cache_key(compiler: str, source: str, options: list[str], arch: str, version: str) -> str:
    parts = {
        "format": _CACHE_FORMAT,
        "compiler": compiler,
        "compiler_version": version,
        "arch": arch,
        "options": options,
        "package_version": _package_version(),
        "headers": headers_digest(),
        "source": hashlib.sha256(source.encode()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _cache_store(cache: Path, key: str, kernel: CompiledKernel) -> None:
    meta = {
        "resources": (
            {k: dataclasses.asdict(v) for k, v in kernel.resources.items()}
            if kernel.resources is not None
            else None
        ),
        "compile_seconds": kernel.compile_seconds,
        "log": kernel.log,
    }
    # NOTE: metadata first, cubin last: a present cubin implies complete metadata.
    _atomic_write(cache / f"{key}.json", json.dumps(meta).encode())
    _atomic_write(cache / f"{key}.cubin", kernel.cubin)


def _cache_load(cache: Path, key: str, name: str, arch: str, compiler: str):
    cubin_path = cache / f"{key}.cubin"
    meta_path = cache / f"{key}.json"
    try:
        cubin = cubin_path.read_bytes()
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    resources = meta.get("resources")
    return CompiledKernel(
        cubin=cubin,
        name=name,
        arch=arch,
        compiler=compiler,
        resources=(
            {k: ResourceUsage(**v) for k, v in resources.items()} if resources is not None else None
        ),
        compile_seconds=float(meta.get("compile_seconds", 0.0)),
        cache_hit=True,
        log=meta.get("log", ""),
    )
