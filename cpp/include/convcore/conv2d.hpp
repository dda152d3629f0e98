// convcore: 2-D convolution — parameters, the output-size rule, forward and backward passes.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace convcore {

enum class Layout { NCHW, NHWC };
// How to treat (in − kernel_eff + pads) not divisible by the stride.
enum class ShapeRule { Strict, Crop, Pad };
enum class Activation { None, Relu };

// Raised when the hyperparameters don't fit the input (the Python ShapeError).
class ShapeError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// What the caller asks for. Weight layout follows the activation layout:
// NCHW: x (N,C,H,W), w (K,C/groups,R,S), y (N,K,Ho,Wo);
// NHWC: x (N,H,W,C), w (K,R,S,C/groups), y (N,Ho,Wo,K).
struct Conv2dParams {
  int64_t batch = 1, in_channels = 1, in_h = 1, in_w = 1;
  int64_t out_channels = 1, kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  int64_t groups = 1;
  Layout layout = Layout::NCHW;
  ShapeRule shape_rule = ShapeRule::Strict;
};

// A validated problem: every size, the resolved padding and the element strides of the
// three tensors, so the executors make no further decisions (cf. oneDNN's conf structs).
struct Conv2dPlan {
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
};

// Validates and resolves; throws ShapeError (sizes that don't fit) or
// std::invalid_argument (bad hyperparameters), std::overflow_error for sizes that
// overflow. Messages name the argument, the value and the rule.
Conv2dPlan make_plan(const Conv2dParams& params);

// Output size along one axis under a shape rule; `axis` names it in error messages.
// Returns {out, extra_pad_end}.
struct AxisSize { int64_t out; int64_t extra_pad_end; };
AxisSize conv_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t dilation,
                          int64_t pad_begin, int64_t pad_end, ShapeRule rule, const char* axis);

// y = act(conv(x, w) + bias); bias may be null.
template <typename T>
void conv2d_forward(const Conv2dPlan& plan, const T* x, const T* w, const T* bias, T* y,
                    Activation act = Activation::None);
// dx = ∂L/∂x given dy.
template <typename T>
void conv2d_backward_data(const Conv2dPlan& plan, const T* dy, const T* w, T* dx);
// dw = ∂L/∂w given dy and x (the sum over every position and image).
template <typename T>
void conv2d_backward_weight(const Conv2dPlan& plan, const T* dy, const T* x, T* dw);
// db[k] = sum of dy over images and positions of channel k.
template <typename T>
void conv2d_backward_bias(const Conv2dPlan& plan, const T* dy, T* db);

// The executor each pass uses for this plan (chosen from the shape alone; see
// cpp/src/conv/algorithms.hpp): for tests and diagnostics.
struct Conv2dAlgorithms {
  const char* forward;
  const char* backward_data;
  const char* backward_weight;
};
Conv2dAlgorithms conv2d_algorithms(const Conv2dPlan& plan);

namespace reference {
// Direct loops in the obvious order: the oracle for the C++ tests. Single-threaded.
template <typename T>
void conv2d_forward(const Conv2dPlan& plan, const T* x, const T* w, const T* bias, T* y,
                    Activation act = Activation::None);
template <typename T>
void conv2d_backward_data(const Conv2dPlan& plan, const T* dy, const T* w, T* dx);
template <typename T>
void conv2d_backward_weight(const Conv2dPlan& plan, const T* dy, const T* x, T* dw);
template <typename T>
void gemm(int64_t m, int64_t n, int64_t k, const T* a, int64_t rsa, int64_t csa,
          const T* b, int64_t rsb, int64_t csb, T* c, int64_t ldc, bool accumulate);
}  // namespace reference

}  // namespace convcore
