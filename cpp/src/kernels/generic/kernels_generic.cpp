// The portable target: the kernel families over plain arrays (traits.hpp), compiled for
// the baseline of the build; always present.
//
// Gemm tile: 4 rows × one 32-byte "vector" (4×8 f32, 4×4 f64); the narrow tile is 8 rows
// of one vector.
#include "traits.hpp"
#define CONVCORE_KERNEL_NS generic
#include "../gemm_family.inl"
#include "../winograd_family.inl"
#include "../dwconv_family.inl"

namespace convcore::kernels::generic {

Families<float> f32_families() {
  return {gemm_family<Vec<float>, 4, 1>("f32_gemm_ukernel_4x8__generic"),
          gemm_family<Vec<float>, 8, 1>("f32_gemm_ukernel_8x8__generic"),
          winograd_family<Vec<float>>(),
          dwconv_family<Vec<float>, 1, 2, 9, 1, 2, 2>("f32_dwconv_8x2__generic"),
          &transpose<Vec<float>>};
}
Families<double> f64_families() {
  return {gemm_family<Vec<double>, 4, 1>("f64_gemm_ukernel_4x4__generic"),
          gemm_family<Vec<double>, 8, 1>("f64_gemm_ukernel_8x4__generic"),
          winograd_family<Vec<double>>(),
          dwconv_family<Vec<double>, 1, 2, 9, 1, 2, 2>("f64_dwconv_4x2__generic"),
          &transpose<Vec<double>>};
}

}  // namespace convcore::kernels::generic
