// Forward pass: y = act(W ⋆ x + b) as GEMMs whose image operand is never materialised
// as an im2col matrix. The executor is chosen by choose_forward (algorithms.hpp):
//   NCHW: Y (Kg × pixels) = W (Kg × Cg·R·S) · im2col (Cg·R·S × pixels), bias per row of C,
//         with im2col read in place from padded images (stride 1), or packed straight
//         from the image per image, or across images for small maps;
//   NHWC: Y (pixels × Kg) = im2col (pixels × R·S·Cg) · Wᵀ, bias per column, with the
//         pixels read in place through row pointers, or packed for few channels.
// Both orientations keep C row-major with unit column stride, as the microkernels want.
// The weights are packed once per call (by the calling thread) and shared by all tiles.
#include "convcore/conv2d.hpp"
#include "algorithms.hpp"
#include "direct_s1.hpp"
#include "im2col_pack.hpp"
#include "indirect_nhwc.hpp"
#include "../gemm/driver.hpp"
#include "../gemm/pack.hpp"

namespace convcore {
namespace {

// Weights (A) prepacked once; the im2col operand (B) is packed by every tile and costs
// several times a plain copy per element.
inline detail::TileRules im2col_b_rules(const Blocking& bl) {
  return detail::TileRules{1, bl.nr, 0, 64};
}

// The tile epilogue: nothing when there is neither bias nor activation.
template <bool kFused, typename T>
auto make_epilogue(const T* row_bias, const T* col_bias, bool relu) {
  if constexpr (kFused) return detail::BiasReluEpilogue<T>{row_bias, col_bias, relu};
  else return detail::NoEpilogue{};
}

template <bool kFused, typename T>
void forward_nchw(const Conv2dPlan& p, const T* x, const T* w, const T* bias, bool relu, T* y) {
  const auto& e = detail::engine<T>();
  const int64_t M = p.Kg, K = p.CgRS();
  const auto weights = detail::prepack_groups<T>(e.blocking, p.G, true, M, K, [&](int64_t g) {
    return detail::MatrixPackA<T>{w + g * p.Kg * p.ws_k, p.ws_k, 1};
  });

  const detail::ForwardAlgo algo = detail::choose_forward(p);
  if (algo == detail::ForwardAlgo::kDirectStride1) {
    // B read in place from a padded copy of each image (direct_s1.hpp).
    detail::DirectS1<T> base{x, p.xs_n, p.xs_c, p.xs_h, p.xs_w, p.Cg, p.H, p.W,
                             y, p.ys_n, p.ys_c, p.ys_h, p.ys_w, p.Kg, p.Ho, p.Wo,
                             p.R, p.S, p.dh, p.dw, p.pad_t, p.pad_l, nullptr, relu};
    // Weights prepacked; a tile's only copy is its padded input rows.
    const detail::TileRules rules{1, e.blocking.nr, 0, 8};
    detail::run_tiles(p.N * p.G, M, base.columns(), K, e.blocking, rules,
                      [&](int64_t prob, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
      const int64_t img = prob / p.G, g = prob % p.G;
      detail::DirectS1<T> d = base;
      d.in = x + g * p.Cg * p.xs_c;
      d.out = y + g * p.Kg * p.ys_c;
      d.bias = bias ? bias + g * p.Kg : nullptr;
      d.run_tile(e, weights.group(g), img, m0, m1,
                 n0, n1);
    });
    return;
  }
  if (algo == detail::ForwardAlgo::kIm2colMultiImage) {
    // Columns run across images; blocks go through a buffer (StoreImagesEpilogue).
    detail::run_tiles(p.G, M, p.N * p.P(), K, e.blocking, im2col_b_rules(e.blocking),
                      [&](int64_t g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
      const detail::Prepacked<T> pack_w = weights.group(g);
      const detail::Im2colPackB_TapsByPixels<T> pack_x{&p, x + g * p.Cg * p.xs_c};
      const detail::StoreImagesEpilogue<T> store{&p, y + g * p.Kg * p.ys_c,
                                                 bias ? bias + g * p.Kg : nullptr, relu};
      detail::gemm_rect_buffered(e, m0, m1, n0, n1, K, pack_w, pack_x, store);
    });
    return;
  }
  detail::run_tiles(p.N * p.G, M, p.P(), K, e.blocking, im2col_b_rules(e.blocking),
                    [&](int64_t prob, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    const int64_t img = prob / p.G, g = prob % p.G;
    const detail::Prepacked<T> pack_w = weights.group(g);
    const detail::Im2colPackB_TapsByPixels<T> pack_x{&p, x + img * p.xs_n + g * p.Cg * p.xs_c};
    const auto epi = make_epilogue<kFused>(bias ? bias + g * p.Kg : nullptr, (const T*)nullptr, relu);
    T* c = y + img * p.ys_n + g * p.Kg * p.ys_c;
    detail::gemm_rect(e, m0, m1, n0, n1, K, pack_w, pack_x, c, p.ys_c, false, epi);
  });
}

template <bool kFused, typename T>
void forward_nhwc(const Conv2dPlan& p, const T* x, const T* w, const T* bias, bool relu, T* y) {
  const auto& e = detail::engine<T>();
  const int64_t M = p.N * p.P(), N = p.Kg, K = p.CgRS();
  const auto weights = detail::prepack_groups<T>(e.blocking, p.G, false, N, K, [&](int64_t g) {
    return detail::MatrixPackB<T>{w + g * p.Kg * p.ws_k, 1, p.ws_k};
  });
  if (detail::choose_forward(p) == detail::ForwardAlgo::kIndirectNhwc) {
    // Pixels read in place through row pointers (indirect_nhwc.hpp).
    const detail::IndirectNhwc<T> base{x, p.xs_n, p.xs_h, p.xs_w, p.Cg, p.H, p.W,
                                       y, p.ys_w, p.Ho, p.Wo, p.R, p.S, p.sh, p.sw, p.dh, p.dw,
                                       p.pad_t, p.pad_l, nullptr, relu};
    // Pixels read in place, weights prepacked: no per-tile packing.
    detail::run_tiles(p.G, M, N, K, e.blocking, detail::TileRules{1, e.blocking.nr, 0, 0},
                      [&](int64_t g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
      detail::IndirectNhwc<T> d = base;
      d.in = x + g * p.Cg * p.xs_c;
      d.out = y + g * p.Kg * p.ys_c;
      d.bias = bias ? bias + g * p.Kg : nullptr;
      d.run_tile(e, weights.group(g), m0, m1, n0,
                 n1);
    });
    return;
  }
  // im2col rows (A) packed per tile, weights (B) prepacked.
  detail::run_tiles(p.G, M, N, K, e.blocking, detail::TileRules{1, e.blocking.nr, 64, 0},
                    [&](int64_t g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    const detail::Im2colPackA_PixelsByTaps<T> pack_x{&p, x + g * p.Cg * p.xs_c};
    const detail::Prepacked<T> pack_w = weights.group(g);
    const auto epi = make_epilogue<kFused>((const T*)nullptr, bias ? bias + g * p.Kg : nullptr, relu);
    T* c = y + g * p.Kg * p.ys_c;
    detail::gemm_rect(e, m0, m1, n0, n1, K, pack_x, pack_w, c, p.ys_w, false, epi);
  });
}

}  // namespace

template <typename T>
void conv2d_forward(const Conv2dPlan& p, const T* x, const T* w, const T* bias, T* y,
                    Activation act) {
  if (p.y_size == 0) return;
  detail::CallScope scope;
  const bool relu = act == Activation::Relu;
  const bool fused = bias != nullptr || relu;
  if (p.p.layout == Layout::NCHW) {
    fused ? forward_nchw<true>(p, x, w, bias, relu, y) : forward_nchw<false>(p, x, w, bias, relu, y);
  } else {
    fused ? forward_nhwc<true>(p, x, w, bias, relu, y) : forward_nhwc<false>(p, x, w, bias, relu, y);
  }
}

template void conv2d_forward<float>(const Conv2dPlan&, const float*, const float*, const float*,
                                    float*, Activation);
template void conv2d_forward<double>(const Conv2dPlan&, const double*, const double*,
                                     const double*, double*, Activation);

}  // namespace convcore
