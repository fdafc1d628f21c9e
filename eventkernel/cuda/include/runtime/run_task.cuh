/**
 * @file run_task.cuh
 * @brief One queue entry through one task template: weights first (they never wait),
 *        then the entry's events, then the task; notify after its writes; the trace
 *        records around it. A debug build's stopped wait returns false: the worker leaves.
 */
#pragma once

#include "../step.cuh"
#include "trace.cuh"
#include "wait_notify.cuh"

namespace ek {

/// Tasks whose run() takes the runtime's wait and calls it after issuing its weight loads.
template <class T, class = void>
struct waits_in_run {
    static constexpr bool value = false;
};
template <class T>
struct waits_in_run<T, decltype(void(T::kWaitsInRun))> {
    static constexpr bool value = T::kWaitsInRun;
};

/// One task: weights first (they never wait), then the events, then the task itself;
/// notify after its writes. Out-of-shape tasks skip the work but still wait and notify:
/// the events' transitive reduction relies on every task's waits. Tasks past their run-time
/// extent (MoE work items) stop after the waits that order them after its writer and
/// notify nothing: the events they feed count only the tasks that run. The entry ``x`` was
/// fetched into shared memory while the previous task ran.
template <class Task>
__device__ __forceinline__ bool run_task(const typename Task::Args& args, const StepShape& shape,
                                         const Entry& x, int e, const BucketTables& bt,
                                         int* counters, DebugState* dbg, char* smem) {
    trace_wait_start(e);
    const TaskDesc& d = x.d;
    const bool active = Task::active(shape, d.c0, d.c1, d.c2);
    if constexpr (waits_in_run<Task>::value) {
        // The task issues its first weight loads, then waits. (Such tasks are never bounded
        // by a run-time extent: kSkip does not occur.)
        const auto wait = [&]() {
            const bool ok = wait_entry(x, e, bt, counters, dbg) != Verdict::kStop;
            trace_run_start(e);
            return ok;
        };
        if (!Task::run(args, shape, d.c0, d.c1, d.c2, smem, active, wait)) return false;
    } else {
        // NOTE: a task bounded by a run-time extent has nothing to prefetch (its rows and
        // weights are known only from the table it waits for), so a skip drains nothing.
        if (active && d.extent == 0) Task::prefetch(args, d.c0, d.c1, d.c2, smem);
        const Verdict verdict = wait_entry(x, e, bt, counters, dbg);
        trace_run_start(e);
        if (verdict == Verdict::kStop) {
            if (active && d.extent == 0)
                Task::run(args, shape, d.c0, d.c1, d.c2, smem);  // drain async copies
            return false;
        }
        if (verdict == Verdict::kSkip) {
            skip_entry();
            trace_end(e);
            return true;
        }
        if (active) Task::run(args, shape, d.c0, d.c1, d.c2, smem);
    }
    notify_entry(x, e, bt, counters);
    trace_end(e);
    return true;
}

}  // namespace ek
