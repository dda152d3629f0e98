// Packers for plain (strided) matrices. A packer fills the micro-panel format the
// microkernels read (see kernels.hpp):
//   A side: operator()(dst, i0, mc, p0, kc, mr) packs rows [i0, i0+mc) × depth [p0, p0+kc)
//           into ceil(mc/mr) panels of kc×mr values (panel q at dst + q*mr*kc);
//   B side: operator()(dst, p0, kc, j0, nc, nr) packs depth [p0, p0+kc) × columns
//           [j0, j0+nc) into ceil(nc/nr) panels of kc×nr values (panel q at dst + q*nr*kc).
// Rows/columns past the edge are zero-filled so the kernel can always run a full tile.
// Convolution supplies its own packers (conv/im2col_pack.hpp) with the same interface.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace convcore::detail {

// A[i][p] = a[i*rs + p*cs]
template <typename T>
struct MatrixPackA {
  const T* a;
  int64_t rs, cs;

  void operator()(T* dst, int64_t i0, int64_t mc, int64_t p0, int64_t kc, int mr) const {
    for (int64_t ib = 0; ib < mc; ib += mr) {
      const int64_t m = std::min<int64_t>(mr, mc - ib);
      T* d = dst + ib * kc;
      const T* src = a + (i0 + ib) * rs + p0 * cs;
      if (cs == 1) {
        // Row-major A: read each row contiguously, write it with stride mr.
        for (int64_t i = 0; i < m; ++i) {
          const T* row = src + i * rs;
          for (int64_t p = 0; p < kc; ++p) d[p * mr + i] = row[p];
        }
      } else {
        for (int64_t p = 0; p < kc; ++p) {
          const T* col = src + p * cs;
          T* dp = d + p * mr;
          for (int64_t i = 0; i < m; ++i) dp[i] = col[i * rs];
        }
      }
      if (m < mr)
        for (int64_t p = 0; p < kc; ++p)
          for (int64_t i = m; i < mr; ++i) d[p * mr + i] = T(0);
    }
  }
};

// B[p][j] = b[p*rs + j*cs]
template <typename T>
struct MatrixPackB {
  const T* b;
  int64_t rs, cs;

  void operator()(T* dst, int64_t p0, int64_t kc, int64_t j0, int64_t nc, int nr) const {
    for (int64_t jb = 0; jb < nc; jb += nr) {
      const int64_t n = std::min<int64_t>(nr, nc - jb);
      T* d = dst + jb * kc;
      const T* src = b + p0 * rs + (j0 + jb) * cs;
      if (cs == 1) {
        for (int64_t p = 0; p < kc; ++p) {
          std::memcpy(d + p * nr, src + p * rs, sizeof(T) * n);
          for (int64_t j = n; j < nr; ++j) d[p * nr + j] = T(0);
        }
      } else {
        for (int64_t j = 0; j < n; ++j) {
          const T* col = src + j * cs;
          for (int64_t p = 0; p < kc; ++p) d[p * nr + j] = col[p * rs];
        }
        if (n < nr)
          for (int64_t p = 0; p < kc; ++p)
            for (int64_t j = n; j < nr; ++j) d[p * nr + j] = T(0);
      }
    }
  }
};

}  // namespace convcore::detail
