"""Per-SM weight streaming through GemvTask, without events: what the decode GEMV reaches.

One CTA per SM runs GemvTask over its own column tiles of a large weight (T = 1), the way a
worker's linear tasks follow each other, with the worker's L2 look-ahead (thread 32 asks
L2 for the tile ``tuning.lookahead`` tasks ahead) and the GEMV's tuning. Prints GB/s per
variant next to a plain device-to-device copy, so the GEMV's ceiling is known apart from
the megakernel's events. Usage on the GPU machine:
    PYTHONPATH=. python3 scripts/gemv_bench.py [--quick]
"""
from __future__ import annotations

import argparse
import ctypes
from concurrent.futures import ProcessPoolExecutor

from eventkernel.cuda.tuning import KernelTuning

# The kernel of one (K, TN); its tuning (look-ahead included) comes from compile_cuda.
SOURCE = r"""
#include "eventkernel.cuh"
using namespace ek;
constexpr int LOOKAHEAD = tuning::kLookahead;
extern "C" __global__ void __launch_bounds__(256, 1)
stream(const bf16* w, const bf16* x, bf16* out, int n, int tiles_per_cta, int* counter) {
    using Task = GemvTask<{K}, {TN}, bf16, false, false>;
    extern __shared__ __align__(128) char smem[];
    __shared__ StepShape shape;
    if (threadIdx.x == 0) {
        shape = StepShape{};
        shape.num_tokens = 1;
        shape.num_seqs = 1;
    }
    __syncthreads();
    const typename Task::Args args{w, x, nullptr, nullptr, out, n, 0.f};
    // Tiles dealt round-robin, as the static schedule deals a stage's tasks to workers.
    const int stride = gridDim.x;
    if (threadIdx.x == 32)
        for (int i = 0; i < LOOKAHEAD && i < tiles_per_cta; ++i)
            Task::l2_prefetch(args, 0, blockIdx.x + i * stride, 0);
    for (int i = 0; i < tiles_per_cta; ++i) {
        if (threadIdx.x == 32 && LOOKAHEAD > 0 && i + LOOKAHEAD < tiles_per_cta)
            Task::l2_prefetch(args, 0, blockIdx.x + (i + LOOKAHEAD) * stride, 0);
        Task::run(args, shape, 0, blockIdx.x + i * stride, 0, smem, true, [] { return true; });
        if (threadIdx.x == 0) {  // a task's notify
            __threadfence();
            atomicAdd(counter, 1);
        }
    }
}
"""

# (K, TN): llama-3.2-1b qkv/o_proj (K = 2048, TN = 16), qwen3-8b qkv/o_proj (4096, 16),
# qwen3-8b gate_up (4096, 64), qwen3-8b down_proj (12288, 16).
SHAPES = ((2048, 16), (4096, 16), (4096, 64), (12288, 16))
# (name, tuning)
DEFAULT = KernelTuning()
VARIANTS = (
    ("default", DEFAULT),                                 # the first 32 KB of the next tile
    ("no-l2", DEFAULT.replace(lookahead=0)),
    ("l2-2", DEFAULT.replace(lookahead=2)),
    ("l2-whole-tile", DEFAULT.replace(l2_prefetch_bytes=0)),
    ("batch-8", DEFAULT.replace(gemv_batch=8)),
)
QUICK = ("default", "no-l2")


def _compile(job: tuple[int, int, KernelTuning]):
    from eventkernel.cuda.compile import compile_cuda
    k, tn, tuning = job
    source = SOURCE.replace("{K}", str(k)).replace("{TN}", str(tn))
    return compile_cuda(source, tuning=tuning, name=f"gemv_bench_{k}_{tn}").cubin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    parser.add_argument("--mib", type=int, default=512, help="weight size per shape (MiB)")
    args = parser.parse_args()
    import torch

    from eventkernel.bench.timing import measure_copy_bandwidth, time_fn
    from eventkernel.cuda.launch import LoadedModule, require_hopper

    variants = [v for v in VARIANTS if not args.quick or v[0] in QUICK]
    jobs = [(k, tn, tuning) for k, tn in SHAPES for _, tuning in variants]
    with ProcessPoolExecutor(max_workers=8) as pool:
        cubins = list(pool.map(_compile, jobs))
    info = require_hopper()
    sms = info.sm_count
    torch.manual_seed(0)
    # The floor's convention: (bytes read + bytes written) / time of a 1 GiB copy.
    copy_gbs = measure_copy_bandwidth("cuda") / 1e9
    print(f"{info.name}: copy {copy_gbs:.0f} GB/s (read + write)")
    rows = []
    cubin_at = iter(cubins)
    for k, tn in SHAPES:
        tiles = (args.mib << 20) // (tn * k * 2) // sms
        n = tiles * sms * tn
        w = torch.randn(n, k, device="cuda").to(torch.bfloat16)
        x = torch.randn(1, k, device="cuda").to(torch.bfloat16)
        ref = x.float() @ w.float().T
        counter = torch.zeros(1, dtype=torch.int32, device="cuda")
        for name, _ in variants:
            module = LoadedModule(next(cubin_at))
            smem = 200 * 1024
            func = module.get_function("stream", max_dynamic_smem=smem)
            out = torch.zeros(1, n, device="cuda", dtype=torch.bfloat16)
            launch_args = [w, x, out, ctypes.c_int32(n), ctypes.c_int32(tiles), counter]
            ms = time_fn(lambda: module.launch(func, sms, 256, smem, launch_args), warmup=2,
                         iters=10, device="cuda").median_ms
            err = ((out.float() - ref).norm() / ref.norm()).item()
            gbs = w.numel() * 2 / (ms * 1e-3) / 1e9
            rows.append((k, tn, name, ms, gbs, err))
        del w
    print(f"{'K':>6} {'TN':>4} {'variant':<14} {'ms':>8} {'GB/s':>7} {'of copy':>8} {'rel err':>8}")
    for k, tn, name, ms, gbs, err in rows:
        print(f"{k:>6} {tn:>4} {name:<14} {ms:>8.3f} {gbs:>7.0f} {gbs / copy_gbs:>8.2f} {err:>8.1e}")


if __name__ == "__main__":
    main()
