// The locally-connected layer (OpKind::LocallyConnected2d): every output position p has its
// own K × (C·R·S) filters. Each pass is a batch of small GEMMs, one per output position, run
// by the blocked driver with the engine's microkernels inside one parallel region (per
// chunk of images):
//
//   forward          Y[p] (K × N)        = W[p] (K × CRS) · patches[p] (CRS × N)   (+ bias[p])
//   backward-data    dpatch[p] (CRS × N) = W[p]ᵀ (CRS × K) · dY[p] (K × N), added into dx
//   backward-weight  dW[p] (K × CRS)     = dY[p] (K × N) · patches[p]ᵀ (N × CRS)
//
// The preferred entries ("per_position_gemm") work on the input (or dx) transposed to
// [element][image] per thread band, so a tap's row of the patch matrix is contiguous; the
// "gather"/"scatter" entries read x and write dx directly and apply to any size. Forward
// and backward-weight give each thread a contiguous range of positions, which it owns (its
// y columns, its dW[p]); backward-data's positions overlap in dx, so each thread owns rows
// of dx (or images / channels in the scatter entry) and visits every position in order:
// every element is accumulated in the same order for any thread count. docs/design.md §3
// lists the entries.
#include <algorithm>
#include <cstring>
#include <vector>

#include "implementation.hpp"
#include "../gemm/pack.hpp"

namespace convcore::detail {
namespace {

// Largest batch chunk one GEMM covers (bounds the per-thread C buffers).
constexpr int64_t kLcBatchChunk = 256;

// Offsets (within one image) of the taps of output position (oh, ow), -1 for a padding tap.
// Tap order: the weight layout's (NCHW: c, r, s; NHWC: r, s, c), or c-major (c, r, s)
// whatever the layout when c_major.
void position_offsets(const ConvPlan& p, int64_t oh, int64_t ow, bool c_major, int64_t* off) {
  const int64_t h0 = oh * p.sh - p.pad_t, w0 = ow * p.sw - p.pad_l;
  const bool cfirst = c_major || p.nchw();
  for (int64_t c = 0; c < p.C; ++c)
    for (int64_t r = 0; r < p.R; ++r) {
      const int64_t h = h0 + r;
      const bool hin = h >= 0 && h < p.H;
      for (int64_t s = 0; s < p.S; ++s) {
        const int64_t w = w0 + s;
        const int64_t idx = cfirst ? (c * p.R + r) * p.S + s : (r * p.S + s) * p.C + c;
        off[idx] = hin && w >= 0 && w < p.W ? c * p.xs_c + h * p.xs_h + w * p.xs_w : -1;
      }
    }
}

// Whether output position (oh, ow) has a tap in the padding (no dilation here).
inline bool position_reads_padding(const ConvPlan& p, int64_t oh, int64_t ow) {
  const int64_t h0 = oh * p.sh - p.pad_t, w0 = ow * p.sw - p.pad_l;
  return h0 < 0 || h0 + p.R > p.H || w0 < 0 || w0 + p.S > p.W;
}

// The transposed input of the "per_position_gemm" entries. Each thread transposes the
// band of input rows its output positions read, hb0 <= h < hb1, for a chunk of nb images
// (nb a multiple of NR): xt[e][n], e an element's offset within the band in the layout's
// order (NCHW: c, h − hb0, w; NHWC: h − hb0, w, c), columns past the chunk zero, plus one
// zero row after the band for the padding taps. Every tap's row of the patch matrix is
// then nb contiguous values: packing is a copy (or nothing: the offset-B microkernel reads
// it in place), with no branch and no per-image stride. The bands of neighbouring threads
// overlap by the kernel's halo (transposed twice, into each thread's own buffer), so a
// pass needs no barrier: one parallel region. Backward-data uses the same layout for dx.
struct Band {
  int64_t hb0 = 0, hb1 = 0;      // input rows [hb0, hb1)
  int64_t bc = 0, bh = 0, bw = 0;  // element strides within the band
  int64_t rows = 0;              // elements of one image in the band (the zero row's index)
};

inline Band make_band(const ConvPlan& p, int64_t hb0, int64_t hb1) {
  Band b;
  if (hb1 <= hb0) hb0 = hb1 = 0;
  b.hb0 = hb0;
  b.hb1 = hb1;
  const int64_t bhgt = hb1 - hb0;
  if (p.nchw()) {
    b.bw = 1; b.bh = p.W; b.bc = bhgt * p.W;
  } else {
    b.bc = 1; b.bw = p.C; b.bh = p.W * p.C;
  }
  b.rows = p.C * bhgt * p.W;
  return b;
}

// The input rows read by output positions [q0, q1).
inline Band band_of_positions(const ConvPlan& p, int64_t q0, int64_t q1) {
  const int64_t oa = q0 / p.Wo, ob = (q1 - 1) / p.Wo;
  return make_band(p, std::max<int64_t>(0, oa * p.sh - p.pad_t),
                   std::min<int64_t>(p.H, ob * p.sh - p.pad_t + p.R));
}

// Images per chunk, or 0 when a whole image's transposition for NR images does not fit
// the image scratch.
inline int64_t transposed_chunk(const ConvPlan& p, int nr) {
  const int64_t rows = p.C * p.H * p.W + 1;
  if (!product_at_most({rows, nr}, kImageScratchElems)) return 0;
  const int64_t fit = kImageScratchElems / rows / nr * nr;
  return std::min(fit, round_up(std::max<int64_t>(p.N, 1), nr));
}

// Rows of the transposition moved as one block (reads along a row, writes in L1).
constexpr int64_t kTransposeBlock = 64;

// Calls run(x_offset, band_offset, length) for the runs of the band that are contiguous in
// an image: one per channel in NCHW, one in NHWC.
template <typename Run>
void band_runs(const ConvPlan& p, const Band& b, const Run& run) {
  const int64_t bhgt = b.hb1 - b.hb0;
  if (bhgt == 0) return;
  if (p.nchw()) {
    for (int64_t c = 0; c < p.C; ++c) run(c * p.xs_c + b.hb0 * p.xs_h, c * b.bc, bhgt * p.W);
  } else {
    run(b.hb0 * p.xs_h, int64_t(0), b.rows);
  }
}

// xt[e][j] = x[n0 + j][band element e] for j < nn, 0 for nn <= j < nb; then the zero row.
template <typename T>
void transpose_band_in(const ConvPlan& p, const Band& b, const T* x, int64_t n0, int64_t nn,
                       int64_t nb, T* xt) {
  band_runs(p, b, [&](int64_t xo, int64_t bo, int64_t len) {
    for (int64_t e0 = 0; e0 < len; e0 += kTransposeBlock) {
      interrupt_point();
      const int64_t e1 = std::min(len, e0 + kTransposeBlock);
      T* dst = xt + (bo + e0) * nb;
      for (int64_t j = 0; j < nn; ++j) {
        const T* __restrict src = x + (n0 + j) * p.xs_n + xo + e0;
        for (int64_t e = 0; e < e1 - e0; ++e) dst[e * nb + j] = src[e];
      }
      if (nn < nb)
        for (int64_t e = 0; e < e1 - e0; ++e) std::fill(dst + e * nb + nn, dst + e * nb + nb, T(0));
    }
  });
  std::fill(xt + b.rows * nb, xt + (b.rows + 1) * nb, T(0));
}

// dx[n0 + j][band element e] = dxt[e][j] for j < nn.
template <typename T>
void transpose_band_out(const ConvPlan& p, const Band& b, const T* dxt, int64_t n0, int64_t nn,
                        int64_t nb, T* dx) {
  band_runs(p, b, [&](int64_t xo, int64_t bo, int64_t len) {
    for (int64_t e0 = 0; e0 < len; e0 += kTransposeBlock) {
      interrupt_point();
      const int64_t e1 = std::min(len, e0 + kTransposeBlock);
      const T* src = dxt + (bo + e0) * nb;
      for (int64_t j = 0; j < nn; ++j) {
        T* __restrict dst = dx + (n0 + j) * p.xs_n + xo + e0;
        for (int64_t e = 0; e < e1 - e0; ++e) dst[e] = src[e * nb + j];
      }
    }
  });
}

// tap_base[j]: tap j's offset in the band from the patch's corner, in the weight layout's
// tap order.
void band_tap_base(const ConvPlan& p, const Band& b, int64_t nb, int64_t* tap_base) {
  for (int64_t c = 0; c < p.C; ++c)
    for (int64_t r = 0; r < p.R; ++r)
      for (int64_t s = 0; s < p.S; ++s) {
        const int64_t idx = p.nchw() ? (c * p.R + r) * p.S + s : (r * p.S + s) * p.C + c;
        tap_base[idx] = (c * b.bc + r * b.bh + s * b.bw) * nb;
      }
}

// Offsets of the taps of output position (oh, ow) in the band, in the weight layout's tap
// order; padding taps read the zero row.
void band_offsets(const ConvPlan& p, const Band& b, int64_t oh, int64_t ow, int64_t nb,
                  const int64_t* tap_base, int64_t* off) {
  const int64_t h0 = oh * p.sh - p.pad_t, w0 = ow * p.sw - p.pad_l;
  const int64_t CRS = p.C * p.R * p.S, zero = b.rows * nb;
  if (h0 >= 0 && h0 + p.R <= p.H && w0 >= 0 && w0 + p.S <= p.W) {  // interior: no padding
    const int64_t corner = ((h0 - b.hb0) * b.bh + w0 * b.bw) * nb;
    for (int64_t j = 0; j < CRS; ++j) off[j] = tap_base[j] + corner;
    return;
  }
  for (int64_t c = 0; c < p.C; ++c)
    for (int64_t r = 0; r < p.R; ++r) {
      const int64_t h = h0 + r;
      const bool hin = h >= 0 && h < p.H;
      for (int64_t s = 0; s < p.S; ++s) {
        const int64_t w = w0 + s;
        const int64_t idx = p.nchw() ? (c * p.R + r) * p.S + s : (r * p.S + s) * p.C + c;
        off[idx] = hin && w >= 0 && w < p.W
                       ? (c * b.bc + (h - b.hb0) * b.bh + w * b.bw) * nb
                       : zero;
      }
    }
}

// B = patches, images × taps, from the transposed input: B(n, j) = xt[off[j] + n].
template <typename T>
struct TransposedPackBT {
  const T* xt;
  const int64_t* off;
  void operator()(T* dst, int64_t p0, int64_t kc, int64_t j0, int64_t nc, int nr) const {
    for (int64_t jb = 0; jb < nc; jb += nr) {
      const int64_t n = std::min<int64_t>(nr, nc - jb);
      T* d = dst + jb * kc;
      for (int64_t j = 0; j < n; ++j) {
        const T* __restrict src = xt + off[j0 + jb + j] + p0;
        for (int64_t q = 0; q < kc; ++q) d[q * nr + j] = src[q];
      }
      zero_panel_tail(d, kc, n, nr);
    }
  }
};

// B = patches, taps × images: B(j, n) = x[n·xs_n + off[j]] (0 for padding).
template <typename T>
struct PatchPackB {
  const T* x;
  const int64_t* off;
  int64_t xs_n;
  void operator()(T* dst, int64_t p0, int64_t kc, int64_t j0, int64_t nc, int nr) const {
    for (int64_t jb = 0; jb < nc; jb += nr) {
      const int64_t n = std::min<int64_t>(nr, nc - jb);
      T* d = dst + jb * kc;
      for (int64_t j = 0; j < n; ++j) {
        const T* src = x + (j0 + jb + j) * xs_n;
        for (int64_t q = 0; q < kc; ++q) {
          const int64_t o = off[p0 + q];
          d[q * nr + j] = o < 0 ? T(0) : src[o];
        }
      }
      zero_panel_tail(d, kc, n, nr);
    }
  }
};

// B = patches, images × taps: B(n, j) = x[n·xs_n + off[j]] (0 for padding).
template <typename T>
struct PatchPackBT {
  const T* x;
  const int64_t* off;
  int64_t xs_n;
  void operator()(T* dst, int64_t p0, int64_t kc, int64_t j0, int64_t nc, int nr) const {
    for (int64_t jb = 0; jb < nc; jb += nr) {
      const int64_t n = std::min<int64_t>(nr, nc - jb);
      const int64_t* o = off + j0 + jb;
      T* d = dst + jb * kc;
      for (int64_t q = 0; q < kc; ++q) {
        const T* src = x + (p0 + q) * xs_n;
        T* dq = d + q * nr;
        for (int64_t j = 0; j < n; ++j) dq[j] = o[j] < 0 ? T(0) : src[o[j]];
        for (int64_t j = n; j < nr; ++j) dq[j] = T(0);
      }
    }
  }
};

// B = W[p] for backward-data, K × CRS with columns in c-major tap order, from the weights
// of one position in the layout's order; columns start at j_base.
template <typename T>
struct LcWeightPackB {
  const T* w;  // W[p]: K rows of CRS
  int64_t CRS, C, RS, j_base;
  bool nhwc;
  void operator()(T* dst, int64_t p0, int64_t kc, int64_t j0, int64_t nc, int nr) const {
    for (int64_t jb = 0; jb < nc; jb += nr) {
      const int64_t n = std::min<int64_t>(nr, nc - jb);
      T* d = dst + jb * kc;
      for (int64_t j = 0; j < n; ++j) {
        const int64_t jj = j_base + j0 + jb + j;
        const int64_t native = nhwc ? (jj % RS) * C + jj / RS : jj;
        const T* src = w + p0 * CRS + native;
        for (int64_t q = 0; q < kc; ++q) d[q * nr + j] = src[q * CRS];
      }
      zero_panel_tail(d, kc, n, nr);
    }
  }
};

// A prepacked operand read from column `shift` on (a multiple of NR).
template <typename T>
struct ShiftedPrepacked {
  static constexpr bool kPrepacked = true;
  Prepacked<T> inner;
  int64_t shift;
  const T* block(int64_t x, int64_t pc, int64_t kc) const { return inner.block(x + shift, pc, kc); }
};

// Forward epilogue: C(k, n) of one position → y[n][k][p] + bias, ReLU.
template <typename T>
struct LcStore {
  static constexpr bool kActive = true;
  T* y;            // y at image n0, position p
  const T* bias;   // bias of channel 0 at position p, or null
  int64_t ys_n, ys_c, bias_k;
  bool relu;
  void operator()(T* c, int64_t ldc, int64_t i, int64_t j, int64_t m, int64_t n) const {
    for (int64_t ii = 0; ii < m; ++ii) {
      const int64_t k = i + ii;
      const T b = bias ? bias[k * bias_k] : T(0);
      T* yk = y + k * ys_c + j * ys_n;
      const T* ck = c + ii * ldc;
      for (int64_t jj = 0; jj < n; ++jj) {
        T v = ck[jj] + b;
        if (relu && v < T(0)) v = T(0);
        yk[jj * ys_n] = v;
      }
    }
  }
};

// Backward-data epilogue: dpatch(n, j) scattered into dx for the owned columns.
template <typename T>
struct LcScatter {
  static constexpr bool kActive = true;
  T* dx;               // dx at image n0
  const int64_t* off;  // c-major offsets of this position
  int64_t xs_n, j_base, j_own;  // column j of C is tap j_base + j; taps < j_own are not ours
  void operator()(T* c, int64_t ldc, int64_t i, int64_t j, int64_t m, int64_t n) const {
    for (int64_t ii = 0; ii < m; ++ii) {
      T* dxn = dx + (i + ii) * xs_n;
      const T* ci = c + ii * ldc;
      for (int64_t jj = 0; jj < n; ++jj) {
        const int64_t tap = j_base + j + jj;
        const int64_t o = off[tap];
        if (o >= 0 && tap >= j_own) dxn[o] += ci[jj];
      }
    }
  }
};

// Calls pack_one(pos) for every output position, positions split across threads (each
// position's weights packed by one thread): the weight packing of every entry of the kind.
template <typename PackOne>
void pack_each_position(const ConvPlan& p, int64_t elems, PackOne&& pack_one) {
  const int64_t P = p.P();
  const int nt = std::max(1, std::min<int>(threads_for(double(P) * elems * 8),
                                           int(std::min<int64_t>(P, 1 << 20))));
  parallel_run(nt, [&](int tid, int nth) {
    int64_t p0, p1;
    static_range(P, tid, nth, p0, p1);
    for (int64_t pos = p0; pos < p1; ++pos) {
      interrupt_point();
      pack_one(pos);
    }
  });
}

// Forward's weights: per position, W[p] as an A operand, K rows, CRS deep.
struct LcForwardWeights {
  static WeightPacking weight_packing(const ConvPlan& p) {
    return WeightPacking{true, p.K, p.C * p.R * p.S};
  }
  template <typename T>
  static void pack_weights(const ConvPlan& p, const Blocking& bl, const T* w, T* dst) {
    const int64_t elems = weight_packing(p).group_elems(bl);
    pack_each_position(p, elems,
                       [&](int64_t pos) { pack_position(p, bl, w, pos, dst + pos * elems); });
  }

  // Packs position pos's weights (K × CRS row-major at w + pos·K·CRS) as an A operand into
  // dst. A padding tap's column is packed as 0: it multiplies a padding zero, so its weight
  // is not part of the result, and an Inf or NaN there would otherwise give 0·Inf = NaN.
  template <typename T>
  static void pack_position(const ConvPlan& p, const Blocking& bl, const T* w, int64_t pos,
                            T* dst) {
    const int64_t CRS = p.C * p.R * p.S;
    const int64_t padded = weight_packing(p).padded(bl);
    const MatrixPackA<T> pack{w + pos * p.K * CRS, CRS, 1};
    for (int64_t pc = 0; pc < CRS; pc += bl.kc)
      pack(dst + pc * padded, 0, p.K, pc, std::min<int64_t>(bl.kc, CRS - pc), bl.mr);
    const int64_t oh = pos / p.Wo, ow = pos % p.Wo;
    if (!position_reads_padding(p, oh, ow)) return;
    const int64_t h0 = oh * p.sh - p.pad_t, w0 = ow * p.sw - p.pad_l;
    for (int64_t r = 0; r < p.R; ++r)
      for (int64_t s = 0; s < p.S; ++s) {
        const int64_t h = h0 + r, wc = w0 + s;
        if (h >= 0 && h < p.H && wc >= 0 && wc < p.W) continue;
        for (int64_t c = 0; c < p.C; ++c) {
          // Column j of the packed operand: row panel ib at pc·padded + ib·kcb, then
          // column j − pc at (j − pc)·MR.
          const int64_t j = p.nchw() ? (c * p.R + r) * p.S + s : (r * p.S + s) * p.C + c;
          const int64_t pc = j / bl.kc * bl.kc, kcb = std::min<int64_t>(bl.kc, CRS - pc);
          T* col = dst + pc * padded + (j - pc) * bl.mr;
          for (int64_t ib = 0; ib < padded; ib += bl.mr)
            std::fill(col + ib * kcb, col + ib * kcb + bl.mr, T(0));
        }
      }
  }

  // Y[p] for images [n0, n0 + nn) of every position in one parallel region; pack_b_for(off)
  // gives the B packer of a position's tap offsets, offsets_of(oh, ow, off) fills them.
  template <typename T, typename OffsetsOf, typename PackBFor>
  static void positions(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                        const PrepackedGroups<T>& weights, int64_t n0, int64_t nn, int nt,
                        const OffsetsOf& offsets_of, const PackBFor& pack_b_for) {
    const int64_t CRS = p.C * p.R * p.S, P = p.P(), K = p.K;
    parallel_run(nt, [&](int tid, int nth) {
      int64_t q0, q1;
      static_range(P, tid, nth, q0, q1);
      if (q0 >= q1) return;
      int64_t* off = thread_scratch_as<Scratch::Offsets, int64_t>(CRS, "the tap offsets");
      T* cbuf = thread_scratch_as<Scratch::Tile, T>(checked_mul(K, nn, "the output block"),
                                                    "the output block");
      for (int64_t pos = q0; pos < q1; ++pos) {
        const int64_t oh = pos / p.Wo, ow = pos % p.Wo;
        offsets_of(oh, ow, off);
        const int64_t y_pos = oh * p.ys_h + ow * p.ys_w;
        // bias: NCHW (K, Ho, Wo), NHWC (Ho, Wo, K)
        const T* bias = a.bias ? a.bias + (p.nchw() ? pos : pos * K) : nullptr;
        const LcStore<T> epi{a.out + n0 * p.ys_n + y_pos, bias, p.ys_n, p.ys_c,
                             p.nchw() ? P : 1, a.relu};
        const auto pack_b = pack_b_for(off);
        gemm_rect(e, 0, K, 0, nn, CRS, weights.group(pos), pack_b, cbuf, nn, false, epi);
      }
    });
  }
};

inline int lc_threads(const ConvPlan& p, int64_t owners) {
  return std::max(1, std::min<int>(threads_for(p.flops()), int(std::min<int64_t>(owners, 1 << 20))));
}

// One output position's patches, as the transposed-input executors see them: images
// [n0, n0 + nn) of the current chunk, the thread's band of the input transposed to
// element × image (xt), and each tap's row of the patch matrix at xt + off[tap].
template <typename T>
struct PositionPatches {
  int64_t pos, n0, nn, y_pos;  // y_pos: the position's offset in an output image
  const T* xt;
  const int64_t* off;
};

// Runs body(PositionPatches) for every output position, images in chunks of
// transposed_chunk(), positions split across threads (each position owned by one thread, so
// the order of every sum is fixed), each thread transposing the band of input rows its
// positions read into its own scratch once per chunk.
template <typename T, typename Body>
void for_each_position_transposed(const ConvPlan& p, const GemmEngine<T>& e, const T* x,
                                  Body&& body) {
  const int64_t CRS = p.C * p.R * p.S, P = p.P();
  const int64_t nb = transposed_chunk(p, e.blocking.nr);
  const int nt = lc_threads(p, P);
  for (int64_t n0 = 0; n0 < p.N; n0 += nb) {
    const int64_t nn = std::min<int64_t>(nb, p.N - n0);
    parallel_run(nt, [&](int tid, int nth) {
      int64_t q0, q1;
      static_range(P, tid, nth, q0, q1);
      if (q0 >= q1) return;
      const Band band = band_of_positions(p, q0, q1);
      T* xt = thread_scratch_as<Scratch::Image, T>(
          checked_mul(band.rows + 1, nb, "the transposed input"), "the transposed input");
      transpose_band_in(p, band, x, n0, nn, nb, xt);
      int64_t* off = thread_scratch_as<Scratch::Offsets, int64_t>(
          checked_mul(CRS, 2, "the tap offsets"), "the tap offsets");
      int64_t* tap_base = off + CRS;
      band_tap_base(p, band, nb, tap_base);
      for (int64_t pos = q0; pos < q1; ++pos) {
        const int64_t oh = pos / p.Wo, ow = pos % p.Wo;
        band_offsets(p, band, oh, ow, nb, tap_base, off);
        body(PositionPatches<T>{pos, n0, nn, oh * p.ys_h + ow * p.ys_w, xt, off});
      }
    });
  }
}

// Forward from the transposed input band (preferred): B read in place by the offset-B
// microkernel, one parallel region per chunk of images.
struct LcForward : LcForwardWeights, AlwaysPreferred {
  static constexpr const char* kName = "per_position_gemm";
  // A functional call (no prepacked weights) packs each position's weights right before
  // its GEMM, into the thread's A scratch (gemm_rect_offset_b does not use it): one read of
  // the weights instead of a packed copy written and read back.
  static WeightPacking weight_packing(const ConvPlan& p) {
    WeightPacking wp = LcForwardWeights::weight_packing(p);
    wp.as_it_goes = true;
    return wp;
  }
  static const char* why_not(const ConvPlan& p, const Blocking& bl) {
    return transposed_chunk(p, bl.nr) == 0
               ? "the input transposed for NR images exceeds the image scratch"
               : nullptr;
  }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>& weights) {
    const int64_t CRS = p.C * p.R * p.S, P = p.P(), K = p.K;
    for_each_position_transposed(p, e, a.x, [&](const PositionPatches<T>& pp) {
      // bias: NCHW (K, Ho, Wo), NHWC (Ho, Wo, K)
      const T* bias = a.bias ? a.bias + (p.nchw() ? pp.pos : pp.pos * K) : nullptr;
      const LcStore<T> epi{a.out + pp.n0 * p.ys_n + pp.y_pos, bias, p.ys_n, p.ys_c,
                           p.nchw() ? P : 1, a.relu};
      Prepacked<T> w_pos;
      if (weights.data) {
        w_pos = weights.group(pp.pos);
      } else {
        T* dst = thread_scratch_as<Scratch::PackA, T>(weights.group_elems, "a position's weights");
        pack_position(p, e.blocking, a.w, pp.pos, dst);
        w_pos = Prepacked<T>{dst, weights.padded};
      }
      gemm_rect_offset_b(e, 0, K, 0, pp.nn, CRS, w_pos, pp.xt, pp.off, epi);
    });
  }
};

// Forward gathering each patch straight from x (any size).
struct LcForwardGather : LcForwardWeights, AlwaysPreferred {
  static constexpr const char* kName = "per_position_gather";
  static const char* why_not(const ConvPlan&, const Blocking&) { return nullptr; }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>& weights) {
    const int64_t chunk = std::min<int64_t>(p.N, kLcBatchChunk);
    const int nt = lc_threads(p, p.P());
    for (int64_t n0 = 0; n0 < p.N; n0 += chunk) {
      const int64_t nn = std::min<int64_t>(chunk, p.N - n0);
      positions(p, e, a, weights, n0, nn, nt,
                [&](int64_t oh, int64_t ow, int64_t* off) { position_offsets(p, oh, ow, false, off); },
                [&](const int64_t* off) { return PatchPackB<T>{a.x + n0 * p.xs_n, off, p.xs_n}; });
    }
  }
};

// A = W[p]ᵀ for the transposed backward-data: CRS rows in (r, s, c) order (so the taps of
// a band of kernel rows are contiguous rows), K deep; rows start at i_base.
template <typename T>
struct LcWeightTPackA {
  const T* w;  // W[p]: K rows of CRS in the weight layout's order
  int64_t CRS, C, R, S, i_base;
  bool nchw;
  void operator()(T* dst, int64_t i0, int64_t mc, int64_t p0, int64_t kc, int mr) const {
    int64_t native[kMaxTile];
    for (int64_t ib = 0; ib < mc; ib += mr) {
      const int64_t m = std::min<int64_t>(mr, mc - ib);
      T* d = dst + ib * kc;
      for (int64_t i = 0; i < m; ++i) {
        const int64_t j = i_base + i0 + ib + i;  // (r, s, c)
        const int64_t c = j % C, rs = j / C;
        native[i] = nchw ? c * R * S + rs : j;
      }
      // Row by row of W[p]: reads stay in one row, writes are contiguous.
      for (int64_t q = 0; q < kc; ++q) {
        const T* __restrict row = w + (p0 + q) * CRS;
        T* __restrict dq = d + q * mr;
        for (int64_t i = 0; i < m; ++i) dq[i] = row[native[i]];
        for (int64_t i = m; i < mr; ++i) dq[i] = T(0);
      }
    }
  }
};

// Backward-data epilogue into the transposed dx: row i of C is tap i_base + i, its nn
// images contiguous at dxt + off[tap]; taps below i_own (another band's) and padding taps
// are skipped.
template <typename T>
struct LcScatterT {
  static constexpr bool kActive = true;
  T* dxt;
  const int64_t* off;
  int64_t i_base, i_own;
  void operator()(T* c, int64_t ldc, int64_t i, int64_t j, int64_t m, int64_t n) const {
    for (int64_t ii = 0; ii < m; ++ii) {
      const int64_t tap = i_base + i + ii;
      if (tap < i_own) continue;
      const int64_t o = off[tap];
      if (o < 0) continue;
      T* __restrict d = dxt + o + j;
      const T* __restrict ci = c + ii * ldc;
      for (int64_t jj = 0; jj < n; ++jj) d[jj] += ci[jj];
    }
  }
};

// Backward-data into dx transposed to [c][h][w][n] per chunk of images (preferred):
// dpatch[p]ᵀ (CRS × N) = W[p]ᵀ · dY[p], each tap's row added to nb contiguous values.
// Threads own bands of input rows: for each output position a thread computes only the
// kernel rows that land in its band (whole MR panels, so a few rows more) and adds only
// those. Every dxt element is summed over positions in order, whatever the thread count.
struct LcBackwardDataT {
  static constexpr const char* kName = "per_position_gemm";
  static const char* why_not(const ConvPlan& p, const Blocking& bl) {
    return transposed_chunk(p, bl.nr) == 0
               ? "dx transposed for NR images exceeds the image scratch"
               : nullptr;
  }
  static const char* declines(const ConvPlan&, const Blocking&) { return nullptr; }
  static WeightPacking weight_packing(const ConvPlan& p) {
    return WeightPacking{true, p.C * p.R * p.S, p.K};
  }
  template <typename T>
  static void pack_weights(const ConvPlan& p, const Blocking& bl, const T* w, T* dst) {
    const int64_t CRS = p.C * p.R * p.S;
    const WeightPacking wp = weight_packing(p);
    const int64_t padded = wp.padded(bl), elems = wp.group_elems(bl);
    pack_each_position(p, elems, [&](int64_t pos) {
      const LcWeightTPackA<T> pack{w + pos * p.K * CRS, CRS, p.C, p.R, p.S, 0, p.nchw()};
      T* out = dst + pos * elems;
      for (int64_t pc = 0; pc < p.K; pc += bl.kc)
        pack(out + pc * padded, 0, CRS, pc, std::min<int64_t>(bl.kc, p.K - pc), bl.mr);
    });
  }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>& weights) {
    const int64_t CRS = p.C * p.R * p.S, SC = p.S * p.C, K = p.K;
    const int mr = e.blocking.mr;
    const int64_t nb = transposed_chunk(p, e.blocking.nr);
    const int nt = lc_threads(p, p.H);
    for (int64_t n0 = 0; n0 < p.N; n0 += nb) {
      const int64_t nn = std::min<int64_t>(nb, p.N - n0);
      parallel_run(nt, [&](int tid, int nth) {
        int64_t h0, h1;
        static_range(p.H, tid, nth, h0, h1);
        if (h0 >= h1) return;
        // This thread's band of dx, transposed, in its own buffer: zeroed, accumulated over
        // every position in order, then transposed into dx (rows no other thread writes).
        const Band band = make_band(p, h0, h1);
        T* dxt = thread_scratch_as<Scratch::Image, T>(checked_mul(band.rows, nb, "dx transposed"),
                                                      "dx transposed");
        std::memset(dxt, 0, sizeof(T) * size_t(band.rows * nb));
        int64_t* off = thread_scratch_as<Scratch::Offsets, int64_t>(CRS, "the tap offsets");
        T* cbuf = thread_scratch_as<Scratch::Tile, T>(checked_mul(round_up(CRS, mr), nn, "the patch block"),
                                                      "the patch block");
        for (int64_t oh = 0; oh < p.Ho; ++oh) {
          const int64_t hs = oh * p.sh - p.pad_t;
          const int64_t r_lo = std::max<int64_t>(0, h0 - hs), r_hi = std::min<int64_t>(p.R, h1 - hs);
          if (r_lo >= r_hi) continue;
          const int64_t i_own = r_lo * SC, i_hi = r_hi * SC, i_lo = i_own / mr * mr;
          for (int64_t ow = 0; ow < p.Wo; ++ow) {
            const int64_t pos = oh * p.Wo + ow, ws = ow * p.sw - p.pad_l;
            for (int64_t r = r_lo; r < r_hi; ++r)
              for (int64_t s = 0; s < p.S; ++s) {
                const int64_t w = ws + s;
                const bool in = w >= 0 && w < p.W;
                const int64_t base = ((hs + r - h0) * band.bh + w * band.bw) * nb;
                for (int64_t c = 0; c < p.C; ++c)
                  off[(r * p.S + s) * p.C + c] = in ? c * band.bc * nb + base : -1;
              }
            const MatrixPackB<T> pack_b{a.dy + n0 * p.ys_n + oh * p.ys_h + ow * p.ys_w, p.ys_c, p.ys_n};
            const LcScatterT<T> epi{dxt, off, i_lo, i_own};
            gemm_rect(e, 0, i_hi - i_lo, 0, nn, K, ShiftedPrepacked<T>{weights.group(pos), i_lo},
                      pack_b, cbuf, nn, false, epi);
          }
        }
        transpose_band_out(p, band, dxt, n0, nn, nb, a.out);
      });
    }
  }
};

// Backward-data scattering straight into dx (any size).
struct LcBackwardData {
  static constexpr const char* kName = "per_position_scatter";
  static const char* why_not(const ConvPlan&, const Blocking&) { return nullptr; }
  static const char* declines(const ConvPlan&, const Blocking&) { return nullptr; }
  // Per position: W[p] as a B operand, CRS columns (c-major taps), K deep.
  static WeightPacking weight_packing(const ConvPlan& p) {
    return WeightPacking{false, p.C * p.R * p.S, p.K};
  }
  template <typename T>
  static void pack_weights(const ConvPlan& p, const Blocking& bl, const T* w, T* dst) {
    const int64_t CRS = p.C * p.R * p.S;
    const WeightPacking wp = weight_packing(p);
    const int64_t padded = wp.padded(bl), elems = wp.group_elems(bl);
    pack_each_position(p, elems, [&](int64_t pos) {
      const LcWeightPackB<T> pack{w + pos * p.K * CRS, CRS, p.C, p.R * p.S, 0, !p.nchw()};
      T* out = dst + pos * elems;
      for (int64_t pc = 0; pc < p.K; pc += bl.kc)
        pack(out + pc * padded, pc, std::min<int64_t>(bl.kc, p.K - pc), 0, CRS, bl.nr);
    });
  }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>& weights) {
    const int64_t RS = p.R * p.S, CRS = p.C * RS, P = p.P(), N = p.N, K = p.K;
    const int nr = e.blocking.nr;
    const int want = threads_for(p.flops());
    // Owners: whole images when the batch allows, else whole input channels.
    const bool by_images = N >= want || p.C < 2;
    const int nt = std::max(1, std::min<int>(want, int(std::min<int64_t>(by_images ? N : p.C, 1 << 20))));
    parallel_run(nt, [&](int tid, int nth) {
      int64_t i0 = 0, i1 = N, c0 = 0, c1 = p.C;
      if (by_images) static_range(N, tid, nth, i0, i1);
      else static_range(p.C, tid, nth, c0, c1);
      if (i0 >= i1 || c0 >= c1) return;
      // Zero the owned part of dx.
      for (int64_t n = i0; n < i1; ++n) {
        T* dxn = a.out + n * p.xs_n;
        if (p.nchw() || (c0 == 0 && c1 == p.C)) {
          if (!p.nchw()) { std::fill(dxn, dxn + p.xs_n, T(0)); continue; }
          std::memset(dxn + c0 * p.xs_c, 0, sizeof(T) * size_t((c1 - c0) * p.xs_c));
        } else {
          for (int64_t hw = 0; hw < p.H * p.W; ++hw) std::fill(dxn + hw * p.C + c0, dxn + hw * p.C + c1, T(0));
        }
      }
      const int64_t j_own = c0 * RS, j_hi = c1 * RS;
      const int64_t j_lo = j_own / nr * nr;  // prepacked panels start at multiples of NR
      const int64_t cols = j_hi - j_lo;
      const int64_t chunk = std::min<int64_t>(i1 - i0, kLcBatchChunk);
      int64_t* off = thread_scratch_as<Scratch::Offsets, int64_t>(CRS, "the tap offsets");
      T* cbuf = thread_scratch_as<Scratch::Tile, T>(checked_mul(chunk, cols, "the patch block"),
                                                    "the patch block");
      for (int64_t pos = 0; pos < P; ++pos) {
        const int64_t oh = pos / p.Wo, ow = pos % p.Wo;
        position_offsets(p, oh, ow, true, off);
        const int64_t y_pos = oh * p.ys_h + ow * p.ys_w;
        for (int64_t n0 = i0; n0 < i1; n0 += chunk) {
          const int64_t nn = std::min<int64_t>(chunk, i1 - n0);
          const MatrixPackA<T> pack_a{a.dy + n0 * p.ys_n + y_pos, p.ys_n, p.ys_c};
          const LcScatter<T> epi{a.out + n0 * p.xs_n, off, p.xs_n, j_lo, j_own};
          gemm_rect(e, 0, nn, 0, cols, K, pack_a, ShiftedPrepacked<T>{weights.group(pos), j_lo},
                    cbuf, cols, false, epi);
        }
      }
    });
  }
};

// Backward-weight from the transposed input (preferred): dW[p] summed over chunks of
// images in order.
struct LcBackwardWeight : NoWeights, AlwaysPreferred {
  static constexpr const char* kName = "per_position_gemm";
  static const char* why_not(const ConvPlan& p, const Blocking& bl) {
    return LcForward::why_not(p, bl);
  }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>&) {
    const int64_t CRS = p.C * p.R * p.S, K = p.K;
    for_each_position_transposed(p, e, a.x, [&](const PositionPatches<T>& pp) {
      gemm_rect(e, 0, K, 0, CRS, pp.nn,
                MatrixPackA<T>{a.dy + pp.n0 * p.ys_n + pp.y_pos, p.ys_c, p.ys_n},
                TransposedPackBT<T>{pp.xt, pp.off}, a.out + pp.pos * K * CRS, CRS, pp.n0 > 0,
                NoEpilogue{});
    });
  }
};

// Backward-weight gathering the patches straight from x (any size).
struct LcBackwardWeightGather : NoWeights, AlwaysPreferred {
  static constexpr const char* kName = "per_position_gather";
  static const char* why_not(const ConvPlan&, const Blocking&) { return nullptr; }
  template <typename T>
  static void run(const ConvPlan& p, const GemmEngine<T>& e, const ExecArgs<T>& a,
                  const PrepackedGroups<T>&) {
    const int64_t CRS = p.C * p.R * p.S, P = p.P(), K = p.K;
    parallel_run(lc_threads(p, P), [&](int tid, int nth) {
      int64_t q0, q1;
      static_range(P, tid, nth, q0, q1);
      if (q0 >= q1) return;
      int64_t* off = thread_scratch_as<Scratch::Offsets, int64_t>(CRS, "the tap offsets");
      for (int64_t pos = q0; pos < q1; ++pos) {
        const int64_t oh = pos / p.Wo, ow = pos % p.Wo;
        position_offsets(p, oh, ow, false, off);
        const int64_t y_pos = oh * p.ys_h + ow * p.ys_w;
        gemm_rect(e, 0, K, 0, CRS, p.N, MatrixPackA<T>{a.dy + y_pos, p.ys_c, p.ys_n},
                  PatchPackBT<T>{a.x, off, p.xs_n}, a.out + pos * K * CRS, CRS, false,
                  NoEpilogue{});
      }
    });
  }
};

}  // namespace

template <typename T>
const ImplList<T>& lc_forward_implementations() {
  static const ImplList<T> list = {implementation_of<LcForward, T>(),
                                   implementation_of<LcForwardGather, T>()};
  return list;
}
template <typename T>
const ImplList<T>& lc_backward_data_implementations() {
  static const ImplList<T> list = {implementation_of<LcBackwardDataT, T>(),
                                   implementation_of<LcBackwardData, T>()};
  return list;
}
template <typename T>
const ImplList<T>& lc_backward_weight_implementations() {
  static const ImplList<T> list = {implementation_of<LcBackwardWeight, T>(),
                                   implementation_of<LcBackwardWeightGather, T>()};
  return list;
}

template <typename T>
void lc_backward_bias(const ConvPlan& p, const T* dy, T* db) {
  // db[i] = sum over n of dy[n·ys_n + i]: i runs over K·Ho·Wo in both layouts (the bias
  // has y's shape without the batch axis). Accumulated in double, images in order.
  const int64_t count = p.ys_n;
  const int nt = std::max(1, std::min<int>(threads_for(double(p.N) * count * 4), int(std::min<int64_t>(count, 1 << 20))));
  parallel_run(nt, [&](int tid, int nth) {
    int64_t i0, i1;
    static_range(count, tid, nth, i0, i1);
    constexpr int64_t kBlock = 512;
    double acc[kBlock];
    for (int64_t b0 = i0; b0 < i1; b0 += kBlock) {
      interrupt_point();
      const int64_t m = std::min<int64_t>(kBlock, i1 - b0);
      std::fill(acc, acc + m, 0.0);
      for (int64_t n = 0; n < p.N; ++n) {
        const T* src = dy + n * p.ys_n + b0;
        for (int64_t i = 0; i < m; ++i) acc[i] += double(src[i]);
      }
      for (int64_t i = 0; i < m; ++i) db[b0 + i] = T(acc[i]);
    }
  });
}

template <typename T>
void lc_zero_padding_taps(const ConvPlan& p, T* dw) {
  // dW[p][k][tap] is a sum over the images of dy · x at the tap; for a tap in the padding
  // the sum is empty (0), whatever dy holds. The executors form dy · 0 there, which is 0
  // for finite dy and NaN for Inf/NaN dy: set the definition's 0.
  const int64_t CRS = p.C * p.R * p.S, P = p.P(), K = p.K;
  if (P == 0 || K == 0 || CRS == 0) return;
  const int nt = std::max(1, std::min<int>(threads_for(double(p.w_size)), int(std::min<int64_t>(P, 1 << 20))));
  parallel_run(nt, [&](int tid, int nth) {
    int64_t q0, q1;
    static_range(P, tid, nth, q0, q1);
    std::vector<int64_t> off;
    for (int64_t pos = q0; pos < q1; ++pos) {
      const int64_t oh = pos / p.Wo, ow = pos % p.Wo;
      if (!position_reads_padding(p, oh, ow)) continue;
      interrupt_point();
      off.resize(size_t(CRS));
      position_offsets(p, oh, ow, false, off.data());
      T* d = dw + pos * K * CRS;
      for (int64_t k = 0; k < K; ++k)
        for (int64_t j = 0; j < CRS; ++j)
          if (off[size_t(j)] < 0) d[k * CRS + j] = T(0);
    }
  });
}

template void lc_zero_padding_taps<float>(const ConvPlan&, float*);
template void lc_zero_padding_taps<double>(const ConvPlan&, double*);
template const ImplList<float>& lc_forward_implementations<float>();
template const ImplList<double>& lc_forward_implementations<double>();
template const ImplList<float>& lc_backward_data_implementations<float>();
template const ImplList<double>& lc_backward_data_implementations<double>();
template const ImplList<float>& lc_backward_weight_implementations<float>();
template const ImplList<double>& lc_backward_weight_implementations<double>();
template void lc_backward_bias<float>(const ConvPlan&, const float*, float*);
template void lc_backward_bias<double>(const ConvPlan&, const double*, double*);

}  // namespace convcore::detail
