// Backward-weight and backward-bias passes.
// dW (Kg × Cg·R·S) = dY (Kg × N·Ho·Wo) · im2colᵀ (N·Ho·Wo × Cg·R·S) per group: one GEMM
// whose reduction runs over every pixel of every image (the parameter sharing of the
// layer: each position's gradient is summed into the one filter). Taps are in the
// weight's memory order, so C is dW itself. The reduction is never split across threads
// (tiles cut dW), so the summation order is fixed.
#include <algorithm>
#include <vector>

#include "convcore/conv2d.hpp"
#include "im2col_pack.hpp"
#include "../gemm/driver.hpp"

namespace convcore {

template <typename T>
void conv2d_backward_weight(const Conv2dPlan& p, const T* dy, const T* x, T* dw) {
  if (p.w_size == 0) return;
  detail::CallScope scope;
  const auto& e = detail::engine<T>();
  const int64_t M = p.Kg, N = p.CgRS(), K = p.N * p.P();
  detail::run_tiles(p.G, M, N, K, e.blocking, 1, e.blocking.nr,
                    [&](int64_t g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    const detail::OutputGradPackA<T> pack_dy{&p, dy + g * p.Kg * p.ys_c};
    const detail::Im2colPackB_PixelsByTaps<T> pack_x{&p, x + g * p.Cg * p.xs_c};
    T* c = dw + g * p.Kg * p.ws_k;
    detail::gemm_rect(e, m0, m1, n0, n1, K, pack_dy, pack_x, c, p.ws_k, false,
                      detail::NoEpilogue{});
  });
}

// db[k] = Σ_n Σ_pixels dy[n][k][pixel], accumulated in double in a fixed order
// (image, then pixel) whatever the thread count.
template <typename T>
void conv2d_backward_bias(const Conv2dPlan& p, const T* dy, T* db) {
  detail::CallScope scope;
  const int64_t P = p.P();
  const int nthreads = detail::threads_for(double(p.y_size) * 4);
  detail::parallel_run(std::max(1, std::min<int>(nthreads, int(p.K))), [&](int tid, int nt) {
    int64_t k0, k1;
    detail::static_range(p.K, tid, nt, k0, k1);
    if (k1 <= k0) return;
    std::vector<double> acc(static_cast<size_t>(k1 - k0), 0.0);
    for (int64_t n = 0; n < p.N; ++n) {
      const T* dyn = dy + n * p.ys_n;
      if (p.ys_w == 1) {  // NCHW: each channel's pixels are contiguous
        for (int64_t k = k0; k < k1; ++k) {
          const T* src = dyn + k * p.ys_c;
          // Eight interleaved partial sums (a fixed order) keep the adds pipelined.
          double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
          int64_t q = 0;
          for (; q + 8 <= P; q += 8)
            for (int u = 0; u < 8; ++u) part[u] += double(src[q + u]);
          for (; q < P; ++q) part[q % 8] += double(src[q]);
          acc[k - k0] += ((part[0] + part[1]) + (part[2] + part[3])) +
                         ((part[4] + part[5]) + (part[6] + part[7]));
        }
      } else {  // NHWC: each pixel's channels are contiguous
        for (int64_t q = 0; q < P; ++q) {
          const T* src = dyn + q * p.ys_w;
          for (int64_t k = k0; k < k1; ++k) acc[k - k0] += double(src[k * p.ys_c]);
        }
      }
    }
    for (int64_t k = k0; k < k1; ++k) db[k] = T(acc[k - k0]);
  });
}

template void conv2d_backward_weight<float>(const Conv2dPlan&, const float*, const float*, float*);
template void conv2d_backward_weight<double>(const Conv2dPlan&, const double*, const double*,
                                             double*);
template void conv2d_backward_bias<float>(const Conv2dPlan&, const float*, float*);
template void conv2d_backward_bias<double>(const Conv2dPlan&, const double*, double*);

}  // namespace convcore
