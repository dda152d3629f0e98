// convcore used from C++: a few convolutions, forward and the three backward passes,
// checked against direct loops written here. Exits 1 on a mismatch, 2 on an exception.
//
// Only the block marked "convcore C++ API" below uses the library; the rest is plain C++
// (the problem description, the data, the loops and the comparison).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <random>
#include <vector>

#include "convcore/config.hpp"
#include "convcore/conv2d.hpp"

namespace {

// One 2-D convolution. NCHW: x (N,C,H,W), w (K,C/G,R,S), y (N,K,Ho,Wo);
// NHWC: x (N,H,W,C), w (K,R,S,C/G), y (N,Ho,Wo,K).
struct Problem {
  const char* name;
  int64_t N, C, H, W, K, R, S;
  int64_t sh, sw, dh, dw;
  int64_t pt, pb, pl, pr;
  int64_t G;
  bool nhwc;
  // The sizes are chosen so that the strides divide exactly (no rounding rule needed).
  int64_t Ho() const { return (H + pt + pb - (dh * (R - 1) + 1)) / sh + 1; }
  int64_t Wo() const { return (W + pl + pr - (dw * (S - 1) + 1)) / sw + 1; }
  int64_t Cg() const { return C / G; }
  int64_t Kg() const { return K / G; }
  int64_t x_at(int64_t n, int64_t c, int64_t h, int64_t w) const {
    return nhwc ? ((n * H + h) * W + w) * C + c : ((n * C + c) * H + h) * W + w;
  }
  int64_t y_at(int64_t n, int64_t k, int64_t h, int64_t w) const {
    return nhwc ? ((n * Ho() + h) * Wo() + w) * K + k : ((n * K + k) * Ho() + h) * Wo() + w;
  }
  int64_t w_at(int64_t k, int64_t c, int64_t r, int64_t s) const {
    return nhwc ? ((k * R + r) * S + s) * Cg() + c : ((k * Cg() + c) * R + r) * S + s;
  }
};

struct Results {
  std::vector<float> y, dx, dw, db;
};

// ---- convcore C++ API ------------------------------------------------------------------
void print_library_info() {
  std::printf("convcore %s, ISA %s, OpenMP %s, %d thread(s)\n", convcore::kVersion,
              convcore::isa_name(convcore::active_isa()), convcore::has_openmp() ? "yes" : "no",
              convcore::get_num_threads());
}

Results run_convcore(const Problem& p, const std::vector<float>& x, const std::vector<float>& w,
                     const std::vector<float>& b, const std::vector<float>& dy) {
  // The descriptor says what to compute; the primitive validates it once and picks one
  // implementation per pass. set_weights prepacks the weights for forward and
  // backward-data, which then take weight = nullptr (as a layer reused over batches would).
  convcore::Conv2dDesc desc;
  desc.dtype = convcore::DataType::Float32;
  convcore::Conv2dParams& params = desc.params;
  params.batch = p.N;
  params.in_channels = p.C;
  params.in_h = p.H;
  params.in_w = p.W;
  params.out_channels = p.K;
  params.kernel_h = p.R;
  params.kernel_w = p.S;
  params.stride_h = p.sh;
  params.stride_w = p.sw;
  params.dilation_h = p.dh;
  params.dilation_w = p.dw;
  params.pad_top = p.pt;
  params.pad_bottom = p.pb;
  params.pad_left = p.pl;
  params.pad_right = p.pr;
  params.groups = p.G;
  params.layout = p.nhwc ? convcore::Layout::NHWC : convcore::Layout::NCHW;
  convcore::Conv2dPrimitive conv(desc);
  const convcore::Conv2dShape& shape = conv.shape();
  std::printf("  %-28s forward: %-18s backward_data: %-14s backward_weight: %s\n", p.name,
              conv.implementation(convcore::Pass::Forward),
              conv.implementation(convcore::Pass::BackwardData),
              conv.implementation(convcore::Pass::BackwardWeight));

  Results r;
  r.y.resize(static_cast<size_t>(shape.output_elements));
  r.dx.resize(static_cast<size_t>(shape.input_elements));
  r.dw.resize(static_cast<size_t>(shape.weight_elements));
  r.db.resize(static_cast<size_t>(shape.bias_elements));
  conv.set_weights(w.data());
  conv.forward<float>(x.data(), nullptr, b.data(), r.y.data());
  conv.backward_data<float>(dy.data(), nullptr, r.dx.data());
  conv.backward_weight(dy.data(), x.data(), r.dw.data());
  conv.backward_bias(dy.data(), r.db.data());
  return r;
}
// ---- end of the convcore C++ API -------------------------------------------------------

// Direct loops in double. Next to each sum, the sum of the magnitudes of its terms: the
// scale of the float rounding error the library's result may carry.
struct Expected {
  std::vector<double> y, dx, dw, db;
  std::vector<double> y_mag, dx_mag, dw_mag, db_mag;
};

Expected direct_loops(const Problem& p, const std::vector<float>& x, const std::vector<float>& w,
                      const std::vector<float>& b, const std::vector<float>& dy) {
  Expected e;
  e.y.assign(dy.size(), 0.0);
  e.y_mag.assign(dy.size(), 0.0);
  e.dx.assign(x.size(), 0.0);
  e.dx_mag.assign(x.size(), 0.0);
  e.dw.assign(w.size(), 0.0);
  e.dw_mag.assign(w.size(), 0.0);
  e.db.assign(b.size(), 0.0);
  e.db_mag.assign(b.size(), 0.0);
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t k = 0; k < p.K; ++k) {
      const int64_t g = k / p.Kg();
      for (int64_t oh = 0; oh < p.Ho(); ++oh)
        for (int64_t ow = 0; ow < p.Wo(); ++ow) {
          const int64_t yi = p.y_at(n, k, oh, ow);
          e.y[yi] = b[k];
          e.y_mag[yi] = std::fabs(b[k]);
          e.db[k] += dy[yi];
          e.db_mag[k] += std::fabs(dy[yi]);
          for (int64_t c = 0; c < p.Cg(); ++c)
            for (int64_t r = 0; r < p.R; ++r)
              for (int64_t s = 0; s < p.S; ++s) {
                const int64_t ih = oh * p.sh - p.pt + r * p.dh;
                const int64_t iw = ow * p.sw - p.pl + s * p.dw;
                if (ih < 0 || ih >= p.H || iw < 0 || iw >= p.W) continue;  // zero padding
                const int64_t xi = p.x_at(n, g * p.Cg() + c, ih, iw);
                const int64_t wi = p.w_at(k, c, r, s);
                const double xw = double(x[xi]) * w[wi];
                const double dyw = double(dy[yi]) * w[wi];
                const double dyx = double(dy[yi]) * x[xi];
                e.y[yi] += xw;
                e.y_mag[yi] += std::fabs(xw);
                e.dx[xi] += dyw;
                e.dx_mag[xi] += std::fabs(dyw);
                e.dw[wi] += dyx;
                e.dw_mag[wi] += std::fabs(dyx);
              }
        }
    }
  return e;
}

int compare(const char* problem, const char* what, const std::vector<float>& got,
            const std::vector<double>& want, const std::vector<double>& mag) {
  if (got.size() != want.size()) {
    std::printf("  %-16s %s: %zu elements, expected %zu\n", problem, what, got.size(), want.size());
    return 1;
  }
  int bad = 0;
  double worst = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double(got[i]) - want[i]);
    const double tol = 1e-5 * mag[i] + 1e-6;
    if (err / tol > worst) worst = err / tol;
    if (!(err <= tol)) {  // NaN fails too
      if (bad < 3)
        std::printf("  %-16s %s[%zu] = %.8g, expected %.8g\n", problem, what, i, got[i], want[i]);
      ++bad;
    }
  }
  std::printf("  %-16s %-15s %6zu values  %s  (max error %.3f of the tolerance)\n", problem, what,
              got.size(), bad ? "MISMATCH" : "ok", worst);
  return bad ? 1 : 0;
}

std::vector<float> random_values(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

}  // namespace

int main() {
  //                 name               N  C  H  W  K  R  S  sh sw dh dw pt pb pl pr G  nhwc
  const Problem problems[] = {
      {"grouped_stride2", 2, 4, 9, 7, 6, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 2, false},
      {"dilated_nchw", 1, 3, 8, 8, 5, 2, 3, 1, 1, 2, 2, 0, 1, 2, 0, 1, false},
      {"dilated_nhwc", 1, 3, 8, 8, 5, 2, 3, 1, 1, 2, 2, 0, 1, 2, 0, 1, true},
      {"pointwise_nhwc", 3, 8, 5, 6, 4, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, true},
  };
  try {
    print_library_info();
    std::mt19937 rng(2024);
    int failures = 0;
    for (const Problem& p : problems) {
      const auto x = random_values(size_t(p.N * p.C * p.H * p.W), rng);
      const auto w = random_values(size_t(p.K * p.Cg() * p.R * p.S), rng);
      const auto b = random_values(size_t(p.K), rng);
      const auto dy = random_values(size_t(p.N * p.K * p.Ho() * p.Wo()), rng);
      const Results got = run_convcore(p, x, w, b, dy);
      const Expected want = direct_loops(p, x, w, b, dy);
      failures += compare(p.name, "forward", got.y, want.y, want.y_mag);
      failures += compare(p.name, "backward_data", got.dx, want.dx, want.dx_mag);
      failures += compare(p.name, "backward_weight", got.dw, want.dw, want.dw_mag);
      failures += compare(p.name, "backward_bias", got.db, want.db, want.db_mag);
    }
    std::printf("%s\n", failures ? "FAILED" : "all results match the direct loops");
    return failures ? 1 : 0;
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 2;
  }
}
