/**
 * @file gemv.cuh
 * @brief GemvTask: the decode path of a linear, for up to kMaxRows token rows. Same Args
 *        and math as LinearTask (fused RMSNorm or gating, residual, bf16 or fp32 output),
 *        but the weights are read once with 16-byte loads into registers, from L2 where the
 *        worker's l2_prefetch() put them while earlier tasks ran, and reduced with warp
 *        shuffles: no shared-memory ring, no per-chunk barriers. A warp reads several output
 *        features at once when rows are short, so a small tile is in flight all at once, and
 *        the first batch of loads is issued before the task waits on its events (weights
 *        never depend on them), overlapping the wait and the staging of the activations.
 *
 * Task coordinates: c0 = row tile, c1 = output-column tile (n0 = c1 * TN), c2 unused.
 */
#pragma once

#include "../common/common.cuh"
#include "../step.cuh"
#include "linear.cuh"

// Tuning (eventkernel.cuda.tuning): tuning::kGemvEarly (false: the first weight batch
// waits for the events and the staging), tuning::kGemvBatch (16-byte weight loads each lane
// keeps in flight), tuning::kL2PrefetchBytes (bytes of a tile the look-ahead asks L2 for;
// 0: all).

namespace ek {

__device__ __forceinline__ void l2_prefetch_bulk(const void* ptr, unsigned bytes) {
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(ptr), "r"(bytes)
                 : "memory");
}

/// 16-byte read-only load that skips L1 (weights are read once). Not volatile, so the
/// compiler may issue a batch of them back to back.
__device__ __forceinline__ uint4 ld_nc_v4(const void* p) {
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

template <int K, int TN, typename OutT, bool kFuseNorm, bool kResidual,
          RowSet kRows = RowSet::kTokens, bool kGated = false, int kRowLimit = 16>
struct GemvTask {
    static_assert(K % 8 == 0, "K must be a multiple of 8 (16-byte loads)");
    using Linear = LinearTask<K, TN, OutT, kFuseNorm, kResidual, kRows, kGated>;
    static constexpr int kInputPitch = Linear::kInputPitch;  // elements per input row
    using Args = typename Linear::Args;
    using OutType = OutT;
    /// Rows staged in shared memory: as many as fit in 160 KB, at most 16.
    static constexpr int kMaxRows = K * 2 * 16 <= 160 * 1024 ? 16 : (K * 2 * 8 <= 160 * 1024 ? 8 : 4);
    static constexpr int kRstdOffset = kMaxRows * K * 2;
    static constexpr int kNormOffset = kRstdOffset + (kMaxRows + kWarps) * 4;  // RMSNorm weight
    static constexpr int kSmemBytes = kNormOffset + (kFuseNorm ? K * 2 : 0);
    /// Rows run here: kRowLimit < kMaxRows when another path takes the larger steps; only
    /// the row loops up to it are compiled (less code, fewer registers for the kernel).
    static constexpr int kRunRows = cmin(kMaxRows, kRowLimit);

    /// 16-byte loads per lane for one output feature; a lane holds at most tuning::kGemvBatch.
    static constexpr int kIters = (K + 255) / 256;
    static constexpr int kLoads = kIters < tuning::kGemvBatch ? kIters : tuning::kGemvBatch;
    /// Output features one warp reads per pass: short rows share the batch, so a small
    /// tile's weights are in flight all at once. At most 2: the accumulators are
    /// kCols x rows registers (3 or more spill in the SmolLM2 kernel, K = 576).
    static constexpr int kCols = cmax(1, cmin(cmin(tuning::kGemvBatch / kIters, TN / kWarps), 2));
    static constexpr int kBatch = kCols * kLoads;  // weight registers per lane
    static constexpr int kPassN = kWarps * kCols;  // output features per pass of the CTA

    /// run() calls the runtime's wait itself, after issuing its first weight loads.
    static constexpr bool kWaitsInRun = true;

    /// Rows this path handles: the whole step must fit in one row tile of kRunRows.
    __device__ static bool handles(const StepShape& shape) {
        return num_rows(shape, kRows) <= kRunRows;
    }

    __device__ static bool active(const StepShape& shape, int c0, int, int) {
        return row_tile(shape, kRows, c0).count > 0;
    }

    /// One thread asks the copy engine to bring the start of the task's weight tile into L2
    /// (tuning::kL2PrefetchBytes), so that the first loads after the previous task's barrier hit
    /// L2. Whole tiles overflowed L2: two 512 KB tiles ahead on 132 SMs made a Qwen3-8B
    /// step read 19.4 GB from DRAM instead of 15.2 (ncu, H200).
    __device__ static void l2_prefetch(const Args& args, int, int c1, int) {
        const int n0 = c1 * TN;
        const int valid_n = cmin(TN, args.n - n0);
        if (valid_n <= 0) return;
        unsigned bytes = static_cast<unsigned>(valid_n) * K * 2u;
        constexpr unsigned kMaxBytes = tuning::kL2PrefetchBytes;
        if (kMaxBytes > 0 && bytes > kMaxBytes) bytes = kMaxBytes;
        l2_prefetch_bulk(args.weight + static_cast<long long>(n0) * K, bytes);
    }

    __device__ static void prefetch(const Args&, int, int, int, char*) {}

    /// The task alone (no events to wait for).
    __device__ static void run(const Args& args, const StepShape& shape, int c0, int c1, int c2,
                               char* smem) {
        run(args, shape, c0, c1, c2, smem, true, [] { return true; });
    }

    /// The task inside the runtime: the first batch of weights and the RMSNorm weight are
    /// requested before ``wait()`` (weights never depend on events), so their latency
    /// overlaps the wait and the staging of the activations. ``wait()`` is called exactly
    /// once, by all threads, even when the task is inactive; returns its result.
    template <class Wait>
    __device__ static bool run(const Args& args, const StepShape& shape, int c0, int c1, int,
                               char* smem, bool active, Wait&& wait) {
        const RowTile rows = row_tile(shape, kRows, c0);
        const int n0 = c1 * TN;
        const int valid_n = cmin(TN, args.n - n0);
        if (!active || rows.count == 0 || valid_n <= 0) return wait();
        const Staging st = begin_staging(args, smem);
        uint4 wv[kBatch];
        if (tuning::kGemvEarly) load_batch(args, n0, valid_n, 0, 0, wv);
        if (!wait()) return abandon_staging();
        stage(args, rows, st);
        const bf16* xs = st.xs;
        // NOTE: one compact loop per row count; the others stay out of the instruction cache.
        if (rows.count <= 1) {
            dot_rows<1>(args, rows, n0, valid_n, xs, wv);
        } else if constexpr (kRunRows >= 2) {
            if (rows.count <= 2) {
                dot_rows<2>(args, rows, n0, valid_n, xs, wv);
            } else if constexpr (kRunRows >= 3) {
                if (rows.count <= 4) {
                    dot_rows<4>(args, rows, n0, valid_n, xs, wv);
                } else if constexpr (kRunRows >= 5) {
                    if (rows.count <= 8) {
                        dot_rows<8>(args, rows, n0, valid_n, xs, wv);
                    } else if constexpr (kRunRows >= 9) {
                        dot_rows<16>(args, rows, n0, valid_n, xs, wv);
                    }
                }
            }
        }
        __syncthreads();  // smem is free for the next task
        return true;
    }

    /// Rows of another task's choosing (the MoE expert linears), no events: ``rows`` of
    /// ``args.input``, or with ``gather`` the input rows ``gather[rows.begin + r]``, times
    /// output tile ``c1``; at most kRunRows rows; out rows are ``rows``.
    __device__ static void run_rows(const Args& args, RowTile rows, const int* gather, int c1,
                                    char* smem) {
        const int n0 = c1 * TN;
        const int valid_n = cmin(TN, args.n - n0);
        if (rows.count <= 0 || valid_n <= 0) return;
        const Staging st = begin_staging(args, smem);
        uint4 wv[kBatch];
        if (tuning::kGemvEarly) load_batch(args, n0, valid_n, 0, 0, wv);
        stage(args, rows, st, gather);
        if (rows.count <= 1) {
            dot_rows<1>(args, rows, n0, valid_n, st.xs, wv);
        } else if constexpr (kRunRows >= 2) {
            if (rows.count <= 2) {
                dot_rows<2>(args, rows, n0, valid_n, st.xs, wv);
            } else if constexpr (kRunRows >= 3) {
                if (rows.count <= 4) {
                    dot_rows<4>(args, rows, n0, valid_n, st.xs, wv);
                } else if constexpr (kRunRows >= 5) {
                    if (rows.count <= 8) {
                        dot_rows<8>(args, rows, n0, valid_n, st.xs, wv);
                    } else if constexpr (kRunRows >= 9) {
                        dot_rows<16>(args, rows, n0, valid_n, st.xs, wv);
                    }
                }
            }
        }
        __syncthreads();  // smem is free for the next group or task
    }

  private:
    /// Output feature (within the tile) of weight register ``c`` of this warp in ``pass``.
    __device__ static int feature(int pass, int c) { return pass * kPassN + c * kWarps + warp_id(); }

    /// Issue batch ``base`` (in 16-byte steps along K) of pass ``pass``: kLoads loads for
    /// each of the warp's kCols features; zeros past the tile or K.
    __device__ static void load_batch(const Args& args, int n0, int valid_n, int pass, int base,
                                      uint4 (&wv)[kBatch]) {
        const int lane = lane_id();
#pragma unroll
        for (int c = 0; c < kCols; ++c) {
            const int n = feature(pass, c);
            const bf16* w = args.weight + static_cast<long long>(n0 + n) * K;
#pragma unroll
            for (int u = 0; u < kLoads; ++u) {
                const int k = (base + u) * 256 + lane * 8;
                wv[c * kLoads + u] = n < valid_n && k < K ? ld_nc_v4(w + k)
                                                          : make_uint4(0u, 0u, 0u, 0u);
            }
        }
    }

  public:
    // The staging, shared with GemvMmaTask: begin_staging() before the wait, then stage()
    // after it (or abandon_staging() when a debug build's wait stopped).

    /// Where the staged rows, their rstd and the RMSNorm weight live in shared memory.
    struct Staging {
        bf16* xs;
        float* rstd;
        bf16* gs;
    };

    /// All threads: the RMSNorm weight starts on its way into shared memory (cp.async).
    __device__ static Staging begin_staging(const Args& args, char* smem) {
        const Staging st{reinterpret_cast<bf16*>(smem),
                         reinterpret_cast<float*>(smem + kRstdOffset),
                         reinterpret_cast<bf16*>(smem + kNormOffset)};
        if constexpr (kFuseNorm) {
            for (int k = threadIdx.x * 8; k < K; k += kThreads) cp_async16(st.gs + k, args.norm_weight + k);
            cp_async_commit();
        }
        return st;
    }

    /// Drain begin_staging()'s copy; returns false (the task's result).
    __device__ static bool abandon_staging() {
        if constexpr (kFuseNorm) cp_async_wait<0>();
        return false;
    }

    /// Stage the activation rows in shared memory as bf16: normalised,
    /// a = bf16(g * bf16(x * rstd)), gated, a = bf16(bf16(silu(gate)) * up), or copied.
    /// Every thread takes part in each phase, so a row's loads are in flight together.
    /// ``gather``: read input row ``gather[rows.begin + r]`` for row r (MoE expert rows).
    __device__ static void stage(const Args& args, RowTile rows, const Staging& st,
                                 const int* gather = nullptr) {
        bf16* xs = st.xs;
        float* rstd = st.rstd;
        const bf16* gs = st.gs;
        const bf16* x = args.input + static_cast<long long>(rows.begin) * kInputPitch;
        constexpr int kChunks = K / 8;  // 16-byte chunks per row
#pragma unroll 2
        for (int i = threadIdx.x; i < rows.count * kChunks; i += kThreads) {
            const int r = i / kChunks;
            const int k = (i % kChunks) * 8;
            const bf16* row = gather != nullptr
                ? args.input + static_cast<long long>(gather[rows.begin + r]) * kInputPitch
                : x + static_cast<long long>(r) * kInputPitch;
            if constexpr (kGated) {
                float f[8];
                silu_gate8(row + k, row + K + k, f);
                store8(xs + r * K + k, f);
            } else {
                copy8(xs + r * K + k, row + k);
            }
        }
        __syncthreads();
        if constexpr (kFuseNorm) {
            // Sum of squares: each row in kWarps / rows segments (one warp each), partial
            // sums added in a fixed order (deterministic).
            float* partial = rstd + kMaxRows;  // kWarps floats (R * segments <= kWarps)
            const int segments = rows.count >= kWarps ? 1 : kWarps / rows.count;
            const int per_segment = ceil_div(kChunks, segments);
            for (int item = warp_id(); item < rows.count * segments; item += kWarps) {
                const int r = item / segments;
                const int end = cmin(kChunks, (item % segments + 1) * per_segment);
                float ss = 0.f;
                for (int c = (item % segments) * per_segment + lane_id(); c < end; c += 32) {
                    float f[8];
                    load8(xs + r * K + c * 8, f);
#pragma unroll
                    for (int e = 0; e < 8; ++e) ss += f[e] * f[e];
                }
                ss = warp_sum(ss);
                if (lane_id() == 0) {
                    if (segments == 1) {
                        rstd[r] = rsqrtf(ss / K + args.eps);
                    } else {
                        partial[item] = ss;
                    }
                }
            }
            cp_async_wait<0>();  // the norm weight
            __syncthreads();
            if (segments > 1 && threadIdx.x < rows.count) {
                float ss = 0.f;
                for (int s = 0; s < segments; ++s) ss += partial[threadIdx.x * segments + s];
                rstd[threadIdx.x] = rsqrtf(ss / K + args.eps);
            }
            __syncthreads();
            for (int i = threadIdx.x; i < rows.count * kChunks; i += kThreads) {
                const int r = i / kChunks;
                const int k = (i % kChunks) * 8;
                float f[8], g[8];
                load8(xs + r * K + k, f);
                load8(gs + k, g);
#pragma unroll
                for (int e = 0; e < 8; ++e) f[e] = round_bf16(g[e] * round_bf16(f[e] * rstd[r]));
                store8(xs + r * K + k, f);
            }
            __syncthreads();
        }
    }

  private:
    /// Each warp takes kCols output features per pass (feature()), its weight loads in
    /// flight a batch at a time (the first batch was issued before the wait), dot products
    /// against the R staged rows, warp reduction.
    template <int R>
    __device__ static void dot_rows(const Args& args, RowTile rows, int n0, int valid_n,
                                    const bf16* xs, uint4 (&wv)[kBatch]) {
        const int lane = lane_id();
#pragma unroll 1
        for (int pass = 0; pass * kPassN < valid_n; ++pass) {
            float acc[kCols][R];
#pragma unroll
            for (int c = 0; c < kCols; ++c)
#pragma unroll
                for (int r = 0; r < R; ++r) acc[c][r] = 0.f;
#pragma unroll 1
            for (int base = 0; base < kIters; base += kLoads) {
                if (pass > 0 || base > 0 || !tuning::kGemvEarly)
                    load_batch(args, n0, valid_n, pass, base, wv);
#pragma unroll
                for (int u = 0; u < kLoads; ++u) {
                    const int k = (base + u) * 256 + lane * 8;
                    if (k >= K) continue;
#pragma unroll
                    for (int r = 0; r < R; ++r) {
                        if (r < rows.count) {
                            const uint4 xv = *reinterpret_cast<const uint4*>(xs + r * K + k);
#pragma unroll
                            for (int c = 0; c < kCols; ++c) acc[c][r] += dot8(wv[c * kLoads + u], xv);
                        }
                    }
                }
            }
#pragma unroll
            for (int c = 0; c < kCols; ++c) {
                const int n = feature(pass, c);
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    if (r < rows.count) {
                        const float total = warp_sum(acc[c][r]);
                        if (lane == 0 && n < valid_n) {
                            const long long o = static_cast<long long>(rows.begin + r) * args.n + n0 + n;
                            if constexpr (kResidual) {
                                args.out[o] = to_out(to_float(args.residual[o]) + round_bf16(total));
                            } else {
                                args.out[o] = to_out(total);
                            }
                        }
                    }
                }
            }
        }
    }

    __device__ static OutT to_out(float v) {
        if constexpr (sizeof(OutT) == 4) {
            return v;
        } else {
            return to_bf16(v);
        }
    }
};

}  // namespace ek
