// The internal form of a validated convolution: every size, the resolved padding and the
// element strides of the three tensors, so executors make no further decisions (cf.
// oneDNN's conf structs). Short field names because every executor's index arithmetic
// reads them; the public API (convcore/conv2d.hpp) exposes Conv2dShape instead.
#pragma once

#include <cstdint>

#include "convcore/conv2d.hpp"

namespace convcore::detail {

// ConvTranspose2d: the plan is that of the equivalent convolution — x here is the
// transposed operation's output (C = its out_channels, H × W = its output size), y its
// input (K = its in_channels, Ho × Wo = its input size), w the same weights — so every
// executor runs it unchanged; `p` keeps the transposed operation's own params.
struct ConvPlan {
  OpKind kind = OpKind::Conv2d;
  Algorithm algorithm = Algorithm::Exact;  // the descriptor's (set by the primitive)
  Conv2dParams p;
  int64_t N, C, H, W, K, R, S, G, Cg, Kg, Ho, Wo;
  int64_t sh, sw, dh, dw;
  int64_t pad_t, pad_l, pad_b, pad_r;  // after the shape rule ("pad" grows pad_b/pad_r)
  // element strides: x[n][c][h][w], y[n][k][h][w], w[k][c][r][s] whatever the layout
  int64_t xs_n, xs_c, xs_h, xs_w;
  int64_t ys_n, ys_c, ys_h, ys_w;
  int64_t ws_k, ws_c, ws_r, ws_s;
  int64_t x_size, y_size, w_size;  // element counts
  int64_t P() const { return Ho * Wo; }
  int64_t CgRS() const { return Cg * R * S; }
  double flops() const { return 2.0 * double(N) * K * Ho * Wo * Cg * R * S; }
  bool nchw() const { return p.layout == Layout::NCHW; }
  // Weight operands packed separately: one per group (conv2d), one per output position
  // (locally connected).
  int64_t packed_operands() const { return kind == OpKind::LocallyConnected2d ? Ho * Wo : G; }
  int64_t bias_size() const {
    return kind == OpKind::LocallyConnected2d ? K * Ho * Wo
           : kind == OpKind::ConvTranspose2d  ? C
                                              : K;
  }
};

// The conv2d pass that computes a pass of an operation kind: the transposed convolution's
// forward is the equivalent convolution's backward-data and vice versa.
inline Pass conv_pass(OpKind kind, Pass pass) {
  if (kind != OpKind::ConvTranspose2d) return pass;
  if (pass == Pass::Forward) return Pass::BackwardData;
  if (pass == Pass::BackwardData) return Pass::Forward;
  return pass;
}

// Validates and resolves; throws ShapeError (sizes that don't fit) or
// std::invalid_argument (bad hyperparameters), std::overflow_error for sizes that
// overflow. Messages name the argument, the value and the rule.
ConvPlan make_plan(const Conv2dParams& params, OpKind kind = OpKind::Conv2d);

}  // namespace convcore::detail
