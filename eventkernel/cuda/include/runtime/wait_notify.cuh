/**
 * @file wait_notify.cuh
 * @brief The waits and notifies of a queue entry: the first of each from its EntryEvents
 *        (in shared memory), the others from the bucket's wait/notify tables.
 */
#pragma once

#include "../events.cuh"
#include "entry.cuh"

namespace ek {

/// What an entry's waits decided: stop (a debug build's wait stopped), run the task, or
/// skip it (its run-time extent leaves it out this step: it runs and notifies nothing).
enum class Verdict : int { kStop = 0, kRun = 1, kSkip = 2 };

/// All threads, after waits that order them after the extent's writer: its value.
__device__ __forceinline__ int extent_value(const BucketTables& bt, int extent) {
    return ld_acquire_gpu(reinterpret_cast<const int* const*>(bt.extents)[extent]);
}

/// The count that fires a wait: the tabled one, or (``target`` < 0) run-time count
/// -(1 + target): m * clamp(value - w0, 0, w1 - w0) of its extent's value.
__device__ __forceinline__ int wait_target(int target, const BucketTables& bt) {
    if (target >= 0) return target;
    const int4 r = reinterpret_cast<const int4*>(bt.runtime_counts)[-target - 1];
    return r.y * cmin(cmax(extent_value(bt, r.x) - r.z, 0), r.w - r.z);
}

/// The waits of an entry (all threads). Waits whose counts are known before the step come
/// first; a task bounded by a run-time extent (TaskDesc::extent) reads it after them and,
/// past it, stops there (Verdict::kSkip). An entry with no waits (its worker has waited on
/// all of them already) passes straight through.
__device__ __forceinline__ Verdict wait_entry(const Entry& x, int e, const BucketTables& bt,
                                              int* counters, DebugState* dbg) {
    const int num_waits = x.d.num_waits;
    bool decided = x.d.extent == 0;
    const auto past_extent = [&]() {
        decided = true;
        return static_cast<int>(x.d.c0) >= extent_value(bt, x.d.extent - 1);
    };
    const auto one = [&](int counter, int target) {
        if (target < 0) {
            if (!decided && past_extent()) return Verdict::kSkip;
            target = wait_target(target, bt);
        }
        return ek_wait(counters + counter, target, dbg, e, counter) ? Verdict::kRun
                                                                     : Verdict::kStop;
    };
    if (num_waits > 0) {
        Verdict v = one(x.ev.counter0, x.ev.target0);
        if (v != Verdict::kRun) return v;
        if (num_waits > 1) {
            const int begin = reinterpret_cast<const int*>(bt.wait_begin)[e];
            const int* wait_counter = reinterpret_cast<const int*>(bt.wait_counter);
            const int* wait_target_ = reinterpret_cast<const int*>(bt.wait_target);
            for (int j = begin + 1; j < begin + num_waits; ++j) {
                v = one(wait_counter[j], wait_target_[j]);
                if (v != Verdict::kRun) return v;
            }
        }
    }
    if (!decided && past_extent()) return Verdict::kSkip;
    return Verdict::kRun;
}

/// A skipped entry (all threads): the barrier of notify_entry, no notifies.
__device__ __forceinline__ void skip_entry() {
    entry_arrived();
    __syncthreads();
}

/// After the task's writes (all threads): barrier (the next entry has arrived by then),
/// then thread 0 release-adds every notify of the entry (ek_release_add: no fence).
__device__ __forceinline__ void notify_entry(const Entry& x, int e, const BucketTables& bt,
                                             int* counters) {
    const int num_notifies = x.d.num_notifies;   // read before the barrier: after it, the
    const int notify0 = x.ev.notify0;            // entry's slot may be refilled
    entry_arrived();
    __syncthreads();
    if (threadIdx.x == 0 && num_notifies > 0) {
        ek_release_add(counters + notify0, 1);
        if (num_notifies > 1) {
            const int begin = reinterpret_cast<const int*>(bt.notify_begin)[e];
            const int* notify_counter = reinterpret_cast<const int*>(bt.notify_counter);
            for (int j = begin + 1; j < begin + num_notifies; ++j)
                red_release_gpu_add(counters + notify_counter[j], 1);
        }
    }
}

}  // namespace ek
