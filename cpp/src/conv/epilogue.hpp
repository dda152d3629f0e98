// The one bias + activation epilogue. Every executor that finishes output values — the
// driver's tile epilogue (in place on a tile of C), the direct executor's and the
// multi-image store (from a buffered block into y) and the indirect NHWC executor — calls
// BiasActivation, so the semantics live here only: y = act(acc + bias), bias per row of C
// (NCHW: filters are rows) or per column (NHWC: filters are columns), ReLU keeping NaN
// (x < 0 ? 0 : x), as frameworks do.
#pragma once

#include <cstdint>

namespace convcore::detail {

// dst[0:n] = src[0:n] for short runs: whole 32-byte chunks, then single elements (a
// library memcpy call costs more than the copy at these lengths).
template <typename T>
inline void copy_run(T* __restrict dst, const T* __restrict src, int64_t n) {
  constexpr int64_t chunk = 32 / sizeof(T);
  int64_t t = 0;
  for (; t + chunk <= n; t += chunk) __builtin_memcpy(dst + t, src + t, 32);
  for (; t < n; ++t) dst[t] = src[t];
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

}  // namespace convcore::detail
