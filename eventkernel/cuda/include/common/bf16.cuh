/**
 * @file bf16.cuh
 * @brief A storage-only bfloat16 type with round-to-nearest-even conversions through PTX,
 *        and 16-byte vector loads/stores of 8 elements (bf16 or fp32).
 *
 * NOTE: self-contained on purpose: NVRTC 13.0 does not bundle cuda_bf16.h, so the
 * templates must compile without any CUDA toolkit include directory. The layout is the
 * same as __nv_bfloat16 (2 bytes, the high half of an fp32).
 */
#pragma once

namespace ek {

/// bfloat16 in memory: the upper 16 bits of an IEEE fp32.
struct alignas(2) bf16 {
    unsigned short bits;
};

__device__ __forceinline__ float to_float(bf16 v) {
    return __uint_as_float(static_cast<unsigned>(v.bits) << 16);
}

__device__ __forceinline__ float to_float(float v) { return v; }

/// fp32 -> bf16, round to nearest even (the rounding torch uses for .to(bfloat16)).
__device__ __forceinline__ bf16 to_bf16(float f) {
    unsigned short r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f));
    return bf16{r};
}

/// Round an fp32 through bf16 and back (models a bf16 intermediate tensor).
__device__ __forceinline__ float round_bf16(float f) { return to_float(to_bf16(f)); }

/// Two fp32 -> one register holding {lo in bits 0-15, hi in bits 16-31}.
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

__device__ __forceinline__ float bf16x2_lo(unsigned v) { return __uint_as_float(v << 16); }
__device__ __forceinline__ float bf16x2_hi(unsigned v) { return __uint_as_float(v & 0xffff0000u); }

/// 8 bf16 packed in 16 bytes, as fp32.
__device__ __forceinline__ void unpack8(const uint4& v, float (&f)[8]) {
    const unsigned w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        f[2 * i] = bf16x2_lo(w[i]);
        f[2 * i + 1] = bf16x2_hi(w[i]);
    }
}

/// Load 8 consecutive bf16 (16 bytes, 16-byte aligned) as fp32.
__device__ __forceinline__ void load8(const bf16* p, float (&f)[8]) {
    unpack8(*reinterpret_cast<const uint4*>(p), f);
}

/// Load 8 consecutive fp32 (32 bytes, 16-byte aligned).
__device__ __forceinline__ void load8(const float* p, float (&f)[8]) {
    const float4 a = *reinterpret_cast<const float4*>(p);
    const float4 b = *reinterpret_cast<const float4*>(p + 4);
    f[0] = a.x; f[1] = a.y; f[2] = a.z; f[3] = a.w;
    f[4] = b.x; f[5] = b.y; f[6] = b.z; f[7] = b.w;
}

/// Dot product of 8 bf16 weights and 8 bf16 activations (16 bytes each), in fp32.
__device__ __forceinline__ float dot8(const uint4& w, const uint4& x) {
    float s = bf16x2_lo(w.x) * bf16x2_lo(x.x);
    s += bf16x2_hi(w.x) * bf16x2_hi(x.x);
    s += bf16x2_lo(w.y) * bf16x2_lo(x.y);
    s += bf16x2_hi(w.y) * bf16x2_hi(x.y);
    s += bf16x2_lo(w.z) * bf16x2_lo(x.z);
    s += bf16x2_hi(w.z) * bf16x2_hi(x.z);
    s += bf16x2_lo(w.w) * bf16x2_lo(x.w);
    s += bf16x2_hi(w.w) * bf16x2_hi(x.w);
    return s;
}

/// Store 8 fp32 as 8 consecutive bf16 (one 16-byte store).
__device__ __forceinline__ void store8(bf16* p, const float (&f)[8]) {
    uint4 v;
    v.x = pack_bf16x2(f[0], f[1]);
    v.y = pack_bf16x2(f[2], f[3]);
    v.z = pack_bf16x2(f[4], f[5]);
    v.w = pack_bf16x2(f[6], f[7]);
    *reinterpret_cast<uint4*>(p) = v;
}

/// Store 8 consecutive fp32 (two 16-byte stores).
__device__ __forceinline__ void store8(float* p, const float (&f)[8]) {
    *reinterpret_cast<float4*>(p) = make_float4(f[0], f[1], f[2], f[3]);
    *reinterpret_cast<float4*>(p + 4) = make_float4(f[4], f[5], f[6], f[7]);
}

/// Copy 8 bf16 (16 bytes) without conversion.
__device__ __forceinline__ void copy8(bf16* dst, const bf16* src) {
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
}

/// MLP gating as Hugging Face rounds it: bf16(bf16(silu(gate)) * up).
__device__ __forceinline__ float silu_gate(float gate, float up) {
    return round_bf16(round_bf16(gate / (1.f + __expf(-gate))) * up);
}

/// silu_gate of 8 columns, in place on the gate values.
__device__ __forceinline__ void silu_gate8(float (&gate)[8], const uint4& up) {
    float u[8];
    unpack8(up, u);
#pragma unroll
    for (int e = 0; e < 8; ++e) gate[e] = silu_gate(gate[e], u[e]);
}

/// silu_gate of 8 columns read from memory.
__device__ __forceinline__ void silu_gate8(const bf16* gate, const bf16* up, float (&f)[8]) {
    load8(gate, f);
    silu_gate8(f, *reinterpret_cast<const uint4*>(up));
}

}  // namespace ek
