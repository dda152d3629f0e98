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
  static V permute(V v, const int32_t* idx) {
    return _mm256_permutevar8x32_ps(v, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx)));
  }
};

template <>
struct Vec<double> {
  using T = double;
  using V = __m256d;
  using Mask = __m256i;
  static constexpr int kLanes = 4;
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
  static V permute(V v, const int32_t* idx) {
    const __m256i i = _mm256_slli_epi64(
        _mm256_cvtepu32_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(idx))), 1);
    const __m256i pairs =
        _mm256_or_si256(i, _mm256_slli_epi64(_mm256_add_epi64(i, _mm256_set1_epi64x(1)), 32));
    return _mm256_castps_pd(_mm256_permutevar8x32_ps(_mm256_castpd_ps(v), pairs));
  }
};

}  // namespace convcore::kernels::avx2
