// Direct-loop reference implementations: the definitions written as plainly as possible,
// accumulating in long double. They are the oracle of the C++ tests, never a fast path.
#include <vector>

#include "convcore/conv2d.hpp"

namespace convcore::reference {
namespace {

using acc_t = long double;

// Element offsets of the three tensors from logical indices.
inline int64_t xoff(const Conv2dPlan& p, int64_t n, int64_t c, int64_t h, int64_t w) {
  return n * p.xs_n + c * p.xs_c + h * p.xs_h + w * p.xs_w;
}
inline int64_t yoff(const Conv2dPlan& p, int64_t n, int64_t k, int64_t h, int64_t w) {
  return n * p.ys_n + k * p.ys_c + h * p.ys_h + w * p.ys_w;
}
inline int64_t woff(const Conv2dPlan& p, int64_t k, int64_t c, int64_t r, int64_t s) {
  return k * p.ws_k + c * p.ws_c + r * p.ws_r + s * p.ws_s;
}

}  // namespace

template <typename T>
void conv2d_forward(const Conv2dPlan& p, const T* x, const T* w, const T* bias, T* y,
                    Activation act) {
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
          if (act == Activation::Relu && v < T(0)) v = T(0);
          y[yoff(p, n, k, oh, ow)] = v;
        }
    }
}

template <typename T>
void conv2d_backward_data(const Conv2dPlan& p, const T* dy, const T* w, T* dx) {
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
void conv2d_backward_weight(const Conv2dPlan& p, const T* dy, const T* x, T* dw) {
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
      for (int64_t p = 0; p < k; ++p) s += acc_t(a[i * rsa + p * csa]) * acc_t(b[p * rsb + j * csb]);
      c[i * ldc + j] = T(s);
    }
}

#define CONVCORE_INSTANTIATE_REFERENCE(T)                                                      \
  template void conv2d_forward<T>(const Conv2dPlan&, const T*, const T*, const T*, T*,        \
                                  Activation);                                                 \
  template void conv2d_backward_data<T>(const Conv2dPlan&, const T*, const T*, T*);            \
  template void conv2d_backward_weight<T>(const Conv2dPlan&, const T*, const T*, T*);          \
  template void gemm<T>(int64_t, int64_t, int64_t, const T*, int64_t, int64_t, const T*,       \
                        int64_t, int64_t, T*, int64_t, bool);
CONVCORE_INSTANTIATE_REFERENCE(float)
CONVCORE_INSTANTIATE_REFERENCE(double)
#undef CONVCORE_INSTANTIATE_REFERENCE

}  // namespace convcore::reference
