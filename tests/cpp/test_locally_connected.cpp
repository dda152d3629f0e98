// The locally-connected kind (OpKind::LocallyConnected2d) against direct loops written here,
// on every available ISA, both layouts and dtypes, with per-call and prepacked weights.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "convcore/config.hpp"
#include "convcore/conv2d.hpp"

namespace {

using namespace convcore;

struct Lc {
  int64_t N, C, H, W, K, R, S, sh, sw, pt, pb, pl, pr;
  Layout layout;
};

Conv2dParams params_of(const Lc& c) {
  Conv2dParams p;
  p.batch = c.N; p.in_channels = c.C; p.in_h = c.H; p.in_w = c.W;
  p.out_channels = c.K; p.kernel_h = c.R; p.kernel_w = c.S;
  p.stride_h = c.sh; p.stride_w = c.sw;
  p.pad_top = c.pt; p.pad_bottom = c.pb; p.pad_left = c.pl; p.pad_right = c.pr;
  p.layout = c.layout;
  return p;
}

// Index helpers in the layout's order.
struct Idx {
  Lc c; int64_t Ho, Wo;
  bool nchw() const { return c.layout == Layout::NCHW; }
  int64_t x(int64_t n, int64_t ch, int64_t h, int64_t w) const {
    return nchw() ? ((n * c.C + ch) * c.H + h) * c.W + w : ((n * c.H + h) * c.W + w) * c.C + ch;
  }
  int64_t y(int64_t n, int64_t k, int64_t h, int64_t w) const {
    return nchw() ? ((n * c.K + k) * Ho + h) * Wo + w : ((n * Ho + h) * Wo + w) * c.K + k;
  }
  int64_t wt(int64_t oh, int64_t ow, int64_t k, int64_t ch, int64_t r, int64_t s) const {
    const int64_t base = ((oh * Wo + ow) * c.K + k) * c.C * c.R * c.S;
    return base + (nchw() ? (ch * c.R + r) * c.S + s : (r * c.S + s) * c.C + ch);
  }
  int64_t b(int64_t k, int64_t oh, int64_t ow) const {
    return nchw() ? (k * Ho + oh) * Wo + ow : (oh * Wo + ow) * c.K + k;
  }
};

template <typename T>
void check_case(const Lc& c, bool prepacked, const std::string& forced) {
  Conv2dDesc desc{OpKind::LocallyConnected2d, params_of(c), data_type_of<T>()};
  PrimitiveOptions opt;
  opt.forward = opt.backward_weight = forced;
  opt.backward_data = forced.empty() ? "" : "per_position_scatter";
  Conv2dPrimitive prim(desc, opt);
  const Conv2dShape& sh = prim.shape();
  const Idx ix{c, sh.out_h, sh.out_w};
  ASSERT_EQ(sh.weight_elements, sh.out_h * sh.out_w * c.K * c.C * c.R * c.S);
  ASSERT_EQ(sh.bias_elements, c.K * sh.out_h * sh.out_w);
  EXPECT_EQ(prim.implementation(Pass::BackwardData),
            std::string(forced.empty() ? "per_position_gemm" : "per_position_scatter"));
  for (Pass pass : {Pass::Forward, Pass::BackwardWeight})
    EXPECT_EQ(prim.implementation(pass), forced.empty() ? "per_position_gemm" : forced);
  std::mt19937 gen(42);
  std::uniform_real_distribution<double> u(-1, 1);
  auto fill = [&](int64_t n) { std::vector<T> v(static_cast<size_t>(n)); for (auto& e : v) e = T(u(gen)); return v; };
  auto x = fill(sh.input_elements), w = fill(sh.weight_elements), b = fill(sh.bias_elements),
       dy = fill(sh.output_elements);
  std::vector<T> y(size_t(sh.output_elements)), dx(size_t(sh.input_elements)),
      dw(size_t(sh.weight_elements)), db(size_t(sh.bias_elements));
  if (prepacked) prim.set_weights(w.data());
  const T* wp = prepacked ? nullptr : w.data();
  prim.forward(x.data(), wp, b.data(), y.data());
  prim.backward_data(dy.data(), wp, dx.data());
  prim.backward_weight(dy.data(), x.data(), dw.data());
  prim.backward_bias(dy.data(), db.data());
  std::vector<double> ry(y.size()), rdx(dx.size()), rdw(dw.size(), 0.0), rdb(db.size(), 0.0);
  for (int64_t n = 0; n < c.N; ++n)
    for (int64_t k = 0; k < c.K; ++k)
      for (int64_t oh = 0; oh < ix.Ho; ++oh)
        for (int64_t ow = 0; ow < ix.Wo; ++ow) {
          double acc = b[size_t(ix.b(k, oh, ow))];
          const double g = dy[size_t(ix.y(n, k, oh, ow))];
          rdb[size_t(ix.b(k, oh, ow))] += g;
          for (int64_t ch = 0; ch < c.C; ++ch)
            for (int64_t r = 0; r < c.R; ++r)
              for (int64_t s = 0; s < c.S; ++s) {
                const int64_t h = oh * c.sh - c.pt + r, wc = ow * c.sw - c.pl + s;
                if (h < 0 || h >= c.H || wc < 0 || wc >= c.W) continue;
                const size_t xi = size_t(ix.x(n, ch, h, wc)), wi = size_t(ix.wt(oh, ow, k, ch, r, s));
                acc += double(w[wi]) * x[xi];
                rdx[xi] += g * w[wi];
                rdw[wi] += g * x[xi];
              }
          ry[size_t(ix.y(n, k, oh, ow))] = acc;
        }
  const double tol = std::is_same_v<T, float> ? 1e-4 : 1e-11;
  auto near = [&](const std::vector<T>& got, const std::vector<double>& ref, const char* what) {
    for (size_t i = 0; i < got.size(); ++i)
      ASSERT_NEAR(double(got[i]), ref[i], tol * (1 + std::abs(ref[i]))) << what << " at " << i;
  };
  near(y, ry, "forward");
  near(dx, rdx, "backward_data");
  near(dw, rdw, "backward_weight");
  near(db, rdb, "backward_bias");
}

TEST(LocallyConnected, MatchesDirectLoopsOnEveryIsa) {
  const Isa original = active_isa();
  const Lc cases[] = {
      {3, 4, 7, 6, 5, 3, 3, 1, 1, 1, 1, 1, 1, Layout::NCHW},
      {3, 4, 7, 6, 5, 3, 3, 1, 1, 1, 1, 1, 1, Layout::NHWC},
      {37, 9, 6, 5, 33, 3, 2, 2, 1, 1, 0, 0, 1, Layout::NCHW},
      {37, 9, 6, 5, 33, 3, 2, 2, 1, 1, 0, 0, 1, Layout::NHWC},
      {1, 5, 5, 5, 2, 2, 2, 3, 3, 1, 2, 1, 2, Layout::NHWC},
  };
  for (Isa isa : available_isas()) {
    set_active_isa(isa);
    for (const Lc& c : cases)
      for (bool pre : {false, true})
        for (std::string forced : {"", "per_position_gather"}) {
          SCOPED_TRACE(std::string(isa_name(isa)) + (pre ? " prepacked " : " per call ") + forced);
          check_case<float>(c, pre, forced);
          check_case<double>(c, pre, forced);
        }
  }
  set_active_isa(original);
}

TEST(LocallyConnected, AlexNetConv1WithoutSharing) {
  Conv2dParams p;
  p.batch = 1; p.in_channels = 3; p.in_h = p.in_w = 227; p.out_channels = 96;
  p.kernel_h = p.kernel_w = 11; p.stride_h = p.stride_w = 4;
  Conv2dPrimitive prim(Conv2dDesc{OpKind::LocallyConnected2d, p, DataType::Float32});
  EXPECT_EQ(prim.shape().weight_elements + prim.shape().bias_elements, 105705600);
}

TEST(LocallyConnected, RejectsGroupsAndDilation) {
  Conv2dParams p;
  p.in_channels = 4; p.out_channels = 4; p.in_h = p.in_w = 5; p.kernel_h = p.kernel_w = 3;
  p.groups = 2;
  EXPECT_THROW(Conv2dPrimitive(Conv2dDesc{OpKind::LocallyConnected2d, p, DataType::Float32}),
               std::invalid_argument);
  p.groups = 1;
  p.dilation_h = 2;
  EXPECT_THROW(Conv2dPrimitive(Conv2dDesc{OpKind::LocallyConnected2d, p, DataType::Float32}),
               std::invalid_argument);
}

}  // namespace

// Padding is not part of the result: an Inf weight on a tap in the padding leaves y finite,
// and an Inf in dy leaves dW at padding taps 0 (the direct loop never multiplies padding),
// for per-call and prepacked weights and every entry.
TEST(LocallyConnected, NonFiniteNeverMeetsPadding) {
  const Lc c{2, 2, 4, 4, 3, 3, 3, 1, 1, 1, 1, 1, 1, Layout::NCHW};
  for (bool pre : {false, true})
    for (std::string forced : {"", "per_position_gather"}) {
      SCOPED_TRACE(std::string(pre ? "prepacked " : "per call ") + forced);
      PrimitiveOptions opt;
      opt.forward = opt.backward_weight = forced;
      Conv2dPrimitive prim(Conv2dDesc{OpKind::LocallyConnected2d, params_of(c), DataType::Float32}, opt);
      const Conv2dShape& sh = prim.shape();
      const Idx ix{c, sh.out_h, sh.out_w};
      std::vector<float> x(size_t(sh.input_elements), 1.f), w(size_t(sh.weight_elements), 1.f),
          y(size_t(sh.output_elements)), dy(size_t(sh.output_elements), 1.f),
          dw(size_t(sh.weight_elements));
      for (int64_t k = 0; k < c.K; ++k)
        for (int64_t ch = 0; ch < c.C; ++ch) w[size_t(ix.wt(0, 0, k, ch, 0, 0))] = INFINITY;
      dy[size_t(ix.y(0, 0, 0, 0))] = INFINITY;
      if (pre) prim.set_weights(w.data());
      prim.forward(x.data(), pre ? nullptr : w.data(), static_cast<const float*>(nullptr), y.data());
      for (size_t i = 0; i < y.size(); ++i) ASSERT_TRUE(std::isfinite(y[i])) << "y at " << i;
      EXPECT_EQ(y[size_t(ix.y(0, 0, 0, 0))], float(c.C * 4));  // 2×2 taps in the image
      prim.backward_weight(dy.data(), x.data(), dw.data());
      for (int64_t ch = 0; ch < c.C; ++ch)
        for (int64_t r = 0; r < c.R; ++r)
          for (int64_t s = 0; s < c.S; ++s) {
            const float v = dw[size_t(ix.wt(0, 0, 0, ch, r, s))];
            if (r == 0 || s == 0) EXPECT_EQ(v, 0.f) << ch << r << s;  // padding taps
            else EXPECT_TRUE(std::isinf(v)) << ch << r << s;
          }
    }
}
