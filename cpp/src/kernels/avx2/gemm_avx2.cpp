// AVX2 + FMA (ymm) microkernels, compiled with -mavx2 -mfma.
// 6 rows × 2 vectors = 12 accumulators: the classic Haswell-class tile (16 ymm registers:
// 12 accumulators, 2 B vectors, 1 broadcast).
#include <immintrin.h>

#include "../kernels.hpp"

namespace convcore::kernels {
namespace {

// The few ymm operations the kernel needs, per element type. Edge tiles use maskload /
// maskstore with an integer lane mask (masked-off lanes are never touched).
template <typename T>
struct Ymm;

template <>
struct Ymm<float> {
  using V = __m256;
  static constexpr int kLanes = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static V load(const float* p) { return _mm256_load_ps(p); }
  static V loadu(const float* p) { return _mm256_loadu_ps(p); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static void storeu(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V maskload(const float* p, __m256i m) { return _mm256_maskload_ps(p, m); }
  static void maskstore(float* p, __m256i m, V v) { _mm256_maskstore_ps(p, m, v); }
  static __m256i mask(int64_t count) {
    alignas(32) static const int table[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                              0,  0,  0,  0,  0,  0,  0,  0};
    count = count > 8 ? 8 : (count < 0 ? 0 : count);
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(table + 8 - count));
  }
};

template <>
struct Ymm<double> {
  using V = __m256d;
  static constexpr int kLanes = 4;
  static V zero() { return _mm256_setzero_pd(); }
  static V broadcast(const double* p) { return _mm256_broadcast_sd(p); }
  static V load(const double* p) { return _mm256_load_pd(p); }
  static V loadu(const double* p) { return _mm256_loadu_pd(p); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static V add(V a, V b) { return _mm256_add_pd(a, b); }
  static void storeu(double* p, V v) { _mm256_storeu_pd(p, v); }
  static V maskload(const double* p, __m256i m) { return _mm256_maskload_pd(p, m); }
  static void maskstore(double* p, __m256i m, V v) { _mm256_maskstore_pd(p, m, v); }
  static __m256i mask(int64_t count) {
    alignas(32) static const long long table[8] = {-1, -1, -1, -1, 0, 0, 0, 0};
    count = count > 4 ? 4 : (count < 0 ? 0 : count);
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(table + 4 - count));
  }
};

// Where the operands come from (kernels.hpp): both packed, B through an offset table, or
// A through row pointers.
enum class Operands { kPacked, kOffsetB, kIndirectA };

template <typename T, int MR, int NV, Operands kOps>
void gemm_ukernel_avx2(int64_t kc, const T* __restrict a, const T* const* a_rows,
                         const T* __restrict b,
                       const int64_t* __restrict b_off, T* __restrict c, int64_t ldc, int64_t m,
                       int64_t n, bool accumulate) {
  using Y = Ymm<T>;
  using V = typename Y::V;
  constexpr int L = Y::kLanes;
  constexpr int NR = L * NV;
  V acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = Y::zero();
#pragma GCC unroll 2
  for (int64_t p = 0; p < kc; ++p) {
    V bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      bv[v] = kOps == Operands::kOffsetB ? Y::loadu(b + b_off[p] + v * L) : Y::load(b + v * L);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const V ai = Y::broadcast(kOps == Operands::kIndirectA ? a_rows[i] + p : a + i);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = Y::fmadd(ai, bv[v], acc[i][v]);
    }
    if (kOps != Operands::kIndirectA) a += MR;
    if (kOps != Operands::kOffsetB) b += NR;
  }
  if (m == MR && n == NR) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      T* ci = c + i * ldc;
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        V r = acc[i][v];
        if (accumulate) r = Y::add(Y::loadu(ci + v * L), r);
        Y::storeu(ci + v * L, r);
      }
    }
    return;
  }
  __m256i mask[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) mask[v] = Y::mask(n - v * L);
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    if (i >= m) break;
    T* ci = c + i * ldc;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      V r = acc[i][v];
      if (accumulate) r = Y::add(Y::maskload(ci + v * L, mask[v]), r);
      Y::maskstore(ci + v * L, mask[v], r);
    }
  }
}

template <typename T, int MR, int NV>
void packed_b(int64_t kc, const T* a, const T* b, T* c, int64_t ldc, int64_t m, int64_t n,
              bool accumulate) {
  gemm_ukernel_avx2<T, MR, NV, Operands::kPacked>(kc, a, nullptr, b, nullptr, c, ldc, m, n,
                                                   accumulate);
}
template <typename T, int MR, int NV>
void offset_b(int64_t kc, const T* a, const T* b, const int64_t* b_off, T* c, int64_t ldc,
              int64_t m, int64_t n, bool accumulate) {
  gemm_ukernel_avx2<T, MR, NV, Operands::kOffsetB>(kc, a, nullptr, b, b_off, c, ldc, m, n,
                                                     accumulate);
}
template <typename T, int MR, int NV>
void indirect_a(int64_t kc, const T* const* a_rows, const T* b, T* c, int64_t ldc, int64_t m,
                int64_t n, bool accumulate) {
  gemm_ukernel_avx2<T, MR, NV, Operands::kIndirectA>(kc, nullptr, a_rows, b, nullptr, c, ldc, m,
                                                       n, accumulate);
}

}  // namespace

GemmUkernel<float> f32_gemm_ukernel_avx2() {
  return {&packed_b<float, 6, 2>, &offset_b<float, 6, 2>, &indirect_a<float, 6, 2>, 6, 16, "f32_gemm_ukernel_6x16__avx2_fma"};
}
GemmUkernel<double> f64_gemm_ukernel_avx2() {
  return {&packed_b<double, 6, 2>, &offset_b<double, 6, 2>, &indirect_a<double, 6, 2>, 6, 8, "f64_gemm_ukernel_6x8__avx2_fma"};
}

}  // namespace convcore::kernels
