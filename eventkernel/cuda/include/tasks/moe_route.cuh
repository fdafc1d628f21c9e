/**
 * @file moe_route.cuh
 * @brief MoeRouteTask: the MoE route of a step, one task. Per token: softmax of the router
 *        logits in fp32, top-K (largest first, the smaller expert id on ties), optional
 *        renormalisation, the weights rounded to bf16 (transformers' Qwen3-MoE router). Then
 *        the T*K (token, slot) pairs sorted by expert: ``pos[t*K + j]`` is the sorted row
 *        of token t's j-th choice and ``rows[p]`` the token of sorted row p, and the work
 *        table: ``work[0] = {items, 0, 0}``, ``work[1 + w] = {expert, first row, end row}``
 *        with at most R rows per item, items in expert order.
 *
 * Rows of one expert come in slot order (token, then choice): the stable sort of the CPU
 * twin, so the tables are the same bit for bit.
 *
 * Task coordinates: none used (one task). Shared memory: per expert its count, first row
 * and first item, and the expert and place of every slot (kMaxSlots = T max * K).
 */
#pragma once

#include "../common/common.cuh"
#include "../step.cuh"

namespace ek {

template <int E, int K, int R, int kMaxSlots>
struct MoeRouteTask {
    static_assert(K >= 1 && K <= E && E <= 32 * 16, "1 <= K <= E <= 512");
    static constexpr int kPerLane = ceil_div(E, 32);
    static constexpr int kSmemBytes = 3 * (E + 1) * 4 + 2 * kMaxSlots * 4;

    struct Args {
        const bf16* logits;   ///< [T, E]
        float* weights;       ///< [T, K] top-k weights (bf16 values)
        int* pos;             ///< [T, K] sorted row of each slot
        int* rows;            ///< [T * K] token of each sorted row
        int* work;            ///< [items + 1, 3]
        int normalise;        ///< renormalise the top-k weights to sum 1
    };

    __device__ static bool active(const StepShape&, int, int, int) { return true; }

    __device__ static void prefetch(const Args&, int, int, int, char*) {}

    __device__ static void run(const Args& args, const StepShape& shape, int, int, int,
                               char* smem) {
        int* count = reinterpret_cast<int*>(smem);   // [E + 1]
        int* first = count + (E + 1);                  // [E + 1] first sorted row
        int* item0 = first + (E + 1);                  // [E + 1] first work item
        int* expert_of = item0 + (E + 1);              // [kMaxSlots]
        int* place = expert_of + kMaxSlots;            // [kMaxSlots] rank within its expert
        const int T = shape.num_tokens;
        const int lane = lane_id();
        for (int t = warp_id(); t < T; t += kWarps) {
            float p[kPerLane];
            float top = -__int_as_float(0x7f800000);
#pragma unroll
            for (int i = 0; i < kPerLane; ++i) {
                const int e = lane + 32 * i;
                p[i] = e < E ? to_float(args.logits[static_cast<long long>(t) * E + e]) : -__int_as_float(0x7f800000);
                top = fmaxf(top, p[i]);
            }
            top = warp_max(top);
            float sum = 0.f;
#pragma unroll
            for (int i = 0; i < kPerLane; ++i) {
                p[i] = lane + 32 * i < E ? expf(p[i] - top) : 0.f;
                sum += p[i];
            }
            sum = warp_sum(sum);
#pragma unroll
            for (int i = 0; i < kPerLane; ++i) p[i] = lane + 32 * i < E ? p[i] / sum : -1.f;
            float chosen[K];
            float total = 0.f;
#pragma unroll
            for (int j = 0; j < K; ++j) {
                float v = -2.f;
                int idx = E;
#pragma unroll
                for (int i = 0; i < kPerLane; ++i)
                    if (argmax_better(p[i], lane + 32 * i, v, idx)) { v = p[i]; idx = lane + 32 * i; }
                warp_argmax(v, idx);
                chosen[j] = v;
                total += v;
#pragma unroll
                for (int i = 0; i < kPerLane; ++i)            // taken (no dynamic index:
                    if (lane + 32 * i == idx) p[i] = -2.f;     // p stays in registers)
                if (lane == 0) expert_of[t * K + j] = idx;
            }
            if (lane == 0) {
#pragma unroll
                for (int j = 0; j < K; ++j)
                    args.weights[t * K + j] = round_bf16(args.normalise ? chosen[j] / total
                                                                        : chosen[j]);
            }
        }
        __syncthreads();
        // Each expert's slots in slot order (token, then choice), as a stable sort would:
        // one thread per expert scans every slot (all threads read the same slot at once,
        // a shared-memory broadcast).
        for (int e = threadIdx.x; e < E; e += kThreads) {
            int c = 0;
            for (int i = 0; i < T * K; ++i)
                if (expert_of[i] == e) place[i] = c++;
            count[e] = c;
        }
        __syncthreads();
        if (threadIdx.x == 0) {          // E prefix sums: rows and work items per expert
            int row = 0, item = 0;
            for (int e = 0; e < E; ++e) {
                first[e] = row;
                item0[e] = item;
                row += count[e];
                item += ceil_div(count[e], R);
            }
            args.work[0] = item;
            args.work[1] = 0;
            args.work[2] = 0;
        }
        __syncthreads();
        for (int e = threadIdx.x; e < E; e += kThreads) {
            for (int k = 0; k * R < count[e]; ++k) {
                int* w = args.work + 3 * (1 + item0[e] + k);
                w[0] = e;
                w[1] = first[e] + k * R;
                w[2] = first[e] + cmin(count[e], (k + 1) * R);
            }
        }
        for (int i = threadIdx.x; i < T * K; i += kThreads) {
            const int row = first[expert_of[i]] + place[i];
            args.pos[i] = row;
            args.rows[row] = i / K;
        }
    }
};

}  // namespace ek
