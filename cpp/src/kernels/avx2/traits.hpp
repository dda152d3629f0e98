// AVX2 + FMA vector traits (ymm) for the kernel families. Included only by this folder's
// target TU, compiled with -mavx2 -mfma (see gemm_family.inl for the interface). Edge
// tiles use maskload / maskstore with an integer lane mask (lanes off are never touched).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace convcore::kernels::avx2 {
namespace {

// Lane masks: `count` lanes on start at kMask*[lanes - count]. Internal linkage, so the
// tables are addressed directly rather than through the GOT.
alignas(32) constexpr int kMaskF32[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                          0,  0,  0,  0,  0,  0,  0,  0};
alignas(32) constexpr long long kMaskF64[8] = {-1, -1, -1, -1, 0, 0, 0, 0};

}  // namespace

template <typename T>
struct Vec;

template <>
struct Vec<float> {
  using T = float;
  using V = __m256;
  using Mask = __m256i;
  static constexpr int kLanes = 8;
  // vmaskmovps/pd stores are microcoded (many micro-ops) on AMD cores
  static constexpr bool kCheapMaskedStore = false;
  static V zero() { return _mm256_setzero_ps(); }
  static V broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static V load(const float* p) { return _mm256_load_ps(p); }
  static V loadu(const float* p) { return _mm256_loadu_ps(p); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  // a > b ? a : b per lane (b where either is NaN): max(zero(), x) is ReLU keeping NaN.
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static void storeu(float* p, V v) { _mm256_storeu_ps(p, v); }
  static Mask mask(int64_t count) {
    count = count > 8 ? 8 : (count < 0 ? 0 : count);
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskF32 + 8 - count));
  }
  static V load_masked(const float* p, Mask m) { return _mm256_maskload_ps(p, m); }
  static void store_masked(float* p, Mask m, V v) { _mm256_maskstore_ps(p, m, v); }
  // Lanes [lo, hi) on (clamped to [0, kLanes]).
  static Mask mask_range(int64_t lo, int64_t hi) { return _mm256_andnot_si256(mask(lo), mask(hi)); }
  // Lanes on: a·b + c; lanes off: c unchanged (the blend drops whatever a·b gave there).
  static V fmadd_masked(V a, V b, V c, Mask m) {
    return _mm256_blendv_ps(c, _mm256_fmadd_ps(a, b, c), _mm256_castsi256_ps(m));
  }
  // max(0, v): 0 for v < 0, v otherwise — NaN kept (vmax returns its second operand when
  // either is NaN).
  static V relu(V v) { return _mm256_max_ps(zero(), v); }
  // Lane l of the result = lane idx[l] of v (idx: kLanes int32 in [0, kLanes)).
  // even = lanes 0, 2, 4, … of the 2·kLanes values a then b; odd = lanes 1, 3, 5, ….
  static void deinterleave2(V a, V b, V& even, V& odd) {
    const __m256i split = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    const V pa = _mm256_permutevar8x32_ps(a, split), pb = _mm256_permutevar8x32_ps(b, split);
    even = _mm256_permute2f128_ps(pa, pb, 0x20);
    odd = _mm256_permute2f128_ps(pa, pb, 0x31);
  }
  // select(lanes(bits), a, b): lane l from b where bit l of bits is set, else from a.
  using Lanes = __m256;
  static Lanes lanes(uint32_t bits) {
    const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    return _mm256_castsi256_ps(
        _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(bits)), bit), bit));
  }
  static V select(Lanes m, V a, V b) { return _mm256_blendv_ps(a, b, m); }
  static V permute(V v, const int32_t* idx) {
    return _mm256_permutevar8x32_ps(v, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx)));
  }
  // r[i] lane j <- r[j] lane i (an 8×8 transpose: unpacks within 128-bit lanes, then the
  // lanes exchanged).
  [[gnu::always_inline]] static inline void transpose(V (&r)[kLanes]) {
    V t[8];
    #pragma GCC unroll 16
    for (int i = 0; i < 4; ++i) {
      t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    #pragma GCC unroll 16
    for (int i = 0; i < 2; ++i) {  // r[4i + m], 128-bit lane l: column 4l + m of rows 4i..4i+3
      const __m256d a = _mm256_castps_pd(t[4 * i]), b = _mm256_castps_pd(t[4 * i + 2]);
      const __m256d c = _mm256_castps_pd(t[4 * i + 1]), d = _mm256_castps_pd(t[4 * i + 3]);
      r[4 * i] = _mm256_castpd_ps(_mm256_unpacklo_pd(a, b));
      r[4 * i + 1] = _mm256_castpd_ps(_mm256_unpackhi_pd(a, b));
      r[4 * i + 2] = _mm256_castpd_ps(_mm256_unpacklo_pd(c, d));
      r[4 * i + 3] = _mm256_castpd_ps(_mm256_unpackhi_pd(c, d));
    }
    #pragma GCC unroll 16
    for (int m = 0; m < 4; ++m) {
      t[m] = _mm256_permute2f128_ps(r[m], r[4 + m], 0x20);
      t[4 + m] = _mm256_permute2f128_ps(r[m], r[4 + m], 0x31);
    }
    #pragma GCC unroll 16
    for (int i = 0; i < 8; ++i) r[i] = t[i];
  }
};

template <>
struct Vec<double> {
  using T = double;
  using V = __m256d;
  using Mask = __m256i;
  static constexpr int kLanes = 4;
  // vmaskmovps/pd stores are microcoded (many micro-ops) on AMD cores
  static constexpr bool kCheapMaskedStore = false;
  static V zero() { return _mm256_setzero_pd(); }
  static V broadcast(const double* p) { return _mm256_broadcast_sd(p); }
  static V load(const double* p) { return _mm256_load_pd(p); }
  static V loadu(const double* p) { return _mm256_loadu_pd(p); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static V add(V a, V b) { return _mm256_add_pd(a, b); }
  // a > b ? a : b per lane (b where either is NaN): max(zero(), x) is ReLU keeping NaN.
  static V max(V a, V b) { return _mm256_max_pd(a, b); }
  static void storeu(double* p, V v) { _mm256_storeu_pd(p, v); }
  static Mask mask(int64_t count) {
    count = count > 4 ? 4 : (count < 0 ? 0 : count);
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskF64 + 4 - count));
  }
  static V load_masked(const double* p, Mask m) { return _mm256_maskload_pd(p, m); }
  static void store_masked(double* p, Mask m, V v) { _mm256_maskstore_pd(p, m, v); }
  // Lanes [lo, hi) on (clamped to [0, kLanes]).
  static Mask mask_range(int64_t lo, int64_t hi) { return _mm256_andnot_si256(mask(lo), mask(hi)); }
  // Lanes on: a·b + c; lanes off: c unchanged (the blend drops whatever a·b gave there).
  static V fmadd_masked(V a, V b, V c, Mask m) {
    return _mm256_blendv_pd(c, _mm256_fmadd_pd(a, b, c), _mm256_castsi256_pd(m));
  }
  // max(0, v): 0 for v < 0, v otherwise — NaN kept (vmax returns its second operand when
  // either is NaN).
  static V relu(V v) { return _mm256_max_pd(zero(), v); }
  // Lane l of the result = lane idx[l] of v (idx: kLanes int32 in [0, kLanes)): a float
  // permute moving the two halves of each double (indices 2·idx, 2·idx + 1).
  // even = lanes 0, 2, 4, … of the 2·kLanes values a then b; odd = lanes 1, 3, 5, ….
  static void deinterleave2(V a, V b, V& even, V& odd) {
    even = _mm256_permute4x64_pd(_mm256_unpacklo_pd(a, b), 0xD8);
    odd = _mm256_permute4x64_pd(_mm256_unpackhi_pd(a, b), 0xD8);
  }
  using Lanes = __m256d;
  static Lanes lanes(uint32_t bits) {
    const __m256i bit = _mm256_setr_epi64x(1, 2, 4, 8);
    return _mm256_castsi256_pd(_mm256_cmpeq_epi64(
        _mm256_and_si256(_mm256_set1_epi64x(static_cast<int64_t>(bits)), bit), bit));
  }
  static V select(Lanes m, V a, V b) { return _mm256_blendv_pd(a, b, m); }
  static V permute(V v, const int32_t* idx) {
    const __m256i i = _mm256_slli_epi64(
        _mm256_cvtepu32_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(idx))), 1);
    const __m256i pairs =
        _mm256_or_si256(i, _mm256_slli_epi64(_mm256_add_epi64(i, _mm256_set1_epi64x(1)), 32));
    return _mm256_castps_pd(_mm256_permutevar8x32_ps(_mm256_castpd_ps(v), pairs));
  }
  // r[i] lane j <- r[j] lane i (a 4×4 transpose).
  [[gnu::always_inline]] static inline void transpose(V (&r)[kLanes]) {
    const V t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
    const V t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
    r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
    r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
    r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
    r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
  }
};

}  // namespace convcore::kernels::avx2
