// Convolution's operands for the GEMM driver: packers that read the image (or the weights,
// or the output gradient) in place and write the driver's micro-panel format directly, so
// no im2col matrix is ever materialised. Geometry in tap_geometry.hpp; the epilogues that
// finish tiles of C in epilogue.hpp.
#pragma once

#include <algorithm>
#include <cassert>
#include <cstdint>
#include <type_traits>

#include "epilogue.hpp"
#include "plan.hpp"
#include "tap_geometry.hpp"
#include "../gemm/driver.hpp"
#include "../gemm/pack.hpp"

namespace convcore::detail {

// out[t] = src[t*step] for t < n and step 2 or 4 (the strided convolutions' im2col rows);
// returns n. Plain C++ with a constant step, which compilers vectorise into loads and
// shuffles as fast as hand-written SSE, reading nothing past src[(n-1)*step].
inline int64_t gather_strided(float* __restrict out, const float* __restrict src, int64_t n,
                              int64_t step) {
  if (step == 2) {
    for (int64_t t = 0; t < n; ++t) out[t] = src[2 * t];
  } else {
    for (int64_t t = 0; t < n; ++t) out[t] = src[4 * t];
  }
  return n;
}

// Copies the in-image part of one tap's row of pixels: out[t] = row[(iw0 + t*sw)*xs_w],
// zero where the column falls in the padding.
template <typename T>
inline void gather_row(T* __restrict out, const T* __restrict row, int64_t len, int64_t iw0,
                       const ConvPlan& p) {
  if (p.sw == 1 && p.xs_w == 1) {
    const int64_t lo = std::clamp<int64_t>(-iw0, 0, len);
    const int64_t hi = std::clamp<int64_t>(p.W - iw0, lo, len);
    for (int64_t t = 0; t < lo; ++t) out[t] = T(0);
    if (lo < hi) copy_run(out + lo, row + (iw0 + lo), hi - lo);
    for (int64_t t = hi; t < len; ++t) out[t] = T(0);
  } else {
    // In-image pixels t satisfy 0 <= iw0 + t*sw < W.
    const int64_t lo = iw0 >= 0 ? 0 : std::min(len, (-iw0 + p.sw - 1) / p.sw);
    const int64_t hi = iw0 >= p.W ? lo : std::clamp<int64_t>((p.W - iw0 + p.sw - 1) / p.sw, lo, len);
    const int64_t step = p.sw * p.xs_w;
    for (int64_t t = 0; t < lo; ++t) out[t] = T(0);
    if (lo < hi) {
      const T* src = row + (iw0 + lo * p.sw) * p.xs_w;
      int64_t t = lo;
      if constexpr (std::is_same_v<T, float>) {
        if (step == 2 || step == 4) t += gather_strided(out + lo, src, hi - lo, step);
      }
      for (; t < hi; ++t) out[t] = src[(t - lo) * step];
    }
    for (int64_t t2 = hi; t2 < len; ++t2) out[t2] = T(0);
  }
}

// B operand of the NCHW forward pass: B[j][q], depth = taps, columns = pixels
// q = img*Ho*Wo + oh*Wo + ow. xg points at channel 0 of the group in image 0 (or in the
// one image of a per-image GEMM).
//
// The pixel block [j0, j0+nc) is first cut into segments that lie on one output row and
// in one micro-panel; every tap then copies each segment from one input row. Taps are the
// outer loop so the per-segment bookkeeping is computed once per block, not per tap.
template <typename T>
struct Im2colPackB_TapsByPixels {
  const ConvPlan* plan;
  const T* xg;

  struct Segment {
    int64_t dst;       // offset of the segment's first column in the packed block
    int64_t len;       // pixels
    int64_t img_off;   // img * xs_n
    int64_t ih0, iw0;  // input coordinates of its first pixel for tap (0, 0)
  };

  void operator()(T* dst, int64_t p0, int64_t kc, int64_t j0, int64_t nc, int nr) const {
    const ConvPlan& p = *plan;
    if (unpadded(p) && p.Wo < nr) return pack_short_rows(dst, p0, kc, j0, nc, nr);
    thread_local std::vector<Segment> segments;
    segments.clear();
    const int64_t P = p.P();
    for (int64_t col = 0; col < nc;) {
      const int64_t q = j0 + col;
      const int64_t img = q / P, oh = (q % P) / p.Wo, ow = q % p.Wo;
      const int64_t in_panel = col % nr;
      const int64_t len = std::min({p.Wo - ow, nr - in_panel, nc - col});
      segments.push_back(Segment{(col - in_panel) * kc + in_panel, len, img * p.xs_n,
                                 oh * p.sh - p.pad_t, ow * p.sw - p.pad_l});
      col += len;
    }
    const int64_t tail = nc % nr;  // zero columns of the last, partial panel
    T* tail_dst = dst + (nc - tail) * kc;
    TapCursor tap(p, crs_order(p), p0);
    for (int64_t kk = 0; kk < kc; ++kk, tap.next()) {
      T* dk = dst + kk * nr;
      const T* xc = xg + tap.c * p.xs_c;
      const int64_t rr = tap.r * p.dh, ss = tap.s * p.dw;
      for (const Segment& seg : segments) {
        T* out = dk + seg.dst;
        const int64_t ih = seg.ih0 + rr;
        if (ih < 0 || ih >= p.H) {
          for (int64_t t = 0; t < seg.len; ++t) out[t] = T(0);
        } else {
          gather_row(out, xc + seg.img_off + ih * p.xs_h, seg.len, seg.iw0 + ss, p);
        }
      }
      if (tail)
        for (int64_t t = tail; t < nr; ++t) tail_dst[kk * nr + t] = T(0);
    }
  }

  // No padding and output rows shorter than a micro-panel (small maps): the segments above
  // would be a few pixels each, and their bookkeeping would cost more than the copies. Every
  // element is instead x[col_off[column] + tap_off[tap]], gathered through two offset
  // tables (a panel's columns, a block's taps).
  void pack_short_rows(T* dst, int64_t p0, int64_t kc, int64_t j0, int64_t nc, int nr) const {
    const ConvPlan& p = *plan;
    assert(kc <= kMaxKC && nr <= kMaxTile);
    int64_t tap_off[kMaxKC], col_off[kMaxTile];
    TapCursor tap(p, crs_order(p), p0);
    for (int64_t kk = 0; kk < kc; ++kk, tap.next())
      tap_off[kk] = tap.c * p.xs_c + tap.r * p.dh * p.xs_h + tap.s * p.dw * p.xs_w;
    const int64_t P = p.P();
    for (int64_t col = 0; col < nc; col += nr) {
      const int64_t n = std::min<int64_t>(nr, nc - col);
      for (int64_t t = 0; t < n; ++t) {
        const int64_t q = j0 + col + t;
        const int64_t img = q / P, oh = (q % P) / p.Wo, ow = q % p.Wo;
        col_off[t] = img * p.xs_n + oh * p.sh * p.xs_h + ow * p.sw * p.xs_w;
      }
      T* panel = dst + col * kc;
      for (int64_t kk = 0; kk < kc; ++kk) {
        const T* src = xg + tap_off[kk];
        T* out = panel + kk * nr;
        for (int64_t t = 0; t < n; ++t) out[t] = src[col_off[t]];
        for (int64_t t = n; t < nr; ++t) out[t] = T(0);
      }
    }
  }
};

// A operand of the NHWC forward pass: A[q][j], rows = pixels of all images
// (q = n*Ho*Wo + p), depth = taps. xg points at channel 0 of the group in image 0.
template <typename T>
struct Im2colPackA_PixelsByTaps {
  const ConvPlan* plan;
  const T* xg;

  void operator()(T* dst, int64_t i0, int64_t mc, int64_t p0, int64_t kc, int mr) const {
    const ConvPlan& p = *plan;
    const int64_t P = p.P();
    for (int64_t ib = 0; ib < mc; ib += mr) {
      const int64_t m = std::min<int64_t>(mr, mc - ib);
      T* d = dst + ib * kc;
      for (int64_t i = 0; i < m; ++i) {
        const int64_t q = i0 + ib + i;
        const int64_t img = q / P, pix = q % P;
        const int64_t ih0 = (pix / p.Wo) * p.sh - p.pad_t, iw0 = (pix % p.Wo) * p.sw - p.pad_l;
        const T* xn = xg + img * p.xs_n;
        TapCursor tap(p, crs_order(p), p0);
        if (!tap.channel_major) {
          // (r, s, c) order: runs of consecutive channels at one input position.
          for (int64_t kk = 0; kk < kc;) {
            const int64_t run = std::min(kc - kk, p.Cg - tap.c);
            const int64_t ih = ih0 + tap.r * p.dh, iw = iw0 + tap.s * p.dw;
            if (ih >= 0 && ih < p.H && iw >= 0 && iw < p.W) {
              const T* src = xn + ih * p.xs_h + iw * p.xs_w + tap.c * p.xs_c;
              for (int64_t t = 0; t < run; ++t) d[(kk + t) * mr + i] = src[t * p.xs_c];
            } else {
              for (int64_t t = 0; t < run; ++t) d[(kk + t) * mr + i] = T(0);
            }
            kk += run;
            tap.c += run - 1;
            tap.next();
          }
        } else {
          for (int64_t kk = 0; kk < kc; ++kk, tap.next()) {
            const int64_t ih = ih0 + tap.r * p.dh, iw = iw0 + tap.s * p.dw;
            d[kk * mr + i] = (ih >= 0 && ih < p.H && iw >= 0 && iw < p.W)
                                 ? xn[tap.c * p.xs_c + ih * p.xs_h + iw * p.xs_w]
                                 : T(0);
          }
        }
      }
      if (m < mr)
        for (int64_t kk = 0; kk < kc; ++kk)
          for (int64_t i = m; i < mr; ++i) d[kk * mr + i] = T(0);
    }
  }
};

// Writes column t of rows [from, to) of a packed panel run (row stride ld): src[u] where
// u lies in the in-image window [lo, hi), 0 elsewhere.
template <typename T>
inline void put_tap_column(T* __restrict d, int64_t ld, const T* src, int64_t lo, int64_t hi,
                           int64_t from, int64_t to) {
  for (int64_t u = from; u < to; ++u) d[u * ld] = (u >= lo && u < hi) ? src[u] : T(0);
}

// B operand of the backward-weight pass: B[q][j], depth = pixels of all images,
// columns = taps. xg points at channel 0 of the group in image 0.
template <typename T>
struct Im2colPackB_PixelsByTaps {
  const ConvPlan* plan;
  const T* xg;

  void operator()(T* dst, int64_t p0, int64_t kc, int64_t j0, int64_t nc, int nr) const {
    const ConvPlan& p = *plan;
    int64_t off[kMaxTile], rr[kMaxTile], ss[kMaxTile], cc[kMaxTile];
    // Element offsets of taps relative to tap (0, 0) are formed only when the kernel's
    // reach lies inside the image (else rr·xs_h could overflow: dilation may be huge).
    const bool fits = (p.R - 1) * p.dh < p.H && (p.S - 1) * p.dw < p.W;
    for (int64_t jb = 0; jb < nc; jb += nr) {
      const int64_t n = std::min<int64_t>(nr, nc - jb);
      TapCursor tap(p, crs_order(p), j0 + jb);
      for (int64_t t = 0; t < n; ++t, tap.next()) {
        rr[t] = tap.r * p.dh;
        ss[t] = tap.s * p.dw;
        cc[t] = tap.c * p.xs_c;
        off[t] = fits ? cc[t] + rr[t] * p.xs_h + ss[t] * p.xs_w : 0;
      }
      if (p.xs_w == 1 && p.sw == 1)
        pack_unit_stride(dst + jb * kc, p0, kc, n, nr, cc, rr, ss);
      else
        pack_gather(dst + jb * kc, p0, kc, n, nr, off, cc, rr, ss);
    }
  }

 private:
  // Any layout and stride: each packed row gathers its taps through the offset table.
  void pack_gather(T* d, int64_t p0, int64_t kc, int64_t n, int nr, const int64_t* off,
                   const int64_t* cc, const int64_t* rr, const int64_t* ss) const {
    const ConvPlan& p = *plan;
    const int64_t P = p.P();
    const int64_t reach_h = (p.R - 1) * p.dh, reach_w = (p.S - 1) * p.dw;
    int64_t img = p0 / P, pix = p0 % P;
    int64_t oh = pix / p.Wo, ow = pix % p.Wo;
    for (int64_t kk = 0; kk < kc; ++kk) {
      T* out = d + kk * nr;
      const int64_t ih0 = oh * p.sh - p.pad_t, iw0 = ow * p.sw - p.pad_l;
      const T* base = xg + img * p.xs_n;
      if (ih0 >= 0 && ih0 + reach_h < p.H && iw0 >= 0 && iw0 + reach_w < p.W) {
        const int64_t pos = ih0 * p.xs_h + iw0 * p.xs_w;
        for (int64_t t = 0; t < n; ++t) out[t] = base[pos + off[t]];
      } else {
        for (int64_t t = 0; t < n; ++t) {
          const int64_t ih = ih0 + rr[t], iw = iw0 + ss[t];
          out[t] = (ih >= 0 && ih < p.H && iw >= 0 && iw < p.W)
                       ? base[cc[t] + ih * p.xs_h + iw * p.xs_w]
                       : T(0);
        }
      }
      for (int64_t t = n; t < nr; ++t) out[t] = T(0);
      if (++ow == p.Wo) {
        ow = 0;
        if (++oh == p.Ho) { oh = 0; ++img; }
      }
    }
  }

  // Unit stride along width (NCHW, stride_w 1): for a run of pixels on one output row each
  // tap reads one contiguous piece of an input row, so groups of four taps are transposed
  // four pixels at a time into the packed rows.
  void pack_unit_stride(T* d, int64_t p0, int64_t kc, int64_t n, int nr, const int64_t* cc,
                        const int64_t* rr, const int64_t* ss) const {
    const ConvPlan& p = *plan;
    const int64_t P = p.P();
    for (int64_t kk = 0, q = p0; kk < kc;) {
      const int64_t img = q / P, pix = q % P;
      const int64_t oh = pix / p.Wo, ow = pix % p.Wo;
      const int64_t len = std::min(kc - kk, p.Wo - ow);
      const int64_t ih0 = oh * p.sh - p.pad_t, iw0 = ow - p.pad_l;
      T* drun = d + kk * nr;
      for (int64_t t0 = 0; t0 < n; t0 += 4) {
        const int64_t g = std::min<int64_t>(4, n - t0);
        const T* src[4];
        int64_t lo[4], hi[4];
        int64_t fast_lo = 0, fast_hi = len;
        for (int64_t u = 0; u < g; ++u) {
          const int64_t t = t0 + u;
          const int64_t ih = ih0 + rr[t], iw = iw0 + ss[t];
          if (ih < 0 || ih >= p.H) {
            lo[u] = hi[u] = 0;
          } else {
            lo[u] = std::clamp<int64_t>(-iw, 0, len);
            hi[u] = std::clamp<int64_t>(p.W - iw, lo[u], len);
          }
          // The tap's value for the run's first pixel (iw may be negative); only read in
          // [lo, hi), and only formed when that is not empty.
          src[u] = lo[u] < hi[u] ? xg + (img * p.xs_n + cc[t] + ih * p.xs_h + iw) : nullptr;
          fast_lo = std::max(fast_lo, lo[u]);
          fast_hi = std::min(fast_hi, hi[u]);
        }
        if constexpr (std::is_same_v<T, float>) {
          if (g == 4 && fast_lo + 4 <= fast_hi) {
            int64_t u = fast_lo;
            for (; u + 4 <= fast_hi; u += 4)
              transpose_4x4(drun + u * nr + t0, nr, src[0] + u, src[1] + u, src[2] + u, src[3] + u);
            for (int64_t i = 0; i < 4; ++i) {
              put_tap_column(drun + t0 + i, nr, src[i], lo[i], hi[i], 0, fast_lo);
              put_tap_column(drun + t0 + i, nr, src[i], lo[i], hi[i], u, len);
            }
            continue;
          }
        }
        for (int64_t i = 0; i < g; ++i)
          put_tap_column(drun + t0 + i, nr, src[i], lo[i], hi[i], 0, len);
      }
      for (int64_t u = 0; u < len; ++u)
        for (int64_t t = n; t < nr; ++t) drun[u * nr + t] = T(0);
      kk += len;
      q += len;
    }
  }
};

// A operand of the backward-weight pass: the output gradient as a Kg × (N·Ho·Wo) matrix,
// A[k][q] = dy[img][k][pix]; dyg points at channel 0 of the group in image 0.
template <typename T>
struct OutputGradPackA {
  const ConvPlan* plan;
  const T* dyg;

  void operator()(T* dst, int64_t i0, int64_t mc, int64_t p0, int64_t kc, int mr) const {
    const ConvPlan& p = *plan;
    const int64_t P = p.P();
    for (int64_t ib = 0; ib < mc; ib += mr) {
      const int64_t m = std::min<int64_t>(mr, mc - ib);
      T* d = dst + ib * kc;
      for (int64_t kk = 0, q = p0; kk < kc;) {
        const int64_t img = q / P, pix = q % P;
        const int64_t run = std::min(kc - kk, P - pix);
        const T* src = dyg + img * p.ys_n + (i0 + ib) * p.ys_c + pix * p.ys_w;
        pack_a_piece(d + kk * mr, src, p.ys_c, p.ys_w, m, run, mr);
        kk += run;
        q += run;
      }
    }
  }
};

// B operand of the backward-data pass: the output gradient as a Kg × (N·Ho·Wo) matrix,
// B[k][q] = dy[img][k][pix]; dyg points at channel 0 of the group in image 0.
template <typename T>
struct OutputGradPackB {
  const ConvPlan* plan;
  const T* dyg;

  void operator()(T* dst, int64_t p0, int64_t kc, int64_t j0, int64_t nc, int nr) const {
    const ConvPlan& p = *plan;
    const int64_t P = p.P();
    for (int64_t jb = 0; jb < nc; jb += nr) {
      const int64_t n = std::min<int64_t>(nr, nc - jb);
      T* d = dst + jb * kc;
      // Pieces of the panel's columns that lie in one image.
      for (int64_t t = 0; t < n;) {
        const int64_t q = j0 + jb + t;
        const int64_t img = q / P, pix = q % P;
        const int64_t len = std::min(n - t, P - pix);
        pack_b_piece(d + t, dyg + img * p.ys_n + p0 * p.ys_c + pix * p.ys_w, p.ys_c, p.ys_w, kc,
                     len, nr);
        t += len;
      }
      zero_panel_tail(d, kc, n, nr);
    }
  }
};

// A operand of the backward-data pass: the transposed weights with rows in (c, r, s)
// order whatever the layout, A[(c,r,s)][k] = w[k][c][r][s]; wg points at the group's
// first filter.
template <typename T>
struct WeightTPackA {
  const ConvPlan* plan;
  const T* wg;

  void operator()(T* dst, int64_t i0, int64_t mc, int64_t p0, int64_t kc, int mr) const {
    const ConvPlan& p = *plan;
    int64_t off[kMaxTile];
    for (int64_t ib = 0; ib < mc; ib += mr) {
      const int64_t m = std::min<int64_t>(mr, mc - ib);
      T* d = dst + ib * kc;
      TapCursor tap(p, true, i0 + ib);
      for (int64_t i = 0; i < m; ++i, tap.next())
        off[i] = tap.c * p.ws_c + tap.r * p.ws_r + tap.s * p.ws_s;
      for (int64_t kk = 0; kk < kc; ++kk) {
        const T* wk = wg + (p0 + kk) * p.ws_k;
        T* out = d + kk * mr;
        for (int64_t i = 0; i < m; ++i) out[i] = wk[off[i]];
        for (int64_t i = m; i < mr; ++i) out[i] = T(0);
      }
    }
  }
};

// A operand of the stride-1 direct backward-data pass (direct_s1.hpp): the weights
// flipped in both spatial axes and transposed, a Cg × (Kg·R·S) matrix with columns in
// (k, r, s) order: A[c][(k, r, s)] = w[k][c][R-1-r][S-1-s]. wg points at the group's
// first filter.
template <typename T>
struct FlippedWeightTPackA {
  const ConvPlan* plan;
  const T* wg;

  void operator()(T* dst, int64_t i0, int64_t mc, int64_t p0, int64_t kc, int mr) const {
    const ConvPlan& p = *plan;
    const int64_t RS = p.R * p.S;
    if (p.ws_c == 1) {
      // Channels contiguous (1×1 kernels, NHWC weights): depth outer, so each step reads one
      // run of mc channels for all the panels (the steps are a filter or a tap apart).
      int64_t k = p0 / RS, r = (p0 / p.S) % p.R, s = p0 % p.S;
      for (int64_t kk = 0; kk < kc; ++kk) {
        const T* src = wg + k * p.ws_k + i0 + (p.R - 1 - r) * p.ws_r + (p.S - 1 - s) * p.ws_s;
        for (int64_t ib = 0; ib < mc; ib += mr) {
          const int64_t m = std::min<int64_t>(mr, mc - ib);
          T* out = dst + ib * kc + kk * mr;
          copy_run(out, src + ib, m);
          zero_run(out + m, mr - m);
        }
        if (++s == p.S) {
          s = 0;
          if (++r == p.R) r = 0, ++k;
        }
      }
      return;
    }
    for (int64_t ib = 0; ib < mc; ib += mr) {
      const int64_t m = std::min<int64_t>(mr, mc - ib);
      T* d = dst + ib * kc;
      // (k, r, s) of depth p0 + kk, stepped (no divisions per step).
      int64_t k = p0 / RS, r = (p0 / p.S) % p.R, s = p0 % p.S;
      for (int64_t kk = 0; kk < kc; ++kk) {
        const T* src = wg + k * p.ws_k + (i0 + ib) * p.ws_c + (p.R - 1 - r) * p.ws_r +
                       (p.S - 1 - s) * p.ws_s;
        T* out = d + kk * mr;
        for (int64_t i = 0; i < m; ++i) out[i] = src[i * p.ws_c];
        for (int64_t i = m; i < mr; ++i) out[i] = T(0);
        if (++s == p.S) {
          s = 0;
          if (++r == p.R) r = 0, ++k;
        }
      }
    }
  }
};

// How the by-panels packers below share their panels among the threads: each panel (NR
// columns) in `count` parts of whole 64-byte runs of its rows, so that a team larger than
// the panels has work for every thread (a batch-1 3×3 c256 layer has 8 panels of 32
// filters for 16 threads) and no two parts write one cache line. One part per panel
// wherever the panels already outnumber the team.
struct PanelParts {
  int64_t panels = 0, extent = 0, count = 1, width = 0, tasks = 0;
  int nr = 1, threads = 1;
  // groups × ceil(extent / nr) panels of nr columns; `team`: the threads the copy may take.
  PanelParts(int team, int64_t groups, int64_t extent_, int nr_, std::size_t elem_bytes)
      : extent(extent_), nr(nr_) {
    panels = round_up(extent, nr) / nr;
    const int64_t line = std::max<int64_t>(1, int64_t(64) / int64_t(elem_bytes));
    const int64_t most = std::max<int64_t>(1, nr / line);
    const int64_t all = std::max<int64_t>(groups * panels, 1);
    count = std::clamp<int64_t>(ceil_div(team, all), 1, most);
    width = round_up(ceil_div(nr, count), line);
    tasks = groups * panels * count;
    threads = static_cast<int>(std::clamp<int64_t>(team, 1, std::max<int64_t>(tasks, 1)));
  }
  // body(copy, g, j0, n, f0, f1) for every part on the team: group g's panel at column j0,
  // n columns (fewer than nr in the last), the part's columns [f0, f1); `copy` is the
  // thread's B-panel scratch of copy_elems values.
  template <typename T, typename Body>
  void run(int64_t copy_elems, Body&& body) const {
    parallel_run(threads, [&](int tid, int nt) {
      int64_t t0, t1;
      static_range(tasks, tid, nt, t0, t1);
      if (t0 == t1) return;
      T* copy = thread_scratch_as<Scratch::PackB, T>(copy_elems,
                                                     "a weight panel in tap-major order");
      for (int64_t t = t0; t < t1; ++t) {
        interrupt_point();
        const int64_t panel = t / count, g = panel / panels, j0 = (panel % panels) * nr;
        const int64_t n = std::min<int64_t>(nr, extent - j0);
        const int64_t f0 = std::min(n, t % count * width), f1 = std::min(n, f0 + width);
        if (f0 < f1) body(copy, g, j0, n, f0, f1);
      }
    });
  }
};

// Whether pack_tap_major_by_panels takes these weights: contiguous filters in NCHW order
// (K, C, R, S), a kernel larger than 1×1.
inline bool tap_major_by_panels_applies(const ConvPlan& p) {
  const int64_t rs = p.R * p.S;
  return rs > 1 && p.ws_s == 1 && p.ws_r == p.S && p.ws_c == rs && p.ws_k == p.Cg * rs;
}

// NCHW filters (a filter's R·S taps of one channel contiguous, its channels of one tap R·S
// apart) packed as TapMajorWeightPackB packs them, for the channels-last executors' B
// operand (depth (r, s, c), filters on the columns), a panel of NR filters at a time: each
// filter of the panel is first transposed to tap-major order (one C × R·S → R·S × C
// register-block transpose) into the thread's B-panel scratch, and the panel's pieces of
// every depth block are then transposes of that copy. The copy (NR filters, a few hundred
// KiB) stays in L2 between the two; the panels are split over the threads (PanelParts).
// Returns false (nothing written) for other layouts and 1×1 kernels, which
// TapMajorWeightPackB reads in place. `dst` is laid out as pack_groups lays it out: group g
// at g · padded · depth, depth block pc at + pc · padded, panel j0 at + j0 · kc.
//
// A/B, per call, forward through via_nhwc, Zen 4: batch-1 3×3 c256 at one thread 2.45 ms
// (strided reads) → 2.30 (one tap-major copy of all the weights, then the packing); the
// copy by panels, with the register transposes' row addresses kept in registers, brought
// the same layer at two threads from 0.58× to about 0.9× torch. (Backward-data's flipped
// weights: a whole copy, as is or taps outermost, had measured 5 % slower per call than
// FlippedWeightPackB's strided reads as the tiles go; by panels, pack_flipped_by_panels,
// faster — see there.)
template <typename T>
bool pack_tap_major_by_panels(const ConvPlan& p, const Blocking& bl, const T* w, T* dst) {
  const int64_t rs = p.R * p.S, depth = p.Cg * rs;
  if (!tap_major_by_panels_applies(p)) return false;
  const auto tr = packing_transpose<T>();
  // Each element is moved twice.
  const PanelParts parts(threads_for_copy(2.0 * double(p.G) * double(p.Kg) * double(depth)),
                         p.G, p.Kg, bl.nr, sizeof(T));
  const int64_t padded = parts.panels * bl.nr;
  parts.run<T>(checked_mul(bl.nr, depth, "a weight panel"),
               [&](T* copy, int64_t g, int64_t j0, int64_t n, int64_t f0, int64_t f1) {
    const T* wg = w + (g * p.Kg + j0) * p.ws_k;
    for (int64_t k = f0; k < f1; ++k)
      tr(wg + k * p.ws_k, rs, copy + (k - f0) * depth, p.Cg, p.Cg, rs);
    T* dg = dst + g * padded * depth;
    for (int64_t pc = 0; pc < depth; pc += bl.kc) {
      const int64_t kc = std::min<int64_t>(bl.kc, depth - pc);
      T* d = dg + pc * padded + j0 * kc;
      pack_b_piece(d + f0, copy + pc, 1, depth, kc, f1 - f0, bl.nr);
      if (f1 == n) zero_panel_tail(d, kc, n, bl.nr);
    }
  });
  return true;
}

// The flipped weights of FlippedWeightPackB from filters in NCHW order (see
// tap_major_by_panels_applies), a panel of NR channels at a time, the panels split over the
// threads: each filter's NR channel rows (R·S taps each) transposed into the thread's
// B-panel scratch (copy[k][tap][c]), then every depth row (tap, k) of the panel one run of
// NR values from that copy. Returns false (nothing written) for other layouts. `dst` as
// pack_groups lays it out. Against FlippedWeightPackB's strided reads as the tiles go
// (Zen 4, 2 threads, per call): batch-1 3×3 c256 on 14×14 1.22 → 1.16 ms, batch-1 3×3 c512
// on 7×7 2.00 → 1.85.
template <typename T>
bool pack_flipped_by_panels(const ConvPlan& p, const Blocking& bl, const T* w, T* dst) {
  if (!tap_major_by_panels_applies(p)) return false;
  const int64_t rs = p.R * p.S, depth = rs * p.Kg;
  const int nr = bl.nr;
  const auto tr = packing_transpose<T>();
  const PanelParts parts(threads_for_copy(2.0 * double(p.G) * double(p.Cg) * double(depth)),
                         p.G, p.Cg, nr, sizeof(T));
  const int64_t padded = parts.panels * nr;
  parts.run<T>(checked_mul(nr, depth, "a weight panel"),
               [&](T* copy, int64_t g, int64_t c0, int64_t n, int64_t f0, int64_t f1) {
    const int64_t w_run = f1 == n ? nr - f0 : f1 - f0;  // the last part writes the zeros
    const T* wg = w + g * p.Kg * p.ws_k + (c0 + f0) * rs;
    for (int64_t k = 0; k < p.Kg; ++k) {
      T* ck = copy + k * rs * w_run;  // ck[tap·w_run + c] = w[k][c0 + f0 + c][tap]
      tr(wg + k * p.ws_k, rs, ck, w_run, f1 - f0, rs);
      if (f1 - f0 < w_run)
        for (int64_t tap = 0; tap < rs; ++tap)
          zero_run(ck + tap * w_run + (f1 - f0), w_run - (f1 - f0));
    }
    T* dg = dst + g * padded * depth;
    for (int64_t pc = 0; pc < depth; pc += bl.kc) {
      const int64_t kc = std::min<int64_t>(bl.kc, depth - pc);
      T* d = dg + pc * padded + c0 * kc + f0;
      // depth row pc + u = (tap, k), tap-major: B[(tap, k)][c] = w[k][c][R·S − 1 − tap]
      int64_t k = pc % p.Kg, tap = pc / p.Kg;
      for (int64_t u = 0; u < kc; ++u) {
        copy_run(d + u * nr, copy + (k * rs + rs - 1 - tap) * w_run, w_run);
        if (++k == p.Kg) k = 0, ++tap;
      }
    }
  });
  return true;
}

// B operand of the NHWC direct backward-data pass (indirect_nhwc.hpp): the weights
// flipped in both spatial axes, an (R·S·Kg) × Cg matrix with depth in (r, s, k) order:
// B[(r, s, k)][c] = w[k][R-1-r][S-1-s][c]. wg points at the group's first filter.
template <typename T>
struct FlippedWeightPackB {
  const ConvPlan* plan;
  const T* wg;

  void operator()(T* dst, int64_t p0, int64_t kc, int64_t j0, int64_t nc, int nr) const {
    const ConvPlan& p = *plan;
    for (int64_t jb = 0; jb < nc; jb += nr) {
      const int64_t n = std::min<int64_t>(nr, nc - jb);
      T* d = dst + jb * kc;
      // (r, s, k) of depth p0 + kk, stepped (no divisions per step).
      int64_t k = p0 % p.Kg, r = (p0 / p.Kg) / p.S, s = (p0 / p.Kg) % p.S;
      for (int64_t kk = 0; kk < kc; ++kk) {
        const T* src = wg + k * p.ws_k + (p.R - 1 - r) * p.ws_r + (p.S - 1 - s) * p.ws_s +
                       (j0 + jb) * p.ws_c;
        T* out = d + kk * nr;
        if (p.ws_c == 1) {
          copy_run(out, src, n);
        } else {
          for (int64_t t = 0; t < n; ++t) out[t] = src[t * p.ws_c];
        }
        for (int64_t t = n; t < nr; ++t) out[t] = T(0);
        if (++k == p.Kg) {
          k = 0;
          if (++s == p.S) s = 0, ++r;
        }
      }
    }
  }
};

// B operand of the channels-last executors from weights in either layout: B[d][k] with
// depth d = (r·S + s)·Cg + c (taps major, channels contiguous, as an NHWC pixel holds
// them) and column k = filter. wg points at the group's first filter.
template <typename T>
struct TapMajorWeightPackB {
  const ConvPlan* plan;
  const T* wg;

  void operator()(T* dst, int64_t p0, int64_t kc, int64_t j0, int64_t nc, int nr) const {
    const ConvPlan& p = *plan;
    if (p.ws_c == 1 && (p.R * p.S == 1 || (p.ws_s == p.Cg && p.ws_r == p.S * p.Cg))) {
      // A filter's depth is contiguous (NHWC weights, NCHW 1×1): the panel is a transpose.
      for (int64_t jb = 0; jb < nc; jb += nr) {
        const int64_t n = std::min<int64_t>(nr, nc - jb);
        T* d = dst + jb * kc;
        pack_b_piece(d, wg + (j0 + jb) * p.ws_k + p0, 1, p.ws_k, kc, n, nr);
        zero_panel_tail(d, kc, n, nr);
      }
      return;
    }
    // 16 depth rows at a time (their offsets within a filter computed once), filter by
    // filter: the 16 destination rows stay in L1 (see pack_b_piece).
    constexpr int64_t kRows = 16;
    int64_t off[kRows];
    for (int64_t kb = 0; kb < kc; kb += kRows) {
      const int64_t rows = std::min(kRows, kc - kb);
      for (int64_t u = 0; u < rows; ++u) {
        const int64_t j = p0 + kb + u, tap = j / p.Cg, c = j % p.Cg;
        off[u] = c * p.ws_c + (tap / p.S) * p.ws_r + (tap % p.S) * p.ws_s;
      }
      for (int64_t jb = 0; jb < nc; jb += nr) {
        const int64_t n = std::min<int64_t>(nr, nc - jb);
        T* d = dst + jb * kc + kb * nr;
        for (int64_t t = 0; t < n; ++t) {
          const T* wk = wg + (j0 + jb + t) * p.ws_k;
          for (int64_t u = 0; u < rows; ++u) d[u * nr + t] = wk[off[u]];
        }
        for (int64_t u = 0; u < rows; ++u)
          for (int64_t t = n; t < nr; ++t) d[u * nr + t] = T(0);
      }
    }
  }
};

}  // namespace convcore::detail
