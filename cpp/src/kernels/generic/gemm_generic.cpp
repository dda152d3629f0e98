// Portable microkernels: plain C++ shaped so that compilers auto-vectorise the inner
// column loop with whatever SIMD the baseline target has (SSE2 on x86-64, NEON on arm64).
#include "../kernels.hpp"

namespace convcore::kernels {
namespace {

// Where the operands come from (kernels.hpp): both packed, B through an offset table, or
// A through row pointers.
enum class Operands { kPacked, kOffsetB, kIndirectA };

template <typename T, int MR, int NR, Operands kOps>
void gemm_ukernel_generic_impl(int64_t kc, const T* __restrict a, const T* const* a_rows,
                               const T* __restrict b, const int64_t* __restrict b_off,
                               T* __restrict c, int64_t ldc, int64_t m, int64_t n,
                               bool accumulate) {
  T acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = T(0);
  for (int64_t p = 0; p < kc; ++p) {
    const T* ap = a + p * MR;
    const T* bp = kOps == Operands::kOffsetB ? b + b_off[p] : b + p * NR;
    for (int i = 0; i < MR; ++i) {
      const T ai = kOps == Operands::kIndirectA ? a_rows[i][p] : ap[i];
      for (int j = 0; j < NR; ++j) acc[i][j] += ai * bp[j];
    }
  }
  for (int64_t i = 0; i < m; ++i) {
    T* ci = c + i * ldc;
    if (accumulate) {
      for (int64_t j = 0; j < n; ++j) ci[j] = ci[j] + acc[i][j];
    } else {
      for (int64_t j = 0; j < n; ++j) ci[j] = acc[i][j];
    }
  }
}

template <typename T, int MR, int NR>
void gemm_ukernel_generic(int64_t kc, const T* a, const T* b, T* c, int64_t ldc, int64_t m,
                          int64_t n, bool accumulate) {
  gemm_ukernel_generic_impl<T, MR, NR, Operands::kPacked>(kc, a, nullptr, b, nullptr, c, ldc, m,
                                                          n, accumulate);
}
template <typename T, int MR, int NR>
void gemm_ukernel_generic_offset_b(int64_t kc, const T* a, const T* b, const int64_t* b_off, T* c,
                                   int64_t ldc, int64_t m, int64_t n, bool accumulate) {
  gemm_ukernel_generic_impl<T, MR, NR, Operands::kOffsetB>(kc, a, nullptr, b, b_off, c, ldc, m,
                                                           n, accumulate);
}
template <typename T, int MR, int NR>
void gemm_ukernel_generic_indirect_a(int64_t kc, const T* const* a_rows, const T* b, T* c,
                                     int64_t ldc, int64_t m, int64_t n, bool accumulate) {
  gemm_ukernel_generic_impl<T, MR, NR, Operands::kIndirectA>(kc, nullptr, a_rows, b, nullptr, c,
                                                             ldc, m, n, accumulate);
}

}  // namespace

GemmUkernel<float> f32_gemm_ukernel_generic() {
  return {&gemm_ukernel_generic<float, 4, 8>, &gemm_ukernel_generic_offset_b<float, 4, 8>,
          &gemm_ukernel_generic_indirect_a<float, 4, 8>, 4, 8,
          "f32_gemm_ukernel_4x8__generic"};
}
GemmUkernel<double> f64_gemm_ukernel_generic() {
  return {&gemm_ukernel_generic<double, 4, 4>, &gemm_ukernel_generic_offset_b<double, 4, 4>,
          &gemm_ukernel_generic_indirect_a<double, 4, 4>, 4, 4,
          "f64_gemm_ukernel_4x4__generic"};
}

}  // namespace convcore::kernels
