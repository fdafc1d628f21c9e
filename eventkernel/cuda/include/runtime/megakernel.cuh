/**
 * @file megakernel.cuh
 * @brief The persistent megakernel ek_step (one CTA per SM, each walking its worker's
 *        static queue) and ek_smem_sizes. Included by the generated source after its
 *        tables and dispatch, which it calls:
 *
 *   - ``bool ek_run_entry(const TaskDesc& d, const Entry& x, int e, const StepShape&,
 *     const BucketTables&, int* counters, DebugState*, char* smem)``: run entry ``e`` of
 *     kind ``d.kind`` (Runner<Kind>::run); false when a debug build's wait stopped;
 *   - ``void ek_l2_prefetch_entry(const TaskDesc& d, const StepShape&)``: one thread asks
 *     L2 for the weights of a later entry (Runner<Kind>::l2_prefetch);
 *   - ``kNumKinds`` and ``__constant__ int ek_kind_smem_bytes[kNumKinds]``
 *     (Runner<Kind>::kSmemBytes).
 *
 * Not part of eventkernel.cuh: a source that includes it defines the kernels.
 */
#pragma once

#include "runtime.cuh"

/// The shared memory each kind needs; the host launches with the largest.
extern "C" __global__ void ek_smem_sizes(int* out) {
    for (int k = 0; k < kNumKinds; ++k) out[k] = ek_kind_smem_bytes[k];
}

/// The persistent megakernel: one CTA per SM, each walking its worker's static queue. The
/// next entry, and the descriptor whose weights go to L2 next (tuning::kLookahead tasks
/// ahead), are fetched into shared memory while the current task runs (two slots,
/// alternating).
extern "C" __global__ void __launch_bounds__(ek::kThreads, 1)
ek_step(const ek::RuntimeState* __restrict__ rtp, const ek::BucketTables* __restrict__ btp) {
    using namespace ek;
    extern __shared__ __align__(128) char smem[];
    __shared__ int s_parity;
    __shared__ StepShape s_shape;
    __shared__ __align__(16) Entry s_entry[2];
    __shared__ __align__(16) TaskDesc s_ahead[2];
    const RuntimeState rt = *rtp;
    const BucketTables bt = *btp;
    trace_begin(rt);
    int* step_state = reinterpret_cast<int*>(rt.step);
    const int w = blockIdx.x;
    const int* queue_begin = reinterpret_cast<const int*>(bt.queue_begin);
    const bool has_queue = w < bt.num_workers;
    const int begin = has_queue ? queue_begin[w] : 0;
    const int end = has_queue ? queue_begin[w + 1] : 0;
    constexpr int kLookahead = tuning::kLookahead;  // tasks whose weights are on their way to L2
    constexpr int kL2Thread = 32;                   // warp 1 asks L2 while warp 0 polls events
    if (begin < end) fetch_entry(bt, begin, cmin(begin + kLookahead, end), s_entry[0], s_ahead[0]);
    if (threadIdx.x == 0) {
        s_parity = ld_acquire_gpu(step_state) & 1;
        s_shape = *reinterpret_cast<const StepShape*>(rt.shape);
    }
    entry_arrived();
    __syncthreads();
    int* counters = step_counters(rt, s_parity);
    const StepShape& shape = s_shape;
    DebugState* dbg = reinterpret_cast<DebugState*>(rt.debug);
    if (threadIdx.x == kL2Thread) {
        const TaskDesc* queue = reinterpret_cast<const TaskDesc*>(bt.queue);
        for (int e = begin; e < cmin(end, begin + kLookahead); ++e)
            ek_l2_prefetch_entry(queue[e], shape);
    }
    for (int e = begin; e < end; ++e) {
        const int slot = (e - begin) & 1;
        const Entry& x = s_entry[slot];
        const TaskDesc d = x.d;
        if (threadIdx.x == kL2Thread && e + kLookahead < end)
            ek_l2_prefetch_entry(s_ahead[slot], shape);
        if (e + 1 < end)
            fetch_entry(bt, e + 1, cmin(e + 1 + kLookahead, end), s_entry[slot ^ 1],
                        s_ahead[slot ^ 1]);
        if (!ek_run_entry(d, x, e, shape, bt, counters, dbg, smem)) break;
    }
    entry_arrived();  // none in flight when the kernel ends (a debug build may stop early)
    finish_step(step_state);
}
