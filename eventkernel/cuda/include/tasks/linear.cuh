/**
 * @file linear.cuh
 * @brief LinearTask: out[t, n0:n0+TN] = a[t, :] . W[n0:n0+TN, :]^T (+ residual), with an
 *        optional RMSNorm of the input, or the MLP gating (kGated: the input is [gate | up],
 *        2K wide, and a = silu(gate) * up), fused in. Weights stream through a shared-memory
 *        ring filled by the copy engine (cp.async.bulk + mbarrier); the first stages are
 *        issued by prefetch(), before the task's events are waited on.
 *
 * Task coordinates: c0 = row tile, c1 = output-column tile (n0 = c1 * TN), c2 unused.
 *
 * Math: tensor cores, mma.sync m16n8k16 with the weight tile as A (16 output features x
 * k16) and up to 64 token rows as B (8 tokens per n-tile; only ceil(rows / 8) n-tiles are
 * computed). Warps split the TN features (up to 8 ways) and, when TN < 128, the K chunk;
 * split-K partials are summed in shared memory in the epilogue.
 *
 * Pipeline per K chunk c (BK columns):
 *   W[n0:n0+TN, cBK:(c+1)BK] -> weight ring slot c % kStages: one bulk copy per weight row
 *                               (copy engine), issued by warp 0, completing on an mbarrier;
 *                               prefetch() issues the first kStages chunks
 *   a[rows, cBK:(c+1)BK]     -> activation slot c % act_slots: cp.async 16 B, all threads,
 *                               one commit group per chunk, issued in run(). Slots are sized
 *                               by the real row count (8-row multiples), so decode (T = 1)
 *                               gets up to kMaxActSlots chunks of lookahead in the same smem
 *                               that holds 2 slots of 64 rows.
 *
 * HF semantics of the fused norm: a = bf16(g * bf16(x * rsqrt(mean(x^2) + eps))); of the
 * gating: a = bf16(bf16(silu(gate)) * up).
 * With a bf16 output and a residual: out = bf16(residual + bf16(acc)).
 */
#pragma once

#include "../common/common.cuh"
#include "../step.cuh"

namespace ek {

namespace linear_detail {

__host__ __device__ constexpr int warps_n(int tn) { return tn / 16 < kWarps ? tn / 16 : kWarps; }

/// K columns per chunk: 128 up to TN = 64, then ~16-20 KB of weights per ring stage; a
/// multiple of 16 per warp and a divisor of K.
__host__ __device__ constexpr int default_bk(int k, int tn) {
    int bk = tn <= 64 ? 128 : (tn <= 256 ? 64 : 32);
    const int min_bk = 16 * (kWarps / warps_n(tn));
    while (bk > min_bk && k % bk != 0) bk /= 2;
    return bk;
}

/// Weight-ring bytes the default stage count aims for (with the activation slots and
/// bookkeeping one Linear task stays near 105 KB, so two fit in an H100 CTA's 227 KB).
constexpr int kDefaultWeightRingBytes = 72 * 1024;

__host__ __device__ constexpr int default_stages(int k, int tn, int bk) {
    int stages = kDefaultWeightRingBytes / (tn * (bk + 8) * 2);
    stages = stages < 2 ? 2 : (stages > 16 ? 16 : stages);
    const int chunks = k / bk;
    return stages > chunks ? chunks : stages;
}

}  // namespace linear_detail

template <int K, int TN, typename OutT, bool kFuseNorm, bool kResidual,
          RowSet kRows = RowSet::kTokens, bool kGated = false,
          int BK = linear_detail::default_bk(K, TN),
          int kStages = linear_detail::default_stages(K, TN, BK)>
struct LinearTask {
    static_assert(TN == 16 || TN == 32 || TN == 64 || TN == 128 || TN == 256 || TN == 512,
                  "TN must be one of 16, 32, 64, 128, 256, 512");
    static_assert(K % BK == 0, "BK must divide K");
    static_assert(BK % 8 == 0, "bulk copies move 16-byte multiples");
    static_assert(kStages >= 1 && kStages <= 16, "1..16 ring stages (16 mbarriers)");
    static_assert(!(kFuseNorm && kGated), "an input is normalised or gated, not both");

    using OutType = OutT;
    static constexpr int kK = K;
    static constexpr int kTileN = TN;
    static constexpr bool kFuseNormInput = kFuseNorm;
    static constexpr bool kGatedInput = kGated;
    /// Elements per input row: K, or 2K when gated (the gate half, then the up half).
    static constexpr int kInputPitch = kGated ? 2 * K : K;
    static constexpr bool kResidualAdd = kResidual;
    static constexpr RowSet kRowSet = kRows;

    static constexpr int kWarpsN = linear_detail::warps_n(TN);  // warps across features
    static constexpr int kWarpsK = kWarps / kWarpsN;            // warps across the K chunk
    static constexpr int kWarpRows = TN / kWarpsN;
    static constexpr int kMTiles = kWarpRows / 16;
    static constexpr int kWarpK = BK / kWarpsK;
    static constexpr int kKSteps = kWarpK / 16;
    static_assert(kWarpK % 16 == 0, "each warp's share of BK must be a multiple of 16");
    static constexpr int kChunks = K / BK;

    // Shared memory: [mbarriers 128 B][rstd 64 x f32][weight ring: kStages x TN rows]
    //                [activation slots: kActBytes]; rows padded to kPitch.
    static constexpr int kPitch = BK + 8;  // bf16 per smem row; the 16-byte pad avoids
                                           // ldmatrix bank conflicts
    static constexpr int kWStageElems = TN * kPitch;
    static constexpr int kWStageBytes = kWStageElems * 2;
    static constexpr int kRstdOffset = 128;
    static constexpr int kRingOffset = 384;
    static constexpr int kRingBytes = kStages * kWStageBytes;
    static constexpr int kActOffset = kRingOffset + kRingBytes;
    static constexpr int kActBytes = 2 * kRowTile * kPitch * 2;  // >= 2 slots of 64 rows
    static constexpr int kMaxActSlots = 8;
    // Epilogue (reuses ring + activation slots): fp32 partials [kWarpsK][kEpiTokens][TN + 4].
    static constexpr int kEpiPitch = TN + 4;
    __host__ __device__ static constexpr int epi_tokens() {
        int tokens = kRowTile;
        while (tokens > 8 && kWarpsK * tokens * kEpiPitch * 4 > kRingBytes + kActBytes) tokens /= 2;
        return tokens;
    }
    static constexpr int kEpiTokens = epi_tokens();
    static constexpr int kEpiBytes = kWarpsK * kEpiTokens * kEpiPitch * 4;
    static constexpr int kSmemBytes = kRingOffset + cmax(kRingBytes + kActBytes, kEpiBytes);

    struct Args {
        const bf16* weight;       ///< [N, K]
        const bf16* input;        ///< [rows, kInputPitch] (before the norm or the gating)
        const bf16* norm_weight;  ///< [K] RMSNorm weight (kFuseNorm only)
        const OutT* residual;     ///< [rows, N] (kResidual only; may equal out)
        OutT* out;                ///< [rows, N]
        int n;                    ///< N, output features (multiple of 8)
        float eps;                ///< RMSNorm epsilon (kFuseNorm only)
    };

    __device__ static bool active(const StepShape& shape, int c0, int, int) {
        return row_tile(shape, kRows, c0).count > 0;
    }

    /// Warp 0 initialises the ring's mbarriers and issues the first kStages weight chunks.
    /// The other warps return at once. Call after the CTA's previous use of smem ended
    /// (every run() returns after a barrier).
    __device__ static void prefetch(const Args& args, int, int c1, int, char* smem) {
        if (warp_id() != 0) return;
        unsigned long long* bars = barriers(smem);
        if (lane_id() == 0) {
            for (int s = 0; s < kStages; ++s) mbar_init(&bars[s], 1);
            fence_mbarrier_init();
        }
        __syncwarp();
        const int n0 = c1 * TN;
        const int valid_n = cmin(TN, args.n - n0);
        const unsigned long long policy = l2_evict_first_policy();
        for (int c = 0; c < cmin(kStages, kChunks); ++c) {
            issue_weights(args, n0, valid_n, c, smem, policy);
        }
    }

    /// All threads, after the task's events were waited on. Always call it after
    /// prefetch(): when the tile is empty it still drains the copies prefetch issued.
    __device__ static void run(const Args& args, const StepShape& shape, int c0, int c1, int,
                               char* smem) {
        __syncthreads();  // mbarrier.init by warp 0 -> visible to every waiting thread
        const RowTile rows = row_tile(shape, kRows, c0);
        const int n0 = c1 * TN;
        const int valid_n = cmin(TN, args.n - n0);
        unsigned long long* bars = barriers(smem);
        if (rows.count == 0 || valid_n <= 0) {
            for (int c = 0; c < cmin(kStages, kChunks); ++c) mbar_wait(&bars[c], 0);
            finish(smem);
            return;
        }
        const bf16* x = args.input + static_cast<long long>(rows.begin) * kInputPitch;
        float* rstd = reinterpret_cast<float*>(smem + kRstdOffset);

        // Activation slots sized by the real rows (multiple of 8: one mma n-tile each); a
        // gated input's slot holds the gate rows, then the up rows (up_offset further).
        const int ntiles = ceil_div(rows.count, 8);
        const int up_offset = ntiles * 8 * kPitch;
        const int act_slot_elems = up_offset * (kGated ? 2 : 1);
        const int act_slots =
            cmin(cmin(kActBytes / (act_slot_elems * 2), kMaxActSlots), kChunks);
        bf16* act = reinterpret_cast<bf16*>(smem + kActOffset);
        for (int c = 0; c < act_slots; ++c) {
            issue_activations(x, rows.count, c, act + c * act_slot_elems, up_offset);
            cp_async_commit();
        }
        if constexpr (kFuseNorm) compute_rstd(x, rows.count, args.eps, rstd);

        const int warp = warp_id();
        const int lane = lane_id();
        const int wn = warp % kWarpsN;
        const int wk = warp / kWarpsN;
        const unsigned long long policy = warp == 0 ? l2_evict_first_policy() : 0ull;

        float acc[kMTiles][8][4];
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
            for (int nt = 0; nt < 8; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.f;

#pragma unroll 1
        for (int c = 0; c < kChunks; ++c) {
            const int stage = c % kStages;
            bf16* atile = act + (c % act_slots) * act_slot_elems;
            mbar_wait(&bars[stage], (c / kStages) & 1);
            cp_async_wait_dynamic(act_slots - 1);  // chunk c's group is complete
            __syncthreads();
            if constexpr (kFuseNorm) {
                normalize_chunk(atile, rows.count, c, args.norm_weight, rstd);
                __syncthreads();
            }
            if constexpr (kGated) {
                gate_chunk(atile, rows.count, up_offset);
                __syncthreads();
            }
            mma_chunk(weight_stage(smem, stage), atile, wn, wk, lane, ntiles, acc);
            __syncthreads();  // weight stage and activation slot are free again
            if (warp == 0 && c + kStages < kChunks) {
                issue_weights(args, n0, valid_n, c + kStages, smem, policy);
            }
            if (c + act_slots < kChunks)
                issue_activations(x, rows.count, c + act_slots, atile, up_offset);
            cp_async_commit();
        }
        epilogue(args, rows, n0, valid_n, wn, wk, lane, ntiles, acc, smem);
        finish(smem);
    }

  private:
    __device__ static unsigned long long* barriers(char* smem) {
        return reinterpret_cast<unsigned long long*>(smem);
    }

    __device__ static bf16* weight_stage(char* smem, int stage) {
        return reinterpret_cast<bf16*>(smem + kRingOffset + stage * kWStageBytes);
    }

    /// Warp 0: arm the slot's mbarrier and copy TN weight rows of chunk c, one bulk copy
    /// per row (BK * 2 bytes), into the padded slot.
    __device__ static void issue_weights(const Args& args, int n0, int valid_n, int c,
                                         char* smem, unsigned long long policy) {
        const int stage = c % kStages;
        unsigned long long* bar = barriers(smem) + stage;
        bf16* wtile = weight_stage(smem, stage);
        if (lane_id() == 0) mbar_arrive_expect_tx(bar, static_cast<unsigned>(valid_n) * BK * 2);
        __syncwarp();
        const bf16* src = args.weight + static_cast<long long>(n0) * K + c * BK;
        for (int r = lane_id(); r < valid_n; r += 32) {
            bulk_copy_g2s(wtile + r * kPitch, src + static_cast<long long>(r) * K, BK * 2, bar,
                          policy);
        }
    }

    /// All threads: cp.async the chunk's activation rows (16 B each) into a slot (and,
    /// gated, the up half's rows ``up_offset`` elements after them).
    __device__ static void issue_activations(const bf16* x, int count, int c, bf16* atile,
                                             int up_offset) {
        constexpr int kVecs = BK / 8;
        for (int i = threadIdx.x; i < count * kVecs; i += kThreads) {
            const int r = i / kVecs;
            const int v = i % kVecs;
            const bf16* src = x + static_cast<long long>(r) * kInputPitch + c * BK + v * 8;
            cp_async16(atile + r * kPitch + v * 8, src);
            if constexpr (kGated) cp_async16(atile + up_offset + r * kPitch + v * 8, src + K);
        }
    }

    /// In place on the slot's gate rows: a = bf16(bf16(silu(gate)) * up).
    __device__ static void gate_chunk(bf16* atile, int count, int up_offset) {
        constexpr int kVecs = BK / 8;
        for (int i = threadIdx.x; i < count * kVecs; i += kThreads) {
            bf16* a = atile + (i / kVecs) * kPitch + (i % kVecs) * 8;
            float f[8];
            silu_gate8(a, a + up_offset, f);
            store8(a, f);
        }
    }

    /// One warp per row: rstd[r] = rsqrt(mean(x[r, :]^2) + eps).
    __device__ static void compute_rstd(const bf16* x, int count, float eps, float* rstd) {
        for (int r = warp_id(); r < count; r += kWarps) {
            const bf16* row = x + static_cast<long long>(r) * K;
            float ss = 0.f;
            for (int v = lane_id(); v < K / 8; v += 32) {
                float f[8];
                load8(row + v * 8, f);
#pragma unroll
                for (int i = 0; i < 8; ++i) ss += f[i] * f[i];
            }
            ss = warp_sum(ss);
            if (lane_id() == 0) rstd[r] = rsqrtf(ss / static_cast<float>(K) + eps);
        }
    }

    /// In place on the slot: a = bf16(g * bf16(x * rstd)).
    __device__ static void normalize_chunk(bf16* atile, int count, int c, const bf16* g,
                                           const float* rstd) {
        constexpr int kVecs = BK / 8;
        for (int i = threadIdx.x; i < count * kVecs; i += kThreads) {
            const int r = i / kVecs;
            const int v = i % kVecs;
            float xv[8], gv[8];
            load8(atile + r * kPitch + v * 8, xv);
            load8(g + c * BK + v * 8, gv);
            const float s = rstd[r];
#pragma unroll
            for (int e = 0; e < 8; ++e) xv[e] = round_bf16(xv[e] * s) * gv[e];
            store8(atile + r * kPitch + v * 8, xv);
        }
    }

    __device__ static void mma_chunk(const bf16* wtile, const bf16* atile, int wn, int wk,
                                     int lane, int ntiles, float (&acc)[kMTiles][8][4]) {
        const bf16* wbase =
            wtile + (wn * kWarpRows + (lane & 15)) * kPitch + wk * kWarpK + (lane >> 4) * 8;
        const bf16* abase = atile + (lane & 7) * kPitch + wk * kWarpK + ((lane >> 3) & 1) * 8;
#pragma unroll
        for (int ks = 0; ks < kKSteps; ++ks) {
            unsigned a[kMTiles][4];
#pragma unroll
            for (int mt = 0; mt < kMTiles; ++mt) {
                ldmatrix_x4(a[mt], wbase + mt * 16 * kPitch + ks * 16);
            }
#pragma unroll
            for (int nt = 0; nt < 8; ++nt) {
                if (nt < ntiles) {
                    unsigned b0, b1;
                    ldmatrix_x2(b0, b1, abase + nt * 8 * kPitch + ks * 16);
#pragma unroll
                    for (int mt = 0; mt < kMTiles; ++mt) mma_bf16(acc[mt][nt], a[mt], b0, b1);
                }
            }
        }
    }

    /// Sum split-K partials through smem (kEpiTokens tokens at a time), add the
    /// residual, store 8 outputs (16 B of bf16) per thread and iteration.
    __device__ static void epilogue(const Args& args, RowTile rows, int n0, int valid_n, int wn,
                                    int wk, int lane, int ntiles,
                                    const float (&acc)[kMTiles][8][4], char* smem) {
        float* ebuf = reinterpret_cast<float*>(smem + kRingOffset);
        for (int t0 = 0; t0 < rows.count; t0 += kEpiTokens) {
#pragma unroll
            for (int nt = 0; nt < 8; ++nt) {
                if (nt < ntiles && nt * 8 >= t0 && nt * 8 < t0 + kEpiTokens) {
                    const int tok = nt * 8 - t0 + (lane & 3) * 2;
#pragma unroll
                    for (int mt = 0; mt < kMTiles; ++mt) {
                        const int f = wn * kWarpRows + mt * 16 + (lane >> 2);
                        float* p = ebuf + (wk * kEpiTokens + tok) * kEpiPitch + f;
                        p[0] = acc[mt][nt][0];
                        p[kEpiPitch] = acc[mt][nt][1];
                        p[8] = acc[mt][nt][2];
                        p[kEpiPitch + 8] = acc[mt][nt][3];
                    }
                }
            }
            __syncthreads();
            const int ntok = cmin(kEpiTokens, rows.count - t0);
            constexpr int kVecs = TN / 8;
            for (int i = threadIdx.x; i < ntok * kVecs; i += kThreads) {
                const int tok = i / kVecs;
                const int f = (i % kVecs) * 8;
                if (f >= valid_n) continue;
                float v[8];
                load8(ebuf + tok * kEpiPitch + f, v);
#pragma unroll
                for (int w = 1; w < kWarpsK; ++w) {
                    float p[8];
                    load8(ebuf + (w * kEpiTokens + tok) * kEpiPitch + f, p);
#pragma unroll
                    for (int e = 0; e < 8; ++e) v[e] += p[e];
                }
                const long long offset =
                    static_cast<long long>(rows.begin + t0 + tok) * args.n + n0 + f;
                if constexpr (kResidual) {
                    float r[8];
                    load8(args.residual + offset, r);
#pragma unroll
                    for (int e = 0; e < 8; ++e) v[e] = to_float_rounded(v[e]) + r[e];
                }
                store8(args.out + offset, v);
            }
            __syncthreads();
        }
    }

    /// The matmul result as the output tensor holds it (bf16 rounds).
    __device__ static float to_float_rounded(float v) {
        if constexpr (sizeof(OutT) == 2) {
            return round_bf16(v);
        } else {
            return v;
        }
    }

    __device__ static void finish(char* smem) {
        __syncthreads();
        if (threadIdx.x == 0) {
            for (int s = 0; s < kStages; ++s) mbar_inval(&barriers(smem)[s]);
        }
        release_smem();
    }
};

}  // namespace ek
