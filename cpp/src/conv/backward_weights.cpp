// Backward-weight and backward-bias passes. Executors, in preference order (the list at
// the end): via_nhwc (NCHW on the NHWC executors), tap_rows (NCHW) and pixel_rows (NHWC)
// read the im2col in place; pixel_split (NHWC; NCHW with at most 32 filters per group)
// splits the pixels into chunks, with the filters on the tile's columns where they are few;
// im2col packs both operands and computes any problem:
// dW (Kg × Cg·R·S) = dY (Kg × N·Ho·Wo) · im2colᵀ (N·Ho·Wo × Cg·R·S) per group: one GEMM
// whose reduction runs over every pixel of every image (the parameter sharing of the
// layer: each position's gradient is summed into the one filter). Taps are in the
// weight's memory order, so C is dW itself. Every executor cuts the reduction into chunks
// fixed by the problem alone (never by the thread count), computes each chunk's dW into
// its own partial and adds the partials in chunk order (reduction_chunks, add_partials):
// pixel_split always where the pixels allow, tap_rows, pixel_rows and im2col where the
// pixels are many (their tiles also cut dW). So the summation order does not depend on
// the thread count, and many threads share a long reduction instead of each packing all
// of it for a thin slice of dW.
#include <algorithm>
#include <cassert>
#include <vector>

#include "implementation.hpp"
#include "packers.hpp"
#include "indirect_nhwc.hpp"
#include "layout_copy.hpp"
#include "../gemm/driver.hpp"

namespace convcore::detail {
namespace {

// Below this many FLOPs per element of x and dy, via_nhwc's transposes cost more than the
// NHWC executors gain (1×1 layers).
constexpr double kViaNhwcWgradMinFlopsPerElement = 200.0;
// via_nhwc applies to layers with few channels (RGB stems) or few filters per group, where
// the NCHW executors measured slow (Zen 4, 2 threads: AlexNet conv1 112 -> 145 GFLOP/s,
// RGB stem 7×7/2 75 -> 101, 5×5 with 32 filters 142 -> 180), and, since the NHWC executors
// skip the padded taps and read dy's planes in place, to wider layers with more than one
// image and a kernel larger than 1×1 (Zen 4, 2 threads, forced, medians of 3 alternating
// rounds, ms: 3×3 c128 on 56×56 39.0 → 36.8, 3×3 c64 on 56×56 20.6 → 19.2, 3×3 c512 on 7×7
// 21.2 → 18.9, 3×3 c128 on 7×7 1.53 → 1.07, 3×3/2 c128→256 on 28×28 10.85 → 9.88, 3×3/2
// c64→128 on 104×104 21.5 → 20.0; OCR 3×3 c64 on 32×128 54.5 against 55.5). With a 1×1
// kernel (1×1 c1024→256 on 14×14: 9.8 against 13.3) or one image (3×3 c256 on 14×14: 1.28
// against 1.54) the NCHW executors stay ahead. Nor on wide layers with large output maps:
// there the 2-thread gain was 2–13 % (YOLO's 3×3/2 20.2 → 17.6 ms, forced), and at 16
// threads (a 16-core Xeon, forced, medians of 5 alternating rounds) via_nhwc lost — 3×3
// c128 on 56×56 10.76 against tap_rows' 9.11 ms,
// 3×3 c64 on 56×56 5.26 against 4.41, YOLO's 3×3/2 on 104×104 7.79 against im2col's 5.89,
// OCR 14.57 against 13.23 — its transposes, memory-bound, scale worse than the tiles; the
// small maps won there too (3×3 c512 on 7×7 4.28 against 4.88, 3×3 c128 on 7×7 0.52
// against 0.56, 3×3/2 c128→256 to 14×14 3.41 against 3.70). The bound lies between the
// 196 output pixels per image measured winning and the 2704 measured losing.
constexpr int64_t kViaNhwcWgradMaxChannels = 16;
constexpr int64_t kViaNhwcWgradMaxFilters = 32;
constexpr int64_t kViaNhwcWgradWideMaxPixels = 1024;  // output pixels per image
// With fewer than kViaNhwcWgradMaxChannels channels per group (RGB stems), via_nhwc's chunks
// of images hold x and dy together in at most this many elements (16 MiB of float32; before,
// each operand was bounded by 2²¹ on its own, so the scratch bound is the same): each chunk
// is a round of parallel regions (two transposes, the NHWC executor's, the partials' sum)
// whose barriers a team of 16 waits on. A 16-core Xeon, 16 threads, per call: AlexNet conv1
// 613–634 → 672–737 GFLOP/s (8 images in one chunk instead of 2 × 4), 7×7/2 RGB stem
// 314–324 → 423–430 (4 chunks instead of 8); Zen 3, 2 threads, medians of 8 processes:
// AlexNet conv1 20.3 → 19.0 ms, the stem 66.7 → 67.3. Layers with more channels keep the
// per-operand bound: 5×5 c192→32 in one chunk instead of two gained on the Xeon (598–613 →
// 721–722) but lost at 2 threads on Zen 3 (38.4 → 40.5 ms). A function of the problem only,
// as every chunk split.
constexpr int64_t kViaNhwcWgradScratchElems = int64_t(1) << 22;

// The NCHW tap-rows path takes one output row per depth segment; on output rows under 16
// pixels the per-segment cost (pointers, a C-tile round trip) outweighs what it saves for
// deep windows, not for shallow ones (Zen 4: tap_rows against im2col, 1×1 c1024→256 on
// 14×14 92 against 78 GFLOP/s and 3×3 c128 on 7×7 83 against 75 on one thread, 3×3 c64 on
// 4×4 61 against 55 on two; 3×3 c512 on 7×7, 4608 columns, 134 against 141 on two).
constexpr int64_t kTapRowsMinWidth = 16;
constexpr int64_t kTapRowsShortRowsMaxColumns = 2048;
// ... and with short rows, at least this many pixels to reduce (one 7×7 image: 24 against
// im2col's 91 GFLOP/s, 1×1 c512→2048).
constexpr int64_t kTapRowsShortRowsMinPixels = 256;
// The tap-rows product puts the filters of a group on the tile's NR columns: with this few
// of them most columns are empty, and im2col (filters on the MR rows) is faster (measured,
// fp32 AVX-512, 28×28 batch 16: 8 filters per group 21 ms against 25 ms with 32 groups of
// 256 channels, 4.5 against 5.7 ms for 64 → 8; even at 16, tap_rows ahead from 24).
constexpr int64_t kTapRowsMaxFewFilters = 8;
// The NHWC pixel-rows path reads NR channels of one tap per micro-panel row; it is
// preferred when the channels of a group are a multiple of 32 (of every kernel's NR).
constexpr int64_t kPixelRowsChannels = 32;
constexpr int64_t kPixelRowsMaxFiltersFor1x1 = 64;

// Input rows one depth block of kc pixels reads for one image run: at most
// min(Ho − 1, ⌈kc/Wo⌉)·sh + (R − 1)·dh + 1 (128-bit: the hyperparameters may be huge).
__int128 slab_rows(const ConvPlan& p, int64_t kc) {
  const int64_t out_rows = std::min<int64_t>(p.Ho - 1, (kc + p.Wo - 1) / p.Wo);
  return __int128(out_rows) * p.sh + __int128(p.R - 1) * p.dh + 1;
}

// The padded slabs of the in-place executors must fit the per-thread image scratch
// (kImageScratchElems); with large strides, dilations or padding they would not, and the
// packed im2col executor (bounded by the blocking) computes the problem instead.
constexpr const char* kSlabTooLarge =
    "the zero-padded input rows a block reads exceed the per-thread scratch bound (stride, "
    "dilation or padding too large)";

// dYᵀ block for the tap-rows path: depth = pixels [pc, pc+kc) of the batch, columns =
// filters [jc, jc+nc) of the group, in NR-wide micro-panels.
template <typename T>
void pack_output_grad_t(const ConvPlan& p, const T* dyg, int64_t pc, int64_t kc, int64_t jc,
                        int64_t nc, int nr, T* dst) {
  const int64_t P = p.P();
  for (int64_t jb = 0; jb < nc; jb += nr) {
    const int64_t n = std::min<int64_t>(nr, nc - jb);
    T* d = dst + jb * kc;
    for (int64_t kk = 0; kk < kc;) {
      const int64_t q = pc + kk, img = q / P, pix = q % P;
      const int64_t len = std::min(kc - kk, P - pix);
      pack_b_piece(d + kk * nr, dyg + img * p.ys_n + (jc + jb) * p.ys_c + pix * p.ys_w,
                           p.ys_w, p.ys_c, len, n, nr);
      kk += len;
    }
    zero_panel_tail(d, kc, n, nr);
  }
}

// Channels [c_lo, c_hi] of one image, input rows [h0, h0 + nrows) (any of them may lie in
// the padding), each padded to Wp columns: dst[(c - c_lo)][i][0..Wp).
template <typename T>
void pad_rows(const ConvPlan& p, const T* xn, int64_t c_lo, int64_t c_hi, int64_t h0,
              int64_t nrows, int64_t Wp, T* dst) {
  for (int64_t c = c_lo; c <= c_hi; ++c) {
    const T* xc = xn + c * p.xs_c;
    for (int64_t i = 0; i < nrows; ++i, dst += Wp) {
      const int64_t h = h0 + i;
      if (h < 0 || h >= p.H) {
        std::fill(dst, dst + Wp, T(0));
        continue;
      }
      std::fill(dst, dst + p.pad_l, T(0));
      copy_run(dst + p.pad_l, xc + h * p.xs_h, p.W);
      std::fill(dst + p.pad_l + p.W, dst + Wp, T(0));
    }
  }
}

// Reduction chunks. A chunk's partial dW is written once and read once by the ordered sum,
// against the 2·pixels FLOPs per dW element the chunk computes: 8192 with 4096 pixels per
// chunk (the tiled executors; 1024 measured slower at 2 threads: 1×1 c1024→256 NCHW 16.5
// → 20.2 ms), 2048 with 1024 (pixel_split, whose chunks are its only split of the
// reduction). 16 chunks at most: even splits for 2, 4, 8 and 16 threads.
constexpr int64_t kMaxReductionChunks = 16;
constexpr int64_t kTiledMinChunkPixels = 4096;
// Partials beyond dW: the buffer is at most this many elements (16 MiB of float32).
constexpr int64_t kMaxPartialElems = int64_t(1) << 22;

// The chunk count: a power of two, at most kMaxReductionChunks, chunks of at least
// min_pixels, partials within kMaxPartialElems. A function of the problem alone.
int64_t reduction_chunks(const ConvPlan& p, int64_t min_pixels) {
  const int64_t pixels = p.N * p.P();
  int64_t n = 1;
  while (n < kMaxReductionChunks && pixels / (2 * n) >= min_pixels &&
         __int128(2 * n - 1) * p.w_size <= kMaxPartialElems)
    n *= 2;
  return n;
}

// Pixels [begin, end) of chunk `chunk` of `chunks`.
inline int64_t chunk_begin(int64_t pixels, int64_t chunk, int64_t chunks) {
  return pixels * chunk / chunks;
}

// The partial dWs of chunks 1 .. chunks − 1 (chunk 0 writes dW itself): the calling
// thread's Partials scratch, kept across the call's regions (runtime.hpp); null for one
// chunk.
template <typename T>
T* chunk_partials(int64_t chunks, int64_t w_size) {
  return chunks > 1 ? thread_scratch_as<Scratch::Partials, T>((chunks - 1) * w_size,
                                                              "the partial weight gradients")
                    : nullptr;
}

// Where chunk `chunk` writes its dW: dW itself for the first, else its partial.
template <typename T>
T* chunk_output(T* dw, T* partials, int64_t chunk, int64_t w_size) {
  return chunk == 0 ? dw : partials + (chunk - 1) * w_size;
}

// dW += partial 1, 2, ... in that order for every element (dW dense: w_size elements).
template <typename T>
void add_partials(T* dw, const T* partials, int64_t chunks, int64_t w_size) {
  if (chunks <= 1) return;
  const int64_t W = w_size;
  parallel_run(std::max(1, std::min<int>(threads_for_copy(double(W) * chunks), int(W / 4096 + 1))),
               [&](int tid, int nt) {
    int64_t i0, i1;
    static_range(W, tid, nt, i0, i1);
    for (int64_t chunk = 1; chunk < chunks; ++chunk) {
      const T* src = partials + (chunk - 1) * W;
      for (int64_t i = i0; i < i1; ++i) dw[i] += src[i];
    }
  });
}

// The tiled executors' loop: tile_fn(g, k0, k1, m0, m1, n0, n1, out) computes rows
// [m0, m1) × columns [n0, n1) of group g's dW over pixels [k0, k1) into `out` (dW or a
// partial, in dW's strides), for every tile of every group of every reduction chunk; then
// the partials are added in chunk order.
template <typename T, typename TileFn>
void run_wgrad_tiles(const ConvPlan& p, int64_t M, int64_t N, const Blocking& bl,
                     const TileRules& rules, T* dw, TileFn&& tile_fn) {
  const int64_t K = p.N * p.P(), chunks = reduction_chunks(p, kTiledMinChunkPixels);
  // Every element of every partial is written by its chunk's tiles before the sum.
  T* const partials = chunk_partials<T>(chunks, p.w_size);
  run_tiles(chunks * p.G, M, N, ceil_div(K, chunks), bl, rules,
            [&](int64_t prob, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    const int64_t chunk = prob / p.G, g = prob % p.G;
    tile_fn(g, chunk_begin(K, chunk, chunks), chunk_begin(K, chunk + 1, chunks), m0, m1, n0, n1,
            chunk_output(dw, partials, chunk, p.w_size));
  });
  add_partials(dw, partials, chunks, p.w_size);
}

// An A or B packer whose depth (pixel) index starts at k0: gemm_rect over one chunk.
template <typename PackA>
struct ADepthFrom {
  const PackA& pack;
  int64_t k0;
  template <typename T>
  void operator()(T* dst, int64_t i0, int64_t mc, int64_t p0, int64_t kc, int mr) const {
    pack(dst, i0, mc, k0 + p0, kc, mr);
  }
};
template <typename PackB>
struct BDepthFrom {
  const PackB& pack;
  int64_t k0;
  template <typename T>
  void operator()(T* dst, int64_t p0, int64_t kc, int64_t j0, int64_t nc, int nr) const {
    pack(dst, k0 + p0, kc, j0, nc, nr);
  }
};

// The tap-rows executor (NCHW, unit width stride): the transposed problem
// dWᵀ (taps × Kg) = im2col (taps × pixels) · dYᵀ, with im2col read in place. For one
// output row, tap (c, r, s) reads a contiguous run of input (or of a zero-padded copy of
// the rows and channels a block needs), so the indirect microkernel takes MR tap rows as
// pointers, one output row per depth segment, several segments per call; only dYᵀ is
// packed.
template <typename T>
void backward_weight_tap_rows(const ConvPlan& p, const GemmEngine<T>& e, const T* dy,
                              const T* x, T* dw) {
  const Blocking& bl = e.blocking;
  const int64_t M = p.CgRS(), N = p.Kg, P = p.P(), RS = p.R * p.S;
  const bool unpadded = detail::unpadded(p);
  const int64_t Wp = p.W + p.pad_l + p.pad_r;  // row length of the padded copies
  const auto fn = e.ukernel.fn_indirect_a;
  // Taps read in place (their padded slabs are small); dYᵀ packed per tile.
  run_wgrad_tiles(p, M, N, bl, TileRules{1, bl.nr, 8, 24}, dw,
                  [&](int64_t g, int64_t k0, int64_t k1, int64_t m0, int64_t m1, int64_t n0,
                      int64_t n1, T* out) {
    const int mr = bl.mr, nr = bl.nr;
    const int64_t ncb = round_up(std::min<int64_t>(bl.nc, n1 - n0), nr);
    T* buf = thread_scratch_as<Scratch::Tile, T>(bl.mc * ncb);
    T* pb = thread_scratch_as<Scratch::PackB, T>(bl.kc * ncb);
    constexpr int64_t kSegments = 16;
    int64_t chan[kMaxTile], tap_off[kMaxTile], seg_len[kSegments], seg_off[kSegments];
    const T* rows[kSegments * kMaxTile];
    const T* dyg = dy + g * p.Kg * p.ys_c;
    const T* xg = x + g * p.Cg * p.xs_c;
    for (int64_t jc = n0; jc < n1; jc += ncb) {
      const int64_t nc = std::min<int64_t>(ncb, n1 - jc);
      for (int64_t ic = m0; ic < m1; ic += bl.mc) {
        const int64_t mc = std::min<int64_t>(bl.mc, m1 - ic);
        const int64_t c_lo = ic / RS, c_hi = (ic + mc - 1) / RS;  // channels of these taps
        for (int64_t pc = k0; pc < k1; pc += bl.kc) {
          const int64_t kc = std::min<int64_t>(bl.kc, k1 - pc);
          pack_output_grad_t(p, dyg, pc, kc, jc, nc, nr, pb);
          // Depth segments (output rows), by image run: the input the run reads is x
          // itself when there is no padding, else a zero-padded copy of its rows.
          for (int64_t kk = 0; kk < kc;) {
            const int64_t q = pc + kk, img = q / P, pix = q % P;
            const int64_t run = std::min(kc - kk, P - pix);
            const int64_t oh0 = pix / p.Wo, oh1 = (pix + run - 1) / p.Wo;
            const T* src;
            int64_t chan_stride, row_stride, row0;  // row0: source row of output row oh0, tap r=0
            if (unpadded) {
              src = xg + img * p.xs_n + c_lo * p.xs_c;
              chan_stride = p.xs_c;
              row_stride = p.W;
              row0 = oh0 * p.sh;
            } else {
              const char* what = "the padded input rows of a weight-gradient block";
              const int64_t nrows = checked_add(
                  checked_add(checked_mul(oh1 - oh0, p.sh, what), checked_mul(p.R - 1, p.dh, what),
                              what),
                  1, what);
              T* slab = thread_scratch_as<Scratch::Image, T>(
                  checked_product({c_hi - c_lo + 1, nrows, Wp}, what), what);
              pad_rows(p, xg + img * p.xs_n, c_lo, c_hi, oh0 * p.sh - p.pad_t, nrows, Wp, slab);
              src = slab;
              chan_stride = nrows * Wp;
              row_stride = Wp;
              row0 = 0;
            }
            for (int64_t ir = ic; ir < ic + mc; ir += mr) {
              interrupt_point();  // mr×nc×run: a few MFLOP
              const int64_t m = std::min<int64_t>(mr, ic + mc - ir);
              TapCursor tap(p, true, ir);
              for (int64_t i = 0; i < mr; ++i) {  // rows past m repeat the last tap
                chan[i] = tap.c - c_lo;
                tap_off[i] = tap.r * p.dh * row_stride + tap.s * p.dw;
                if (i + 1 < m) tap.next();
              }
              // Up to kSegments output rows per microkernel call (the accumulators stay in
              // registers across them), the same rows for every column panel.
              for (int64_t u0 = 0; u0 < run;) {
                int64_t nseg = 0, u = u0;
                for (; u < run && nseg < kSegments; ++nseg) {
                  const int64_t oh = (pix + u) / p.Wo, ow = (pix + u) % p.Wo;
                  seg_len[nseg] = std::min(run - u, p.Wo - ow);
                  seg_off[nseg] = u - u0;
                  const int64_t at = (row0 + (oh - oh0) * p.sh) * row_stride + ow;
                  for (int64_t i = 0; i < mr; ++i)
                    rows[nseg * mr + i] = src + chan[i] * chan_stride + tap_off[i] + at;
                  u += seg_len[nseg];
                }
                for (int64_t jr = 0; jr < nc; jr += nr) {
                  const int64_t n = std::min<int64_t>(nr, nc - jr);
                  fn(nseg, seg_len, seg_off, rows, pb + jr * kc + (kk + u0) * nr,
                     buf + (ir - ic) * ncb + jr, ncb, m, n, pc > k0 || kk + u0 > 0, nullptr,
                     false);
                }
                u0 = u;
              }
            }
            kk += run;
          }
        }
        // dW[k][tap] = C[tap][k]
        for (int64_t k = 0; k < nc; ++k) {
          T* dst = out + (g * p.Kg + jc + k) * p.ws_k + ic;
          for (int64_t t = 0; t < mc; ++t) dst[t] = buf[t * ncb + k];
        }
      }
    }
  });
}

// The steps of a block of pixels [q, q + n) whose tap (r, s) lies in the image, as
// segments (seg_begin[i], seg_len[i]) of the block: one per output row run, merged where
// consecutive runs touch (a tap inside the image horizontally joins whole rows). Returns
// the count (at most n). The walk is incremental: one division for the block's first pixel.
inline int64_t in_image_segments(const ConvPlan& p, int64_t q, int64_t n, int64_t r, int64_t s,
                                 int64_t* seg_begin, int64_t* seg_len) {
  // Output coordinates whose tap lies in the image: [lo, hi) per axis, from
  // 0 <= o·stride − pad + tap·dilation < extent.
  const auto valid = [](int64_t extent, int64_t out, int64_t stride, int64_t off, int64_t& lo,
                        int64_t& hi) {
    lo = off >= 0 ? 0 : std::min(out, (-off + stride - 1) / stride);
    hi = off >= extent ? 0 : std::min(out, (extent - off + stride - 1) / stride);
  };
  int64_t oh_lo, oh_hi, ow_lo, ow_hi;
  valid(p.H, p.Ho, p.sh, r * p.dh - p.pad_t, oh_lo, oh_hi);
  valid(p.W, p.Wo, p.sw, s * p.dw - p.pad_l, ow_lo, ow_hi);
  int64_t count = 0;
  int64_t oh = (q % p.P()) / p.Wo, ow = q % p.Wo;
  for (int64_t kk = 0; kk < n;) {
    const int64_t len = std::min(n - kk, p.Wo - ow);
    const int64_t a = std::max(ow, ow_lo), b = std::min(ow + len, ow_hi);
    if (oh >= oh_lo && oh < oh_hi && a < b) {
      const int64_t begin = kk + (a - ow);
      if (count > 0 && seg_begin[count - 1] + seg_len[count - 1] == begin) {
        seg_len[count - 1] += b - a;
      } else {
        seg_begin[count] = begin;
        seg_len[count++] = b - a;
      }
    }
    kk += len;
    ow = 0;
    if (++oh == p.Ho) oh = 0;
  }
  return count;
}

// The pixel-rows executor (NHWC, Cg a multiple of kPixelRowsChannels, itself a multiple of
// every kernel's NR): dW (Kg × R·S·Cg) = dYᵀ · im2col with im2col read in place. Row p of
// the B micro-panel for columns (r, s, c0..c0+NR) is NR contiguous channels of the input
// at pixel p's tap (r, s), so the offset-B microkernel reads it through a per-pixel offset
// table (where the pixel's tap (0, 0) lies, padding included) shifted by the tap. With
// padding, a micro-panel's product runs only over the pixels whose tap lies in the image
// (in_image_segments: the segmented offset-B microkernel skips the others), so no padding
// is copied or multiplied and a non-finite dY never meets a padding zero. It replaced
// zero-padded copies of each block's input rows (Zen 4, 2 threads, NHWC, the two builds
// alternating in fresh processes, median ms: 5×5 c192→32 on 28×28, 8 % of whose nominal
// products lie in the padding, 18.2 → 16.5; 3×3 c512 on 7×7, 18 %, 18.6 → 16.0; 3×3 c128
// on 7×7 1.11 → 0.95; 3×3 c256 14×14 batch 1 1.08 → 0.99; 3×3 c64 56×56 18.3 → 17.4).
// Only dYᵀ is packed.
template <typename T>
void backward_weight_pixel_rows(const ConvPlan& p, const GemmEngine<T>& e, const T* dy,
                                const T* x, T* dw) {
  const Blocking& bl = e.blocking;
  const int64_t M = p.Kg, N = p.CgRS(), P = p.P();
  const int64_t Cg = p.Cg;
  const bool unpadded = detail::unpadded(p);
  const auto fn = e.ukernel.fn_offset_b;
  const auto fn_seg = e.ukernel.fn_offset_b_seg;
  // dY as the A operand (packed per block), im2col in place: B's work is the offset table
  // (the tile rule's B cost, 8, dates from the padded copies; not re-measured since).
  run_wgrad_tiles(p, M, N, bl, TileRules{1, bl.nr, 24, 8}, dw,
                  [&](int64_t g, int64_t k0, int64_t k1, int64_t m0, int64_t m1, int64_t n0,
                      int64_t n1, T* out) {
    const int mr = bl.mr, nr = bl.nr;
    T* pa = thread_scratch_as<Scratch::PackA, T>(bl.mc * bl.kc);
    // b_off, then (padded) the current tap's segments: kc entries each.
    int64_t* b_off = thread_scratch_as<Scratch::Offsets, int64_t>(3 * bl.kc);
    int64_t* seg_begin = b_off + bl.kc;
    int64_t* seg_len = seg_begin + bl.kc;
    const OutputGradPackA<T> pack_dy{&p, dy + g * p.Kg * p.ys_c};
    const T* xg = x + g * Cg * p.xs_c;
    T* c = out + g * p.Kg * p.ws_k;
    for (int64_t jc = n0; jc < n1; jc += bl.nc) {
      const int64_t nc = std::min<int64_t>(bl.nc, n1 - jc);
      for (int64_t pc = k0; pc < k1; pc += bl.kc) {
        const int64_t kc = std::min<int64_t>(bl.kc, k1 - pc);
        // b_off[kk]: where pixel pc+kk's tap (0, 0), channel 0 lies in the input — outside
        // it for a padded border pixel, whose in-image taps alone are read.
        for (int64_t kk = 0; kk < kc; ++kk) {
          const int64_t img = (pc + kk) / P, pix = (pc + kk) % P;
          b_off[kk] = img * p.xs_n + ((pix / p.Wo) * p.sh - p.pad_t) * p.xs_h +
                      ((pix % p.Wo) * p.sw - p.pad_l) * p.xs_w;
        }
        for (int64_t ic = m0; ic < m1; ic += bl.mc) {
          const int64_t mc = std::min<int64_t>(bl.mc, m1 - ic);
          pack_dy(pa, ic, mc, pc, kc, mr);
          int64_t seg_tap = -1, nseg = 0;
          for (int64_t jr = jc; jr < jc + nc; jr += nr) {
            interrupt_point();  // mc×nr×kc: a few MFLOP
            const int64_t n = std::min<int64_t>(nr, jc + nc - jr);
            const int64_t tap = jr / Cg, c0 = jr % Cg;  // a panel never straddles two taps
            const int64_t r = tap / p.S, s = tap % p.S;
            // The tap's offset from the pixel's tap (0, 0); every address the kernel forms
            // (b + b_off[kk]) is a pixel's in-image tap.
            const T* b = xg + r * p.dh * p.xs_h + s * p.dw * p.xs_w + c0;
            if (!unpadded && tap != seg_tap) {
              nseg = in_image_segments(p, pc, kc, r, s, seg_begin, seg_len);
              seg_tap = tap;
            }
            for (int64_t ir = ic; ir < ic + mc; ir += mr) {
              const int64_t m = std::min<int64_t>(mr, ic + mc - ir);
              T* ct = c + ir * p.ws_k + jr;
              if (unpadded)
                fn(kc, pa + (ir - ic) * kc, b, b_off, ct, p.ws_k, m, n, pc > k0);
              else
                fn_seg(nseg, seg_begin, seg_len, pa + (ir - ic) * kc, b, b_off, ct, p.ws_k, m,
                       n, pc > k0);
            }
          }
        }
      }
    }
  });
}

// The pixel-split executor (NHWC): the reduction over pixels is cut into a fixed number of
// chunks (a function of the problem only, never of the thread count), each computing the
// whole dW of one group over its pixels into its own partial (chunk 0 into dW itself, the
// others into a shared buffer); the partials are then added in chunk order. So every
// thread packs only the pixels it reduces — splitting the small output instead makes each
// thread pack every pixel's dY or im2col row again — and the result is bitwise the same
// for any thread count.
//
// Per KC block of pixels: dYᵀ (Kg × kc) is packed as A; B is the block's im2col rows
// (kc × columns, row-major, in the weight's (r, s, c) order), each built from runs of the
// input that are contiguous in NHWC (a tap's Cg channels; with unit dilation and Cg = C, a
// whole kernel row's S·Cg values) and read by the offset-B microkernel with row offsets
// kk·ldb. (Reading a 1×1 kernel's rows, the pixels' own channels, in place through pixel
// offsets measured slower than copying them.)
constexpr int64_t kSplitMinChunkPixels = 1024;  // pixels of one chunk, at least
int64_t split_chunks(const ConvPlan& p) { return reduction_chunks(p, kSplitMinChunkPixels); }
// Columns of one block of built im2col rows (kc × 512 values: 256 KiB of float32, in L2).
constexpr int64_t kSplitColumnBlock = 512;
// Below this many FLOPs a pass runs on one thread (threads_for: 2 MFLOP per thread), so
// one chunk loses nothing.
constexpr double kSplitSerialFlops = 4e6;
// Lines of each operand prefetched for the next block, at most (256 KiB).
constexpr int64_t kSplitPrefetchLines = 4096;
// With a 1×1 kernel the next block's x is prefetched into L2 only, dy into L1 as for every
// kernel: 2688 lines of x per block (1×1 c256→64 NHWC) had evicted the current block's
// micro-panels from L1. That layer's weight gradient 10.4 → 9.2 ms, 1×1 c1024→256 9.25
// against 9.65 (Zen 4, 2 threads, builds alternating). L2 prefetches of both operands for
// every kernel measured 0.93–0.97 on the weight-gradient suites' geomeans (the 5×20/2 speech
// layer's NHWC weight gradient 151 → 109 GFLOP/s), hence 1×1 only.

// Up to `step` of the `lines` cache lines left at p, into L1 (kLocality 3) or L2 (2).
template <int kLocality>
inline void prefetch_lines(const char*& p, int64_t& lines, int64_t step) {
  for (int64_t u = 0; u < step && lines > 0; ++u, --lines, p += 64)
    __builtin_prefetch(p, 0, kLocality);
}

// A run of im2col columns [col, col + len) read from one contiguous piece of the input at
// `off` (elements) from the window's tap (0, 0), channel 0.
struct ColumnRun {
  int64_t col, off, len;
};

// Rows [0, kc) of dst (row kk at dst + kk·ldb) = the im2col rows of pixels [p0, p0+kc),
// columns [j0, j0+nc) (column j = (r·S + s)·Cg + c, the weight's order); padding taps are
// zero, and so are columns [nc, ldb). xg: channel 0 of the group in image 0. Windows that
// lie inside the image copy the same runs (taps contiguous in the input merged: with unit
// dilation and Cg = C a kernel row is one run), listed once per call in `runs`; windows
// that reach the padding go tap by tap.
template <typename T>
void build_im2col_rows_nhwc(const ConvPlan& p, const T* xg, int64_t p0, int64_t kc, int64_t j0,
                            int64_t nc, int64_t ldb, T* dst, std::vector<ColumnRun>& runs) {
  const int64_t Cg = p.Cg, P = p.P();
  const int64_t t_lo = j0 / Cg, t_hi = (j0 + nc - 1) / Cg + 1;  // taps the columns touch
  const int64_t reach_h = (p.R - 1) * p.dh, reach_w = (p.S - 1) * p.dw;
  // Tap offsets are formed only when the kernel's reach lies inside the image (else they
  // could overflow; no window is then inside the image anyway).
  const bool fits = reach_h < p.H && reach_w < p.W;
  runs.clear();
  if (fits) {
    int64_t r = t_lo / p.S, s = t_lo % p.S;
    for (int64_t t = t_lo; t < t_hi; ++t) {
      const int64_t col0 = std::max(t * Cg, j0) - j0, col1 = std::min((t + 1) * Cg, j0 + nc) - j0;
      const int64_t off = r * p.dh * p.xs_h + s * p.dw * p.xs_w + (j0 + col0 - t * Cg);
      if (!runs.empty() && runs.back().off + runs.back().len == off)
        runs.back().len += col1 - col0;
      else
        runs.push_back({col0, off, col1 - col0});
      if (++s == p.S) { s = 0; ++r; }
    }
  }
  int64_t img = p0 / P, pix = p0 % P;
  int64_t oh = pix / p.Wo, ow = pix % p.Wo;
  for (int64_t kk = 0; kk < kc; ++kk) {
    T* row = dst + kk * ldb;
    const T* xn = xg + img * p.xs_n;
    const int64_t ih0 = oh * p.sh - p.pad_t, iw0 = ow * p.sw - p.pad_l;
    if (fits && ih0 >= 0 && ih0 + reach_h < p.H && iw0 >= 0 && iw0 + reach_w < p.W) {
      const T* base = xn + ih0 * p.xs_h + iw0 * p.xs_w;
      for (const ColumnRun& u : runs) copy_run(row + u.col, base + u.off, u.len);
    } else {
      int64_t r = t_lo / p.S, s = t_lo % p.S;
      for (int64_t t = t_lo; t < t_hi; ++t) {
        const int64_t col0 = std::max(t * Cg, j0) - j0;
        const int64_t col1 = std::min((t + 1) * Cg, j0 + nc) - j0;
        const int64_t ih = ih0 + r * p.dh, iw = iw0 + s * p.dw;
        if (ih >= 0 && ih < p.H && iw >= 0 && iw < p.W)
          copy_run(row + col0, xn + ih * p.xs_h + iw * p.xs_w + (j0 + col0 - t * Cg), col1 - col0);
        else
          zero_run(row + col0, col1 - col0);
        if (++s == p.S) { s = 0; ++r; }
      }
    }
    zero_run(row + nc, ldb - nc);
    if (++ow == p.Wo) {
      ow = 0;
      if (++oh == p.Ho) { oh = 0; ++img; }
    }
  }
}

// The im2col row of one window (Cg·R·S values in the weight's order: (r, s, c) in NHWC,
// (c, r, s) in NCHW) whose tap (0, 0) lies at input row ih0, column iw0 of the image xn
// (group channel 0); taps in the padding are zero.
template <typename T>
void build_window_row(const ConvPlan& p, const T* xn, int64_t ih0, int64_t iw0, T* row) {
  const int64_t Cg = p.Cg;
  if (p.nchw()) {
    for (int64_t c = 0, j = 0; c < Cg; ++c)
      for (int64_t r = 0; r < p.R; ++r) {
        const int64_t ih = ih0 + r * p.dh;
        for (int64_t s = 0; s < p.S; ++s, ++j) {
          const int64_t iw = iw0 + s * p.dw;
          row[j] = ih >= 0 && ih < p.H && iw >= 0 && iw < p.W
                       ? xn[c * p.xs_c + ih * p.xs_h + iw * p.xs_w]
                       : T(0);
        }
      }
    return;
  }
  // NHWC: per kernel row, the columns s whose input column lies in the image, [s_lo, s_hi),
  // are found once; with one group and unit dilation (xs_w = Cg) their values are one run
  // of the input row. (Tap by tap, each bounds-checked, the border windows had cost a fifth
  // of the 5×20/2 speech layer's NHWC weight gradient: one channel, 100 taps per window.)
  const int64_t S = p.S, dw = p.dw;
  const int64_t s_lo = std::min(S, iw0 < 0 ? ceil_div(-iw0, dw) : int64_t(0));
  const int64_t s_hi = std::max(
      s_lo, iw0 >= p.W ? int64_t(0) : std::min(S, (p.W - 1 - iw0) / dw + 1));
  const bool run = p.xs_c == 1 && dw * p.xs_w == Cg;
  for (int64_t r = 0; r < p.R; ++r) {
    T* out = row + r * S * Cg;
    const int64_t ih = ih0 + r * p.dh;
    if (ih < 0 || ih >= p.H) {
      zero_run(out, S * Cg);
      continue;
    }
    zero_run(out, s_lo * Cg);
    // (Addresses formed only for columns in the image: with huge dilations or padding an
    // address of one outside it could overflow.)
    const T* xr = xn + ih * p.xs_h;
    if (run && s_lo < s_hi) {
      copy_run(out + s_lo * Cg, xr + (iw0 + s_lo * dw) * p.xs_w, (s_hi - s_lo) * Cg);
    } else {
      for (int64_t s = s_lo; s < s_hi; ++s) {
        const T* src = xr + (iw0 + s * dw) * p.xs_w;
        if (p.xs_c == 1) copy_run(out + s * Cg, src, Cg);
        else for (int64_t c = 0; c < Cg; ++c) out[s * Cg + c] = src[c * p.xs_c];
      }
    }
    zero_run(out + s_hi * Cg, (S - s_hi) * Cg);
  }
}

// pixel_split_chunk with the filters in the vector lanes, for groups of at most
// kLanesMaxFilters filters (the narrow engine where they fit its one vector, else e's tile,
// in column blocks of its NR where they do not fit it either): C =
// dWᵀ (Cg·R·S × Kg) = im2colᵀ · dY, computed by the gathered microkernel with nothing
// packed for the pixels whose window lies inside the image — tile row i is a tap, read at
// the pixel's window offset through the panel's row pointers, and B is the pixels' dY rows,
// where they lie in NHWC (ys_c = 1), transposed a block of pixels at a time (register
// transposes) from NCHW planes. Windows that reach the padding are built as im2col rows
// (zeros in the padding) and read the same way. C stays in a small buffer and is
// transposed into dW at the end. With the filters on the
// rows instead (pixel_split_chunk), dY is transposed and the im2col rows copied for every
// pixel, and a few filters fill a fraction of the tile: the 16-filter RGB stem measured
// several times slower that way.
constexpr int64_t kLanesBorderRowsElems = int64_t(1) << 16;  // built rows of one block, at most
constexpr int64_t kLanesMaxFilters = 32;

template <typename T>
void pixel_split_chunk_lanes(const ConvPlan& p, const GemmEngine<T>& e, const T* dy,
                             const T* x, int64_t g, int64_t q0, int64_t q1, T* c, int64_t ldc) {
  const Blocking& bl = e.blocking;
  const int mr = bl.mr, nr = bl.nr;
  const int64_t J = p.CgRS(), Kg = p.Kg, Cg = p.Cg;
  const bool planes = p.nchw();  // dy's rows transposed per block from its planes
  assert(Kg <= kLanesMaxFilters && (planes ? p.ys_w == 1 && p.ys_h == p.Wo : p.ys_c == 1));
  const int64_t Kgp = round_up(Kg, nr);  // C's row length: whole column blocks
  const int64_t panels = ceil_div(J, mr), Jp = panels * mr;
  const int64_t kcb = std::clamp<int64_t>(kLanesBorderRowsElems / Jp, 16, bl.kc);
  const auto fn = e.ukernel.fn_gather;
  T* ct = thread_scratch_as<Scratch::Tile, T>(
      checked_product({panels, mr, Kgp}, "a transposed weight gradient"));
  T* rows_bd = thread_scratch_as<Scratch::PackA, T>(kcb * Jp);  // built im2col rows
  int64_t* tables = thread_scratch_as<Scratch::Offsets, int64_t>(4 * kcb);
  int64_t *a_in = tables, *b_in = tables + kcb, *a_bd = tables + 2 * kcb, *b_bd = tables + 3 * kcb;
  const T** ptrs = thread_scratch_as<Scratch::Pointers, const T*>(
      2 * Jp, "the tap pointers of a weight-gradient block");
  const T** taps_in = ptrs;       // tap j of a window inside the image: taps_in[j] + window
  const T** taps_bd = ptrs + Jp;  // tap j of a built row: taps_bd[j] + row offset
  const T* dyg = dy + g * Kg * p.ys_c;
  T* dy_rows = planes ? thread_scratch_as<Scratch::PackB, T>(kcb * Kgp) : nullptr;
  const T* xg = x + g * Cg * p.xs_c;
  const int64_t reach_h = (p.R - 1) * p.dh, reach_w = (p.S - 1) * p.dw;
  // Tap offsets only when the kernel's reach lies inside the image (else they could
  // overflow, and no window lies inside anyway).
  const bool fits = reach_h < p.H && reach_w < p.W;
  for (int64_t j = 0; j < Jp; ++j) {
    const int64_t jj = std::min(j, J - 1);  // rows past J repeat the last tap
    const int64_t RS = p.R * p.S;
    const int64_t tap = p.nchw() ? jj % RS : jj / Cg, ch = p.nchw() ? jj / RS : jj % Cg;
    taps_in[j] = fits ? xg + (tap / p.S) * p.dh * p.xs_h + (tap % p.S) * p.dw * p.xs_w + ch * p.xs_c
                      : xg;
    taps_bd[j] = rows_bd + jj;
  }
  const int64_t P = p.P();
  // Output columns whose windows stay inside the image horizontally: [ow_lo, ow_hi).
  const int64_t ow_lo = std::min<int64_t>(p.Wo, ceil_div(p.pad_l, p.sw));
  const int64_t ow_hi = std::max<int64_t>(
      ow_lo, std::min<int64_t>(p.Wo, p.W - 1 - reach_w + p.pad_l >= 0
                                         ? (p.W - 1 - reach_w + p.pad_l) / p.sw + 1
                                         : 0));
  bool started = false;
  for (int64_t pc = q0; pc < q1; pc += kcb) {
    const int64_t kc = std::min<int64_t>(kcb, q1 - pc);
    int64_t n_in = 0, n_bd = 0;
    // The block's pixels by output-row runs: columns [ow_lo, ow_hi) of a row whose windows
    // stay inside the image vertically are read in place, the rest built.
    for (int64_t kk = 0; kk < kc;) {
      const int64_t q = pc + kk, img = q / P, oh = (q % P) / p.Wo, ow0 = q % p.Wo;
      const int64_t len = std::min(kc - kk, p.Wo - ow0);
      const int64_t ih0 = oh * p.sh - p.pad_t;
      const bool row_inside = fits && ih0 >= 0 && ih0 + reach_h < p.H;
      const int64_t lo = row_inside ? std::clamp(ow_lo, ow0, ow0 + len) : ow0 + len;
      const int64_t hi = row_inside ? std::clamp(ow_hi, lo, ow0 + len) : ow0 + len;
      if (planes)  // the run's dY rows: Kg planes × len pixels -> len rows of Kgp
        e.transpose(dyg + img * p.ys_n + oh * p.ys_h + ow0, p.ys_c, dy_rows + kk * Kgp, Kgp, Kg,
                    len);
      // Where pixel ow's dY row lies: in dy (NHWC) or in the block's transposed rows.
      const int64_t dy_row = planes ? (kk - ow0) * Kgp : img * p.ys_n + oh * p.ys_h;
      const int64_t dy_step = planes ? Kgp : p.ys_w;
      for (int64_t ow = ow0; ow < ow0 + len; ++ow) {
        if (ow == lo && lo < hi) {  // the run inside the image
          // (Steps in locals: the stores through int64_t pointers could alias p's fields,
          // which the loop had reloaded every pixel.)
          const int64_t x_step = p.sw * p.xs_w;
          const int64_t x_at = img * p.xs_n + ih0 * p.xs_h + (lo * p.sw - p.pad_l) * p.xs_w;
          const int64_t dy_at = dy_row + lo * dy_step;
          int64_t* __restrict ai = a_in + n_in;
          int64_t* __restrict bi = b_in + n_in;
          for (int64_t u = 0; u < hi - lo; ++u) {
            ai[u] = x_at + u * x_step;
            bi[u] = dy_at + u * dy_step;
          }
          n_in += hi - lo;
          ow = hi - 1;
          continue;
        }
        build_window_row(p, xg + img * p.xs_n, ih0, ow * p.sw - p.pad_l, rows_bd + n_bd * Jp);
        a_bd[n_bd] = n_bd * Jp;
        b_bd[n_bd++] = dy_row + ow * dy_step;
      }
      kk += len;
    }
    for (int64_t t = 0; t < panels; ++t) {
      interrupt_point();  // mr×nr×kc
      const int64_t m = std::min<int64_t>(mr, J - t * mr);
      for (int64_t jb = 0; jb < Kg; jb += nr) {
        T* ctile = ct + t * mr * Kgp + jb;
        const T* b = (planes ? dy_rows : dyg) + jb;
        const int64_t n = std::min<int64_t>(nr, Kg - jb);
        if (n_in > 0) fn(n_in, taps_in + t * mr, a_in, b, b_in, ctile, Kgp, m, n, started);
        if (n_bd > 0)
          fn(n_bd, taps_bd + t * mr, a_bd, b, b_bd, ctile, Kgp, m, n, started || n_in > 0);
      }
    }
    started = true;
  }
  if (!started) std::fill(ct, ct + panels * mr * Kgp, T(0));  // an empty reduction
  // dW[k][j] = C[j][k]
  for (int64_t k = 0; k < Kg; ++k)
    for (int64_t j = 0; j < J; ++j) c[k * ldc + j] = ct[j * Kgp + k];
}

// dW of group g over pixels [q0, q1) into c (row i of the group's Kg × Cg·R·S at c + i·ldc).
bool pixel_split_in_lanes(const ConvPlan& p) {
  return (p.nchw() || p.ys_c == 1) && p.Kg <= kLanesMaxFilters;
}

// Columns [j0, j1) of dW (all of them in the lanes variant, which takes no column range);
// the column range never changes a column's sum, so it may follow the thread count.
template <typename T>
void pixel_split_chunk(const ConvPlan& p, const GemmEngine<T>& e, const T* dy, const T* x,
                       int64_t g, int64_t q0, int64_t q1, int64_t j0, int64_t j1, T* c,
                       int64_t ldc) {
  if (pixel_split_in_lanes(p)) {
    assert(j0 == 0 && j1 == p.CgRS());
    return pixel_split_chunk_lanes(p, p.Kg <= e.narrow->blocking.nr ? *e.narrow : e, dy, x, g,
                                   q0, q1, c, ldc);
  }
  assert(!p.nchw());
  const Blocking& bl = e.blocking;
  const int mr = bl.mr, nr = bl.nr;
  const int64_t M = p.Kg, N = j1 - j0;
  c += j0;
  if (q1 <= q0) {  // an empty reduction
    for (int64_t i = 0; i < M; ++i) std::fill(c + i * ldc, c + i * ldc + N, T(0));
    return;
  }
  const auto fn = e.ukernel.fn_offset_b;
  const bool x_to_l1 = p.R * p.S > 1;  // see prefetch_lines
  const int64_t kcb = bl.kc;
  // Rows kk·ldb apart; one cache line more than the block's columns, so that the rows of a
  // micro-panel do not share the few L1 sets a power-of-two stride would map them to.
  const int64_t ncb = round_up(std::min<int64_t>(N, kSplitColumnBlock), nr);
  const int64_t ldb = ncb + 64 / int64_t(sizeof(T));
  // dYᵀ in blocks of at most MC filters (every filter at once in practice: MC >= 512).
  const int64_t mcb = std::min<int64_t>(round_up(M, mr), bl.mc);
  T* pa = thread_scratch_as<Scratch::PackA, T>(mcb * kcb);
  T* rows = thread_scratch_as<Scratch::PackB, T>(kcb * ldb);
  int64_t* b_off = thread_scratch_as<Scratch::Offsets, int64_t>(kcb);
  for (int64_t kk = 0; kk < kcb; ++kk) b_off[kk] = kk * ldb;
  const OutputGradPackA<T> pack_dy{&p, dy + g * p.Kg * p.ys_c};
  const T* xg = x + g * p.Cg * p.xs_c;
  std::vector<ColumnRun> runs;
  for (int64_t pc = q0; pc < q1; pc += kcb) {
    const int64_t kc = std::min<int64_t>(kcb, q1 - pc);
    // The next block's operands stream in from memory while this block computes: the lines
    // of its output gradient and of the input rows its windows read (within one image, at
    // most kSplitPrefetchLines of them) are prefetched a few per microkernel call.
    const char* pf_dy = nullptr;
    const char* pf_x = nullptr;
    int64_t dy_lines = 0, x_lines = 0, dy_step = 0, x_step = 0;
    if (pc + kc < q1) {
      const int64_t P = p.P(), q = pc + kc, img = q / P, pix = q % P;
      const int64_t run = std::min({kcb, q1 - q, P - pix});  // pixels in one image
      pf_dy = reinterpret_cast<const char*>(dy + img * p.ys_n + pix * p.ys_w);  // every group's
      dy_lines = std::min<int64_t>(run * p.ys_w * int64_t(sizeof(T)) / 64, kSplitPrefetchLines);
      const int64_t ih_lo = std::max<int64_t>(0, (pix / p.Wo) * p.sh - p.pad_t);
      const int64_t ih_hi = std::min<int64_t>(p.H, ((pix + run - 1) / p.Wo) * p.sh - p.pad_t +
                                                       (p.R - 1) * p.dh + 1);
      if (ih_lo < ih_hi) {
        pf_x = reinterpret_cast<const char*>(x + img * p.xs_n + ih_lo * p.xs_h);
        x_lines = std::min<int64_t>((ih_hi - ih_lo) * p.xs_h * int64_t(sizeof(T)) / 64,
                                    kSplitPrefetchLines);
      }
      const int64_t calls = ceil_div(N, nr) * ceil_div(M, mr);
      dy_step = ceil_div(dy_lines, calls);
      x_step = ceil_div(x_lines, calls);
    }
    for (int64_t ic = 0; ic < M; ic += mcb) {
      const int64_t mc = std::min<int64_t>(mcb, M - ic);
      pack_dy(pa, ic, mc, pc, kc, mr);
      for (int64_t jc = 0; jc < N; jc += ncb) {
        const int64_t nc = std::min<int64_t>(ncb, N - jc);
        build_im2col_rows_nhwc(p, xg, pc, kc, j0 + jc, nc, ldb, rows, runs);
        for (int64_t jr = 0; jr < nc; jr += nr) {
          interrupt_point();  // mc×nr×kc: a few MFLOP
          const int64_t n = std::min<int64_t>(nr, nc - jr);
          for (int64_t ir = 0; ir < mc; ir += mr) {
            const int64_t m = std::min<int64_t>(mr, mc - ir);
            prefetch_lines<3>(pf_dy, dy_lines, dy_step);
            if (x_to_l1) prefetch_lines<3>(pf_x, x_lines, x_step);
            else prefetch_lines<2>(pf_x, x_lines, x_step);
            fn(kc, pa + ir * kc, rows + jr, b_off, c + (ic + ir) * ldc + jc + jr, ldc, m, n,
               pc > q0);
          }
        }
      }
    }
  }
}

template <typename T>
void backward_weight_pixel_split(const ConvPlan& p, const GemmEngine<T>& e, const T* dy,
                                 const T* x, T* dw) {
  const int64_t chunks = split_chunks(p), pixels = p.N * p.P();
  // Where the chunks × groups are fewer than the threads, the columns are cut too, into
  // ranges of whole micro-panels, 4 at least (each range packs its own copy of dYᵀ).
  const int threads = threads_for(p.flops());
  const int64_t N = p.CgRS(), nr = e.blocking.nr;
  const int64_t col_ranges =
      pixel_split_in_lanes(p) ? 1
                              : std::clamp<int64_t>(ceil_div(threads, chunks * p.G), 1,
                                                    ceil_div(N, 4 * nr));
  const int64_t cols = round_up(ceil_div(N, col_ranges), nr);
  const int64_t tasks = chunks * p.G * col_ranges;
  // Every element of every partial is written by its chunk before the sum reads it.
  T* const partials = chunk_partials<T>(chunks, p.w_size);
  parallel_run(std::max(1, static_cast<int>(std::min<int64_t>(threads, tasks))),
               [&](int tid, int nt) {
    int64_t t0, t1;
    static_range(tasks, tid, nt, t0, t1);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t chunk = t / (p.G * col_ranges), g = t / col_ranges % p.G;
      const int64_t j0 = std::min(N, t % col_ranges * cols), j1 = std::min(N, j0 + cols);
      if (j1 <= j0) continue;
      T* out = chunk_output(dw, partials, chunk, p.w_size);
      pixel_split_chunk(p, e, dy, x, g, chunk_begin(pixels, chunk, chunks),
                        chunk_begin(pixels, chunk + 1, chunks), j0, j1,
                        out + g * p.Kg * p.ws_k, p.ws_k);
    }
  });
  add_partials(dw, partials, chunks, p.w_size);
}

// pixel_split's conditions (the entry is below; the NCHW entries above it defer to it).
const char* pixel_split_why_not(const ConvPlan& p, const Blocking&) {
  if (p.nchw()) {
    // NCHW only with the filters on the tile's columns: dy's planes transposed per block.
    if (p.Kg > kLanesMaxFilters) return "NCHW: at most 32 filters per group only";
    if (p.ys_w != 1 || p.ys_h != p.Wo) return "NCHW: contiguous dy planes only";
    if (p.ws_s != 1 || p.ws_r != p.S || p.ws_c != p.R * p.S)
      return "NCHW: contiguous weight gradient only";
  }
  return nullptr;
}
const char* pixel_split_declines(const ConvPlan& p) {
  // One chunk is one thread: fine where the pass is too small for two anyway (its
  // cheaper packing beats im2col's: 64×4×11×11 → 12 5×5 stride 2, 0.08 against 0.12 ms).
  if (split_chunks(p) < 2 && p.flops() >= kSplitSerialFlops)
    return "too few pixels, or too large a weight, to split the reduction of a pass "
           "large enough for several threads";
  return nullptr;
}
// NCHW layers with at most NR filters per group go to pixel_split, which reads x in place
// and transposes dy a block at a time (Zen 4, 1 thread: RGB 3×3/2 stem 32 -> 45 GFLOP/s
// against via_nhwc, 5×20/2 speech 52 -> 72, 3×3 c32→32 73 -> 78 against tap_rows).
constexpr const char* kNchwToPixelSplit =
    "at most 32 filters per group and 512 im2col columns: pixel_split reads x in place with "
    "the filters on the tile's columns";
// Up to kLanesMaxColumns im2col columns (Cg·R·S): wider windows spread a panel's taps over
// many channel planes, and the gathered tile's loads miss L1 (a 5×5 c192→32 layer measured
// 43 against 87 GFLOP/s through via_nhwc).
constexpr int64_t kLanesMaxColumns = 512;
bool nchw_goes_to_pixel_split(const ConvPlan& p, const Blocking& bl) {
  return p.nchw() && p.CgRS() <= kLanesMaxColumns && !pixel_split_why_not(p, bl) &&
         !pixel_split_declines(p);
}

// NCHW, unit width stride: im2col read in place, one output row per depth segment.
struct TapRows : NoWeights {
  static constexpr const char* kName = "tap_rows";
  static const char* why_not(const ConvPlan& p, const Blocking& bl) {
    if (!p.nchw()) return "NCHW only";
    if (p.sw != 1) return "unit width stride only";
    if (!unpadded(p)) {
      // Channels of one MC block of taps × rows × padded width.
      const int64_t RS = p.R * p.S;
      const __int128 chans = std::min<int64_t>(p.Cg, (bl.mc + RS - 1) / RS + 1);
      const __int128 wp = __int128(p.W) + p.pad_l + p.pad_r;
      if (chans * slab_rows(p, bl.kc) * wp > kImageScratchElems) return kSlabTooLarge;
    }
    return nullptr;
  }
  static const char* declines(const ConvPlan& p, const Blocking& bl) {
    if (nchw_goes_to_pixel_split(p, bl)) return kNchwToPixelSplit;
    if (p.Wo < kTapRowsMinWidth &&
        (p.CgRS() > kTapRowsShortRowsMaxColumns || p.N * p.P() < kTapRowsShortRowsMinPixels))
      return "output rows under 16 pixels with over 2048 im2col columns or under 256 pixels: "
             "the per-segment cost outweighs the packing it saves";
    if (p.Kg <= kTapRowsMaxFewFilters)
      return "8 filters per group or fewer: they would fill a fraction of the tile's columns; "
             "im2col puts them on its rows";
    return nullptr;
  }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>&) {
    backward_weight_tap_rows(p, e, a.dy, a.x, a.out);
  }
};

// NHWC, channels per group a multiple of NR: im2col read in place through pixel offsets.
struct PixelRows : NoWeights {
  static constexpr const char* kName = "pixel_rows";
  static constexpr bool kExactPadding = true;  // border pixels' padded taps are skipped
  static const char* why_not(const ConvPlan& p, const Blocking& bl) {
    if (p.nchw()) return "NHWC only";
    // A B micro-panel (NR channels of one tap) must never straddle two taps.
    if (p.Cg % bl.nr != 0) return "channels per group must be a multiple of the kernel's NR";
    // A border pixel's tap (0, 0) offset reaches pad_t rows and pad_l columns before the
    // input; the offsets (and the taps' shifts) must stay far inside int64.
    const __int128 reach = __int128(p.pad_t) * p.xs_h + __int128(p.pad_l) * p.xs_w +
                           __int128(p.R) * p.dh * p.xs_h + __int128(p.S) * p.dw * p.xs_w +
                           __int128(p.N) * p.xs_n;
    if (reach > (__int128(1) << 62)) return "padding or dilation too large for in-place offsets";
    return nullptr;
  }
  static const char* declines(const ConvPlan& p, const Blocking&) {
    if (p.Cg % kPixelRowsChannels != 0)
      return "channels per group not a multiple of 32: the same choice on every ISA";
    // With a 1×1 kernel the packed im2col is a plain contiguous copy; for many filters
    // (each packed element then feeds >= 2·128 FLOPs) it is cheaper to read than pixel
    // rows scattered across the input, one page apart in wide layers (measured: 1×1
    // 1024→256 packs faster, 1×1 256→64 reads in place faster).
    if (p.R * p.S == 1 && p.Kg > kPixelRowsMaxFiltersFor1x1)
      return "1×1 kernel with more than 64 filters: the packed copy is cheaper";
    // With enough pixels to split, the 1×1 kernel's copied rows, each thread reducing its
    // own pixels, beat both (measured, fp32 AVX-512, batch 16: 1×1 256→64 56×56 1.3×,
    // 1×1 1024→256 14×14 1.15× faster than pixel_rows and im2col in CPU time).
    if (p.R * p.S == 1 && split_chunks(p) >= 2)
      return "1×1 kernel with enough pixels to split the reduction: pixel_split is faster";
    return nullptr;
  }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>&) {
    backward_weight_pixel_rows(p, e, a.dy, a.x, a.out);
  }
};

// NHWC: the pixels split into chunks reduced separately, their partials summed in order.
struct PixelSplit : NoWeights {
  static constexpr const char* kName = "pixel_split";
  static const char* why_not(const ConvPlan& p, const Blocking& bl) {
    return pixel_split_why_not(p, bl);
  }
  static const char* declines(const ConvPlan& p, const Blocking&) {
    return pixel_split_declines(p);
  }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>&) {
    backward_weight_pixel_split(p, e, a.dy, a.x, a.out);
  }
};

// dW = dY · im2colᵀ with dY (A) and the im2col operand (B, the dearer one) packed per tile.
struct Im2col : NoWeights, AlwaysPreferred {
  static constexpr const char* kName = "im2col";
  static const char* why_not(const ConvPlan&, const Blocking&) { return nullptr; }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>&) {
    run_wgrad_tiles(p, p.Kg, p.CgRS(), e.blocking, TileRules{1, e.blocking.nr, 24, 64}, a.out,
                    [&](int64_t g, int64_t k0, int64_t k1, int64_t m0, int64_t m1, int64_t n0,
                        int64_t n1, T* out) {
      const OutputGradPackA<T> pack_dy{&p, a.dy + g * p.Kg * p.ys_c};
      const Im2colPackB_PixelsByTaps<T> pack_x{&p, a.x + g * p.Cg * p.xs_c};
      gemm_rect(e, m0, m1, n0, n1, k1 - k0, ADepthFrom<decltype(pack_dy)>{pack_dy, k0},
                BDepthFrom<decltype(pack_x)>{pack_x, k0}, out + g * p.Kg * p.ws_k, p.ws_k, false,
                NoEpilogue{});
    });
  }
};

// NCHW through the channels-last weight gradient: a chunk of images of x and dy is
// transposed to NHWC in the calling thread's weight scratch, the NHWC list's executor for
// that chunk (pixel_rows / pixel_split / im2col) computes its dW in the NHWC weight layout,
// chunks after the first are added in chunk order, and dW is permuted to (K, C, R, S) at
// the end. The NHWC executors read contiguous channel runs per pixel; on low-channel
// layers and layers with few filters they measured ahead of the NCHW ones by more than the
// transposes cost (see declines).
struct ViaNhwc : NoWeights {
  static constexpr const char* kName = "via_nhwc";
  static const char* why_not(const ConvPlan& p, const Blocking&) {
    if (const char* why = via_nhwc_why_not(p)) return why;
    // The NHWC plan is rebuilt from the sizes with "crop": it must give the same output.
    if (!same_output_size(p))
      return "rows or columns of x that no output reaches beyond the crop rule (a transposed "
             "convolution's output padding)";
    return nullptr;
  }
  static const char* declines(const ConvPlan& p, const Blocking& bl) {
    if (nchw_goes_to_pixel_split(p, bl)) return kNchwToPixelSplit;
    if (p.Cg >= kViaNhwcWgradMaxChannels && p.Kg > kViaNhwcWgradMaxFilters &&
        (p.R * p.S == 1 || p.N == 1 || p.P() > kViaNhwcWgradWideMaxPixels))
      return "16 or more channels and over 32 filters per group with a 1×1 kernel, one "
             "image or over 1024 output pixels per image: the NCHW executors are faster "
             "than the transposes and the NHWC executor together";
    const double moved = double(p.C) * double(p.H * p.W) + double(p.K) * double(p.P());
    return p.flops() < kViaNhwcWgradMinFlopsPerElement * moved
               ? "under 200 FLOPs per element transposed (1×1 layers): the NCHW executors "
                 "are faster than the transposes"
               : nullptr;
  }
  // Whether the NHWC executor chosen for `sub` reads dy only as its packed A operand
  // (OutputGradPackA, any strides): pixel_rows, and pixel_split with the filters on the
  // rows. Then dy's NCHW planes are packed in place, not transposed first (Zen 4, 2
  // threads, the builds alternating in fresh processes, median ms: AlexNet conv1 10.08 →
  // 9.84, 5×5 c192→32 17.19 → 16.99, 7×7/2 RGB stem 25.79 → 25.77).
  template <typename T>
  static bool reads_dy_as_a(const ConvPlan& sub, const Implementation<T>& im) {
    return im.run == &PixelRows::run<T> ||
           (im.run == &PixelSplit::run<T> && !pixel_split_in_lanes(sub));
  }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>&) {
    const int64_t img_x = p.C * p.H * p.W, img_y = p.K * p.P(), W = p.w_size;
    const int64_t chunk =
        p.Cg < kViaNhwcWgradMaxChannels
            ? via_nhwc_chunk(p.N, img_x + img_y, kViaNhwcWgradScratchElems)
            : via_nhwc_chunk(p.N, std::max(img_x, img_y));
    const bool several = chunk < p.N;
    // The NHWC plan and executor of a chunk of nb images: two sizes at most, `chunk` and the
    // remainder, both chosen before the scratch is sized (dy's copy only where one needs it).
    struct Chunk {
      ConvPlan sub;
      const Implementation<T>* im;
      bool dy_in_place;
    };
    const auto chunk_of = [&](int64_t nb) {
      Chunk c{nhwc_plan_of(p, nb), nullptr, false};
      if (c.sub.Ho != p.Ho || c.sub.Wo != p.Wo)
        throw std::logic_error("via_nhwc: the NHWC plan's output size differs");
      for (const Implementation<T>& im : backward_weight_implementations<T>())
        if (!im.why_not(c.sub, e.blocking) && !im.declines(c.sub, e.blocking)) {
          c.im = &im;
          break;
        }
      if (!c.im) throw std::logic_error("via_nhwc: no NHWC weight-gradient executor applies");
      c.dy_in_place = reads_dy_as_a(c.sub, *c.im);
      if (c.dy_in_place) {  // dy's NCHW planes
        c.sub.ys_n = p.ys_n; c.sub.ys_c = p.ys_c; c.sub.ys_h = p.ys_h; c.sub.ys_w = p.ys_w;
      }
      return c;
    };
    const Chunk whole = chunk_of(chunk);
    const Chunk rest = p.N % chunk ? chunk_of(p.N % chunk) : whole;
    const int64_t img_yt = whole.dy_in_place && rest.dy_in_place ? 0 : img_y;
    const char* what = "the NHWC copies of a weight gradient's operands";
    T* xt = thread_scratch_as<Scratch::Weights, T>(
        checked_add(checked_add(checked_mul(chunk, img_x + img_yt, what), W, what),
                    several ? W : 0, what),
        what);
    T* yt = xt + chunk * img_x;
    T* wt = yt + chunk * img_yt;  // dW in (K, R, S, Cg) order
    T* part = wt + W;             // a later chunk's dW
    for (int64_t n0 = 0; n0 < p.N; n0 += chunk) {
      const int64_t nb = std::min(chunk, p.N - n0);
      const Chunk& c = nb == chunk ? whole : rest;
      planes_to_pixels(e.transpose, a.x + n0 * p.xs_n, p.xs_n, nb, p.C, p.H * p.W, xt);
      ExecArgs<T> args;
      args.x = xt;
      if (c.dy_in_place) {
        args.dy = a.dy + n0 * p.ys_n;
      } else {
        planes_to_pixels(e.transpose, a.dy + n0 * p.ys_n, p.ys_n, nb, p.K, p.P(), yt);
        args.dy = yt;
      }
      args.out = n0 == 0 ? wt : part;
      c.im->run(c.sub, e, args, PrepackedGroups<T>{nullptr, 0, 0});
      if (n0 > 0) add_partials(wt, part, 2, W);  // chunk order: deterministic
    }
    // (K, R, S, Cg) -> the weight's own strides, filters split among the threads (a strided
    // scatter: serial, it kept the rest of a large team waiting).
    const int64_t RS = p.R * p.S;
    const int threads = static_cast<int>(std::clamp<int64_t>(
        threads_for_copy(double(W)), 1, p.K));
    parallel_run(threads, [&](int tid, int nt) {
      int64_t k0, k1;
      static_range(p.K, tid, nt, k0, k1);
      for (int64_t k = k0; k < k1; ++k)
        for (int64_t rs = 0; rs < RS; ++rs) {
          const T* src = wt + (k * RS + rs) * p.Cg;
          T* dst = a.out + k * p.ws_k + (rs / p.S) * p.ws_r + (rs % p.S) * p.ws_s;
          for (int64_t c = 0; c < p.Cg; ++c) dst[c * p.ws_c] = src[c];
        }
    });
  }
};

}  // namespace

// In preference order: the first that applies and does not decline runs.
template <typename T>
const ImplList<T>& backward_weight_implementations() {
  static const ImplList<T> list = {
      depthwise_nchw_backward_weight<T>(),
      depthwise_nhwc_backward_weight<T>(),
      grouped_nhwc_backward_weight<T>(),
      dense_rows_nchw_backward_weight<T>(),
      implementation_of<ViaNhwc, T>(),
      implementation_of<TapRows, T>(),
      implementation_of<PixelRows, T>(),
      implementation_of<PixelSplit, T>(),
      implementation_of<Im2col, T>(),
  };
  return list;
}
template const ImplList<float>& backward_weight_implementations<float>();
template const ImplList<double>& backward_weight_implementations<double>();

// db[k] = Σ_n Σ_pixels dy[n][k][pixel], accumulated in double in a fixed order
// (image, then pixel) whatever the thread count.
template <typename T>
void backward_bias(const ConvPlan& p, const T* dy, T* db) {
  const int64_t P = p.P();
  const int nthreads = threads_for(double(p.y_size) * 4);
  parallel_run(std::max(1, std::min<int>(nthreads, int(p.K))), [&](int tid, int nt) {
    int64_t k0, k1;
    static_range(p.K, tid, nt, k0, k1);
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

template void backward_bias<float>(const ConvPlan&, const float*, float*);
template void backward_bias<double>(const ConvPlan&, const double*, double*);

}  // namespace convcore::detail
