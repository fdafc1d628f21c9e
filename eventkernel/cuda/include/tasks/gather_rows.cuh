/**
 * @file gather_rows.cuh
 * @brief GatherRowsTask: xs[s, :] = x[logits_indices[s], :] for every sequence s < S
 *        (the rows whose logits are needed). One task; no shared memory.
 */
#pragma once

#include "../common/common.cuh"
#include "../step.cuh"

namespace ek {

struct GatherRowsTask {
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

    __device__ static void run(const Args& args, const StepShape& shape, int, int, int, char*) {
        const int vecs = args.dim / 8;
        for (int i = threadIdx.x; i < shape.num_seqs * vecs; i += kThreads) {
            const int s = i / vecs;
            const int col = (i % vecs) * 8;
            const long long src_row = shape.logits_indices[s];
            copy8(args.out + static_cast<long long>(s) * args.dim + col,
                  args.input + src_row * args.dim + col);
        }
    }
};

}  // namespace ek
