// Stride-1 direct convolution: a GEMM whose B operand is never packed.
//
// With stride 1, output pixel (oh, ow) and tap (r, s) read padded input (oh + r*dh,
// ow + s*dw). Give the output rows the padded input's width Wp = Wout + (S-1)*dw (the extra
// Wp - Wout columns are computed and discarded) and number columns q = oh*Wp + ow: then
// tap (c, r, s) of every column q is padded element c*plane + r*dh*Wp + s*dw + q. Each row
// of B is one contiguous window of a zero-padded, planar copy of the input, so the
// microkernel reads B in place through an offset table (fn_offset_b) and the im2col
// packing — half the run time of small-K layers — disappears; only the padded copy
// (1/(R·S) of the im2col data) is written.
//
// One executor serves two passes:
//   forward (NCHW, stride 1):       in = x,  weights W (Kg × Cg·R·S), out = y (+bias, ReLU);
//   backward-data (NCHW, stride 1): in = dy, weights W flipped and transposed
//                                   (Cg × Kg·R·S), out = dx: a full correlation.
// Shifts (pad_top/pad_left) may be negative (the padded copy then starts inside the input).
#pragma once

#include <algorithm>
#include <cstdint>

#include "../gemm/driver.hpp"
#include "epilogue.hpp"
#include "packers.hpp"
#include "plan.hpp"

namespace convcore::detail {

// The executor computes Wo + (S-1)·dw columns per row and keeps Wo: only worth it while
// the discarded part is at most half.
inline bool direct_stride1_fits(int64_t out_w, int64_t S, int64_t dw) {
  return 2 * (S - 1) * dw <= out_w;
}

// Elements of the padded copy for `rows_out` output rows: Cin·(rows_out + (R−1)·dh)·Wp plus
// the slack read past its end (one row and one micro-panel).
inline __int128 direct_stride1_scratch(int64_t Cin, int64_t R, int64_t dh, int64_t Wout,
                                       int64_t S, int64_t dw, int64_t rows_out) {
  const __int128 wp = __int128(Wout) + __int128(S - 1) * dw;
  return __int128(Cin) * (rows_out + __int128(R - 1) * dh) * wp + wp + kMaxTile;
}
// The executor applies only where the padded rows of one output row fit the per-thread
// image scratch (kImageScratchElems): a tile's copy is then cut into chunks of output rows
// that fit, so its scratch never grows with dilation, padding or the output size.
inline const char* direct_stride1_scratch_why_not(int64_t Cin, int64_t R, int64_t dh,
                                                  int64_t Wout, int64_t S, int64_t dw) {
  return direct_stride1_scratch(Cin, R, dh, Wout, S, dw, 1) > kImageScratchElems
             ? "the zero-padded rows one output row reads exceed the per-thread scratch bound "
               "(dilation, padding or width too large)"
             : nullptr;
}

template <typename T>
struct DirectS1 {
  // Input of one group, element (n, c, h, w) at in[n*in_sn + c*in_sc + h*in_sh + w*in_sw].
  const T* in;
  int64_t in_sn, in_sc, in_sh, in_sw;
  int64_t Cin, Hin, Win;
  // Output of one group, same indexing, Cout × Hout × Wout per image; written, not added.
  T* out;
  int64_t out_sn, out_sc, out_sh, out_sw;
  int64_t Cout, Hout, Wout;
  int64_t R, S, dh, dw;
  int64_t pad_top, pad_left;  // padded(i, j) = in(i - pad_top, j - pad_left)
  BiasActivation<T> act;      // bias per output channel of the group (a row of C), ReLU

  // The forward pass of a stride-1 NCHW plan: in = x, out = y (group 0; a tile sets its
  // group's pointers and bias).
  static DirectS1 forward(const ConvPlan& p, const T* x, T* y, const BiasActivation<T>& act) {
    DirectS1 d;
    d.in = x;
    d.in_sn = p.xs_n; d.in_sc = p.xs_c; d.in_sh = p.xs_h; d.in_sw = p.xs_w;
    d.Cin = p.Cg; d.Hin = p.H; d.Win = p.W;
    d.out = y;
    d.out_sn = p.ys_n; d.out_sc = p.ys_c; d.out_sh = p.ys_h; d.out_sw = p.ys_w;
    d.Cout = p.Kg; d.Hout = p.Ho; d.Wout = p.Wo;
    d.R = p.R; d.S = p.S; d.dh = p.dh; d.dw = p.dw;
    d.pad_top = p.pad_t; d.pad_left = p.pad_l;
    d.act = act;
    return d;
  }
  // Backward-data of a stride-1 NCHW plan as the full correlation of dy with the flipped
  // weights: in = dy, out = dx, shifted by the kernel extent minus the padding.
  static DirectS1 backward_data(const ConvPlan& p, const T* dy, T* dx) {
    DirectS1 d;
    d.in = dy;
    d.in_sn = p.ys_n; d.in_sc = p.ys_c; d.in_sh = p.ys_h; d.in_sw = p.ys_w;
    d.Cin = p.Kg; d.Hin = p.Ho; d.Win = p.Wo;
    d.out = dx;
    d.out_sn = p.xs_n; d.out_sc = p.xs_c; d.out_sh = p.xs_h; d.out_sw = p.xs_w;
    d.Cout = p.Cg; d.Hout = p.H; d.Wout = p.W;
    d.R = p.R; d.S = p.S; d.dh = p.dh; d.dw = p.dw;
    d.pad_top = (p.R - 1) * p.dh - p.pad_t;
    d.pad_left = (p.S - 1) * p.dw - p.pad_l;
    d.act = BiasActivation<T>{};
    return d;
  }

  int64_t Wp() const {
    return checked_add(Wout, checked_mul(S - 1, dw, "a direct-convolution row"),
                       "a direct-convolution row");
  }
  int64_t columns() const { return Hout * Wp(); }
  int64_t depth() const { return Cin * R * S; }

  // Computes output channels [m0, m1) × columns [n0, n1) of image `img` with the weights
  // prepacked as a Cout × (Cin·R·S) matrix, taps in (c, r, s) order. The padded copy is
  // made for chunks of output rows whose copy fits kImageScratchElems (why_not guarantees
  // one row does); every element of C sees the same operations whatever the chunking.
  void run_tile(const GemmEngine<T>& e, const Prepacked<T>& weights, int64_t img, int64_t m0,
                int64_t m1, int64_t n0, int64_t n1) const {
    const int64_t wp = Wp();
    const int64_t slack = wp + e.blocking.nr;
    const int64_t halo = (R - 1) * dh;
    const int64_t chunk_rows = std::max<int64_t>(1, (kImageScratchElems - slack) / (Cin * wp) - halo);
    const int64_t oh_lo = n0 / wp, oh_hi = (n1 - 1) / wp;
    for (int64_t r0 = oh_lo; r0 <= oh_hi; r0 += chunk_rows) {
      const int64_t r1 = std::min(oh_hi + 1, r0 + chunk_rows);
      run_chunk(e, weights, img, m0, m1, std::max(n0, r0 * wp), std::min(n1, r1 * wp), halo,
                slack);
    }
  }

 private:
  void run_chunk(const GemmEngine<T>& e, const Prepacked<T>& weights, int64_t img, int64_t m0,
                 int64_t m1, int64_t n0, int64_t n1, int64_t halo, int64_t slack) const {
    const int64_t wp = Wp();
    const int64_t oh_lo = n0 / wp, oh_hi = (n1 - 1) / wp;
    const char* what = "the padded rows of a direct-convolution tile";
    const int64_t rows = oh_hi - oh_lo + 1 + halo;
    const int64_t plane = rows * wp;
    T* padded = thread_scratch_as<Scratch::Image, T>(Cin * plane + slack, what);
    pad_rows(padded, img, oh_lo, rows, plane);
    std::fill(padded + Cin * plane, padded + Cin * plane + slack, T(0));

    const int64_t K = depth();
    int64_t* b_off = thread_scratch_as<Scratch::Offsets, int64_t>(K, "a tap offset table");
    for (int64_t c = 0, j = 0; c < Cin; ++c)
      for (int64_t r = 0; r < R; ++r)
        for (int64_t s = 0; s < S; ++s) b_off[j++] = c * plane + r * dh * wp + s * dw;

    const T* b = padded + (n0 - oh_lo * wp);
    gemm_rect_offset_b(e, m0, m1, n0, n1, K, weights, b, b_off,
                       [&](const T* buf, int64_t ldb, int64_t i0, int64_t j0, int64_t m,
                           int64_t n) { store(buf, ldb, img, i0, j0, m, n); });
  }

  // Padded rows [row0, row0 + rows) of every channel of image img, planar.
  void pad_rows(T* dst, int64_t img, int64_t row0, int64_t rows, int64_t plane) const {
    const int64_t wp = Wp();
    const int64_t lo = std::clamp<int64_t>(pad_left, 0, wp);             // first in-image column
    const int64_t hi = std::clamp<int64_t>(pad_left + Win, lo, wp);      // one past the last
    for (int64_t c = 0; c < Cin; ++c) {
      const T* src_c = in + img * in_sn + c * in_sc;
      for (int64_t i = 0; i < rows; ++i) {
        T* d = dst + c * plane + i * wp;
        const int64_t h = row0 + i - pad_top;
        if (h < 0 || h >= Hin) {
          std::fill(d, d + wp, T(0));
          continue;
        }
        const T* src = src_c + h * in_sh + (lo - pad_left) * in_sw;
        std::fill(d, d + lo, T(0));
        if (in_sw == 1) {
          copy_run(d + lo, src, hi - lo);
        } else {
          for (int64_t j = lo; j < hi; ++j) d[j] = src[(j - lo) * in_sw];
        }
        std::fill(d + hi, d + wp, T(0));
      }
    }
  }

  // Block epilogue: keeps the columns with ow < Wout, adds bias, applies ReLU.
  void store(const T* buf, int64_t ldb, int64_t img, int64_t i0, int64_t j0, int64_t m,
             int64_t n) const {
    const int64_t wp = Wp();
    for (int64_t t = 0; t < n;) {
      const int64_t q = j0 + t;
      const int64_t oh = q / wp, ow = q % wp;
      const int64_t len = std::min(n - t, wp - ow);
      const int64_t keep = std::max<int64_t>(0, std::min(len, Wout - ow));
      for (int64_t ii = 0; ii < m && keep > 0; ++ii)
        act.store(out + img * out_sn + (i0 + ii) * out_sc + oh * out_sh + ow * out_sw, out_sw,
                  buf + ii * ldb + t, keep, i0 + ii, oh * Wout + ow);
      t += len;
    }
  }
};

}  // namespace convcore::detail
