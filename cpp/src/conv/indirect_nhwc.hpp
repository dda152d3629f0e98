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

  // Rows (pixels) [m0, m1) × columns (output channels) [n0, n1) with the weights prepacked
  // as a (R·S·Cin) × Cout matrix, depth in (r, s, c) order.
  void run_tile(const GemmEngine<T>& e, const Prepacked<T>& weights, int64_t m0, int64_t m1,
                int64_t n0, int64_t n1) const {
    const Blocking& bl = e.blocking;
    const int mr = bl.mr, nr = bl.nr;
    const int64_t K = depth();
    const auto fn = e.ukernel.fn_indirect_a;
    // Zeros for taps in the padding: a segment is at most one KC block deep, and the
    // blocking never derives KC > kMaxKC (runtime.cpp checks it).
    alignas(64) static const T zeros[kMaxKC] = {};
    const T* rows[kMaxTile];
    int64_t ih0[kMaxTile], iw0[kMaxTile], base[kMaxTile];
    const int64_t P = Hout * Wout;

    for (int64_t jc = n0; jc < n1; jc += bl.nc) {
      const int64_t nc = std::min<int64_t>(bl.nc, n1 - jc);
      for (int64_t pc = 0; pc < K; pc += bl.kc) {
        const int64_t kc = std::min<int64_t>(bl.kc, K - pc);
        const bool last = pc + kc == K;
        const T* b_block = weights.block(jc, pc, kc);
        for (int64_t ir = m0; ir < m1; ir += mr) {
          interrupt_point();  // mr×nc×kc: a few MFLOP
          const int64_t m = std::min<int64_t>(mr, m1 - ir);
          for (int64_t i = 0; i < mr; ++i) {
            const int64_t q = ir + std::min<int64_t>(i, m - 1);  // pad rows repeat the last pixel
            const int64_t img = q / P, pix = q % P;
            ih0[i] = (pix / Wout) * sh - pad_top;
            iw0[i] = (pix % Wout) * sw - pad_left;
            base[i] = img * in_sn;
          }
          for (int64_t jr = 0; jr < nc; jr += nr) {
            const int64_t n = std::min<int64_t>(nr, nc - jr);
            T* c = out + ir * ldo + jc + jr;
            // Depth segments: one tap's channel range each.
            for (int64_t d = pc; d < pc + kc;) {
              const int64_t tap = d / Cin, c0 = d % Cin;
              const int64_t len = std::min(pc + kc - d, Cin - c0);
              const int64_t r = tap / S, s = tap % S;
              for (int64_t i = 0; i < mr; ++i) {
                const int64_t ih = ih0[i] + r * dh, iw = iw0[i] + s * dw;
                rows[i] = (ih >= 0 && ih < Hin && iw >= 0 && iw < Win)
                              ? in + base[i] + ih * in_sh + iw * in_sw + c0
                              : zeros;
              }
              fn(len, rows, b_block + jr * kc + (d - pc) * nr, c, ldo, m, n, pc > 0 || d > pc);
              d += len;
            }
            if (last && act.active()) act(c, ldo, ir, jc + jr, m, n);
          }
        }
      }
    }
  }
};

}  // namespace convcore::detail
