// Backward-data pass. Executors (choose_backward_data, algorithms.hpp):
//  * stride 1: dx is the full correlation of dy with the flipped, transposed weights —
//    a forward-style GEMM through the direct (NCHW) or indirect (NHWC) executor that
//    writes every element of dx once: no col2im, no zeroing;
//  * otherwise dx = col2im(Wᵀ · dy), described here. Per group the column gradient
// dcol (Cg·R·S × N·Ho·Wo) = Wᵀ (Cg·R·S × Kg) · dY (Kg × N·Ho·Wo) is produced block by
// block in a per-thread buffer and scattered into dx by the col2im epilogue; no full
// column matrix exists. Rows are taps in (c, r, s) order for both layouts, so a tile of
// whole channels and whole images owns its slice of dx: tiles are cut only between
// channels and between images, which makes the scatter race-free, and column blocks are
// cut at fixed positions, which makes its summation order independent of the threads.
#include <cstring>
#include <numeric>

#include "convcore/conv2d.hpp"
#include "algorithms.hpp"
#include "direct_s1.hpp"
#include "im2col_pack.hpp"
#include "indirect_nhwc.hpp"
#include "../gemm/driver.hpp"
#include "../gemm/pack.hpp"

namespace convcore {

namespace {

// dx as the full correlation of dy with W flipped and transposed (Cg × Kg·R·S), NCHW.
template <typename T>
void backward_data_direct(const Conv2dPlan& p, const T* dy, const T* w, T* dx) {
  const auto& e = detail::engine<T>();
  const int64_t M = p.Cg, K = p.Kg * p.R * p.S;
  const auto weights = detail::prepack_groups<T>(e.blocking, p.G, true, M, K, [&](int64_t g) {
    return detail::FlippedWeightTPackA<T>{&p, w + g * p.Kg * p.ws_k};
  });
  const detail::DirectS1<T> base{dy, p.ys_n, p.ys_c, p.ys_h, p.ys_w, p.Kg, p.Ho, p.Wo,
                                 dx, p.xs_n, p.xs_c, p.xs_h, p.xs_w, p.Cg, p.H, p.W,
                                 p.R, p.S, p.dh, p.dw, (p.R - 1) * p.dh - p.pad_t,
                                 (p.S - 1) * p.dw - p.pad_l, nullptr, false};
  detail::run_tiles(p.N * p.G, M, base.columns(), K, e.blocking,
                    detail::TileRules{1, e.blocking.nr, 0, 8},
                    [&](int64_t prob, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    const int64_t img = prob / p.G, g = prob % p.G;
    detail::DirectS1<T> d = base;
    d.in = dy + g * p.Kg * p.ys_c;
    d.out = dx + g * p.Cg * p.xs_c;
    d.run_tile(e, weights.group(g), img, m0, m1,
               n0, n1);
  });
}

// The same full correlation in NHWC: rows = pixels of dx, depth = (r, s, k) of dy.
template <typename T>
void backward_data_indirect(const Conv2dPlan& p, const T* dy, const T* w, T* dx) {
  const auto& e = detail::engine<T>();
  const int64_t M = p.N * p.H * p.W, N = p.Cg, K = p.R * p.S * p.Kg;
  const auto weights = detail::prepack_groups<T>(e.blocking, p.G, false, N, K, [&](int64_t g) {
    return detail::FlippedWeightPackB<T>{&p, w + g * p.Kg * p.ws_k};
  });
  const detail::IndirectNhwc<T> base{dy, p.ys_n, p.ys_h, p.ys_w, p.Kg, p.Ho, p.Wo,
                                     dx, p.xs_w, p.H, p.W, p.R, p.S, 1, 1, p.dh, p.dw,
                                     (p.R - 1) * p.dh - p.pad_t, (p.S - 1) * p.dw - p.pad_l,
                                     nullptr, false};
  detail::run_tiles(p.G, M, N, K, e.blocking, detail::TileRules{1, e.blocking.nr, 0, 0},
                    [&](int64_t g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    detail::IndirectNhwc<T> d = base;
    d.in = dy + g * p.Kg * p.ys_c;
    d.out = dx + g * p.Cg * p.xs_c;
    d.run_tile(e, weights.group(g), m0, m1, n0, n1);
  });
}

}  // namespace

template <typename T>
void conv2d_backward_data(const Conv2dPlan& p, const T* dy, const T* w, T* dx) {
  if (p.x_size == 0) return;
  detail::CallScope scope;
  const detail::BackwardDataAlgo algo = detail::choose_backward_data(p);
  if (p.y_size > 0 && algo == detail::BackwardDataAlgo::kDirectStride1) {
    backward_data_direct(p, dy, w, dx);
    return;
  }
  if (p.y_size > 0 && algo == detail::BackwardDataAlgo::kIndirectNhwc) {
    backward_data_indirect(p, dy, w, dx);
    return;
  }
  // Zero dx in parallel chunks (col2im accumulates into it).
  const int64_t total = p.x_size;
  detail::parallel_run(detail::threads_for(double(total) * 8), [&](int tid, int nt) {
    int64_t b, e;
    detail::static_range(total, tid, nt, b, e);
    if (e > b) std::memset(dx + b, 0, sizeof(T) * static_cast<size_t>(e - b));
  });
  if (p.y_size == 0) return;

  const auto& e = detail::engine<T>();
  const int64_t M = p.CgRS(), N = p.N * p.P(), K = p.Kg;
  const auto weights = detail::prepack_groups<T>(e.blocking, p.G, true, M, K, [&](int64_t g) {
    return detail::WeightTPackA<T>{&p, w + g * p.Kg * p.ws_k};
  });
  // Tiles hold whole channels (R·S rows, starting on micro-panel boundaries) of whole
  // images (columns run across the batch), so each owns its part of dx.
  const int64_t rs = p.R * p.S, mr = e.blocking.mr;
  const int64_t row_align = rs / std::gcd(rs, mr) * mr;
  detail::run_tiles(p.G, M, N, K, e.blocking, detail::TileRules{row_align, p.P(), 0, 24},
                    [&](int64_t g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    const detail::Prepacked<T> pack_w = weights.group(g);
    const detail::OutputGradPackB<T> pack_dy{&p, dy + g * p.Kg * p.ys_c};
    const detail::Col2imEpilogue<T> col2im{&p, dx + g * p.Cg * p.xs_c};
    detail::gemm_rect_buffered(e, m0, m1, n0, n1, K, pack_w, pack_dy, col2im);
  });
}

template void conv2d_backward_data<float>(const Conv2dPlan&, const float*, const float*, float*);
template void conv2d_backward_data<double>(const Conv2dPlan&, const double*, const double*,
                                           double*);

}  // namespace convcore
