// The AVX-512F target: the kernel families instantiated for zmm. Compiled with -mavx512f
// only; reached through runtime/targets.cpp after CPUID and XGETBV confirm that the CPU and
// the OS support the zmm state.
//
// Gemm tile: 8 rows × 2 vectors (16 zmm accumulators; two FMA pipes of 4-cycle latency need
// at least 8). Measured best on Zen 5 among 4×64, 6×64, 8×32, 8×48, 12×32, 14×32, 16×16
// and 24×16 (fp32, GEMM and conv-shaped products): MR = 8 divides every common channel
// count, so conv tiles waste no rows, and NR = 32 keeps the padding waste small for small
// feature maps. Narrow tile: 28 rows × 1 vector (28 accumulators), for products with at
// most 16 (fp32) or 8 (fp64) columns.
#include "traits.hpp"
#define CONVCORE_KERNEL_NS avx512
#include "../gemm_family.inl"
#include "../winograd_family.inl"
#include "../dwconv_family.inl"

namespace convcore::kernels::avx512 {

Families<float> f32_families() {
  return {gemm_family<Vec<float>, 8, 2>("f32_gemm_ukernel_8x32__avx512f"),
          gemm_family<Vec<float>, 28, 1>("f32_gemm_ukernel_28x16__avx512f"),
          winograd_family<Vec<float>>(),
          dwconv_family<Vec<float>, 2, 4, 9, 2, 4, 4>("f32_dwconv_32x4__avx512f"),
          &transpose<Vec<float>>};
}
Families<double> f64_families() {
  return {gemm_family<Vec<double>, 8, 2>("f64_gemm_ukernel_8x16__avx512f"),
          gemm_family<Vec<double>, 28, 1>("f64_gemm_ukernel_28x8__avx512f"),
          winograd_family<Vec<double>>(),
          dwconv_family<Vec<double>, 2, 4, 9, 2, 4, 4>("f64_dwconv_16x4__avx512f"),
          &transpose<Vec<double>>};
}

}  // namespace convcore::kernels::avx512
