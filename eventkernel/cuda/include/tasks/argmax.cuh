/**
 * @file argmax.cuh
 * @brief ArgmaxTask: next_tokens[r] = first index of the max of logits[r, :V] (fp32), and
 *        the max value, for the rows of one row tile of kTileRows rows (the compiler tiles
 *        argmax one row per task, so that rows reduce on different SMs). The whole CTA
 *        reduces one row at a time.
 *
 * Task coordinates: c0 = row tile. Rows are per-sequence (RowSet::kSeqs) by default:
 * logits come from the gathered rows.
 */
#pragma once

#include "../common/common.cuh"
#include "../step.cuh"

namespace ek {

template <RowSet kRows = RowSet::kSeqs, int kTileRows = kRowTile>
struct ArgmaxTask {
    static constexpr int kSmemBytes = kWarps * 8;

    struct Args {
        const float* logits;  ///< [rows, vocab]
        int vocab;
        int* next_tokens;     ///< [rows]
        float* max_values;    ///< [rows] (may be null)
    };

    __device__ static bool active(const StepShape& shape, int c0, int, int) {
        return row_tile(shape, kRows, c0, kTileRows).count > 0;
    }

    __device__ static void prefetch(const Args&, int, int, int, char*) {}

    __device__ static void run(const Args& args, const StepShape& shape, int c0, int, int,
                               char* smem) {
        const RowTile rows = row_tile(shape, kRows, c0, kTileRows);
        float* warp_val = reinterpret_cast<float*>(smem);
        int* warp_idx = reinterpret_cast<int*>(smem + kWarps * 4);
        const int vocab = args.vocab;
        const int vec_end = (vocab & 3) == 0 ? vocab / 4 : 0;  // float4 path needs alignment
        for (int r = 0; r < rows.count; ++r) {
            const int row = rows.begin + r;
            const float* p = args.logits + static_cast<long long>(row) * vocab;
            float best = -__int_as_float(0x7f800000);
            int best_i = 0x7fffffff;
            for (int v = threadIdx.x; v < vec_end; v += kThreads) {
                const float4 x = reinterpret_cast<const float4*>(p)[v];
                const float xs[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    if (argmax_better(xs[e], 4 * v + e, best, best_i)) {
                        best = xs[e];
                        best_i = 4 * v + e;
                    }
                }
            }
            for (int i = vec_end * 4 + threadIdx.x; i < vocab; i += kThreads) {
                if (argmax_better(p[i], i, best, best_i)) {
                    best = p[i];
                    best_i = i;
                }
            }
            warp_argmax(best, best_i);
            if (lane_id() == 0) {
                warp_val[warp_id()] = best;
                warp_idx[warp_id()] = best_i;
            }
            __syncthreads();
            if (warp_id() == 0) {
                best = lane_id() < kWarps ? warp_val[lane_id()] : -__int_as_float(0x7f800000);
                best_i = lane_id() < kWarps ? warp_idx[lane_id()] : 0x7fffffff;
                warp_argmax(best, best_i);
                if (lane_id() == 0) {
                    args.next_tokens[row] = best_i;
                    if (args.max_values != nullptr) args.max_values[row] = best;
                }
            }
            __syncthreads();
        }
        release_smem();
    }
};

}  // namespace ek
