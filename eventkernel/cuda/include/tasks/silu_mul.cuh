/**
 * @file silu_mul.cuh
 * @brief SiluMulTask: h[t, n] = silu(gu[t, n]) * gu[t, I + n] (gate then up halves),
 *        bf16 in and out, fp32 math. (Models fuse it into the linear that follows: see
 *        the kGated input of LinearTask and GemvTask.)
 *
 * Task coordinates: c0 = row tile, c1 = column tile of TC columns. No shared memory.
 */
#pragma once

#include "../common/common.cuh"
#include "../step.cuh"

namespace ek {

template <int TC>
struct SiluMulTask {
    static_assert(TC % 8 == 0, "TC must be a multiple of 8 (16-byte vectors)");
    static constexpr int kSmemBytes = 0;

    struct Args {
        const bf16* gate_up;  ///< [T, 2 * inter]
        bf16* out;            ///< [T, inter]
        int inter;            ///< I, multiple of 8
    };

    __device__ static bool active(const StepShape& shape, int c0, int, int) {
        return row_tile(shape, RowSet::kTokens, c0).count > 0;
    }

    __device__ static void prefetch(const Args&, int, int, int, char*) {}

    __device__ static void run(const Args& args, const StepShape& shape, int c0, int c1, int,
                               char*) {
        const RowTile rows = row_tile(shape, RowSet::kTokens, c0);
        constexpr int kVecs = TC / 8;
        const int col0 = c1 * TC;
        for (int i = threadIdx.x; i < rows.count * kVecs; i += kThreads) {
            const int t = rows.begin + i / kVecs;
            const int col = col0 + (i % kVecs) * 8;
            if (col >= args.inter) continue;
            const bf16* row = args.gate_up + static_cast<long long>(t) * 2 * args.inter;
            float g[8];
            silu_gate8(row + col, row + args.inter + col, g);
            store8(args.out + static_cast<long long>(t) * args.inter + col, g);
        }
    }
};

}  // namespace ek
