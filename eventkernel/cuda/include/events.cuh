/**
 * @file events.cuh
 * @brief Event counters between tasks: ek_wait (acquire spin with backoff, bounded in
 *        debug builds) and ek_notify (barrier, release add).
 *
 * Debug builds (EK_DEBUG, compile_cuda(debug=True)): a wait that spins more than
 * tuning::kWaitMaxSpins times records {worker, task, event, observed, target} in the
 * DebugState (wire.cuh), raises its abort flag and returns false; every other wait then
 * returns false too, so all workers leave the kernel and the host can raise a clear error
 * instead of hanging the GPU. Polls back off up to tuning::kWaitMaxSleepNs (polls are L2
 * round trips already; longer sleeps add latency).
 */
#pragma once

#include "common/config.cuh"

namespace ek {

__device__ __forceinline__ int ld_acquire_gpu(const int* p) {
    int v;
    asm volatile("ld.acquire.gpu.global.s32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
    return v;
}

__device__ __forceinline__ void red_release_gpu_add(int* p, int v) {
    asm volatile("red.release.gpu.global.add.s32 [%0], %1;\n" ::"l"(p), "r"(v) : "memory");
}

/// Thread 0 of a CTA, after a CTA barrier that follows the task's stores: publish them by
/// a release add. No fence is needed: in the PTX memory model the barrier synchronizes
/// every thread's earlier stores with thread 0, and a release is cumulative over what
/// precedes it in causality order, so a worker whose acquire load sees the add (then
/// shares it with a barrier) sees every store of the task. A full fence.sc before it cost
/// 6-9 % of a decode step on an H200 (KernelTuning(notify_fence=True) puts it back).
__device__ __forceinline__ void ek_release_add(int* p, int v) {
    if constexpr (tuning::kNotifyFence) __threadfence();
    red_release_gpu_add(p, v);
}

/// True once any worker aborted (always false without a DebugState).
__device__ __forceinline__ bool ek_aborted(const DebugState* dbg) {
    return dbg != nullptr && *reinterpret_cast<const volatile int*>(&dbg->abort) != 0;
}

/// Debug builds, one thread of a spinning wait: true once this wait must stop (another
/// worker aborted, or it spun too long: then it records itself and aborts every worker).
__device__ __forceinline__ bool ek_wait_should_stop(DebugState* dbg, long long& spins,
                                                    int task_index, int event_index,
                                                    int observed, int target) {
    if ((spins & 31) == 0 && ek_aborted(dbg)) return true;
    if (++spins <= tuning::kWaitMaxSpins) return false;
    if (atomicCAS(&dbg->abort, 0, 1) == 0) {
        dbg->worker = blockIdx.x;
        dbg->task = task_index;
        dbg->event = event_index;
        dbg->observed = observed;
        dbg->target = target;
        __threadfence();
    }
    return true;
}

/// The spin of ek_wait: `kLanes` threads (1: thread 0; 32: warp 0) spin,
/// lane 0 polling and deciding, all of them calling `idle()` between polls; the result is
/// broadcast with a CTA barrier.
template <int kLanes, unsigned kMaxSleepNs, class Idle>
__device__ __forceinline__ bool ek_wait_spin(const int* counter, int target, DebugState* dbg,
                                             int task_index, int event_index, Idle& idle) {
    static_assert(kLanes == 1 || kLanes == 32, "thread 0 or warp 0 spins");
    // Lane 0's value, seen by every spinning lane.
    auto from_lane0 = [](int v) {
        if constexpr (kLanes == 1) {
            return v;
        } else {
            return __shfl_sync(0xffffffffu, v, 0);
        }
    };
    int ok = 1;
    if (threadIdx.x < kLanes) {
        const bool leader = threadIdx.x == 0;
        unsigned sleep_ns = 32;
        int observed = from_lane0(leader ? ld_acquire_gpu(counter) : 0);
#ifdef EK_DEBUG
        long long spins = 0;
#endif
        while (observed < target) {
#ifdef EK_DEBUG
            if (dbg != nullptr) {
                const int stop = leader && ek_wait_should_stop(dbg, spins, task_index,
                                                               event_index, observed, target);
                if (from_lane0(stop)) {
                    ok = 0;
                    break;
                }
            }
#else
            (void)dbg;
            (void)task_index;
            (void)event_index;
#endif
            idle();
            __nanosleep(sleep_ns);
            sleep_ns = sleep_ns < kMaxSleepNs ? sleep_ns * 2 : kMaxSleepNs;
            observed = from_lane0(leader ? ld_acquire_gpu(counter) : 0);
        }
    }
    return __syncthreads_and(ok) != 0;
}

/// Does nothing while a wait spins.
struct NoIdleWork {
    __device__ void operator()() const {}
};

/// Called by all threads of the CTA. Thread 0 spins until *counter >= target (acquire,
/// __nanosleep backoff); the result is broadcast with a CTA barrier, after which every
/// thread may read what the notifiers wrote. Returns false only in debug builds, when
/// this wait timed out or another worker aborted: the caller must then leave the kernel.
__device__ __forceinline__ bool ek_wait(const int* counter, int target, DebugState* dbg,
                                        int task_index = -1, int event_index = -1) {
    NoIdleWork idle;
    return ek_wait_spin<1, tuning::kWaitMaxSleepNs>(counter, target, dbg, task_index,
                                                 event_index, idle);
}

/// Called by all threads of the CTA after the task's stores: a CTA barrier, then thread 0
/// adds `value` to *counter with release semantics (ek_release_add).
__device__ __forceinline__ void ek_notify(int* counter, int value = 1) {
    __syncthreads();
    if (threadIdx.x == 0) ek_release_add(counter, value);
}

}  // namespace ek
