// Epilogues: what happens to finished tiles of C.
//
// BiasActivation is the one bias + activation epilogue. Every executor that finishes output
// values — the driver's tile epilogue (in place on a tile of C), the direct executor's and
// the multi-image store (from a buffered block into y) and the indirect NHWC executor —
// calls it, so the semantics live here only: y = act(acc + bias), bias per row of C (NCHW:
// filters are rows) or per column (NHWC: filters are columns), ReLU keeping NaN
// (x < 0 ? 0 : x), as frameworks do. The block epilogues below (multi-image store, col2im)
// are the buffered driver's.
#pragma once

#include <algorithm>
#include <cstdint>

#include "plan.hpp"
#include "tap_geometry.hpp"
#include "../gemm/driver.hpp"

namespace convcore::detail {

// dst[0:n] = src[0:n] for short runs: whole 32-byte chunks, then a 16-, 8- and 4-byte
// piece as the remainder needs (a library memcpy call costs more than the copy at these
// lengths, and GCC turns an element loop into one).
template <typename T>
inline void copy_run(T* __restrict dst, const T* __restrict src, int64_t n) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "float or double");
  constexpr int64_t chunk = 32 / sizeof(T);
  int64_t t = 0;
  for (; t + chunk <= n; t += chunk) __builtin_memcpy(dst + t, src + t, 32);
  const int64_t rest = (n - t) * int64_t(sizeof(T));  // < 32 bytes
  char* d = reinterpret_cast<char*>(dst + t);
  const char* s = reinterpret_cast<const char*>(src + t);
  if (rest & 16) { __builtin_memcpy(d, s, 16); d += 16; s += 16; }
  if (rest & 8) { __builtin_memcpy(d, s, 8); d += 8; s += 8; }
  if (rest & 4) __builtin_memcpy(d, s, 4);
}

// dst[0:n] = 0 for short runs, in the same pieces as copy_run.
template <typename T>
inline void zero_run(T* dst, int64_t n) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "float or double");
  constexpr int64_t chunk = 32 / sizeof(T);
  alignas(32) static constexpr char zeros[32] = {};
  int64_t t = 0;
  for (; t + chunk <= n; t += chunk) __builtin_memcpy(dst + t, zeros, 32);
  const int64_t rest = (n - t) * int64_t(sizeof(T));
  char* d = reinterpret_cast<char*>(dst + t);
  if (rest & 16) { __builtin_memcpy(d, zeros, 16); d += 16; }
  if (rest & 8) { __builtin_memcpy(d, zeros, 8); d += 8; }
  if (rest & 4) __builtin_memcpy(d, zeros, 4);
}

enum class ActivationKind { kNone, kRelu };

template <typename T>
struct BiasActivation {
  static constexpr bool kActive = true;  // the driver's tile-epilogue interface
  const T* row_bias = nullptr;  // indexed by the global row of C, or null
  const T* col_bias = nullptr;  // indexed by the global column of C, or null
  bool relu = false;

  bool active() const { return row_bias || col_bias || relu; }
  // The same epilogue for a group's slice of filters: bias offset by `first` filters.
  BiasActivation rows_from(int64_t first) const {
    return {row_bias ? row_bias + first : nullptr, col_bias, relu};
  }
  BiasActivation cols_from(int64_t first) const {
    return {row_bias, col_bias ? col_bias + first : nullptr, relu};
  }

  // dst[u·dst_stride] = act(src[u] + bias) for u < len: row i of C from column j. dst may
  // be src itself (in place) but must not overlap it otherwise.
  void store(T* dst, int64_t dst_stride, const T* src, int64_t len, int64_t i,
             int64_t j) const {
    if (dst_stride != 1) {
      for (int64_t u = 0; u < len; ++u) {
        T v = src[u];
        if (row_bias) v += row_bias[i];
        if (col_bias) v += col_bias[j + u];
        dst[u * dst_stride] = relu ? relu_of(v) : v;
      }
      return;
    }
    // Contiguous: one pass per operation (each vectorises).
    if (row_bias) {
      const T b = row_bias[i];
      for (int64_t u = 0; u < len; ++u) dst[u] = src[u] + b;
      src = dst;
    }
    if (col_bias) {
      const T* b = col_bias + j;
      for (int64_t u = 0; u < len; ++u) dst[u] = src[u] + b[u];
      src = dst;
    }
    if (relu) {
      for (int64_t u = 0; u < len; ++u) dst[u] = relu_of(src[u]);
      src = dst;
    }
    if (src != dst) copy_run(dst, src, len);
  }

  // The driver's tile epilogue: in place on the m×n tile at (i, j) of C.
  void operator()(T* c, int64_t ldc, int64_t i, int64_t j, int64_t m, int64_t n) const {
    for (int64_t ii = 0; ii < m; ++ii) store(c + ii * ldc, 1, c + ii * ldc, n, i + ii, j);
  }

  static T relu_of(T v) { return v < T(0) ? T(0) : v; }
};

// Forward block epilogue of the multi-image NCHW pass: stores a finished block (rows =
// filters, columns = pixels of several images) into y image by image, adding the bias and
// applying ReLU on the way. yg points at filter 0 of the group in image 0.
template <typename T>
struct StoreImagesEpilogue {
  const ConvPlan* plan;
  T* yg;
  BiasActivation<T> act;  // row bias: the group's filters

  void operator()(const T* buf, int64_t ldb, int64_t i0, int64_t j0, int64_t m, int64_t n) const {
    const ConvPlan& p = *plan;
    const int64_t P = p.P();
    for (int64_t t = 0; t < n;) {
      const int64_t q = j0 + t;
      const int64_t img = q / P, pix = q % P;
      const int64_t len = std::min(n - t, P - pix);
      for (int64_t ii = 0; ii < m; ++ii)
        act.store(yg + img * p.ys_n + (i0 + ii) * p.ys_c + pix, 1, buf + ii * ldb + t, len,
                  i0 + ii, q);
      t += len;
    }
  }
};

// Backward-data block epilogue: scatters a finished block of the column gradient
// (rows (c, r, s), columns = pixels q = img*Ho*Wo + oh*Wo + ow) into the input gradient
// (col2im). dxg points at channel 0 of the group in image 0.
template <typename T>
struct Col2imEpilogue {
  const ConvPlan* plan;
  T* dxg;

  void operator()(const T* buf, int64_t ldb, int64_t i0, int64_t j0, int64_t m, int64_t n) const {
    const ConvPlan& p = *plan;
    // Runs of pixels along output rows: a block has at most kBufferedNC columns.
    PixelRun runs[kBufferedNC];
    const int nruns = pixel_runs(p, j0, n, runs);
    TapCursor tap(p, true, i0);
    for (int64_t ii = 0; ii < m; ++ii, tap.next()) {
      T* xc = dxg + tap.c * p.xs_c;
      const T* src = buf + ii * ldb;
      const int64_t rr = tap.r * p.dh, ss = tap.s * p.dw;
      for (int u = 0; u < nruns; ++u) {
        const PixelRun& run = runs[u];
        const int64_t ih = run.ih0 + rr;
        if (ih < 0 || ih >= p.H) continue;
        T* row = xc + run.img * p.xs_n + ih * p.xs_h;
        const int64_t iw0 = run.iw0 + ss;
        const T* s = src + run.col;
        if (p.sw == 1 && p.xs_w == 1) {
          const int64_t lo = std::clamp<int64_t>(-iw0, 0, run.len);
          const int64_t hi = std::clamp<int64_t>(p.W - iw0, lo, run.len);
          if (lo < hi) {
            T* __restrict o = row + (iw0 + lo);
            const T* so = s + lo;
            for (int64_t t = 0; t < hi - lo; ++t) o[t] += so[t];
          }
        } else {
          // The run's t with iw = iw0 + t·sw inside [0, W), found once: no test per element
          // (a third of the 3×3/2 RGB stem's backward-data went to those tests).
          const int64_t sw = p.sw;
          const int64_t lo = iw0 >= 0 ? 0 : std::min<int64_t>(run.len, (sw - 1 - iw0) / sw);
          const int64_t hi = std::clamp<int64_t>((p.W - iw0 + sw - 1) / sw, lo, run.len);
          if (lo < hi) {
            const int64_t step = sw * p.xs_w;
            T* __restrict o = row + (iw0 + lo * sw) * p.xs_w;
            const T* so = s + lo;
            for (int64_t t = 0; t < hi - lo; ++t) o[t * step] += so[t];
          }
        }
      }
    }
  }
};

}  // namespace convcore::detail
