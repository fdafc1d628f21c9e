/**
 * @file attention.cuh
 * @brief AttentionTask: split-KV causal attention over a paged KV cache for one
 *        (sequence s, KV head h, split j); writes the split's softmax-normalised output
 *        o_part[j, t, head, :] and its log-sum-exp lse[j, t, head] (fp32). Decode and
 *        prefill alike (q_len 1..64 tokens, GQA group G).
 *
 * Task coordinates: c0 = sequence s, c1 = KV head h, c2 = split j (< n_split).
 * Query row rho = i * G + g (token i of the sequence, q head h*G + g) sits at absolute
 * position p = ctx - q_len + i and sees keys [0, p]. Split j covers keys
 * [j * chunk, min(ctx, (j + 1) * chunk)), chunk = ceil(ctx / n_split). A row that sees no
 * key of the split gets lse = -inf and a zero output row.
 *
 * Shape of the work: up to 128 query rows per pass (8 warps x 16); K/V tiles of kKeyTile
 * keys double-buffered in smem through cp.async; each tile is cut into 16-key sub-blocks.
 * With few query rows (decode) the warps also split the sub-blocks (flash-decoding inside
 * the CTA) and their partial softmax states are merged in smem. mma.sync m16n8k16 for
 * Q K^T and P V; online softmax in the log2 domain.
 */
#pragma once

#include "../common/common.cuh"
#include "../step.cuh"

namespace ek {

template <int HD, int G>
struct AttentionTask {
    static_assert(HD % 16 == 0 && HD >= 16 && HD <= 256, "head_dim: multiple of 16, <= 256");
    static_assert(G >= 1, "G = n_heads / n_kv_heads");

    static constexpr int kKeyTile = HD <= 128 ? 64 : 32;
    static constexpr int kSubBlocks = kKeyTile / 16;
    static constexpr int kPassRows = kWarps * 16;
    static constexpr int kPitch = HD + 8;  // bf16 per smem row
    static constexpr int kQBytes = kPassRows * kPitch * 2;
    static constexpr int kKvTileElems = kKeyTile * kPitch;                 // K or V, one buffer
    static constexpr int kKvBytes = 2 * 2 * kKvTileElems * 2;              // 2 buffers x (K, V)
    static constexpr int kOPitch = HD + 4;                                 // fp32 per row
    static constexpr int kCombineBytes = kWarps * 16 * (kOPitch + 2) * 4;  // O, m, l per warp
    static constexpr int kKvOffset = kQBytes;
    static constexpr int kSmemBytes = kQBytes + cmax(kKvBytes, kCombineBytes);

    struct Args {
        const bf16* q;        ///< [T, n_heads * HD] (roped)
        const bf16* k_cache;  ///< [num_pages, page_size, n_kv, HD]
        const bf16* v_cache;  ///< [num_pages, page_size, n_kv, HD]
        float* o_part;        ///< [n_split, max_tokens, n_heads, HD]
        float* lse;           ///< [n_split, max_tokens, n_heads]
        int n_kv_heads;
        int page_size;
        int n_split;
        int max_tokens;       ///< token stride of o_part / lse (>= T)
        float scale;          ///< softmax scale, 1 / sqrt(HD)
    };

    __device__ static bool active(const StepShape& shape, int c0, int, int) {
        return c0 < shape.num_seqs;
    }

    __device__ static void prefetch(const Args&, int, int, int, char*) {}

    __device__ static void run(const Args& args, const StepShape& shape, int c0, int c1, int c2,
                               char* smem) {
        const int s = c0;
        if (s >= shape.num_seqs) return;
        const int h = c1;
        const int j = c2;
        const int qs = shape.query_start[s];
        const int q_len = shape.query_start[s + 1] - qs;
        const int ctx = shape.context_lens[s];
        if (q_len <= 0) return;
        const int chunk = ceil_div(ctx, args.n_split);
        const int kbeg = j * chunk;
        const int kend = cmin(ctx, kbeg + chunk);
        const int ntile = kend > kbeg ? ceil_div(kend - kbeg, kKeyTile) : 0;
        const int rows_total = q_len * G;
        const int* pages = shape.block_table + static_cast<long long>(s) * shape.max_pages_per_seq;
        const float scale_log2 = args.scale * 1.4426950408889634f;
        const int warp = warp_id();
        const int lane = lane_id();

        bf16* qsm = reinterpret_cast<bf16*>(smem);
        bf16* kvsm = reinterpret_cast<bf16*>(smem + kKvOffset);

        for (int p0 = 0; p0 < rows_total; p0 += kPassRows) {
            const int prow = cmin(kPassRows, rows_total - p0);
            const int nrb = ceil_div(prow, 16);
            const int nrb2 = nrb <= 1 ? 1 : (nrb <= 2 ? 2 : (nrb <= 4 ? 4 : 8));
            const int key_groups = kWarps / nrb2;
            const int rb = warp % nrb2;
            const int kg = warp / nrb2;
            const bool warp_active = rb < nrb;

            load_q(args, qsm, qs, h, p0, prow, nrb);
            cp_async_commit();
            if (ntile > 0) load_kv_tile(args, kvsm, pages, h, kbeg, kend, 0, 0);
            cp_async_commit();

            // Causal limit (last visible key) of this thread's two rows.
            const int row_lo = p0 + rb * 16 + (lane >> 2);
            const int lim_lo = ctx - q_len + row_lo / G;
            const int lim_hi = ctx - q_len + (row_lo + 8) / G;

            float o[HD / 8][4];
#pragma unroll
            for (int dn = 0; dn < HD / 8; ++dn)
#pragma unroll
                for (int e = 0; e < 4; ++e) o[dn][e] = 0.f;
            float m[2] = {-__int_as_float(0x7f800000), -__int_as_float(0x7f800000)};
            float l[2] = {0.f, 0.f};
            unsigned qf[HD / 16][4];

#pragma unroll 1
            for (int t = 0; t < ntile; ++t) {
                if (t + 1 < ntile) {
                    load_kv_tile(args, kvsm, pages, h, kbeg, kend, t + 1, (t + 1) & 1);
                }
                cp_async_commit();
                cp_async_wait<1>();
                __syncthreads();
                if (warp_active) {
                    if (t == 0) {
#pragma unroll
                        for (int kk = 0; kk < HD / 16; ++kk) {
                            ldmatrix_x4(qf[kk], qsm + (rb * 16 + (lane & 15)) * kPitch + kk * 16 +
                                                    (lane >> 4) * 8);
                        }
                    }
                    const bf16* ksm = kvsm + (t & 1) * 2 * kKvTileElems;
                    const bf16* vsm = ksm + kKvTileElems;
#pragma unroll 1
                    for (int sb = 0; sb < kSubBlocks; ++sb) {
                        const int key0 = kbeg + t * kKeyTile + sb * 16;
                        if ((t * kSubBlocks + sb) % key_groups != kg || key0 >= kend) continue;
                        sub_block(ksm + sb * 16 * kPitch, vsm + sb * 16 * kPitch, key0, kend,
                                  lim_lo, lim_hi, scale_log2, lane, qf, o, m, l);
                    }
                }
                __syncthreads();
            }
            cp_async_wait<0>();
            __syncthreads();
            combine_and_store(args, smem, o, m, l, warp_active, warp, lane, p0, prow, nrb2,
                              key_groups, qs, h, j);
        }
        release_smem();
    }

  private:
    /// Query rows [p0, p0 + prow) of the pass -> smem rows; rows up to nrb * 16 zeroed.
    __device__ static void load_q(const Args& args, bf16* qsm, int qs, int h, int p0, int prow,
                                  int nrb) {
        constexpr int kVecs = HD / 8;
        const int n_heads = G * args.n_kv_heads;
        for (int i = threadIdx.x; i < nrb * 16 * kVecs; i += kThreads) {
            const int r = i / kVecs;
            const int v = i % kVecs;
            const bool valid = r < prow;
            const int row = p0 + r;
            const bf16* src = args.q;
            if (valid) {
                const long long head_row =
                    static_cast<long long>(qs + row / G) * n_heads + h * G + row % G;
                src += head_row * HD + v * 8;
            }
            cp_async16_zfill(qsm + r * kPitch + v * 8, src, valid);
        }
    }

    /// Keys [kbeg + t * kKeyTile, +kKeyTile) of K and V -> buffer `buf`; keys >= kend zeroed.
    __device__ static void load_kv_tile(const Args& args, bf16* kvsm, const int* pages, int h,
                                        int kbeg, int kend, int t, int buf) {
        constexpr int kVecs = HD / 8;
        constexpr int kPerTensor = kKeyTile * kVecs;
        const int key_base = kbeg + t * kKeyTile;
        bf16* dst_base = kvsm + buf * 2 * kKvTileElems;
        for (int i = threadIdx.x; i < 2 * kPerTensor; i += kThreads) {
            const int tensor = i / kPerTensor;
            const int rem = i % kPerTensor;
            const int kr = rem / kVecs;
            const int v = rem % kVecs;
            const int pos = key_base + kr;
            const bool valid = pos < kend;
            const bf16* cache = tensor == 0 ? args.k_cache : args.v_cache;
            const bf16* src = cache;
            if (valid) {
                const long long page = pages[pos / args.page_size];
                const long long slot = page * args.page_size + pos % args.page_size;
                src = cache + (slot * args.n_kv_heads + h) * HD + v * 8;
            }
            cp_async16_zfill(dst_base + tensor * kKvTileElems + kr * kPitch + v * 8, src, valid);
        }
    }

    /// 16 keys for this warp's 16 query rows: scores, mask, online softmax, P V.
    __device__ static void sub_block(const bf16* ksm, const bf16* vsm, int key0, int kend,
                                     int lim_lo, int lim_hi, float scale_log2, int lane,
                                     const unsigned (&qf)[HD / 16][4], float (&o)[HD / 8][4],
                                     float (&m)[2], float (&l)[2]) {
        const float kNegInf = -__int_as_float(0x7f800000);
        float sc[2][4];
#pragma unroll
        for (int nt = 0; nt < 2; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) sc[nt][e] = 0.f;
#pragma unroll
        for (int kk = 0; kk < HD / 16; ++kk) {
            unsigned b[4];
            ldmatrix_x4(b, ksm + ((lane >> 4) * 8 + (lane & 7)) * kPitch + kk * 16 +
                               ((lane >> 3) & 1) * 8);
            mma_bf16(sc[0], qf[kk], b[0], b[1]);
            mma_bf16(sc[1], qf[kk], b[2], b[3]);
        }
        float mx[2] = {kNegInf, kNegInf};
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int key = key0 + nt * 8 + (lane & 3) * 2 + (e & 1);
                const int lim = e < 2 ? lim_lo : lim_hi;
                const bool visible = key < kend && key <= lim;
                sc[nt][e] = visible ? sc[nt][e] * scale_log2 : kNegInf;
                mx[e >> 1] = fmaxf(mx[e >> 1], sc[nt][e]);
            }
        }
        float alpha[2], m_use[2];
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) {
            mx[hr] = fmaxf(mx[hr], __shfl_xor_sync(0xffffffffu, mx[hr], 1));
            mx[hr] = fmaxf(mx[hr], __shfl_xor_sync(0xffffffffu, mx[hr], 2));
            const float m_new = fmaxf(m[hr], mx[hr]);
            m_use[hr] = m_new == kNegInf ? 0.f : m_new;
            alpha[hr] = exp2f(m[hr] - m_use[hr]);
            m[hr] = m_new;
        }
        float rowsum[2] = {0.f, 0.f};
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                sc[nt][e] = exp2f(sc[nt][e] - m_use[e >> 1]);
                rowsum[e >> 1] += sc[nt][e];
            }
        }
        l[0] = l[0] * alpha[0] + rowsum[0];
        l[1] = l[1] * alpha[1] + rowsum[1];
#pragma unroll
        for (int dn = 0; dn < HD / 8; ++dn) {
            o[dn][0] *= alpha[0];
            o[dn][1] *= alpha[0];
            o[dn][2] *= alpha[1];
            o[dn][3] *= alpha[1];
        }
        const unsigned pf[4] = {pack_bf16x2(sc[0][0], sc[0][1]), pack_bf16x2(sc[0][2], sc[0][3]),
                                pack_bf16x2(sc[1][0], sc[1][1]), pack_bf16x2(sc[1][2], sc[1][3])};
#pragma unroll
        for (int dk = 0; dk < HD / 16; ++dk) {
            unsigned b[4];
            ldmatrix_x4_trans(b, vsm + (((lane >> 3) & 1) * 8 + (lane & 7)) * kPitch + dk * 16 +
                                     (lane >> 4) * 8);
            mma_bf16(o[2 * dk], pf, b[0], b[1]);
            mma_bf16(o[2 * dk + 1], pf, b[2], b[3]);
        }
    }

    /// Merge the key groups' partial states per query row, normalise, write o_part / lse.
    __device__ static void combine_and_store(const Args& args, char* smem,
                                             const float (&o)[HD / 8][4], const float (&m)[2],
                                             const float (&l)[2], bool warp_active, int warp,
                                             int lane, int p0, int prow, int nrb2,
                                             int key_groups, int qs, int h, int j) {
        float* obuf = reinterpret_cast<float*>(smem + kKvOffset);
        float* mbuf = obuf + kWarps * 16 * kOPitch;
        float* lbuf = mbuf + kWarps * 16;
        if (warp_active) {
            const int r = lane >> 2;
#pragma unroll
            for (int hr = 0; hr < 2; ++hr) {
                float lsum = l[hr];
                lsum += __shfl_xor_sync(0xffffffffu, lsum, 1);
                lsum += __shfl_xor_sync(0xffffffffu, lsum, 2);
                if ((lane & 3) == 0) {
                    mbuf[warp * 16 + r + 8 * hr] = m[hr];
                    lbuf[warp * 16 + r + 8 * hr] = lsum;
                }
            }
#pragma unroll
            for (int dn = 0; dn < HD / 8; ++dn) {
                const int d = dn * 8 + (lane & 3) * 2;
                float* row_lo = obuf + (warp * 16 + r) * kOPitch + d;
                float* row_hi = row_lo + 8 * kOPitch;
                row_lo[0] = o[dn][0];
                row_lo[1] = o[dn][1];
                row_hi[0] = o[dn][2];
                row_hi[1] = o[dn][3];
            }
        }
        __syncthreads();
        const float kNegInf = -__int_as_float(0x7f800000);
        const int n_heads = G * args.n_kv_heads;
        constexpr int kVec4 = HD / 4;
        for (int i = threadIdx.x; i < prow * kVec4; i += kThreads) {
            const int r = i / kVec4;
            const int d = (i % kVec4) * 4;
            const int rb = r >> 4;
            const int rr = r & 15;
            float mmax = kNegInf;
            for (int g = 0; g < key_groups; ++g) {
                mmax = fmaxf(mmax, mbuf[(g * nrb2 + rb) * 16 + rr]);
            }
            float lsum = 0.f;
            float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
            if (mmax != kNegInf) {
                for (int g = 0; g < key_groups; ++g) {
                    const int w = g * nrb2 + rb;
                    const float wgt = exp2f(mbuf[w * 16 + rr] - mmax);
                    lsum += lbuf[w * 16 + rr] * wgt;
                    const float4 x =
                        *reinterpret_cast<const float4*>(obuf + (w * 16 + rr) * kOPitch + d);
                    acc.x += x.x * wgt;
                    acc.y += x.y * wgt;
                    acc.z += x.z * wgt;
                    acc.w += x.w * wgt;
                }
            }
            const float inv = lsum > 0.f ? 1.f / lsum : 0.f;
            acc.x *= inv;
            acc.y *= inv;
            acc.z *= inv;
            acc.w *= inv;
            const int row = p0 + r;
            const long long token = static_cast<long long>(j) * args.max_tokens + qs + row / G;
            const long long idx = token * n_heads + h * G + row % G;
            *reinterpret_cast<float4*>(args.o_part + idx * HD + d) = acc;
            if (d == 0) {
                args.lse[idx] = lsum > 0.f ? (mmax + __log2f(lsum)) * 0.6931471805599453f : kNegInf;
            }
        }
        __syncthreads();
    }
};

}  // namespace ek
