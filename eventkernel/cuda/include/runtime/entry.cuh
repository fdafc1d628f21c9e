/**
 * @file entry.cuh
 * @brief A queue entry in shared memory: its TaskDesc and EntryEvents (wire.cuh), fetched
 *        with cp.async while the previous task runs, together with the descriptor whose
 *        weights the L2 look-ahead asks for next.
 */
#pragma once

#include "../common/common.cuh"

namespace ek {

/// A queue entry as its worker holds it in shared memory.
struct Entry {
    TaskDesc d;
    EntryEvents ev;
};
static_assert(sizeof(TaskDesc) == 16 && sizeof(EntryEvents) == 16, "one cp.async each");

/// Lanes 0-2 of warp 0: start copying entry ``e`` and the descriptor ``ahead`` (whose
/// weights go to L2 next) into shared memory. The copies land while the current task
/// runs; ``entry_arrived`` waits for them. (After an acquire the L1 cache holds nothing,
/// so reading the tables when the entry starts would cost a chain of L2 round trips.)
__device__ __forceinline__ void fetch_entry(const BucketTables& bt, int e, int ahead,
                                            Entry& entry, TaskDesc& ahead_desc) {
    const TaskDesc* queue = reinterpret_cast<const TaskDesc*>(bt.queue);
    const EntryEvents* events = reinterpret_cast<const EntryEvents*>(bt.events);
    if (threadIdx.x == 0) cp_async16(&entry.d, queue + e);
    if (threadIdx.x == 1) cp_async16(&entry.ev, events + e);
    if (threadIdx.x == 2) cp_async16(&ahead_desc, queue + ahead);
    if (threadIdx.x < 3) cp_async_commit();
}

/// Before the CTA barrier after which the fetched entry is read.
__device__ __forceinline__ void entry_arrived() {
    if (threadIdx.x < 3) cp_async_wait<0>();
}

}  // namespace ek
