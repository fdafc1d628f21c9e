/**
 * @file expert_linear.cuh
 * @brief ExpertLinearTask: one MoE work item's linear, out[p, n] = a[p] . W[expert, n] for
 *        the item's sorted rows p (at most kRowTile), where a[p] = input[rows[p]] (the
 *        gate_up: token rows gathered) or silu(gate) * up of input[p] (the down: kGated).
 *        The item (expert, first row, end row) is read from the route's work table; the
 *        runtime has already left out items past the table's count (a run-time extent).
 *
 * The rows go through GemvTask's staging and dot products, kGroupRows at a time (the weight
 * tile is read again for each further group, from L2 mostly: decode steps route a few rows
 * to each expert; many-token steps want a tensor-core path).
 *
 * Task coordinates: c0 = work item, c1 = output-column tile (n0 = c1 * TN).
 */
#pragma once

#include "../common/common.cuh"
#include "../step.cuh"
#include "gemv.cuh"

namespace ek {

template <int K, int TN, bool kGated, bool kGather>
struct ExpertLinearTask {
    /// Groups of kGroupRows rows: a decode step routes a few rows to each expert, and the
    /// 16-row loop of GemvTask spills in a kernel that shares its 255 registers.
    static constexpr int kGroupRows = 4;
    using Gemv = GemvTask<K, TN, bf16, false, false, RowSet::kTokens, kGated, kGroupRows>;
    static constexpr int kSmemBytes = Gemv::kSmemBytes;

    struct Args {
        const bf16* weight;   ///< [E, N, K]
        const bf16* input;    ///< [T, K] (gathered by rows) or [T * K_top, 2K] (kGated)
        const int* rows;      ///< [T * K_top] token of each sorted row (kGather only)
        const int* work;      ///< [items + 1, 3] the route's work table
        bf16* out;            ///< [T * K_top, N]
        int n;                ///< N, output features (multiple of 8)
    };

    __device__ static bool active(const StepShape&, int, int, int) { return true; }

    __device__ static void prefetch(const Args&, int, int, int, char*) {}

    __device__ static void run(const Args& args, const StepShape&, int c0, int c1, int,
                               char* smem) {
        if (c0 >= args.work[0]) return;     // past the items (the runtime skips these)
        const int* item = args.work + 3 * (1 + c0);
        const int expert = item[0], first = item[1], end = item[2];
        const typename Gemv::Args gemv{args.weight + static_cast<long long>(expert) * args.n * K,
                                       args.input, nullptr, nullptr, args.out, args.n, 0.f};
        for (int begin = first; begin < end; begin += Gemv::kRunRows)
            Gemv::run_rows(gemv, RowTile{begin, cmin(Gemv::kRunRows, end - begin)},
                           kGather ? args.rows : nullptr, c1, smem);
    }
};

}  // namespace ek
