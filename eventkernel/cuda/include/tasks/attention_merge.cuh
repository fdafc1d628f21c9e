/**
 * @file attention_merge.cuh
 * @brief AttentionMergeTask: merge the n_split partial attention outputs of one
 *        (sequence s, KV head h): m = max_j lse_j, w_j = exp(lse_j - m),
 *        out[t, head, :] = sum_j w_j o_part_j / sum_j w_j, stored bf16.
 *
 * Task coordinates: c0 = sequence s, c1 = KV head h. One warp per (token, q head) row.
 * No shared memory.
 */
#pragma once

#include "../common/common.cuh"
#include "../step.cuh"

namespace ek {

template <int HD, int G>
struct AttentionMergeTask {
    static_assert(HD % 4 == 0, "head_dim must be a multiple of 4");
    static constexpr int kSmemBytes = 0;

    struct Args {
        const float* o_part;  ///< [n_split, max_tokens, n_heads, HD]
        const float* lse;     ///< [n_split, max_tokens, n_heads]
        bf16* out;            ///< [T, n_heads * HD]
        int n_kv_heads;
        int n_split;
        int max_tokens;       ///< token stride of o_part / lse
    };

    __device__ static bool active(const StepShape& shape, int c0, int, int) {
        return c0 < shape.num_seqs;
    }

    __device__ static void prefetch(const Args&, int, int, int, char*) {}

    __device__ static void run(const Args& args, const StepShape& shape, int c0, int c1, int,
                               char*) {
        const int s = c0;
        if (s >= shape.num_seqs) return;
        const int h = c1;
        const int qs = shape.query_start[s];
        const int rows = (shape.query_start[s + 1] - qs) * G;
        const int n_heads = G * args.n_kv_heads;
        const long long split_stride = static_cast<long long>(args.max_tokens) * n_heads;
        const float kNegInf = -__int_as_float(0x7f800000);
        for (int r = warp_id(); r < rows; r += kWarps) {
            const int t = qs + r / G;
            const int head = h * G + r % G;
            const long long idx = static_cast<long long>(t) * n_heads + head;
            float mmax = kNegInf;
            for (int j = 0; j < args.n_split; ++j) {
                mmax = fmaxf(mmax, args.lse[j * split_stride + idx]);
            }
            for (int d = lane_id() * 4; d < HD; d += 128) {
                float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
                float wsum = 0.f;
                if (mmax != kNegInf) {
                    for (int j = 0; j < args.n_split; ++j) {
                        const float w = __expf(args.lse[j * split_stride + idx] - mmax);
                        const float4 x = *reinterpret_cast<const float4*>(
                            args.o_part + (j * split_stride + idx) * HD + d);
                        wsum += w;
                        acc.x += w * x.x;
                        acc.y += w * x.y;
                        acc.z += w * x.z;
                        acc.w += w * x.w;
                    }
                }
                const float inv = wsum > 0.f ? 1.f / wsum : 0.f;
                uint2 packed;
                packed.x = pack_bf16x2(acc.x * inv, acc.y * inv);
                packed.y = pack_bf16x2(acc.z * inv, acc.w * inv);
                *reinterpret_cast<uint2*>(args.out + idx * HD + d) = packed;
            }
        }
    }
};

}  // namespace ek
