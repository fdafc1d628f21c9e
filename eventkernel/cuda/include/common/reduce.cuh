/**
 * @file reduce.cuh
 * @brief Warp-level reductions (sum, max, argmax with first-index tie-break).
 */
#pragma once

namespace ek {

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    return v;
}

/// True when (v, i) should replace (best, best_i): larger value, or equal value at a
/// smaller index.
__device__ __forceinline__ bool argmax_better(float v, int i, float best, int best_i) {
    return v > best || (v == best && i < best_i);
}

/// Warp argmax: every lane returns the (value, index) with the largest value, the
/// smallest index among equal values.
__device__ __forceinline__ void warp_argmax(float& v, int& i) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, off);
        const int oi = __shfl_xor_sync(0xffffffffu, i, off);
        if (argmax_better(ov, oi, v, i)) {
            v = ov;
            i = oi;
        }
    }
}

}  // namespace ek
