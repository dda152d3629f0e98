// convcore: 2-D convolution — descriptor → primitive.
//
//   convcore::Conv2dDesc desc;                 // what to compute
//   desc.params.batch = 8; desc.params.in_channels = 3; ...; desc.dtype = DataType::Float32;
//   convcore::Conv2dPrimitive conv(desc);      // validated once, executors chosen
//   conv.forward(x, w, bias, y);               // no further decisions
//   conv.backward_data(dy, w, dx);
//   conv.backward_weight(dy, x, dw);
//   conv.backward_bias(dy, db);
//
// Creating a primitive validates the descriptor (ShapeError / std::invalid_argument /
// std::overflow_error, messages naming the argument, the value and the rule), resolves the
// shape rule, takes the active ISA's kernels and picks one implementation per pass from an
// ordered list (docs/design.md lists them and why each exists). A primitive can hold
// prepacked weights (set_weights), which forward and backward-data then use when passed
// w == nullptr. Executing is const and thread-safe; set_weights is not concurrent-safe
// with execution.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "convcore/config.hpp"

namespace convcore {

enum class Layout { NCHW, NHWC };
// How to treat (in − kernel_eff + pads) not divisible by the stride.
enum class ShapeRule { Strict, Crop, Pad };
enum class Activation { None, Relu };
enum class DataType { Float32, Float64 };
// The operation a descriptor asks for. Depthwise convolution joins this list as its own
// kind.
//   Conv2d: the convolutional layer (parameters shared across positions).
//   LocallyConnected2d: every output position has its own filters (no sharing; groups and
//     dilation must be 1). Weights NCHW (Ho, Wo, K, C, R, S), NHWC (Ho, Wo, K, R, S, C);
//     bias NCHW (K, Ho, Wo), NHWC (Ho, Wo, K); backward_weight and backward_bias sum over
//     the batch only.
//   ConvTranspose2d: transposed convolution (PyTorch's conv_transpose2d), the adjoint of a
//     conv2d. The params describe the transposed operation itself: x (N, in_channels, in_h,
//     in_w) → y (N, out_channels, out_h, out_w) with
//       out_h = (in_h − 1)·stride_h − pad_top − pad_bottom + dilation_h·(kernel_h − 1)
//               + output_padding_h + 1
//     (output_padding < stride or < dilation per axis, as PyTorch requires; shape_rule is
//     not used). Weights NCHW (in_channels, out_channels/groups, R, S), NHWC (in_channels,
//     R, S, out_channels/groups); bias (out_channels). Its passes run the conv2d
//     machinery of the equivalent convolution (y's shape → x's shape, same weights):
//     forward = that convolution's backward-data (bias and ReLU fused), backward_data =
//     its forward, backward_weight = its backward-weight with x and dy exchanged.
enum class OpKind { Conv2d, LocallyConnected2d, ConvTranspose2d };
// The passes a primitive computes; the bias gradient is part of backward_weight's family
// but has a single implementation (backward_bias).
enum class Pass { Forward, BackwardData, BackwardWeight };

const char* pass_name(Pass pass);  // "forward", "backward_data", "backward_weight"
template <typename T>
constexpr DataType data_type_of();
template <>
constexpr DataType data_type_of<float>() { return DataType::Float32; }
template <>
constexpr DataType data_type_of<double>() { return DataType::Float64; }

// Raised when the hyperparameters don't fit the input (the Python ShapeError).
class ShapeError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Sizes and hyperparameters. Weight layout follows the activation layout:
// NCHW: x (N,C,H,W), w (K,C/groups,R,S), y (N,K,Ho,Wo);
// NHWC: x (N,H,W,C), w (K,R,S,C/groups), y (N,Ho,Wo,K).
struct Conv2dParams {
  int64_t batch = 1, in_channels = 1, in_h = 1, in_w = 1;
  int64_t out_channels = 1, kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  int64_t groups = 1;
  // ConvTranspose2d only: extra rows (columns) at the bottom (right) of the output.
  int64_t output_padding_h = 0, output_padding_w = 0;
  Layout layout = Layout::NCHW;
  ShapeRule shape_rule = ShapeRule::Strict;
};

// How the forward pass may compute the convolution.
//   Exact: direct / GEMM executors — every output is the sum of its taps' products (only the
//     summation order varies between executors), padding never multiplied into a result.
//   Winograd: F(4×4, 3×3) for 3×3, stride-1, dilation-1 Conv2d layers (any padding,
//     groups): about 4× fewer multiplications, at a bounded loss of accuracy (float32: the
//     largest error is ~1e-5 of the largest output on the suite's layers, about 30× the
//     exact error; see docs/design.md §3). The
//     backward passes stay exact. A descriptor asking for Winograd on a layer it cannot
//     compute is rejected by the primitive (std::invalid_argument naming the rule).
enum class Algorithm { Exact, Winograd };
const char* algorithm_name(Algorithm algorithm);  // "exact", "winograd"

// What to compute: the operation, its sizes and hyperparameters, the element type, and
// the algorithm the forward pass may use (the default stays exact).
struct Conv2dDesc {
  OpKind kind = OpKind::Conv2d;
  Conv2dParams params;
  DataType dtype = DataType::Float32;
  Algorithm algorithm = Algorithm::Exact;
};

// What a validated descriptor resolves to (for ConvTranspose2d: the transposed operation's
// own view — out_h/out_w its output, input_elements its x, output_elements its y).
struct Conv2dShape {
  int64_t out_h = 0, out_w = 0;
  // Padding after the shape rule ("pad" grows bottom/right).
  int64_t pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  // Element counts of the tensors.
  int64_t input_elements = 0, weight_elements = 0, output_elements = 0, bias_elements = 0;
  double flops = 0;  // 2·N·K·Ho·Wo·(C/groups)·R·S per pass
};

// Output size along one axis under a shape rule; `axis` names it in error messages.
// Returns {out, extra_pad_end}. Throws like primitive creation.
struct AxisSize { int64_t out; int64_t extra_pad_end; };
AxisSize conv_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t dilation,
                          int64_t pad_begin, int64_t pad_end, ShapeRule rule, const char* axis);

// Options for primitive creation; the defaults choose everything.
struct PrimitiveOptions {
  // Implementation names to force per pass ("" = the first preferred entry of the list).
  // A forced entry must apply to the problem (else std::invalid_argument naming why not).
  // For tests and diagnostics: the choice affects speed and the last bits, never validity.
  // For ConvTranspose2d each pass's names are those of the conv2d list it runs (forward:
  // the backward-data list, backward_data: the forward list).
  std::string forward, backward_data, backward_weight;
};

// One entry of a pass's implementation list, as judged for one problem.
struct ImplementationStatus {
  std::string name;
  bool applies = false;   // can compute this problem
  bool preferred = false; // would be chosen when it is the first applicable and preferred
  std::string reason;     // why it does not apply, or why it is not preferred ("" if both)
};

class Conv2dPrimitive {
 public:
  explicit Conv2dPrimitive(const Conv2dDesc& desc, const PrimitiveOptions& options = {});
  ~Conv2dPrimitive();
  // Move-only: a primitive may own prepacked weights.
  Conv2dPrimitive(Conv2dPrimitive&&) noexcept;
  Conv2dPrimitive& operator=(Conv2dPrimitive&&) noexcept;

  const Conv2dDesc& desc() const;
  const Conv2dShape& shape() const;
  Isa isa() const;  // the ISA whose kernels this primitive runs
  // The implementation each pass runs: chosen at creation, reported and run by construction.
  const char* implementation(Pass pass) const;
  // Every entry of a pass's list, in preference order, judged for this problem.
  std::vector<ImplementationStatus> implementations(Pass pass) const;

  // y = act(conv(x, w) + bias); bias may be null; w null uses the prepacked weights.
  template <typename T>
  void forward(const T* x, const T* w, const T* bias, T* y,
               Activation act = Activation::None) const;
  // dx = ∂L/∂x given dy; w null uses the prepacked weights.
  template <typename T>
  void backward_data(const T* dy, const T* w, T* dx) const;
  // dw = ∂L/∂w given dy and x: the sum over every position and image (parameter sharing).
  template <typename T>
  void backward_weight(const T* dy, const T* x, T* dw) const;
  // db[k] = sum of dy over images and positions of channel k (accumulated in double).
  template <typename T>
  void backward_bias(const T* dy, T* db) const;

  // Packs w for the forward and backward-data implementations and keeps it; calls with
  // w == nullptr then skip the per-call packing. Call again when the weights change.
  template <typename T>
  void set_weights(const T* w);
  void clear_weights();
  bool has_weights() const;

  struct State;  // internal

 private:
  std::unique_ptr<State> state_;
};

}  // namespace convcore
