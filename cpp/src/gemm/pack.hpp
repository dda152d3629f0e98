// Packers for plain (strided) matrices. A packer fills the micro-panel format the
// microkernels read (see kernels.hpp):
//   A side: operator()(dst, i0, mc, p0, kc, mr) packs rows [i0, i0+mc) × depth [p0, p0+kc)
//           into ceil(mc/mr) panels of kc×mr values (panel q at dst + q*mr*kc);
//   B side: operator()(dst, p0, kc, j0, nc, nr) packs depth [p0, p0+kc) × columns
//           [j0, j0+nc) into ceil(nc/nr) panels of kc×nr values (panel q at dst + q*nr*kc).
// Rows/columns past the edge are zero-filled so the kernel can always run a full tile.
// Convolution supplies its own packers (conv/packers.hpp) with the same interface.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../kernels/kernels.hpp"

namespace convcore::detail {

// d[u*ld + i] = s_i[u] for i, u < 4: a 4×4 transpose of four rows. Plain C++ (no
// intrinsics: this header is compiled for the baseline): compilers build each stored
// vector from gathered lanes.
inline void transpose_4x4(float* __restrict d, int64_t ld, const float* __restrict s0,
                          const float* __restrict s1, const float* __restrict s2,
                          const float* __restrict s3) {
  const float* s[4] = {s0, s1, s2, s3};
  for (int u = 0; u < 4; ++u)
    for (int i = 0; i < 4; ++i) d[u * ld + i] = s[i][u];
}

// The active engine's register-block transpose (runtime.cpp): packing a row-major piece
// into a micro-panel is a transpose. Exact (values are moved), so any engine's serves.
template <typename T>
kernels::TransposeFn<T> packing_transpose();

// Zeroes columns [n, nr) of the kc rows of an NR-wide B micro-panel (its edge padding).
template <typename T>
inline void zero_panel_tail(T* d, int64_t kc, int64_t n, int nr) {
  if (n >= nr) return;
  for (int64_t p = 0; p < kc; ++p)
    for (int64_t j = n; j < nr; ++j) d[p * nr + j] = T(0);
}

// One A micro-panel from a strided piece: d[p*mr + i] = src[i*rs + p*cs] for i < m,
// p < k, rows m..mr-1 zero. Row-major pieces (cs == 1) are a transpose.
template <typename T>
inline void pack_a_piece(T* d, const T* src, int64_t rs, int64_t cs, int64_t m, int64_t k,
                         int mr) {
  if (cs == 1) {
    packing_transpose<T>()(src, rs, d, mr, m, k);
  } else if (rs == 1 && m == mr && mr == 8) {
    // Column-major pieces (the NHWC output gradient): each step is MR contiguous values.
    for (int64_t p = 0; p < k; ++p) std::memcpy(d + p * 8, src + p * cs, 8 * sizeof(T));
  } else {
    for (int64_t p = 0; p < k; ++p) {
      const T* col = src + p * cs;
      T* dp = d + p * mr;
      for (int64_t i = 0; i < m; ++i) dp[i] = col[i * rs];
    }
  }
  if (m < mr)
    for (int64_t p = 0; p < k; ++p)
      for (int64_t i = m; i < mr; ++i) d[p * mr + i] = T(0);
}

// Columns [0, n) of a B micro-panel from a strided piece: d[p*nr + j] = src[p*rs + j*cs]
// for p < k, j < n. The caller zeroes the panel's columns past its last piece.
template <typename T>
inline void pack_b_piece(T* __restrict d, const T* __restrict src, int64_t rs, int64_t cs,
                         int64_t k, int64_t n, int nr) {
  if (cs == 1) {
    for (int64_t p = 0; p < k; ++p)
      for (int64_t j = 0; j < n; ++j) d[p * nr + j] = src[p * rs + j];
  } else if (rs == 1) {  // column-major (weights as B: filters are rows of w): a transpose
    packing_transpose<T>()(src, cs, d, nr, n, k);
  } else {
    // 16 rows at a time: the 16 destination rows (nr values each) and the n source runs
    // stay in L1 across the columns. Column by column over all k rows instead writes one
    // value into each of k lines per column, k·nr·sizeof(T) bytes apart in all: out of L1
    // for deep panels (a layer's weights as B).
    constexpr int64_t kRows = 16;
    for (int64_t p0 = 0; p0 < k; p0 += kRows) {
      const int64_t p1 = std::min(k, p0 + kRows);
      for (int64_t j = 0; j < n; ++j)
        for (int64_t p = p0; p < p1; ++p) d[p * nr + j] = src[p * rs + j * cs];
    }
  }
}

// A[i][p] = a[i*rs + p*cs]
template <typename T>
struct MatrixPackA {
  const T* a;
  int64_t rs, cs;

  void operator()(T* dst, int64_t i0, int64_t mc, int64_t p0, int64_t kc, int mr) const {
    for (int64_t ib = 0; ib < mc; ib += mr)
      pack_a_piece(dst + ib * kc, a + (i0 + ib) * rs + p0 * cs, rs, cs,
                   std::min<int64_t>(mr, mc - ib), kc, mr);
  }
};

// B[p][j] = b[p*rs + j*cs]
template <typename T>
struct MatrixPackB {
  const T* b;
  int64_t rs, cs;

  void operator()(T* dst, int64_t p0, int64_t kc, int64_t j0, int64_t nc, int nr) const {
    const int64_t full = nc / nr * nr;  // columns in complete panels
    const int64_t tail = nc - full;
    if (cs == 1) {
      // Row by row, so each row of B is read sequentially across all panels (friendly to
      // the prefetchers and the TLB when rows are far apart).
      for (int64_t p = 0; p < kc; ++p) {
        const T* __restrict src = b + (p0 + p) * rs + j0;
        T* __restrict d = dst + p * nr;
        for (int64_t jb = 0; jb < full; jb += nr) {
          T* __restrict out = d + jb * kc;
          for (int j = 0; j < nr; ++j) out[j] = src[jb + j];
        }
        if (tail) {
          T* __restrict out = d + full * kc;
          for (int64_t j = 0; j < tail; ++j) out[j] = src[full + j];
          for (int64_t j = tail; j < nr; ++j) out[j] = T(0);
        }
      }
      return;
    }
    for (int64_t jb = 0; jb < nc; jb += nr) {
      const int64_t n = std::min<int64_t>(nr, nc - jb);
      T* d = dst + jb * kc;
      pack_b_piece(d, b + p0 * rs + (j0 + jb) * cs, rs, cs, kc, n, nr);
      zero_panel_tail(d, kc, n, nr);
    }
  }
};

}  // namespace convcore::detail
