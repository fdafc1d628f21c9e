"""``eventkernel compile MODEL``: the megakernel's source and sm_90a cubin, ahead of time.

No GPU needed. :class:`~eventkernel.cuda.backend.CudaBackend` loads the folder it writes
(``kernel_dir``) instead of compiling when the source hashes match.
"""
from __future__ import annotations

from eventkernel.build import BuildOptions, build
from eventkernel.cuda.aot import KERNEL, compile_program


def compile_command(model: str, options: BuildOptions, out_dir: str) -> int:
    """Generate and compile the megakernel of ``model``; print its resource report."""
    built = build(model, options, stage="program")
    limits, workers = built.plan.limits, built.plan.target.num_workers
    meta = {"model": model, "arch_family": built.plan.config.arch, "workers": workers,
            "limits": {"max_tokens": limits.max_tokens, "max_seqs": limits.max_seqs,
                       "max_context": limits.max_context, "page_size": limits.page_size}}
    aot = compile_program(built.program, out_dir, meta)
    kernel = aot.kernel
    usage = (kernel.resources or {}).get(KERNEL)
    print(f"{model}: {len(built.program.grids)} task grids, {len(aot.source.kinds)} task "
          f"template instantiations; generated in "
          f"{built.timings['compile'] + aot.generate_s:.1f} s, compiled with "
          f"{kernel.compiler} in {kernel.compile_seconds:.1f} s")
    if usage is not None:
        print(f"{KERNEL}: {usage.registers} registers/thread, {usage.shared_bytes} B static "
              f"shared memory (+ dynamic: the largest task's), stack frame {usage.stack_frame} B, "
              f"spill stores {usage.spill_stores} B, spill loads {usage.spill_loads} B")
    else:
        print(f"{KERNEL}: resource report unavailable (NVRTC without cuobjdump)")
    print(f"wrote {aot.out_dir}/{KERNEL}.cu, {KERNEL}.cubin ({len(kernel.cubin) / 1e6:.2f} MB), "
          f"manifest.json")
    return 0
