/**
 * @file mma.cuh
 * @brief Tensor-core fragments: mma.sync m16n8k16 bf16 x bf16 -> fp32 and the ldmatrix
 *        loads that feed it from shared memory.
 *
 * Fragment layout (lane l, g = l / 4, q = l % 4):
 *   A (16x16, row-major):  a0 = A[g][2q..2q+1],   a1 = A[g+8][2q..],  a2 = A[g][8+2q..],
 *                          a3 = A[g+8][8+2q..]
 *   B (16x8, "col"):       b0 = B[2q..2q+1][g],   b1 = B[8+2q..][g]
 *   C (16x8, fp32):        c0,c1 = C[g][2q..2q+1], c2,c3 = C[g+8][2q..2q+1]
 */
#pragma once

namespace ek {

/// Shared-memory address of a generic pointer into shared memory.
__device__ __forceinline__ unsigned smem_addr(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

/// d += a * b on tensor cores (bf16 inputs, fp32 accumulators).
__device__ __forceinline__ void mma_bf16(float (&d)[4], const unsigned (&a)[4], unsigned b0,
                                         unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/// Four 8x8 b16 matrices; lane l supplies the row address of matrix l / 8, row l % 8.
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const void* row_ptr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(row_ptr)));
}

/// As ldmatrix_x4, each matrix transposed on the way (for a row-major B operand).
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], const void* row_ptr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(row_ptr)));
}

/// Two 8x8 b16 matrices; lanes 0-15 supply the row addresses.
__device__ __forceinline__ void ldmatrix_x2(unsigned& r0, unsigned& r1, const void* row_ptr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r0), "=r"(r1)
                 : "r"(smem_addr(row_ptr)));
}

}  // namespace ek
