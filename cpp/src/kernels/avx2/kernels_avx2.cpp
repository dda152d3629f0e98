// The AVX2 + FMA target: the kernel families instantiated for ymm, compiled with
// -mavx2 -mfma.
//
// Gemm tile: 6 rows × 2 vectors = 12 accumulators, the classic Haswell-class tile (16 ymm
// registers: 12 accumulators, 2 B vectors, 1 broadcast). Narrow tile: 12 rows × 1 vector.
#include "traits.hpp"
#define CONVCORE_KERNEL_NS avx2
#include "../gemm_family.inl"
#include "../winograd_family.inl"
#include "../dwconv_family.inl"

namespace convcore::kernels::avx2 {

Families<float> f32_families() {
  return {gemm_family<Vec<float>, 6, 2>("f32_gemm_ukernel_6x16__avx2_fma"),
          gemm_family<Vec<float>, 12, 1>("f32_gemm_ukernel_12x8__avx2_fma"),
          winograd_family<Vec<float>>(),
          dwconv_family<Vec<float>, 2, 4, 9, 1, 3, 4>("f32_dwconv_16x4__avx2_fma"),
          &transpose<Vec<float>>};
}
Families<double> f64_families() {
  return {gemm_family<Vec<double>, 6, 2>("f64_gemm_ukernel_6x8__avx2_fma"),
          gemm_family<Vec<double>, 12, 1>("f64_gemm_ukernel_12x4__avx2_fma"),
          winograd_family<Vec<double>>(),
          dwconv_family<Vec<double>, 2, 4, 9, 1, 3, 4>("f64_dwconv_8x4__avx2_fma"),
          &transpose<Vec<double>>};
}

}  // namespace convcore::kernels::avx2
