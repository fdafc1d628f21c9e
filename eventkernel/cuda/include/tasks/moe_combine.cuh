/**
 * @file moe_combine.cuh
 * @brief MoeCombineTask: x[t, c] += sum over token t's K experts of y[pos[t, j], c] *
 *        weight[t, j], in expert order (ascending sorted row), rounding each product and
 *        each partial sum to bf16 as transformers does, then the residual add (bf16).
 *
 * Task coordinates: c0 = row tile, c1 = column tile of TC columns. No shared memory.
 */
#pragma once

#include "../common/common.cuh"
#include "../step.cuh"

namespace ek {

template <int TC, int K>
struct MoeCombineTask {
    static_assert(TC % 8 == 0, "TC must be a multiple of 8 (16-byte vectors)");
    static constexpr int kSmemBytes = 0;

    struct Args {
        const bf16* y;          ///< [T * K, D] expert outputs by sorted row
        const int* pos;         ///< [T, K]
        const float* weights;   ///< [T, K] (bf16 values)
        bf16* x;                ///< [T, D] residual stream, in place
        int dim;                ///< D, multiple of 8
    };

    __device__ static bool active(const StepShape& shape, int c0, int, int) {
        return row_tile(shape, RowSet::kTokens, c0).count > 0;
    }

    __device__ static void prefetch(const Args&, int, int, int, char*) {}

    __device__ static void run(const Args& args, const StepShape& shape, int c0, int c1, int,
                               char*) {
        const RowTile rows = row_tile(shape, RowSet::kTokens, c0);
        constexpr int kVecs = TC / 8;
        for (int i = threadIdx.x; i < rows.count * kVecs; i += kThreads) {
            const int t = rows.begin + i / kVecs;
            const int col = c1 * TC + (i % kVecs) * 8;
            if (col >= args.dim) continue;
            int p[K];
            float w[K];
#pragma unroll
            for (int j = 0; j < K; ++j) {
                p[j] = args.pos[t * K + j];
                w[j] = args.weights[t * K + j];
            }
#pragma unroll
            for (int a = 1; a < K; ++a)          // insertion sort by row: expert order
#pragma unroll
                for (int b = a; b > 0; --b)
                    if (p[b] < p[b - 1]) {
                        const int tp = p[b]; p[b] = p[b - 1]; p[b - 1] = tp;
                        const float tw = w[b]; w[b] = w[b - 1]; w[b - 1] = tw;
                    }
            float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
#pragma unroll
            for (int j = 0; j < K; ++j) {
                float v[8];
                load8(args.y + static_cast<long long>(p[j]) * args.dim + col, v);
#pragma unroll
                for (int e = 0; e < 8; ++e) acc[e] = round_bf16(acc[e] + round_bf16(v[e] * w[j]));
            }
            bf16* out = args.x + static_cast<long long>(t) * args.dim + col;
            float r[8];
            load8(out, r);
#pragma unroll
            for (int e = 0; e < 8; ++e) r[e] += acc[e];
            store8(out, r);
        }
    }
};

}  // namespace ek
