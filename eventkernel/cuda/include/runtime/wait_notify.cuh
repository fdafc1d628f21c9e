/**
 * @file wait_notify.cuh
 * @brief The waits and notifies of a queue entry: the first of each from its EntryEvents
 *        (in shared memory), the others from the bucket's wait/notify tables.
 */
#pragma once

#include "../events.cuh"
#include "entry.cuh"

namespace ek {

/// The waits of an entry (all threads). Returns false only when a debug build's wait
/// stopped. An entry with no waits (its worker has waited on all of them already) passes
/// straight through.
__device__ __forceinline__ bool wait_entry(const Entry& x, int e, const BucketTables& bt,
                                           int* counters, DebugState* dbg) {
    const int num_waits = x.d.num_waits;
    if (num_waits == 0) return true;
    const int counter0 = x.ev.counter0;
    if (!ek_wait(counters + counter0, x.ev.target0, dbg, e, counter0)) return false;
    if (num_waits > 1) {
        const int begin = reinterpret_cast<const int*>(bt.wait_begin)[e];
        const int* wait_counter = reinterpret_cast<const int*>(bt.wait_counter);
        const int* wait_target = reinterpret_cast<const int*>(bt.wait_target);
        for (int j = begin + 1; j < begin + num_waits; ++j)
            if (!ek_wait(counters + wait_counter[j], wait_target[j], dbg, e, wait_counter[j]))
                return false;
    }
    return true;
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
