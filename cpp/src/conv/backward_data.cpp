// Backward-data pass. Executors, in preference order (the list at the end):
//  * stride 1: dx is the full correlation of dy with the flipped, transposed weights —
//    a forward-style GEMM through the direct (NCHW) or indirect (NHWC) executor that
//    writes every element of dx once: no col2im, no zeroing;
//  * stride > 1: the sub-pixel decomposition (subpixel.hpp) — stride_h·stride_w dense
//    stride-1 correlations of dy, one per phase of dx, each writing its interleaved rows
//    and columns of dx once;
//  * otherwise dx = col2im(Wᵀ · dy), described here. Per group the column gradient
// dcol (Cg·R·S × N·Ho·Wo) = Wᵀ (Cg·R·S × Kg) · dY (Kg × N·Ho·Wo) is produced block by
// block in a per-thread buffer and scattered into dx by the col2im epilogue; no full
// column matrix exists. Rows are taps in (c, r, s) order for both layouts, so a tile of
// whole channels and whole images owns its slice of dx: tiles are cut only between
// channels and between images, which makes the scatter race-free, and column blocks are
// cut at fixed positions, which makes its summation order independent of the threads.
//
// The same executors compute a transposed convolution's forward (OpKind::ConvTranspose2d):
// ExecArgs then carries a bias per dx channel and ReLU, which the once-writing executors
// apply as they store and col2im applies by starting dx from the bias and finishing with
// a ReLU pass.
#include <cstring>
#include <numeric>
#include <vector>

#include "implementation.hpp"
#include "direct_s1.hpp"
#include "packers.hpp"
#include "indirect_nhwc.hpp"
#include "layout_copy.hpp"
#include "subpixel.hpp"
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
      d.act = BiasActivation<T>{a.bias, nullptr, a.relu}.rows_from(g * p.Cg);
      d.run_tile(e, weights.group(g), img, m0, m1, n0, n1);
    });
  }
};

// The weights of the NHWC tiles' full correlation: flipped and transposed, a B operand of
// R·S·Kg × Cg per group, packed with the tiles' deeper KC (IndirectNhwc::blocking); per
// call, as the tiles go when dx has few pixels (LazyWeights).
struct FlippedWeightsForNhwcTiles {
  static WeightPacking weight_packing(const ConvPlan& p) {
    return {false, p.Cg, p.R * p.S * p.Kg, LazyWeights<float>::applies(p.N * p.H * p.W)};
  }
  template <typename T>
  static void pack_weights(const ConvPlan& p, const Blocking& bl, const T* w, T* dst) {
    const WeightPacking wp = weight_packing(p);
    if (pack_flipped_by_panels(p, IndirectNhwc<T>::blocking(bl, wp.depth), w, dst)) return;
    pack_groups<T>(IndirectNhwc<T>::blocking(bl, wp.depth), p.G, wp.is_a, wp.extent, wp.depth,
                   [&](int64_t g) { return FlippedWeightPackB<T>{&p, w + g * p.Kg * p.ws_k}; },
                   dst);
  }
};

// NCHW through the channels-last full correlation (as via_nhwc in forward.cpp): dy is
// transposed to NHWC a chunk of images at a time, indirect_nhwc's tiles compute dx in NHWC
// (any bias and ReLU of a transposed convolution's forward in the microkernel's store), and
// that is transposed back.
struct ViaNhwcBackwardData : FlippedWeightsForNhwcTiles {
  static constexpr const char* kName = "via_nhwc";
  static const char* why_not(const ConvPlan& p, const Blocking&) {
    if (const char* why = via_nhwc_why_not(p)) return why;
    if (p.sh != 1 || p.sw != 1) return "stride 1 only";
    return p.Kg < kIndirectMinFilters ? "fewer than 8 filters per group" : nullptr;
  }
  static const char* declines(const ConvPlan& p, const Blocking&) {
    return via_nhwc_declines(p);
  }
  // Filters in NCHW order packed up front by panels (pack_flipped_by_panels) rather than
  // as the tiles go with strided reads.
  static WeightPacking weight_packing(const ConvPlan& p) {
    WeightPacking wp = FlippedWeightsForNhwcTiles::weight_packing(p);
    if (tap_major_by_panels_applies(p)) wp.as_it_goes = false;
    return wp;
  }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>& weights) {
    IndirectNhwc<T> base = IndirectNhwc<T>::backward_data(p, nullptr, nullptr);
    base.act = BiasActivation<T>{nullptr, a.bias, a.relu};
    if (!weights.data) base.lazy = LazyWeights<T>{&p, a.w, true};
    run_via_nhwc(base, e, weights, p.N, p.G, a.dy, p.ys_n, p.K, a.out, p.xs_n, p.C);
  }
};

// The same full correlation in NHWC: rows = pixels of dx, depth = (r, s, k) of dy.
struct IndirectNhwcBackwardData : FlippedWeightsForNhwcTiles {
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
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>& weights) {
    IndirectNhwc<T> base = IndirectNhwc<T>::backward_data(p, a.dy, a.out);
    if (!weights.data) base.lazy = LazyWeights<T>{&p, a.w, true};
    PixelRegions regions;
    base.order_by_region(p.N, regions);
    run_tiles(p.G, p.N * p.H * p.W, p.Cg, p.R * p.S * p.Kg, e.blocking,
              indirect_tile_rules(e.blocking, weights),
              [&](int64_t g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
      IndirectNhwc<T> d = base;
      d.in = a.dy + g * p.Kg * p.ys_c;
      d.out = a.out + g * p.Cg * p.xs_c;
      d.act = BiasActivation<T>{nullptr, a.bias, a.relu}.cols_from(g * p.Cg);
      d.lazy = base.lazy.group(g);
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
    // Zero dx (or set it to the bias) in parallel chunks: col2im accumulates into it.
    const int64_t total = p.x_size;
    parallel_run(threads_for(double(total) * 8), [&](int tid, int nt) {
      int64_t b, end;
      static_range(total, tid, nt, b, end);
      if (end <= b) return;
      if (!a.bias) {
        std::memset(dx + b, 0, sizeof(T) * static_cast<size_t>(end - b));
      } else if (p.nchw()) {
        for (int64_t i = b; i < end; ++i) dx[i] = a.bias[(i / p.xs_c) % p.C];
      } else {
        for (int64_t i = b; i < end; ++i) dx[i] = a.bias[i % p.C];
      }
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
    if (a.relu) {
      parallel_run(threads_for(double(total) * 4), [&](int tid, int nt) {
        int64_t b, end;
        static_range(total, tid, nt, b, end);
        for (int64_t i = b; i < end; ++i) dx[i] = BiasActivation<T>::relu_of(dx[i]);
      });
    }
  }
};

// Above this stride a phase decomposition has too many (mostly tiny) phases.
constexpr int64_t kSubpixelMaxStride = 16;
// Phase maps smaller than this (per image) leave the per-image phase GEMMs short of
// columns; with several images col2im, whose columns run across images, does better.
constexpr int64_t kSubpixelMinPhasePixels = 64;
// The phase GEMMs have one row per input channel of the group: below this (RGB stems) the
// micro-panels are mostly padding. (A constant, not MR, so the choice is the same on
// every ISA.)
constexpr int64_t kSubpixelMinChannels = 8;

// The sub-pixel executors' weights: per group, one operand per phase (a, b) in row-major
// order, each Kg·taps_h·taps_w deep (together Kg·R·S), at its depth offset times the padded
// extent; pack(g, phase rows, phase columns, depth, destination) packs one.
template <typename T, typename Pack>
void for_each_phase_operand(const ConvPlan& p, const WeightPacking& wp, const Blocking& bl,
                            T* dst, Pack&& pack) {
  const int64_t padded = wp.padded(bl), group_elems = wp.group_elems(bl);
  const SubpixelGeometry geo(p);
  for (int64_t g = 0; g < p.G; ++g) {
    int64_t offset = 0;
    for (const PhaseAxis& ra : geo.rows)
      for (const PhaseAxis& cb : geo.cols) {
        const int64_t depth = geo.depth(p, ra, cb);
        pack(g, ra, cb, depth, dst + g * group_elems + offset * padded);
        offset += depth;
      }
  }
}

// Strided: one dense stride-1 correlation per phase of dx (subpixel.hpp), any layout.
struct Subpixel {
  static constexpr const char* kName = "subpixel";
  static const char* why_not(const ConvPlan& p, const Blocking&) {
    if (p.sh > kSubpixelMaxStride || p.sw > kSubpixelMaxStride)
      return "stride above 16 along an axis: too many phases";
    const SubpixelGeometry geo(p);
    for (const PhaseAxis& ra : geo.rows)
      for (const PhaseAxis& cb : geo.cols)
        if (subpixel_row_scratch(p, ra, cb) > kImageScratchElems)
          return "the dy rows one phase row reads exceed the per-thread scratch bound "
                 "(dilation, padding or width too large)";
    return nullptr;
  }
  static const char* declines(const ConvPlan& p, const Blocking&) {
    if (p.sh == 1 && p.sw == 1)
      return "stride 1: one phase, the full correlation (direct_stride1, indirect_nhwc)";
    if (p.Cg < kSubpixelMinChannels)
      return "fewer than 8 input channels per group: the phase GEMMs' rows would be mostly "
             "micro-panel padding (col2im's rows are channels times taps)";
    if (p.N > 1 && ceil_div(p.H, p.sh) * ceil_div(p.W, p.sw) < kSubpixelMinPhasePixels)
      return "small phase maps of several images: col2im's columns run across images";
    const SubpixelGeometry geo(p);
    for (const PhaseAxis& cb : geo.cols)
      if (cb.count > 0 && 2 * (cb.hi - cb.lo) > cb.count)
        return "phase rows narrower than twice the spread of their taps: over half the "
               "computed columns would be discarded";
    return nullptr;
  }
  static WeightPacking weight_packing(const ConvPlan& p) {
    return {true, p.Cg, p.Kg * p.R * p.S};
  }
  // Per group, the phases' A operands one after another (phase (a, b) in row-major order,
  // each Kg·taps_h·taps_w deep: together Kg·R·S).
  template <typename T>
  static void pack_weights(const ConvPlan& p, const Blocking& bl, const T* w, T* dst) {
    for_each_phase_operand(p, weight_packing(p), bl, dst,
                           [&](int64_t g, const PhaseAxis& ra, const PhaseAxis& cb,
                               int64_t depth, T* at) {
      prepack(bl, PhaseWeightPackA<T>{&p, w + g * p.Kg * p.ws_k, &ra, &cb}, true, p.Cg, depth,
              at);
    });
  }
  // One parallel region for every phase: problems are (image, group, phase) with the
  // phase innermost, so each thread's share holds every phase (their depths differ); a
  // tile past its phase's columns does nothing.
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>& weights) {
    const SubpixelGeometry geo(p);
    const BiasActivation<T> act{a.bias, nullptr, a.relu};
    struct Phase {
      const PhaseAxis* ra;
      const PhaseAxis* cb;
      int64_t offset, depth, columns;
    };
    std::vector<Phase> phases;
    int64_t offset = 0, max_columns = 0, max_depth = 0;
    for (const PhaseAxis& ra : geo.rows)
      for (const PhaseAxis& cb : geo.cols) {
        const int64_t depth = geo.depth(p, ra, cb);
        if (ra.count > 0 && cb.count > 0) {
          if (depth == 0) {
            fill_phase(p, ra, cb, act, a.out);
          } else {
            const int64_t columns = ra.count * SubpixelGeometry::wp(cb);
            phases.push_back({&ra, &cb, offset, depth, columns});
            max_columns = std::max(max_columns, columns);
            max_depth = std::max(max_depth, depth);
          }
        }
        offset += depth;
      }
    const int64_t np = static_cast<int64_t>(phases.size());
    if (np == 0) return;
    run_tiles(p.N * p.G * np, p.Cg, max_columns, max_depth, e.blocking,
              TileRules{1, e.blocking.nr, 0, 8},
              [&](int64_t prob, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
      const Phase& ph = phases[static_cast<size_t>(prob % np)];
      if (n0 >= ph.columns) return;
      const int64_t img = prob / np / p.G, g = (prob / np) % p.G;
      const SubpixelPhase<T> run{&p, ph.ra, ph.cb, a.dy + g * p.Kg * p.ys_c,
                                 a.out + g * p.Cg * p.xs_c, act.rows_from(g * p.Cg)};
      run.run_tile(e, Prepacked<T>{weights.data + g * weights.group_elems +
                                       ph.offset * weights.padded,
                                   weights.padded},
                   img, m0, m1, n0, std::min(n1, ph.columns));
    });
  }
  // A phase no tap reaches: act(0 + bias).
  template <typename T>
  static void fill_phase(const ConvPlan& p, const PhaseAxis& ra, const PhaseAxis& cb,
                         const BiasActivation<T>& act, T* dx) {
    const int64_t jobs = p.N * p.C;
    parallel_run(std::max(1, std::min<int>(threads_for(double(ra.count) * cb.count * jobs),
                                           int(std::min<int64_t>(jobs, 1 << 20)))),
                 [&](int tid, int nt) {
      int64_t j0, j1;
      static_range(jobs, tid, nt, j0, j1);
      for (int64_t j = j0; j < j1; ++j) {
        const int64_t n = j / p.C, c = j % p.C;
        T v = act.row_bias ? act.row_bias[c] : T(0);
        if (act.relu) v = BiasActivation<T>::relu_of(v);
        T* plane = dx + n * p.xs_n + c * p.xs_c;
        for (int64_t t = 0; t < ra.count; ++t)
          for (int64_t u = 0; u < cb.count; ++u)
            plane[(ra.first + t * p.sh) * p.xs_h + (cb.first + u * p.sw) * p.xs_w] = v;
      }
    });
  }
};


// NHWC with a stride: the sub-pixel phases (subpixel.hpp) on the channels-last tiles.
// Phase (a, b) of dx is a stride-1 correlation of dy with the taps that land on it: rows =
// the phase's dx pixels (images × its rows × its columns), depth = (tap_h, tap_w, k), dy's
// pixels read in place through row pointers (the taps' dy rows and columns in increasing
// shift: a correlation whose "padding" is minus the smallest shift), written through the
// tiles' C buffer into the phase's interleaved pixels of dx, bias and ReLU (a transposed
// convolution's forward) in the microkernel's store. The plane-oriented subpixel executor
// transposes NHWC dy into planes per tile and scatters dx one value at a time.
struct SubpixelNhwc {
  static constexpr const char* kName = "subpixel_nhwc";
  static const char* why_not(const ConvPlan& p, const Blocking&) {
    if (p.nchw()) return "NHWC only";
    if (p.sh > kSubpixelMaxStride || p.sw > kSubpixelMaxStride)
      return "stride above 16 along an axis: too many phases";
    return nullptr;
  }
  static const char* declines(const ConvPlan& p, const Blocking&) {
    if (p.sh == 1 && p.sw == 1) return "stride 1: one phase, indirect_nhwc's full correlation";
    if (p.Cg < kSubpixelMinChannels)
      return "fewer than 8 input channels per group: the tiles' columns would be mostly "
             "padding (col2im's rows are channels times taps)";
    return p.Kg < kIndirectMinFilters
               ? "fewer than 8 filters per group: a tap's segment is too short for its "
                 "pointer setup to pay off"
               : nullptr;
  }
  static WeightPacking weight_packing(const ConvPlan& p) {
    return {false, p.Cg, p.Kg * p.R * p.S};
  }
  // Per group, the phases' B operands one after another (phase (a, b) in row-major order,
  // each Kg·taps_h·taps_w deep, packed with the tiles' KC for that depth: together Kg·R·S).
  template <typename T>
  static void pack_weights(const ConvPlan& p, const Blocking& bl, const T* w, T* dst) {
    for_each_phase_operand(p, weight_packing(p), bl, dst,
                           [&](int64_t g, const PhaseAxis& ra, const PhaseAxis& cb,
                               int64_t depth, T* at) {
      if (depth > 0)
        prepack(IndirectNhwc<T>::blocking(bl, depth),
                PhaseWeightPackB<T>{&p, w + g * p.Kg * p.ws_k, &ra, &cb}, false, p.Cg, depth,
                at);
    });
  }
  // The step between a phase's taps in dy (they are evenly spaced): dilation / gcd(dilation,
  // stride); any value for a single tap.
  static int64_t tap_step(const PhaseAxis& ax) {
    return ax.ntaps() > 1 ? ax.shift[0] - ax.shift[1] : 1;
  }
  // The phase's tiles over dy and dx (group 0).
  template <typename T>
  static IndirectNhwc<T> phase_tiles(const ConvPlan& p, const ExecArgs<T>& a,
                                     const PhaseAxis& ra, const PhaseAxis& cb,
                                     const BiasActivation<T>& act) {
    IndirectNhwc<T> d;
    d.in = a.dy;
    d.in_sn = p.ys_n; d.in_sh = p.ys_h; d.in_sw = p.ys_w;
    d.Cin = p.Kg; d.Hin = p.Ho; d.Win = p.Wo;
    d.out = a.out + ra.first * p.xs_h + cb.first * p.xs_w;
    d.ldo = 0;
    d.out_sn = p.xs_n; d.out_sh = p.sh * p.xs_h; d.out_sw = p.sw * p.xs_w;
    d.Hout = ra.count; d.Wout = cb.count;
    d.R = ra.ntaps(); d.S = cb.ntaps(); d.sh = 1; d.sw = 1;
    d.dh = tap_step(ra); d.dw = tap_step(cb);
    d.pad_top = -ra.lo; d.pad_left = -cb.lo;
    d.act = act;
    return d;
  }
  // A phase runs on indirect_nhwc_rows' tiles (one depth segment per kernel row of the
  // phase: its width taps read consecutive pixels of dy, all their channels one contiguous
  // run) where the forward would: one group, dense dy pixels, width taps a pixel apart, and
  // rows_tiles_preferred for the phase's correlation (fewer than 32 filters, or 32 with
  // under 5 % of its products outside dy). Zen 4, 2 threads, the builds alternating in
  // fresh processes: 5×10/2 speech c32→32 on 40×200, median of 12, 8.48 → 8.28 ms (of 10,
  // 8.88 → 8.62).
  template <typename T>
  static bool on_rows(const ConvPlan& p, const IndirectNhwc<T>& d) {
    if (p.G != 1 || p.ys_c != 1 || p.ys_w != p.Kg || (d.S > 1 && d.dw != 1)) return false;
    return rows_tiles_preferred(d.Cin, d.Hout, d.Wout, 1, 1, d.pad_top, d.pad_left, d.R, d.S,
                                d.dh, d.dw, d.Hin, d.Win);
  }
  template <typename T>
  static IndirectNhwcRows<T> rows_of(const IndirectNhwc<T>& d) {
    IndirectNhwcRows<T> r;
    r.in = d.in;
    r.in_sn = d.in_sn; r.in_sh = d.in_sh;
    r.Cin = d.Cin; r.Hin = d.Hin; r.Win = d.Win;
    r.out = d.out;
    r.ldo = 0;
    r.out_sn = d.out_sn; r.out_sh = d.out_sh; r.out_sw = d.out_sw;
    r.Hout = d.Hout; r.Wout = d.Wout;
    r.R = d.R; r.S = d.S; r.sh = 1; r.sw = 1; r.dh = d.dh;
    r.pad_top = d.pad_top; r.pad_left = d.pad_left;
    r.act = d.act;
    return r;
  }
  // One parallel region computes every phase. Each phase's pixels (in regions order, every
  // image) are cut into the same number of equal chunks, at least one per image and per
  // thread, and the problems are (group, chunk, phase) with the phase innermost: a thread's
  // share holds every phase of its chunks — the phases' different depths even out, and the
  // phases of a chunk read about the same rows of dy while they are in its caches. (A
  // region per phase, each split across the threads, waited at a barrier per phase and read
  // all of dy once per phase: YOLO 3×3/2 c64→128 on 104×104, NHWC, Zen 4, 2 threads, the
  // builds alternating in fresh processes, median ms 18.0 → 16.3 in one series of 8 and
  // 16.1 → 15.9 in one of 5 on a quieter host; 3×3/2 c128→256 28×28 8.9 against 9.0, within
  // the noise.) The cut depends on the team size; no result does: a tile computes each of
  // its outputs over the whole depth whatever the tiling.
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>& weights) {
    const SubpixelGeometry geo(p);
    const BiasActivation<T> act{nullptr, a.bias, a.relu};
    struct Phase {
      IndirectNhwc<T> d;
      IndirectNhwcRows<T> rows;  // when on_rows
      bool on_rows;
      int64_t offset, depth, pixels;
      PixelRegions regions;
    };
    std::vector<Phase> phases;
    phases.reserve(geo.rows.size() * geo.cols.size());  // regions' addresses stay put
    int64_t offset = 0, min_pixels = 0, max_pixels = 0, max_depth = 0;
    for (const PhaseAxis& ra : geo.rows)
      for (const PhaseAxis& cb : geo.cols) {
        const int64_t depth = geo.depth(p, ra, cb);
        if (ra.count > 0 && cb.count > 0) {
          if (depth == 0) {
            Subpixel::fill_phase(p, ra, cb, BiasActivation<T>{a.bias, nullptr, a.relu}, a.out);
          } else {
            Phase& ph = phases.emplace_back();
            ph.d = phase_tiles(p, a, ra, cb, act);
            ph.on_rows = on_rows(p, ph.d);
            if (ph.on_rows) ph.rows = rows_of(ph.d);
            else ph.d.order_by_region(p.N, ph.regions);
            ph.offset = offset;
            ph.depth = depth;
            ph.pixels = p.N * ra.count * cb.count;
            min_pixels = phases.size() == 1 ? ph.pixels : std::min(min_pixels, ph.pixels);
            max_pixels = std::max(max_pixels, ph.pixels);
            max_depth = std::max(max_depth, depth);
          }
        }
        offset += depth;
      }
    const int64_t np = static_cast<int64_t>(phases.size());
    if (np == 0) return;
    const int64_t chunks = std::min<int64_t>(std::max<int64_t>(p.N, team_threads()), min_pixels);
    run_tiles(p.G * chunks * np, ceil_div(max_pixels, chunks), p.Cg, max_depth, e.blocking,
              TileRules{1, e.blocking.nr, 0, 0},
              [&](int64_t prob, int64_t m0, int64_t m1, int64_t c0, int64_t c1) {
      const Phase& ph = phases[static_cast<size_t>(prob % np)];
      const int64_t chunk = (prob / np) % chunks, g = prob / np / chunks;
      const int64_t r0 = ph.pixels * chunk / chunks, r1 = ph.pixels * (chunk + 1) / chunks;
      if (r0 + m0 >= r1) return;
      const Prepacked<T> w{weights.data + g * weights.group_elems + ph.offset * weights.padded,
                           weights.padded};
      if (ph.on_rows) {  // one group
        ph.rows.run_tile(e, w, r0 + m0, std::min(r0 + m1, r1), c0, c1);
        return;
      }
      IndirectNhwc<T> t = ph.d;
      t.in = a.dy + g * p.Kg * p.ys_c;
      t.out = ph.d.out + g * p.Cg * p.xs_c;
      t.act = act.cols_from(g * p.Cg);
      t.run_tile(e, w, r0 + m0, std::min(r0 + m1, r1), c0, c1);
    });
  }
};

// NCHW with strides through subpixel_nhwc (as via_nhwc does stride 1 through the full
// correlation): dy transposed to NHWC a chunk of images at a time into the calling thread's
// image scratch, subpixel_nhwc's phases computed into an NHWC dx in its partials scratch
// (which no backward-data executor uses), that transposed back into the planes. The weights
// are packed as subpixel_nhwc packs them, read through their own strides. Wide layers with
// many FLOPs per element transposed only (kViaNhwcStridedFlopsBound: 3×3/2 c128→256 on
// 28×28 10.6 against subpixel's 12.7 ms; 5×10/2 c32→32 speech layer 9.5 against 8.9).
struct ViaNhwcSubpixel {
  static constexpr const char* kName = "via_nhwc_subpixel";
  // The NHWC plan of `batch` images, reading the weights where they lie.
  static ConvPlan sub_plan(const ConvPlan& p, int64_t batch) {
    ConvPlan sub = nhwc_plan_of(p, batch);
    sub.ws_k = p.ws_k; sub.ws_c = p.ws_c; sub.ws_r = p.ws_r; sub.ws_s = p.ws_s;
    return sub;
  }
  static const char* why_not(const ConvPlan& p, const Blocking& bl) {
    if (const char* why = via_nhwc_why_not(p)) return why;
    if (p.sh == 1 && p.sw == 1) return "stride 1: via_nhwc's full correlation";
    if (!same_output_size(p))
      return "rows or columns of dx that no output reaches beyond the crop rule (a "
             "transposed convolution's output padding)";
    return SubpixelNhwc::why_not(sub_plan(p, 1), bl);
  }
  static const char* declines(const ConvPlan& p, const Blocking& bl) {
    if (const char* why = SubpixelNhwc::declines(sub_plan(p, 1), bl)) return why;
    // (via_nhwc_declines takes every one-image layer from 20 MFLOP; with strides it
    // measured no faster than col2im there: 3×3/2 c128→256 on 28×28 1.0 against 0.92 ms.)
    if (p.N == 1) return "one image: col2im is as fast as the transposes and tiles together";
    return via_nhwc_declines(p, kViaNhwcStridedFlopsBound);
  }
  static WeightPacking weight_packing(const ConvPlan& p) {
    return SubpixelNhwc::weight_packing(p);
  }
  template <typename T>
  static void pack_weights(const ConvPlan& p, const Blocking& bl, const T* w, T* dst) {
    SubpixelNhwc::pack_weights(sub_plan(p, p.N), bl, w, dst);
  }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>& weights) {
    const int64_t img_dy = p.K * p.P(), img_dx = p.C * p.H * p.W;
    const int64_t chunk = via_nhwc_chunk(p.N, std::max(img_dy, img_dx));
    T* dyt = thread_scratch_as<Scratch::Image, T>(chunk * img_dy, "the NHWC copy of dy");
    T* dxt = thread_scratch_as<Scratch::Partials, T>(chunk * img_dx, "dx in NHWC");
    const ConvPlan whole = sub_plan(p, chunk);
    const ConvPlan rest = p.N % chunk ? sub_plan(p, p.N % chunk) : whole;
    for (int64_t n0 = 0; n0 < p.N; n0 += chunk) {
      const int64_t nb = std::min(chunk, p.N - n0);
      planes_to_pixels(e.transpose, a.dy + n0 * p.ys_n, p.ys_n, nb, p.K, p.P(), dyt);
      ExecArgs<T> args = a;
      args.dy = dyt;
      args.out = dxt;
      SubpixelNhwc::run(nb == chunk ? whole : rest, e, args, weights);
      pixels_to_planes(e.transpose, dxt, nb, p.C, p.H * p.W, a.out + n0 * p.xs_n, p.xs_n);
    }
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
      implementation_of<ViaNhwcBackwardData, T>(),
      implementation_of<ViaNhwcSubpixel, T>(),
      implementation_of<DirectStride1, T>(),
      implementation_of<IndirectNhwcBackwardData, T>(),
      implementation_of<SubpixelNhwc, T>(),
      implementation_of<Subpixel, T>(),
      implementation_of<Col2im, T>(),
  };
  return list;
}
template const ImplList<float>& backward_data_implementations<float>();
template const ImplList<double>& backward_data_implementations<double>();

}  // namespace convcore::detail
