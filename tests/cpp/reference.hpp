// The tests' oracle: direct loops in the obvious order, accumulating in long double, over
// a Problem (every size and element stride of one convolution) computed here from the
// parameters and the shape the library resolved. Single-threaded; never a fast path.
#pragma once

#include <cstdint>
#include <vector>

#include "convcore/conv2d.hpp"

namespace convcore_test {

struct Problem {
  convcore::Conv2dParams params;
  int64_t N, C, H, W, K, R, S, G, Cg, Kg, Ho, Wo;
  int64_t sh, sw, dh, dw;
  int64_t pad_t, pad_l, pad_b, pad_r;  // after the shape rule
  // element strides: x[n][c][h][w], y[n][k][h][w], w[k][c][r][s] whatever the layout
  int64_t xs_n, xs_c, xs_h, xs_w;
  int64_t ys_n, ys_c, ys_h, ys_w;
  int64_t ws_k, ws_c, ws_r, ws_s;
  int64_t x_size, y_size, w_size;
  int64_t CgRS() const { return Cg * R * S; }
  double flops() const { return 2.0 * double(N) * K * Ho * Wo * Cg * R * S; }
};

// Validates through the library (a primitive is created, so it throws what the library
// throws) and lays out the tensors as the layout defines them.
inline Problem make_problem(const convcore::Conv2dParams& prm) {
  const convcore::Conv2dShape sh = convcore::Conv2dPrimitive(convcore::Conv2dDesc{
      convcore::OpKind::Conv2d, prm, convcore::DataType::Float32}).shape();
  Problem p;
  p.params = prm;
  p.N = prm.batch; p.C = prm.in_channels; p.H = prm.in_h; p.W = prm.in_w;
  p.K = prm.out_channels; p.R = prm.kernel_h; p.S = prm.kernel_w; p.G = prm.groups;
  p.Cg = p.C / p.G; p.Kg = p.K / p.G;
  p.Ho = sh.out_h; p.Wo = sh.out_w;
  p.sh = prm.stride_h; p.sw = prm.stride_w; p.dh = prm.dilation_h; p.dw = prm.dilation_w;
  p.pad_t = sh.pad_top; p.pad_b = sh.pad_bottom; p.pad_l = sh.pad_left; p.pad_r = sh.pad_right;
  p.x_size = sh.input_elements; p.y_size = sh.output_elements; p.w_size = sh.weight_elements;
  if (prm.layout == convcore::Layout::NCHW) {
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

// The library's primitive for a problem in dtype T (created now: after any ISA change).
template <typename T>
convcore::Conv2dPrimitive primitive(const Problem& p, const convcore::PrimitiveOptions& opt = {}) {
  return convcore::Conv2dPrimitive(
      convcore::Conv2dDesc{convcore::OpKind::Conv2d, p.params, convcore::data_type_of<T>()}, opt);
}

// One-shot calls of the library through a fresh primitive.
template <typename T>
void conv2d_forward(const Problem& p, const T* x, const T* w, const T* bias, T* y,
                    convcore::Activation act = convcore::Activation::None) {
  primitive<T>(p).forward(x, w, bias, y, act);
}
template <typename T>
void conv2d_backward_data(const Problem& p, const T* dy, const T* w, T* dx) {
  primitive<T>(p).backward_data(dy, w, dx);
}
template <typename T>
void conv2d_backward_weight(const Problem& p, const T* dy, const T* x, T* dw) {
  primitive<T>(p).backward_weight(dy, x, dw);
}
template <typename T>
void conv2d_backward_bias(const Problem& p, const T* dy, T* db) {
  primitive<T>(p).backward_bias(dy, db);
}

namespace reference {

using acc_t = long double;

inline int64_t xoff(const Problem& p, int64_t n, int64_t c, int64_t h, int64_t w) {
  return n * p.xs_n + c * p.xs_c + h * p.xs_h + w * p.xs_w;
}
inline int64_t yoff(const Problem& p, int64_t n, int64_t k, int64_t h, int64_t w) {
  return n * p.ys_n + k * p.ys_c + h * p.ys_h + w * p.ys_w;
}
inline int64_t woff(const Problem& p, int64_t k, int64_t c, int64_t r, int64_t s) {
  return k * p.ws_k + c * p.ws_c + r * p.ws_r + s * p.ws_s;
}

template <typename T>
void conv2d_forward(const Problem& p, const T* x, const T* w, const T* bias, T* y,
                    convcore::Activation act = convcore::Activation::None) {
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t k = 0; k < p.K; ++k) {
      const int64_t g = k / p.Kg;
      for (int64_t oh = 0; oh < p.Ho; ++oh)
        for (int64_t ow = 0; ow < p.Wo; ++ow) {
          acc_t s = 0;
          for (int64_t c = 0; c < p.Cg; ++c)
            for (int64_t r = 0; r < p.R; ++r)
              for (int64_t q = 0; q < p.S; ++q) {
                const int64_t ih = oh * p.sh - p.pad_t + r * p.dh;
                const int64_t iw = ow * p.sw - p.pad_l + q * p.dw;
                if (ih < 0 || ih >= p.H || iw < 0 || iw >= p.W) continue;
                s += acc_t(x[xoff(p, n, g * p.Cg + c, ih, iw)]) * acc_t(w[woff(p, k, c, r, q)]);
              }
          if (bias) s += bias[k];
          T v = T(s);
          if (act == convcore::Activation::Relu && v < T(0)) v = T(0);
          y[yoff(p, n, k, oh, ow)] = v;
        }
    }
}

template <typename T>
void conv2d_backward_data(const Problem& p, const T* dy, const T* w, T* dx) {
  std::vector<acc_t> acc(static_cast<size_t>(p.x_size), 0);
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t k = 0; k < p.K; ++k) {
      const int64_t g = k / p.Kg;
      for (int64_t oh = 0; oh < p.Ho; ++oh)
        for (int64_t ow = 0; ow < p.Wo; ++ow) {
          const acc_t d = dy[yoff(p, n, k, oh, ow)];
          for (int64_t c = 0; c < p.Cg; ++c)
            for (int64_t r = 0; r < p.R; ++r)
              for (int64_t q = 0; q < p.S; ++q) {
                const int64_t ih = oh * p.sh - p.pad_t + r * p.dh;
                const int64_t iw = ow * p.sw - p.pad_l + q * p.dw;
                if (ih < 0 || ih >= p.H || iw < 0 || iw >= p.W) continue;
                acc[xoff(p, n, g * p.Cg + c, ih, iw)] += d * acc_t(w[woff(p, k, c, r, q)]);
              }
        }
    }
  for (int64_t i = 0; i < p.x_size; ++i) dx[i] = T(acc[i]);
}

template <typename T>
void conv2d_backward_weight(const Problem& p, const T* dy, const T* x, T* dw) {
  for (int64_t k = 0; k < p.K; ++k) {
    const int64_t g = k / p.Kg;
    for (int64_t c = 0; c < p.Cg; ++c)
      for (int64_t r = 0; r < p.R; ++r)
        for (int64_t q = 0; q < p.S; ++q) {
          acc_t s = 0;
          for (int64_t n = 0; n < p.N; ++n)
            for (int64_t oh = 0; oh < p.Ho; ++oh)
              for (int64_t ow = 0; ow < p.Wo; ++ow) {
                const int64_t ih = oh * p.sh - p.pad_t + r * p.dh;
                const int64_t iw = ow * p.sw - p.pad_l + q * p.dw;
                if (ih < 0 || ih >= p.H || iw < 0 || iw >= p.W) continue;
                s += acc_t(dy[yoff(p, n, k, oh, ow)]) * acc_t(x[xoff(p, n, g * p.Cg + c, ih, iw)]);
              }
          dw[woff(p, k, c, r, q)] = T(s);
        }
  }
}

template <typename T>
void gemm(int64_t m, int64_t n, int64_t k, const T* a, int64_t rsa, int64_t csa, const T* b,
          int64_t rsb, int64_t csb, T* c, int64_t ldc, bool accumulate) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      acc_t s = accumulate ? acc_t(c[i * ldc + j]) : acc_t(0);
      for (int64_t q = 0; q < k; ++q) s += acc_t(a[i * rsa + q * csa]) * acc_t(b[q * rsb + j * csb]);
      c[i * ldc + j] = T(s);
    }
}

}  // namespace reference
}  // namespace convcore_test
