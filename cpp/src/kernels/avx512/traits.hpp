// AVX-512F vector traits (zmm) for the kernel families. Included only by this folder's
// target TU, compiled with -mavx512f (see gemm_family.inl for the interface).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace convcore::kernels::avx512 {

template <typename T>
struct Vec;

template <>
struct Vec<float> {
  using T = float;
  using V = __m512;
  using Mask = __mmask16;
  static constexpr int kLanes = 16;
  // k-masked stores: one instruction, as fast as a plain store
  static constexpr bool kCheapMaskedStore = true;
  static V zero() { return _mm512_setzero_ps(); }
  static V broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static V load(const float* p) { return _mm512_load_ps(p); }
  static V loadu(const float* p) { return _mm512_loadu_ps(p); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  // a > b ? a : b per lane (b where either is NaN): max(zero(), x) is ReLU keeping NaN.
  static V max(V a, V b) { return _mm512_maskz_max_ps(static_cast<__mmask16>(0xFFFF), a, b); }
  static void storeu(float* p, V v) { _mm512_storeu_ps(p, v); }
  static Mask mask(int64_t count) {
    if (count >= kLanes) return static_cast<Mask>(0xFFFFu);
    if (count <= 0) return 0;
    return static_cast<Mask>((1u << count) - 1u);
  }
  static V load_masked(const float* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
  static void store_masked(float* p, Mask m, V v) { _mm512_mask_storeu_ps(p, m, v); }
  // Lanes [lo, hi) on (clamped to [0, kLanes]).
  static Mask mask_range(int64_t lo, int64_t hi) {
    return static_cast<Mask>(mask(hi) & static_cast<Mask>(~mask(lo)));
  }
  // Lanes on: a·b + c; lanes off: c unchanged (a and b there are never combined).
  static V fmadd_masked(V a, V b, V c, Mask m) { return _mm512_mask3_fmadd_ps(a, b, c, m); }
  // 0 where v < 0 (an ordered compare: NaN is kept), v elsewhere.
  // Lane l of the result = lane idx[l] of v (idx: kLanes int32 in [0, kLanes)).
  // even = lanes 0, 2, 4, … of the 2·kLanes values a then b; odd = lanes 1, 3, 5, ….
  static void deinterleave2(V a, V b, V& even, V& odd) {
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    even = _mm512_permutex2var_ps(a, ie, b);
    odd = _mm512_permutex2var_ps(a, io, b);
  }
  // select(lanes(bits), a, b): lane l from b where bit l of bits is set, else from a.
  using Lanes = Mask;
  static Lanes lanes(uint32_t bits) { return static_cast<Mask>(bits); }
  static V select(Lanes m, V a, V b) { return _mm512_mask_blend_ps(m, a, b); }
  static V permute(V v, const int32_t* idx) {
    // (the zero-masked forms: GCC 12's unmasked ones read an undefined source operand)
    return _mm512_maskz_permutexvar_ps(static_cast<__mmask16>(0xFFFF), _mm512_loadu_si512(idx), v);
  }
  static V relu(V v) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, zero(), _CMP_LT_OQ), v, zero());
  }
  // r[i] lane j <- r[j] lane i (a 16×16 transpose: unpacks within 128-bit lanes, then two
  // rounds of 128-bit lane shuffles).
  [[gnu::always_inline]] static inline void transpose(V (&r)[kLanes]) {
    V t[16];
    #pragma GCC unroll 16
    for (int i = 0; i < 8; ++i) {
      t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    #pragma GCC unroll 16
    for (int i = 0; i < 4; ++i) {  // r[4i + m], 128-bit lane l: column 4l + m of rows 4i..4i+3
      const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
      const __m512d c = _mm512_castps_pd(t[4 * i + 1]), d = _mm512_castps_pd(t[4 * i + 3]);
      r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
      r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
      r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
      r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
    }
    #pragma GCC unroll 16
    for (int m = 0; m < 4; ++m) {
      t[m] = _mm512_shuffle_f32x4(r[m], r[4 + m], 0x88);
      t[4 + m] = _mm512_shuffle_f32x4(r[m], r[4 + m], 0xdd);
      t[8 + m] = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0x88);
      t[12 + m] = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0xdd);
    }
    #pragma GCC unroll 16
    for (int m = 0; m < 4; ++m) {
      r[m] = _mm512_shuffle_f32x4(t[m], t[8 + m], 0x88);
      r[8 + m] = _mm512_shuffle_f32x4(t[m], t[8 + m], 0xdd);
      r[4 + m] = _mm512_shuffle_f32x4(t[4 + m], t[12 + m], 0x88);
      r[12 + m] = _mm512_shuffle_f32x4(t[4 + m], t[12 + m], 0xdd);
    }
  }
};

template <>
struct Vec<double> {
  using T = double;
  using V = __m512d;
  using Mask = __mmask8;
  static constexpr int kLanes = 8;
  // k-masked stores: one instruction, as fast as a plain store
  static constexpr bool kCheapMaskedStore = true;
  static V zero() { return _mm512_setzero_pd(); }
  static V broadcast(const double* p) { return _mm512_set1_pd(*p); }
  static V load(const double* p) { return _mm512_load_pd(p); }
  static V loadu(const double* p) { return _mm512_loadu_pd(p); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static V add(V a, V b) { return _mm512_add_pd(a, b); }
  // a > b ? a : b per lane (b where either is NaN): max(zero(), x) is ReLU keeping NaN.
  static V max(V a, V b) { return _mm512_maskz_max_pd(static_cast<__mmask8>(0xFF), a, b); }
  static void storeu(double* p, V v) { _mm512_storeu_pd(p, v); }
  static Mask mask(int64_t count) {
    if (count >= kLanes) return static_cast<Mask>(0xFFu);
    if (count <= 0) return 0;
    return static_cast<Mask>((1u << count) - 1u);
  }
  static V load_masked(const double* p, Mask m) { return _mm512_maskz_loadu_pd(m, p); }
  static void store_masked(double* p, Mask m, V v) { _mm512_mask_storeu_pd(p, m, v); }
  // Lanes [lo, hi) on (clamped to [0, kLanes]).
  static Mask mask_range(int64_t lo, int64_t hi) {
    return static_cast<Mask>(mask(hi) & static_cast<Mask>(~mask(lo)));
  }
  // Lanes on: a·b + c; lanes off: c unchanged (a and b there are never combined).
  static V fmadd_masked(V a, V b, V c, Mask m) { return _mm512_mask3_fmadd_pd(a, b, c, m); }
  // 0 where v < 0 (an ordered compare: NaN is kept), v elsewhere.
  // Lane l of the result = lane idx[l] of v (idx: kLanes int32 in [0, kLanes)).
  // even = lanes 0, 2, 4, … of the 2·kLanes values a then b; odd = lanes 1, 3, 5, ….
  static void deinterleave2(V a, V b, V& even, V& odd) {
    const __m512i ie = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    const __m512i io = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
    even = _mm512_permutex2var_pd(a, ie, b);
    odd = _mm512_permutex2var_pd(a, io, b);
  }
  using Lanes = Mask;
  static Lanes lanes(uint32_t bits) { return static_cast<Mask>(bits); }
  static V select(Lanes m, V a, V b) { return _mm512_mask_blend_pd(m, a, b); }
  static V permute(V v, const int32_t* idx) {
    const __m512i i64 = _mm512_maskz_cvtepi32_epi64(
        static_cast<__mmask8>(0xFF), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx)));
    return _mm512_maskz_permutexvar_pd(static_cast<__mmask8>(0xFF), i64, v);
  }
  static V relu(V v) {
    return _mm512_mask_blend_pd(_mm512_cmp_pd_mask(v, zero(), _CMP_LT_OQ), v, zero());
  }
  // r[i] lane j <- r[j] lane i (an 8×8 transpose: unpacks, then two rounds of 128-bit lane
  // shuffles).
  [[gnu::always_inline]] static inline void transpose(V (&r)[kLanes]) {
    V t[8], u[8];
    #pragma GCC unroll 16
    for (int i = 0; i < 4; ++i) {  // t[2i]: columns 0, 2, 4, 6 of rows 2i, 2i+1; t[2i+1]: odd
      t[2 * i] = _mm512_unpacklo_pd(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm512_unpackhi_pd(r[2 * i], r[2 * i + 1]);
    }
    #pragma GCC unroll 16
    for (int o = 0; o < 2; ++o) {  // o = 1: the odd columns
      u[4 * o] = _mm512_shuffle_f64x2(t[o], t[2 + o], 0x88);      // c0 r01, c4 r01, c0 r23, c4 r23
      u[4 * o + 1] = _mm512_shuffle_f64x2(t[o], t[2 + o], 0xdd);  // c2 .., c6 ..
      u[4 * o + 2] = _mm512_shuffle_f64x2(t[4 + o], t[6 + o], 0x88);
      u[4 * o + 3] = _mm512_shuffle_f64x2(t[4 + o], t[6 + o], 0xdd);
      r[o] = _mm512_shuffle_f64x2(u[4 * o], u[4 * o + 2], 0x88);
      r[4 + o] = _mm512_shuffle_f64x2(u[4 * o], u[4 * o + 2], 0xdd);
      r[2 + o] = _mm512_shuffle_f64x2(u[4 * o + 1], u[4 * o + 3], 0x88);
      r[6 + o] = _mm512_shuffle_f64x2(u[4 * o + 1], u[4 * o + 3], 0xdd);
    }
  }
};

}  // namespace convcore::kernels::avx512
