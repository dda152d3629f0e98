// Padding is not part of the convolution: the definition sums over the taps that land in
// the image, so a non-finite operand never meets a padding zero (0·Inf = NaN would not be
// part of the result). The GEMM executors multiply whole im2col rows, padding zeros
// included, which is exact for finite operands only. Where a padding zero meets an operand:
//   forward:          x's padding × the weights;
//   backward-data:    dy's padding × the weights, in the full-correlation executors
//                     (direct_stride1, indirect_nhwc) where it has any (not 1×1 unpadded
//                     layers); col2im never forms a padding product;
//   backward-weight:  x's padding × dy, only at output positions whose window reaches the
//                     padding (the border of dy).
// So the primitive checks the operand that meets padding — the weights (O(weights), once
// per call or once in set_weights) or the border of dy (O(border), not all of dy) — and,
// only where it holds a non-finite value and the padding is reached, computes exactly:
//   forward:          the executor's result is kept where the window lies in the image and
//                     the border outputs are recomputed here with taps clipped to the image;
//   backward-data:    col2im (exact) runs instead of a full-correlation executor;
//   backward-weight:  the direct loops below (clipped taps) compute dW.
// Finite inputs (every training step that has not diverged) pay only the check.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#include "plan.hpp"
#include "../runtime/runtime.hpp"

namespace convcore::detail {

// False when p[0..n) holds an Inf or NaN (v·0 is NaN exactly for those).
template <typename T>
bool all_finite(const T* p, int64_t n) {
  T acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int u = 0; u < 8; ++u) acc[u] += p[i + u] * T(0);
  for (; i < n; ++i) acc[0] += p[i] * T(0);
  T s = T(0);
  for (int u = 0; u < 8; ++u) s += acc[u];
  return s == T(0);
}

// all_finite over the call's threads, for weights checked per call: a batch-1 1×1
// c512→2048 layer's 4 MiB scan was 7 % of its backward-data call on one thread while the
// other waited (Zen 4, 2 threads). Chunks of 64 Ki elements; the answer does not depend on
// the split.
template <typename T>
bool all_finite_parallel(const T* p, int64_t n) {
  constexpr int64_t kChunk = int64_t(1) << 16;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  const int threads = static_cast<int>(std::clamp<int64_t>(threads_for(8.0 * double(n)), 1,
                                                           std::max<int64_t>(chunks, 1)));
  if (threads <= 1) return all_finite(p, n);
  std::atomic<bool> finite{true};
  parallel_run(threads, [&](int tid, int nt) {
    int64_t c0, c1;
    static_range(chunks, tid, nt, c0, c1);
    const int64_t b = c0 * kChunk, e = std::min(n, c1 * kChunk);
    if (b < e && !all_finite(p + b, e - b)) finite.store(false, std::memory_order_relaxed);
  });
  return finite.load(std::memory_order_relaxed);
}

// Whether output row oh (column ow) has a tap in the padding.
inline bool row_reads_padding(const ConvPlan& p, int64_t oh) {
  const int64_t ih0 = oh * p.sh - p.pad_t;
  return ih0 < 0 || ih0 + (p.R - 1) * p.dh >= p.H;
}
inline bool col_reads_padding(const ConvPlan& p, int64_t ow) {
  const int64_t iw0 = ow * p.sw - p.pad_l;
  return iw0 < 0 || iw0 + (p.S - 1) * p.dw >= p.W;
}
// The first tap coordinate is increasing in oh: only the first and last rows can tell.
inline bool any_output_reads_padding(const ConvPlan& p) {
  return row_reads_padding(p, 0) || row_reads_padding(p, p.Ho - 1) || col_reads_padding(p, 0) ||
         col_reads_padding(p, p.Wo - 1);
}

// Whether backward-data's full correlation reaches dy's padding: at stride 1, a dx pixel
// has a tap beyond dy's edge exactly when a side's padding is under the kernel's span − 1
// (a 1×1 unpadded layer never does). Strided plans: assumed so.
inline bool full_correlation_reads_padding(const ConvPlan& p) {
  if (p.sh != 1 || p.sw != 1) return true;
  const int64_t rh = (p.R - 1) * p.dh, rw = (p.S - 1) * p.dw;
  return p.pad_t < rh || p.pad_b < rh || p.pad_l < rw || p.pad_r < rw;
}

// Taps [lo, hi) of a kernel axis whose coordinate first + t·d lies in [0, size).
inline void valid_taps(int64_t first, int64_t d, int64_t taps, int64_t size, int64_t& lo,
                       int64_t& hi) {
  lo = first >= 0 ? 0 : std::min(taps, (-first + d - 1) / d);
  hi = first >= size ? lo : std::clamp<int64_t>((size - first + d - 1) / d, lo, taps);
}

// The output columns whose window reaches the left or right padding.
inline std::vector<int64_t> border_columns(const ConvPlan& p) {
  std::vector<int64_t> cols;
  for (int64_t ow = 0; ow < p.Wo; ++ow)
    if (col_reads_padding(p, ow)) cols.push_back(ow);
  return cols;
}

// Calls f(oh, ow) for every output position whose window reaches the padding.
template <typename F>
void for_each_border_output(const ConvPlan& p, F&& f) {
  const std::vector<int64_t> cols = border_columns(p);
  for (int64_t oh = 0; oh < p.Ho; ++oh) {
    if (row_reads_padding(p, oh)) {
      for (int64_t ow = 0; ow < p.Wo; ++ow) f(oh, ow);
    } else {
      for (int64_t ow : cols) f(oh, ow);
    }
  }
}

// y at output (n, k, oh, ow) by the definition: taps clipped to the image.
template <typename T>
T exact_output(const ConvPlan& p, const T* x, const T* w, int64_t n, int64_t k, int64_t oh,
               int64_t ow) {
  const int64_t g = k / p.Kg;
  const int64_t ih0 = oh * p.sh - p.pad_t, iw0 = ow * p.sw - p.pad_l;
  int64_t r0, r1, s0, s1;
  valid_taps(ih0, p.dh, p.R, p.H, r0, r1);
  valid_taps(iw0, p.dw, p.S, p.W, s0, s1);
  T acc = T(0);
  for (int64_t c = 0; c < p.Cg; ++c) {
    const T* xc = x + n * p.xs_n + (g * p.Cg + c) * p.xs_c;
    const T* wc = w + k * p.ws_k + c * p.ws_c;
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t s = s0; s < s1; ++s)
        acc += wc[r * p.ws_r + s * p.ws_s] *
               xc[(ih0 + r * p.dh) * p.xs_h + (iw0 + s * p.dw) * p.xs_w];
  }
  return acc;
}

// Recomputes the border outputs of y (bias, ReLU) by the definition.
template <typename T>
void forward_border_exact(const ConvPlan& p, const T* x, const T* w, const T* bias, bool relu,
                          T* y) {
  const int64_t jobs = p.N * p.K;
  parallel_run(std::max(1, std::min<int>(threads_for(p.flops()), int(std::min<int64_t>(jobs, 1 << 20)))),
               [&](int tid, int nt) {
    int64_t j0, j1;
    static_range(jobs, tid, nt, j0, j1);
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t n = j / p.K, k = j % p.K;
      for_each_border_output(p, [&](int64_t oh, int64_t ow) {
        T v = exact_output(p, x, w, n, k, oh, ow);
        if (bias) v += bias[k];
        if (relu) v = v < T(0) ? T(0) : v;
        y[n * p.ys_n + k * p.ys_c + oh * p.ys_h + ow * p.ys_w] = v;
      });
    }
  });
}

// Whether dy holds a non-finite value at an output whose window reaches the padding. Reads
// each border value once along dy's unit-stride axis — the channels of a border pixel
// (NHWC), or a plane's border rows and the border columns of its other rows (NCHW) — into
// independent partial sums (a scalar loop over the filters, each revisiting the border
// positions, was 8 % of a 3×3/2 RGB stem's weight gradient, Zen 4).
template <typename T>
bool border_all_finite(const ConvPlan& p, const T* dy) {
  const std::vector<int64_t> cols = border_columns(p);  // of the rows inside the image
  bool finite = true;
  if (p.ys_c == 1) {  // channels contiguous: each border pixel's K values
    for (int64_t n = 0; n < p.N && finite; ++n)
      for (int64_t oh = 0; oh < p.Ho && finite; ++oh) {
        const T* row = dy + n * p.ys_n + oh * p.ys_h;
        if (row_reads_padding(p, oh)) {
          for (int64_t ow = 0; ow < p.Wo && finite; ++ow) finite = all_finite(row + ow * p.ys_w, p.K);
        } else {
          for (int64_t ow : cols) finite = finite && all_finite(row + ow * p.ys_w, p.K);
        }
      }
    return finite;
  }
  std::vector<T> gathered(cols.size());
  for (int64_t n = 0; n < p.N && finite; ++n)
    for (int64_t k = 0; k < p.K && finite; ++k) {
      const T* plane = dy + n * p.ys_n + k * p.ys_c;
      for (int64_t oh = 0; oh < p.Ho && finite; ++oh) {
        const T* row = plane + oh * p.ys_h;
        if (row_reads_padding(p, oh)) {
          if (p.ys_w == 1)
            finite = all_finite(row, p.Wo);
          else
            for (int64_t ow = 0; ow < p.Wo && finite; ++ow) finite = all_finite(row + ow * p.ys_w, 1);
        } else if (!cols.empty()) {
          for (std::size_t i = 0; i < cols.size(); ++i) gathered[i] = row[cols[i] * p.ys_w];
          finite = all_finite(gathered.data(), int64_t(cols.size()));
        }
      }
    }
  return finite;
}

// dW by the definition (taps clipped to the image), one filter per job.
template <typename T>
void backward_weight_exact(const ConvPlan& p, const T* dy, const T* x, T* dw) {
  parallel_run(std::max(1, std::min<int>(threads_for(p.flops()), int(std::min<int64_t>(p.K, 1 << 20)))),
               [&](int tid, int nt) {
    int64_t k0, k1;
    static_range(p.K, tid, nt, k0, k1);
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t g = k / p.Kg;
      for (int64_t c = 0; c < p.Cg; ++c)
        for (int64_t r = 0; r < p.R; ++r)
          for (int64_t s = 0; s < p.S; ++s) {
            T acc = T(0);
            for (int64_t n = 0; n < p.N; ++n) {
              const T* xc = x + n * p.xs_n + (g * p.Cg + c) * p.xs_c;
              const T* d = dy + n * p.ys_n + k * p.ys_c;
              // Outputs whose tap (r, s) lands in the image: oh·sh − pad_t + r·dh ∈ [0, H).
              int64_t oh0, oh1, ow0, ow1;
              valid_taps(r * p.dh - p.pad_t, p.sh, p.Ho, p.H, oh0, oh1);
              valid_taps(s * p.dw - p.pad_l, p.sw, p.Wo, p.W, ow0, ow1);
              for (int64_t oh = oh0; oh < oh1; ++oh) {
                const int64_t ih = oh * p.sh - p.pad_t + r * p.dh;
                for (int64_t ow = ow0; ow < ow1; ++ow)
                  acc += d[oh * p.ys_h + ow * p.ys_w] *
                         xc[ih * p.xs_h + (ow * p.sw - p.pad_l + s * p.dw) * p.xs_w];
              }
            }
            dw[k * p.ws_k + c * p.ws_c + r * p.ws_r + s * p.ws_s] = acc;
          }
    }
  });
}

}  // namespace convcore::detail
