/**
 * @file rope_kv_append.cuh
 * @brief RopeKvAppendTask: per token and KV head, optional per-head RMSNorm of q and k
 *        (Qwen3), rotate-half RoPE, q written out, roped k and v appended to the paged
 *        caches at slot_mapping[t].
 *
 * Task coordinates: c0 = row tile, c1 = KV head h, c2 unused. No shared memory.
 * qkv row layout: [q heads (n_heads * HD) | k heads (n_kv * HD) | v heads (n_kv * HD)],
 * n_heads = G * n_kv; this task handles q heads h*G .. h*G+G-1, k head h and v head h.
 * Caches are [num_pages, page_size, n_kv, HD]; slot s = page * page_size + offset, so the
 * row of slot s for head h starts at (s * n_kv + h) * HD. Slots < 0 are not written.
 * Angles: positions[t] * inv_freq[i] in fp32 (as HF), reduced modulo 2 pi in fp64, then
 * fast sin/cos; the rotation is computed in fp32 and rounded to bf16 once.
 */
#pragma once

#include "../common/common.cuh"
#include "../step.cuh"

namespace ek {

template <int HD, int G, bool kQKNorm>
struct RopeKvAppendTask {
    static_assert(HD % 8 == 0 && HD <= 512, "head_dim must be a multiple of 8, at most 512");
    static constexpr int kSmemBytes = 0;
    static constexpr int kHalf = HD / 2;
    static constexpr int kPairsPerLane = (kHalf + 31) / 32;

    struct Args {
        const bf16* qkv;            ///< [T, (n_heads + 2 n_kv) * HD]
        const bf16* q_norm_weight;  ///< [HD] (kQKNorm only)
        const bf16* k_norm_weight;  ///< [HD] (kQKNorm only)
        const float* inv_freq;      ///< [HD / 2], scaling already applied
        bf16* q_out;                ///< [T, n_heads * HD]
        bf16* k_cache;              ///< [num_pages, page_size, n_kv, HD]
        bf16* v_cache;              ///< [num_pages, page_size, n_kv, HD]
        int n_kv_heads;
        float eps;                  ///< (kQKNorm only)
    };

    __device__ static bool active(const StepShape& shape, int c0, int, int) {
        return row_tile(shape, RowSet::kTokens, c0).count > 0;
    }

    __device__ static void prefetch(const Args&, int, int, int, char*) {}

    __device__ static void run(const Args& args, const StepShape& shape, int c0, int c1, int,
                               char*) {
        const RowTile rows = row_tile(shape, RowSet::kTokens, c0);
        const int h = c1;
        const int n_kv = args.n_kv_heads;
        const int n_heads = G * n_kv;
        const long long row_stride = static_cast<long long>(n_heads + 2 * n_kv) * HD;
        const int lane = lane_id();
        // Items: (row, kind) with kind < G a q head, G the k head, G + 1 the v head.
        const int items = rows.count * (G + 2);
        for (int item = warp_id(); item < items; item += kWarps) {
            const int t = rows.begin + item / (G + 2);
            const int kind = item % (G + 2);
            const bf16* qkv_row = args.qkv + t * row_stride;
            if (kind == G + 1) {
                const int slot = shape.slot_mapping[t];
                if (slot < 0) continue;
                const bf16* src = qkv_row + static_cast<long long>(n_heads + n_kv + h) * HD;
                bf16* dst = args.v_cache + (static_cast<long long>(slot) * n_kv + h) * HD;
                for (int e = lane * 8; e < HD; e += 32 * 8) copy8(dst + e, src + e);
                continue;
            }
            const bool is_q = kind < G;
            bf16* dst;
            const bf16* src;
            if (is_q) {
                src = qkv_row + static_cast<long long>(h * G + kind) * HD;
                dst = args.q_out + static_cast<long long>(t) * n_heads * HD +
                      static_cast<long long>(h * G + kind) * HD;
            } else {
                const int slot = shape.slot_mapping[t];
                if (slot < 0) continue;
                src = qkv_row + static_cast<long long>(n_heads + h) * HD;
                dst = args.k_cache + (static_cast<long long>(slot) * n_kv + h) * HD;
            }
            float x1[kPairsPerLane], x2[kPairsPerLane];
#pragma unroll
            for (int i = 0; i < kPairsPerLane; ++i) {
                const int j = lane + 32 * i;
                x1[i] = j < kHalf ? to_float(src[j]) : 0.f;
                x2[i] = j < kHalf ? to_float(src[j + kHalf]) : 0.f;
            }
            if constexpr (kQKNorm) {
                float ss = 0.f;
#pragma unroll
                for (int i = 0; i < kPairsPerLane; ++i) ss += x1[i] * x1[i] + x2[i] * x2[i];
                const float rstd = rsqrtf(warp_sum(ss) / static_cast<float>(HD) + args.eps);
                const bf16* w = is_q ? args.q_norm_weight : args.k_norm_weight;
#pragma unroll
                for (int i = 0; i < kPairsPerLane; ++i) {
                    const int j = lane + 32 * i;
                    if (j < kHalf) {
                        x1[i] = round_bf16(round_bf16(x1[i] * rstd) * to_float(w[j]));
                        x2[i] = round_bf16(round_bf16(x2[i] * rstd) * to_float(w[j + kHalf]));
                    }
                }
            }
            const float pos = static_cast<float>(shape.positions[t]);
#pragma unroll
            for (int i = 0; i < kPairsPerLane; ++i) {
                const int j = lane + 32 * i;
                if (j < kHalf) {
                    float sn, cs;
                    sincos_reduced(pos * args.inv_freq[j], sn, cs);
                    dst[j] = to_bf16(x1[i] * cs - x2[i] * sn);
                    dst[j + kHalf] = to_bf16(x2[i] * cs + x1[i] * sn);
                }
            }
        }
    }

  private:
    /// sin/cos of an fp32 angle of any size: exact-enough reduction to [-pi, pi] in fp64,
    /// then the fast intrinsics (no slow path, no local memory).
    __device__ static void sincos_reduced(float angle, float& sn, float& cs) {
        const double kInvTwoPi = 0.15915494309189535;
        const double kTwoPi = 6.283185307179586;
        const double a = static_cast<double>(angle);
        const double r = a - rint(a * kInvTwoPi) * kTwoPi;
        __sincosf(static_cast<float>(r), &sn, &cs);
    }
};

}  // namespace ek
