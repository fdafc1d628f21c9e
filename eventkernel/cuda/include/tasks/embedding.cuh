/**
 * @file embedding.cuh
 * @brief EmbeddingTask: x[t, c*TC:(c+1)*TC] = E[tokens[t], c*TC:(c+1)*TC].
 *
 * Task coordinates: c0 = row tile, c1 = column tile, c2 unused. No shared memory.
 */
#pragma once

#include "../common/common.cuh"
#include "../step.cuh"

namespace ek {

template <int TC>
struct EmbeddingTask {
    static_assert(TC % 8 == 0, "TC must be a multiple of 8 (16-byte vectors)");
    static constexpr int kSmemBytes = 0;

    struct Args {
        const bf16* table;  ///< [vocab, dim]
        bf16* out;          ///< [T, dim]
        int dim;            ///< multiple of 8
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
            if (col >= args.dim) continue;
            const long long token = shape.tokens[t];
            copy8(args.out + static_cast<long long>(t) * args.dim + col,
                  args.table + token * args.dim + col);
        }
    }
};

}  // namespace ek
