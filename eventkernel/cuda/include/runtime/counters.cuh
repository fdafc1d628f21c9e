/**
 * @file counters.cuh
 * @brief The event counters of a step: two parities alternate between steps, each step
 *        zeroes the one the next step uses, and the last worker to finish advances the
 *        step; the host never resets anything.
 */
#pragma once

#include "../common/config.cuh"

namespace ek {

/// All threads, once the parity is read and shared: this step's counters (and the
/// zeroing of the next step's).
__device__ __forceinline__ int* step_counters(const RuntimeState& rt, int parity) {
    int* counters = reinterpret_cast<int*>(rt.counters) + parity * rt.max_counters;
    int* next = reinterpret_cast<int*>(rt.counters) + (parity ^ 1) * rt.max_counters;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < rt.max_counters;
         i += gridDim.x * blockDim.x)
        next[i] = 0;
    return counters;
}

/// All threads, at the end of the kernel: the last worker to finish advances the step
/// (and so the parity the next launch uses).
__device__ __forceinline__ void finish_step(int* step_state) {
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();
        const int done = atomicAdd(step_state + 1, 1);
        if (done == gridDim.x - 1) {
            step_state[1] = 0;
            __threadfence();
            atomicAdd(step_state, 1);
        }
    }
}

}  // namespace ek
