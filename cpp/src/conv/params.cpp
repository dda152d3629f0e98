// Validation of the hyperparameters and the output-size rule.
#include <algorithm>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>

#include "convcore/conv2d.hpp"
#include "plan.hpp"
#include "../runtime/checked.hpp"

namespace convcore {
namespace {

[[noreturn]] void bad(const std::string& msg) { throw std::invalid_argument(msg); }

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
    std::ostringstream os;
    os << "kernel " << ax << " " << kernel;
    if (dilation > 1) os << " (effective " << k_eff << " with dilation " << dilation << ")";
    os << " is larger than the padded input " << ax << " " << padded << " (" << in << " + "
       << pad_begin << " + " << pad_end << "): the filter does not fit anywhere";
    throw ShapeError(os.str());
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
  std::ostringstream os;
  os.precision(12);
  os << "output " << ax << " is not an integer: (" << (rows ? "H" : "W") << " \u2212 F + P)/S + 1 = ("
     << in << " \u2212 " << k_eff << " + " << (pad_begin + pad_end) << ")/" << stride
     << " + 1 = " << (double(span) / double(stride) + 1.0)
     << " (shape_rule='strict'" << (dilation > 1 ? "; F is the dilated kernel size" : "") << "). "
     << "Fixes: pad so that " << (rows ? "H" : "W") << " \u2212 F + P is divisible by the stride "
     << "(e.g. " << (stride - rem) << " more " << (rows ? "row" : "column") << (stride - rem > 1 ? "s" : "")
     << " of padding), change the stride, or pass shape_rule='crop' (drop the last " << rem << " "
     << (rows ? "row" : "column") << (rem > 1 ? "s" : "") << ", as PyTorch does) or shape_rule='pad' "
     << "(zero-pad " << (stride - rem) << " " << (rows ? "row" : "column") << (stride - rem > 1 ? "s" : "")
     << " at the " << (rows ? "bottom" : "right") << ")";
  throw ShapeError(os.str());
}

namespace detail {

ConvPlan make_plan(const Conv2dParams& prm, OpKind kind) {
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
