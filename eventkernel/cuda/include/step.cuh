/**
 * @file step.cuh
 * @brief The row tiles of a step: which rows of StepShape (the dynamic shape of one step,
 *        declared in wire.cuh from eventkernel/cuda/wire.py and read from device memory so
 *        one compiled kernel serves every shape) a row-tiled task covers.
 */
#pragma once

#include "common/config.cuh"

namespace ek {

/// Which row count a row-tiled task covers: token rows (T) or per-sequence rows (S, e.g.
/// the gathered last-token rows that feed the LM head and argmax).
enum class RowSet : int { kTokens = 0, kSeqs = 1 };

__device__ __forceinline__ int num_rows(const StepShape& shape, RowSet rows) {
    return rows == RowSet::kTokens ? shape.num_tokens : shape.num_seqs;
}

/// Rows [begin, begin + count) of row tile `tile`; count is 0 past the end.
struct RowTile {
    int begin;
    int count;
};

/// `tile_rows`: rows per tile, for tasks tiled other than by the program's kRowTile.
__device__ __forceinline__ RowTile row_tile(const StepShape& shape, RowSet rows, int tile,
                                            int tile_rows = kRowTile) {
    const int total = num_rows(shape, rows);
    const int begin = tile * tile_rows;
    int count = total - begin;
    count = count < 0 ? 0 : (count > tile_rows ? tile_rows : count);
    return RowTile{begin, count};
}

}  // namespace ek
