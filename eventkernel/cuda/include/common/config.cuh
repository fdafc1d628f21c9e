/**
 * @file config.cuh
 * @brief CTA shape every task assumes (256 threads = 8 warps), the token-row tile, and
 *        small integer helpers.
 */
#pragma once

namespace ek {

/// Threads per worker CTA. Every task's prefetch()/run() is called by all of them.
constexpr int kThreads = 256;
/// Warps per worker CTA.
constexpr int kWarps = kThreads / 32;
/// Token rows per row tile ("row tile r" = rows [r*kRowTile, min(T, r*kRowTile + kRowTile))).
constexpr int kRowTile = 64;

__host__ __device__ constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }
__host__ __device__ constexpr int cmin(int a, int b) { return a < b ? a : b; }
__host__ __device__ constexpr int cmax(int a, int b) { return a > b ? a : b; }
__host__ __device__ constexpr int round_up(int a, int b) { return ceil_div(a, b) * b; }

__device__ __forceinline__ int lane_id() { return threadIdx.x & 31; }
__device__ __forceinline__ int warp_id() { return threadIdx.x >> 5; }

}  // namespace ek
