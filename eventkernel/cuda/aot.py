"""Ahead-of-time compilation: ``eventkernel compile MODEL`` (no GPU needed).

Writes the generated megakernel source, its sm_90a cubin and a manifest (what the kernel
was generated from, the source hash) to a folder (the command itself, which resolves the
model, is ``eventkernel.serve.compile``); :class:`~eventkernel.cuda.backend.CudaBackend`
loads such a folder instead of compiling when the hashes match.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

from eventkernel.cuda.codegen import KernelSource, generate
from eventkernel.cuda.compile import CompiledKernel, compile_cuda, compile_with_nvcc, find_nvcc

KERNEL = "ek_step"


def source_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def write_kernel(out_dir: str | os.PathLike, source: KernelSource, kernel: CompiledKernel,
                 meta: dict) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{KERNEL}.cu").write_text(source.source)
    (out / f"{KERNEL}.cubin").write_bytes(kernel.cubin)
    manifest = {"source_sha256": source_hash(source.source), "arch": kernel.arch,
                "compiler": kernel.compiler, "kinds": list(source.kinds), **meta}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


def load_kernel(kernel_dir: str | os.PathLike, source: KernelSource) -> bytes:
    """The cubin of ``kernel_dir`` if it was compiled from exactly ``source``."""
    folder = Path(kernel_dir)
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        raise FileNotFoundError(f"{folder}: no manifest.json; make the folder with "
                                f"`eventkernel compile MODEL --out {folder}`")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("source_sha256") != source_hash(source.source):
        raise ValueError(f"{folder} holds a kernel compiled from another source (other model, "
                         f"limits or eventkernel version): compile it again")
    return (folder / f"{KERNEL}.cubin").read_bytes()


@dataclasses.dataclass(frozen=True, slots=True)
class AotKernel:
    """A kernel compiled ahead of time: its source, the compiled kernel, where it went."""

    source: KernelSource
    kernel: CompiledKernel
    out_dir: Path
    generate_s: float


def compile_program(program, out_dir: str | os.PathLike, meta: dict) -> AotKernel:
    """Generate the megakernel of ``program`` (a task program), compile it for sm_90a (nvcc
    when installed, for its resource report; NVRTC otherwise) and write it to ``out_dir``
    with a manifest holding ``meta``."""
    start = time.perf_counter()
    source = generate(program)
    generate_s = time.perf_counter() - start
    try:
        find_nvcc()
        kernel = compile_with_nvcc(source.source, name=KERNEL)
    except Exception as err:  # noqa: BLE001 - fall back to NVRTC when nvcc is missing
        if "nvcc was not found" not in str(err):
            raise
        kernel = compile_cuda(source.source, name=KERNEL, use_cache=False)
    return AotKernel(source, kernel, write_kernel(out_dir, source, kernel, meta), generate_s)
