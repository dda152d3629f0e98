// convcore: the library's own blocked GEMM.
#pragma once

#include <cstdint>

namespace convcore {

// C = A·B (+ C when accumulate), A m×k and B k×n given by element strides (so transposed
// and strided views need no copy), C row-major with leading dimension ldc (>= n).
// Runs on convcore's threads with the active ISA's microkernel; results are bitwise
// identical for any thread count.
template <typename T>
void gemm(int64_t m, int64_t n, int64_t k,
          const T* a, int64_t a_row_stride, int64_t a_col_stride,
          const T* b, int64_t b_row_stride, int64_t b_col_stride,
          T* c, int64_t ldc, bool accumulate = false);

}  // namespace convcore
