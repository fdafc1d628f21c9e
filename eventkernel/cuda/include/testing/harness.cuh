/**
 * @file harness.cuh
 * @brief The GPU template tests' wrapper kernels (eventkernel/tasks/cases.py generates one
 *        per task case): one CTA per task coordinate runs prefetch() then run(), no events.
 */
#pragma once

#include "../eventkernel.cuh"

namespace ek {

/// One task of `Task` at the CTA's coordinates (blockIdx = c0, c1, c2).
template <typename Task>
__device__ __forceinline__ void prefetch_and_run(const typename Task::Args& args,
                                                 const StepShape* shape) {
    extern __shared__ __align__(128) char smem[];
    // NOTE: no active() check: out-of-shape tasks must return cleanly by themselves.
    Task::prefetch(args, blockIdx.x, blockIdx.y, blockIdx.z, smem);
    Task::run(args, *shape, blockIdx.x, blockIdx.y, blockIdx.z, smem);
}

}  // namespace ek

/// A wrapper kernel named NAME: its buffers by index, and the step's shape.
#define TEMPLATE_TEST_KERNEL(NAME)                                                   \
    extern "C" __global__ void __launch_bounds__(ek::kThreads, 1)                       \
    NAME(void* const* buffers, const ek::StepShape* shape)

/// The kernel that writes each wrapper's dynamic shared memory, in order.
#define TEMPLATE_TEST_SMEM_SIZES extern "C" __global__ void smem_sizes(int* out)
