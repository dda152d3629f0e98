// The transposed-convolution kind (OpKind::ConvTranspose2d) against scatter-form direct
// loops written here, on every available ISA, both layouts and dtypes, every forward
// implementation forced, with per-call and prepacked weights.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "convcore/config.hpp"
#include "convcore/conv2d.hpp"

namespace {

using namespace convcore;

struct Tc {
  int64_t N, Cin, H, W, Cout, R, S, sh, sw, dh, dw, ph, pw, oph, opw, G;
};

Conv2dParams params_of(const Tc& c, Layout layout) {
  Conv2dParams p;
  p.batch = c.N; p.in_channels = c.Cin; p.in_h = c.H; p.in_w = c.W;
  p.out_channels = c.Cout; p.kernel_h = c.R; p.kernel_w = c.S;
  p.stride_h = c.sh; p.stride_w = c.sw; p.dilation_h = c.dh; p.dilation_w = c.dw;
  p.pad_top = p.pad_bottom = c.ph; p.pad_left = p.pad_right = c.pw;
  p.output_padding_h = c.oph; p.output_padding_w = c.opw;
  p.groups = c.G;
  p.layout = layout;
  return p;
}

struct Idx {
  Tc c; int64_t Ho, Wo; bool nchw;
  int64_t x(int64_t n, int64_t ch, int64_t h, int64_t w) const {
    return nchw ? ((n * c.Cin + ch) * c.H + h) * c.W + w : ((n * c.H + h) * c.W + w) * c.Cin + ch;
  }
  int64_t y(int64_t n, int64_t k, int64_t h, int64_t w) const {
    return nchw ? ((n * c.Cout + k) * Ho + h) * Wo + w : ((n * Ho + h) * Wo + w) * c.Cout + k;
  }
  int64_t wt(int64_t ci, int64_t kk, int64_t r, int64_t s) const {  // kk within the group
    const int64_t Kg = c.Cout / c.G;
    return nchw ? ((ci * Kg + kk) * c.R + r) * c.S + s : ((ci * c.R + r) * c.S + s) * Kg + kk;
  }
};

// Calls f(n, ci, ih, iw, k, kk, r, s, oh, ow) for every product of the scatter definition.
template <typename F>
void for_each_product(const Tc& c, const Idx& ix, F&& f) {
  const int64_t Cg = c.Cin / c.G, Kg = c.Cout / c.G;
  for (int64_t n = 0; n < c.N; ++n)
    for (int64_t ci = 0; ci < c.Cin; ++ci)
      for (int64_t ih = 0; ih < c.H; ++ih)
        for (int64_t iw = 0; iw < c.W; ++iw)
          for (int64_t kk = 0; kk < Kg; ++kk)
            for (int64_t r = 0; r < c.R; ++r)
              for (int64_t s = 0; s < c.S; ++s) {
                const int64_t oh = ih * c.sh - c.ph + r * c.dh, ow = iw * c.sw - c.pw + s * c.dw;
                if (oh < 0 || oh >= ix.Ho || ow < 0 || ow >= ix.Wo) continue;
                f(n, ci, ih, iw, (ci / Cg) * Kg + kk, kk, r, s, oh, ow);
              }
}

template <typename T>
void check_case(const Tc& c, Layout layout, const std::string& forced, bool prepacked) {
  PrimitiveOptions opt;
  opt.forward = forced;
  Conv2dPrimitive prim(Conv2dDesc{OpKind::ConvTranspose2d, params_of(c, layout), data_type_of<T>()},
                       opt);
  const Conv2dShape& sh = prim.shape();
  ASSERT_EQ(sh.out_h, (c.H - 1) * c.sh - 2 * c.ph + c.dh * (c.R - 1) + c.oph + 1);
  ASSERT_EQ(sh.out_w, (c.W - 1) * c.sw - 2 * c.pw + c.dw * (c.S - 1) + c.opw + 1);
  const Idx ix{c, sh.out_h, sh.out_w, layout == Layout::NCHW};
  std::mt19937 gen(7);
  std::uniform_real_distribution<double> u(-1, 1);
  std::vector<T> x(sh.input_elements), w(sh.weight_elements), b(sh.bias_elements),
      dy(sh.output_elements);
  for (auto* v : {&x, &w, &b, &dy})
    for (T& e : *v) e = T(u(gen));
  std::vector<double> y_ref(sh.output_elements, 0.0), dx_ref(sh.input_elements, 0.0),
      dw_ref(sh.weight_elements, 0.0), db_ref(sh.bias_elements, 0.0);
  for_each_product(c, ix, [&](int64_t n, int64_t ci, int64_t ih, int64_t iw, int64_t k,
                              int64_t kk, int64_t r, int64_t s, int64_t oh, int64_t ow) {
    const double xv = x[ix.x(n, ci, ih, iw)], wv = w[ix.wt(ci, kk, r, s)],
                 dv = dy[ix.y(n, k, oh, ow)];
    y_ref[ix.y(n, k, oh, ow)] += xv * wv;
    dx_ref[ix.x(n, ci, ih, iw)] += dv * wv;
    dw_ref[ix.wt(ci, kk, r, s)] += dv * xv;
  });
  for (int64_t n = 0; n < c.N; ++n)
    for (int64_t k = 0; k < c.Cout; ++k)
      for (int64_t oh = 0; oh < ix.Ho; ++oh)
        for (int64_t ow = 0; ow < ix.Wo; ++ow) {
          double& v = y_ref[ix.y(n, k, oh, ow)];
          v = std::max(0.0, v + double(b[k]));
          db_ref[k] += dy[ix.y(n, k, oh, ow)];
        }
  const double tol = sizeof(T) == 8 ? 1e-12 : 2e-5;
  auto expect_close = [&](const std::vector<T>& got, const std::vector<double>& want,
                          const char* what) {
    for (size_t i = 0; i < want.size(); ++i)
      ASSERT_NEAR(double(got[i]), want[i], tol * (1 + std::abs(want[i]))) << what << " at " << i;
  };
  if (prepacked) prim.set_weights(w.data());
  const T* wp = prepacked ? nullptr : w.data();
  std::vector<T> y(sh.output_elements), dx(sh.input_elements), dw(sh.weight_elements),
      db(sh.bias_elements);
  prim.forward(x.data(), wp, b.data(), y.data(), Activation::Relu);
  expect_close(y, y_ref, "forward");
  prim.backward_data(dy.data(), wp, dx.data());
  expect_close(dx, dx_ref, "backward_data");
  prim.backward_weight(dy.data(), x.data(), dw.data());
  expect_close(dw, dw_ref, "backward_weight");
  prim.backward_bias(dy.data(), db.data());
  expect_close(db, db_ref, "backward_bias");
}

const Tc kCases[] = {
    {2, 16, 5, 6, 12, 4, 4, 2, 2, 1, 1, 1, 1, 0, 0, 1},
    {2, 9, 6, 5, 8, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1},
    {1, 8, 4, 5, 12, 3, 2, 3, 2, 1, 2, 2, 1, 2, 1, 2},
    {2, 8, 5, 5, 8, 3, 3, 1, 1, 2, 2, 1, 0, 1, 1, 1},
    {1, 12, 4, 4, 9, 1, 1, 3, 3, 1, 1, 0, 0, 0, 0, 3},
};

TEST(ConvTranspose2d, EveryForwardImplementationEveryIsa) {
  const std::vector<Isa> isas = available_isas();
  const Isa saved = active_isa();
  for (Isa isa : isas) {
    set_active_isa(isa);
    for (const Tc& c : kCases)
      for (Layout layout : {Layout::NCHW, Layout::NHWC}) {
        Conv2dPrimitive probe(Conv2dDesc{OpKind::ConvTranspose2d, params_of(c, layout),
                                         DataType::Float32});
        for (const ImplementationStatus& st : probe.implementations(Pass::Forward)) {
          if (!st.applies) continue;
          SCOPED_TRACE(std::string(isa_name(isa)) + " " + st.name +
                       (layout == Layout::NCHW ? " NCHW" : " NHWC"));
          check_case<float>(c, layout, st.name, false);
          check_case<double>(c, layout, st.name, true);
        }
      }
  }
  set_active_isa(saved);
}

TEST(ConvTranspose2d, OutputPaddingRule) {
  Tc c{1, 4, 3, 3, 4, 3, 3, 2, 2, 1, 1, 0, 0, 2, 0, 1};
  EXPECT_THROW(Conv2dPrimitive(Conv2dDesc{OpKind::ConvTranspose2d, params_of(c, Layout::NCHW),
                                          DataType::Float32}),
               std::invalid_argument);
  c.oph = 1;
  Conv2dPrimitive ok(Conv2dDesc{OpKind::ConvTranspose2d, params_of(c, Layout::NCHW),
                                DataType::Float32});
  EXPECT_EQ(ok.shape().out_h, 8);
  EXPECT_EQ(ok.shape().out_w, 7);
  EXPECT_STREQ(ok.implementation(Pass::Forward), "col2im");  // (small maps, few channels)
}

}  // namespace
