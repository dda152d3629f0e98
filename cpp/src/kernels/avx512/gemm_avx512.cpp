// AVX-512 (zmm) microkernels. Compiled with -mavx512f only; reached through the dispatch
// table after CPUID and XGETBV confirm the CPU and the OS support the zmm state.
//
// Tile shape: MR rows broadcast from packed A times NR = 16·NV (fp32) or 8·NV (fp64)
// columns loaded from packed B, MR·NV zmm accumulators. With two FMA pipes of 4-cycle
// latency at least 8 independent accumulators are needed. 8×2 vectors was measured best
// on Zen 5 among 4×64, 6×64, 8×32, 8×48, 12×32, 14×32, 16×16 and 24×16 (fp32, GEMM and
// conv-shaped products): MR = 8 divides every common channel count, so conv tiles waste
// no rows, and NR = 32 keeps the padding waste small for small feature maps.
#include <immintrin.h>

#include "../kernels.hpp"

namespace convcore::kernels {
namespace {

inline __mmask16 tail_mask16(int64_t count) {
  if (count >= 16) return static_cast<__mmask16>(0xFFFF);
  if (count <= 0) return 0;
  return static_cast<__mmask16>((1u << count) - 1u);
}
inline __mmask8 tail_mask8(int64_t count) {
  if (count >= 8) return static_cast<__mmask8>(0xFF);
  if (count <= 0) return 0;
  return static_cast<__mmask8>((1u << count) - 1u);
}

// kOffsetB: B row p is read unaligned at b + b_off[p] (kernels.hpp) instead of b + p*NR.
template <int MR, int NV, bool kOffsetB>
void f32_gemm_ukernel_avx512_impl(int64_t kc, const float* __restrict a, const float* __restrict b,
                                  const int64_t* __restrict b_off, float* __restrict c,
                                  int64_t ldc, int64_t m, int64_t n, bool accumulate) {
  constexpr int NR = 16 * NV;
  __m512 acc[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();

#pragma GCC unroll 2
  for (int64_t p = 0; p < kc; ++p) {
    __m512 bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v)
      bv[v] = kOffsetB ? _mm512_loadu_ps(b + b_off[p] + v * 16) : _mm512_load_ps(b + v * 16);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
    }
    a += MR;
    if (!kOffsetB) b += NR;
  }

  if (m == MR && n == NR) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      float* ci = c + i * ldc;
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        __m512 r = acc[i][v];
        if (accumulate) r = _mm512_add_ps(_mm512_loadu_ps(ci + v * 16), r);
        _mm512_storeu_ps(ci + v * 16, r);
      }
    }
    return;
  }
  __mmask16 mask[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) mask[v] = tail_mask16(n - v * 16);
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
    if (i >= m) break;
    float* ci = c + i * ldc;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      __m512 r = acc[i][v];
      if (accumulate) r = _mm512_add_ps(_mm512_maskz_loadu_ps(mask[v], ci + v * 16), r);
      _mm512_mask_storeu_ps(ci + v * 16, mask[v], r);
    }
  }
}

// kOffsetB: B row p is read unaligned at b + b_off[p] (kernels.hpp) instead of b + p*NR.
template <int MR, int NV, bool kOffsetB>
void f64_gemm_ukernel_avx512_impl(int64_t kc, const double* __restrict a, const double* __restrict b,
                                  const int64_t* __restrict b_off, double* __restrict c,
                                  int64_t ldc, int64_t m, int64_t n, bool accumulate) {
  constexpr int NR = 8 * NV;
  __m512d acc[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_pd();

#pragma GCC unroll 2
  for (int64_t p = 0; p < kc; ++p) {
    __m512d bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v)
      bv[v] = kOffsetB ? _mm512_loadu_pd(b + b_off[p] + v * 8) : _mm512_load_pd(b + v * 8);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      const __m512d ai = _mm512_set1_pd(a[i]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_pd(ai, bv[v], acc[i][v]);
    }
    a += MR;
    if (!kOffsetB) b += NR;
  }

  if (m == MR && n == NR) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      double* ci = c + i * ldc;
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        __m512d r = acc[i][v];
        if (accumulate) r = _mm512_add_pd(_mm512_loadu_pd(ci + v * 8), r);
        _mm512_storeu_pd(ci + v * 8, r);
      }
    }
    return;
  }
  __mmask8 mask[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) mask[v] = tail_mask8(n - v * 8);
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
    if (i >= m) break;
    double* ci = c + i * ldc;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      __m512d r = acc[i][v];
      if (accumulate) r = _mm512_add_pd(_mm512_maskz_loadu_pd(mask[v], ci + v * 8), r);
      _mm512_mask_storeu_pd(ci + v * 8, mask[v], r);
    }
  }
}

template <int MR, int NV>
void f32_gemm_ukernel_avx512(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                             int64_t m, int64_t n, bool accumulate) {
  f32_gemm_ukernel_avx512_impl<MR, NV, false>(kc, a, b, nullptr, c, ldc, m, n, accumulate);
}
template <int MR, int NV>
void f32_gemm_ukernel_avx512_offset_b(int64_t kc, const float* a, const float* b,
                                      const int64_t* b_off, float* c, int64_t ldc, int64_t m,
                                      int64_t n, bool accumulate) {
  f32_gemm_ukernel_avx512_impl<MR, NV, true>(kc, a, b, b_off, c, ldc, m, n, accumulate);
}
template <int MR, int NV>
void f64_gemm_ukernel_avx512(int64_t kc, const double* a, const double* b, double* c, int64_t ldc,
                             int64_t m, int64_t n, bool accumulate) {
  f64_gemm_ukernel_avx512_impl<MR, NV, false>(kc, a, b, nullptr, c, ldc, m, n, accumulate);
}
template <int MR, int NV>
void f64_gemm_ukernel_avx512_offset_b(int64_t kc, const double* a, const double* b,
                                      const int64_t* b_off, double* c, int64_t ldc, int64_t m,
                                      int64_t n, bool accumulate) {
  f64_gemm_ukernel_avx512_impl<MR, NV, true>(kc, a, b, b_off, c, ldc, m, n, accumulate);
}

}  // namespace

GemmUkernel<float> f32_gemm_ukernel_avx512() {
  return {&f32_gemm_ukernel_avx512<8, 2>, &f32_gemm_ukernel_avx512_offset_b<8, 2>, 8, 32,
          "f32_gemm_ukernel_8x32__avx512f"};
}
GemmUkernel<double> f64_gemm_ukernel_avx512() {
  return {&f64_gemm_ukernel_avx512<8, 2>, &f64_gemm_ukernel_avx512_offset_b<8, 2>, 8, 16,
          "f64_gemm_ukernel_8x16__avx512f"};
}

}  // namespace convcore::kernels
