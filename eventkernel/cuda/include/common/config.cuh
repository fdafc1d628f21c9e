/**
 * @file config.cuh
 * @brief CTA shape every task assumes (kThreads = 256 threads = 8 warps and the token-row
 *        tile kRowTile, both declared in wire.cuh from eventkernel/cuda/wire.py), and small
 *        integer helpers.
 */
#pragma once

#include "../wire.cuh"

namespace ek {

/// Warps per worker CTA.
constexpr int kWarps = kThreads / 32;

__host__ __device__ constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }
__host__ __device__ constexpr int cmin(int a, int b) { return a < b ? a : b; }
__host__ __device__ constexpr int cmax(int a, int b) { return a > b ? a : b; }
__host__ __device__ constexpr int round_up(int a, int b) { return ceil_div(a, b) * b; }

__device__ __forceinline__ int lane_id() { return threadIdx.x & 31; }
__device__ __forceinline__ int warp_id() { return threadIdx.x >> 5; }

}  // namespace ek
