// Sub-pixel decomposition of a strided backward-data pass (and so of the transposed
// convolution's forward), without col2im.
//
// dx[ih] = Σ over taps r and outputs oh with oh·s − pad + r·d = ih of w[r]·dy[oh]. Split
// the rows of dx by phase ρ = (ih + pad) mod s: the rows of one phase are
// ih = first_ρ + s·t, and the taps that reach them are exactly those with r·d ≡ ρ (mod s),
// each at dy row oh = t + shift_r with shift_r = (first_ρ + pad − r·d)/s. So one phase of
// dx is a dense, stride-1 correlation of dy with that subset of taps (the same along the
// width): s_h·s_w small GEMMs, each writing its own interleaved rows and columns of dx
// exactly once — nothing is scattered or accumulated, and bias and ReLU are applied as the
// values are stored.
//
// A phase's GEMM is the stride-1 direct executor's (direct_s1.hpp) with a general tap
// table: rows = the group's input channels (Cg), depth = (k, tap_h, tap_w), columns =
// phase pixels q = t·Wp + u with Wp = phase width + the spread of the width shifts (the
// extra columns are computed and dropped), and B read in place through an offset table
// from a zero-extended, planar copy of the dy rows a tile needs (any layout).
//
// Exactness: dy's zero extension meets the weights (like the stride-1 full correlation),
// so the primitive runs col2im instead when the weights hold Inf or NaN (exact_padding.hpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../gemm/driver.hpp"
#include "epilogue.hpp"
#include "plan.hpp"

namespace convcore::detail {

// One phase along one axis.
struct PhaseAxis {
  int64_t first = 0, count = 0;  // dx coordinates first + stride·t for t < count
  std::vector<int64_t> taps;     // kernel taps landing on this phase, increasing
  std::vector<int64_t> shift;    // tap i reads dy at t + shift[i]
  int64_t lo = 0, hi = 0;        // min and max shift (0 without taps)
  int64_t ntaps() const { return static_cast<int64_t>(taps.size()); }
};

// The phases of one axis: dx size `in`, begin padding `pad`, stride, dilation, kernel.
inline std::vector<PhaseAxis> phase_axes(int64_t in, int64_t pad, int64_t stride,
                                         int64_t dilation, int64_t kernel) {
  std::vector<PhaseAxis> out(static_cast<size_t>(stride));
  for (int64_t rho = 0; rho < stride; ++rho) {
    PhaseAxis& a = out[static_cast<size_t>(rho)];
    a.first = ((rho - pad) % stride + stride) % stride;
    a.count = a.first < in ? (in - a.first + stride - 1) / stride : 0;
    for (int64_t r = 0; r < kernel; ++r) {
      if ((r * dilation) % stride != rho) continue;
      a.taps.push_back(r);
      a.shift.push_back((a.first + pad - r * dilation) / stride);  // exact
    }
    if (!a.taps.empty()) {
      a.lo = *std::min_element(a.shift.begin(), a.shift.end());
      a.hi = *std::max_element(a.shift.begin(), a.shift.end());
    }
  }
  return out;
}

// The phases of a plan, both axes.
struct SubpixelGeometry {
  std::vector<PhaseAxis> rows, cols;
  explicit SubpixelGeometry(const ConvPlan& p)
      : rows(phase_axes(p.H, p.pad_t, p.sh, p.dh, p.R)),
        cols(phase_axes(p.W, p.pad_l, p.sw, p.dw, p.S)) {}
  // Phase (a, b)'s GEMM depth for one group: Kg · taps_h · taps_w.
  int64_t depth(const ConvPlan& p, const PhaseAxis& a, const PhaseAxis& b) const {
    return p.Kg * a.ntaps() * b.ntaps();
  }
  // Computed columns per phase row.
  static int64_t wp(const PhaseAxis& b) { return b.count + (b.hi - b.lo); }
};

// A operand of one phase: A[c][(k, i, j)] = w[k][c][rows.taps[i]][cols.taps[j]], a
// Cg × (Kg·taps_h·taps_w) matrix; wg points at the group's first filter.
template <typename T>
struct PhaseWeightPackA {
  const ConvPlan* plan;
  const T* wg;
  const PhaseAxis* a;
  const PhaseAxis* b;

  void operator()(T* dst, int64_t i0, int64_t mc, int64_t p0, int64_t kc, int mr) const {
    const ConvPlan& p = *plan;
    const int64_t nh = a->ntaps(), nw = b->ntaps();
    for (int64_t ib = 0; ib < mc; ib += mr) {
      const int64_t m = std::min<int64_t>(mr, mc - ib);
      T* d = dst + ib * kc;
      for (int64_t kk = 0; kk < kc; ++kk) {
        const int64_t j = p0 + kk;
        const int64_t k = j / (nh * nw), i = (j / nw) % nh, jj = j % nw;
        const T* src = wg + k * p.ws_k + (i0 + ib) * p.ws_c +
                       a->taps[static_cast<size_t>(i)] * p.ws_r +
                       b->taps[static_cast<size_t>(jj)] * p.ws_s;
        T* out = d + kk * mr;
        for (int64_t u = 0; u < m; ++u) out[u] = src[u * p.ws_c];
        for (int64_t u = m; u < mr; ++u) out[u] = T(0);
      }
    }
  }
};

// B operand of one phase for the channels-last tiles (backward_data.cpp's subpixel_nhwc):
// B[(i, j, k)][c] = w[k][c][rows.taps[nh − 1 − i]][cols.taps[nw − 1 − j]], a
// (taps_h·taps_w·Kg) × Cg matrix — the phase's taps in increasing dy shift (the taps
// themselves decrease), filters contiguous as dy's pixels hold them. wg points at the
// group's first filter.
template <typename T>
struct PhaseWeightPackB {
  const ConvPlan* plan;
  const T* wg;
  const PhaseAxis* a;
  const PhaseAxis* b;

  void operator()(T* dst, int64_t p0, int64_t kc, int64_t j0, int64_t nc, int nr) const {
    const ConvPlan& p = *plan;
    const int64_t nh = a->ntaps(), nw = b->ntaps();
    for (int64_t jb = 0; jb < nc; jb += nr) {
      const int64_t n = std::min<int64_t>(nr, nc - jb);
      T* d = dst + jb * kc;
      for (int64_t kk = 0; kk < kc; ++kk) {
        const int64_t q = p0 + kk;
        const int64_t k = q % p.Kg, tap = q / p.Kg, i = tap / nw, j = tap % nw;
        const T* src = wg + k * p.ws_k + (j0 + jb) * p.ws_c +
                       a->taps[static_cast<size_t>(nh - 1 - i)] * p.ws_r +
                       b->taps[static_cast<size_t>(nw - 1 - j)] * p.ws_s;
        T* out = d + kk * nr;
        for (int64_t t = 0; t < n; ++t) out[t] = src[t * p.ws_c];
        for (int64_t t = n; t < nr; ++t) out[t] = T(0);
      }
    }
  }
};

// Whether one phase row's dy copy fits the per-thread image scratch (the executor cuts a
// tile's copy into chunks of phase rows that fit).
inline __int128 subpixel_row_scratch(const ConvPlan& p, const PhaseAxis& a, const PhaseAxis& b) {
  const __int128 wp = __int128(b.count) + (b.hi - b.lo);
  return __int128(p.Kg) * (1 + (a.hi - a.lo)) * wp + wp + kMaxTile;
}

// One phase's GEMM for one group: its tiles.
template <typename T>
struct SubpixelPhase {
  const ConvPlan* plan;
  const PhaseAxis* a;  // rows
  const PhaseAxis* b;  // columns
  const T* dyg;        // dy, the group's first filter of image 0
  T* dxg;              // dx, the group's first channel of image 0
  BiasActivation<T> act;  // bias per dx channel of the group (a row of C), ReLU

  int64_t wp() const { return b->count + (b->hi - b->lo); }
  int64_t columns() const { return a->count * wp(); }
  int64_t depth() const { return plan->Kg * a->ntaps() * b->ntaps(); }

  // Channels [m0, m1) × phase columns [n0, n1) of image img.
  void run_tile(const GemmEngine<T>& e, const Prepacked<T>& weights, int64_t img, int64_t m0,
                int64_t m1, int64_t n0, int64_t n1) const {
    const int64_t w = wp();
    const int64_t slack = w + e.blocking.nr;
    const int64_t halo = a->hi - a->lo;
    const int64_t per_row = plan->Kg * w;
    const int64_t chunk_rows =
        std::max<int64_t>(1, (kImageScratchElems - slack) / per_row - halo);
    const int64_t t_lo = n0 / w, t_hi = (n1 - 1) / w;
    for (int64_t r0 = t_lo; r0 <= t_hi; r0 += chunk_rows) {
      const int64_t r1 = std::min(t_hi + 1, r0 + chunk_rows);
      run_chunk(e, weights, img, m0, m1, std::max(n0, r0 * w), std::min(n1, r1 * w), slack);
    }
  }

 private:
  void run_chunk(const GemmEngine<T>& e, const Prepacked<T>& weights, int64_t img, int64_t m0,
                 int64_t m1, int64_t n0, int64_t n1, int64_t slack) const {
    const ConvPlan& p = *plan;
    const int64_t w = wp();
    const int64_t t0 = n0 / w, t1 = (n1 - 1) / w;
    const int64_t rows = t1 - t0 + 1 + (a->hi - a->lo);
    const int64_t plane = rows * w;
    T* copy = thread_scratch_as<Scratch::Image, T>(p.Kg * plane + slack,
                                                   "the dy rows of a sub-pixel tile");
    // Planar, zero-extended copy: row i, column j of filter k is dy[k][t0 + lo_h + i][lo_w + j].
    const int64_t j_lo = std::clamp<int64_t>(-b->lo, 0, w);
    const int64_t j_hi = std::clamp<int64_t>(p.Wo - b->lo, j_lo, w);
    for (int64_t k = 0; k < p.Kg; ++k) {
      const T* src_k = dyg + img * p.ys_n + k * p.ys_c;
      for (int64_t i = 0; i < rows; ++i) {
        T* d = copy + k * plane + i * w;
        const int64_t h = t0 + a->lo + i;
        if (h < 0 || h >= p.Ho) {
          std::fill(d, d + w, T(0));
          continue;
        }
        std::fill(d, d + j_lo, T(0));
        const T* src = src_k + h * p.ys_h + (b->lo + j_lo) * p.ys_w;
        if (p.ys_w == 1) {
          copy_run(d + j_lo, src, j_hi - j_lo);
        } else {
          for (int64_t j = j_lo; j < j_hi; ++j) d[j] = src[(j - j_lo) * p.ys_w];
        }
        std::fill(d + j_hi, d + w, T(0));
      }
    }
    std::fill(copy + p.Kg * plane, copy + p.Kg * plane + slack, T(0));

    const int64_t K = depth();
    const int64_t nh = a->ntaps(), nw = b->ntaps();
    int64_t* b_off = thread_scratch_as<Scratch::Offsets, int64_t>(K, "a tap offset table");
    for (int64_t k = 0, j = 0; k < p.Kg; ++k)
      for (int64_t i = 0; i < nh; ++i)
        for (int64_t jj = 0; jj < nw; ++jj)
          b_off[j++] = k * plane + (a->shift[static_cast<size_t>(i)] - a->lo) * w +
                       (b->shift[static_cast<size_t>(jj)] - b->lo);

    const T* bmat = copy + (n0 - t0 * w);
    gemm_rect_offset_b(e, m0, m1, n0, n1, K, weights, bmat, b_off,
                       [&](const T* buf, int64_t ldb, int64_t i0, int64_t j0, int64_t m,
                           int64_t n) { store(buf, ldb, img, i0, j0, m, n); });
  }

  // Block epilogue: keeps columns u < count, stores them interleaved with bias and ReLU.
  void store(const T* buf, int64_t ldb, int64_t img, int64_t i0, int64_t j0, int64_t m,
             int64_t n) const {
    const ConvPlan& p = *plan;
    const int64_t w = wp();
    const int64_t step = p.sw * p.xs_w;
    for (int64_t t = 0; t < n;) {
      const int64_t q = j0 + t;
      const int64_t row = q / w, u = q % w;
      const int64_t len = std::min(n - t, w - u);
      const int64_t keep = std::max<int64_t>(0, std::min(len, b->count - u));
      const int64_t ih = a->first + row * p.sh, iw = b->first + u * p.sw;
      for (int64_t ii = 0; ii < m && keep > 0; ++ii) {
        T* dst = dxg + img * p.xs_n + (i0 + ii) * p.xs_c + ih * p.xs_h + iw * p.xs_w;
        const T bias = act.row_bias ? act.row_bias[i0 + ii] : T(0);
        if (act.relu) store_run<true>(dst, step, buf + ii * ldb + t, keep, bias);
        else store_run<false>(dst, step, buf + ii * ldb + t, keep, bias);
      }
      t += len;
    }
  }

  // dst[u·step] = act(src[u] + bias), u < len: one tight loop per case.
  template <bool kRelu>
  static void store_run(T* __restrict dst, int64_t step, const T* __restrict src, int64_t len,
                        T bias) {
    if (step == 2) {
      for (int64_t u = 0; u < len; ++u) {
        const T v = src[u] + bias;
        dst[2 * u] = kRelu ? BiasActivation<T>::relu_of(v) : v;
      }
    } else {
      for (int64_t u = 0; u < len; ++u) {
        const T v = src[u] + bias;
        dst[u * step] = kRelu ? BiasActivation<T>::relu_of(v) : v;
      }
    }
  }
};

}  // namespace convcore::detail
