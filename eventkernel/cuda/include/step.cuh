/**
 * @file step.cuh
 * @brief StepShape: the dynamic shape of one step (token count, sequences, paged-KV
 *        metadata), read from device memory so one compiled kernel serves every shape;
 *        and the row tiles derived from it.
 *
 * Byte layout (64-bit host, what the host must write):
 *   0 num_tokens (i32)   4 num_seqs (i32)      8 tokens        16 positions
 *  24 query_start       32 context_lens       40 block_table   48 max_pages_per_seq (i32)
 *  56 slot_mapping      64 logits_indices     size 72
 */
#pragma once

#include "common/config.cuh"

namespace ek {

struct StepShape {
    int num_tokens;               ///< T: token rows this step
    int num_seqs;                 ///< S: sequences this step
    const int* tokens;            ///< [T] token ids
    const int* positions;         ///< [T] absolute positions
    const int* query_start;       ///< [S + 1] first token row of each sequence
    const int* context_lens;      ///< [S] keys per sequence, new tokens included
    const int* block_table;       ///< [S, max_pages_per_seq] page ids
    int max_pages_per_seq;
    const int* slot_mapping;      ///< [T] KV slot (page * page_size + offset); < 0: no write
    const int* logits_indices;    ///< [S] token row whose logits each sequence needs
};

static_assert(sizeof(void*) != 8 || sizeof(StepShape) == 72, "StepShape layout changed");

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
