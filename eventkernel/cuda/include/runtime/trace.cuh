/**
 * @file trace.cuh
 * @brief Trace builds (EK_TRACE, generate(trace=True)): one TraceRecord (wire.cuh) per
 *        queue entry, {wait start, run start, end, SM}, globaltimer nanoseconds, written by
 *        thread 0. Without EK_TRACE every function here compiles to nothing.
 */
#pragma once

#include "../common/config.cuh"

namespace ek {

__device__ __forceinline__ unsigned long long global_ns() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
    return t;
}

__device__ __forceinline__ unsigned sm_id() {
    unsigned id;
    asm volatile("mov.u32 %0, %smid;" : "=r"(id));
    return id;
}

#ifdef EK_TRACE
/// TraceRecord[entries] of this launch (RuntimeState::trace), set by trace_begin().
__device__ TraceRecord* ek_trace;
#endif

/// Thread 0, at the start of the kernel: where this launch's records go.
__device__ __forceinline__ void trace_begin(const RuntimeState& rt) {
#ifdef EK_TRACE
    if (threadIdx.x == 0) ek_trace = reinterpret_cast<TraceRecord*>(rt.trace);
#else
    (void)rt;
#endif
}

/// The worker took queue entry ``e`` and begins waiting on its events.
__device__ __forceinline__ void trace_wait_start(int e) {
#ifdef EK_TRACE
    if (threadIdx.x == 0) ek_trace[e].wait_start = global_ns();
#else
    (void)e;
#endif
}

/// The events of entry ``e`` fired (its task runs now).
__device__ __forceinline__ void trace_run_start(int e) {
#ifdef EK_TRACE
    if (threadIdx.x == 0) ek_trace[e].run_start = global_ns();
#else
    (void)e;
#endif
}

/// Entry ``e`` notified its events.
__device__ __forceinline__ void trace_end(int e) {
#ifdef EK_TRACE
    if (threadIdx.x == 0) {
        ek_trace[e].end = global_ns();
        ek_trace[e].sm = sm_id();
    }
#else
    (void)e;
#endif
}

}  // namespace ek
