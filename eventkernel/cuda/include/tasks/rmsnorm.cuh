/**
 * @file rmsnorm.cuh
 * @brief RmsNormTask: out[t, :] = bf16(g * bf16(x[t, :] * rsqrt(mean(x[t, :]^2) + eps)))
 *        for the rows of one row tile (the final norm when it is not fused into a Linear).
 *
 * Task coordinates: c0 = row tile. One warp per row. No shared memory.
 */
#pragma once

#include "../common/common.cuh"
#include "../step.cuh"

namespace ek {

template <RowSet kRows = RowSet::kTokens>
struct RmsNormTask {
    static constexpr int kSmemBytes = 0;

    struct Args {
        const bf16* input;   ///< [rows, dim]
        const bf16* weight;  ///< [dim]
        bf16* out;           ///< [rows, dim] (may equal input)
        int dim;             ///< multiple of 8
        float eps;
    };

    __device__ static bool active(const StepShape& shape, int c0, int, int) {
        return row_tile(shape, kRows, c0).count > 0;
    }

    __device__ static void prefetch(const Args&, int, int, int, char*) {}

    __device__ static void run(const Args& args, const StepShape& shape, int c0, int, int,
                               char*) {
        const RowTile rows = row_tile(shape, kRows, c0);
        const int vecs = args.dim / 8;
        for (int r = warp_id(); r < rows.count; r += kWarps) {
            const long long base = static_cast<long long>(rows.begin + r) * args.dim;
            float ss = 0.f;
            for (int v = lane_id(); v < vecs; v += 32) {
                float f[8];
                load8(args.input + base + v * 8, f);
#pragma unroll
                for (int e = 0; e < 8; ++e) ss += f[e] * f[e];
            }
            const float rstd = rsqrtf(warp_sum(ss) / static_cast<float>(args.dim) + args.eps);
            for (int v = lane_id(); v < vecs; v += 32) {
                float f[8], g[8];
                load8(args.input + base + v * 8, f);
                load8(args.weight + v * 8, g);
#pragma unroll
                for (int e = 0; e < 8; ++e) f[e] = round_bf16(f[e] * rstd) * g[e];
                store8(args.out + base + v * 8, f);
            }
        }
    }
};

}  // namespace ek
