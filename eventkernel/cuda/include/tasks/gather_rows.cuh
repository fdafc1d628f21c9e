/**
 * @file gather_rows.cuh
 * @brief GatherRowsTask: xs[s, :] = x[logits_indices[s], :] for every sequence s < S
 *        (the rows whose logits are needed). One task; no shared memory.
 */
#pragma once

#include "../common/common.cuh"
#include "../step.cuh"

namespace ek {

/// Column tile c0 of the gather: out[s, c0*TC:(c0+1)*TC] = input[logits_indices[s], ...].
/// Only the tile's columns are read, so a tile waits just for the producers of them.
template <int TC>
struct GatherRowsTask {
    static_assert(TC % 8 == 0, "TC must be a multiple of 8 (16-byte vectors)");
    static constexpr int kSmemBytes = 0;

    struct Args {
        const bf16* input;  ///< [T, dim]
        bf16* out;          ///< [S, dim]
        int dim;            ///< multiple of 8
    };

    __device__ static bool active(const StepShape& shape, int, int, int) {
        return shape.num_seqs > 0;
    }

    __device__ static void prefetch(const Args&, int, int, int, char*) {}

    __device__ static void run(const Args& args, const StepShape& shape, int c0, int, int,
                               char*) {
        constexpr int vecs = TC / 8;
        for (int i = threadIdx.x; i < shape.num_seqs * vecs; i += kThreads) {
            const int s = i / vecs;
            const int col = c0 * TC + (i % vecs) * 8;
            if (col >= args.dim) continue;
            const long long src_row = shape.logits_indices[s];
            copy8(args.out + static_cast<long long>(s) * args.dim + col,
                  args.input + src_row * args.dim + col);
        }
    }
};

}  // namespace ek
