/**
 * @file gemv_mma.cuh
 * @brief GemvMmaTask: the decode linear on tensor cores, for steps of a few token rows.
 *        Steps of tuning::kMmaGemvMinRows (default 2) to tuning::kMmaGemvGroups x kMaxRows
 *        rows come here; 0 keeps it out of the kernel. Weights go from global memory straight
 *        into registers with 16-byte loads, as in GemvTask, and feed mma.sync m16n8k16 as the A
 *        operand; the activations, staged in shared memory by GemvTask's staging (fused
 *        RMSNorm or gating), are the B operand, 8 tokens per n-tile. GemvTask spends a
 *        CUDA-core FMA per weight element and row, so it is compute-bound from a few rows
 *        on (16 rows: 0.22x torch.compile on an H200); here a 32-column step of 16 weight
 *        rows costs two mma per n-tile.
 *
 * Direct input (kDirect): a plain input (no RMSNorm, no gating) whose 16 rows do not fit
 * staged (GemvTask::kMaxRows < 16: K > 5120, e.g. the MLP down projection of 8B models)
 * is not staged; the B fragments are read straight from global memory (16-byte coherent
 * loads after the event wait, whose acquire invalidates L1, as for the staging; not
 * ld.global.nc: other tasks of the launch write the rows), so steps of up to 16 rows stay
 * here instead of falling back to LinearTask.
 *
 * K order: lane (g = lane / 4, t = lane % 4) loads W[row g][k0 + 8t, +8) and
 * W[row g + 8][k0 + 8t, +8) for each 32-column step k0. The mma's k index is permuted so
 * that these 8 contiguous columns are what the A fragment expects (its columns 2t, 2t+1,
 * 2t+8, 2t+9 are k0 + 8t + 0..3 in the first mma and k0 + 8t + 4..7 in the second), and
 * the B fragment reads x[token][k0 + 8t, +8) with the same permutation; a dot product
 * does not depend on the order of k.
 *
 * Work: the TN / 16 row tiles of a task times kSplit ranges of K cover the 8 warps; the
 * split partials are added in shared memory (where the rows were staged, or at its start
 * in direct mode) in a fixed order (deterministic).
 *
 * Row groups: a step of more than kMaxRows rows (up to a 64-row tile) runs kMaxRows rows at
 * a time, staging each group in turn; the weight tile comes from HBM for the first group and
 * from L2 for the others. On an H200 at 64 tokens per step this is 4-5 % faster than
 * LinearTask (qwen3-8b 45.2 -> 43.3 ms, llama-3.2-1b 9.78 -> 9.25 ms, context 512), whose
 * 64-row tasks stream at a third of a one-token task's rate.
 *
 * Task coordinates: c0 = row tile, c1 = output-column tile (n0 = c1 * TN), c2 unused.
 */
#pragma once

#include "../common/common.cuh"
#include "../common/mma.cuh"
#include "../step.cuh"
#include "gemv.cuh"

// Tuning (eventkernel.cuda.tuning): tuning::kMmaGemvMinRows (0: off; N: steps of N..
// rows take GemvMmaTask), tuning::kMmaGemvBatch (32-column steps in flight per warp, two
// 16-byte loads each), tuning::kMmaGemvGroups (N: steps of up to N x kMaxRows rows,
// kMaxRows at a time, the weights from L2 after the first group; 1: LinearTask takes the
// steps of more than kMaxRows rows), tuning::kMmaGemvEarly (the first weight batch flies
// during the event wait; spills).

static_assert(!(ek::tuning::kMmaGemvEarly && ek::tuning::kMmaGemvGroups > 1),
              "tuning::kMmaGemvEarly loads one group's first batch: use it with one group");

namespace ek {

template <int K, int TN, typename OutT, bool kFuseNorm, bool kResidual,
          RowSet kRows = RowSet::kTokens, bool kGated = false>
struct GemvMmaTask {
    using Gemv = GemvTask<K, TN, OutT, kFuseNorm, kResidual, kRows, kGated>;
    using Args = typename Gemv::Args;
    using OutType = OutT;
    /// The B fragments read the input rows from global memory, unstaged (see the top).
    static constexpr bool kDirect = !kFuseNorm && !kGated && Gemv::kMaxRows < 16;
    static constexpr int kMaxRows = kDirect ? 16 : cmin(Gemv::kMaxRows, 16);  // two n-tiles at most
    static constexpr int kRowTiles = TN / 16;
    static constexpr int kSplit = kRowTiles >= kWarps ? 1 : kWarps / kRowTiles;  // warps per tile
    /// Shapes this path takes: whole 32-column steps, 16-row tiles, and (split K) room for
    /// the partials [warp][16 rows][16 tokens] where the rows were staged (small K: no;
    /// direct mode: K > 5120, always room).
    static constexpr bool kSupported =
        K % 32 == 0 && TN % 16 == 0 && (kSplit == 1 || Gemv::kRstdOffset >= kWarps * 16 * 16 * 4);
    static constexpr int kSteps = K / 32;       // 32-column steps along K
    /// Steps whose loads fly together (no more than a warp's K range has: small K, fewer
    /// registers).
    static constexpr int kBatch = cmin(tuning::kMmaGemvBatch, (kSteps + kSplit - 1) / kSplit);
    /// GemvTask's layout; the split partials reuse the staged rows' space at the end.
    static constexpr int kSmemBytes = Gemv::kSmemBytes;
    static constexpr bool kWaitsInRun = true;

    __device__ static bool handles(const StepShape& shape) {
        const int rows = num_rows(shape, kRows);
        return kSupported && tuning::kMmaGemvMinRows > 0 && rows >= tuning::kMmaGemvMinRows &&
               rows <= kMaxRows * tuning::kMmaGemvGroups;
    }

    __device__ static bool active(const StepShape& shape, int c0, int, int) {
        return row_tile(shape, kRows, c0).count > 0;
    }

    __device__ static void l2_prefetch(const Args& args, int c0, int c1, int c2) {
        Gemv::l2_prefetch(args, c0, c1, c2);
    }

    __device__ static void prefetch(const Args&, int, int, int, char*) {}

    /// The task alone (no events to wait for).
    __device__ static void run(const Args& args, const StepShape& shape, int c0, int c1, int c2,
                               char* smem) {
        run(args, shape, c0, c1, c2, smem, true, [] { return true; });
    }

    /// As GemvTask's: the first weight batch and the RMSNorm weight are requested before
    /// ``wait()``, which is called exactly once by all threads; returns its result.
    template <class Wait>
    __device__ static bool run(const Args& args, const StepShape& shape, int c0, int c1, int,
                               char* smem, bool active, Wait&& wait) {
        const RowTile rows = row_tile(shape, kRows, c0);
        const int n0 = c1 * TN;
        const int valid_n = cmin(TN, args.n - n0);
        if constexpr (!kSupported) {
            return wait();
        } else {
            if (!active || rows.count == 0 || valid_n <= 0) return wait();
            const typename Gemv::Staging st = Gemv::begin_staging(args, smem);
            const int first_tile = kSplit > 1 ? warp_id() / kSplit : warp_id();
            const int split = kSplit > 1 ? warp_id() % kSplit : 0;
            const int s0 = split * kSteps / kSplit;
            const int s1 = (split + 1) * kSteps / kSplit;
            uint4 wv[2 * kBatch];
            if (tuning::kMmaGemvEarly && first_tile < kRowTiles)
                load_batch(args, n0, valid_n, first_tile, s0, s1, wv);
            if (!wait()) return Gemv::abandon_staging();
#pragma unroll 1
            for (int r0 = 0; r0 < rows.count; r0 += kMaxRows) {
                const RowTile group{rows.begin + r0, cmin(kMaxRows, rows.count - r0)};
                const bf16* xs;  // the B operand's rows, K elements apart
                if constexpr (kDirect) {
                    xs = args.input + static_cast<long long>(group.begin) * K;
                } else {
                    Gemv::stage(args, group, st);
                    xs = st.xs;
                }
                // NOTE: one loop per n-tile count; the other stays out of the instruction
                // cache.
                if (group.count <= 8) {
                    tiles<1>(args, group, n0, valid_n, first_tile, s0, s1, xs, smem, wv);
                } else {
                    tiles<2>(args, group, n0, valid_n, first_tile, s0, s1, xs, smem, wv);
                }
                __syncthreads();  // smem is free for the next group or task
            }
            return true;
        }
    }

  private:
    /// Issue the loads of steps [s, min(s + kBatch, s1)) of row tile ``tile``: rows g and
    /// g + 8 of the tile, 8 columns each; zeros past the tile's valid rows or the range.
    __device__ static void load_batch(const Args& args, int n0, int valid_n, int tile, int s,
                                      int s1, uint4 (&wv)[2 * kBatch]) {
        const int g = lane_id() >> 2;
        const int t = lane_id() & 3;
        const int r0 = tile * 16 + g;
        const bf16* w0 = args.weight + static_cast<long long>(n0 + r0) * K + 8 * t;
        const bf16* w1 = w0 + 8ll * K;
        const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
            const bool in = s + u < s1;
            wv[2 * u] = in && r0 < valid_n ? ld_nc_v4(w0 + (s + u) * 32) : zero;
            wv[2 * u + 1] = in && r0 + 8 < valid_n ? ld_nc_v4(w1 + (s + u) * 32) : zero;
        }
    }

    /// This warp's row tiles (one when kSplit > 1), NT n-tiles of 8 tokens each, and their
    /// outputs. ``wv`` holds the first batch of the first tile already.
    template <int NT>
    __device__ static void tiles(const Args& args, RowTile rows, int n0, int valid_n,
                                 int first_tile, int s0, int s1, const bf16* xs, char* smem,
                                 uint4 (&wv)[2 * kBatch]) {
        const int g = lane_id() >> 2;
        const int t = lane_id() & 3;
        float acc[NT][4];
        if constexpr (kSplit == 1) {
#pragma unroll 1
            for (int tile = first_tile; tile < kRowTiles; tile += kWarps) {
                accumulate<NT>(args, rows, n0, valid_n, tile, s0, s1, xs,
                               !tuning::kMmaGemvEarly || tile != first_tile, wv,
                               acc);
                // acc[nt][e] = C[row g (+8 for e >= 2)][token nt * 8 + 2t + (e & 1)]
#pragma unroll
                for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                    for (int e = 0; e < 4; ++e)
                        store(args, rows, n0, valid_n, tile * 16 + g + (e >= 2 ? 8 : 0),
                              nt * 8 + 2 * t + (e & 1), acc[nt][e]);
            }
        } else {
            accumulate<NT>(args, rows, n0, valid_n, first_tile, s0, s1, xs, !tuning::kMmaGemvEarly,
                           wv, acc);
            // The partials [warp][16 rows][16 tokens] replace the staged rows (direct mode:
            // none; the staging's space).
            static_assert(Gemv::kRstdOffset >= kWarps * 16 * 16 * 4,
                          "the split partials must fit where the rows were staged");
            float* part = reinterpret_cast<float*>(smem);
            __syncthreads();  // every warp is done with the staged rows
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e)
                    part[warp_id() * 256 + (g + (e >= 2 ? 8 : 0)) * 16 + nt * 8 + 2 * t + (e & 1)] =
                        acc[nt][e];
            __syncthreads();
            const int per_tile = 16 * rows.count;
            for (int i = threadIdx.x; i < kRowTiles * per_tile; i += kThreads) {
                const int tile = i / per_tile;
                const int r = (i % per_tile) / rows.count;
                const int tok = i % rows.count;
                float total = 0.f;
#pragma unroll
                for (int w = 0; w < kSplit; ++w) total += part[(tile * kSplit + w) * 256 + r * 16 + tok];
                store(args, rows, n0, valid_n, tile * 16 + r, tok, total);
            }
        }
    }

    /// acc = row tile ``tile`` x the rows at ``xs`` (staged, or global memory in direct
    /// mode) over steps [s0, s1); the first batch is issued here unless ``wv`` holds it
    /// already (``load_first`` false).
    template <int NT>
    __device__ static void accumulate(const Args& args, RowTile rows, int n0, int valid_n,
                                      int tile, int s0, int s1, const bf16* xs, bool load_first,
                                      uint4 (&wv)[2 * kBatch], float (&acc)[NT][4]) {
        const int g = lane_id() >> 2;
        const int t = lane_id() & 3;
        // Token rows of this lane's B fragments (past the step's rows: the last row, the
        // results of those columns are dropped).
        int xrow[NT];  // element offsets into xs (32-bit: fewer registers than pointers)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) xrow[nt] = cmin(nt * 8 + g, rows.count - 1) * K + 8 * t;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[nt][e] = 0.f;
#pragma unroll 1
        for (int s = s0; s < s1; s += kBatch) {
            if (s != s0 || load_first) load_batch(args, n0, valid_n, tile, s, s1, wv);
#pragma unroll
            for (int u = 0; u < kBatch; ++u) {
                if (s + u < s1) {
                    const uint4 p = wv[2 * u];
                    const uint4 q = wv[2 * u + 1];
                    const unsigned a_lo[4] = {p.x, q.x, p.y, q.y};
                    const unsigned a_hi[4] = {p.z, q.z, p.w, q.w};
#pragma unroll
                    for (int nt = 0; nt < NT; ++nt) {
                        const uint4 xv = *reinterpret_cast<const uint4*>(xs + xrow[nt] + (s + u) * 32);
                        mma_bf16(acc[nt], a_lo, xv.x, xv.y);
                        mma_bf16(acc[nt], a_hi, xv.z, xv.w);
                    }
                }
            }
        }
    }

    /// out[token, n0 + row] = total (bf16 outputs: bf16(residual + bf16(total))).
    __device__ static void store(const Args& args, RowTile rows, int n0, int valid_n, int row,
                                 int tok, float total) {
        if (row >= valid_n || tok >= rows.count) return;
        const long long o = static_cast<long long>(rows.begin + tok) * args.n + n0 + row;
        if constexpr (kResidual) {
            const float v = sizeof(OutT) == 2 ? round_bf16(total) : total;
            args.out[o] = to_out(to_float(args.residual[o]) + v);
        } else {
            args.out[o] = to_out(total);
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

/// The megakernel's CUDA-core GEMV: only the rows GemvMmaTask leaves to it (fewer than
/// tuning::kMmaGemvMinRows where it takes the shape; all of them elsewhere).
template <int K, int TN, typename OutT, bool kFuseNorm, bool kResidual,
          RowSet kRows = RowSet::kTokens, bool kGated = false>
using DecodeGemvTask = GemvTask<
    K, TN, OutT, kFuseNorm, kResidual, kRows, kGated,
    (GemvMmaTask<K, TN, OutT, kFuseNorm, kResidual, kRows, kGated>::kSupported &&
     tuning::kMmaGemvMinRows > 0)
        ? tuning::kMmaGemvMinRows - 1
        : 16>;

}  // namespace ek
