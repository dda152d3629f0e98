// AVX-512 (zmm) microkernels. Compiled with -mavx512f only; reached through the dispatch
// table after CPUID and XGETBV confirm the CPU and the OS support the zmm state.
//
// Tile shape: MR rows broadcast from packed A times NR = NV vectors of B, MR·NV zmm
// accumulators. With two FMA pipes of 4-cycle latency at least 8 independent accumulators
// are needed. 8 rows × 2 vectors was measured best on Zen 5 among 4×64, 6×64, 8×32, 8×48,
// 12×32, 14×32, 16×16 and 24×16 (fp32, GEMM and conv-shaped products): MR = 8 divides every
// common channel count, so conv tiles waste no rows, and NR = 32 keeps the padding waste
// small for small feature maps.
#include <immintrin.h>

#include "../kernels.hpp"

namespace convcore::kernels {
namespace {

// The few zmm operations the kernel needs, per element type.
template <typename T>
struct Zmm;

template <>
struct Zmm<float> {
  using V = __m512;
  using Mask = __mmask16;
  static constexpr int kLanes = 16;
  static V zero() { return _mm512_setzero_ps(); }
  static V broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static V load(const float* p) { return _mm512_load_ps(p); }
  static V loadu(const float* p) { return _mm512_loadu_ps(p); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static void storeu(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V maskz_loadu(Mask m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
  static void mask_storeu(float* p, Mask m, V v) { _mm512_mask_storeu_ps(p, m, v); }
};

template <>
struct Zmm<double> {
  using V = __m512d;
  using Mask = __mmask8;
  static constexpr int kLanes = 8;
  static V zero() { return _mm512_setzero_pd(); }
  static V broadcast(const double* p) { return _mm512_set1_pd(*p); }
  static V load(const double* p) { return _mm512_load_pd(p); }
  static V loadu(const double* p) { return _mm512_loadu_pd(p); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static V add(V a, V b) { return _mm512_add_pd(a, b); }
  static void storeu(double* p, V v) { _mm512_storeu_pd(p, v); }
  static V maskz_loadu(Mask m, const double* p) { return _mm512_maskz_loadu_pd(m, p); }
  static void mask_storeu(double* p, Mask m, V v) { _mm512_mask_storeu_pd(p, m, v); }
};

// The first `count` lanes (clamped to [0, lanes]).
template <typename Mask, int kLanes>
inline Mask tail_mask(int64_t count) {
  if (count >= kLanes) return static_cast<Mask>((1u << kLanes) - 1u);
  if (count <= 0) return 0;
  return static_cast<Mask>((1u << count) - 1u);
}

// Where the operands come from (kernels.hpp): both packed, B through an offset table, or
// A through row pointers.
enum class Operands { kPacked, kOffsetB, kIndirectA };

template <typename T, int MR, int NV, Operands kOps>
void gemm_ukernel_avx512(int64_t kc, const T* __restrict a, const T* const* a_rows,
                         const T* __restrict b,
                         const int64_t* __restrict b_off, T* __restrict c, int64_t ldc,
                         int64_t m, int64_t n, bool accumulate) {
  using Z = Zmm<T>;
  using V = typename Z::V;
  constexpr int L = Z::kLanes;
  constexpr int NR = L * NV;
  V acc[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = Z::zero();

#pragma GCC unroll 2
  for (int64_t p = 0; p < kc; ++p) {
    V bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v)
      bv[v] = kOps == Operands::kOffsetB ? Z::loadu(b + b_off[p] + v * L) : Z::load(b + v * L);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      const V ai = Z::broadcast(kOps == Operands::kIndirectA ? a_rows[i] + p : a + i);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] = Z::fmadd(ai, bv[v], acc[i][v]);
    }
    if (kOps != Operands::kIndirectA) a += MR;
    if (kOps != Operands::kOffsetB) b += NR;
  }

  if (m == MR && n == NR) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      T* ci = c + i * ldc;
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        V r = acc[i][v];
        if (accumulate) r = Z::add(Z::loadu(ci + v * L), r);
        Z::storeu(ci + v * L, r);
      }
    }
    return;
  }
  typename Z::Mask mask[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) mask[v] = tail_mask<typename Z::Mask, L>(n - v * L);
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
    if (i >= m) break;
    T* ci = c + i * ldc;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      V r = acc[i][v];
      if (accumulate) r = Z::add(Z::maskz_loadu(mask[v], ci + v * L), r);
      Z::mask_storeu(ci + v * L, mask[v], r);
    }
  }
}

template <typename T, int MR, int NV>
void packed_b(int64_t kc, const T* a, const T* b, T* c, int64_t ldc, int64_t m, int64_t n,
              bool accumulate) {
  gemm_ukernel_avx512<T, MR, NV, Operands::kPacked>(kc, a, nullptr, b, nullptr, c, ldc, m, n,
                                                   accumulate);
}
template <typename T, int MR, int NV>
void offset_b(int64_t kc, const T* a, const T* b, const int64_t* b_off, T* c, int64_t ldc,
              int64_t m, int64_t n, bool accumulate) {
  gemm_ukernel_avx512<T, MR, NV, Operands::kOffsetB>(kc, a, nullptr, b, b_off, c, ldc, m, n,
                                                     accumulate);
}
template <typename T, int MR, int NV>
void indirect_a(int64_t kc, const T* const* a_rows, const T* b, T* c, int64_t ldc, int64_t m,
                int64_t n, bool accumulate) {
  gemm_ukernel_avx512<T, MR, NV, Operands::kIndirectA>(kc, nullptr, a_rows, b, nullptr, c, ldc, m,
                                                       n, accumulate);
}

}  // namespace

GemmUkernel<float> f32_gemm_ukernel_avx512() {
  return {&packed_b<float, 8, 2>, &offset_b<float, 8, 2>, &indirect_a<float, 8, 2>, 8, 32, "f32_gemm_ukernel_8x32__avx512f"};
}
GemmUkernel<double> f64_gemm_ukernel_avx512() {
  return {&packed_b<double, 8, 2>, &offset_b<double, 8, 2>, &indirect_a<double, 8, 2>, 8, 16,
          "f64_gemm_ukernel_8x16__avx512f"};
}

}  // namespace convcore::kernels
