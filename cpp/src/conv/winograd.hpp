// Winograd F(4×4, 3×3) forward convolution (Lavin & Gray, 2015), for 3×3, stride-1,
// dilation-1 Conv2d layers when the descriptor asks for Algorithm::Winograd.
//
// The output is cut into 4×4 tiles; tile t reads a 6×6 input patch d_t (zero outside the
// image). With U = G·g·Gᵀ per (filter k, channel c) and V = Bᵀ·d·B per (channel, tile),
//   Y[k, t] = Aᵀ·( Σ_c U[k, c] ⊙ V[c, t] )·A,
// and the sum over channels is, per point ξ of the 6×6 transformed tile, one GEMM:
//   M_ξ (Kg × tiles) = U_ξ (Kg × Cg) · V_ξ (Cg × tiles)        (36 GEMMs).
//
// Structure (one parallel region): the tiles of all images are numbered image by image,
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

// Packs every group's U_ξ and weight copy (layout above). One job per (group, MR-panel of
// filters, KC-slab of channels): its filter slices, taken in micro-panel order (channel,
// then filter), are transformed by the engine's winograd weight kernel (in T) straight into
// the 36 micro-panels, one per U_ξ (through a local buffer when the panel is not a whole
// number of vectors).
template <typename T>
void winograd_pack_weights(const ConvPlan& p, const Blocking& bl, const T* w, T* dst) {
  const auto weight_fn = winograd_engine_of<T>(bl).winograd.weight_f4x3;
  const int64_t lanes = winograd_engine_of<T>(bl).winograd.lanes;
  const int64_t mr = bl.mr, kcb = bl.kc;
  const int64_t kgp = round_up(p.Kg, mr);
  const int64_t u_elems = kgp * p.Cg;  // one U_ξ
  const int64_t group_elems = kgp * kWinogradWeightDepthPerChannel * p.Cg;
  const int64_t panels = kgp / mr, slabs = ceil_div(p.Cg, kcb);
  const int64_t jobs = p.G * panels * slabs;
  // Slices of a job, rounded up to whole vectors; rows of the buffers are one cache line
  // apart beyond that, so the 36 stores of a vector do not all fall into one L1 set.
  const int64_t n_max = round_up(kcb * mr, lanes);
  const int64_t pitch = n_max + 64 / int64_t(sizeof(T));
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
      const int64_t run = kc * mr;  // one micro-panel of one U_ξ
      const int64_t n = round_up(run, lanes);
      T* dg = dst + g * group_elems;
      T* raw = dg + kWinogradPoints * u_elems;
      for (int64_t c = pc; c < pc + kc; ++c)
        for (int64_t i = 0; i < mr; ++i) {
          const int64_t k = k0 + i, l = (c - pc) * mr + i;
          if (k >= p.Kg) {  // padding rows of the last panel: zero filters
            for (int t = 0; t < 9; ++t) taps[t * pitch + l] = T(0);
            continue;
          }
          const T* wkc = w + (g * p.Kg + k) * p.ws_k + c * p.ws_c;
          T* rkc = raw + (k * p.Cg + c) * 9;
          for (int r = 0; r < 3; ++r)
            for (int s = 0; s < 3; ++s) {
              const T v = wkc[r * p.ws_r + s * p.ws_s];
              taps[(3 * r + s) * pitch + l] = v;
              rkc[3 * r + s] = v;
            }
        }
      for (int64_t l = run; l < n; ++l)
        for (int t = 0; t < 9; ++t) taps[t * pitch + l] = T(0);
      T* panel0 = dg + pc * kgp + k0 * kc;  // this job's micro-panel of U_0
      if (n == run) {  // whole vectors: straight into the 36 micro-panels
        weight_fn(taps.data(), pitch, panel0, u_elems, n);
      } else {  // the last vector would spill into the next panel: through the buffer
        weight_fn(taps.data(), pitch, buf.data(), pitch, n);
        for (int64_t xi = 0; xi < kWinogradPoints; ++xi)
          std::memcpy(panel0 + xi * u_elems, buf.data() + xi * pitch,
                      sizeof(T) * static_cast<std::size_t>(run));
      }
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

// y at (n, k, oh, ow) by the definition (taps clipped to the image), from the weights as
// given (group g's copy in the packed operand, [k][c][r][s]); x points at group g's channels.
template <typename T>
T winograd_exact_output(const ConvPlan& p, const T* x, const T* raw, int64_t n, int64_t k,
                        int64_t oh, int64_t ow) {
  const int64_t ih0 = oh - p.pad_t, iw0 = ow - p.pad_l;
  int64_t r0, r1, s0, s1;
  valid_taps(ih0, 1, 3, p.H, r0, r1);
  valid_taps(iw0, 1, 3, p.W, s0, s1);
  T acc = T(0);
  for (int64_t c = 0; c < p.Cg; ++c) {
    const T* xc = x + n * p.xs_n + c * p.xs_c;
    const T* wc = raw + (k * p.Cg + c) * 9;
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t s = s0; s < s1; ++s)
        acc += wc[r * 3 + s] * xc[(ih0 + r) * p.xs_h + (iw0 + s) * p.xs_w];
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
             const T* xg, const T* raw) const {
    const int64_t kglob = g * p.Kg + kk;
    T* yk = a.out + kglob * p.ys_c;
    const int64_t sh = p.ys_h, sw = kUnitW ? 1 : p.ys_w;
    constexpr int64_t stride = kNR;
    const T* flags = outp + 16 * stride;
    for (int64_t l = 0; l < lanes; ++l) {
      const WinogradTile& d = tiles[l];
      T* yt = yk + d.y_off;
      const T* src = outp + l;
      if (d.outputs_inside && flags[l] == T(0)) {  // bias and ReLU applied by the kernel
        for (int i = 0; i < 4; ++i) {
          T* row = yt + i * sh;
          row[0] = src[(4 * i) * stride];
          row[sw] = src[(4 * i + 1) * stride];
          row[2 * sw] = src[(4 * i + 2) * stride];
          row[3 * sw] = src[(4 * i + 3) * stride];
        }
        continue;
      }
      const bool exact = !(flags[l] == T(0));
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
  }

  // Unit = (tile block, group), start to finish.
  template <int kNR, bool kUnitW>
  void run_unit(int64_t unit, const PrepackedGroups<T>& weights, T* v, T* patch, T* outp, T* m,
                WinogradTile* tiles) const {
    const int64_t blk = unit / p.G, g = unit % p.G;
    const int64_t t0 = blk * nb, nt = std::min(nb, total - t0);
    const int64_t nbp = round_up(nt, nr);
    describe(t0, nt, tiles);
    const T* xg = a.x + g * p.Cg * p.xs_c;
    const T* ug = weights.group(g).data;
    const T* raw = ug + kWinogradPoints * u_elems;
    const auto input_fn = e.winograd.input_f4x3;
    const auto output_fn = e.winograd.output_f4x3;

    for (int64_t pc = 0; pc < p.Cg; pc += kcb) {
      const int64_t kc = std::min(kcb, p.Cg - pc);
      const int64_t v_stride = kc * nbp;  // between points ξ
      // 1. input transform, panel by panel, channel by channel, into B micro-panels.
      for (int64_t q = 0; q * nr < nt; ++q) {
        const int64_t lanes = std::min(nr, nt - q * nr);
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
    // 3. output transform and store.
    const int64_t m_stride = p.Kg * nbp;
    for (int64_t k = 0; k < p.Kg; ++k) {
      const T* bias = a.bias ? a.bias + g * p.Kg + k : nullptr;
      for (int64_t q = 0; q * nr < nt; ++q) {
        output_fn(m + k * nbp + q * nr, m_stride, outp, nr, bias, a.relu);
        store<kNR, kUnitW>(outp, tiles + q * nr, std::min(nr, nt - q * nr), g, k, xg, raw);
      }
    }
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
    // V (36 chunks of KC × NB), a gathered patch panel (36 × NR), an output panel
    // (17 × NR) and the tile table; M (36 × Kg × NB) in its own slot.
    const int64_t v_elems = kWinogradPoints * kc_max * nb;
    const int64_t table_elems = ceil_div(nb * int64_t(sizeof(WinogradTile)), sizeof(T));
    T* v = thread_scratch_as<Scratch::Image, T>(v_elems + 53 * nr + table_elems,
                                                "the Winograd input tiles");
    T* patch = v + v_elems;
    T* outp = patch + kWinogradPoints * nr;
    auto* tiles = reinterpret_cast<WinogradTile*>(outp + 17 * nr);
    T* m = thread_scratch_as<Scratch::Tile, T>(kWinogradPoints * p.Kg * nb,
                                               "the Winograd products");
    for (int64_t unit = u0; unit < u1; ++unit) {
      interrupt_point();
      winograd_dispatch(nr, unit_w, [&](auto kNR, auto kUnitW) {
        ex.template run_unit<decltype(kNR)::value, decltype(kUnitW)::value>(
            unit, weights, v, patch, outp, m, tiles);
      });
    }
  });
}

}  // namespace convcore::detail
