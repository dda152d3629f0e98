// NHWC direct convolution: a GEMM whose A operand is never packed (XNNPACK's indirection).
//
// In NHWC the rows of C are output pixels and the depth is (tap, channel) with channels
// contiguous in memory: for pixel q and tap (r, s), the Cin values of A are one contiguous
// run of the input. So the microkernel reads A through MR row pointers (fn_indirect_a), one
// depth segment (a tap's channel range) at a time, with a shared zero buffer standing in
// for taps that fall in the padding; only the weights are packed (once per call). This
// removes the transposing im2col pack of the NHWC forward pass and, for stride 1, the
// col2im scatter of backward-data (computed as a full correlation with flipped weights).
#pragma once

#include <algorithm>
#include <cassert>
#include <cstdint>

#include "../gemm/driver.hpp"
#include "epilogue.hpp"
#include "packers.hpp"
#include "plan.hpp"

namespace convcore::detail {

template <typename T>
struct IndirectNhwc {
  // Input of one group: element (n, h, w, c) at in[n*in_sn + h*in_sh + w*in_sw + c], Cin
  // channels (contiguous) per group.
  const T* in;
  int64_t in_sn, in_sh, in_sw;
  int64_t Cin, Hin, Win;
  // Output rows: pixel q = (n*Hout + oh)*Wout + ow of the group's Cout channels at
  // out + q*ldo (+ column); written, not added.
  T* out;
  int64_t ldo;
  int64_t Hout, Wout;
  int64_t R, S, sh, sw, dh, dw;
  int64_t pad_top, pad_left;  // input row of (oh, r) is oh*sh - pad_top + r*dh
  BiasActivation<T> act;      // bias per output channel of the group (a column of C), ReLU

  // The forward pass of an NHWC plan: in = x, out = y (group 0; a tile sets its group's
  // pointers and bias).
  static IndirectNhwc forward(const ConvPlan& p, const T* x, T* y,
                              const BiasActivation<T>& act) {
    IndirectNhwc d;
    d.in = x;
    d.in_sn = p.xs_n; d.in_sh = p.xs_h; d.in_sw = p.xs_w;
    d.Cin = p.Cg; d.Hin = p.H; d.Win = p.W;
    d.out = y;
    d.ldo = p.ys_w;
    d.Hout = p.Ho; d.Wout = p.Wo;
    d.R = p.R; d.S = p.S; d.sh = p.sh; d.sw = p.sw; d.dh = p.dh; d.dw = p.dw;
    d.pad_top = p.pad_t; d.pad_left = p.pad_l;
    d.act = act;
    return d;
  }
  // Backward-data of a stride-1 NHWC plan as the full correlation of dy with the flipped
  // weights: rows = pixels of dx, depth = (r, s, k) of dy.
  static IndirectNhwc backward_data(const ConvPlan& p, const T* dy, T* dx) {
    IndirectNhwc d;
    d.in = dy;
    d.in_sn = p.ys_n; d.in_sh = p.ys_h; d.in_sw = p.ys_w;
    d.Cin = p.Kg; d.Hin = p.Ho; d.Win = p.Wo;
    d.out = dx;
    d.ldo = p.xs_w;
    d.Hout = p.H; d.Wout = p.W;
    d.R = p.R; d.S = p.S; d.sh = 1; d.sw = 1; d.dh = p.dh; d.dw = p.dw;
    d.pad_top = (p.R - 1) * p.dh - p.pad_t;
    d.pad_left = (p.S - 1) * p.dw - p.pad_l;
    d.act = BiasActivation<T>{};
    return d;
  }

  int64_t depth() const { return R * S * Cin; }

  // The cache blocking of this executor, from the engine's: KC deeper than the GEMM's
  // (the accumulators stay in registers across every tap of a KC block, and C goes back to
  // memory once per block), cut into equal blocks of at most kMaxDepth; the weights are
  // packed with the same KC (pack_weights and run_tile must agree).
  static constexpr int64_t kMaxDepth = 1024;
  static Blocking blocking(const Blocking& engine, int64_t depth) {
    Blocking bl = engine;
    const int64_t blocks = std::max<int64_t>(1, ceil_div(depth, kMaxDepth));
    bl.kc = std::min(kMaxDepth, round_up(ceil_div(depth, blocks), 16));
    // MC rows of C stay in L2 while the KC blocks accumulate into them (a 256-row block
    // measured as fast as 128–1024 on Zen 4; 64 was slower). run_tile may cut it further to
    // bound its row-pointer table.
    bl.mc = round_up(256, engine.mr);
    return bl;
  }

  // Rows (pixels) [m0, m1) × columns (output channels) [n0, n1) with the weights prepacked
  // as a (R·S·Cin) × Cout matrix, depth in (r, s, c) order, with blocking(engine, depth()).
  void run_tile(const GemmEngine<T>& e, const Prepacked<T>& weights, int64_t m0, int64_t m1,
                int64_t n0, int64_t n1) const {
    assert(!act.row_bias);  // the bias is per output channel: a column of C
    const int64_t K = depth();
    Blocking bl = blocking(e.blocking, K);
    const int mr = bl.mr, nr = bl.nr;
    const auto fn = e.ukernel.fn_indirect_a;
    // Zeros for taps in the padding: a segment is at most one KC block deep.
    alignas(64) static const T zeros[kMaxDepth] = {};
    // Segments of a KC block: one tap's channel range each; at most ceil(KC / Cin) + 1.
    const int64_t max_seg = std::min<int64_t>(R * S, ceil_div(bl.kc, Cin) + 1);
    bl.mc = std::max<int64_t>(mr, std::min<int64_t>(bl.mc, round_down(kPointerTable / max_seg, mr)));
    int64_t seg_len[kMaxDepth + 1], seg_r[kMaxDepth + 1], seg_s[kMaxDepth + 1],
        seg_c0[kMaxDepth + 1];
    const T** ptrs = thread_scratch_as<Scratch::Pointers, const T*>(
        bl.mc * max_seg, "the row-pointer table of an NHWC block");
    const int64_t P = Hout * Wout;

    for (int64_t jc = n0; jc < n1; jc += bl.nc) {
      const int64_t nc = std::min<int64_t>(bl.nc, n1 - jc);
      for (int64_t ic = m0; ic < m1; ic += bl.mc) {
        const int64_t mc = std::min<int64_t>(bl.mc, m1 - ic);
        for (int64_t pc = 0; pc < K; pc += bl.kc) {
          const int64_t kc = std::min<int64_t>(bl.kc, K - pc);
          const bool last = pc + kc == K;
          int64_t nseg = 0;
          for (int64_t d = pc; d < pc + kc; ++nseg) {
            const int64_t tap = d / Cin, c0 = d % Cin;
            seg_len[nseg] = std::min(pc + kc - d, Cin - c0);
            seg_r[nseg] = (tap / S) * dh;
            seg_s[nseg] = (tap % S) * dw;
            seg_c0[nseg] = c0;
            d += seg_len[nseg];
          }
          // The row pointers of every micro-tile of the block: [tile][segment][row].
          for (int64_t ir = 0; ir < mc; ir += mr) {
            const int64_t m = std::min<int64_t>(mr, mc - ir);
            const T** tile = ptrs + (ir / mr) * nseg * mr;
            for (int64_t i = 0; i < mr; ++i) {
              const int64_t q = ic + ir + std::min<int64_t>(i, m - 1);  // pad rows repeat the last pixel
              const int64_t img = q / P, pix = q % P;
              const int64_t ih0 = (pix / Wout) * sh - pad_top, iw0 = (pix % Wout) * sw - pad_left;
              const T* base = in + img * in_sn;
              for (int64_t sg = 0; sg < nseg; ++sg) {
                const int64_t ih = ih0 + seg_r[sg], iw = iw0 + seg_s[sg];
                tile[sg * mr + i] = (ih >= 0 && ih < Hin && iw >= 0 && iw < Win)
                                        ? base + ih * in_sh + iw * in_sw + seg_c0[sg]
                                        : zeros;
              }
            }
          }
          const T* b_block = weights.block(jc, pc, kc);
          for (int64_t jr = 0; jr < nc; jr += nr) {
            interrupt_point();  // mc×nr×kc: a few MFLOP
            const int64_t n = std::min<int64_t>(nr, nc - jr);
            for (int64_t ir = 0; ir < mc; ir += mr) {
              const int64_t m = std::min<int64_t>(mr, mc - ir);
              T* c = out + (ic + ir) * ldo + jc + jr;
              // The last block's store adds the bias and applies ReLU in registers.
              fn(nseg, seg_len, ptrs + (ir / mr) * nseg * mr, b_block + jr * kc, c, ldo, m, n,
                 pc > 0, last && act.col_bias ? act.col_bias + jc + jr : nullptr,
                 last && act.relu);
            }
          }
        }
      }
    }
  }

 private:
  static constexpr int64_t kPointerTable = 8192;  // pointers per MC block (64 KiB)
};

// NHWC forward with unit width dilation, channels of the image contiguous across columns
// (one group): for output pixel q and kernel row r, the S·Cin values of A at depth
// (r, 0..S−1, 0..Cin−1) are one contiguous run of the input (columns iw0..iw0+S−1, every
// channel). So a pixel needs R segments of S·Cin steps, not R·S of Cin: for few channels
// (RGB stems, 3 channels: one segment of 33 steps instead of 11 of 3) the kernel runs long
// segments and the pointer table is S times smaller. Rows in the vertical padding read the
// shared zero buffer; a pixel whose window crosses the left or right border has its window
// rows copied, zero-filled, into the thread's A-block scratch (at most MC·KC elements: the
// bound of a packed A block), the other pixels are read in place.
template <typename T>
struct IndirectNhwcRows {
  const T* in;
  int64_t in_sn, in_sh;  // the column stride is Cin (why_not of the executor)
  int64_t Cin, Hin, Win;
  T* out;
  int64_t ldo;
  int64_t Hout, Wout;
  int64_t R, S, sh, sw, dh;
  int64_t pad_top, pad_left;
  BiasActivation<T> act;

  static IndirectNhwcRows forward(const ConvPlan& p, const T* x, T* y,
                                  const BiasActivation<T>& act) {
    IndirectNhwcRows d;
    d.in = x;
    d.in_sn = p.xs_n; d.in_sh = p.xs_h;
    d.Cin = p.Cg; d.Hin = p.H; d.Win = p.W;
    d.out = y;
    d.ldo = p.ys_w;
    d.Hout = p.Ho; d.Wout = p.Wo;
    d.R = p.R; d.S = p.S; d.sh = p.sh; d.sw = p.sw; d.dh = p.dh;
    d.pad_top = p.pad_t; d.pad_left = p.pad_l;
    d.act = act;
    return d;
  }

  int64_t row_depth() const { return S * Cin; }
  int64_t depth() const { return R * S * Cin; }
  // The same blocking as IndirectNhwc (the weights are packed alike).
  static Blocking blocking(const Blocking& engine, int64_t depth) {
    return IndirectNhwc<T>::blocking(engine, depth);
  }

  // Rows (pixels) [m0, m1) × columns [n0, n1), weights prepacked as a (R·S·Cin) × Cout
  // matrix, depth in (r, s, c) order, with blocking(engine, depth()).
  void run_tile(const GemmEngine<T>& e, const Prepacked<T>& weights, int64_t m0, int64_t m1,
                int64_t n0, int64_t n1) const {
    assert(!act.row_bias);
    const int64_t K = depth(), L = row_depth();
    Blocking bl = blocking(e.blocking, K);
    const int mr = bl.mr, nr = bl.nr;
    const auto fn = e.ukernel.fn_indirect_a;
    alignas(64) static const T zeros[IndirectNhwc<T>::kMaxDepth] = {};
    // Segments of a KC block: pieces of kernel rows; at most ceil(KC / L) + 1.
    const int64_t max_seg = std::min<int64_t>(R, ceil_div(bl.kc, L) + 1);
    bl.mc = std::max<int64_t>(mr, std::min<int64_t>(bl.mc, round_down(kPointerTable / max_seg, mr)));
    int64_t seg_len[IndirectNhwc<T>::kMaxDepth + 1], seg_dr[IndirectNhwc<T>::kMaxDepth + 1],
        seg_off[IndirectNhwc<T>::kMaxDepth + 1];
    const T** ptrs = thread_scratch_as<Scratch::Pointers, const T*>(
        bl.mc * max_seg, "the row-pointer table of an NHWC block");
    const int64_t P = Hout * Wout;
    // Output columns whose window lies inside the image: [ow_lo, ow_hi).
    const int64_t ow_lo = std::min<int64_t>(Wout, ceil_div(pad_left, sw));
    const int64_t ow_hi = std::max<int64_t>(
        ow_lo, std::min<int64_t>(Wout, Win - S + pad_left >= 0 ? (Win - S + pad_left) / sw + 1 : 0));
    const bool sides = ow_lo > 0 || ow_hi < Wout;  // some windows cross a side border

    for (int64_t jc = n0; jc < n1; jc += bl.nc) {
      const int64_t nc = std::min<int64_t>(bl.nc, n1 - jc);
      for (int64_t ic = m0; ic < m1; ic += bl.mc) {
        const int64_t mc = std::min<int64_t>(bl.mc, m1 - ic);
        for (int64_t pc = 0; pc < K; pc += bl.kc) {
          const int64_t kc = std::min<int64_t>(bl.kc, K - pc);
          const bool last = pc + kc == K;
          int64_t nseg = 0;
          for (int64_t d = pc; d < pc + kc; ++nseg) {
            const int64_t r = d / L, off = d % L;
            seg_len[nseg] = std::min(pc + kc - d, L - off);
            seg_dr[nseg] = r * dh;
            seg_off[nseg] = off;
            d += seg_len[nseg];
          }
          T* copy = sides ? thread_scratch_as<Scratch::PackA, T>(
                                mc * kc, "the border windows of an NHWC block")
                          : nullptr;
          // The block's pixels in order: q = (img·Hout + oh)·Wout + ow, stepped, not divided.
          int64_t img = ic / P, oh = (ic % P) / Wout, ow = ic % Wout;
          for (int64_t ir = 0; ir < mc; ir += mr) {
            const int64_t m = std::min<int64_t>(mr, mc - ir);
            const T** tile = ptrs + (ir / mr) * nseg * mr;
            for (int64_t i = 0; i < m; ++i) {
              const int64_t ih0 = oh * sh - pad_top, iw0 = ow * sw - pad_left;
              const T* base = in + img * in_sn;
              const bool inside = ow >= ow_lo && ow < ow_hi;
              for (int64_t sg = 0; sg < nseg; ++sg) {
                const int64_t ih = ih0 + seg_dr[sg];
                if (ih < 0 || ih >= Hin) {
                  tile[sg * mr + i] = zeros;
                } else if (inside) {
                  tile[sg * mr + i] = base + ih * in_sh + iw0 * Cin + seg_off[sg];
                } else {
                  // Depth e of the row is column iw0 + e / Cin, channel e % Cin: the
                  // columns in the image are one run at e = Cin·(−iw0) onwards.
                  const int64_t e0 = seg_off[sg], e1 = e0 + seg_len[sg];
                  const int64_t lo = std::clamp<int64_t>(-iw0 * Cin, e0, e1);
                  const int64_t hi = std::clamp<int64_t>((Win - iw0) * Cin, lo, e1);
                  const T* row = base + ih * in_sh;
                  std::fill(copy, copy + (lo - e0), T(0));
                  if (hi > lo)
                    std::copy(row + (iw0 * Cin + lo), row + (iw0 * Cin + hi), copy + (lo - e0));
                  std::fill(copy + (hi - e0), copy + (e1 - e0), T(0));
                  tile[sg * mr + i] = copy;
                  copy += seg_len[sg];
                }
              }
              if (++ow == Wout) {
                ow = 0;
                if (++oh == Hout) oh = 0, ++img;
              }
            }
            for (int64_t i = m; i < mr; ++i)  // pad rows repeat the last pixel
              for (int64_t sg = 0; sg < nseg; ++sg) tile[sg * mr + i] = tile[sg * mr + m - 1];
          }
          const T* b_block = weights.block(jc, pc, kc);
          for (int64_t jr = 0; jr < nc; jr += nr) {
            interrupt_point();
            const int64_t n = std::min<int64_t>(nr, nc - jr);
            for (int64_t ir = 0; ir < mc; ir += mr) {
              const int64_t m = std::min<int64_t>(mr, mc - ir);
              T* c = out + (ic + ir) * ldo + jc + jr;
              fn(nseg, seg_len, ptrs + (ir / mr) * nseg * mr, b_block + jr * kc, c, ldo, m, n,
                 pc > 0, last && act.col_bias ? act.col_bias + jc + jr : nullptr,
                 last && act.relu);
            }
          }
        }
      }
    }
  }

 private:
  static constexpr int64_t kPointerTable = 8192;
};

}  // namespace convcore::detail
