// Backward-data pass. Executors, in preference order (the list at the end):
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

#include "implementation.hpp"
#include "direct_s1.hpp"
#include "packers.hpp"
#include "indirect_nhwc.hpp"
#include "../gemm/driver.hpp"
#include "../gemm/pack.hpp"

namespace convcore::detail {
namespace {

// Below this many filters per group an indirect depth segment is too short to pay off.
constexpr int64_t kIndirectMinFilters = 8;
// Input maps smaller than this (with several images) go to col2im, whose columns run
// across images, rather than the per-image direct executor.
constexpr int64_t kDirectMinPixels = 256;

// dx as the full correlation of dy with W flipped and transposed (Cg × Kg·R·S), NCHW.
struct DirectStride1 {
  static constexpr const char* kName = "direct_stride1";
  static const char* why_not(const ConvPlan& p, const Blocking&) {
    if (!p.nchw()) return "NCHW only";
    if (p.sh != 1 || p.sw != 1) return "stride 1 only";
    return direct_stride1_scratch_why_not(p.Kg, p.R, p.dh, p.W, p.S, p.dw);
  }
  static const char* declines(const ConvPlan& p, const Blocking&) {
    if (!direct_stride1_fits(p.W, p.S, p.dw))
      return "input rows narrower than 2·(S−1)·dilation: over half the computed columns "
             "would be discarded";
    if (p.H * p.W < kDirectMinPixels && p.N > 1)
      return "small maps of several images: col2im's columns run across images";
    return nullptr;
  }
  static WeightPacking weight_packing(const ConvPlan& p) {
    return {true, p.Cg, p.Kg * p.R * p.S};
  }
  template <typename T>
  static void pack_weights(const ConvPlan& p, const Blocking& bl, const T* w, T* dst) {
    const WeightPacking wp = weight_packing(p);
    pack_groups<T>(bl, p.G, wp.is_a, wp.extent, wp.depth, [&](int64_t g) {
      return FlippedWeightTPackA<T>{&p, w + g * p.Kg * p.ws_k};
    }, dst);
  }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>& weights) {
    const DirectS1<T> base = DirectS1<T>::backward_data(p, a.dy, a.out);
    run_tiles(p.N * p.G, p.Cg, base.columns(), p.Kg * p.R * p.S, e.blocking,
              TileRules{1, e.blocking.nr, 0, 8},
              [&](int64_t prob, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
      const int64_t img = prob / p.G, g = prob % p.G;
      DirectS1<T> d = base;
      d.in = a.dy + g * p.Kg * p.ys_c;
      d.out = a.out + g * p.Cg * p.xs_c;
      d.run_tile(e, weights.group(g), img, m0, m1, n0, n1);
    });
  }
};

// The same full correlation in NHWC: rows = pixels of dx, depth = (r, s, k) of dy.
struct IndirectNhwcBackwardData {
  static constexpr const char* kName = "indirect_nhwc";
  static const char* why_not(const ConvPlan& p, const Blocking&) {
    if (p.nchw()) return "NHWC only";
    if (p.sh != 1 || p.sw != 1) return "stride 1 only";
    return nullptr;
  }
  static const char* declines(const ConvPlan& p, const Blocking&) {
    return p.Kg < kIndirectMinFilters
               ? "fewer than 8 filters per group: a tap's segment is too short for its "
                 "pointer setup to pay off"
               : nullptr;
  }
  static WeightPacking weight_packing(const ConvPlan& p) {
    return {false, p.Cg, p.R * p.S * p.Kg};
  }
  template <typename T>
  static void pack_weights(const ConvPlan& p, const Blocking& bl, const T* w, T* dst) {
    const WeightPacking wp = weight_packing(p);
    pack_groups<T>(bl, p.G, wp.is_a, wp.extent, wp.depth, [&](int64_t g) {
      return FlippedWeightPackB<T>{&p, w + g * p.Kg * p.ws_k};
    }, dst);
  }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>& weights) {
    const IndirectNhwc<T> base = IndirectNhwc<T>::backward_data(p, a.dy, a.out);
    run_tiles(p.G, p.N * p.H * p.W, p.Cg, p.R * p.S * p.Kg, e.blocking,
              TileRules{1, e.blocking.nr, 0, 0},
              [&](int64_t g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
      IndirectNhwc<T> d = base;
      d.in = a.dy + g * p.Kg * p.ys_c;
      d.out = a.out + g * p.Cg * p.xs_c;
      d.run_tile(e, weights.group(g), m0, m1, n0, n1);
    });
  }
};

// dcol = Wᵀ · dY block by block, scattered into dx (any stride, layout, dilation).
struct Col2im : AlwaysPreferred {
  static constexpr const char* kName = "col2im";
  static const char* why_not(const ConvPlan&, const Blocking&) { return nullptr; }
  static WeightPacking weight_packing(const ConvPlan& p) { return {true, p.CgRS(), p.Kg}; }
  template <typename T>
  static void pack_weights(const ConvPlan& p, const Blocking& bl, const T* w, T* dst) {
    const WeightPacking wp = weight_packing(p);
    pack_groups<T>(bl, p.G, wp.is_a, wp.extent, wp.depth, [&](int64_t g) {
      return WeightTPackA<T>{&p, w + g * p.Kg * p.ws_k};
    }, dst);
  }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>& weights) {
    T* dx = a.out;
    // Zero dx in parallel chunks (col2im accumulates into it).
    const int64_t total = p.x_size;
    parallel_run(threads_for(double(total) * 8), [&](int tid, int nt) {
      int64_t b, end;
      static_range(total, tid, nt, b, end);
      if (end > b) std::memset(dx + b, 0, sizeof(T) * static_cast<size_t>(end - b));
    });
    const int64_t M = p.CgRS(), N = p.N * p.P(), K = p.Kg;
    // Tiles hold whole channels (R·S rows, starting on micro-panel boundaries) of whole
    // images (columns run across the batch), so each owns its part of dx.
    const int64_t rs = p.R * p.S, mr = e.blocking.mr;
    const int64_t row_align = rs / std::gcd(rs, mr) * mr;
    run_tiles(p.G, M, N, K, e.blocking, TileRules{row_align, p.P(), 0, 24},
              [&](int64_t g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
      const OutputGradPackB<T> pack_dy{&p, a.dy + g * p.Kg * p.ys_c};
      const Col2imEpilogue<T> col2im{&p, dx + g * p.Cg * p.xs_c};
      gemm_rect_buffered(e, m0, m1, n0, n1, K, weights.group(g), pack_dy, col2im);
    });
  }
};

}  // namespace

// In preference order: the first that applies and does not decline runs.
template <typename T>
const ImplList<T>& backward_data_implementations() {
  static const ImplList<T> list = {
      depthwise_nchw_backward_data<T>(),
      depthwise_nhwc_backward_data<T>(),
      grouped_nhwc_backward_data<T>(),
      implementation_of<DirectStride1, T>(),
      implementation_of<IndirectNhwcBackwardData, T>(),
      implementation_of<Col2im, T>(),
  };
  return list;
}
template const ImplList<float>& backward_data_implementations<float>();
template const ImplList<double>& backward_data_implementations<double>();

}  // namespace convcore::detail
