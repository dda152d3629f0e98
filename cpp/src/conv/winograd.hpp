// Winograd F(4×4, 3×3) forward convolution (Lavin & Gray, 2015), for 3×3, stride-1,
// dilation-1 Conv2d layers when the descriptor asks for Algorithm::Winograd.
//
// The output is cut into 4×4 tiles; tile t reads a 6×6 input patch d_t (zero outside the
// image). With U = G·g·Gᵀ per (filter k, channel c) and V = Bᵀ·d·B per (channel, tile),
//   Y[k, t] = Aᵀ·( Σ_c U[k, c] ⊙ V[c, t] )·A,
// and the sum over channels is, per point ξ of the 6×6 transformed tile, one GEMM:
//   M_ξ (Kg × tiles) = U_ξ (Kg × Cg) · V_ξ (Cg × tiles)        (36 GEMMs).
//
// Two schedules compute it. The tile schedule (winograd_f4x3, WinogradExecutor below) suits
// many tiles and a small U; the filter-stationary one (winograd_f4x3_filters,
// winograd_forward_filters at the end of this file) suits deep layers and layers of few
// tiles, and transforms per-call weights as it goes. With channels contiguous (NHWC), both
// move a vector of channels (patches) or filters (outputs) at a time through the engine's
// gather_rows / scatter_rows.
//
// Tile schedule (one parallel region): the tiles of all images are numbered image by image,
// row by row, and cut into blocks of NB tiles (a multiple of the gemm kernel's NR); a unit
// of work is (tile block, group) and one thread computes it start to finish:
//   1. input transform: per KC-chunk of channels, each NR-panel of tiles is gathered from x
//      (6×6 patches, lanes = tiles) and transformed by the engine's winograd kernel
//      straight into B micro-panel layout: V_ξ is a prepacked B operand;
//   2. 36 GEMMs through the engine's gemm microkernel (gemm_rect): A = U_ξ, transformed and
//      prepacked once (set_weights, or per call), B = V_ξ, C = M_ξ accumulated over the
//      channel chunks in a fixed order;
//   3. output transform (winograd kernel, lanes = tiles), then bias + ReLU and the store of
//      the in-range outputs of each tile into y (NCHW or NHWC through the plan's strides).
// Every tile's outputs are produced by the same operations whatever the block size, the
// tile's lane and the thread count (lanes are independent, KC is fixed): bitwise
// reproducible for any thread count.
//
// Scratch per thread (bounded, independent of the image size): V 36·KC·NB, M 36·Kg·NB (the
// entry does not apply where one NR-panel of M would exceed kImageScratchElems), a patch
// and an output panel.
//
// Non-finite values: Winograd mixes the taps of a whole tile (the transforms add and
// subtract patch points), so an Inf/NaN in x or w would reach every output of each tile
// whose patch holds it, including outputs whose window does not (and 0·Inf from padding
// zeros would appear where the definition skips padding). The output kernel flags a tile
// with any non-finite output (before bias and ReLU), and such tiles are recomputed here by
// the definition (taps clipped to the image, the weights as given, which the packed operand
// keeps after U). Results for non-finite data therefore follow exact_padding.hpp's rule;
// finite data whose transforms overflow are recomputed the same way.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "../gemm/driver.hpp"
#include "exact_padding.hpp"
#include "implementation.hpp"
#include "plan.hpp"

namespace convcore::detail {

inline constexpr int64_t kWinogradPoints = 36;  // 6×6 transformed points per tile
inline constexpr int64_t kWinogradTile = 4;     // outputs per tile side
inline constexpr int64_t kWinogradMaxLanes = 16;  // the widest vector of any target (T)

// Whether the Winograd executor can compute the plan; the reason when not (reported to
// callers asking for algorithm='winograd').
inline const char* winograd_why_not(const ConvPlan& p, const Blocking& bl) {
  if (p.kind != OpKind::Conv2d) return "conv2d only (algorithm='winograd' is a conv2d option; not locally connected or transposed)";
  if (p.algorithm != Algorithm::Winograd)
    return "runs only when algorithm='winograd' is asked for (not exact: the default "
           "algorithm never takes it)";
  if (p.R != 3 || p.S != 3) return "3×3 kernels only (F(4×4, 3×3))";
  if (p.sh != 1 || p.sw != 1) return "stride 1 only";
  if (p.dh != 1 || p.dw != 1) return "dilation 1 only";
  if (bl.nr != 4 && bl.nr != 8 && bl.nr != 16 && bl.nr != 32 && bl.nr != 64)
    return "the active kernel's NR is not one the transforms are built for (4 to 64, powers "
           "of 2)";
  if (!product_at_most({kWinogradPoints, p.Kg, bl.nr}, kImageScratchElems))
    return "too many filters per group: the transformed outputs of one tile panel exceed "
           "the per-thread scratch bound";
  return nullptr;
}

// Tiles of the output grid.
inline int64_t winograd_tiles_h(const ConvPlan& p) { return ceil_div(p.Ho, kWinogradTile); }
inline int64_t winograd_tiles_w(const ConvPlan& p) { return ceil_div(p.Wo, kWinogradTile); }

// The packed weights of one group: for each point ξ, U_ξ (Kg × Cg) as a prepacked A
// operand (Prepacked layout, rows padded to MR), then the weights as given, [k][c][r][s]
// (for the exact recomputation of non-finite tiles). Element counts:
//   36 · Kgp · Cg  +  Kg · Cg · 9  <=  Kgp · 45 · Cg  (Kgp = Kg rounded up to MR).
inline constexpr int64_t kWinogradWeightDepthPerChannel = 45;

// The engine whose blocking `bl` is: the packers receive the primitive's engine's blocking
// (Implementation::pack_weights), which names its kernel; the weight transform runs that
// engine's winograd kernel, so per-call and set_weights packing agree bitwise.
template <typename T>
const GemmEngine<T>& winograd_engine_of(const Blocking& bl) {
  for (Isa isa : available_isas()) {
    const GemmEngine<T>& e = engine_for<T>(isa);
    if (&e.blocking == &bl || std::strcmp(e.blocking.kernel_name, bl.kernel_name) == 0) return e;
  }
  throw std::logic_error("winograd: no engine has the blocking of the packed weights");
}

// Scratch rows for winograd_transform_slice: 9 tap rows and 36 output rows of `pitch`
// elements, pitch = winograd_slice_pitch(mr, kc, lanes).
inline int64_t winograd_slice_pitch(int64_t mr, int64_t kc, int64_t lanes, int64_t elem_bytes) {
  // Slices rounded up to whole vectors; rows one cache line apart beyond that, so the 36
  // stores of a vector do not all fall into one L1 set.
  return round_up(kc * mr, lanes) + 64 / elem_bytes;
}

// Transforms the slices of filters [k0, k0 + mr) × channels [pc, pc + kc) of group g
// (filters past Kg are zero filters: the padding rows of the last panel) into one micro-panel
// of each U_ξ, in micro-panel order (channel, then filter): point ξ's panel at
// out + ξ·xi_stride. raw (or null) receives the weights as given, group-relative
// [k][c][r][s]. taps and buf hold 9 and 36 rows of `pitch` elements.
template <typename T>
void winograd_transform_slice(const ConvPlan& p, const kernels::WinogradKernels<T>& wk, const T* w,
                              int64_t g, int64_t k0, int64_t mr, int64_t pc, int64_t kc, T* out,
                              int64_t xi_stride, T* raw, T* taps, T* buf, int64_t pitch) {
  const int64_t run = kc * mr;  // one micro-panel of one U_ξ
  const int64_t n = round_up(run, int64_t(wk.lanes));
  int64_t tap_off[9];
  for (int r = 0; r < 3; ++r)
    for (int s = 0; s < 3; ++s) tap_off[3 * r + s] = r * p.ws_r + s * p.ws_s;
  // In micro-panel order, so each of the 9 tap rows is written front to back (the reads
  // follow MR filters at once, along their channels).
  const int64_t live = std::clamp<int64_t>(p.Kg - k0, 0, mr);  // real filters of the panel
  const T* w0 = w + (g * p.Kg + k0) * p.ws_k + pc * p.ws_c;
  if (p.ws_c == 1) {  // channels contiguous (NHWC weights): a tap at a time
    for (int t = 0; t < 9; ++t) {
      T* row = taps + t * pitch;
      const T* wt = w0 + tap_off[t];
      for (int64_t c = 0; c < kc; ++c) {
        T* col = row + c * mr;
        for (int64_t i = 0; i < live; ++i) col[i] = wt[i * p.ws_k + c];
        for (int64_t i = live; i < mr; ++i) col[i] = T(0);
      }
    }
  } else {
    for (int64_t c = 0; c < kc; ++c) {
      T* col = taps + c * mr;
      for (int64_t i = 0; i < live; ++i) {
        const T* wkc = w0 + i * p.ws_k + c * p.ws_c;
        for (int t = 0; t < 9; ++t) col[t * pitch + i] = wkc[tap_off[t]];
      }
      for (int64_t i = live; i < mr; ++i)
        for (int t = 0; t < 9; ++t) col[t * pitch + i] = T(0);
    }
  }
  if (raw) {
    for (int64_t i = 0; i < live; ++i)
      for (int64_t c = 0; c < kc; ++c) {
        const T* wkc = w0 + i * p.ws_k + c * p.ws_c;
        T* rkc = raw + ((k0 + i) * p.Cg + pc + c) * 9;
        for (int t = 0; t < 9; ++t) rkc[t] = wkc[tap_off[t]];
      }
  }
  for (int64_t l = run; l < n; ++l)
    for (int t = 0; t < 9; ++t) taps[t * pitch + l] = T(0);
  if (n == run) {  // whole vectors: straight into the 36 micro-panels
    wk.weight_f4x3(taps, pitch, out, xi_stride, n);
  } else {  // the last vector would spill into the next panel: through the buffer
    wk.weight_f4x3(taps, pitch, buf, pitch, n);
    for (int64_t xi = 0; xi < kWinogradPoints; ++xi)
      std::memcpy(out + xi * xi_stride, buf + xi * pitch, sizeof(T) * static_cast<std::size_t>(run));
  }
}

// Packs every group's U_ξ and weight copy (layout above), in channel chunks of `kcb` (the
// executor's KC). One job per (group, MR-panel of filters, chunk of channels), transformed by
// the engine's winograd weight kernel (in T) straight into the 36 micro-panels.
template <typename T>
void winograd_pack_weights(const ConvPlan& p, const Blocking& bl, const T* w, T* dst,
                           int64_t kcb) {
  const kernels::WinogradKernels<T>& wk = winograd_engine_of<T>(bl).winograd;
  const int64_t mr = bl.mr;
  const int64_t kgp = round_up(p.Kg, mr);
  const int64_t u_elems = kgp * p.Cg;  // one U_ξ
  const int64_t group_elems = kgp * kWinogradWeightDepthPerChannel * p.Cg;
  const int64_t panels = kgp / mr, slabs = ceil_div(p.Cg, kcb);
  const int64_t jobs = p.G * panels * slabs;
  const int64_t pitch = winograd_slice_pitch(mr, kcb, wk.lanes, sizeof(T));
  parallel_run(std::max(1, std::min<int>(threads_for(double(p.G) * p.Kg * p.Cg * 200),
                                         int(std::min<int64_t>(jobs, 1 << 20)))),
               [&](int tid, int nt) {
    std::vector<T> taps(static_cast<std::size_t>(9 * pitch));
    std::vector<T> buf(static_cast<std::size_t>(kWinogradPoints * pitch));
    int64_t j0, j1;
    static_range(jobs, tid, nt, j0, j1);
    for (int64_t j = j0; j < j1; ++j) {
      interrupt_point();
      const int64_t g = j / (panels * slabs), panel = j / slabs % panels, slab = j % slabs;
      const int64_t pc = slab * kcb, kc = std::min(kcb, p.Cg - pc), k0 = panel * mr;
      T* dg = dst + g * group_elems;
      winograd_transform_slice(p, wk, w, g, k0, mr, pc, kc, dg + pc * kgp + k0 * kc, u_elems,
                               dg + kWinogradPoints * u_elems, taps.data(), buf.data(), pitch);
    }
  });
}

// Tiles per block: a multiple of NR whose V and M fit about half of a typical L2, fewer
// when that would leave threads without a block.
inline int64_t winograd_block_tiles(const ConvPlan& p, const Blocking& bl, int64_t elem_bytes,
                                    int threads) {
  const int64_t nr = bl.nr;
  const int64_t total = p.N * winograd_tiles_h(p) * winograd_tiles_w(p);
  const int64_t kc = std::min<int64_t>(bl.kc, p.Cg);
  const int64_t per_panel = kWinogradPoints * (kc + p.Kg) * nr * elem_bytes;
  int64_t panels = std::clamp<int64_t>((int64_t(512) << 10) / per_panel, 1, 8);
  // Scratch bounds: M and V of a block within kImageScratchElems each.
  while (panels > 1 && !product_at_most({kWinogradPoints, std::max(p.Kg, kc), panels * nr},
                                        kImageScratchElems))
    --panels;
  panels = std::min(panels, ceil_div(total, nr));
  while (panels > 1 && p.G * ceil_div(total, panels * nr) < 2 * int64_t(threads)) --panels;
  return panels * nr;
}

// The weights as given, for the exact recomputation of non-finite tiles: group-relative
// filter k, channel c at base + k·sk + c·sc, tap (r, s) at r·sr + s·ss from there (the copy
// in the packed operand, or the caller's weights when they are transformed as they go).
template <typename T>
struct WinogradRaw {
  const T* base;
  int64_t sk, sc, sr, ss;
};

// y at (n, k, oh, ow) by the definition (taps clipped to the image), from the weights as
// given; x points at group g's channels.
template <typename T>
T winograd_exact_output(const ConvPlan& p, const T* x, const WinogradRaw<T>& raw, int64_t n,
                        int64_t k, int64_t oh, int64_t ow) {
  const int64_t ih0 = oh - p.pad_t, iw0 = ow - p.pad_l;
  int64_t r0, r1, s0, s1;
  valid_taps(ih0, 1, 3, p.H, r0, r1);
  valid_taps(iw0, 1, 3, p.W, s0, s1);
  T acc = T(0);
  for (int64_t c = 0; c < p.Cg; ++c) {
    const T* xc = x + n * p.xs_n + c * p.xs_c;
    const T* wc = raw.base + k * raw.sk + c * raw.sc;
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t s = s0; s < s1; ++s)
        acc += wc[r * raw.sr + s * raw.ss] * xc[(ih0 + r) * p.xs_h + (iw0 + s) * p.xs_w];
  }
  return acc;
}

// One tile of a block: where its patch starts in x (relative to the group's channel 0 of
// image 0) and its outputs in y, and whether they lie wholly inside.
struct WinogradTile {
  int64_t n, oh0, ow0;
  int64_t x_off, y_off;
  bool patch_inside, outputs_inside;
};

template <typename T>
struct WinogradExecutor {
  const ConvPlan& p;
  const GemmEngine<T>& e;
  const ExecArgs<T>& a;
  int64_t nr, kcb, th_n, tw_n, per_image, total, kgp, u_elems, nb;

  WinogradExecutor(const ConvPlan& plan, const GemmEngine<T>& engine, const ExecArgs<T>& args,
                   int threads)
      : p(plan), e(engine), a(args) {
    nr = e.blocking.nr;
    kcb = e.blocking.kc;
    th_n = winograd_tiles_h(p);
    tw_n = winograd_tiles_w(p);
    per_image = th_n * tw_n;
    total = p.N * per_image;
    kgp = round_up(p.Kg, e.blocking.mr);
    u_elems = kgp * p.Cg;
    nb = winograd_block_tiles(p, e.blocking, sizeof(T), threads);
  }

  void describe(int64_t t0, int64_t nt, WinogradTile* tiles) const {
    for (int64_t t = 0; t < nt; ++t) {
      WinogradTile& d = tiles[t];
      const int64_t tt = t0 + t, rest = tt % per_image;
      d.n = tt / per_image;
      d.oh0 = rest / tw_n * kWinogradTile;
      d.ow0 = rest % tw_n * kWinogradTile;
      const int64_t h0 = d.oh0 - p.pad_t, w0 = d.ow0 - p.pad_l;
      d.patch_inside = h0 >= 0 && w0 >= 0 && h0 + 6 <= p.H && w0 + 6 <= p.W;
      d.x_off = d.n * p.xs_n + h0 * p.xs_h + w0 * p.xs_w;  // used when patch_inside
      d.outputs_inside = d.oh0 + kWinogradTile <= p.Ho && d.ow0 + kWinogradTile <= p.Wo;
      d.y_off = d.n * p.ys_n + d.oh0 * p.ys_h + d.ow0 * p.ys_w;
    }
  }

  // Channels contiguous in x (NHWC): the patches of several channels are moved together by
  // the engine's gather_rows (a register-block transpose from one pointer per tile and
  // point), instead of one strided element per channel, point and tile.
  // nhwc_offsets: where point ξ of lane l's patch lies in x (relative to a channel), at
  // offs[ξ·kNR + l]; -1 outside the image and for lanes past `lanes`.
  template <int kNR>
  void nhwc_offsets(const WinogradTile* tiles, int64_t lanes, int64_t* offs) const {
    for (int64_t l = 0; l < kNR; ++l) {
      if (l >= lanes) {
        for (int64_t xi = 0; xi < kWinogradPoints; ++xi) offs[xi * kNR + l] = -1;
        continue;
      }
      const WinogradTile& d = tiles[l];
      const int64_t h0 = d.oh0 - p.pad_t, w0 = d.ow0 - p.pad_l;
      for (int64_t i = 0; i < 6; ++i)
        for (int64_t j = 0; j < 6; ++j) {
          const int64_t ih = h0 + i, iw = w0 + j;
          offs[(6 * i + j) * kNR + l] =
              ih >= 0 && ih < p.H && iw >= 0 && iw < p.W
                  ? d.n * p.xs_n + ih * p.xs_h + iw * p.xs_w
                  : -1;
        }
    }
  }
  // The patches of channels [c0, c0 + nch) of xg (nch at most the engine's lane count),
  // channel cc's at patch + cc·36·kNR, laid out as gather's; zeros: nch readable zeros.
  template <int kNR>
  void gather_nhwc(const T* xg, const int64_t* offs, int64_t c0, int64_t nch, T* patch,
                   const T* zeros) const {
    const T* rows[kNR];
    const int64_t ahead = c0 + e.winograd.lanes;  // the next block's channels, fetched ahead
    for (int64_t xi = 0; xi < kWinogradPoints; ++xi) {
      const int64_t* o = offs + xi * kNR;
      for (int l = 0; l < kNR; ++l) {
        rows[l] = o[l] >= 0 ? xg + o[l] + c0 : zeros;
        if (o[l] >= 0 && ahead < p.Cg) __builtin_prefetch(xg + o[l] + ahead);
      }
      e.winograd.gather_rows(rows, nch, patch + xi * kNR, kWinogradPoints * kNR, kNR);
    }
  }

  // The 6×6 patches of channel xc (group-relative pointer) for `lanes` tiles, into
  // patch[ξ·nr + lane]; lanes past `lanes` zero.
  // kNR: the panel width (the kernel's NR) as a constant, so the 36 offsets into the patch
  // panel are immediates.
  template <int kNR, bool kUnitW>
  void gather(const T* xc, const WinogradTile* tiles, int64_t lanes, T* patch) const {
    const int64_t sh = p.xs_h, sw = kUnitW ? 1 : p.xs_w;
    constexpr int64_t stride = kNR;
    for (int64_t l = 0; l < lanes; ++l) {
      const WinogradTile& d = tiles[l];
      T* dst = patch + l;
      if (d.patch_inside) {
        const T* src = xc + d.x_off;
        for (int i = 0; i < 6; ++i) {
          const T* row = src + i * sh;
          // The next channel's rows (NCHW: another plane, a new stream for the prefetchers).
          if (kUnitW) __builtin_prefetch(row + p.xs_c);
          T* out = dst + 6 * i * stride;
          out[0] = row[0];
          out[stride] = row[sw];
          out[2 * stride] = row[2 * sw];
          out[3 * stride] = row[3 * sw];
          out[4 * stride] = row[4 * sw];
          out[5 * stride] = row[5 * sw];
        }
      } else {  // a border tile: the rows and columns inside the image, zeros elsewhere
        const int64_t h0 = d.oh0 - p.pad_t, w0 = d.ow0 - p.pad_l;
        const int64_t i0 = std::clamp<int64_t>(-h0, 0, 6);
        const int64_t i1 = std::clamp<int64_t>(p.H - h0, i0, 6);
        const int64_t j0 = std::clamp<int64_t>(-w0, 0, 6);
        const int64_t j1 = std::clamp<int64_t>(p.W - w0, j0, 6);
        const T* xn = xc + d.n * p.xs_n;
        for (int64_t i = 0; i < 6; ++i) {
          T* out = dst + 6 * i * stride;
          if (i < i0 || i >= i1) {
            for (int j = 0; j < 6; ++j) out[j * stride] = T(0);
            continue;
          }
          const T* row = xn + (h0 + i) * sh + w0 * sw;
          if (kUnitW) __builtin_prefetch(row + j0 + p.xs_c);
          for (int64_t j = 0; j < j0; ++j) out[j * stride] = T(0);
          for (int64_t j = j0; j < j1; ++j) out[j * stride] = row[j * sw];
          for (int64_t j = j1; j < 6; ++j) out[j * stride] = T(0);
        }
      }
    }
    for (int64_t l = lanes; l < kNR; ++l)
      for (int64_t xi = 0; xi < kWinogradPoints; ++xi) patch[xi * stride + l] = T(0);
  }

  // Stores the output panel of filter k (group-relative kk) for `lanes` tiles: bias, ReLU,
  // and the tiles flagged non-finite recomputed by the definition.
  template <int kNR, bool kUnitW>
  void store(const T* outp, const WinogradTile* tiles, int64_t lanes, int64_t g, int64_t kk,
             const T* xg, const WinogradRaw<T>& raw) const {
    for (int64_t l = 0; l < lanes; ++l) store_lane<kNR, kUnitW>(outp, l, tiles[l], g, kk, xg, raw);
  }

  // Lane l of filter kk's output panel (tile d).
  template <int kNR, bool kUnitW>
  void store_lane(const T* outp, int64_t l, const WinogradTile& d, int64_t g, int64_t kk,
                  const T* xg, const WinogradRaw<T>& raw) const {
    const int64_t kglob = g * p.Kg + kk;
    T* yt = a.out + kglob * p.ys_c + d.y_off;
    const int64_t sh = p.ys_h, sw = kUnitW ? 1 : p.ys_w;
    constexpr int64_t stride = kNR;
    const T flag = outp[16 * stride + l];
    const T* src = outp + l;
    if (d.outputs_inside && flag == T(0)) {  // bias and ReLU applied by the kernel
      for (int i = 0; i < 4; ++i) {
        T* row = yt + i * sh;
        row[0] = src[(4 * i) * stride];
        row[sw] = src[(4 * i + 1) * stride];
        row[2 * sw] = src[(4 * i + 2) * stride];
        row[3 * sw] = src[(4 * i + 3) * stride];
      }
      return;
    }
    const bool exact = !(flag == T(0));
    const int64_t rows = std::min(kWinogradTile, p.Ho - d.oh0);
    const int64_t cols = std::min(kWinogradTile, p.Wo - d.ow0);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) {
        T v;
        if (exact) {
          v = winograd_exact_output(p, xg, raw, d.n, kk, d.oh0 + i, d.ow0 + j);
          if (a.bias) v += a.bias[kglob];
          if (a.relu) v = v < T(0) ? T(0) : v;
        } else {
          v = src[(4 * i + j) * stride];
        }
        yt[i * sh + j * sw] = v;
      }
  }

  // Output transform, bias, ReLU and store of filters [k0, k0 + nk) (group-relative; their
  // rows of m from m_row on, points m_stride apart) for tile panel q of a block of nt
  // tiles. outp holds nk output panels (17 · kNR each). Where filters are contiguous in y
  // (NHWC) a vector of them is stored together through the engine's scatter_rows at the
  // tiles whose outputs are all inside and finite; other tiles go filter by filter.
  template <int kNR, bool kUnitW>
  void finish(const T* m, int64_t m_stride, int64_t nbp, int64_t m_row, int64_t k0, int64_t nk,
              int64_t q, int64_t nt, const WinogradTile* tiles, int64_t g, const T* xg,
              const WinogradRaw<T>& raw, T* outp) const {
    const int64_t nr = kNR, lanes = std::min(nr, nt - q * nr);
    constexpr int64_t panel = 17 * kNR;
    for (int64_t kk = 0; kk < nk; ++kk) {
      const T* bias = a.bias ? a.bias + g * p.Kg + k0 + kk : nullptr;
      e.winograd.output_f4x3(m + (m_row + kk) * nbp + q * nr, m_stride, outp + kk * panel, nr,
                             bias, a.relu);
    }
    if (kUnitW || p.ys_c != 1 || nk == 1) {
      for (int64_t kk = 0; kk < nk; ++kk)
        store<kNR, kUnitW>(outp + kk * panel, tiles + q * nr, lanes, g, k0 + kk, xg, raw);
      return;
    }
    T sink[kWinogradMaxLanes];
    bool fast[kNR];
    for (int64_t l = 0; l < nr; ++l) {
      fast[l] = l < lanes && tiles[q * nr + l].outputs_inside;
      for (int64_t kk = 0; fast[l] && kk < nk; ++kk) fast[l] = outp[kk * panel + 16 * kNR + l] == T(0);
    }
    T* rows[kNR];
    T* y0 = a.out + (g * p.Kg + k0) * p.ys_c;
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) {
        for (int64_t l = 0; l < nr; ++l)
          rows[l] = fast[l] ? y0 + tiles[q * nr + l].y_off + i * p.ys_h + j * p.ys_w : sink;
        e.winograd.scatter_rows(outp + (4 * i + j) * kNR, panel, nk, rows, nr);
      }
    for (int64_t l = 0; l < lanes; ++l)
      if (!fast[l])
        for (int64_t kk = 0; kk < nk; ++kk)
          store_lane<kNR, kUnitW>(outp + kk * panel, l, tiles[q * nr + l], g, k0 + kk, xg, raw);
  }

  // Unit = (tile block, group), start to finish.
  template <int kNR, bool kUnitW>
  void run_unit(int64_t unit, const PrepackedGroups<T>& weights, T* v, T* patch, T* outp, T* m,
                WinogradTile* tiles, int64_t* offs, const T* zeros) const {
    const int64_t blk = unit / p.G, g = unit % p.G;
    const int64_t t0 = blk * nb, nt = std::min(nb, total - t0);
    const int64_t nbp = round_up(nt, nr);
    describe(t0, nt, tiles);
    const T* xg = a.x + g * p.Cg * p.xs_c;
    const T* ug = weights.group(g).data;
    const WinogradRaw<T> raw{ug + kWinogradPoints * u_elems, p.Cg * 9, 9, 3, 1};
    const auto input_fn = e.winograd.input_f4x3;

    for (int64_t pc = 0; pc < p.Cg; pc += kcb) {
      const int64_t kc = std::min(kcb, p.Cg - pc);
      const int64_t v_stride = kc * nbp;  // between points ξ
      // 1. input transform, panel by panel, channel by channel, into B micro-panels.
      for (int64_t q = 0; q * nr < nt; ++q) {
        const int64_t lanes = std::min(nr, nt - q * nr);
        if (!kUnitW && p.xs_c == 1) {  // NHWC: a vector of channels at a time
          const int64_t cb = e.winograd.lanes;
          nhwc_offsets<kNR>(tiles + q * nr, lanes, offs);
          for (int64_t c = pc; c < pc + kc; c += cb) {
            const int64_t nch = std::min(cb, pc + kc - c);
            gather_nhwc<kNR>(xg, offs, c, nch, patch, zeros);
            for (int64_t cc = 0; cc < nch; ++cc)
              input_fn(patch + cc * kWinogradPoints * nr, v + q * nr * kc + (c + cc - pc) * nr,
                       v_stride, nr);
          }
          continue;
        }
        for (int64_t c = pc; c < pc + kc; ++c) {
          gather<kNR, kUnitW>(xg + c * p.xs_c, tiles + q * nr, lanes, patch);
          input_fn(patch, v + q * nr * kc + (c - pc) * nr, v_stride, nr);
        }
      }
      // 2. the 36 GEMMs of this channel chunk, accumulated into M in chunk order.
      for (int64_t xi = 0; xi < kWinogradPoints; ++xi) {
        const Prepacked<T> ua{ug + xi * u_elems + pc * kgp, kgp};
        const Prepacked<T> vb{v + xi * v_stride, nbp};
        gemm_rect(e, 0, p.Kg, 0, nbp, kc, ua, vb, m + xi * p.Kg * nbp, nbp, pc > 0,
                  NoEpilogue{});
      }
    }
    // 3. output transform and store, a vector of filters at a time.
    const int64_t m_stride = p.Kg * nbp, kb = e.winograd.lanes;
    for (int64_t k = 0; k < p.Kg; k += kb)
      for (int64_t q = 0; q * nr < nt; ++q)
        finish<kNR, kUnitW>(m, m_stride, nbp, k, k, std::min(kb, p.Kg - k), q, nt, tiles, g, xg,
                            raw, outp);
  }
};

// Calls f with the panel width and the unit-column-stride flag as constants.
template <typename F>
void winograd_dispatch(int64_t nr, bool unit_w, F&& f) {
  auto with_nr = [&](auto kUnitW) {
    using UW = decltype(kUnitW);
    switch (nr) {
      case 4: return f(std::integral_constant<int, 4>{}, UW{});
      case 8: return f(std::integral_constant<int, 8>{}, UW{});
      case 16: return f(std::integral_constant<int, 16>{}, UW{});
      case 32: return f(std::integral_constant<int, 32>{}, UW{});
      case 64: return f(std::integral_constant<int, 64>{}, UW{});
      default: throw std::logic_error("winograd: unsupported kernel NR");
    }
  };
  if (unit_w) with_nr(std::true_type{});
  else with_nr(std::false_type{});
}

template <typename T>
void winograd_forward(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                      const PrepackedGroups<T>& weights) {
  int threads = threads_for(p.flops() / 4);
  const WinogradExecutor<T> ex(p, e, a, threads);
  const int64_t units = ceil_div(ex.total, ex.nb) * p.G;
  threads = static_cast<int>(std::min<int64_t>(threads, units));
  // NCHW: unit column stride in x and y (the common case gets constant offsets).
  const bool unit_w = p.xs_w == 1 && p.ys_w == 1;
  parallel_run(threads, [&](int tid, int nthreads) {
    int64_t u0, u1;
    static_range(units, tid, nthreads, u0, u1);
    if (u0 >= u1) return;
    const int64_t nr = ex.nr, nb = ex.nb;
    const int64_t kc_max = std::min(ex.kcb, p.Cg);
    // V (36 chunks of KC × NB), gathered patch panels (36 × NR, one per channel of a
    // vector in NHWC), output panels (17 × NR, one per filter of a vector) and the tile
    // table; M (36 × Kg × NB) in its own slot; the NHWC patch offsets (36 × NR).
    const int64_t v_elems = kWinogradPoints * kc_max * nb;
    const int64_t table_elems = ceil_div(nb * int64_t(sizeof(WinogradTile)), sizeof(T));
    T* v = thread_scratch_as<Scratch::Image, T>(
        v_elems + kWinogradMaxLanes * (kWinogradPoints + 17) * nr + table_elems,
        "the Winograd input tiles");
    T* patch = v + v_elems;
    T* outp = patch + kWinogradMaxLanes * kWinogradPoints * nr;
    auto* tiles = reinterpret_cast<WinogradTile*>(outp + kWinogradMaxLanes * 17 * nr);
    std::vector<int64_t> offs(static_cast<std::size_t>(kWinogradPoints * nr));
    const T zeros[kWinogradMaxLanes] = {};
    T* m = thread_scratch_as<Scratch::Tile, T>(kWinogradPoints * p.Kg * nb,
                                               "the Winograd products");
    for (int64_t unit = u0; unit < u1; ++unit) {
      interrupt_point();
      winograd_dispatch(nr, unit_w, [&](auto kNR, auto kUnitW) {
        ex.template run_unit<decltype(kNR)::value, decltype(kUnitW)::value>(
            unit, weights, v, patch, outp, m, tiles, offs.data(), zeros);
      });
    }
  });
}

// Filter-stationary schedule (the winograd_f4x3_filters entry), for layers whose transformed
// weights are large. The tile schedule above reads all of a group's U once per block of
// tiles, and its blocks are small (V and M of a block share L2 with the U panels), so a deep
// layer (512×512 filters: U is 38 MB in float32) streams U from memory several times per
// call. Here, per group:
//   1. a block of up to kWinogradFilterBlockTiles tiles (all images) has its V built once,
//      for every channel, into the calling thread's Image scratch (threads split the
//      channels);
//   2. the threads split the MR-panels of filters; a panel runs its 36 GEMMs over the whole
//      block, channel chunk by channel chunk (KC = winograd_filters_kc), accumulating M in
//      chunk order, then its output transform and store. U is read once per block.
// Weights given with the call are not packed up front (WeightPacking::as_it_goes): a panel
// transforms its slices of U for one channel chunk right before the GEMMs that use them
// (winograd_transform_slice, the packer's own code), so the per-call U — four times the
// weights — is never written out. Weights set once (set_weights) are packed in the same
// chunks, so both give the same bits. The per-element operations do not depend on the block,
// the panel split or the thread count: bitwise reproducible for any thread count.
inline constexpr int64_t kWinogradFilterBlockTiles = 128;

// The automatic choice between the two schedules (winograd_f4x3_filters' declines): the
// filter-stationary one when a group's U has at least this many elements (36 · Kg · Cg),
// or when the layer has at most kWinogradFiltersMaxTiles tiles (so a per-call U is
// transformed at most twice). Elsewhere (many tiles, small U: 3×3 c64 and c128 on 56×56)
// the tile schedule measured 10-15 % faster per call, the filter one paying for
// transforming U once per block of tiles. A/B, fp32, Zen 4, 2 threads, GFLOP/s per call,
// filters / tiles: 512→512 on 7×7, batch 16: 438 / 251; on 14×14: 507 / 353; batch 1 on
// 14×14: 203 / 66; 256→256 on 14×14: 464 / 431; on 28×28 batch 8: 558 / 533; 128→128 on
// 28×28 batch 4: 480 / 408; on 56×56 batch 8: 451 / 499; 64→64 on 56×56 batch 16:
// 341 / 401.
inline constexpr int64_t kWinogradFiltersMinU = int64_t(2) << 20;
inline constexpr int64_t kWinogradFiltersMaxTiles = 256;

// The channel chunk of this schedule: at most 128, so a panel's U slices (36 · MR · KC)
// stay within about half of L2 while the GEMMs read them.
inline int64_t winograd_filters_kc(const Blocking& bl) { return std::min<int64_t>(bl.kc, 128); }

// Filters of a unit: about 32 (whole MR-panels), so each V micro-panel read from the shared
// block serves several A micro-panels. (8, 16, 32 and 64 measured within noise of each other
// on the 512-channel 7×7 layer; 32 keeps a unit's U slices and M within L2.)
inline int64_t winograd_filters_mc(const Blocking& bl) {
  return std::max<int64_t>(1, 32 / bl.mr) * bl.mr;
}

// Tiles per block: up to kWinogradFilterBlockTiles, as many as the block's V (36 · Cg per
// tile) allows within kImageScratchElems, a multiple of NR.
inline int64_t winograd_filter_block_tiles(const ConvPlan& p, const Blocking& bl) {
  const int64_t nr = bl.nr;
  const int64_t total = p.N * winograd_tiles_h(p) * winograd_tiles_w(p);
  const int64_t fit = round_down(kImageScratchElems / (kWinogradPoints * std::max<int64_t>(p.Cg, 1)), nr);
  return std::max<int64_t>(nr, std::min({fit, round_up(kWinogradFilterBlockTiles, nr),
                                         round_up(std::max<int64_t>(total, 1), nr)}));
}

inline const char* winograd_filters_why_not(const ConvPlan& p, const Blocking& bl) {
  if (const char* why = winograd_why_not(p, bl)) return why;
  if (!product_at_most({kWinogradPoints, p.Cg, bl.nr}, kImageScratchElems))
    return "too many channels per group: the transformed input of one tile panel exceeds the "
           "per-thread scratch bound";
  return nullptr;
}

template <typename T>
void winograd_forward_filters(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                              const PrepackedGroups<T>& weights) {
  const int threads = threads_for(p.flops() / 4);
  const WinogradExecutor<T> ex(p, e, a, threads);
  const Blocking& bl = e.blocking;
  const int64_t nr = bl.nr, mr = bl.mr, kgp = ex.kgp, u_elems = ex.u_elems;
  const int64_t kcf = winograd_filters_kc(bl);
  const int64_t nbt = winograd_filter_block_tiles(p, bl);
  const int64_t mcf = std::min(winograd_filters_mc(bl), kgp);  // filters of a unit
  const int64_t units = ceil_div(kgp, mcf);
  // A unit's U slices when transformed as they go: point ξ's at ξ·u_pitch, one cache line
  // beyond the slices, so the 36 stores of a vector do not all fall into one L1 set.
  const int64_t u_pitch = mcf * kcf + 64 / int64_t(sizeof(T));
  const bool fused = weights.data == nullptr;  // transform U as it goes, from a.w
  const kernels::WinogradKernels<T>& wk = e.winograd;
  const int64_t pitch = winograd_slice_pitch(mr, kcf, wk.lanes, sizeof(T));
  const bool unit_w = p.xs_w == 1 && p.ys_w == 1;
  T* v = thread_scratch_as<Scratch::Image, T>(kWinogradPoints * p.Cg * nbt,
                                              "the Winograd input tiles");
  std::vector<WinogradTile> tiles(static_cast<std::size_t>(nbt));
  winograd_dispatch(nr, unit_w, [&](auto kNRc, auto kUnitWc) {
    constexpr int kNR = decltype(kNRc)::value;
    constexpr bool kUnitW = decltype(kUnitWc)::value;
    for (int64_t g = 0; g < p.G; ++g) {
      const T* xg = a.x + g * p.Cg * p.xs_c;
      const T* ug = fused ? nullptr : weights.group(g).data;
      const WinogradRaw<T> raw =
          fused ? WinogradRaw<T>{a.w + g * p.Kg * p.ws_k, p.ws_k, p.ws_c, p.ws_r, p.ws_s}
                : WinogradRaw<T>{ug + kWinogradPoints * u_elems, p.Cg * 9, 9, 3, 1};
      for (int64_t t0 = 0; t0 < ex.total; t0 += nbt) {
        const int64_t nt = std::min(nbt, ex.total - t0), nbp = round_up(nt, nr);
        const int64_t qn = ceil_div(nt, nr);
        ex.describe(t0, nt, tiles.data());
        // 1. V of the block: job (tile panel, channel block), panel-major; a block is one
        // channel, or a vector of channels when they are contiguous (NHWC).
        const bool nhwc = !kUnitW && p.xs_c == 1;
        const int64_t cb = nhwc ? wk.lanes : 1;
        const int64_t cbn = ceil_div(p.Cg, cb);
        const int64_t jobs = qn * cbn;
        parallel_run(static_cast<int>(std::min<int64_t>(threads, jobs)), [&](int tid, int nth) {
          T* patch = thread_scratch_as<Scratch::Tile, T>(cb * kWinogradPoints * nr,
                                                         "the Winograd input patches");
          std::vector<int64_t> offs(static_cast<std::size_t>(nhwc ? kWinogradPoints * nr : 0));
          const T zeros[kWinogradMaxLanes] = {};
          int64_t j0, j1;
          static_range(jobs, tid, nth, j0, j1);
          int64_t offs_q = -1;
          for (int64_t j = j0; j < j1; ++j) {
            if ((j & 63) == 0) interrupt_point();
            const int64_t q = j / cbn, c0 = j % cbn * cb;
            const int64_t nch = std::min(cb, p.Cg - c0), lanes = std::min(nr, nt - q * nr);
            if (nhwc) {
              if (offs_q != q) {
                ex.template nhwc_offsets<kNR>(tiles.data() + q * nr, lanes, offs.data());
                offs_q = q;
              }
              ex.template gather_nhwc<kNR>(xg, offs.data(), c0, nch, patch, zeros);
            } else {
              ex.template gather<kNR, kUnitW>(xg + c0 * p.xs_c, tiles.data() + q * nr, lanes,
                                              patch);
            }
            for (int64_t c = c0; c < c0 + nch; ++c) {
              const int64_t pc = c / kcf * kcf, kc = std::min(kcf, p.Cg - pc);
              wk.input_f4x3(patch + (c - c0) * kWinogradPoints * nr,
                            v + kWinogradPoints * pc * nbp + q * nr * kc + (c - pc) * nr,
                            kc * nbp, nr);
            }
          }
        });
        // 2. the filters, mcf at a time (whole MR-panels), each over the whole block.
        parallel_run(static_cast<int>(std::min<int64_t>(threads, units)), [&](int tid, int nth) {
          T* m = thread_scratch_as<Scratch::Tile, T>(
              kWinogradPoints * mcf * nbp + kWinogradMaxLanes * 17 * nr, "the Winograd products");
          T* outp = m + kWinogradPoints * mcf * nbp;
          T* u = nullptr;
          T* taps = nullptr;
          T* buf = nullptr;
          if (fused) {
            u = thread_scratch_as<Scratch::Weights, T>(kWinogradPoints * u_pitch + 45 * pitch,
                                                       "the Winograd weight slices");
            taps = u + kWinogradPoints * u_pitch;
            buf = taps + 9 * pitch;
          }
          const int64_t m_stride = mcf * nbp;
          int64_t j0, j1;
          static_range(units, tid, nth, j0, j1);
          for (int64_t j = j0; j < j1; ++j) {
            interrupt_point();
            const int64_t k0 = j * mcf, rows = std::min(mcf, p.Kg - k0);
            const int64_t rows_p = round_up(rows, mr);
            for (int64_t pc = 0; pc < p.Cg; pc += kcf) {
              const int64_t kc = std::min(kcf, p.Cg - pc);
              const T* ua = nullptr;
              int64_t xi_stride;
              if (fused) {
                for (int64_t i0 = 0; i0 < rows_p; i0 += mr)
                  winograd_transform_slice(p, wk, a.w, g, k0 + i0, mr, pc, kc, u + i0 * kc,
                                           u_pitch, static_cast<T*>(nullptr), taps, buf, pitch);
                ua = u;
                xi_stride = u_pitch;
              } else {
                ua = ug + pc * kgp + k0 * kc;
                xi_stride = u_elems;
              }
              const T* vc = v + kWinogradPoints * pc * nbp;
              for (int64_t xi = 0; xi < kWinogradPoints; ++xi)
                gemm_rect(e, 0, rows, 0, nbp, kc, Prepacked<T>{ua + xi * xi_stride, rows_p},
                          Prepacked<T>{vc + xi * kc * nbp, nbp}, m + xi * m_stride, nbp, pc > 0,
                          NoEpilogue{});
            }
            for (int64_t k = 0; k < rows; k += wk.lanes)
              for (int64_t q = 0; q < qn; ++q)
                ex.template finish<kNR, kUnitW>(m, m_stride, nbp, k, k0 + k,
                                                std::min<int64_t>(wk.lanes, rows - k), q, nt,
                                                tiles.data(), g, xg, raw, outp);
          }
        });
      }
    }
  });
}

}  // namespace convcore::detail
