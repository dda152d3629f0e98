// Validation of the hyperparameters and the output-size rule.
#include <algorithm>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>

#include "convcore/conv2d.hpp"
#include "plan.hpp"
#include "../runtime/checked.hpp"

namespace convcore {
namespace {

[[noreturn]] void bad(const std::string& msg) { throw std::invalid_argument(msg); }

// The messages are built with std::string, not iostreams: built with GCC 13 on Ubuntu
// 24.04 with libstdc++ linked into the extension (ldd listed no libstdc++.so), an
// `ostringstream << int64_t` composing a ShapeError crashed the process (backtrace:
// basic_ostream::_M_insert<long>). The mechanism inside libstdc++ was not pinned down.
std::string num(int64_t v) { return std::to_string(v); }
std::string num12(double v) {  // 12 significant digits, like an ostream's precision(12)
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.12g", v);
  return buf;
}
std::string plural(const char* word, int64_t count) { return count > 1 ? word + std::string("s") : word; }

void require_positive(int64_t v, const char* what, const char* rule = ">= 1") {
  if (v < 1) bad(std::string(what) + " must be " + rule + ", got " + std::to_string(v));
}

int64_t checked_count(std::initializer_list<int64_t> dims, const char* what) {
  const int64_t r = detail::checked_product(dims, what);
  // Every buffer is addressed in bytes as well: keep 8·count representable.
  detail::checked_mul(r, 8, what);
  return r;
}

}  // namespace

AxisSize conv_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t dilation,
                          int64_t pad_begin, int64_t pad_end, ShapeRule rule, const char* axis) {
  const std::string ax(axis);
  if (stride < 1) bad("stride must be >= 1 along the " + ax + ", got " + std::to_string(stride));
  if (dilation < 1) bad("dilation must be >= 1 along the " + ax + ", got " + std::to_string(dilation));
  if (pad_begin < 0 || pad_end < 0)
    bad("padding must be >= 0 along the " + ax + ", got (" + std::to_string(pad_begin) + ", " +
        std::to_string(pad_end) + ")");
  if (kernel < 1) bad("kernel " + ax + " must be >= 1, got " + std::to_string(kernel));
  if (in < 1) bad("input " + ax + " must be >= 1, got " + std::to_string(in));
  // Coordinates along an axis (input + padding + dilated kernel) must stay far from
  // int64's end so no later sum overflows: each term is limited to a quarter of it.
  constexpr int64_t kLimit = std::numeric_limits<int64_t>::max() / 4;
  auto too_large = [&](const std::string& what, const std::string& value) {
    throw std::overflow_error(what + " along the " + ax + " is too large: " + value +
                              " (each of input size, padding and dilation·(kernel − 1) must be "
                              "at most 2**61 − 1)");
  };
  if (kernel > kLimit / dilation)
    too_large("dilation·(kernel − 1)",
              "dilation " + std::to_string(dilation) + ", kernel " + std::to_string(kernel));
  if (in > kLimit) too_large("input size", std::to_string(in));
  if (pad_begin > kLimit || pad_end > kLimit)
    too_large("padding", "(" + std::to_string(pad_begin) + ", " + std::to_string(pad_end) + ")");
  const int64_t k_eff = dilation * (kernel - 1) + 1;
  const int64_t padded = in + pad_begin + pad_end;
  if (k_eff > padded) {
    std::string msg = "kernel " + ax + " " + num(kernel);
    if (dilation > 1) msg += " (effective " + num(k_eff) + " with dilation " + num(dilation) + ")";
    msg += " is larger than the padded input " + ax + " " + num(padded) + " (" + num(in) + " + " +
           num(pad_begin) + " + " + num(pad_end) + "): the filter does not fit anywhere";
    throw ShapeError(msg);
  }
  const int64_t span = padded - k_eff;
  const int64_t rem = span % stride;
  AxisSize out{span / stride + 1, 0};
  if (rem == 0 || rule == ShapeRule::Crop) return out;
  if (rule == ShapeRule::Pad) {
    out.extra_pad_end = stride - rem;
    out.out += 1;
    return out;
  }
  const bool rows = ax == "height";
  const std::string H = rows ? "H" : "W", unit = rows ? "row" : "column";
  throw ShapeError(
      "output " + ax + " is not an integer: (" + H + " \u2212 F + P)/S + 1 = (" + num(in) +
      " \u2212 " + num(k_eff) + " + " + num(pad_begin + pad_end) + ")/" + num(stride) +
      " + 1 = " + num12(double(span) / double(stride) + 1.0) + " (shape_rule='strict'" +
      (dilation > 1 ? "; F is the dilated kernel size" : "") + "). Fixes: pad so that " + H +
      " \u2212 F + P is divisible by the stride (e.g. " + num(stride - rem) + " more " +
      plural(unit.c_str(), stride - rem) + " of padding), change the stride, or pass "
      "shape_rule='crop' (drop the last " + num(rem) + " " + plural(unit.c_str(), rem) +
      ", as PyTorch does) or shape_rule='pad' (zero-pad " + num(stride - rem) + " " +
      plural(unit.c_str(), stride - rem) + " at the " + (rows ? "bottom" : "right") + ")");
}

namespace detail {

namespace {

// The output size of a transposed convolution along one axis (the equivalent convolution's
// input size): (in − 1)·stride − pads + dilation·(kernel − 1) + output_padding + 1.
int64_t transposed_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t dilation,
                               int64_t pad_begin, int64_t pad_end, int64_t output_padding,
                               const char* axis) {
  const std::string ax(axis);
  if (in < 1) bad("conv_transpose2d: input " + ax + " must be >= 1, got " + num(in));
  if (kernel < 1) bad("conv_transpose2d: kernel " + ax + " must be >= 1, got " + num(kernel));
  if (stride < 1) bad("conv_transpose2d: stride must be >= 1 along the " + ax + ", got " + num(stride));
  if (dilation < 1)
    bad("conv_transpose2d: dilation must be >= 1 along the " + ax + ", got " + num(dilation));
  if (pad_begin < 0 || pad_end < 0)
    bad("conv_transpose2d: padding must be >= 0 along the " + ax + ", got (" + num(pad_begin) +
        ", " + num(pad_end) + ")");
  if (output_padding < 0)
    bad("conv_transpose2d: output_padding must be >= 0 along the " + ax + ", got " +
        num(output_padding));
  if (output_padding >= stride && output_padding >= dilation)
    bad("conv_transpose2d: output_padding must be smaller than either stride or dilation "
        "along the " + ax + " (PyTorch's rule), got output_padding " + num(output_padding) +
        " with stride " + num(stride) + " and dilation " + num(dilation));
  constexpr int64_t kLimit = std::numeric_limits<int64_t>::max() / 8;
  const __int128 out = __int128(in - 1) * stride - pad_begin - pad_end +
                       __int128(dilation) * (kernel - 1) + output_padding + 1;
  if (out > kLimit || in > kLimit || pad_begin > kLimit || pad_end > kLimit)
    throw std::overflow_error("conv_transpose2d: the output " + ax +
                              " is too large (stride, dilation, kernel and input size)");
  if (out < 1) {
    throw ShapeError("conv_transpose2d: output " + ax + " is not positive: (H_in − 1)·stride − "
                     "padding + dilation·(kernel − 1) + output_padding + 1 = (" + num(in) +
                     " − 1)·" + num(stride) + " − " + num(pad_begin + pad_end) + " + " +
                     num(dilation) + "·(" + num(kernel) + " − 1) + " + num(output_padding) +
                     " + 1 = " + num(int64_t(out)) + "; reduce the padding");
  }
  return int64_t(out);
}

// The plan of a transposed convolution: the equivalent convolution's (plan.hpp).
ConvPlan make_transposed_plan(const Conv2dParams& prm) {
  if (prm.batch < 0) bad("batch size must be >= 0, got " + std::to_string(prm.batch));
  require_positive(prm.in_channels, "in_channels");
  require_positive(prm.out_channels, "out_channels");
  require_positive(prm.groups, "groups");
  if (prm.in_channels % prm.groups != 0)
    bad("groups must divide in_channels: in_channels=" + std::to_string(prm.in_channels) +
        " is not divisible by groups=" + std::to_string(prm.groups));
  if (prm.out_channels % prm.groups != 0)
    bad("groups must divide out_channels: out_channels=" + std::to_string(prm.out_channels) +
        " is not divisible by groups=" + std::to_string(prm.groups));
  const int64_t out_h =
      transposed_output_size(prm.in_h, prm.kernel_h, prm.stride_h, prm.dilation_h, prm.pad_top,
                             prm.pad_bottom, prm.output_padding_h, "height");
  const int64_t out_w =
      transposed_output_size(prm.in_w, prm.kernel_w, prm.stride_w, prm.dilation_w,
                             prm.pad_left, prm.pad_right, prm.output_padding_w, "width");
  // The equivalent convolution: out_h + pad_top + pad_bottom − output_padding − k_eff =
  // (in_h − 1)·stride, so it has exactly in_h outputs when its end padding is
  // pad_bottom − output_padding. Where that is negative (output_padding > pad_bottom) the
  // last output_padding − pad_bottom rows are read by no window: the end padding is 0,
  // 'crop' drops what does not fit, and the output count is clamped to in_h below (only
  // when output_padding ≥ stride, which dilation > stride allows).
  Conv2dParams eq = prm;
  eq.in_channels = prm.out_channels;
  eq.out_channels = prm.in_channels;
  eq.in_h = out_h;
  eq.in_w = out_w;
  eq.pad_bottom = std::max<int64_t>(0, prm.pad_bottom - prm.output_padding_h);
  eq.pad_right = std::max<int64_t>(0, prm.pad_right - prm.output_padding_w);
  eq.output_padding_h = eq.output_padding_w = 0;
  eq.shape_rule = ShapeRule::Crop;
  ConvPlan p = make_plan(eq, OpKind::Conv2d);
  if (p.Ho != prm.in_h || p.Wo != prm.in_w) {
    p.Ho = prm.in_h;
    p.Wo = prm.in_w;
    if (p.nchw()) {
      p.ys_w = 1; p.ys_h = p.Wo; p.ys_c = p.Ho * p.Wo; p.ys_n = p.K * p.Ho * p.Wo;
    } else {
      p.ys_c = 1; p.ys_w = p.K; p.ys_h = p.Wo * p.K; p.ys_n = p.Ho * p.Wo * p.K;
    }
    p.y_size = checked_count({p.N, p.K, p.Ho, p.Wo}, "input");
  }
  p.kind = OpKind::ConvTranspose2d;
  p.p = prm;
  return p;
}

}  // namespace

ConvPlan make_plan(const Conv2dParams& prm, OpKind kind) {
  if (kind == OpKind::ConvTranspose2d) return make_transposed_plan(prm);
  if (kind == OpKind::LocallyConnected2d) {
    if (prm.groups != 1)
      bad("locally_connected2d: groups must be 1 (every position has its own filters), got " +
          std::to_string(prm.groups));
    if (prm.dilation_h != 1 || prm.dilation_w != 1)
      bad("locally_connected2d: dilation must be 1, got (" + std::to_string(prm.dilation_h) +
          ", " + std::to_string(prm.dilation_w) + ")");
  }
  if (prm.batch < 0) bad("batch size must be >= 0, got " + std::to_string(prm.batch));
  require_positive(prm.in_channels, "in_channels");
  require_positive(prm.out_channels, "out_channels");
  require_positive(prm.groups, "groups");
  if (prm.in_channels % prm.groups != 0)
    bad("groups must divide in_channels: in_channels=" + std::to_string(prm.in_channels) +
        " is not divisible by groups=" + std::to_string(prm.groups));
  if (prm.out_channels % prm.groups != 0)
    bad("groups must divide out_channels: out_channels=" + std::to_string(prm.out_channels) +
        " is not divisible by groups=" + std::to_string(prm.groups));

  const AxisSize oh = conv_output_size(prm.in_h, prm.kernel_h, prm.stride_h, prm.dilation_h,
                                       prm.pad_top, prm.pad_bottom, prm.shape_rule, "height");
  const AxisSize ow = conv_output_size(prm.in_w, prm.kernel_w, prm.stride_w, prm.dilation_w,
                                       prm.pad_left, prm.pad_right, prm.shape_rule, "width");
  ConvPlan p;
  p.kind = kind;
  p.p = prm;
  p.N = prm.batch;
  p.C = prm.in_channels;
  p.H = prm.in_h;
  p.W = prm.in_w;
  p.K = prm.out_channels;
  p.R = prm.kernel_h;
  p.S = prm.kernel_w;
  p.G = prm.groups;
  p.Cg = p.C / p.G;
  p.Kg = p.K / p.G;
  p.Ho = oh.out;
  p.Wo = ow.out;
  // A stride of at least pad_begin + in puts every output row (column) after the first
  // wholly in the end padding, whatever its exact value: executors see it clamped to that,
  // so coordinates stay small (strides up to 2**63 − 1 are valid hyperparameters).
  p.sh = std::min(prm.stride_h, prm.pad_top + prm.in_h);
  p.sw = std::min(prm.stride_w, prm.pad_left + prm.in_w);
  p.dh = prm.dilation_h;
  p.dw = prm.dilation_w;
  p.pad_t = prm.pad_top;
  p.pad_l = prm.pad_left;
  p.pad_b = prm.pad_bottom + oh.extra_pad_end;
  p.pad_r = prm.pad_right + ow.extra_pad_end;

  // Every input coordinate an executor forms, oh·sh − pad_t + r·dh (and the same along the
  // width, and the full correlation's shifts), lies in [−pad, (out−1)·stride + (k−1)·dilation]:
  // keep that well inside int64 so no coordinate arithmetic can wrap.
  auto check_reach = [](int64_t out, int64_t stride, int64_t kernel, int64_t dilation,
                        const char* axis) {
    const __int128 reach = __int128(out - 1) * stride + __int128(kernel - 1) * dilation;
    if (reach > (__int128(1) << 62))
      throw std::overflow_error(std::string("conv2d: stride, dilation and padding along the ") +
                                axis + " reach input coordinates beyond 2**62");
  };
  check_reach(p.Ho, p.sh, p.R, p.dh, "height");
  check_reach(p.Wo, p.sw, p.S, p.dw, "width");

  p.x_size = checked_count({p.N, p.C, p.H, p.W}, "input");
  p.y_size = checked_count({p.N, p.K, p.Ho, p.Wo}, "output");
  p.w_size = kind == OpKind::LocallyConnected2d
                 ? checked_count({p.Ho, p.Wo, p.K, p.C, p.R, p.S}, "weight")
                 : checked_count({p.K, p.Cg, p.R, p.S}, "weight");
  checked_count({p.K, p.Ho, p.Wo}, "bias");
  // The implicit im2col matrix (taps × output positions) is indexed in int64 too.
  {
    const std::string what = "output of " + std::to_string(p.Ho) + "×" + std::to_string(p.Wo) +
                             " positions times " + std::to_string(p.Cg) + "·" +
                             std::to_string(p.R) + "·" + std::to_string(p.S) +
                             " taps (the im2col view; check padding and stride)";
    checked_count({p.Cg, p.R, p.S, p.Ho, p.Wo}, what.c_str());
  }

  if (prm.layout == Layout::NCHW) {
    p.xs_w = 1; p.xs_h = p.W; p.xs_c = p.H * p.W; p.xs_n = p.C * p.H * p.W;
    p.ys_w = 1; p.ys_h = p.Wo; p.ys_c = p.Ho * p.Wo; p.ys_n = p.K * p.Ho * p.Wo;
    p.ws_s = 1; p.ws_r = p.S; p.ws_c = p.R * p.S; p.ws_k = p.Cg * p.R * p.S;
  } else {
    p.xs_c = 1; p.xs_w = p.C; p.xs_h = p.W * p.C; p.xs_n = p.H * p.W * p.C;
    p.ys_c = 1; p.ys_w = p.K; p.ys_h = p.Wo * p.K; p.ys_n = p.Ho * p.Wo * p.K;
    p.ws_c = 1; p.ws_s = p.Cg; p.ws_r = p.S * p.Cg; p.ws_k = p.R * p.S * p.Cg;
  }
  return p;
}

}  // namespace detail

}  // namespace convcore
