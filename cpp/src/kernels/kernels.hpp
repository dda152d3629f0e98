// Microkernel interface shared by every ISA folder. Only declarations and plain data live
// here: each ISA's source is compiled with its own -m flags, so no inline SIMD code may be
// shared between them (the linker could keep a wide-ISA copy for everyone).
#pragma once

#include <cstdint>

namespace convcore::kernels {

// C[0:m, 0:n] (row stride ldc, column stride 1) = (accumulate ? C : 0) + A·B, where
//   a: packed micro-panel of A, kc steps of MR values (a[p*MR + i]), rows >= m zero-padded;
//   b: packed micro-panel of B, kc steps of NR values (b[p*NR + j]), columns >= n zero-padded.
// m <= MR and n <= NR: edge tiles are handled inside the kernel (masked stores), so every
// element is computed by the same instruction sequence whatever the tile position.
template <typename T>
using GemmUkernelFn = void (*)(int64_t kc, const T* a, const T* b, T* c, int64_t ldc,
                               int64_t m, int64_t n, bool accumulate);

// The same tile with B read in place instead of from a packed panel: row p of the
// micro-panel is the NR values at b + b_off[p] (any alignment). Used by the stride-1
// direct convolution, whose B rows are shifted windows of a zero-padded image. All NR
// values of every row must be readable; columns >= n are computed and discarded.
template <typename T>
using GemmUkernelOffsetBFn = void (*)(int64_t kc, const T* a, const T* b, const int64_t* b_off,
                                      T* c, int64_t ldc, int64_t m, int64_t n, bool accumulate);

// The same tile with A read in place through row pointers instead of from a packed panel:
// A[i][p] = a_rows[i][p] for i < MR (rows >= m must still point at kc readable values,
// e.g. a zero buffer). Used by the NHWC direct convolution, whose rows are pixels and whose
// depth runs along contiguous channels (XNNPACK's indirection idea).
template <typename T>
using GemmUkernelIndirectAFn = void (*)(int64_t kc, const T* const* a_rows, const T* b, T* c,
                                        int64_t ldc, int64_t m, int64_t n, bool accumulate);

template <typename T>
struct GemmUkernel {
  GemmUkernelFn<T> fn = nullptr;
  GemmUkernelOffsetBFn<T> fn_offset_b = nullptr;
  GemmUkernelIndirectAFn<T> fn_indirect_a = nullptr;
  int mr = 0;
  int nr = 0;
  const char* name = "";
};

// One entry per ISA folder; each returns the best tile for that ISA.
GemmUkernel<float> f32_gemm_ukernel_generic();
GemmUkernel<double> f64_gemm_ukernel_generic();
#if defined(CONVCORE_HAVE_X86_KERNELS)
GemmUkernel<float> f32_gemm_ukernel_avx2();
GemmUkernel<double> f64_gemm_ukernel_avx2();
GemmUkernel<float> f32_gemm_ukernel_avx512();
GemmUkernel<double> f64_gemm_ukernel_avx512();
#endif

}  // namespace convcore::kernels
