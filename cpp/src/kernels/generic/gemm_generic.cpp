// Portable microkernels: plain C++ shaped so that compilers auto-vectorise the inner
// column loop with whatever SIMD the baseline target has (SSE2 on x86-64, NEON on arm64).
#include "../kernels.hpp"

namespace convcore::kernels {
namespace {

template <typename T, int MR, int NR>
void gemm_ukernel_generic(int64_t kc, const T* __restrict a, const T* __restrict b,
                          T* __restrict c, int64_t ldc, int64_t m, int64_t n, bool accumulate) {
  T acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = T(0);
  for (int64_t p = 0; p < kc; ++p) {
    const T* ap = a + p * MR;
    const T* bp = b + p * NR;
    for (int i = 0; i < MR; ++i) {
      const T ai = ap[i];
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

}  // namespace

GemmUkernel<float> f32_gemm_ukernel_generic() {
  return {&gemm_ukernel_generic<float, 4, 8>, 4, 8, "f32_gemm_ukernel_4x8__generic"};
}
GemmUkernel<double> f64_gemm_ukernel_generic() {
  return {&gemm_ukernel_generic<double, 4, 4>, 4, 4, "f64_gemm_ukernel_4x4__generic"};
}

}  // namespace convcore::kernels
