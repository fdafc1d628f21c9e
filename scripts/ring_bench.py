"""Per-SM weight streaming through the ring, without events: what the ring GEMV reaches.

One CTA per SM streams its own column tiles of a large weight (T = 1) through the
weight ring, as a worker's linear tasks do, optionally with a fence + atomic after each
tile (a task's notify) on a chosen thread. Prints GB/s per variant next to a plain
device-to-device copy. Usage on the GPU machine: PYTHONPATH=. python3 scripts/ring_bench.py
"""
from __future__ import annotations

import ctypes

import torch

from eventkernel.bench.timing import measure_copy_bandwidth, time_fn
from eventkernel.cuda.compile import compile_cuda
from eventkernel.cuda.launch import LoadedModule, require_hopper

SOURCE = r"""
#include "eventkernel.cuh"
using namespace ek;
extern "C" __global__ void __launch_bounds__(256, 1)
stream(const bf16* w, const bf16* x, bf16* out, int n, int tiles_per_cta, int fence_thread,
       int* counter) {
    using Task = LinearTask<KDIM, 16, bf16, false, false>;
    extern __shared__ __align__(128) char smem[];
    __shared__ unsigned long long bars[kRingStages];
    const int first = blockIdx.x * tiles_per_cta;
    WeightRing<ColumnTiles> ring{bars, smem, ColumnTiles{w, KDIM, 16, n, first,
                                                         first + tiles_per_cta}};
    if (threadIdx.x < 32) {
        ring.init();
        ring.pump();
    }
    __syncthreads();
    const GemvParams p = gemv_params<Task>(Task::Args{w, x, nullptr, nullptr, out, n, 0.f});
    for (int c1 = first; c1 < first + tiles_per_cta; ++c1) {
        if (threadIdx.x < 32) ring.pump();
        ring_gemv(p, ring_tile(w, KDIM, 16, n, c1), RowTile{0, 1}, c1 * 16,
                  smem + kRingBytes, ring);
        __syncthreads();
        if (threadIdx.x == fence_thread) {
            __threadfence();
            atomicAdd(counter, 1);
        }
    }
}
"""


def main() -> None:
    info = require_hopper()
    sms = info.sm_count
    torch.manual_seed(0)
    # The floor's convention: (bytes read + bytes written) / time of a 1 GiB copy.
    copy_gbs = measure_copy_bandwidth("cuda") / 1e9
    print(f"copy: {copy_gbs:.0f} GB/s (read + write)")
    rows = []
    for k in (2048, 4096):
        for name, opts in (("ring-3", ()), ("ring-2", ("-DEK_RING_STAGES=2",))):
            module = LoadedModule(compile_cuda(SOURCE, options=opts + (f"-DKDIM={k}",),
                                               name=f"ring_{k}_{name}").cubin)
            smem = 227 * 1024 - 1024
            func = module.get_function("stream", max_dynamic_smem=smem)
            tiles = (512 << 20) // (16 * k * 2) // sms
            n = tiles * sms * 16
            w = torch.randn(n, k, device="cuda").to(torch.bfloat16)
            x = torch.randn(1, k, device="cuda").to(torch.bfloat16)
            out = torch.empty(1, n, device="cuda", dtype=torch.bfloat16)
            counter = torch.zeros(1, dtype=torch.int32, device="cuda")
            for fence in (-1, 0, 32):
                args = [w, x, out, ctypes.c_int32(n), ctypes.c_int32(tiles),
                        ctypes.c_int32(fence), counter]
                ms = time_fn(lambda: module.launch(func, sms, 256, smem, args), warmup=1,
                             iters=5, device="cuda").median_ms
                gbs = w.numel() * 2 / (ms * 1e-3) / 1e9
                rows.append((k, name, fence, ms, gbs))
            ref = (x.float() @ w.float().T)
            err = ((out.float() - ref).norm() / ref.norm()).item()
            print(f"K={k} {name}: rel err {err:.2e}")
            del w
    print(f"{'K':>6} {'variant':<8} {'fence':>5} {'ms':>8} {'GB/s':>7} {'of copy':>8}")
    for k, name, fence, ms, gbs in rows:
        print(f"{k:>6} {name:<8} {fence:>5} {ms:>8.3f} {gbs:>7.0f} {gbs / copy_gbs:>8.2f}")


if __name__ == "__main__":
    main()
