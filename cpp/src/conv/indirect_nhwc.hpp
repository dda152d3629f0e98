// NHWC direct convolution: a GEMM whose A operand is never packed (XNNPACK's indirection).
//
// In NHWC the rows of C are output pixels and the depth is (tap, channel) with channels
// contiguous in memory: for pixel q and tap (r, s), the Cin values of A are one contiguous
// run of the input. So the microkernel reads A through MR row pointers (fn_indirect_a), one
// depth segment (a tap's channel range) at a time, with a shared zero buffer standing in
// for taps that fall in the padding; only the weights are packed (once per call). This
// removes the transposing im2col pack of the NHWC forward pass and, for stride 1, the
// col2im scatter of backward-data (computed as a full correlation with flipped weights).
#pragma once

#include <algorithm>
#include <cassert>
#include <cstdint>
#include <type_traits>

#include "../gemm/driver.hpp"
#include "epilogue.hpp"
#include "packers.hpp"
#include "plan.hpp"
#include "layout_copy.hpp"

namespace convcore::detail {

// When the NCHW executors that run these tiles on transposed copies (via_nhwc) step aside:
// below 128 channels or filters per group, or below 1000 FLOPs per element transposed
// (1×1 layers), the transposes cost about what the tiles gain or more (measured on Zen 4,
// one thread: 5×5 c192 and 3×3 c512 layers gained 10–18 %, 3×3 c128 broke even, a 1×1
// c1024 backward-data lost 17 %).
inline constexpr int64_t kViaNhwcMinChannels = 128;
// A bound on the FLOPs per element transposed, and the decline that names it.
struct ViaNhwcFlopsBound {
  double min_flops_per_element;
  const char* why;
};
inline constexpr ViaNhwcFlopsBound kViaNhwcFlopsBound{
    1000.0,
    "under 1000 FLOPs per element transposed (1×1 layers): the transposes cost more than the "
    "channels-last tiles gain"};
// The forward against direct_stride1 from 300: 1×1 c1024→256 on 14×14, batch 16 (410 FLOPs
// per element) 8.8–8.9 against 9.8–10.3 ms, forced, alternating processes (Zen 4, 2
// threads); 1×1 c256→64 on 56×56 (102) stays on direct_stride1, 10.4–10.6 against 11.0–11.6.
inline constexpr ViaNhwcFlopsBound kViaNhwcForwardFlopsBound{
    300.0,
    "under 300 FLOPs per element transposed (1×1 layers with few filters): the transposes "
    "cost more than the channels-last tiles gain"};
// Strided backward-data (via_nhwc_subpixel) against the NCHW subpixel and col2im executors
// from 500: forced, Zen 4, 2 threads, batch 16 unless said, ms: 3×3/2 c128→256 on 28×28
// (768 FLOPs per element) 10.6 against 12.7; 3×3/2 c256→512 on 14×14 (1536) 10.9 against
// col2im's 10.8; 3×3/2 c64→128 on 104×104, batch 8 (384) 20.2 against 20.2, on 56×56 (384)
// 10.8 against 11.0.
inline constexpr ViaNhwcFlopsBound kViaNhwcStridedFlopsBound{
    500.0,
    "under 500 FLOPs per element transposed: with strides the transposes cost about what "
    "subpixel_nhwc's tiles gain"};

// Output pixels grouped by the taps they reach. The output map splits into rectangles
// (bands of rows × bands of columns) over which the kernel rows and columns that land in
// the image are the same; a region is one rectangle in every image, its pixels numbered
// image by image, row by row, from `start`. Micro-tiles of one region's pixels leave out
// the taps in the padding (indirect_nhwc skips a segment when none of a tile's rows reaches
// it), which on small padded maps is a large share of the products (3×3 on 7×7: 18 %).
struct PixelRegion {
  int64_t start, oh0, ow0, height, width;
};
struct PixelRegions {
  static constexpr int kMaxBands = 16;  // per axis
  int count = 0;
  PixelRegion r[kMaxBands * kMaxBands];

  const PixelRegion* find(int64_t q) const {
    int lo = 0, hi = count - 1;  // the last region starting at or before q
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (r[mid].start <= q) lo = mid;
      else hi = mid - 1;
    }
    return &r[lo];
  }

  // Bands of one axis: outputs [b[i], b[i+1]) reach the same taps. Returns the band count,
  // 0 when there are more than kMaxBands; adds the taps reached (by every output) to
  // *reached.
  static int bands(int64_t out, int64_t stride, int64_t pad, int64_t taps, int64_t dil,
                   int64_t in, int64_t* b, double* reached) {
    int count = 0;
    bool too_many = false;
    int64_t prev_lo = -1, prev_hi = -1;
    for (int64_t o = 0; o < out; ++o) {
      int64_t lo, hi;
      tap_range(o, stride, pad, taps, dil, in, lo, hi);
      *reached += double(hi - lo);
      if (lo != prev_lo || hi != prev_hi) {
        if (count == kMaxBands) too_many = true;
        else b[count++] = o;
        prev_lo = lo;
        prev_hi = hi;
      }
    }
    b[count] = out;
    return too_many ? 0 : count;
  }

  // The share of a layer's nominal products whose tap lies in the padding.
  static double padding_share(int64_t out_h, int64_t out_w, int64_t sh, int64_t sw,
                              int64_t pad_top, int64_t pad_left, int64_t R, int64_t S,
                              int64_t dh, int64_t dw, int64_t in_h, int64_t in_w) {
    double reach_h = 0, reach_w = 0;
    int64_t b[kMaxBands + 1];
    bands(out_h, sh, pad_top, R, dh, in_h, b, &reach_h);
    bands(out_w, sw, pad_left, S, dw, in_w, b, &reach_w);
    return 1.0 - reach_h / (double(out_h) * double(R)) * (reach_w / (double(out_w) * double(S)));
  }
  // The taps [lo, hi) of output o (along one axis) that land in the image (contiguous).
  static void tap_range(int64_t o, int64_t stride, int64_t pad, int64_t taps, int64_t dil,
                        int64_t in, int64_t& lo, int64_t& hi) {
    lo = 0;
    const int64_t first = o * stride - pad;
    while (lo < taps && first + lo * dil < 0) ++lo;
    hi = lo;
    while (hi < taps && first + hi * dil < in) ++hi;
  }

  // Regions for N images of out_h × out_w outputs; false (no regions) when the taps in the
  // padding are under min_share of all, or the bands are too many.
  bool make(int64_t N, int64_t out_h, int64_t out_w, int64_t sh, int64_t sw, int64_t pad_top,
            int64_t pad_left, int64_t R, int64_t S, int64_t dh, int64_t dw, int64_t in_h,
            int64_t in_w, double min_share) {
    int64_t bh[kMaxBands + 1], bw[kMaxBands + 1];
    double reach_h = 0, reach_w = 0;
    const int nh = bands(out_h, sh, pad_top, R, dh, in_h, bh, &reach_h);
    const int nw = bands(out_w, sw, pad_left, S, dw, in_w, bw, &reach_w);
    if (nh == 0 || nw == 0) return false;
    const double share_reached =
        reach_h / (double(out_h) * double(R)) * (reach_w / (double(out_w) * double(S)));
    if (1.0 - share_reached < min_share) return false;
    count = 0;
    int64_t start = 0;
    for (int i = 0; i < nh; ++i)
      for (int j = 0; j < nw; ++j) {
        const PixelRegion g{start, bh[i], bw[j], bh[i + 1] - bh[i], bw[j + 1] - bw[j]};
        r[count++] = g;
        start += N * g.height * g.width;
      }
    return true;
  }
};

// Up to this many input channels per group a correlation runs on indirect_nhwc_rows' tiles
// (one segment per kernel row) rather than indirect_nhwc's (one per tap): Zen 4, one
// thread, 3×3: rows 1–3 % ahead at 16–24 channels, level at 32, 2–3 % behind at 48–64. At
// 32 channels only where under kRowsMaxPaddingShare of the products lie in the padding,
// which indirect_nhwc's regions skip (forward, forced, 2 threads, Zen 4, ms: 5×10/2 speech
// c32→32 on 40×200, 3 % in the padding, 7.37 against 7.97; 3×3 c32→64 on 56×56, 3.5 %,
// 8.80 against 9.02; 5×5 c32→64 on 28×28, 8 %, 5.85 against 5.69; 7×7 c32→64 on 56×56,
// 6 %, 22.6 against 22.9; at 64 channels 5×10 speech level, 5×5 on 28×28 6 % behind).
inline constexpr int64_t kRowsMaxChannels = 32;
inline constexpr double kRowsMaxPaddingShare = 0.05;
inline bool rows_tiles_preferred(int64_t channels, int64_t out_h, int64_t out_w, int64_t sh,
                                 int64_t sw, int64_t pad_top, int64_t pad_left, int64_t R,
                                 int64_t S, int64_t dh, int64_t dw, int64_t in_h,
                                 int64_t in_w) {
  if (channels < kRowsMaxChannels) return true;
  return channels == kRowsMaxChannels &&
         PixelRegions::padding_share(out_h, out_w, sh, sw, pad_top, pad_left, R, S, dh, dw,
                                     in_h, in_w) < kRowsMaxPaddingShare;
}

// The weights of IndirectNhwc tiles packed as the tiles go (WeightPacking::as_it_goes):
// when the executor gets no prepacked operand, run_tile packs the KC-deep panels of
// kColumns columns at a time from the group's weights into the thread's B scratch, right
// before the micro-tiles that read them. With all of a tile's rows in one MC block (at most
// kRowsPerTile pixels: batch-1 and small maps), each panel is packed exactly once, by the
// thread that reads it, and read from its L2 — instead of all the weights packed up front,
// each thread a share, into a copy every thread then reads back from L3.
template <typename T>
struct LazyWeights {
  static constexpr int64_t kRowsPerTile = 256;  // ≤ IndirectNhwc::blocking's MC
  // Columns packed together: backward-data reads each weight row in runs of this many
  // values (its panels are strips of the rows, Cg values apart).
  static constexpr int64_t kColumns = 64;
  static constexpr int64_t kRowChunk = 16;  // flipped rows packed across the panels at once
  const ConvPlan* plan = nullptr;           // null: the weights come prepacked
  const T* wg = nullptr;                    // group 0's first filter
  bool flipped = false;  // backward-data's flipped weights, else the forward's, tap-major

  static bool applies(int64_t rows) { return rows <= kRowsPerTile; }
  static int64_t columns(int nr) { return std::max<int64_t>(nr, round_down(kColumns, nr)); }
  LazyWeights group(int64_t g) const {
    LazyWeights l = *this;
    if (wg) l.wg = wg + g * plan->Kg * plan->ws_k;
    return l;
  }
  // Columns [j0, j0 + n) of depth [p0, p0 + kc) as ceil(n / nr) zero-padded panels, panel
  // i at dst + i·kc·nr. The forward's panels are transposes of whole filter runs; the
  // flipped ones go kRowChunk depth rows at a time across all the panels, so each weight
  // row is read in one run of n values rather than in nr-wide strips a panel apart.
  void pack(T* dst, int64_t p0, int64_t kc, int64_t j0, int64_t n, int nr) const {
    if (!flipped) {
      TapMajorWeightPackB<T>{plan, wg}(dst, p0, kc, j0, n, nr);
      return;
    }
    const FlippedWeightPackB<T> packer{plan, wg};
    for (int64_t kb = 0; kb < kc; kb += kRowChunk) {
      const int64_t rows = std::min(kRowChunk, kc - kb);
      for (int64_t jb = 0; jb < n; jb += nr)
        packer(dst + jb * kc + kb * nr, p0 + kb, rows, j0 + jb, std::min<int64_t>(nr, n - jb), nr);
    }
  }
};

// Tile rules of the executors on IndirectNhwc tiles: rows cut at micro-tiles, columns at
// whole NR panels; weights packed as the tiles go are charged to every tile that packs
// them (a row split packs each panel once per row tile), prepacked ones to none.
template <typename T>
TileRules indirect_tile_rules(const Blocking& bl, const PrepackedGroups<T>& weights) {
  return TileRules{1, bl.nr, 0, weights.data ? 0.0 : TileRules{}.pack_b};
}

// Cuts the depth block [pc, pc + kc) at multiples of `unit` (a tap's Cin channels, or a
// kernel row's S·Cin values): f(i, unit index, offset within the unit, length, offset in
// the block) for piece i; returns the piece count.
template <typename F>
inline int64_t cut_depth_block(int64_t pc, int64_t kc, int64_t unit, F&& f) {
  int64_t n = 0;
  for (int64_t d = pc; d < pc + kc; ++n) {
    const int64_t off = d % unit, len = std::min(pc + kc - d, unit - off);
    f(n, d / unit, off, len, d - pc);
    d += len;
  }
  return n;
}

template <typename T>
struct IndirectNhwc {
  // Input of one group: element (n, h, w, c) at in[n*in_sn + h*in_sh + w*in_sw + c], Cin
  // channels (contiguous) per group.
  const T* in;
  int64_t in_sn, in_sh, in_sw;
  int64_t Cin, Hin, Win;
  // Output rows: pixel q = (n*Hout + oh)*Wout + ow of the group's Cout channels at
  // out + q*ldo (+ column); written, not added. When out_sw is set, pixel (n, oh, ow) is at
  // out + n*out_sn + oh*out_sh + ow*out_sw instead (the rows of one sub-pixel phase of dx),
  // and the C block goes through a buffer, as with regions.
  T* out;
  int64_t ldo;
  int64_t out_sn = 0, out_sh = 0, out_sw = 0;
  // When out_planes is set, the output is NCHW planes instead: pixel q's channel j at
  // out + n*out_pn + j*Hout*Wout + (oh*Wout + ow); each finished C block goes through a
  // buffer and out_planes (the engine's transpose) writes its runs of consecutive pixels
  // into the planes (via_nhwc: no NHWC copy of the result).
  kernels::TransposeFn<T> out_planes = nullptr;
  int64_t out_pn = 0;
  int64_t Hout, Wout;
  int64_t R, S, sh, sw, dh, dw;
  int64_t pad_top, pad_left;  // input row of (oh, r) is oh*sh - pad_top + r*dh
  BiasActivation<T> act;      // bias per output channel of the group (a column of C), ReLU
  LazyWeights<T> lazy;        // the group's weights, when run_tile gets none prepacked

  // The forward pass of an NHWC plan: in = x, out = y (group 0; a tile sets its group's
  // pointers and bias).
  static IndirectNhwc forward(const ConvPlan& p, const T* x, T* y,
                              const BiasActivation<T>& act) {
    IndirectNhwc d;
    d.in = x;
    d.in_sn = p.xs_n; d.in_sh = p.xs_h; d.in_sw = p.xs_w;
    d.Cin = p.Cg; d.Hin = p.H; d.Win = p.W;
    d.out = y;
    d.ldo = p.ys_w;
    d.Hout = p.Ho; d.Wout = p.Wo;
    d.R = p.R; d.S = p.S; d.sh = p.sh; d.sw = p.sw; d.dh = p.dh; d.dw = p.dw;
    d.pad_top = p.pad_t; d.pad_left = p.pad_l;
    d.act = act;
    return d;
  }
  // Backward-data of a stride-1 NHWC plan as the full correlation of dy with the flipped
  // weights: rows = pixels of dx, depth = (r, s, k) of dy.
  static IndirectNhwc backward_data(const ConvPlan& p, const T* dy, T* dx) {
    IndirectNhwc d;
    d.in = dy;
    d.in_sn = p.ys_n; d.in_sh = p.ys_h; d.in_sw = p.ys_w;
    d.Cin = p.Kg; d.Hin = p.Ho; d.Win = p.Wo;
    d.out = dx;
    d.ldo = p.xs_w;
    d.Hout = p.H; d.Wout = p.W;
    d.R = p.R; d.S = p.S; d.sh = 1; d.sw = 1; d.dh = p.dh; d.dw = p.dw;
    d.pad_top = (p.R - 1) * p.dh - p.pad_t;
    d.pad_left = (p.S - 1) * p.dw - p.pad_l;
    d.act = BiasActivation<T>{};
    return d;
  }

  int64_t depth() const { return R * S * Cin; }

  // The cache blocking of this executor, from the engine's: KC deeper than the GEMM's
  // (the accumulators stay in registers across every tap of a KC block, and C goes back to
  // memory once per block), cut into equal blocks of at most kMaxDepth; the weights are
  // packed with the same KC (pack_weights and run_tile must agree).
  static constexpr int64_t kMaxDepth = 1024;
  static Blocking blocking(const Blocking& engine, int64_t depth) {
    Blocking bl = engine;
    const int64_t blocks = std::max<int64_t>(1, ceil_div(depth, kMaxDepth));
    bl.kc = std::min(kMaxDepth, round_up(ceil_div(depth, blocks), 16));
    // MC rows of C stay in L2 while the KC blocks accumulate into them (a 256-row block
    // measured as fast as 128–1024 on Zen 4; 64 was slower). run_tile may cut it further to
    // bound its row-pointer table.
    bl.mc = round_up(256, engine.mr);
    return bl;
  }

  // Rows (pixels) [m0, m1) × columns (output channels) [n0, n1) with the weights prepacked
  // as a (R·S·Cin) × Cout matrix, depth in (r, s, c) order, with blocking(engine, depth()),
  // or (weights.data null) packed panel by panel from `lazy`.
  // Rows are pixels in `regions` order when it is set (the C block then goes through a
  // buffer and is scattered to the pixels' rows), else in memory order.
  void run_tile(const GemmEngine<T>& e, const Prepacked<T>& weights, int64_t m0, int64_t m1,
                int64_t n0, int64_t n1) const {
    assert(!act.row_bias);  // the bias is per output channel: a column of C
    assert(weights.data || lazy.plan);
    const int64_t K = depth();
    Blocking bl = blocking(e.blocking, K);
    const int mr = bl.mr, nr = bl.nr;
    const int64_t lazy_cols = LazyWeights<T>::columns(nr);
    T* panels = weights.data ? nullptr
                             : thread_scratch_as<Scratch::PackB, T>(bl.kc * lazy_cols,
                                                                     "weight panels");
    const auto fn = e.ukernel.fn_indirect_a;
    // Zeros for rows whose tap falls in the padding: a segment is at most one KC block deep.
    alignas(64) static const T zeros[kMaxDepth] = {};
    // Segments of a KC block: one tap's channel range each; at most ceil(KC / Cin) + 1.
    const int64_t max_seg = std::min<int64_t>(R * S, ceil_div(bl.kc, Cin) + 1);
    bl.mc = std::max<int64_t>(mr, std::min<int64_t>(bl.mc, round_down(kPointerTable / max_seg, mr)));
    const int64_t tiles = ceil_div(bl.mc, mr);
    int64_t seg_len[kMaxDepth + 1], seg_off[kMaxDepth + 1], seg_r[kMaxDepth + 1],
        seg_s[kMaxDepth + 1], seg_c0[kMaxDepth + 1];
    const T** ptrs = thread_scratch_as<Scratch::Pointers, const T*>(
        bl.mc * max_seg, "the row-pointer table of an NHWC block");
    // Per micro-tile: its segment count, and the length and depth offset of each.
    int64_t* table = thread_scratch_as<Scratch::Offsets, int64_t>(
        tiles * (2 * max_seg + 1), "the segment table of an NHWC block");
    int64_t* t_count = table;
    int64_t* t_len = table + tiles;
    int64_t* t_off = t_len + tiles * max_seg;
    const int64_t ldb = round_up(std::min<int64_t>(bl.nc, n1 - n0), nr);
    assert(!(out_sw && out_planes));
    T* cbuf = regions || out_sw || out_planes
                  ? thread_scratch_as<Scratch::PackA, T>(bl.mc * ldb, "an NHWC C block")
                  : nullptr;
    int64_t img[kMaxTile], ih0[kMaxTile], iw0[kMaxTile];

    for (int64_t jc = n0; jc < n1; jc += bl.nc) {
      const int64_t nc = std::min<int64_t>(bl.nc, n1 - jc);
      for (int64_t ic = m0; ic < m1; ic += bl.mc) {
        const int64_t mc = std::min<int64_t>(bl.mc, m1 - ic);
        for (int64_t pc = 0; pc < K; pc += bl.kc) {
          const int64_t kc = std::min<int64_t>(bl.kc, K - pc);
          const bool last = pc + kc == K;
          const int64_t nseg = cut_depth_block(
              pc, kc, Cin, [&](int64_t i, int64_t tap, int64_t c0, int64_t len, int64_t at) {
            seg_len[i] = len;
            seg_off[i] = at;
            seg_r[i] = (tap / S) * dh;
            seg_s[i] = (tap % S) * dw;
            seg_c0[i] = c0;
          });
          // Each micro-tile's segments and row pointers; a segment none of its pixels
          // reaches (every row in the padding) is left out: no products with padding.
          // Without regions the pixels are stepped from the block's first, not divided.
          int64_t q_img = 0, q_oh = 0, q_ow = 0;
          if (!regions) pixel(ic, q_img, q_oh, q_ow);
          for (int64_t ir = 0, t = 0; ir < mc; ir += mr, ++t) {
            const int64_t m = std::min<int64_t>(mr, mc - ir);
            for (int64_t i = 0; i < mr; ++i) {
              if (i >= m) {  // pad rows repeat the last pixel
                img[i] = img[m - 1], ih0[i] = ih0[m - 1], iw0[i] = iw0[m - 1];
                continue;
              }
              if (regions) {
                pixel(ic + ir + i, img[i], ih0[i], iw0[i]);
              } else {
                img[i] = q_img, ih0[i] = q_oh, iw0[i] = q_ow;
                if (++q_ow == Wout) {
                  q_ow = 0;
                  if (++q_oh == Hout) q_oh = 0, ++q_img;
                }
              }
              ih0[i] = ih0[i] * sh - pad_top;
              iw0[i] = iw0[i] * sw - pad_left;
            }
            const T** tp = ptrs + t * max_seg * mr;
            int64_t kept = 0;
            for (int64_t sg = 0; sg < nseg; ++sg) {
              bool any = false;
              for (int64_t i = 0; i < mr; ++i) {
                const int64_t ih = ih0[i] + seg_r[sg], iw = iw0[i] + seg_s[sg];
                const bool inside = ih >= 0 && ih < Hin && iw >= 0 && iw < Win;
                tp[kept * mr + i] =
                    inside ? in + img[i] * in_sn + ih * in_sh + iw * in_sw + seg_c0[sg] : zeros;
                any = any || inside;
              }
              if (!any) continue;
              t_len[t * max_seg + kept] = seg_len[sg];
              t_off[t * max_seg + kept] = seg_off[sg];
              ++kept;
            }
            t_count[t] = kept;
          }
          const T* b_block = weights.data ? weights.block(jc, pc, kc) : nullptr;
          for (int64_t jr = 0; jr < nc; jr += nr) {
            interrupt_point();  // mc×nr×kc: a few MFLOP
            const int64_t n = std::min<int64_t>(nr, nc - jr);
            if (!b_block && jr % lazy_cols == 0)
              lazy.pack(panels, pc, kc, jc + jr, std::min(lazy_cols, nc - jr), nr);
            const T* b = b_block ? b_block + jr * kc : panels + (jr % lazy_cols) * kc;
            for (int64_t ir = 0, t = 0; ir < mc; ir += mr, ++t) {
              const int64_t m = std::min<int64_t>(mr, mc - ir);
              T* c = cbuf ? cbuf + ir * ldb + jr : out + (ic + ir) * ldo + jc + jr;
              // The last block's store adds the bias and applies ReLU in registers.
              fn(t_count[t], t_len + t * max_seg, t_off + t * max_seg, ptrs + t * max_seg * mr,
                 b, c, cbuf ? ldb : ldo, m, n, pc > 0,
                 last && act.col_bias ? act.col_bias + jc + jr : nullptr, last && act.relu);
            }
          }
        }
        if (out_planes) {  // runs of consecutive pixels of one image, transposed to planes
          const int64_t P = Hout * Wout;
          for (int64_t i = 0; i < mc;) {
            int64_t n_img, oh, ow;
            pixel(ic + i, n_img, oh, ow);
            const int64_t q = oh * Wout + ow;
            int64_t len = 1;
            if (!regions) {
              len = std::min(mc - i, P - q);
            } else {
              for (int64_t n2, oh2, ow2; i + len < mc; ++len) {
                pixel(ic + i + len, n2, oh2, ow2);
                if (n2 != n_img || oh2 * Wout + ow2 != q + len) break;
              }
            }
            out_planes(cbuf + i * ldb, ldb, out + n_img * out_pn + jc * P + q, P, len, nc);
            i += len;
          }
        } else if (cbuf) {  // each row to its pixel's row of the output
          for (int64_t i = 0; i < mc; ++i) {
            int64_t n_img, oh, ow;
            pixel(ic + i, n_img, oh, ow);
            T* dst = out_sw ? out + (n_img * out_sn + oh * out_sh + ow * out_sw)
                            : out + ((n_img * Hout + oh) * Wout + ow) * ldo;
            copy_run(dst + jc, cbuf + i * ldb, nc);
          }
        }
      }
    }
  }

  // Image and output coordinates of row q (in regions order when set).
  void pixel(int64_t q, int64_t& n_img, int64_t& oh, int64_t& ow) const {
    if (!regions) {
      const int64_t P = Hout * Wout;
      n_img = q / P;
      oh = (q % P) / Wout;
      ow = q % Wout;
      return;
    }
    const PixelRegion* r = regions->find(q);
    const int64_t area = r->height * r->width, j = q - r->start, rem = j % area;
    n_img = j / area;
    oh = r->oh0 + rem / r->width;
    ow = r->ow0 + rem % r->width;
  }

  const PixelRegions* regions = nullptr;

  // Orders the rows of `images` images by region (into `storage`, which must outlive the
  // run) when at least 5 % of the products would be with padding; else memory order.
  void order_by_region(int64_t images, PixelRegions& storage) {
    regions = storage.make(images, Hout, Wout, sh, sw, pad_top, pad_left, R, S, dh, dw, Hin,
                           Win, 0.05)
                  ? &storage
                  : nullptr;
  }

  static constexpr int64_t kPointerTable = 8192;  // pointers per MC block (64 KiB)
};

// What every via_nhwc executor needs: NCHW, contiguous images (the transposes' layout), and
// one image's x and y within the image scratch (a chunk holds at least one image).
inline const char* via_nhwc_why_not(const ConvPlan& p) {
  if (!p.nchw()) return "NCHW only";
  if (p.xs_w != 1 || p.xs_h != p.W || p.xs_c != p.H * p.W || p.ys_w != 1 || p.ys_h != p.Wo ||
      p.ys_c != p.Ho * p.Wo)
    return "contiguous images only";
  if (!product_at_most({p.C, p.H, p.W}, kImageScratchElems) ||
      !product_at_most({p.K, p.Ho, p.Wo}, kImageScratchElems))
    return "one image's x or y is larger than the image scratch";
  return nullptr;
}

// The plan's convolution (for a transposed plan, the equivalent one, whose sizes the plan
// holds) in NHWC for `batch` images, for the via_nhwc executors that run an NHWC
// executor on transposed copies. Its padding is resolved already, so "crop" gives the
// plan's output size unless x has rows or columns no output reaches beyond that rule (a
// transposed convolution's output padding): same_output_size says.
inline ConvPlan nhwc_plan_of(const ConvPlan& p, int64_t batch) {
  Conv2dParams q;
  q.batch = batch;
  q.in_channels = p.C; q.in_h = p.H; q.in_w = p.W;
  q.out_channels = p.K; q.kernel_h = p.R; q.kernel_w = p.S;
  q.stride_h = p.sh; q.stride_w = p.sw; q.dilation_h = p.dh; q.dilation_w = p.dw;
  q.pad_top = p.pad_t; q.pad_bottom = p.pad_b; q.pad_left = p.pad_l; q.pad_right = p.pad_r;
  q.groups = p.G;
  q.layout = Layout::NHWC;
  q.shape_rule = ShapeRule::Crop;
  return make_plan(q, OpKind::Conv2d);
}
inline bool same_output_size(const ConvPlan& p) {
  return (p.H + p.pad_t + p.pad_b - p.dh * (p.R - 1) - 1) / p.sh + 1 == p.Ho &&
         (p.W + p.pad_l + p.pad_r - p.dw * (p.S - 1) - 1) / p.sw + 1 == p.Wo;
}

// Against NCHW executors that pack the im2col operand (strides > 1, small maps): the
// channels-last tiles win from about 200 FLOPs per element transposed (Zen 4, 2 threads:
// 5×10 stride-2 speech layer 93 GFLOP/s in NCHW, 178 in NHWC).
inline constexpr double kViaNhwcMinFlopsPerElementVsPacking = 200.0;
inline const char* via_nhwc_declines_vs_packing(const ConvPlan& p) {
  if (p.flops() < 2e7)
    return "under 20 MFLOP: the transposes' two extra parallel regions cost more than the "
           "tiles gain";
  const double moved = double(p.C) * double(p.H * p.W) + double(p.K) * double(p.P());
  if (p.flops() < kViaNhwcMinFlopsPerElementVsPacking * moved)
    return "under 200 FLOPs per element transposed: the transposes cost more than the "
           "channels-last tiles gain over im2col";
  return nullptr;
}

// bound: kViaNhwcFlopsBound, or the forward's against direct_stride1
// (kViaNhwcForwardFlopsBound).
inline const char* via_nhwc_declines(const ConvPlan& p,
                                     const ViaNhwcFlopsBound& bound = kViaNhwcFlopsBound) {
  if (std::max(p.Cg, p.Kg) < kViaNhwcMinChannels)
    return "fewer than 128 channels and filters per group: the transposes cost about what "
           "the channels-last tiles gain";
  // One image: the NCHW executors' columns are that image's pixels only (1×1 c512→2048 on
  // 7×7: 49 of 64 computed) while the tiles' rows fill up, so the FLOPs-per-element rule
  // does not hold there (Zen 4, that layer: forward 65–69 -> 71 GFLOP/s on one thread,
  // 96–104 -> 131 on two; backward-data 53 -> 65–70 on one; 1×1 c1024→256 on 14×14
  // backward-data 78 -> 92), from 20 MFLOP.
  if (p.N == 1 && p.flops() >= 2e7) return nullptr;
  const double moved = double(p.C) * double(p.H * p.W) + double(p.K) * double(p.P());
  if (2.0 * double(p.K) * double(p.P()) * double(p.CgRS()) < bound.min_flops_per_element * moved)
    return bound.why;
  return nullptr;
}

// NHWC forward with unit width dilation, channels of the image contiguous across columns
// (one group): for output pixel q and kernel row r, the S·Cin values of A at depth
// (r, 0..S−1, 0..Cin−1) are one contiguous run of the input (columns iw0..iw0+S−1, every
// channel). So a pixel needs R segments of S·Cin steps, not R·S of Cin: for few channels
// (RGB stems, 3 channels: one segment of 33 steps instead of 11 of 3) the kernel runs long
// segments and the pointer table is S times smaller. Rows in the vertical padding read the
// shared zero buffer; a pixel whose window crosses the left or right border has its window
// rows copied, zero-filled, into the thread's A-block scratch (at most MC·KC elements: the
// bound of a packed A block), the other pixels are read in place.
template <typename T>
struct IndirectNhwcRows {
  const T* in;
  int64_t in_sn, in_sh;  // the column stride is Cin (why_not of the executor)
  int64_t Cin, Hin, Win;
  T* out;
  int64_t ldo;
  // When out_sw is set, pixel (n, oh, ow) is at out + n*out_sn + oh*out_sh + ow*out_sw (the
  // rows of one sub-pixel phase of dx) and each C block goes through the thread's Tile
  // scratch (free here: via_nhwc's result, which the calling thread holds in its Tile slot,
  // is written dense, out_sw 0).
  int64_t out_sn = 0, out_sh = 0, out_sw = 0;
  int64_t Hout, Wout;
  int64_t R, S, sh, sw, dh;
  int64_t pad_top, pad_left;
  BiasActivation<T> act;

  static IndirectNhwcRows forward(const ConvPlan& p, const T* x, T* y,
                                  const BiasActivation<T>& act) {
    IndirectNhwcRows d;
    d.in = x;
    d.in_sn = p.xs_n; d.in_sh = p.xs_h;
    d.Cin = p.Cg; d.Hin = p.H; d.Win = p.W;
    d.out = y;
    d.ldo = p.ys_w;
    d.Hout = p.Ho; d.Wout = p.Wo;
    d.R = p.R; d.S = p.S; d.sh = p.sh; d.sw = p.sw; d.dh = p.dh;
    d.pad_top = p.pad_t; d.pad_left = p.pad_l;
    d.act = act;
    return d;
  }

  int64_t row_depth() const { return S * Cin; }
  int64_t depth() const { return R * S * Cin; }
  // The same blocking as IndirectNhwc (the weights are packed alike).
  static Blocking blocking(const Blocking& engine, int64_t depth) {
    return IndirectNhwc<T>::blocking(engine, depth);
  }

  // Rows (pixels) [m0, m1) × columns [n0, n1), weights prepacked as a (R·S·Cin) × Cout
  // matrix, depth in (r, s, c) order, with blocking(engine, depth()).
  void run_tile(const GemmEngine<T>& e, const Prepacked<T>& weights, int64_t m0, int64_t m1,
                int64_t n0, int64_t n1) const {
    assert(!act.row_bias);
    const int64_t K = depth(), L = row_depth();
    Blocking bl = blocking(e.blocking, K);
    const int mr = bl.mr, nr = bl.nr;
    const auto fn = e.ukernel.fn_indirect_a;
    alignas(64) static const T zeros[IndirectNhwc<T>::kMaxDepth] = {};
    // Segments of a KC block: pieces of kernel rows; at most ceil(KC / L) + 1.
    const int64_t max_seg = std::min<int64_t>(R, ceil_div(bl.kc, L) + 1);
    bl.mc = std::max<int64_t>(mr, std::min<int64_t>(bl.mc, round_down(kPointerTable / max_seg, mr)));
    int64_t seg_len[IndirectNhwc<T>::kMaxDepth + 1], seg_dr[IndirectNhwc<T>::kMaxDepth + 1],
        seg_off[IndirectNhwc<T>::kMaxDepth + 1], seg_at[IndirectNhwc<T>::kMaxDepth + 1];
    const T** ptrs = thread_scratch_as<Scratch::Pointers, const T*>(
        bl.mc * max_seg, "the row-pointer table of an NHWC block");
    const int64_t P = Hout * Wout;
    // Output columns whose window lies inside the image: [ow_lo, ow_hi).
    const int64_t ow_lo = std::min<int64_t>(Wout, ceil_div(pad_left, sw));
    const int64_t ow_hi = std::max<int64_t>(
        ow_lo, std::min<int64_t>(Wout, Win - S + pad_left >= 0 ? (Win - S + pad_left) / sw + 1 : 0));
    const bool sides = ow_lo > 0 || ow_hi < Wout;  // some windows cross a side border
    const int64_t ldb = round_up(std::min<int64_t>(bl.nc, n1 - n0), nr);
    T* cbuf = out_sw ? thread_scratch_as<Scratch::Tile, T>(bl.mc * ldb, "an NHWC C block")
                     : nullptr;

    for (int64_t jc = n0; jc < n1; jc += bl.nc) {
      const int64_t nc = std::min<int64_t>(bl.nc, n1 - jc);
      for (int64_t ic = m0; ic < m1; ic += bl.mc) {
        const int64_t mc = std::min<int64_t>(bl.mc, m1 - ic);
        for (int64_t pc = 0; pc < K; pc += bl.kc) {
          const int64_t kc = std::min<int64_t>(bl.kc, K - pc);
          const bool last = pc + kc == K;
          const int64_t nseg = cut_depth_block(
              pc, kc, L, [&](int64_t i, int64_t r, int64_t off, int64_t len, int64_t at) {
            seg_len[i] = len;
            seg_at[i] = at;  // the segments cover the block in order
            seg_dr[i] = r * dh;
            seg_off[i] = off;
          });
          T* copy = sides ? thread_scratch_as<Scratch::PackA, T>(
                                mc * kc, "the border windows of an NHWC block")
                          : nullptr;
          // The block's pixels in order: q = (img·Hout + oh)·Wout + ow, stepped, not divided.
          int64_t img = ic / P, oh = (ic % P) / Wout, ow = ic % Wout;
          // Per output row, for the columns whose windows lie inside the image
          // ([ow_lo, ow_hi)): segment sg of column ow reads row_base[sg] + (ow − ow_lo) ·
          // row_step[sg] — its input row, or the zeros (step 0) where that row lies in the
          // padding.
          const T* row_base[IndirectNhwc<T>::kMaxDepth + 1];
          int64_t row_step[IndirectNhwc<T>::kMaxDepth + 1];
          const bool any_inside = ow_lo < ow_hi;
          const auto start_row = [&] {
            if (!any_inside) return;
            const int64_t ih0 = oh * sh - pad_top;
            for (int64_t sg = 0; sg < nseg; ++sg) {
              const int64_t ih = ih0 + seg_dr[sg];
              const bool in_rows = ih >= 0 && ih < Hin;
              row_base[sg] = in_rows ? in + (img * in_sn + ih * in_sh +
                                             (ow_lo * sw - pad_left) * Cin + seg_off[sg])
                                     : zeros;
              row_step[sg] = in_rows ? sw * Cin : 0;
            }
          };
          start_row();
          for (int64_t ir = 0, t = 0; ir < mc; ir += mr, ++t) {
            const int64_t m = std::min<int64_t>(mr, mc - ir);
            const T** tile = ptrs + t * nseg * mr;
            for (int64_t i = 0; i < m;) {
              if (ow >= ow_lo && ow < ow_hi) {
                // A run of this row's inside columns: each segment's pointers step by
                // row_step from the run's first.
                const int64_t run = std::min(m - i, ow_hi - ow), d = ow - ow_lo;
                for (int64_t sg = 0; sg < nseg; ++sg) {
                  const T* ptr = row_base[sg] + d * row_step[sg];
                  const T** dst = tile + sg * mr + i;
                  for (int64_t j = 0; j < run; ++j, ptr += row_step[sg]) dst[j] = ptr;
                }
                i += run;
                ow += run;
                if (ow == Wout) {
                  ow = 0;
                  if (++oh == Hout) oh = 0, ++img;
                  start_row();
                }
                continue;
              }
              // A column whose window crosses the left or right padding: its segments copied.
              const int64_t ih0 = oh * sh - pad_top, iw0 = ow * sw - pad_left;
              const T* base = in + img * in_sn;
              for (int64_t sg = 0; sg < nseg; ++sg) {
                const int64_t ih = ih0 + seg_dr[sg];
                if (ih < 0 || ih >= Hin) {
                  tile[sg * mr + i] = zeros;
                } else {
                  // Depth e of the row is column iw0 + e / Cin, channel e % Cin: the
                  // columns in the image are one run at e = Cin·(−iw0) onwards.
                  const int64_t e0 = seg_off[sg], e1 = e0 + seg_len[sg];
                  const int64_t lo = std::clamp<int64_t>(-iw0 * Cin, e0, e1);
                  const int64_t hi = std::clamp<int64_t>((Win - iw0) * Cin, lo, e1);
                  const T* row = base + ih * in_sh;
                  zero_run(copy, lo - e0);
                  if (hi > lo) copy_run(copy + (lo - e0), row + (iw0 * Cin + lo), hi - lo);
                  zero_run(copy + (hi - e0), e1 - hi);
                  tile[sg * mr + i] = copy;
                  copy += seg_len[sg];
                }
              }
              ++i;
              if (++ow == Wout) {
                ow = 0;
                if (++oh == Hout) oh = 0, ++img;
                start_row();
              }
            }
            for (int64_t i = m; i < mr; ++i)  // pad rows repeat the last pixel
              for (int64_t sg = 0; sg < nseg; ++sg) tile[sg * mr + i] = tile[sg * mr + m - 1];
          }
          const T* b_block = weights.block(jc, pc, kc);
          for (int64_t jr = 0; jr < nc; jr += nr) {
            interrupt_point();
            const int64_t n = std::min<int64_t>(nr, nc - jr);
            for (int64_t ir = 0, t = 0; ir < mc; ir += mr, ++t) {
              const int64_t m = std::min<int64_t>(mr, mc - ir);
              T* c = cbuf ? cbuf + ir * ldb + jr : out + (ic + ir) * ldo + jc + jr;
              fn(nseg, seg_len, seg_at, ptrs + t * nseg * mr, b_block + jr * kc, c,
                 cbuf ? ldb : ldo, m, n, pc > 0,
                 last && act.col_bias ? act.col_bias + jc + jr : nullptr, last && act.relu);
            }
          }
        }
        if (cbuf) {  // each row to its pixel's row of the output
          int64_t img = ic / P, oh = (ic % P) / Wout, ow = ic % Wout;
          for (int64_t i = 0; i < mc; ++i) {
            copy_run(out + img * out_sn + oh * out_sh + ow * out_sw + jc, cbuf + i * ldb, nc);
            if (++ow == Wout) {
              ow = 0;
              if (++oh == Hout) oh = 0, ++img;
            }
          }
        }
      }
    }
  }

  // The same row-pointer table bound as IndirectNhwc.
  static constexpr int64_t kPointerTable = IndirectNhwc<T>::kPointerTable;
};

// Runs the tiles of `base` — an IndirectNhwc, or an IndirectNhwcRows for one group — (its
// geometry and epilogue set; strides and pointers are set here) on NCHW tensors through
// NHWC copies, for the via_nhwc executors: `images` images of `in` (c_in planes of
// base.Hin × base.Win pixels, image stride in_n) are transposed to NHWC a chunk at a time
// into the calling thread's scratch and the tiles compute the chunk's result (groups ×
// output pixels × c_out / groups columns) with bias and ReLU in the microkernel's store
// into `out` (c_out planes of base.Hout × base.Wout pixels, image stride out_n):
// IndirectNhwc transposes each finished C block from its buffer into the planes
// (out_planes), IndirectNhwcRows writes an NHWC result that is transposed afterwards.
template <typename D, typename T>
void run_via_nhwc(D base, const GemmEngine<T>& e, const PrepackedGroups<T>& weights,
                  int64_t images, int64_t groups, const T* in, int64_t in_n, int64_t c_in,
                  T* out, int64_t out_n, int64_t c_out) {
  constexpr bool kRows = std::is_same_v<D, IndirectNhwcRows<T>>;
  static_assert(kRows || std::is_same_v<D, IndirectNhwc<T>>, "an NHWC tile executor");
  assert(!kRows || groups == 1);
  const int64_t p_in = base.Hin * base.Win, p_out = base.Hout * base.Wout;
  const int64_t img_in = c_in * p_in, img_out = c_out * p_out, cg_out = c_out / groups;
  const int64_t chunk = via_nhwc_chunk(images, std::max(img_in, img_out));
  T* xt = thread_scratch_as<Scratch::Image, T>(chunk * img_in, "the NHWC copy of an operand");
  // IndirectNhwc writes its C blocks into the planes itself; IndirectNhwcRows into an NHWC
  // result, transposed afterwards.
  T* yt = kRows ? thread_scratch_as<Scratch::Tile, T>(chunk * img_out, "an NHWC result")
                : nullptr;
  base.in_sn = img_in;
  base.in_sh = base.Win * c_in;
  if constexpr (!kRows) {
    base.in_sw = c_in;
    base.out_planes = e.transpose;
    base.out_pn = out_n;
  }
  base.ldo = c_out;
  const BiasActivation<T> act = base.act;
  for (int64_t n0 = 0; n0 < images; n0 += chunk) {
    const int64_t nb = std::min(chunk, images - n0);
    planes_to_pixels(e.transpose, in + n0 * in_n, in_n, nb, c_in, p_in, xt);
    PixelRegions regions;
    if constexpr (!kRows) base.order_by_region(nb, regions);
    run_tiles(groups, nb * p_out, cg_out, base.depth(), e.blocking,
              indirect_tile_rules(e.blocking, weights),
              [&](int64_t g, int64_t m0, int64_t m1, int64_t c0, int64_t c1) {
      D d = base;
      d.in = xt + g * base.Cin;
      d.out = kRows ? yt + g * cg_out : out + n0 * out_n + g * cg_out * p_out;
      d.act = act.cols_from(g * cg_out);
      if constexpr (!kRows) d.lazy = base.lazy.group(g);
      d.run_tile(e, weights.group(g), m0, m1, c0, c1);
    });
    if constexpr (kRows) pixels_to_planes(e.transpose, yt, nb, c_out, p_out, out + n0 * out_n, out_n);
  }
}

}  // namespace convcore::detail
