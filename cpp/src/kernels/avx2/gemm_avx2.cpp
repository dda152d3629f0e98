// AVX2 + FMA (ymm) microkernels, compiled with -mavx2 -mfma.
// 6 rows × 2 vectors = 12 accumulators: the classic Haswell-class tile (16 ymm registers:
// 12 accumulators, 2 B vectors, 1 broadcast).
#include <immintrin.h>

#include "../kernels.hpp"

namespace convcore::kernels {
namespace {

// Lane masks for partial ymm loads/stores: the first `count` lanes enabled.
inline __m256i tail_mask_epi32(int64_t count) {
  alignas(32) static const int table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  if (count > 8) count = 8;
  if (count < 0) count = 0;
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(table + 8 - count));
}
inline __m256i tail_mask_epi64(int64_t count) {
  alignas(32) static const long long table[8] = {-1, -1, -1, -1, 0, 0, 0, 0};
  if (count > 4) count = 4;
  if (count < 0) count = 0;
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(table + 4 - count));
}

// kOffsetB: B row p is read unaligned at b + b_off[p] (kernels.hpp) instead of b + p*NR.
template <int MR, int NV, bool kOffsetB>
void f32_gemm_ukernel_avx2_impl(int64_t kc, const float* __restrict a, const float* __restrict b,
                                const int64_t* __restrict b_off, float* __restrict c,
                                int64_t ldc, int64_t m, int64_t n, bool accumulate) {
  constexpr int NR = 8 * NV;
  __m256 acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_setzero_ps();
#pragma GCC unroll 2
  for (int64_t p = 0; p < kc; ++p) {
    __m256 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      bv[v] = kOffsetB ? _mm256_loadu_ps(b + b_off[p] + v * 8) : _mm256_load_ps(b + v * 8);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m256 ai = _mm256_broadcast_ss(a + i);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_fmadd_ps(ai, bv[v], acc[i][v]);
    }
    a += MR;
    if (!kOffsetB) b += NR;
  }
  if (m == MR && n == NR) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      float* ci = c + i * ldc;
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        __m256 r = acc[i][v];
        if (accumulate) r = _mm256_add_ps(_mm256_loadu_ps(ci + v * 8), r);
        _mm256_storeu_ps(ci + v * 8, r);
      }
    }
    return;
  }
  __m256i mask[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) mask[v] = tail_mask_epi32(n - v * 8);
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    if (i >= m) break;
    float* ci = c + i * ldc;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      __m256 r = acc[i][v];
      if (accumulate) r = _mm256_add_ps(_mm256_maskload_ps(ci + v * 8, mask[v]), r);
      _mm256_maskstore_ps(ci + v * 8, mask[v], r);
    }
  }
}

// kOffsetB: B row p is read unaligned at b + b_off[p] (kernels.hpp) instead of b + p*NR.
template <int MR, int NV, bool kOffsetB>
void f64_gemm_ukernel_avx2_impl(int64_t kc, const double* __restrict a, const double* __restrict b,
                                const int64_t* __restrict b_off, double* __restrict c,
                                int64_t ldc, int64_t m, int64_t n, bool accumulate) {
  constexpr int NR = 4 * NV;
  __m256d acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_setzero_pd();
#pragma GCC unroll 2
  for (int64_t p = 0; p < kc; ++p) {
    __m256d bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      bv[v] = kOffsetB ? _mm256_loadu_pd(b + b_off[p] + v * 4) : _mm256_load_pd(b + v * 4);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m256d ai = _mm256_broadcast_sd(a + i);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_fmadd_pd(ai, bv[v], acc[i][v]);
    }
    a += MR;
    if (!kOffsetB) b += NR;
  }
  if (m == MR && n == NR) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      double* ci = c + i * ldc;
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        __m256d r = acc[i][v];
        if (accumulate) r = _mm256_add_pd(_mm256_loadu_pd(ci + v * 4), r);
        _mm256_storeu_pd(ci + v * 4, r);
      }
    }
    return;
  }
  __m256i mask[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) mask[v] = tail_mask_epi64(n - v * 4);
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    if (i >= m) break;
    double* ci = c + i * ldc;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      __m256d r = acc[i][v];
      if (accumulate) r = _mm256_add_pd(_mm256_maskload_pd(ci + v * 4, mask[v]), r);
      _mm256_maskstore_pd(ci + v * 4, mask[v], r);
    }
  }
}

template <int MR, int NV>
void f32_gemm_ukernel_avx2(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                           int64_t m, int64_t n, bool accumulate) {
  f32_gemm_ukernel_avx2_impl<MR, NV, false>(kc, a, b, nullptr, c, ldc, m, n, accumulate);
}
template <int MR, int NV>
void f32_gemm_ukernel_avx2_offset_b(int64_t kc, const float* a, const float* b,
                                    const int64_t* b_off, float* c, int64_t ldc, int64_t m,
                                    int64_t n, bool accumulate) {
  f32_gemm_ukernel_avx2_impl<MR, NV, true>(kc, a, b, b_off, c, ldc, m, n, accumulate);
}
template <int MR, int NV>
void f64_gemm_ukernel_avx2(int64_t kc, const double* a, const double* b, double* c, int64_t ldc,
                           int64_t m, int64_t n, bool accumulate) {
  f64_gemm_ukernel_avx2_impl<MR, NV, false>(kc, a, b, nullptr, c, ldc, m, n, accumulate);
}
template <int MR, int NV>
void f64_gemm_ukernel_avx2_offset_b(int64_t kc, const double* a, const double* b,
                                    const int64_t* b_off, double* c, int64_t ldc, int64_t m,
                                    int64_t n, bool accumulate) {
  f64_gemm_ukernel_avx2_impl<MR, NV, true>(kc, a, b, b_off, c, ldc, m, n, accumulate);
}

}  // namespace

GemmUkernel<float> f32_gemm_ukernel_avx2() {
  return {&f32_gemm_ukernel_avx2<6, 2>, &f32_gemm_ukernel_avx2_offset_b<6, 2>, 6, 16,
          "f32_gemm_ukernel_6x16__avx2_fma"};
}
GemmUkernel<double> f64_gemm_ukernel_avx2() {
  return {&f64_gemm_ukernel_avx2<6, 2>, &f64_gemm_ukernel_avx2_offset_b<6, 2>, 6, 8,
          "f64_gemm_ukernel_6x8__avx2_fma"};
}

}  // namespace convcore::kernels
