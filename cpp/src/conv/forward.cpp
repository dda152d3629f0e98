// Forward pass: y = act(W ⋆ x + b) as GEMMs whose image operand is never materialised
// as an im2col matrix. The executors, in preference order (the list at the end):
//   NCHW: Y (Kg × pixels) = W (Kg × Cg·R·S) · im2col (Cg·R·S × pixels), bias per row of C,
//         with im2col read in place from padded images (stride 1), or packed straight
//         from the image across images for small maps, or per image;
//   NHWC: Y (pixels × Kg) = im2col (pixels × R·S·Cg) · Wᵀ, bias per column, with the
//         pixels read in place through row pointers (one per kernel row for few channels,
//         one per tap otherwise), or packed (few channels with groups or width dilation).
// Both orientations keep C row-major with unit column stride, as the microkernels want.
// The weights arrive prepacked (per call or kept by the primitive), shared by all tiles.
#include "implementation.hpp"
#include "direct_s1.hpp"
#include "epilogue.hpp"
#include "packers.hpp"
#include "indirect_nhwc.hpp"
#include "layout_copy.hpp"
#include "winograd.hpp"
#include "../gemm/driver.hpp"
#include "../gemm/pack.hpp"

namespace convcore::detail {
namespace {

// Feature maps smaller than this many pixels are computed several images per GEMM (the
// columns run across images), so the micro-panels are not mostly padding and each tile
// has enough columns.
constexpr int64_t kMultiImageMaxPixels = 256;
// direct_stride1 reads each image's rows in place, one GEMM per image: from 128-pixel maps
// its column panels are full enough (a 1×1 c1024 layer on 14×14 maps, 2 threads on Zen 4:
// 160–166 GFLOP/s against 119–131 for im2col_multi_image).
constexpr int64_t kDirectMinPixels = 128;
// Below this many channels per group an indirect depth segment (one tap's channels) is
// too short for its per-segment pointer setup to pay off; such layers take
// indirect_nhwc_rows (one segment per kernel row) where it applies, else pack.
constexpr int64_t kIndirectMinChannels = 8;
// indirect_nhwc_rows' tiles for this plan's forward (rows_tiles_preferred,
// indirect_nhwc.hpp).
inline bool rows_preferred(const ConvPlan& p) {
  return rows_tiles_preferred(p.Cg, p.Ho, p.Wo, p.sh, p.sw, p.pad_t, p.pad_l, p.R, p.S, p.dh,
                              p.dw, p.H, p.W);
}
// via_nhwc on the rows tiles (fewer than 8 channels) where the layer has at least this many
// FLOPs per element of x and y, or kernel rows of at least kViaRowsMinRowDepth contiguous
// NHWC values (S·Cg), or output rows under kViaRowsShortRows columns (see declines).
constexpr double kViaRowsMinFlopsPerElement = 400.0;
constexpr int64_t kViaRowsMinRowDepth = 20;
constexpr int64_t kViaRowsShortRows = 16;

// Weights (A) prepacked; the im2col operand (B) is packed by every tile and costs
// several times a plain copy per element.
inline TileRules im2col_b_rules(const Blocking& bl) { return TileRules{1, bl.nr, 0, 64}; }

// The tile epilogue: nothing when there is neither bias nor activation.
template <bool kFused, typename T>
auto make_epilogue(const BiasActivation<T>& act) {
  if constexpr (kFused) return act;
  else return NoEpilogue{};
}

const char* needs_nchw(const ConvPlan& p) { return p.nchw() ? nullptr : "NCHW only"; }
const char* needs_nhwc(const ConvPlan& p) { return p.nchw() ? "NHWC only" : nullptr; }

// NCHW: the weights as the A operand, Kg × (Cg·R·S), taps in memory order.
struct WeightsAsA {
  static WeightPacking weight_packing(const ConvPlan& p) { return {true, p.Kg, p.CgRS()}; }
  template <typename T>
  static void pack_weights(const ConvPlan& p, const Blocking& bl, const T* w, T* dst) {
    const WeightPacking wp = weight_packing(p);
    pack_groups<T>(bl, p.G, wp.is_a, wp.extent, wp.depth, [&](int64_t g) {
      return MatrixPackA<T>{w + g * p.Kg * p.ws_k, p.ws_k, 1};
    }, dst);
  }
};

// NHWC: the weights as the B operand, (R·S·Cg) × Kg.
struct WeightsAsB {
  static WeightPacking weight_packing(const ConvPlan& p) { return {false, p.Kg, p.CgRS()}; }
  template <typename T>
  static void pack_weights(const ConvPlan& p, const Blocking& bl, const T* w, T* dst) {
    const WeightPacking wp = weight_packing(p);
    pack_groups<T>(bl, p.G, wp.is_a, wp.extent, wp.depth, [&](int64_t g) {
      return MatrixPackB<T>{w + g * p.Kg * p.ws_k, 1, p.ws_k};
    }, dst);
  }
};

// Winograd F(4×4, 3×3) (winograd.hpp): only when the descriptor asks for it
// (Algorithm::Winograd), then it is the entry that runs.
struct WinogradF4x3 : AlwaysPreferred {
  static constexpr const char* kName = "winograd_f4x3";
  static const char* why_not(const ConvPlan& p, const Blocking& bl) {
    return winograd_why_not(p, bl);
  }
  static WeightPacking weight_packing(const ConvPlan& p) {
    return {true, p.Kg, kWinogradWeightDepthPerChannel * p.Cg};
  }
  template <typename T>
  static void pack_weights(const ConvPlan& p, const Blocking& bl, const T* w, T* dst) {
    winograd_pack_weights(p, bl, w, dst, bl.kc);
  }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>& weights) {
    winograd_forward(p, e, a, weights);
  }
};

// Winograd F(4×4, 3×3), filter-stationary (winograd.hpp, winograd_forward_filters): for
// layers whose transformed weights are large; weights given per call are transformed as
// they go.
struct WinogradF4x3Filters {
  static constexpr const char* kName = "winograd_f4x3_filters";
  static const char* why_not(const ConvPlan& p, const Blocking& bl) {
    return winograd_filters_why_not(p, bl);
  }
  static const char* declines(const ConvPlan& p, const Blocking&) {
    // The rule and its A/B: kWinogradFiltersMinU (winograd.hpp).
    const bool few_tiles = product_at_most({p.N, winograd_tiles_h(p), winograd_tiles_w(p)},
                                           kWinogradFiltersMaxTiles);
    if (!few_tiles && product_at_most({kWinogradPoints, p.Kg, p.Cg}, kWinogradFiltersMinU - 1))
      return "many tiles and a small transformed weight: the tile schedule (winograd_f4x3) "
             "keeps U in cache and transforms it once";
    return nullptr;
  }
  static WeightPacking weight_packing(const ConvPlan& p) {
    return {true, p.Kg, kWinogradWeightDepthPerChannel * p.Cg, /*as_it_goes=*/true};
  }
  template <typename T>
  static void pack_weights(const ConvPlan& p, const Blocking& bl, const T* w, T* dst) {
    winograd_pack_weights(p, bl, w, dst, winograd_filters_kc(bl));
  }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>& weights) {
    winograd_forward_filters(p, e, a, weights);
  }
};

// NCHW, stride 1: B read in place from a padded copy of each image (direct_s1.hpp).
struct DirectStride1 : WeightsAsA {
  static constexpr const char* kName = "direct_stride1";
  static const char* why_not(const ConvPlan& p, const Blocking&) {
    if (!p.nchw()) return "NCHW only";
    if (p.sh != 1 || p.sw != 1) return "stride 1 only";
    return direct_stride1_scratch_why_not(p.Cg, p.R, p.dh, p.Wo, p.S, p.dw);
  }
  static const char* declines(const ConvPlan& p, const Blocking&) {
    if (!direct_stride1_fits(p.Wo, p.S, p.dw))
      return "output rows narrower than 2·(S−1)·dilation: over half the computed columns "
             "would be discarded";
    if (p.P() < kDirectMinPixels && p.N > 1)
      return "maps under 128 pixels of several images: im2col_multi_image fills the tiles "
             "better";
    return nullptr;
  }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>& weights) {
    const DirectS1<T> base = DirectS1<T>::forward(p, a.x, a.out, {a.bias, nullptr, a.relu});
    // Weights prepacked; a tile's only copy is its padded input rows.
    run_tiles(p.N * p.G, p.Kg, base.columns(), p.CgRS(), e.blocking,
              TileRules{1, e.blocking.nr, 0, 8},
              [&](int64_t prob, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
      const int64_t img = prob / p.G, g = prob % p.G;
      DirectS1<T> d = base;
      d.in = a.x + g * p.Cg * p.xs_c;
      d.out = a.out + g * p.Kg * p.ys_c;
      d.act = base.act.rows_from(g * p.Kg);
      d.run_tile(e, weights.group(g), img, m0, m1, n0, n1);
    });
  }
};

// NCHW, small maps: columns run across images; blocks go through a buffer
// (StoreImagesEpilogue).
struct Im2colMultiImage : WeightsAsA {
  static constexpr const char* kName = "im2col_multi_image";
  static const char* why_not(const ConvPlan& p, const Blocking&) { return needs_nchw(p); }
  static const char* declines(const ConvPlan& p, const Blocking&) {
    if (p.N <= 1) return "one image: nothing to gather across images";
    if (p.P() >= kMultiImageMaxPixels) return "maps of 256 pixels or more fill tiles per image";
    return nullptr;
  }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>& weights) {
    run_tiles(p.G, p.Kg, p.N * p.P(), p.CgRS(), e.blocking, im2col_b_rules(e.blocking),
              [&](int64_t g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
      const Im2colPackB_TapsByPixels<T> pack_x{&p, a.x + g * p.Cg * p.xs_c};
      const StoreImagesEpilogue<T> store{
          &p, a.out + g * p.Kg * p.ys_c,
          BiasActivation<T>{a.bias, nullptr, a.relu}.rows_from(g * p.Kg)};
      gemm_rect_buffered(e, m0, m1, n0, n1, p.CgRS(), weights.group(g), pack_x, store);
    });
  }
};

// NCHW: one implicit-im2col GEMM per image (and group).
struct Im2colPerImage : WeightsAsA, AlwaysPreferred {
  static constexpr const char* kName = "im2col_per_image";
  static const char* why_not(const ConvPlan& p, const Blocking&) { return needs_nchw(p); }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>& weights) {
    if (a.bias || a.relu) run_impl<true>(p, e, a, weights);
    else run_impl<false>(p, e, a, weights);
  }
  template <bool kFused, typename T>
  static void run_impl(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                       const PrepackedGroups<T>& weights) {
    run_tiles(p.N * p.G, p.Kg, p.P(), p.CgRS(), e.blocking, im2col_b_rules(e.blocking),
              [&](int64_t prob, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
      const int64_t img = prob / p.G, g = prob % p.G;
      const Im2colPackB_TapsByPixels<T> pack_x{&p, a.x + img * p.xs_n + g * p.Cg * p.xs_c};
      const auto epi =
          make_epilogue<kFused>(BiasActivation<T>{a.bias, nullptr, a.relu}.rows_from(g * p.Kg));
      T* c = a.out + img * p.ys_n + g * p.Kg * p.ys_c;
      gemm_rect(e, m0, m1, n0, n1, p.CgRS(), weights.group(g), pack_x, c, p.ys_c, false, epi);
    });
  }
};

// NHWC: pixels read in place through row pointers (indirect_nhwc.hpp).
struct IndirectNhwcForward : WeightsAsB {
  static constexpr const char* kName = "indirect_nhwc";
  static constexpr bool kNarrowForFewFilters = true;  // filters on the columns
  static const char* why_not(const ConvPlan& p, const Blocking&) { return needs_nhwc(p); }
  static const char* declines(const ConvPlan& p, const Blocking&) {
    return p.Cg < kIndirectMinChannels
               ? "fewer than 8 channels per group: a tap's segment is too short for its "
                 "pointer setup to pay off"
               : nullptr;
  }
  // Packed with the executor's deeper KC (IndirectNhwc::blocking); per call, as the tiles
  // go when the output has few pixels (LazyWeights).
  static WeightPacking weight_packing(const ConvPlan& p) {
    WeightPacking wp = WeightsAsB::weight_packing(p);
    wp.as_it_goes = LazyWeights<float>::applies(p.N * p.P());
    return wp;
  }
  template <typename T>
  static void pack_weights(const ConvPlan& p, const Blocking& bl, const T* w, T* dst) {
    WeightsAsB::pack_weights(p, IndirectNhwc<T>::blocking(bl, p.CgRS()), w, dst);
  }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>& weights) {
    IndirectNhwc<T> base = IndirectNhwc<T>::forward(p, a.x, a.out, {nullptr, a.bias, a.relu});
    if (!weights.data) base.lazy = LazyWeights<T>{&p, a.w, false};
    PixelRegions regions;
    base.order_by_region(p.N, regions);
    // Pixels read in place, weights prepacked (or packed as they go, once per tile).
    run_tiles(p.G, p.N * p.P(), p.Kg, p.CgRS(), e.blocking,
              indirect_tile_rules(e.blocking, weights),
              [&](int64_t g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
      IndirectNhwc<T> d = base;
      d.in = a.x + g * p.Cg * p.xs_c;
      d.out = a.out + g * p.Kg * p.ys_c;
      d.act = base.act.cols_from(g * p.Kg);
      d.lazy = base.lazy.group(g);
      d.run_tile(e, weights.group(g), m0, m1, n0, n1);
    });
  }
};

// NCHW through the channels-last tiles: a chunk of images is transposed to NHWC in the
// calling thread's scratch, indirect_nhwc's tiles compute its NHWC output (bias and ReLU in
// the microkernel's store), and that is transposed back into y. The transposes move the
// input and the output once more; in exchange the tiles read the image in place and keep
// their accumulators across every tap of a deep KC block, which on wide layers (many
// channels per group) measured faster than the NCHW executors.
struct ViaNhwcForward {
  static constexpr const char* kName = "via_nhwc";
  static constexpr bool kNarrowForFewFilters = true;  // filters on the columns
  static const char* why_not(const ConvPlan& p, const Blocking&) {
    if (const char* why = via_nhwc_why_not(p)) return why;
    if (p.Cg < kIndirectMinChannels && !on_rows(p))
      return "fewer than 8 channels per group, with groups or a width dilation";
    return nullptr;
  }
  // The tiles it runs: indirect_nhwc_rows' (one segment per kernel row) where the NHWC list
  // prefers them — one group, unit width dilation, rows_preferred — else indirect_nhwc's.
  static bool on_rows(const ConvPlan& p) {
    return p.G == 1 && p.dw == 1 && rows_preferred(p);
  }
  static const char* declines(const ConvPlan& p, const Blocking& bl) {
    const bool direct = !DirectStride1::why_not(p, bl) && !DirectStride1::declines(p, bl);
    // From 2 to 7 channels (the rows tiles); forced entries, Zen 4, 2 threads, GFLOP/s.
    // Against direct_stride1 (stride 1) they gain only with many FLOPs per element moved
    // (AlexNet conv1, 474 per element of x and y: 153 -> 180; 7×7 c3→16 on 64×64 147 against
    // 189, 3×3 c3→64 on 13×13 83 against 96). One channel transposes nothing on the way in
    // (5×20/2 speech layer: 122 -> 149).
    if (p.Cg < kIndirectMinChannels && p.C > 1) {
      const double moved = double(p.N) * (double(p.C) * double(p.H * p.W) +
                                          double(p.K) * double(p.P()));
      const bool many_flops = p.flops() >= kViaRowsMinFlopsPerElement * moved;
      if (direct && !many_flops)
        return "2 to 7 channels and under 400 FLOPs per element of x and y: direct_stride1 "
               "reads the image in place, cheaper than the transposes";
      // Against the im2col executors with a column stride (their packing gathers every
      // sw-th value): the rows tiles run one depth segment per kernel row (S·Cg values);
      // short segments lose to the transposes — 3×3/2 RGB stem 69 against 94 — long ones
      // gain: 7×7/2 RGB stem 149 against 139, 11×11/4 c3→16 160 against 91, 5×5/2 c5→32
      // 171 against 113. Output rows under 16 columns make the strided packing slow at any
      // depth: 5×5/2 c4→12 on 11×11 (the CS231n notes' example shape) 42 against 30, 3×3/2
      // c4→32 on 16×16 91 against 68, 5×5/2 c2→8 on 28×28 26 against 19. These
      // measurements decide for small layers too (the example: 2.5 MFLOP). At unit column
      // stride im2col's rows are copies and it stays ahead (3×3 c3→64 on 13×13: 120
      // against 83).
      if (!direct && p.sw > 1) {
        if (!many_flops && p.S * p.Cg < kViaRowsMinRowDepth && p.Wo >= kViaRowsShortRows)
          return "2 to 7 channels, kernel rows under 20 values (S × channels), output rows "
                 "of 16 or more columns and under 400 FLOPs per element of x and y: the "
                 "im2col executors' packing is cheaper than the transposes";
        return nullptr;
      }
    }
    // Against direct_stride1 (B read in place) only wide layers gain; against the im2col
    // executors (strides > 1, small maps) most layers do.
    if (direct) return via_nhwc_declines(p, kViaNhwcForwardFlopsBound);
    return via_nhwc_declines_vs_packing(p);
  }
  // As it goes with few output pixels (LazyWeights), on indirect_nhwc's tiles only, and
  // not from filters in NCHW order, which pack_tap_major_by_panels packs up front faster
  // than the lazy panels gather their strided values: batch-1 3×3 c256 on 14×14 1.29 →
  // 1.19 ms, 3×3 c512 on 7×7 2.14 → 1.94; 3×3 c128 on 8×8, batch 4, 0.41 either way (Zen 4,
  // 2 threads, builds alternating, medians of 8–10).
  static WeightPacking weight_packing(const ConvPlan& p) {
    return {false, p.Kg, p.CgRS(),
            !tap_major_by_panels_applies(p) && !on_rows(p) &&
                LazyWeights<float>::applies(p.N * p.P())};
  }
  template <typename T>
  static void pack_weights(const ConvPlan& p, const Blocking& bl, const T* w, T* dst) {
    const WeightPacking wp = weight_packing(p);
    const Blocking tiles = IndirectNhwc<T>::blocking(bl, wp.depth);
    if (pack_tap_major_by_panels(p, tiles, w, dst)) return;  // NCHW filters
    pack_groups<T>(tiles, p.G, wp.is_a, wp.extent, wp.depth,
                   [&](int64_t g) { return TapMajorWeightPackB<T>{&p, w + g * p.Kg * p.ws_k}; },
                   dst);
  }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>& weights) {
    const BiasActivation<T> act{nullptr, a.bias, a.relu};
    if (on_rows(p))
      run_via_nhwc(IndirectNhwcRows<T>::forward(p, nullptr, nullptr, act), e, weights, p.N, 1,
                   a.x, p.xs_n, p.C, a.out, p.ys_n, p.K);
    else {
      IndirectNhwc<T> base = IndirectNhwc<T>::forward(p, nullptr, nullptr, act);
      if (!weights.data) base.lazy = LazyWeights<T>{&p, a.w, false};
      run_via_nhwc(base, e, weights, p.N, p.G, a.x, p.xs_n, p.C, a.out, p.ys_n, p.K);
    }
  }
};

// NHWC, unit width dilation, one group: one depth segment per kernel row (S·Cg values
// contiguous in the input) read in place through row pointers (IndirectNhwcRows).
struct IndirectNhwcRowsForward : WeightsAsB {
  static constexpr const char* kName = "indirect_nhwc_rows";
  static constexpr bool kNarrowForFewFilters = true;  // filters on the columns
  static const char* why_not(const ConvPlan& p, const Blocking&) {
    if (p.nchw()) return "NHWC only";
    if (p.dw != 1) return "width dilation 1 only";
    if (p.G != 1) return "one group only: a kernel row's channels must be contiguous";
    if (p.xs_c != 1 || p.xs_w != p.Cg) return "dense pixels only: a kernel row's channels must be contiguous";
    return nullptr;
  }
  static const char* declines(const ConvPlan& p, const Blocking&) {
    return rows_preferred(p)
               ? nullptr
               : "32 or more channels per group (32 with 5 % or more of the products in the "
                 "padding): indirect_nhwc's per-tap segments are as fast, its regions skip "
                 "the padding";
  }
  template <typename T>
  static void pack_weights(const ConvPlan& p, const Blocking& bl, const T* w, T* dst) {
    WeightsAsB::pack_weights(p, IndirectNhwcRows<T>::blocking(bl, p.CgRS()), w, dst);
  }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>& weights) {
    const IndirectNhwcRows<T> d =
        IndirectNhwcRows<T>::forward(p, a.x, a.out, {nullptr, a.bias, a.relu});
    run_tiles(1, p.N * p.P(), p.Kg, p.CgRS(), e.blocking, TileRules{1, e.blocking.nr, 0, 0},
              [&](int64_t, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
      d.run_tile(e, weights.group(0), m0, m1, n0, n1);
    });
  }
};

// NHWC: im2col rows (A) packed per tile, weights (B) prepacked.
struct Im2colNhwc : WeightsAsB, AlwaysPreferred {
  static constexpr const char* kName = "im2col_nhwc";
  static constexpr bool kNarrowForFewFilters = true;  // filters on the columns
  static const char* why_not(const ConvPlan& p, const Blocking&) { return needs_nhwc(p); }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>& weights) {
    if (a.bias || a.relu) run_impl<true>(p, e, a, weights);
    else run_impl<false>(p, e, a, weights);
  }
  template <bool kFused, typename T>
  static void run_impl(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                       const PrepackedGroups<T>& weights) {
    run_tiles(p.G, p.N * p.P(), p.Kg, p.CgRS(), e.blocking, TileRules{1, e.blocking.nr, 64, 0},
              [&](int64_t g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
      const Im2colPackA_PixelsByTaps<T> pack_x{&p, a.x + g * p.Cg * p.xs_c};
      const auto epi =
          make_epilogue<kFused>(BiasActivation<T>{nullptr, a.bias, a.relu}.cols_from(g * p.Kg));
      T* c = a.out + g * p.Kg * p.ys_c;
      gemm_rect(e, m0, m1, n0, n1, p.CgRS(), pack_x, weights.group(g), c, p.ys_w, false, epi);
    });
  }
};

}  // namespace

// In preference order: the first that applies and does not decline runs.
template <typename T>
const ImplList<T>& forward_implementations() {
  static const ImplList<T> list = {
      implementation_of<WinogradF4x3Filters, T>(),
      implementation_of<WinogradF4x3, T>(),
      depthwise_nchw_forward<T>(),            depthwise_nhwc_forward<T>(),
      grouped_nhwc_forward<T>(),
      dense_rows_nchw_forward<T>(),
      implementation_of<ViaNhwcForward, T>(),
      implementation_of<DirectStride1, T>(),  implementation_of<Im2colMultiImage, T>(),
      implementation_of<Im2colPerImage, T>(), implementation_of<IndirectNhwcRowsForward, T>(),
      implementation_of<IndirectNhwcForward, T>(),
      implementation_of<Im2colNhwc, T>(),
  };
  return list;
}
template const ImplList<float>& forward_implementations<float>();
template const ImplList<double>& forward_implementations<double>();

}  // namespace convcore::detail
