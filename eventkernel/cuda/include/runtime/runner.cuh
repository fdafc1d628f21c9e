/**
 * @file runner.cuh
 * @brief Runner<Task>: how the megakernel runs a kind (a task template instantiation),
 *        asks L2 for its weights ahead of it, and how much shared memory it needs. The
 *        generated dispatch is the same line for every kind; the choices live here.
 *
 * The default runs the task itself (run_task), has no L2 look-ahead, and needs the task's
 * kSmemBytes. LinearTask is specialised: decode-sized steps take a GEMV, their weights
 * prefetched to L2 by the look-ahead. Steps of tuning::kMmaGemvMinRows (default 2) to
 * 64 rows take the GEMV on tensor cores, GemvMmaTask (0: its handles() is constant false
 * and its run is not instantiated); smaller steps the CUDA-core DecodeGemvTask, which
 * compiles only the row loops the tensor-core path leaves to it (the kernel has 255
 * registers to share); larger ones LinearTask. Both GEMVs read the same weight tile and
 * stage in the same layout.
 */
#pragma once

#include "../tasks/tasks.cuh"
#include "run_task.cuh"

namespace ek {

/// A kind that runs as itself.
template <class Task>
struct Runner {
    static constexpr int kSmemBytes = Task::kSmemBytes;

    __device__ static __forceinline__ bool run(const typename Task::Args& args,
                                               const StepShape& shape, const Entry& x, int e,
                                               const BucketTables& bt, int* counters,
                                               DebugState* dbg, char* smem) {
        return run_task<Task>(args, shape, x, e, bt, counters, dbg, smem);
    }

    /// One thread, for an entry ``lookahead`` tasks ahead: nothing to ask L2 for.
    __device__ static __forceinline__ void l2_prefetch(const typename Task::Args&,
                                                       const StepShape&, const TaskDesc&) {}
};

/// A linear kind: GemvMmaTask, then DecodeGemvTask, then LinearTask, the first whose
/// handles() takes the step's shape.
template <int K, int TN, typename OutT, bool kFuseNorm, bool kResidual, RowSet kRows,
          bool kGated, int BK, int kStages>
struct Runner<LinearTask<K, TN, OutT, kFuseNorm, kResidual, kRows, kGated, BK, kStages>> {
    using Linear = LinearTask<K, TN, OutT, kFuseNorm, kResidual, kRows, kGated, BK, kStages>;
    using Gemv = DecodeGemvTask<K, TN, OutT, kFuseNorm, kResidual, kRows, kGated>;
    using GemvMma = GemvMmaTask<K, TN, OutT, kFuseNorm, kResidual, kRows, kGated>;
    using Args = typename Linear::Args;
    // NOTE: GemvMma stages in Gemv's layout (same kSmemBytes).
    static constexpr int kSmemBytes = cmax(Gemv::kSmemBytes, Linear::kSmemBytes);

    __device__ static __forceinline__ bool run(const Args& a, const StepShape& shape,
                                               const Entry& x, int e, const BucketTables& bt,
                                               int* counters, DebugState* dbg, char* smem) {
        if constexpr (tuning::kMmaGemvMinRows > 0) {
            if (GemvMma::handles(shape))
                return run_task<GemvMma>(a, shape, x, e, bt, counters, dbg, smem);
        }
        return Gemv::handles(shape) ? run_task<Gemv>(a, shape, x, e, bt, counters, dbg, smem)
                                    : run_task<Linear>(a, shape, x, e, bt, counters, dbg, smem);
    }

    /// One thread: the start of the GEMV's weight tile into L2 (LinearTask streams its own).
    __device__ static __forceinline__ void l2_prefetch(const Args& a, const StepShape& shape,
                                                       const TaskDesc& d) {
        if (Gemv::handles(shape) || GemvMma::handles(shape))
            Gemv::l2_prefetch(a, d.c0, d.c1, d.c2);
    }
};

}  // namespace ek
