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
  if (p.kind != OpKind::Conv2d) return "Conv2d layers only (not locally connected)";
  if (p.algorithm != Algorithm::Winograd)
    return "runs only when algorithm='winograd' is asked for (not exact: the default "
           "algorithm never takes it)";
  if (p.R != 3 || p.S != 3) return "3×3 kernels only (F(4×4, 3×3))";
  if (p.sh != 1 || p.sw != 1) return "stride 1 only";
  if (p.dh != 1 || p.dw != 1) return "dilation 1 only";
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

// U = G·g·Gᵀ for one 3×3 filter slice, in double (rounded once to T by the caller).
//   G = | 1/4    0     0   |
//       | -1/6 -1/6  -1/6  |
//       | -1/6  1/6  -1/6  |
//       | 1/24  1/12  1/6  |
//       | 1/24 -1/12  1/6  |
//       |  0     0     1   |
inline void winograd_weight_transform(const double g[3][3], double u[6][6]) {
  static const double G[6][3] = {{1.0 / 4, 0, 0},
                                 {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                 {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                 {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                 {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                 {0, 0, 1}};
  double t[6][3];
  for (int a = 0; a < 6; ++a)
    for (int s = 0; s < 3; ++s) t[a][s] = G[a][0] * g[0][s] + G[a][1] * g[1][s] + G[a][2] * g[2][s];
  for (int a = 0; a < 6; ++a)
    for (int b = 0; b < 6; ++b) u[a][b] = t[a][0] * G[b][0] + t[a][1] * G[b][1] + t[a][2] * G[b][2];
}

template <typename T>
void winograd_pack_weights(const ConvPlan& p, const Blocking& bl, const T* w, T* dst) {
  const int64_t mr = bl.mr, kcb = bl.kc;
  const int64_t kgp = round_up(p.Kg, mr);
  const int64_t u_elems = kgp * p.Cg;  // one U_ξ
  const int64_t group_elems = kgp * kWinogradWeightDepthPerChannel * p.Cg;
  // Rows Kg..Kgp-1 of every U_ξ micro-panel are zero (the last panel of each slab).
  if (p.Kg % mr)
    for (int64_t g = 0; g < p.G; ++g)
      for (int64_t xi = 0; xi < kWinogradPoints; ++xi)
        for (int64_t pc = 0; pc < p.Cg; pc += kcb) {
          const int64_t kc = std::min(kcb, p.Cg - pc);
          T* panel = dst + g * group_elems + xi * u_elems + pc * kgp + (p.Kg / mr * mr) * kc;
          for (int64_t c = 0; c < kc; ++c)
            std::fill(panel + c * mr + p.Kg % mr, panel + (c + 1) * mr, T(0));
        }
  const int64_t jobs = p.G * p.Kg;
  parallel_run(std::max(1, std::min<int>(threads_for(double(jobs) * p.Cg * 400),
                                         int(std::min<int64_t>(jobs, 1 << 20)))),
               [&](int tid, int nt) {
    int64_t j0, j1;
    static_range(jobs, tid, nt, j0, j1);
    for (int64_t j = j0; j < j1; ++j) {
      interrupt_point();
      const int64_t g = j / p.Kg, k = j % p.Kg;
      T* dg = dst + g * group_elems;
      T* raw = dg + kWinogradPoints * u_elems;
      const T* wk = w + (g * p.Kg + k) * p.ws_k;
      for (int64_t c = 0; c < p.Cg; ++c) {
        double gw[3][3], u[6][6];
        for (int r = 0; r < 3; ++r)
          for (int s = 0; s < 3; ++s) {
            const T v = wk[c * p.ws_c + r * p.ws_r + s * p.ws_s];
            gw[r][s] = double(v);
            raw[(k * p.Cg + c) * 9 + r * 3 + s] = v;
          }
        winograd_weight_transform(gw, u);
        const int64_t pc = c / kcb * kcb, kc = std::min(kcb, p.Cg - pc);
        T* at = dg + pc * kgp + (k / mr * mr) * kc + (c - pc) * mr + k % mr;
        for (int a = 0; a < 6; ++a)
          for (int b = 0; b < 6; ++b) at[(6 * a + b) * u_elems] = static_cast<T>(u[a][b]);
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

template <typename T>
void winograd_forward(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                      const PrepackedGroups<T>& weights) {
  const Blocking& bl = e.blocking;
  const int64_t nr = bl.nr, kcb = bl.kc;
  const int64_t th_n = winograd_tiles_h(p), tw_n = winograd_tiles_w(p);
  const int64_t per_image = th_n * tw_n, total = p.N * per_image;
  const int64_t kgp = round_up(p.Kg, bl.mr);
  const int64_t u_elems = kgp * p.Cg;
  int threads = threads_for(p.flops() / 4);
  const int64_t nb = winograd_block_tiles(p, bl, sizeof(T), threads);
  const int64_t blocks = ceil_div(total, nb);
  const int64_t units = blocks * p.G;
  threads = static_cast<int>(std::min<int64_t>(threads, units));
  const auto input_fn = e.winograd.input_f4x3;
  const auto output_fn = e.winograd.output_f4x3;

  parallel_run(threads, [&](int tid, int nthreads) {
    int64_t u0, u1;
    static_range(units, tid, nthreads, u0, u1);
    if (u0 >= u1) return;
    const int64_t kc_max = std::min(kcb, p.Cg);
    // V (36 chunks of KC × NB), then a gathered patch panel (36 × NR) and an output panel
    // (17 × NR); M (36 × Kg × NB) in its own slot.
    const int64_t v_elems = kWinogradPoints * kc_max * nb;
    T* v = thread_scratch_as<Scratch::Image, T>(v_elems + 53 * nr, "the Winograd input tiles");
    T* patch = v + v_elems;
    T* outp = patch + kWinogradPoints * nr;
    T* m = thread_scratch_as<Scratch::Tile, T>(kWinogradPoints * p.Kg * nb,
                                               "the Winograd products");
    // Per tile of the block: image, first output row and column.
    int64_t* geo = thread_scratch_as<Scratch::Offsets, int64_t>(3 * nb, "the tile table");

    for (int64_t unit = u0; unit < u1; ++unit) {
      interrupt_point();
      const int64_t blk = unit / p.G, g = unit % p.G;
      const int64_t t0 = blk * nb, nt = std::min(nb, total - t0);
      const int64_t nbp = round_up(nt, nr);
      for (int64_t t = 0; t < nt; ++t) {
        const int64_t tt = t0 + t, n = tt / per_image, rest = tt % per_image;
        geo[3 * t] = n;
        geo[3 * t + 1] = rest / tw_n * kWinogradTile;
        geo[3 * t + 2] = rest % tw_n * kWinogradTile;
      }
      const T* xg = a.x + g * p.Cg * p.xs_c;
      const T* ug = weights.group(g).data;
      const T* raw = ug + kWinogradPoints * u_elems;

      for (int64_t pc = 0; pc < p.Cg; pc += kcb) {
        const int64_t kc = std::min(kcb, p.Cg - pc);
        const int64_t v_stride = kc * nbp;  // between points ξ
        // 1. input transform, panel by panel, channel by channel.
        for (int64_t q = 0; q * nr < nt; ++q) {
          const int64_t lanes = std::min(nr, nt - q * nr);
          for (int64_t c = pc; c < pc + kc; ++c) {
            for (int64_t l = 0; l < nr; ++l) {
              if (l >= lanes) {
                for (int64_t xi = 0; xi < kWinogradPoints; ++xi) patch[xi * nr + l] = T(0);
                continue;
              }
              const int64_t* tg = geo + 3 * (q * nr + l);
              const int64_t h0 = tg[1] - p.pad_t, w0 = tg[2] - p.pad_l;
              const T* xc = xg + tg[0] * p.xs_n + c * p.xs_c;
              if (h0 >= 0 && w0 >= 0 && h0 + 6 <= p.H && w0 + 6 <= p.W) {
                const T* src = xc + h0 * p.xs_h + w0 * p.xs_w;
                for (int i = 0; i < 6; ++i)
                  for (int j = 0; j < 6; ++j)
                    patch[(6 * i + j) * nr + l] = src[i * p.xs_h + j * p.xs_w];
              } else {
                for (int i = 0; i < 6; ++i)
                  for (int j = 0; j < 6; ++j) {
                    const int64_t h = h0 + i, w = w0 + j;
                    patch[(6 * i + j) * nr + l] =
                        (h >= 0 && h < p.H && w >= 0 && w < p.W) ? xc[h * p.xs_h + w * p.xs_w]
                                                                 : T(0);
                  }
              }
            }
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

      // 3. output transform, bias + ReLU, store (tiles with a non-finite output: exact).
      const int64_t m_stride = p.Kg * nbp;
      for (int64_t k = 0; k < p.Kg; ++k) {
        const int64_t kglob = g * p.Kg + k;
        const T bias = a.bias ? a.bias[kglob] : T(0);
        T* yk = a.out + kglob * p.ys_c;
        for (int64_t q = 0; q * nr < nt; ++q) {
          const int64_t lanes = std::min(nr, nt - q * nr);
          output_fn(m + k * nbp + q * nr, m_stride, outp, nr);
          for (int64_t l = 0; l < lanes; ++l) {
            const int64_t* tg = geo + 3 * (q * nr + l);
            const int64_t n = tg[0], oh0 = tg[1], ow0 = tg[2];
            const int64_t rows = std::min(kWinogradTile, p.Ho - oh0);
            const int64_t cols = std::min(kWinogradTile, p.Wo - ow0);
            T* yt = yk + n * p.ys_n + oh0 * p.ys_h + ow0 * p.ys_w;
            const bool exact = !(outp[16 * nr + l] == T(0));
            for (int64_t i = 0; i < rows; ++i)
              for (int64_t j = 0; j < cols; ++j) {
                T val = exact ? winograd_exact_output(p, xg, raw, n, k, oh0 + i, ow0 + j)
                              : outp[(4 * i + j) * nr + l];
                if (a.bias) val += bias;
                if (a.relu) val = val < T(0) ? T(0) : val;
                yt[i * p.ys_h + j * p.ys_w] = val;
              }
          }
        }
      }
    }
  });
}

}  // namespace convcore::detail
