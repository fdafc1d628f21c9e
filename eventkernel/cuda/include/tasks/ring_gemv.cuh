/**
 * @file ring_gemv.cuh
 * @brief The weight-ring decode path of every linear (build option EK_WEIGHT_RING): a
 *        worker-wide ring in shared memory, filled by the copy engine ahead of the tasks
 *        that read it, and one GEMV body (run-time K and TN) shared by all linear kinds.
 *        Correct on an H100, but slower than the default GemvTask path so far
 *        (bench/results/README.md), hence not the default.
 *
 * Weights never depend on events, so a worker streams the weights of its next linear
 * tasks into the ring while it waits on events or runs other tasks: thread 0 "pumps" the
 * ring (issues cp.async.bulk copies into free slots, in queue order) at the start of every
 * task, inside every event wait and after every consumed chunk. The consumer side reads
 * the chunks in the same order. Both sides walk the same queue with the same predicate,
 * so chunk number q always lands in slot q % kRingStages with mbarrier parity
 * (q / kRingStages) & 1.
 *
 * A linear task's weight tile is rows [n0, n0 + TN) of W[N, K], streamed as sub-tiles of
 * 16 rows (kRingSubRows); chunk j of a sub-tile holds columns [j * kc, (j + 1) * kc) of its
 * rows (kc = min(K, 1024): at most 32 KB), one bulk copy of 2 KB per row, rows kc apart in
 * the slot. Wide tiles (the LM head's TN = 256) thus cost 16 copies per chunk, not TN.
 *
 * Math per task (up to kRingMaxRows token rows): the activation rows are staged in shared
 * memory as bf16 (normalised first when an RMSNorm is fused: a = bf16(g * bf16(x * rstd)),
 * as transformers computes it); thread t owns column vector t % V' (V' = kc / 8 rounded up
 * to a power of two, 16..128) and rows t / V' + (256 / V') * i of every chunk of a sub-tile,
 * accumulating fp32 dot products per (row, token) across its chunks; at the end of each
 * sub-tile every warp writes its partial sums to its own slot, and the output sums the
 * (at most 4) slots in a fixed order: the result does not depend on timing. With a
 * residual: out = residual + round(acc) (round to the output type).
 */
#pragma once

#include "../common/common.cuh"
#include "../step.cuh"
#include "gemv.cuh"

#ifndef EK_RING_STAGES
#define EK_RING_STAGES 3
#endif

namespace ek {

#if defined(EK_TRACE) && defined(EK_WEIGHT_RING)
/// Instrumented builds: where the running ring task records its phases (set per task, per
/// CTA): [0] staging done, [1] chunks done, [2] ns thread 0 waited for chunks, [3] ns it
/// pumped.
__shared__ unsigned long long* ek_ring_phase;
__device__ __forceinline__ unsigned long long ring_now() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
    return t;
}
#define EK_RING_PHASE_SET(i, v) do { if (threadIdx.x == 0) ek_ring_phase[i] = (v); } while (0)
#define EK_RING_PHASE_ADD(i, v) do { if (threadIdx.x == 0) ek_ring_phase[i] += (v); } while (0)
#define EK_RING_NOW() ring_now()
#else
#define EK_RING_PHASE_SET(i, v) do { } while (0)
#define EK_RING_PHASE_ADD(i, v) do { } while (0)
#define EK_RING_NOW() 0ull
#endif

#ifdef EK_RING_INLINE_PUMP
#define EK_PUMP_INLINE __forceinline__
#else
#define EK_PUMP_INLINE __noinline__
#endif

constexpr int kRingStages = EK_RING_STAGES;
constexpr int kRingChunkBytes = 32 * 1024;
constexpr int kRingChunkElems = kRingChunkBytes / 2;
constexpr int kRingBytes = kRingStages * kRingChunkBytes;
/// Token rows one ring GEMV handles at most (accumulators per thread: 8 x rows).
constexpr int kRingMaxRows = 8;
/// Widest linear tile the ring GEMV takes (the reduction buffer is sized for it).
constexpr int kRingMaxTileN = 256;
/// Weight rows per ring sub-tile, and columns per chunk at most.
constexpr int kRingSubRows = 16;
constexpr int kRingMaxChunkCols = kRingChunkElems / kRingSubRows;
/// Warps whose partial sums meet in one output (V' / 32 for V' = 128).
constexpr int kRingRedSlots = 4;
/// Dynamic shared memory every worker gets: all an H100 CTA may have, less 1 KB of static.
constexpr int kMaxDynamicSmem = 227 * 1024 - 1024;
/// Shared memory left to the task that runs while the ring is in use.
constexpr int kScratchBytes = kMaxDynamicSmem - kRingBytes;

// Scratch layout of the ring GEMV: [partial sums: kRingMaxRows x kRingMaxTileN x
// kRingRedSlots f32][sums of squares: kWarps x kRingMaxRows f32][norm weight: K bf16]
// [activations: rows x K bf16].
constexpr int kGemvRedOffset = 0;
constexpr int kGemvSsOffset = kRingMaxRows * kRingMaxTileN * kRingRedSlots * 4;
constexpr int kGemvNormOffset = kGemvSsOffset + kWarps * kRingMaxRows * 4;

/// Token rows the ring GEMV can stage for a linear with this K (0 when not even one fits).
__host__ __device__ constexpr int ring_rows_fit(int k, bool norm) {
    return cmax(0, cmin(kRingMaxRows,
                        (kScratchBytes - kGemvNormOffset) / (2 * k) - (norm ? 1 : 0)));
}

/// The weight tile of one linear task, as the ring streams it.
struct RingTile {
    const bf16* weight;  ///< W + n0 * K
    int k;               ///< K
    int tn;              ///< TN (power of two, 16..kRingMaxTileN)
    int valid_n;         ///< rows of the tile that exist (N - n0, at most TN)
    int kc;              ///< columns per chunk
    int sub_chunks;      ///< chunks per sub-tile: ceil(K / kc)
    int chunks;          ///< sub-tiles x sub_chunks; 0 when the tile is empty
};

__device__ __forceinline__ RingTile ring_tile(const bf16* weight, int k, int tn, int n, int c1) {
    RingTile t;
    const int n0 = c1 * tn;
    t.weight = weight + static_cast<long long>(n0) * k;
    t.k = k;
    t.tn = tn;
    t.valid_n = cmax(0, cmin(tn, n - n0));
    t.kc = cmin(k, kRingMaxChunkCols);
    t.sub_chunks = ceil_div(k, t.kc);
    t.chunks = ceil_div(t.valid_n, kRingSubRows) * t.sub_chunks;
    return t;
}

/// A ring source over the column tiles [c1, end) of one linear, in order (one CTA walking
/// a whole linear: the template tests).
struct ColumnTiles {
    const bf16* weight;
    int k;
    int tn;
    int n;
    int c1;
    int end;

    __device__ bool next(RingTile& t) {
        while (c1 < end) {
            t = ring_tile(weight, k, tn, n, c1++);
            if (t.chunks > 0) return true;
        }
        return false;
    }
};

/// The worker's weight ring. `Source::next(RingTile&)` yields, in queue order, the tiles of
/// the linear tasks this worker will run through the ring. The producer side (init, pump)
/// is run by all 32 lanes of warp 0 in lockstep: every lane keeps the same bookkeeping, and
/// the copies of a chunk's rows are issued by different lanes (one thread issuing them all
/// cost ~80 ns per copy on an H100, on the consumer's critical path).
template <class Source>
struct WeightRing {
    unsigned long long* bars;  ///< kRingStages mbarriers (static shared memory)
    char* base;                ///< kRingBytes of shared memory
    Source source;
    unsigned long long policy;
    int issued = 0;    ///< chunks issued (warp 0's count)
    int consumed = 0;  ///< chunks consumed (every thread's count; uniform)
    RingTile cur{};    ///< the tile being issued (warp 0)
    int cur_chunk = 0;
    bool have_cur = false;

    /// Warp 0, once, before any pump(); followed by a CTA barrier.
    __device__ void init() {
        if (threadIdx.x == 0) {
            for (int s = 0; s < kRingStages; ++s) mbar_init(bars + s, 1);
            fence_mbarrier_init();
        }
        policy = l2_evict_first_policy();
        __syncwarp();
    }

    /// Warp 0: issue chunks into every free slot. Not inlined: it is called from every
    /// wait and every chunk, and one copy keeps the hot code small.
    __device__ EK_PUMP_INLINE void pump() {
        while (issued - consumed < kRingStages) {
            if (!have_cur) {
                if (!source.next(cur)) return;
                cur_chunk = 0;
                have_cur = true;
#ifndef EK_RING_NO_L2_PREFETCH
                // The whole tile heads for L2 now: its later chunks then wait for L2, not
                // HBM, and far more bytes are in flight than the ring holds.
                if (threadIdx.x == 0)
                    l2_prefetch_bulk(cur.weight,
                                     static_cast<unsigned>(cur.valid_n) * cur.k * 2u);
#endif
            }
            issue(cur, cur_chunk, issued);
            ++issued;
            if (++cur_chunk == cur.chunks) have_cur = false;
        }
    }

    /// All threads: wait for the next chunk; returns its slot.
    __device__ __forceinline__ const bf16* wait_chunk() const {
        const int s = consumed % kRingStages;
        const unsigned long long t0 = EK_RING_NOW();
        mbar_wait(bars + s, (consumed / kRingStages) & 1);
        EK_RING_PHASE_ADD(2, EK_RING_NOW() - t0);
        return reinterpret_cast<const bf16*>(base + s * kRingChunkBytes);
    }

    /// All threads, after reading the chunk: free its slot and refill the ring.
    __device__ __forceinline__ void release_chunk() {
        release_smem();
        ++consumed;
        if (threadIdx.x < 32) {
            const unsigned long long t0 = EK_RING_NOW();
            pump();
            EK_RING_PHASE_ADD(3, EK_RING_NOW() - t0);
        }
    }

    /// Thread 0, before leaving the kernel: wait for chunks issued but never consumed
    /// (only after a debug abort) so no copy lands in a finished CTA's shared memory.
    __device__ void drain() {
        for (int q = consumed; q < issued; ++q)
            mbar_wait(bars + q % kRingStages, (q / kRingStages) & 1);
    }

  private:
    __device__ __forceinline__ void issue(const RingTile& t, int chunk, int q) {
        const int s = q % kRingStages;
        const int sub = chunk / t.sub_chunks;
        const int k0 = (chunk - sub * t.sub_chunks) * t.kc;
        const int width = cmin(t.kc, t.k - k0);
        const int rows = cmin(kRingSubRows, t.valid_n - sub * kRingSubRows);
        const unsigned bytes = static_cast<unsigned>(width) * 2u;
        unsigned long long* bar = bars + s;
        char* slot = base + s * kRingChunkBytes;
        const bf16* src = t.weight + static_cast<long long>(sub * kRingSubRows) * t.k + k0;
        const int lane = threadIdx.x;  // warp 0
        if (lane == 0) mbar_arrive_expect_tx(bar, bytes * rows);
        __syncwarp();
        if (t.kc == t.k) {  // the chunk's rows are contiguous in W: one copy
            if (lane == 0) bulk_copy_g2s(slot, src, bytes * rows, bar, policy);
            return;
        }
        if (lane < rows)
            bulk_copy_g2s(slot + lane * t.kc * 2, src + static_cast<long long>(lane) * t.k, bytes,
                          bar, policy);
    }
};

/// Everything the GEMV body needs from a linear kind's Args and template parameters.
struct GemvParams {
    const bf16* input;        ///< [rows, K]
    const bf16* norm_weight;  ///< [K] (norm only)
    const void* residual;     ///< [rows, N] of the output type (residual only)
    void* out;                ///< [rows, N], bf16 or f32
    int n;
    float eps;
    bool norm;
    bool gated;               ///< input rows are [gate | up], 2K wide
    bool residual_add;
    bool out_f32;
    RowSet rows;
};

template <class Linear>
__device__ __forceinline__ GemvParams gemv_params(const typename Linear::Args& a) {
    return GemvParams{a.input, a.norm_weight, a.residual, a.out, a.n, a.eps,
                      Linear::kFuseNormInput, Linear::kGatedInput, Linear::kResidualAdd,
                      sizeof(typename Linear::OutType) == 4, Linear::kRowSet};
}

namespace ring_detail {

__device__ __forceinline__ uint4 ld_cg_v4(const void* p) {
    uint4 v;
    asm volatile("ld.global.cg.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

__device__ __forceinline__ int pow2_at_least(int v) {
    int p = 1;
    while (p < v) p <<= 1;
    return p;
}

/// Threads that share one weight row of a chunk (its column vectors, padded): 16..128.
__device__ __forceinline__ int threads_per_row(int kc) {
    return cmax(16, cmin(128, pow2_at_least(kc / 8)));
}

/// Stage rows x K activations in shared memory as bf16, normalised when p.norm, gated
/// (silu(gate) * up) when p.gated.
__device__ __forceinline__ void stage_rows(const GemvParams& p, int k, RowTile rows,
                                           char* scratch) {
    bf16* xs = reinterpret_cast<bf16*>(scratch + kGemvNormOffset + (p.norm ? 2 * k : 0));
    const int vecs = k / 8;
    if (p.gated) {
        const bf16* x = p.input + static_cast<long long>(rows.begin) * 2 * k;
        for (int i = threadIdx.x; i < rows.count * vecs; i += kThreads) {
            const bf16* row = x + static_cast<long long>(i / vecs) * 2 * k + (i % vecs) * 8;
            float f[8];
            silu_gate8(row, row + k, f);
            store8(xs + i * 8, f);
        }
        __syncthreads();
        return;
    }
    const bf16* x = p.input + static_cast<long long>(rows.begin) * k;
    for (int i = threadIdx.x; i < rows.count * vecs; i += kThreads)
        *reinterpret_cast<uint4*>(xs + i * 8) = ld_cg_v4(x + i * 8);
    if (!p.norm) {
        __syncthreads();
        return;
    }
    bf16* gs = reinterpret_cast<bf16*>(scratch + kGemvNormOffset);
    for (int i = threadIdx.x; i < vecs; i += kThreads)
        *reinterpret_cast<uint4*>(gs + i * 8) = ld_nc_v4(p.norm_weight + i * 8);
    __syncthreads();
    float* ss = reinterpret_cast<float*>(scratch + kGemvSsOffset);
    for (int r = 0; r < rows.count; ++r) {
        float s = 0.f;
        for (int i = threadIdx.x; i < vecs; i += kThreads) {
            float f[8];
            load8(xs + r * k + i * 8, f);
#pragma unroll
            for (int e = 0; e < 8; ++e) s += f[e] * f[e];
        }
        s = warp_sum(s);
        if (lane_id() == 0) ss[warp_id() * kRingMaxRows + r] = s;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < rows.count * vecs; i += kThreads) {
        const int r = i / vecs;
        float total = 0.f;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) total += ss[w * kRingMaxRows + r];
        const float rstd = rsqrtf(total / k + p.eps);
        float f[8], g[8];
        load8(xs + i * 8, f);
        load8(gs + (i % vecs) * 8, g);
#pragma unroll
        for (int e = 0; e < 8; ++e) f[e] = round_bf16(g[e] * round_bf16(f[e] * rstd));
        store8(xs + i * 8, f);
    }
    __syncthreads();
}

/// The chunk loop for up to R token rows: per sub-tile, accumulate across its chunks,
/// then every warp's partial sums go to its own slot of `red` [R][TN][kRingRedSlots].
template <int R, class Ring>
__device__ __forceinline__ void dot_chunks(const RingTile& t, int count, const bf16* xs,
                                           float* red, Ring& ring) {
    const int vp = threads_per_row(t.kc);
    const int groups = kThreads / vp;
    const int rows_per_thread = kRingSubRows / groups;  // 1..8
    const int width = cmin(vp, 32);                     // lanes that reduce together
    const int c = threadIdx.x & (vp - 1);
    const int g = threadIdx.x / vp;
    const int red_slot = vp > 32 ? c / 32 : 0;
#pragma unroll 1
    for (int sub = 0; sub * t.sub_chunks < t.chunks; ++sub) {
        float acc[8][R];
#pragma unroll
        for (int i = 0; i < 8; ++i)
#pragma unroll
            for (int r = 0; r < R; ++r) acc[i][r] = 0.f;
        const int sub_rows = cmin(kRingSubRows, t.valid_n - sub * kRingSubRows);
#pragma unroll 1
        for (int j = 0; j < t.sub_chunks; ++j) {
            const bf16* w = ring.wait_chunk();
            const int k = j * t.kc + c * 8;
            if (c * 8 < t.kc && k < t.k) {
                uint4 xv[R];
#pragma unroll
                for (int r = 0; r < R; ++r)
                    xv[r] = r < count ? *reinterpret_cast<const uint4*>(xs + r * t.k + k)
                                      : make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
                for (int i = 0; i < 8; ++i) {
                    const int row = g + groups * i;
                    if (i < rows_per_thread && row < sub_rows) {
                        const uint4 wv =
                            *reinterpret_cast<const uint4*>(w + row * t.kc + c * 8);
#pragma unroll
                        for (int r = 0; r < R; ++r) acc[i][r] += dot8(wv, xv[r]);
                    }
                }
            }
            ring.release_chunk();
        }
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            if (i >= rows_per_thread) break;  // uniform
            const int row = g + groups * i;
#pragma unroll
            for (int r = 0; r < R; ++r) {
                float v = acc[i][r];
                for (int o = width / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
                if ((c & (width - 1)) == 0 && r < count && row < sub_rows)
                    red[(r * t.tn + sub * kRingSubRows + row) * kRingRedSlots + red_slot] = v;
            }
        }
    }
}

}  // namespace ring_detail

/// One linear task through the ring: all threads, after the task's event waits.
template <class Ring>
__device__ __forceinline__ void ring_gemv(const GemvParams& p, const RingTile& t, RowTile rows,
                                          int n0, char* scratch, Ring& ring) {
    using namespace ring_detail;
    if (t.chunks == 0) return;
    float* red = reinterpret_cast<float*>(scratch + kGemvRedOffset);
    const int slots = cmax(1, threads_per_row(t.kc) / 32);  // partial-sum slots written
    stage_rows(p, t.k, rows, scratch);  // ends with a CTA barrier
    EK_RING_PHASE_SET(0, EK_RING_NOW());
    const bf16* xs = reinterpret_cast<const bf16*>(scratch + kGemvNormOffset +
                                                   (p.norm ? 2 * t.k : 0));
    // NOTE: one body per row-count class, shared by every linear kind (instruction cache).
    if (rows.count <= 1) {
        dot_chunks<1>(t, rows.count, xs, red, ring);
    } else if (rows.count <= 2) {
        dot_chunks<2>(t, rows.count, xs, red, ring);
    } else if (rows.count <= 4) {
        dot_chunks<4>(t, rows.count, xs, red, ring);
    } else {
        dot_chunks<8>(t, rows.count, xs, red, ring);
    }
    __syncthreads();
    EK_RING_PHASE_SET(1, EK_RING_NOW());
    for (int i = threadIdx.x; i < rows.count * t.valid_n; i += kThreads) {
        const int r = i / t.valid_n;
        const int col = i - r * t.valid_n;
        const long long o = static_cast<long long>(rows.begin + r) * p.n + n0 + col;
        const float* part = red + (r * t.tn + col) * kRingRedSlots;
        float v = part[0];
        for (int s = 1; s < slots; ++s) v += part[s];
        if (p.out_f32) {
            if (p.residual_add) v += static_cast<const float*>(p.residual)[o];
            static_cast<float*>(p.out)[o] = v;
        } else {
            if (p.residual_add) v = to_float(static_cast<const bf16*>(p.residual)[o]) + round_bf16(v);
            static_cast<bf16*>(p.out)[o] = to_bf16(v);
        }
    }
    release_smem();  // scratch is free for the next task
}

}  // namespace ek
