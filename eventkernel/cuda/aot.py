"""Ahead-of-time compilation: ``eventkernel compile MODEL`` (no GPU needed).

Writes the generated megakernel source, its sm_90a cubin and a manifest (what the kernel
was generated from, the source hash) to a folder; :class:`~eventkernel.cuda.backend.CudaBackend`
loads such a folder instead of compiling when the hashes match.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

from eventkernel.compiler import lower_model
from eventkernel.cuda.codegen import KernelSource, generate
from eventkernel.cuda.compile import CompiledKernel, compile_cuda, compile_with_nvcc, find_nvcc
from eventkernel.ir.graph import DType
from eventkernel.lower import Target
from eventkernel.models.config import Limits

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


def compile_command(model: str, limits: Limits, workers: int, out_dir: str) -> int:
    """Generate and compile the megakernel of ``model``; print its resource report."""
    from eventkernel.serve.inspect import resolve_config
    config = resolve_config(model)
    limits = dataclasses.replace(limits, dtype=DType.BF16)
    start = time.perf_counter()
    _, program, _ = lower_model(config, limits, Target(num_workers=workers))
    source = generate(program)
    generated_s = time.perf_counter() - start
    try:
        find_nvcc()
        kernel = compile_with_nvcc(source.source, name=KERNEL)
    except Exception as err:  # noqa: BLE001 - fall back to NVRTC when nvcc is missing
        if "nvcc was not found" not in str(err):
            raise
        kernel = compile_cuda(source.source, name=KERNEL, use_cache=False)
    meta = {"model": model, "arch_family": config.arch, "workers": workers,
            "limits": {"max_tokens": limits.max_tokens, "max_seqs": limits.max_seqs,
                       "max_context": limits.max_context, "page_size": limits.page_size}}
    out = write_kernel(out_dir, source, kernel, meta)
    usage = (kernel.resources or {}).get(KERNEL)
    print(f"{model}: {len(program.grids)} task grids, {len(source.kinds)} task "
          f"template instantiations; generated in {generated_s:.1f} s, compiled with "
          f"{kernel.compiler} in {kernel.compile_seconds:.1f} s")
    if usage is not None:
        print(f"{KERNEL}: {usage.registers} registers/thread, {usage.shared_bytes} B static "
              f"shared memory (+ dynamic: the largest task's), stack frame {usage.stack_frame} B, "
              f"spill stores {usage.spill_stores} B, spill loads {usage.spill_loads} B")
    else:
        print(f"{KERNEL}: resource report unavailable (NVRTC without cuobjdump)")
    print(f"wrote {out}/{KERNEL}.cu, {KERNEL}.cubin ({len(kernel.cubin) / 1e6:.2f} MB), "
          f"manifest.json")
    return 0
