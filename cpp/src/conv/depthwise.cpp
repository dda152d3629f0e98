// Depthwise convolution (groups == C, one input channel per filter, K = C·m for a channel
// multiplier m) and NHWC grouped convolution with small groups: the dwconv kernel family
// (kernels/dwconv_family.inl), no GEMM. Filter k reads input channel c = k / m. Entries at
// the head of each pass's list (their lines are in forward.cpp, backward_data.cpp,
// backward_weights.cpp; docs/design.md §3.1):
//
//   depthwise_nchw: vectorised along output rows. A tap (r, s) is a whole row segment: stride
//     1 reads the input row in place; a column stride s > 1 first splits each input plane
//     into s phase rows (x[j·s + φ] → phase φ, column j), so every tap is again contiguous.
//     Backward-data is the gather dx[i] = Σ dy[(i + pad − t·d)/stride] · w[t] over the taps
//     that divide, one output phase per column residue (interleaved into dx afterwards);
//     the channel multiplier only adds taps (one dy plane per filter of the channel).
//   depthwise_nhwc: vectorised along channels: a block of output pixels × a channel block
//     accumulated across the taps, an output row's channel blocks one after the other; the
//     input read in place (m == 1, the rows ahead prefetched) or, for m > 1, the rows a
//     pixel row reads with each channel repeated m times (so filter k's input is lane k);
//     backward-data with m > 1 computes the m partial gradients per channel side by side
//     and sums them in order.
//   grouped_nhwc: groups of 2, 4 or 8 channels with as many filters: depthwise_nhwc's
//     kernels with taps (r, s, c) and a lane permutation per c (lane l of a vector of
//     filters takes channel c of its group).
//
// Padding is never multiplied (exact_padding.hpp's rule): NCHW masks each tap's lanes to
// the columns whose source lies in the image, NHWC lists only the taps inside the image;
// so these entries need no Inf/NaN scan (kExactPadding). Backward-weight gives each work
// item private sums per (chunk of the batch, unit of filters) — chunks fixed by the
// problem, not the thread count — and the last chunk to finish a unit sums the chunks in
// order: bitwise identical for any thread count. Every pass is one parallel region.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <tuple>
#include <utility>
#include <vector>

#include "implementation.hpp"
#include "../gemm/driver.hpp"

namespace convcore::detail {
namespace {

inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
inline int64_t mod_pos(int64_t a, int64_t b) { return a - floor_div(a, b) * b; }

// NHWC channel block (output channels per kernel call, for m == 1): whole pixels of common
// layers, so a row is read as one contiguous run (measured: 256 channels of 28×28 run ~1.5×
// faster than blocks of 64).
constexpr int64_t kNhwcBlock = 256;
// Backward-weight: the batch is cut into at most this many chunks (each keeps its own sums:
// up to this many copies of dw).
constexpr int64_t kWgradChunks = 16;
// Forward and backward-data NHWC: rows of the batch in about this many bands (work items).
constexpr int64_t kBandItems = 64;
// NHWC depthwise with a channel multiplier m expands the input rows (a scalar copy of R rows
// × K channels per output row): from these multipliers on the GEMM entries are faster
// (measured, one thread, 28×28 batch 8: m = 2 forward 5.3 against 23 ms, m = 4 10.5 against
// 23.5, m = 8 5.4 against 4.3; weight gradient m = 4 11.0 against 11.1, m = 8 5.5 against
// 2.3). Backward-data does not expand and stays ahead.
constexpr int64_t kNhwcExpandMaxFwd = 8;
constexpr int64_t kNhwcExpandMaxWgrad = 4;
// NHWC: output rows whose input rows are asked for ahead of use (prefetch_row).
constexpr int64_t kPrefetchRows = 2;

const char* depthwise_why_not(const ConvPlan& p) {
  if (p.kind == OpKind::LocallyConnected2d) return "conv2d and conv_transpose2d only";
  if (p.Cg != 1 || p.G != p.C) return "depthwise only (groups == in_channels)";
  return nullptr;
}

// One axis of a gather out[u] = Σ_t src[source(u, t)]: forward (source = u·stride − pad +
// t·dil, in range) or transposed (backward-data: source = (u + pad − t·dil) / stride where
// it divides, in range).
struct Axis {
  int64_t out_size, src_size, taps, stride, dil, pad;
  bool transposed;
  int64_t out_step() const { return transposed ? stride : 1; }
  int64_t src_step() const { return transposed ? 1 : stride; }
  bool source(int64_t u, int64_t t, int64_t& s) const {
    if (!transposed) {
      s = u * stride - pad + t * dil;
    } else {
      const int64_t num = u + pad - t * dil;
      if (num < 0 || num % stride != 0) return false;
      s = num / stride;
    }
    return s >= 0 && s < src_size;
  }
};

// Outputs u0, u0 + out_step, … (count of them) that read the same taps, each tap's source
// advancing by src_step from `src` at u0.
struct AxisRun {
  int64_t u0 = 0, count = 0;
  std::vector<int64_t> tap, src;
};

std::vector<AxisRun> axis_runs(const Axis& a) {
  std::vector<AxisRun> runs;
  const int64_t step = a.out_step(), sstep = a.src_step();
  std::vector<int64_t> tap, src;
  for (int64_t phi = 0; phi < std::min(step, a.out_size); ++phi) {
    AxisRun cur;
    for (int64_t u = phi; u < a.out_size; u += step) {
      tap.clear();
      src.clear();
      for (int64_t t = 0; t < a.taps; ++t) {
        int64_t s;
        if (a.source(u, t, s)) {
          tap.push_back(t);
          src.push_back(s);
        }
      }
      bool same = cur.count > 0 && tap == cur.tap;
      for (std::size_t i = 0; same && i < src.size(); ++i)
        same = src[i] == cur.src[i] + cur.count * sstep;
      if (same) {
        ++cur.count;
        continue;
      }
      if (cur.count > 0) runs.push_back(cur);
      cur.u0 = u;
      cur.count = 1;
      cur.tap = tap;
      cur.src = src;
    }
    if (cur.count > 0) runs.push_back(cur);
  }
  return runs;
}

Axis rows_axis(const ConvPlan& p, bool transposed) {
  return transposed ? Axis{p.H, p.Ho, p.R, p.sh, p.dh, p.pad_t, true}
                    : Axis{p.Ho, p.H, p.R, p.sh, p.dh, p.pad_t, false};
}
Axis cols_axis(const ConvPlan& p, bool transposed) {
  return transposed ? Axis{p.W, p.Wo, p.S, p.sw, p.dw, p.pad_l, true}
                    : Axis{p.Wo, p.W, p.S, p.sw, p.dw, p.pad_l, false};
}

// NCHW: where tap column s reads for output column u (forward), as an offset into the
// phase row `phase` of a plane split into sw phases (sw == 1: the row itself), and the
// output columns [lo, hi) whose source lies in the image.
struct ColTap {
  int64_t phase, offset, lo, hi;
};
std::vector<ColTap> forward_col_taps(const ConvPlan& p) {
  std::vector<ColTap> v;
  for (int64_t s = 0; s < p.S; ++s) {
    const int64_t off = s * p.dw - p.pad_l;  // input column of output 0
    ColTap c;
    c.phase = mod_pos(off, p.sw);
    c.offset = floor_div(off, p.sw);
    c.lo = std::clamp<int64_t>(ceil_div(std::max<int64_t>(-off, 0), p.sw), 0, p.Wo);
    c.hi = std::clamp<int64_t>(p.W - off <= 0 ? 0 : ceil_div(p.W - off, p.sw), c.lo, p.Wo);
    v.push_back(c);
  }
  return v;
}

// Columns of one phase row of a plane split into sw phases: ceil(W / sw).
int64_t phase_len(const ConvPlan& p) { return ceil_div(p.W, p.sw); }

// dst[φ·Wph + j] = row[j·sw + φ] for every input row of a plane (row stride sw·Wph); the
// kernel family's split2 for sw == 2.
template <typename T>
void split_phases(const ConvPlan& p, const GemmEngine<T>& e, const T* plane, T* dst) {
  const int64_t Wph = phase_len(p), sw = p.sw;
  for (int64_t h = 0; h < p.H; ++h) {
    const T* row = plane + h * p.xs_h;
    T* d = dst + h * sw * Wph;
    if (sw == 2) {
      e.dwconv.split2(row, p.W, d, d + Wph);
      continue;
    }
    for (int64_t phi = 0; phi < sw; ++phi) {
      T* dp = d + phi * Wph;
      int64_t j = 0;
      for (int64_t w = phi; w < p.W; w += sw) dp[j++] = row[w];
    }
  }
}

// Output channels per NHWC work item: whole channels' filters (a multiple of m).
int64_t nhwc_block(const ConvPlan& p) {
  const int64_t m = p.Kg;
  const int64_t channels = std::max<int64_t>(1, kNhwcBlock / m);
  return std::min(p.K, channels * m);
}

// The weights: NCHW entries read w[k][r·S + s] (the layout given: Cg == 1 makes both
// layouts (K, R·S)); NHWC entries read tap-major copies per channel block of nhwc_block(p)
// filters (the last block shorter): block b at b·kb·Cg·R·S holds wt[t][k − k0], taps t =
// (r, s, c) in the layout's order, so a block's taps are one contiguous run (a tap-major
// copy of all K filters would put the taps K elements apart, a power of two for common
// layers, all in the same few L1 sets). kInputMajor (grouped backward-data, lanes = input
// channels c, Cg == Kg): taps (r, s, j) hold w[g·Kg + j][r][s][c − g·Cg], g = c / Cg. The
// primitive sizes the buffer as G·round_up(Kg, MR)·Cg·R·S >= K·Cg·R·S.
template <bool kTapMajor, bool kInputMajor = false>
struct DwWeights {
  static constexpr bool kExactPadding = true;
  static WeightPacking weight_packing(const ConvPlan& p) { return {true, p.Kg, p.CgRS()}; }
  template <typename T>
  static void pack_weights(const ConvPlan& p, const Blocking&, const T* w, T* dst) {
    const int64_t RS = p.R * p.S, taps = p.CgRS(), kb = nhwc_block(p);
    for (int64_t k = 0; k < p.K; ++k) {
      const int64_t k0 = k / kb * kb, kc = std::min(kb, p.K - k0);
      for (int64_t c = 0; c < p.Cg; ++c)
        for (int64_t r = 0; r < p.R; ++r)
          for (int64_t s = 0; s < p.S; ++s) {
            const int64_t t = (r * p.S + s) * p.Cg + c;  // (r, s, c) order
            if (!kTapMajor) {
              dst[k * RS + r * p.S + s] = w[k * p.ws_k + r * p.ws_r + s * p.ws_s];
            } else if (!kInputMajor) {
              dst[k0 * taps + t * kc + (k - k0)] =
                  w[k * p.ws_k + c * p.ws_c + r * p.ws_r + s * p.ws_s];
            } else {
              // lane k is input channel k of group g = k / Cg; tap j = c is its filter j
              const int64_t g = k / p.Cg, filter = g * p.Kg + c, ch = k - g * p.Cg;
              dst[k0 * taps + t * kc + (k - k0)] =
                  w[filter * p.ws_k + ch * p.ws_c + r * p.ws_r + s * p.ws_s];
            }
          }
    }
  }
};

// Splits `items` work items over the threads of one parallel region; body(item, local)
// gets the thread's own Local (tap tables and buffers reused across its items).
template <typename Local, typename Body>
void run_items(int64_t items, double flops, Body&& body) {
  if (items <= 0) return;
  const int nt = static_cast<int>(std::min<int64_t>(threads_for(flops), items));
  parallel_run(std::max(1, nt), [&](int tid, int nthreads) {
    int64_t b, e;
    static_range(items, tid, nthreads, b, e);
    Local local;
    for (int64_t i = b; i < e; ++i) {
      interrupt_point();
      body(i, local);
    }
  });
}

// Chunks of the batch for backward-weight: a fixed function of the problem (work items are
// chunk-major, so the units of one chunk — for NCHW the filters of one image, adjacent
// planes — run one after the other).
int64_t wgrad_chunks(int64_t extent) {
  return std::clamp<int64_t>(kWgradChunks, 1, std::max<int64_t>(extent, 1));
}

// Per-thread tap tables (pointers, column ranges, weights) and buffers.
template <typename T>
struct TapTable {
  std::vector<const T*> src;
  std::vector<const T*> wp;
  std::vector<int64_t> lo, hi;
  std::vector<T> w;
  std::vector<T*> acc;
  std::vector<const T*> rowp;  // NHWC: the source rows of an output row
  std::vector<const int32_t*> perm;  // grouped NHWC: each tap's lane permutation
  std::vector<T> sums;         // backward-weight: an item's partial sums
  std::vector<int64_t> order;  // list_taps<true>: the column taps in order
  void clear() {
    src.clear();
    wp.clear();
    lo.clear();
    hi.clear();
    w.clear();
    acc.clear();
    perm.clear();
  }
};

// Asks for rows [first, last] of an image (`rows` rows of `row_len` elements,
// `row_stride` apart, from `base`) ahead of use. The executors read a row as runs of
// channels a pixel apart, block by block, which the hardware prefetchers do not follow from
// memory (measured on 256 channels of 28×28, batch 16: 4.4 → 2.8 ms forward).
template <typename T>
void prefetch_rows(const T* base, int64_t first, int64_t last, int64_t rows, int64_t row_stride,
                   int64_t row_len) {
  constexpr int64_t line = 64 / sizeof(T);
  for (int64_t row = std::max<int64_t>(first, 0); row <= std::min(last, rows - 1); ++row) {
    const T* r = base + row * row_stride;
    for (int64_t e = 0; e < row_len; e += line) __builtin_prefetch(r + e, 0, 2);
  }
}

// ---------------------------------------------------------------------------------------
// NCHW

// Whether the per-thread copies fit kImageScratchElems: a plane split into phases
// (column stride > 1).
const char* nchw_scratch_why_not(const ConvPlan& p) {
  if (p.sw == 1) return nullptr;
  if (!product_at_most({p.H, p.sw, phase_len(p)}, kImageScratchElems))
    return "a plane split into stride phases exceeds the per-thread scratch bound";
  return nullptr;
}

// One input channel (groups == channels == 1) with many filters is a plain convolution: the
// GEMM executors fill their tiles with the filters (measured, Zen 4, 1 thread: a 5×20
// stride-2 speech layer with 32 filters, forward 42 -> 67 GFLOP/s and weight gradient 31 ->
// 54 through via_nhwc); the NCHW depthwise rows compute each filter's plane alone.
constexpr int64_t kSingleChannelMaxFilters = 8;
inline const char* single_channel_declines(const ConvPlan& p) {
  return p.G == 1 && p.Kg >= kSingleChannelMaxFilters
             ? "one input channel and 8 or more filters: a plain convolution, whose GEMM "
               "tiles the filters fill"
             : nullptr;
}

struct DepthwiseNchwForward : DwWeights<false> {
  static constexpr const char* kName = "depthwise_nchw";
  static const char* why_not(const ConvPlan& p, const Blocking&) {
    if (const char* why = depthwise_why_not(p)) return why;
    if (!p.nchw()) return "NCHW only";
    return nchw_scratch_why_not(p);
  }
  static const char* declines(const ConvPlan& p, const Blocking&) { return single_channel_declines(p); }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>& weights) {
    const auto rows = axis_runs(rows_axis(p, false));
    const auto cols = forward_col_taps(p);
    const int64_t m = p.Kg, RS = p.R * p.S, Wph = phase_len(p);
    const auto fn = e.dwconv.rows;
    run_items<TapTable<T>>(p.N * p.K, p.flops(), [&](int64_t item, TapTable<T>& tt) {
      const int64_t n = item / p.K, k = item % p.K, c = k / m;
      const T* plane = a.x + n * p.xs_n + c * p.xs_c;
      const T* base = plane;
      int64_t row_len = p.xs_h, phase_stride = 0;
      if (p.sw > 1) {
        T* buf = thread_scratch_as<Scratch::Image, T>(p.H * p.sw * Wph, "a plane split into phases");
        split_phases(p, e, plane, buf);
        base = buf;
        row_len = p.sw * Wph;
        phase_stride = Wph;
      }
      const T* wk = weights.data + k * RS;
      T* yk = a.out + n * p.ys_n + k * p.ys_c;
      for (const AxisRun& run : rows) {
        tt.clear();
        for (std::size_t i = 0; i < run.tap.size(); ++i) {
          const int64_t r = run.tap[i], ih = run.src[i];
          for (int64_t s = 0; s < p.S; ++s) {
            const ColTap& ct = cols[s];
            if (ct.lo >= ct.hi) continue;
            tt.src.push_back(base + ih * row_len + ct.phase * phase_stride + ct.offset);
            tt.lo.push_back(ct.lo);
            tt.hi.push_back(ct.hi);
            tt.w.push_back(wk[r * p.S + s]);
          }
        }
        fn(run.count, p.Wo, int64_t(tt.w.size()), tt.src.data(), p.sh * row_len, tt.lo.data(),
           tt.hi.data(), tt.w.data(), a.bias ? a.bias + k : nullptr, a.relu, false,
           yk + run.u0 * p.ys_h, p.ys_h);
      }
    });
  }
};

// A group's input planes as the dense rows read them: channel c's input row ih at
// base + c·plane_len + ih·row_len, column phase φ at + φ·phase_stride. With a column stride
// > 1 the planes are first split into phases in the thread's image scratch.
template <typename T>
struct GroupPlanes {
  const T* base;
  int64_t plane_len, row_len, phase_stride;

  static GroupPlanes split(const ConvPlan& p, const GemmEngine<T>& e, const T* planes) {
    if (p.sw == 1) return {planes, p.xs_c, p.xs_h, 0};
    const int64_t Wph = phase_len(p), per_plane = p.H * p.sw * Wph;
    T* buf = thread_scratch_as<Scratch::Image, T>(p.Cg * per_plane, "planes split into phases");
    for (int64_t c = 0; c < p.Cg; ++c)
      split_phases(p, e, planes + c * p.xs_c, buf + c * per_plane);
    return {buf, per_plane, p.sw * Wph, Wph};
  }

  // The taps of one run of output rows, (c, r, s) order: each (c, r, s) whose rows and
  // some columns lie in the image, its source row and valid columns into tt, and
  // per_tap(t) (t = (c·R + r)·S + s, the weight layout's tap) into `out`. kByColumns lists
  // them column tap by column tap instead, those with the same valid columns together
  // (s in the order of (lo, hi), then c, r).
  template <bool kByColumns = false, typename P, typename PerTap>
  void list_taps(const ConvPlan& p, const AxisRun& run, const std::vector<ColTap>& cols,
                 TapTable<T>& tt, std::vector<P>& out, PerTap&& per_tap) const {
    tt.clear();
    auto add = [&](int64_t c, std::size_t i, int64_t s) {
      const int64_t r = run.tap[i], ih = run.src[i];
      const ColTap& ct = cols[s];
      if (ct.lo >= ct.hi) return;
      tt.src.push_back(base + c * plane_len + ih * row_len + ct.phase * phase_stride +
                       ct.offset);
      tt.lo.push_back(ct.lo);
      tt.hi.push_back(ct.hi);
      out.push_back(per_tap((c * p.R + r) * p.S + s));
    };
    if constexpr (kByColumns) {
      std::vector<int64_t>& order = tt.order;
      order.resize(static_cast<std::size_t>(p.S));
      for (int64_t s = 0; s < p.S; ++s) order[s] = s;
      std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        return std::tuple(cols[a].lo, cols[a].hi, a) < std::tuple(cols[b].lo, cols[b].hi, b);
      });
      for (const int64_t s : order)
        for (int64_t c = 0; c < p.Cg; ++c)
          for (std::size_t i = 0; i < run.tap.size(); ++i) add(c, i, s);
    } else {
      for (int64_t c = 0; c < p.Cg; ++c)
        for (std::size_t i = 0; i < run.tap.size(); ++i)
          for (int64_t s = 0; s < p.S; ++s) add(c, i, s);
    }
  }
};

// Dense NCHW forward with few input channels per group (RGB stems, one-channel speech
// front ends): the depthwise rows machinery with every (input channel, r, s) of the group as
// a tap and kDenseRowFilters filters accumulated side by side (the kernel family's
// dense_rows). A work item is one image of one group: its planes split into column phases
// once (stride > 1), then each block of filters runs the output rows' runs. The GEMM
// executors' per-call packing of such layers moves more than it computes (27 taps × 16
// filters on a 3×3/2 RGB stem). Padding is never multiplied (masked lanes, rows left out).
struct DenseRowsNchwForward {
  static constexpr const char* kName = "dense_rows_nchw";
  static constexpr bool kExactPadding = true;
  static constexpr int kFilters = kernels::kDenseRowFilters;
  static const char* why_not(const ConvPlan& p, const Blocking&) {
    if (p.kind == OpKind::LocallyConnected2d) return "conv2d and conv_transpose2d only";
    if (!p.nchw()) return "NCHW only";
    if (p.sw > 1 && !product_at_most({p.Cg, p.H, p.sw, phase_len(p)}, kImageScratchElems))
      return "a group's planes split into stride phases exceed the per-thread scratch bound";
    if (p.CgRS() > kMaxTaps) return "more than 1024 taps (channels × R × S) per group";
    return nullptr;
  }
  static const char* declines(const ConvPlan& p, const Blocking& bl) {
    if (p.Cg > kMaxChannels)
      return "more than 4 channels per group: the GEMM executors' packing is amortised";
    if (p.CgRS() > kMaxRowTaps)
      return "more than 160 taps per group: the GEMM tiles reuse each input load more";
    // With 32-byte vectors (AVX2, portable) the kernels hold one vector of columns per
    // filter (sixteen ymm registers): a tap's FMAs are 8 where AVX-512's are 16 for the same
    // loads, and the gradient's block is 3 × 4 against 4 × 4. Forced entries, Zen 3 (AVX2),
    // 2 threads, 7×7/2 RGB stem (147 taps), medians of 7 alternating rounds: forward 62.4
    // ms against 51.5 (via_nhwc), weight gradient 89 against 59 (via_nhwc); at 100 taps
    // (the 5×20/2 speech layer) the forward still wins, 6.9 against 7.8 ms.
    if (bl.vector_bytes < 64 && p.CgRS() > kMaxRowTapsNarrow)
      return "more than 128 taps per group with 32-byte vectors: the GEMM tiles reuse each "
             "input load more";
    if (p.Wo < kMinWidth) return "output rows under 16 columns leave the vectors mostly empty";
    // No rule on the batch: the work items are blocks of 8 filters of an image, and at
    // batch 1 this executor beat the default (Zen 4, 2 threads, ms: 7×7/2 RGB stem 2.0 →
    // 1.23, 5×20/2 speech layer 0.38 → 0.28, 3×3/2 RGB stem with 16 filters 0.081 → 0.057,
    // with 8 filters, one item, 0.063 → 0.034).
    return nullptr;
  }
  static constexpr int64_t kMaxTaps = 1024, kMaxChannels = 4, kMaxRowTaps = 160,
                           kMaxRowTapsNarrow = 128, kMinWidth = 16;
  // Per group, blocks of kFilters filters (zero past the group's last), each block's taps
  // (c, r, s) in that order with the block's kFilters weights of a tap contiguous.
  static WeightPacking weight_packing(const ConvPlan& p) {
    return {true, round_up(p.Kg, kFilters), p.CgRS()};
  }
  template <typename T>
  static void pack_weights(const ConvPlan& p, const Blocking& bl, const T* w, T* dst) {
    const int64_t taps = p.CgRS(), group_elems = weight_packing(p).group_elems(bl);
    for (int64_t g = 0; g < p.G; ++g)
      for (int64_t kb = 0; kb < p.Kg; kb += kFilters) {
        T* d = dst + g * group_elems + kb * taps;
        for (int64_t c = 0; c < p.Cg; ++c)
          for (int64_t r = 0; r < p.R; ++r)
            for (int64_t s = 0; s < p.S; ++s) {
              const int64_t t = (c * p.R + r) * p.S + s;
              for (int64_t j = 0; j < kFilters; ++j) {
                const int64_t k = kb + j;
                d[t * kFilters + j] =
                    k < p.Kg ? w[(g * p.Kg + k) * p.ws_k + c * p.ws_c + r * p.ws_r + s * p.ws_s]
                             : T(0);
              }
            }
      }
  }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>& weights) {
    const auto rows = axis_runs(rows_axis(p, false));
    const auto cols = forward_col_taps(p);
    const int64_t taps = p.CgRS();
    const auto fn = e.dwconv.dense_rows;
    // An item is one block of kFilters filters of one image and group, so that a batch
    // smaller than the team still gives every thread work (the 5×20/2 speech layer's batch
    // of 8 on 16 threads had kept half of them idle). A thread's items are consecutive: it
    // splits an image's planes into stride phases once for all the blocks it runs of it.
    // Each output is computed whole by one item, so the cut changes no result.
    const int64_t blocks = ceil_div(p.Kg, int64_t(kFilters));
    struct Local {
      TapTable<T> tt;
      int64_t planes_of = -1;  // the image × group whose planes `planes` holds
      GroupPlanes<T> planes{};
    };
    run_items<Local>(p.N * p.G * blocks, p.flops(), [&](int64_t item, Local& local) {
      TapTable<T>& tt = local.tt;
      const int64_t ng = item / blocks, n = ng / p.G, g = ng % p.G;
      const int64_t kb = item % blocks * kFilters;
      if (local.planes_of != ng) {
        local.planes = GroupPlanes<T>::split(p, e, a.x + n * p.xs_n + g * p.Cg * p.xs_c);
        local.planes_of = ng;
      }
      const GroupPlanes<T>& planes = local.planes;
      const T* wb = weights.data + g * weights.group_elems + kb * taps;
      const int64_t k0 = g * p.Kg + kb;
      T* yb = a.out + n * p.ys_n + k0 * p.ys_c;
      for (const AxisRun& run : rows) {
        planes.list_taps(p, run, cols, tt, tt.wp, [&](int64_t t) { return wb + t * kFilters; });
        fn(run.count, p.Wo, int64_t(tt.src.size()), tt.src.data(), p.sh * planes.row_len,
           tt.lo.data(), tt.hi.data(), tt.wp.data(), std::min<int64_t>(kFilters, p.Kg - kb),
           a.bias ? a.bias + k0 : nullptr, a.relu, yb + run.u0 * p.ys_h, p.ys_c, p.ys_h);
      }
    });
  }
};

struct DepthwiseNchwBackwardData : DwWeights<false> {
  static constexpr const char* kName = "depthwise_nchw";
  static const char* why_not(const ConvPlan& p, const Blocking&) {
    if (const char* why = depthwise_why_not(p)) return why;
    if (!p.nchw()) return "NCHW only";
    if (p.sw > 1 && !product_at_most({p.H, p.sw, phase_len(p)}, kImageScratchElems))
      return "a plane's stride phases exceed the per-thread scratch bound";
    return nullptr;
  }
  static const char* declines(const ConvPlan&, const Blocking&) { return nullptr; }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>& weights) {
    const auto rows = axis_runs(rows_axis(p, true));
    const int64_t m = p.Kg, RS = p.R * p.S, sw = p.sw, Wq = phase_len(p);
    // Per output phase φ (dx columns φ + v·sw) and tap column s: the dy column of v = 0
    // (src0) and the valid v range, or none when the tap does not divide.
    struct PhaseTap {
      bool on;
      int64_t src0, lo, hi;
    };
    std::vector<PhaseTap> pt(static_cast<std::size_t>(sw * p.S));
    std::vector<int64_t> wq(static_cast<std::size_t>(sw));
    for (int64_t phi = 0; phi < sw; ++phi) {
      wq[phi] = phi < p.W ? ceil_div(p.W - phi, sw) : 0;
      for (int64_t s = 0; s < p.S; ++s) {
        const int64_t num0 = phi + p.pad_l - s * p.dw;
        PhaseTap& t = pt[phi * p.S + s];
        t.on = mod_pos(num0, sw) == 0;
        if (!t.on) continue;
        t.src0 = floor_div(num0, sw);
        t.lo = std::clamp<int64_t>(-t.src0, 0, wq[phi]);
        t.hi = std::clamp<int64_t>(p.Wo - t.src0, t.lo, wq[phi]);
        t.on = t.lo < t.hi;
      }
    }
    const auto fn = e.dwconv.rows;
    run_items<TapTable<T>>(p.N * p.C, p.flops(), [&](int64_t item, TapTable<T>& tt) {
      const int64_t n = item / p.C, c = item % p.C;
      T* dxc = a.out + n * p.xs_n + c * p.xs_c;
      for (const AxisRun& run : rows) {
        // Output rows of the run: run.u0 + i·sh (rows of dx), i < count.
        T* tmp = nullptr;
        if (sw > 1)
          tmp = thread_scratch_as<Scratch::Image, T>(run.count * sw * Wq, "stride phases of dx rows");
        for (int64_t phi = 0; phi < std::min(sw, p.W); ++phi) {
          tt.clear();
          for (int64_t j = 0; j < m; ++j) {
            const int64_t k = c * m + j;
            const T* dyk = a.dy + n * p.ys_n + k * p.ys_c;
            const T* wk = weights.data + k * RS;
            for (std::size_t i = 0; i < run.tap.size(); ++i) {
              const int64_t r = run.tap[i], oh = run.src[i];
              for (int64_t s = 0; s < p.S; ++s) {
                const PhaseTap& t = pt[phi * p.S + s];
                if (!t.on) continue;
                tt.src.push_back(dyk + oh * p.ys_h + t.src0);
                tt.lo.push_back(t.lo);
                tt.hi.push_back(t.hi);
                tt.w.push_back(wk[r * p.S + s]);
              }
            }
          }
          // bias and ReLU: a transposed forward's (ExecArgs), on dx channel c
          const T* bias = a.bias ? a.bias + c : nullptr;
          if (sw == 1) {
            fn(run.count, p.W, int64_t(tt.w.size()), tt.src.data(), p.ys_h, tt.lo.data(),
               tt.hi.data(), tt.w.data(), bias, a.relu, false, dxc + run.u0 * p.xs_h,
               p.sh * p.xs_h);
          } else {
            fn(run.count, wq[phi], int64_t(tt.w.size()), tt.src.data(), p.ys_h, tt.lo.data(),
               tt.hi.data(), tt.w.data(), bias, a.relu, false, tmp + phi * Wq, sw * Wq);
          }
        }
        if (sw > 1) {
          for (int64_t i = 0; i < run.count; ++i) {
            T* row = dxc + (run.u0 + i * p.sh) * p.xs_h;
            const T* src = tmp + i * sw * Wq;
            for (int64_t phi = 0; phi < std::min(sw, p.W); ++phi)
              for (int64_t v = 0; v < wq[phi]; ++v) row[phi + v * sw] = src[phi * Wq + v];
          }
        }
      }
    });
  }
};

// Backward-weight, shared by both layouts: units (filters for NCHW; all filters for NHWC)
// × chunks of `extent` (images for NCHW, output rows of the batch for NHWC), the chunks a
// fixed function of the problem; unit_sums(unit, e0, e1, partial, local) writes the
// chunk's sums partial[(k − first filter of the unit)·RS + t]; the last chunk of a unit to
// finish adds the chunks in order into dw.
template <typename T, typename UnitSums>
void wgrad_by_chunks(const ConvPlan& p, int64_t units, int64_t unit_filters, int64_t extent,
                     T* dw, UnitSums&& unit_sums) {
  const int64_t RS = p.CgRS();  // taps per filter, in the weight layout's order
  const int64_t chunks = wgrad_chunks(extent);
  const int64_t per_unit = unit_filters * RS;
  std::vector<T> partial(static_cast<std::size_t>(checked_product({chunks, units, per_unit},
                                                                  "the weight-gradient sums")));
  std::unique_ptr<std::atomic<int64_t>[]> done(new std::atomic<int64_t>[units]);
  for (int64_t u = 0; u < units; ++u) done[u].store(0, std::memory_order_relaxed);
  run_items<TapTable<T>>(chunks * units, p.flops(), [&](int64_t item, TapTable<T>& tt) {
    const int64_t unit = item % units, chunk = item / units;
    const int64_t e0 = extent * chunk / chunks, e1 = extent * (chunk + 1) / chunks;
    T* mine = partial.data() + (chunk * units + unit) * per_unit;
    unit_sums(unit, e0, e1, mine, tt);
    if (done[unit].fetch_add(1, std::memory_order_acq_rel) + 1 != chunks) return;
    const int64_t k0 = unit * unit_filters, k1 = std::min(p.K, k0 + unit_filters);
    for (int64_t k = k0; k < k1; ++k)
      for (int64_t t = 0; t < RS; ++t) {
        T sum = T(0);
        for (int64_t ch = 0; ch < chunks; ++ch)
          sum += partial[(ch * units + unit) * per_unit + (k - k0) * RS + t];
        dw[k * p.ws_k + t] = sum;  // contiguous weights: tap t in memory order
      }
  });
}

struct DepthwiseNchwBackwardWeight : NoWeights {
  static constexpr const char* kName = "depthwise_nchw";
  static constexpr bool kExactPadding = true;
  static const char* why_not(const ConvPlan& p, const Blocking&) {
    if (const char* why = depthwise_why_not(p)) return why;
    if (!p.nchw()) return "NCHW only";
    return nchw_scratch_why_not(p);
  }
  static const char* declines(const ConvPlan& p, const Blocking&) { return single_channel_declines(p); }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>&) {
    const auto rows = axis_runs(rows_axis(p, false));
    const auto cols = forward_col_taps(p);
    const int64_t m = p.Kg, RS = p.R * p.S, Wph = phase_len(p);
    const int L = e.dwconv.lanes;
    const auto fn = e.dwconv.rows_wgrad;
    wgrad_by_chunks<T>(p, p.K, 1, p.N, a.out, [&](int64_t k, int64_t n0, int64_t n1, T* out,
                                              TapTable<T>& tt) {
      const int64_t c = k / m;
      tt.sums.assign(static_cast<std::size_t>(RS * L), T(0));
      for (int64_t n = n0; n < n1; ++n) {
        // The filter's planes are an image apart: ask for the next image's x and dy planes
        // now (the hardware prefetchers see only runs of one plane).
        if (n + 1 < n1) {
          prefetch_rows(a.x + (n + 1) * p.xs_n + c * p.xs_c, 0, p.H - 1, p.H, p.xs_h, p.W);
          prefetch_rows(a.dy + (n + 1) * p.ys_n + k * p.ys_c, 0, p.Ho - 1, p.Ho, p.ys_h, p.Wo);
        }
        const T* plane = a.x + n * p.xs_n + c * p.xs_c;
        const T* base = plane;
        int64_t row_len = p.xs_h, phase_stride = 0;
        if (p.sw > 1) {
          T* buf = thread_scratch_as<Scratch::Image, T>(p.H * p.sw * Wph, "a plane split into phases");
          split_phases(p, e, plane, buf);
          base = buf;
          row_len = p.sw * Wph;
          phase_stride = Wph;
        }
        const T* dyk = a.dy + n * p.ys_n + k * p.ys_c;
        for (const AxisRun& run : rows) {
          tt.clear();
          for (std::size_t i = 0; i < run.tap.size(); ++i) {
            const int64_t r = run.tap[i], ih = run.src[i];
            for (int64_t s = 0; s < p.S; ++s) {
              const ColTap& ct = cols[s];
              if (ct.lo >= ct.hi) continue;
              tt.src.push_back(base + ih * row_len + ct.phase * phase_stride + ct.offset);
              tt.lo.push_back(ct.lo);
              tt.hi.push_back(ct.hi);
              tt.acc.push_back(tt.sums.data() + (r * p.S + s) * L);
            }
          }
          fn(run.count, p.Wo, int64_t(tt.acc.size()), tt.src.data(), p.sh * row_len,
             tt.lo.data(), tt.hi.data(), dyk + run.u0 * p.ys_h, p.ys_h, tt.acc.data());
        }
      }
      for (int64_t t = 0; t < RS; ++t) {
        T sum = T(0);
        for (int l = 0; l < L; ++l) sum += tt.sums[t * L + l];
        out[t] = sum;
      }
    });
  }
};

// Dense NCHW weight gradient with few input channels per group: the taps and rows of
// dense_rows_nchw, the kernel family's dense_rows_wgrad keeping taps × filters of partial
// sums in registers. A unit is a group (all its filters), chunks of images as for the
// depthwise gradient (fixed by the problem, summed in order: bitwise identical for any
// thread count). The GEMM executors' packing of 27 taps × 16 filters per pixel block cost
// more than their products on a 3×3/2 RGB stem.
struct DenseRowsNchwBackwardWeight : NoWeights {
  static constexpr const char* kName = "dense_rows_nchw";
  static constexpr bool kExactPadding = true;
  static const char* why_not(const ConvPlan& p, const Blocking& bl) {
    return DenseRowsNchwForward::why_not(p, bl);
  }
  static const char* declines(const ConvPlan& p, const Blocking& bl) {
    if (const char* why = DenseRowsNchwForward::declines(p, bl)) return why;
    // At batch 1 it only tied with the default (7×7/2 RGB stem, Zen 4, 2 threads: 1.87–2.07
    // against 1.82–1.89 ms).
    if (p.N * p.G < kMinItems) return "fewer than 4 images × groups: too few work items";
    return nullptr;
  }
  static constexpr int64_t kMinItems = 4;
  // Filters per unit: a group's all, or where the batch's chunks × groups are fewer than
  // kMinUnits, the largest of 16 and 8 that divides them (so that a small batch still gives
  // a large team work: the 5×20/2 speech layer's batch of 8 had 8 units for 16 threads). A
  // filter's sums are formed alike in any unit, so the cut changes no result.
  static constexpr int64_t kMinUnits = 16;
  static int64_t unit_filters(const ConvPlan& p) {
    if (wgrad_chunks(p.N) * p.G >= kMinUnits) return p.Kg;
    for (const int64_t fb : {16, 8})
      if (p.Kg > fb && p.Kg % fb == 0) return fb;
    return p.Kg;
  }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>&) {
    const auto rows = axis_runs(rows_axis(p, false));
    const auto cols = forward_col_taps(p);
    const int64_t taps = p.CgRS(), L = e.dwconv.lanes;
    const auto fn = e.dwconv.dense_rows_wgrad;
    const int64_t fb = unit_filters(p), blocks = p.Kg / fb;
    // A unit is a block of fb filters of one group (filters [unit·fb, unit·fb + fb)).
    wgrad_by_chunks<T>(p, p.G * blocks, fb, p.N, a.out, [&](int64_t unit, int64_t n0,
                                                             int64_t n1, T* out,
                                                             TapTable<T>& tt) {
      const int64_t g = unit / blocks, k0 = unit % blocks * fb;
      // Tap t (= (c·R + r)·S + s) of filter k0 + k: L partial sums at sums[(t·fb + k)·L].
      tt.sums.assign(static_cast<std::size_t>(taps * fb * L), T(0));
      for (int64_t n = n0; n < n1; ++n) {
        const auto planes = GroupPlanes<T>::split(p, e, a.x + n * p.xs_n + g * p.Cg * p.xs_c);
        const T* dyb = a.dy + n * p.ys_n + (g * p.Kg + k0) * p.ys_c;
        for (const AxisRun& run : rows) {
          // Taps with the same valid columns side by side: the kernel's tap blocks then
          // clip no column but where one of their own taps is clipped (a 3×3/2 stem: the
          // s = 0 taps' first column only, in a third of the blocks instead of all).
          planes.template list_taps<true>(
              p, run, cols, tt, tt.acc, [&](int64_t t) { return tt.sums.data() + t * fb * L; });
          fn(run.count, p.Wo, int64_t(tt.acc.size()), tt.src.data(), p.sh * planes.row_len,
             tt.lo.data(), tt.hi.data(), dyb + run.u0 * p.ys_h, fb, p.ys_c, p.ys_h,
             tt.acc.data());
        }
      }
      for (int64_t k = 0; k < fb; ++k)
        for (int64_t t = 0; t < taps; ++t) {
          const T* v = tt.sums.data() + (t * fb + k) * L;
          T sum = T(0);
          for (int64_t l = 0; l < L; ++l) sum += v[l];
          out[k * taps + t] = sum;
        }
    });
  }
};

// ---------------------------------------------------------------------------------------
// NHWC


// m > 1: the input rows one pixel row reads, each channel repeated m times.
// Depthwise with a multiplier: the input is expanded (filter k's channel at lane k).
inline bool expands(const ConvPlan& p) { return p.Cg == 1 && p.Kg > 1; }

const char* nhwc_scratch_why_not(const ConvPlan& p) {
  if (!expands(p)) return nullptr;
  if (!product_at_most({p.R, p.W, nhwc_block(p)}, kImageScratchElems))
    return "the expanded input rows of a pixel row exceed the per-thread scratch bound";
  return nullptr;
}

// dst[iw·kb + kk] = x[ih][iw][(k0 + kk) / m] for one input row, kk < kc <= kb.
template <typename T>
void expand_row(const ConvPlan& p, const T* xrow, int64_t k0, int64_t kc, int64_t kb, T* dst) {
  const int64_t m = p.Kg;
  for (int64_t iw = 0; iw < p.W; ++iw) {
    const T* px = xrow + iw * p.xs_w;
    T* d = dst + iw * kb;
    for (int64_t kk = 0; kk < kc; ++kk) d[kk] = px[(k0 + kk) / m];
  }
}

// Input rows of output rows [oh0, oh1] (forward geometry).
template <typename T>
void prefetch_input_rows(const ConvPlan& p, const T* xn, int64_t oh0, int64_t oh1) {
  prefetch_rows(xn, oh0 * p.sh - p.pad_t, oh1 * p.sh - p.pad_t + (p.R - 1) * p.dh, p.H, p.xs_h,
                (p.W - 1) * p.xs_w + p.C);
}

// The NHWC executors take one output row at a time and run every channel block of it
// before the next row, so the rows it reads come in whole (and stay cached across the
// blocks); threads own bands of rows.

// The source rows of one output row for the channel block [k0, k0 + kc): pointers into x
// (m == 1) or to expanded copies (m > 1), one per valid kernel row of the row run.
template <typename T>
void nhwc_source_rows(const ConvPlan& p, const AxisRun& rrun, int64_t i, const T* xn,
                      int64_t k0, int64_t kc, int64_t kb, T* ex, TapTable<T>& tt) {
  tt.rowp.clear();
  for (std::size_t q = 0; q < rrun.tap.size(); ++q) {
    const int64_t ih = rrun.src[q] + i * p.sh;
    if (expands(p)) {
      T* d = ex + int64_t(q) * p.W * kb;
      expand_row(p, xn + ih * p.xs_h, k0, kc, kb, d);
      tt.rowp.push_back(d);
    } else {
      tt.rowp.push_back(xn + ih * p.xs_h + k0);
    }
  }
}

// The NHWC executors serve depthwise (kGrouped false: Cg == 1) and grouped convolution with
// as many filters as channels per group (kGrouped: 1 < Cg == Kg, Kg dividing kMinLanes, the
// narrowest vector of the dtype on any target): a vector of filters then spans whole
// groups, and tap (r, s, c) is the input vector at the filters' own channels with each lane
// taking channel c of its group (a lane permutation; perm_table). kMinLanes: 32 / sizeof(T).
template <bool kGrouped, int kMinLanes>
const char* nhwc_why_not(const ConvPlan& p) {
  if (p.kind == OpKind::LocallyConnected2d) return "conv2d and conv_transpose2d only";
  if (!kGrouped) return depthwise_why_not(p);
  if (p.G == 1) return "grouped convolution only (groups > 1)";
  if (p.Cg == 1) return "not depthwise (depthwise_nhwc computes it)";
  if (p.Cg != p.Kg) return "as many filters as channels per group only";
  if (kMinLanes % p.Kg != 0)
    return kMinLanes == 8 ? "groups of 2, 4 or 8 channels only (float32)"
                          : "groups of 2 or 4 channels only (float64)";
  return nullptr;
}

// perm[c][l] = (l / Kg)·Kg + c: lane l takes channel c of its group (kGrouped), L lanes.
inline std::vector<int32_t> perm_table(const ConvPlan& p, int L) {
  std::vector<int32_t> t(static_cast<std::size_t>(p.Cg * L));
  for (int64_t c = 0; c < p.Cg; ++c)
    for (int l = 0; l < L; ++l) t[c * L + l] = static_cast<int32_t>(l / p.Kg * p.Kg + c);
  return t;
}

// Rows [0, rows) of each image split into bands, N·bands items (about kBandItems).
inline int64_t band_rows(int64_t rows, int64_t N) {
  return std::max<int64_t>(1, rows * N / kBandItems);
}

template <bool kGrouped, int kMinLanes>
struct NhwcForward : DwWeights<true> {
  static constexpr const char* kName = kGrouped ? "grouped_nhwc" : "depthwise_nhwc";
  static const char* why_not(const ConvPlan& p, const Blocking&) {
    if (const char* why = nhwc_why_not<kGrouped, kMinLanes>(p)) return why;
    if (p.nchw()) return "NHWC only";
    return nhwc_scratch_why_not(p);
  }
  static const char* declines(const ConvPlan& p, const Blocking&) {
    return expands(p) && p.Kg >= kNhwcExpandMaxFwd
               ? "channel multiplier of 8 or more: expanding the input rows costs more than "
                 "the GEMM tile's idle rows"
               : nullptr;
  }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>& weights) {
    const auto rows = axis_runs(rows_axis(p, false));
    const auto cols = axis_runs(cols_axis(p, false));
    const int64_t taps = p.CgRS(), Cgt = p.Cg, kb = nhwc_block(p), blocks = ceil_div(p.K, kb);
    const int64_t band = band_rows(p.Ho, p.N), bands = ceil_div(p.Ho, band);
    const auto fn = e.dwconv.pixels;
    const int L = e.dwconv.lanes;
    const std::vector<int32_t> perm = kGrouped ? perm_table(p, L) : std::vector<int32_t>();
    const bool expand = expands(p);
    run_items<TapTable<T>>(p.N * bands, p.flops(), [&](int64_t item, TapTable<T>& tt) {
      const int64_t n = item / bands, oh0 = (item % bands) * band;
      const int64_t oh1 = std::min(p.Ho, oh0 + band);
      const T* xn = a.x + n * p.xs_n;
      T* ex = expand ? thread_scratch_as<Scratch::Image, T>(p.R * p.W * kb, "expanded input rows")
                     : nullptr;
      const int64_t ps = expand ? kb : p.xs_w;
      // The rows the band's first kPrefetchRows output rows read, then kPrefetchRows ahead.
      if (!expand) prefetch_input_rows(p, xn, oh0, oh0 + kPrefetchRows - 1);
      for (const AxisRun& rrun : rows) {
        for (int64_t i = 0; i < rrun.count; ++i) {
          const int64_t oh = rrun.u0 + i;
          if (oh < oh0 || oh >= oh1) continue;
          if (!expand)  // the rows output row oh + kPrefetchRows adds
            prefetch_rows(xn, (oh + kPrefetchRows - 1) * p.sh - p.pad_t + (p.R - 1) * p.dh + 1,
                          (oh + kPrefetchRows) * p.sh - p.pad_t + (p.R - 1) * p.dh, p.H, p.xs_h,
                          (p.W - 1) * p.xs_w + p.C);
          for (int64_t b = 0; b < blocks; ++b) {
            const int64_t k0 = b * kb, kc = std::min(kb, p.K - k0);
            nhwc_source_rows(p, rrun, i, xn, k0, kc, kb, ex, tt);
            T* yrow = a.out + n * p.ys_n + oh * p.ys_h + k0;
            for (const AxisRun& crun : cols) {
              tt.clear();
              for (std::size_t q = 0; q < rrun.tap.size(); ++q)
                for (std::size_t j = 0; j < crun.tap.size(); ++j)
                  for (int64_t c = 0; c < Cgt; ++c) {
                    tt.src.push_back(tt.rowp[q] + crun.src[j] * ps);
                    tt.wp.push_back(weights.data + k0 * taps +
                                    ((rrun.tap[q] * p.S + crun.tap[j]) * Cgt + c) * kc);
                    if (kGrouped) tt.perm.push_back(perm.data() + c * L);
                  }
              fn(crun.count, kc, int64_t(tt.src.size()), tt.src.data(), p.sw * ps,
                 kGrouped ? tt.perm.data() : nullptr, tt.wp.data(),
                 a.bias ? a.bias + k0 : nullptr, a.relu, yrow + crun.u0 * p.ys_w, p.ys_w);
            }
          }
        }
      }
    });
  }
};

template <bool kGrouped, int kMinLanes>
struct NhwcBackwardData : DwWeights<true, kGrouped> {
  static constexpr const char* kName = kGrouped ? "grouped_nhwc" : "depthwise_nhwc";
  static const char* why_not(const ConvPlan& p, const Blocking&) {
    if (const char* why = nhwc_why_not<kGrouped, kMinLanes>(p)) return why;
    if (p.nchw()) return "NHWC only";
    if (expands(p) && !product_at_most({p.W, nhwc_block(p)}, kImageScratchElems))
      return "a row of per-filter input gradients exceeds the per-thread scratch bound";
    return nullptr;
  }
  static const char* declines(const ConvPlan&, const Blocking&) { return nullptr; }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>& weights) {
    const auto rows = axis_runs(rows_axis(p, true));
    const auto cols = axis_runs(cols_axis(p, true));
    // Lanes: filters k of a block (depthwise; m > 1 summed per channel after), or input
    // channels (grouped, Cg == Kg: the same block bounds), tap (r, s, j) reading filter j
    // of the lane's group.
    const int64_t m = p.Kg, taps = p.CgRS(), Kgt = kGrouped ? p.Kg : 1;
    const int64_t kb = nhwc_block(p), blocks = ceil_div(p.K, kb);
    const int64_t band = band_rows(p.H, p.N), bands = ceil_div(p.H, band);
    const auto fn = e.dwconv.pixels;
    const int L = e.dwconv.lanes;
    const std::vector<int32_t> perm = kGrouped ? perm_table(p, L) : std::vector<int32_t>();
    const bool expand = expands(p);
    run_items<TapTable<T>>(p.N * bands, p.flops(), [&](int64_t item, TapTable<T>& tt) {
      const int64_t n = item / bands, ih0 = (item % bands) * band;
      const int64_t ih1 = std::min(p.H, ih0 + band);
      const T* dyn = a.dy + n * p.ys_n;
      T* tmp = expand ? thread_scratch_as<Scratch::Image, T>(p.W * kb, "per-filter input gradients")
                      : nullptr;
      for (const AxisRun& rrun : rows) {
        for (int64_t i = 0; i < rrun.count; ++i) {
          const int64_t ih = rrun.u0 + i * p.sh;
          if (ih < ih0 || ih >= ih1) continue;
          // dy rows: at the band's first row those of its first kPrefetchRows rows, then
          // the last one the row kPrefetchRows ahead reads
          const int64_t dy_len = (p.Wo - 1) * p.ys_w + p.K;
          const int64_t ahead = floor_div(ih + kPrefetchRows * p.sh + p.pad_t, p.sh);
          if (ih == ih0)
            prefetch_rows(dyn, floor_div(ih + p.pad_t - (p.R - 1) * p.dh, p.sh), ahead, p.Ho,
                          p.ys_h, dy_len);
          else
            prefetch_rows(dyn, ahead, ahead, p.Ho, p.ys_h, dy_len);
          for (int64_t b = 0; b < blocks; ++b) {
            const int64_t k0 = b * kb, kc = std::min(kb, p.K - k0);
            const int64_t c0 = kGrouped ? k0 : k0 / m;
            T* out = expand ? tmp : a.out + n * p.xs_n + ih * p.xs_h + c0;
            const int64_t ops = expand ? kb : p.xs_w;
            for (const AxisRun& crun : cols) {
              tt.clear();
              for (std::size_t q = 0; q < rrun.tap.size(); ++q) {
                const int64_t oh = rrun.src[q] + i;  // rows of a run advance one dy row
                for (std::size_t j = 0; j < crun.tap.size(); ++j)
                  for (int64_t f = 0; f < Kgt; ++f) {
                    tt.src.push_back(dyn + oh * p.ys_h + crun.src[j] * p.ys_w + k0);
                    tt.wp.push_back(weights.data + k0 * taps +
                                    ((rrun.tap[q] * p.S + crun.tap[j]) * Kgt + f) * kc);
                    if (kGrouped) tt.perm.push_back(perm.data() + f * L);
                  }
              }
              // bias and ReLU (a transposed forward's) on dx channels c0..: in the kernel,
              // or after the per-filter sums when the input was expanded
              fn(crun.count, kc, int64_t(tt.src.size()), tt.src.data(), p.ys_w,
                 kGrouped ? tt.perm.data() : nullptr, tt.wp.data(),
                 expand || !a.bias ? nullptr : a.bias + c0, !expand && a.relu,
                 out + crun.u0 * ops, p.sw * ops);
            }
            if (expand) {
              T* dxrow = a.out + n * p.xs_n + ih * p.xs_h + c0;
              const int64_t channels = kc / m;
              for (int64_t iw = 0; iw < p.W; ++iw) {
                const T* src = tmp + iw * kb;
                T* d = dxrow + iw * p.xs_w;
                for (int64_t cc = 0; cc < channels; ++cc) {
                  T sum = src[cc * m];
                  for (int64_t j = 1; j < m; ++j) sum += src[cc * m + j];
                  if (a.bias) sum += a.bias[c0 + cc];
                  d[cc] = a.relu && sum < T(0) ? T(0) : sum;
                }
              }
            }
          }
        }
      }
    });
  }
};

template <bool kGrouped, int kMinLanes>
struct NhwcBackwardWeight : NoWeights {
  static constexpr const char* kName = kGrouped ? "grouped_nhwc" : "depthwise_nhwc";
  static constexpr bool kExactPadding = true;
  static const char* why_not(const ConvPlan& p, const Blocking&) {
    if (const char* why = nhwc_why_not<kGrouped, kMinLanes>(p)) return why;
    if (p.nchw()) return "NHWC only";
    return nhwc_scratch_why_not(p);
  }
  static const char* declines(const ConvPlan& p, const Blocking&) {
    return expands(p) && p.Kg >= kNhwcExpandMaxWgrad
               ? "channel multiplier of 4 or more: expanding the input rows costs more than "
                 "the packed im2col GEMM"
               : nullptr;
  }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>&) {
    const auto rows = axis_runs(rows_axis(p, false));
    const auto cols = axis_runs(cols_axis(p, false));
    const int64_t taps = p.CgRS(), Cgt = p.Cg, kb = nhwc_block(p), blocks = ceil_div(p.K, kb);
    // Per output row: the source row and tap list of its run.
    std::vector<std::pair<const AxisRun*, int64_t>> row_of(static_cast<std::size_t>(p.Ho));
    for (const AxisRun& rrun : rows)
      for (int64_t i = 0; i < rrun.count; ++i) row_of[rrun.u0 + i] = {&rrun, i};
    const auto fn = e.dwconv.pixels_wgrad;
    const int L = e.dwconv.lanes;
    const std::vector<int32_t> perm = kGrouped ? perm_table(p, L) : std::vector<int32_t>();
    const bool expand = expands(p);
    // One unit (all filters); chunks of the batch's output rows.
    wgrad_by_chunks<T>(p, 1, p.K, p.N * p.Ho, a.out, [&](int64_t, int64_t e0, int64_t e1,
                                                          T* out, TapTable<T>& tt) {
      // block b at k0·taps: [t][kc]
      tt.sums.assign(static_cast<std::size_t>(taps * p.K), T(0));
      T* ex = expand ? thread_scratch_as<Scratch::Image, T>(p.R * p.W * kb, "expanded input rows")
                     : nullptr;
      const int64_t ps = expand ? kb : p.xs_w;
      for (int64_t row = e0; row < e1; ++row) {
        const int64_t n = row / p.Ho, oh = row % p.Ho;
        const AxisRun& rrun = *row_of[oh].first;
        const int64_t i = row_of[oh].second;
        const T* xn = a.x + n * p.xs_n;
        const T* dyrow = a.dy + n * p.ys_n + oh * p.ys_h;
        // as forward: x and dy rows kPrefetchRows output rows ahead (all of them at the
        // chunk's first row and at an image's first row)
        const T* dyn = a.dy + n * p.ys_n;
        const int64_t dy_len = (p.Wo - 1) * p.ys_w + p.K;
        const bool cold = row == e0 || oh == 0;
        if (!expand) {
          if (cold) prefetch_input_rows(p, xn, oh, oh + kPrefetchRows);
          else
            prefetch_rows(xn, (oh + kPrefetchRows - 1) * p.sh - p.pad_t + (p.R - 1) * p.dh + 1,
                          (oh + kPrefetchRows) * p.sh - p.pad_t + (p.R - 1) * p.dh, p.H, p.xs_h,
                          (p.W - 1) * p.xs_w + p.C);
        }
        prefetch_rows(dyn, cold ? oh : oh + kPrefetchRows, oh + kPrefetchRows, p.Ho, p.ys_h, dy_len);
        for (int64_t b = 0; b < blocks; ++b) {
          const int64_t k0 = b * kb, kc = std::min(kb, p.K - k0);
          nhwc_source_rows(p, rrun, i, xn, k0, kc, kb, ex, tt);
          T* acc = tt.sums.data() + k0 * taps;
          for (const AxisRun& crun : cols) {
            tt.clear();
            for (std::size_t q = 0; q < rrun.tap.size(); ++q)
              for (std::size_t j = 0; j < crun.tap.size(); ++j)
                for (int64_t c = 0; c < Cgt; ++c) {
                  tt.src.push_back(tt.rowp[q] + crun.src[j] * ps);
                  tt.acc.push_back(acc + ((rrun.tap[q] * p.S + crun.tap[j]) * Cgt + c) * kc);
                  if (kGrouped) tt.perm.push_back(perm.data() + c * L);
                }
            fn(crun.count, kc, int64_t(tt.src.size()), tt.src.data(), p.sw * ps,
               kGrouped ? tt.perm.data() : nullptr, dyrow + crun.u0 * p.ys_w + k0, p.ys_w,
               tt.acc.data());
          }
        }
      }
      // partial[k·taps + t]
      for (int64_t b = 0; b < blocks; ++b) {
        const int64_t k0 = b * kb, kc = std::min(kb, p.K - k0);
        const T* acc = tt.sums.data() + k0 * taps;
        for (int64_t kk = 0; kk < kc; ++kk)
          for (int64_t t = 0; t < taps; ++t) out[(k0 + kk) * taps + t] = acc[t * kc + kk];
      }
    });
  }
};

}  // namespace

template <typename T>
Implementation<T> depthwise_nchw_forward() { return implementation_of<DepthwiseNchwForward, T>(); }
template <typename T>
Implementation<T> dense_rows_nchw_forward() { return implementation_of<DenseRowsNchwForward, T>(); }
template <typename T>
Implementation<T> dense_rows_nchw_backward_weight() {
  return implementation_of<DenseRowsNchwBackwardWeight, T>();
}
template <typename T>
Implementation<T> depthwise_nhwc_forward() {
  return implementation_of<NhwcForward<false, 32 / sizeof(T)>, T>();
}
template <typename T>
Implementation<T> grouped_nhwc_forward() {
  return implementation_of<NhwcForward<true, 32 / sizeof(T)>, T>();
}
template <typename T>
Implementation<T> depthwise_nchw_backward_data() {
  return implementation_of<DepthwiseNchwBackwardData, T>();
}
template <typename T>
Implementation<T> depthwise_nhwc_backward_data() {
  return implementation_of<NhwcBackwardData<false, 32 / sizeof(T)>, T>();
}
template <typename T>
Implementation<T> grouped_nhwc_backward_data() {
  return implementation_of<NhwcBackwardData<true, 32 / sizeof(T)>, T>();
}
template <typename T>
Implementation<T> depthwise_nchw_backward_weight() {
  return implementation_of<DepthwiseNchwBackwardWeight, T>();
}
template <typename T>
Implementation<T> depthwise_nhwc_backward_weight() {
  return implementation_of<NhwcBackwardWeight<false, 32 / sizeof(T)>, T>();
}
template <typename T>
Implementation<T> grouped_nhwc_backward_weight() {
  return implementation_of<NhwcBackwardWeight<true, 32 / sizeof(T)>, T>();
}

#define CONVCORE_INSTANTIATE_DEPTHWISE(T)                          \
  template Implementation<T> depthwise_nchw_forward<T>();          \
  template Implementation<T> dense_rows_nchw_forward<T>();         \
  template Implementation<T> dense_rows_nchw_backward_weight<T>(); \
  template Implementation<T> depthwise_nhwc_forward<T>();          \
  template Implementation<T> depthwise_nchw_backward_data<T>();    \
  template Implementation<T> depthwise_nhwc_backward_data<T>();    \
  template Implementation<T> depthwise_nchw_backward_weight<T>();  \
  template Implementation<T> depthwise_nhwc_backward_weight<T>();  \
  template Implementation<T> grouped_nhwc_forward<T>();            \
  template Implementation<T> grouped_nhwc_backward_data<T>();      \
  template Implementation<T> grouped_nhwc_backward_weight<T>();
CONVCORE_INSTANTIATE_DEPTHWISE(float)
CONVCORE_INSTANTIATE_DEPTHWISE(double)
#undef CONVCORE_INSTANTIATE_DEPTHWISE

}  // namespace convcore::detail
