// The dwconv family — depthwise convolution rows (NCHW) and pixels (NHWC), forward-style
// and weight-gradient (contracts in kernels.hpp) — written once over a vector-traits type
// and instantiated by each target TU, like gemm_family.inl (same inclusion rules: only
// from a target TU after it defines CONVCORE_KERNEL_NS; no include guard).
//
// Beyond gemm_family.inl's interface the traits type VT provides
//   mask_range(lo, hi): lanes [lo, hi) on (clamped to [0, kLanes]);
//   fmadd_masked(a, b, c, m): a·b + c on the lanes of m, c unchanged on the others;
//   relu(v): 0 where v < 0, v elsewhere (NaN kept);
//   permute(v, idx): lane l = lane idx[l] of v (idx: kLanes int32).
// Padding is never multiplied: the NCHW kernels mask each tap's lanes to the columns whose
// source lies in the image (the load does not touch the others and the FMA leaves their
// accumulators alone); the NHWC kernels receive only the taps that lie in the image.
#if !defined(CONVCORE_KERNEL_NS)
#error "define CONVCORE_KERNEL_NS (the target's namespace) before including dwconv_family.inl"
#endif

#include <algorithm>
#include <type_traits>

#include "kernels.hpp"

namespace convcore::kernels::CONVCORE_KERNEL_NS {
namespace {

// Taps whose lane masks a border chunk keeps precomputed (more taps: computed per use).
constexpr int64_t kDwMaskTaps = 64;

// Columns [a, b) of a row of len that some tap reaches (the union of the taps' [lo, hi),
// clamped to the row; a = b = len when none does). Columns outside it are padding for
// every tap: the forward kernels store an empty sum's epilogue there and the gradient
// kernels skip them, rather than run every tap masked to nothing (a padding of 8 Mi
// columns took a depthwise forward 28 s).
inline void reached_columns(int64_t ntaps, const int64_t* lo, const int64_t* hi, int64_t len,
                            int64_t& a, int64_t& b) {
  a = len;
  b = 0;
  for (int64_t t = 0; t < ntaps; ++t) {
    a = std::min(a, lo[t]);
    b = std::max(b, hi[t]);
  }
  a = std::clamp<int64_t>(a, 0, len);
  b = std::clamp<int64_t>(b, a, len);
}

// An empty sum's epilogue, by a chunk's store operations (0 + bias, then ReLU), so the
// columns no tap reaches get the bits the chunks would have stored.
template <class VT>
inline typename VT::V empty_sum_epilogue(const typename VT::T* bias, bool relu) {
  typename VT::V c = VT::zero();
  if (bias) c = VT::add(c, VT::broadcast(bias));
  if (relu) c = VT::relu(c);
  return c;
}

// row[a, b) = v (the vector stored whole or masked at the end).
template <class VT>
inline void fill_columns(typename VT::T* row, int64_t a, int64_t b, typename VT::V v) {
  constexpr int L = VT::kLanes;
  for (int64_t u = a; u < b; u += L) {
    const int64_t n = std::min<int64_t>(L, b - u);
    if (n == L) VT::storeu(row + u, v);
    else VT::store_masked(row + u, VT::mask(n), v);
  }
}

// NCHW rows, one chunk of columns [u, u + n), n <= NV·L: RB rows at a time share each
// tap's broadcast weight (and, on border chunks, its lane masks). kMasked: some tap is
// invalid on some column of the chunk, or the chunk is the row's short tail.
template <class VT, int RB, int NV, bool kMasked>
inline void dw_rows_block(int64_t ntaps, const typename VT::T* const* src, int64_t so,
                          int64_t src_rs, const typename VT::T* w, const typename VT::Mask* mk,
                          const int64_t* lo, const int64_t* hi, int64_t u, int64_t n,
                          typename VT::V* acc_out) {
  using T = typename VT::T;
  using V = typename VT::V;
  using Mask = typename VT::Mask;
  constexpr int L = VT::kLanes;
  V acc[RB][NV];
#pragma GCC unroll 8
  for (int i = 0; i < RB; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = VT::zero();
  for (int64_t t = 0; t < ntaps; ++t) {
    Mask m[NV];
    if (kMasked) {
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        if (mk) {
          m[v] = mk[t * NV + v];
        } else {
          const int64_t at = u + int64_t(v) * L;
          m[v] = VT::mask_range(lo[t] - at, std::min(hi[t], u + n) - at);
        }
      }
    }
    const V wv = VT::broadcast(w + t);
    const T* s = src[t] + so + u;
#pragma GCC unroll 8
    for (int i = 0; i < RB; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        const T* sv = s + i * src_rs + v * L;
        if (kMasked)
          acc[i][v] = VT::fmadd_masked(VT::load_masked(sv, m[v]), wv, acc[i][v], m[v]);
        else
          acc[i][v] = VT::fmadd(VT::loadu(sv), wv, acc[i][v]);
      }
  }
#pragma GCC unroll 8
  for (int i = 0; i < RB; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc_out[i * NV + v] = acc[i][v];
}

template <class VT, int NV>
inline void dw_rows_chunk(int64_t rows, int64_t ntaps, const typename VT::T* const* src,
                          int64_t src_rs, const int64_t* lo, const int64_t* hi,
                          const typename VT::T* w, const typename VT::T* bias, bool relu,
                          bool accumulate, typename VT::T* out, int64_t out_rs, int64_t u,
                          int64_t n, bool interior) {
  using T = typename VT::T;
  using V = typename VT::V;
  using Mask = typename VT::Mask;
  constexpr int L = VT::kLanes;
  constexpr int RB = 4;
  const bool masked = !interior || n < int64_t(NV) * L;
  Mask tail[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) tail[v] = VT::mask(n - v * L);
  // Border or tail chunk: each tap's lanes, once for all rows.
  Mask mk_buf[kDwMaskTaps * NV];
  const Mask* mk = nullptr;
  if (masked && ntaps <= kDwMaskTaps) {
    for (int64_t t = 0; t < ntaps; ++t)
      for (int v = 0; v < NV; ++v) {
        const int64_t at = u + int64_t(v) * L;
        mk_buf[t * NV + v] = interior ? tail[v]
                                      : VT::mask_range(lo[t] - at, std::min(hi[t], u + n) - at);
      }
    mk = mk_buf;
  }
  // (interior tail chunks with more than kDwMaskTaps taps: mask_range over [lo, hi) ∩
  // [u, u + n) is the tail mask, as every tap is valid on the chunk.)
  const V bv = bias ? VT::broadcast(bias) : VT::zero();
  V acc[RB * NV];
  auto store = [&](int64_t i0, int rb) {
    for (int i = 0; i < rb; ++i) {
      T* o = out + (i0 + i) * out_rs + u;
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        V r = acc[i * NV + v];
        if (accumulate) {
          r = VT::add(VT::load_masked(o + v * L, tail[v]), r);
        } else {
          if (bias) r = VT::add(r, bv);
          if (relu) r = VT::relu(r);
        }
        if (masked) VT::store_masked(o + v * L, tail[v], r);
        else VT::storeu(o + v * L, r);
      }
    }
  };
  int64_t i = 0;
  if (masked) {
    for (; i + RB <= rows; i += RB) {
      dw_rows_block<VT, RB, NV, true>(ntaps, src, i * src_rs, src_rs, w, mk, lo, hi, u, n, acc);
      store(i, RB);
    }
    for (; i < rows; ++i) {
      dw_rows_block<VT, 1, NV, true>(ntaps, src, i * src_rs, src_rs, w, mk, lo, hi, u, n, acc);
      store(i, 1);
    }
  } else {
    for (; i + RB <= rows; i += RB) {
      dw_rows_block<VT, RB, NV, false>(ntaps, src, i * src_rs, src_rs, w, mk, lo, hi, u, n, acc);
      store(i, RB);
    }
    for (; i < rows; ++i) {
      dw_rows_block<VT, 1, NV, false>(ntaps, src, i * src_rs, src_rs, w, mk, lo, hi, u, n, acc);
      store(i, 1);
    }
  }
}

// NCHW rows: columns in chunks of NV vectors (one vector when the rest of the row fits in
// one). A chunk inside every tap's valid range runs unmasked (the row's tail chunk masked to
// the row), a border chunk masks each tap's lanes to its valid columns.
template <class VT, int NV>
void dw_rows(int64_t rows, int64_t len, int64_t ntaps, const typename VT::T* const* src,
             int64_t src_rs, const int64_t* lo, const int64_t* hi, const typename VT::T* w,
             const typename VT::T* bias, bool relu, bool accumulate, typename VT::T* out,
             int64_t out_rs) {
  constexpr int L = VT::kLanes;
  constexpr int64_t CW = int64_t(NV) * L;
  int64_t ilo = 0, ihi = len;  // columns where every tap is valid
  for (int64_t t = 0; t < ntaps; ++t) {
    ilo = std::max(ilo, lo[t]);
    ihi = std::min(ihi, hi[t]);
  }
  // Columns no tap reaches (reached_columns) hold an empty sum's epilogue; an
  // accumulating call would add 0 there and runs the chunks as before.
  int64_t u_begin = 0, u_end = len;
  if (!accumulate) {
    reached_columns(ntaps, lo, hi, len, u_begin, u_end);
    const typename VT::V c = empty_sum_epilogue<VT>(bias, relu);
    for (int64_t i = 0; i < rows; ++i) {
      fill_columns<VT>(out + i * out_rs, 0, u_begin, c);
      fill_columns<VT>(out + i * out_rs, u_end, len, c);
    }
  }
  for (int64_t u = u_begin; u < u_end; u += CW) {
    const int64_t n = std::min(CW, u_end - u);
    const bool interior = u >= ilo && u + n <= ihi;
    if (n <= L)
      dw_rows_chunk<VT, 1>(rows, ntaps, src, src_rs, lo, hi, w, bias, relu, accumulate, out,
                           out_rs, u, n, interior);
    else
      dw_rows_chunk<VT, NV>(rows, ntaps, src, src_rs, lo, hi, w, bias, relu, accumulate, out,
                            out_rs, u, n, interior);
  }
}

// NCHW weight-gradient rows: up to TC taps' partial-sum vectors live in registers while the
// rows stream past (in blocks of kDwWgradRows, column vector by column vector, so a border
// vector's masks are made once per block); a dy vector is loaded once and feeds every tap.
constexpr int64_t kDwWgradRows = 32;
template <class VT, int TC>
void dw_rows_wgrad(int64_t rows, int64_t len, int64_t ntaps, const typename VT::T* const* src,
                   int64_t src_rs, const int64_t* lo, const int64_t* hi,
                   const typename VT::T* dy, int64_t dy_rs, typename VT::T* const* acc) {
  using T = typename VT::T;
  using V = typename VT::V;
  using Mask = typename VT::Mask;
  constexpr int L = VT::kLanes;
  for (int64_t t0 = 0; t0 < ntaps; t0 += TC) {
    const int64_t nt = std::min<int64_t>(TC, ntaps - t0);
    int64_t ilo = 0, ihi = len;
    for (int64_t j = 0; j < nt; ++j) {
      ilo = std::max(ilo, lo[t0 + j]);
      ihi = std::min(ihi, hi[t0 + j]);
    }
    // Vectors no tap of the block reaches add nothing: the loop starts at the first that
    // one does (lanes stay where they were, so the sums keep their order and bits).
    int64_t reach_lo, reach_hi;
    reached_columns(nt, lo + t0, hi + t0, len, reach_lo, reach_hi);
    const int64_t u_begin = reach_lo / L * L;
    V a[TC];
    const T* s[TC];
#pragma GCC unroll 32
    for (int j = 0; j < TC; ++j) {
      a[j] = j < nt ? VT::loadu(acc[t0 + j]) : VT::zero();
      s[j] = j < nt ? src[t0 + j] : src[t0];
    }
    for (int64_t i0 = 0; i0 < rows; i0 += kDwWgradRows) {
      const int64_t i1 = std::min(rows, i0 + kDwWgradRows);
      for (int64_t u = u_begin; u < reach_hi; u += L) {
        const int64_t n = std::min<int64_t>(L, len - u);
        if (n == L && u >= ilo && u + L <= ihi) {
          if (nt == TC) {
            for (int64_t i = i0; i < i1; ++i) {
              const V dv = VT::loadu(dy + i * dy_rs + u);
              const int64_t so = i * src_rs + u;
#pragma GCC unroll 32
              for (int j = 0; j < TC; ++j) a[j] = VT::fmadd(VT::loadu(s[j] + so), dv, a[j]);
            }
          } else {
            for (int64_t i = i0; i < i1; ++i) {
              const V dv = VT::loadu(dy + i * dy_rs + u);
              const int64_t so = i * src_rs + u;
#pragma GCC unroll 32
              for (int j = 0; j < TC; ++j)
                if (j < nt) a[j] = VT::fmadd(VT::loadu(s[j] + so), dv, a[j]);
            }
          }
        } else {
          const Mask tail = VT::mask(n);
          Mask m[TC];
#pragma GCC unroll 32
          for (int j = 0; j < TC; ++j) {
            const int64_t t = j < nt ? t0 + j : t0;
            m[j] = VT::mask_range(lo[t] - u, std::min(hi[t], u + n) - u);
          }
          for (int64_t i = i0; i < i1; ++i) {
            const V dv = VT::load_masked(dy + i * dy_rs + u, tail);
            const int64_t so = i * src_rs + u;
#pragma GCC unroll 32
            for (int j = 0; j < TC; ++j)
              if (j < nt)
                a[j] = VT::fmadd_masked(VT::load_masked(s[j] + so, m[j]), dv, a[j], m[j]);
          }
        }
      }
    }
#pragma GCC unroll 32
    for (int j = 0; j < TC; ++j)
      if (j < nt) VT::storeu(acc[t0 + j], a[j]);
  }
}

// NHWC: NP pixels × NV channel vectors of accumulators; kFull: all NV vectors in range;
// kPerm: each tap's source vectors go through its lane permutation.
template <class VT, int NP, int NV, bool kFull, bool kPerm>
inline void dw_pixels_block(int64_t ntaps, const typename VT::T* const* src, int64_t src_off,
                            int64_t src_ps, const int32_t* const* perm,
                            const typename VT::T* const* w, int64_t c,
                            const typename VT::V* bv, bool has_bias, bool relu,
                            const typename VT::Mask* tail, typename VT::T* out, int64_t out_ps) {
  using T = typename VT::T;
  using V = typename VT::V;
  constexpr int L = VT::kLanes;
  V acc[NP][NV];
#pragma GCC unroll 16
  for (int i = 0; i < NP; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = VT::zero();
  V xs[NP][NV];  // kPerm: the source vectors, kept while consecutive taps share them
  for (int64_t t = 0; t < ntaps; ++t) {
    V wv[NV];
    const T* wt = w[t] + c;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v)
      wv[v] = kFull ? VT::loadu(wt + v * L) : VT::load_masked(wt + v * L, tail[v]);
    const T* s = src[t] + src_off + c;
    if (kPerm) {
      if (t == 0 || src[t] != src[t - 1]) {
#pragma GCC unroll 16
        for (int i = 0; i < NP; ++i)
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) {
            const T* sv = s + i * src_ps + v * L;
            xs[i][v] = kFull ? VT::loadu(sv) : VT::load_masked(sv, tail[v]);
          }
      }
#pragma GCC unroll 16
      for (int i = 0; i < NP; ++i)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v)
          acc[i][v] = VT::fmadd(VT::permute(xs[i][v], perm[t]), wv[v], acc[i][v]);
      continue;
    }
#pragma GCC unroll 16
    for (int i = 0; i < NP; ++i)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        const T* sv = s + i * src_ps + v * L;
        acc[i][v] = VT::fmadd(kFull ? VT::loadu(sv) : VT::load_masked(sv, tail[v]), wv[v],
                              acc[i][v]);
      }
  }
#pragma GCC unroll 16
  for (int i = 0; i < NP; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      V r = acc[i][v];
      if (has_bias) r = VT::add(r, bv[v]);
      if (relu) r = VT::relu(r);
      T* o = out + i * out_ps + c + v * L;
      if (kFull) VT::storeu(o, r);
      else VT::store_masked(o, tail[v], r);
    }
}

// NHWC pixels: pixel blocks outer, channel chunks inner, so a block's pixels (whole, when
// the channels are few hundred) stay in L1 while every chunk reads them: with the chunk
// outer, a power-of-two channel count puts the pixels a chunk reads a few KB apart, all in
// the same few L1 sets.
template <class VT, int PB, int NV, bool kPerm>
void dw_pixels_impl(int64_t npx, int64_t kc, int64_t ntaps, const typename VT::T* const* src,
                    int64_t src_ps, const int32_t* const* perm, const typename VT::T* const* w,
                    const typename VT::T* bias, bool relu, typename VT::T* out, int64_t out_ps) {
  using V = typename VT::V;
  using Mask = typename VT::Mask;
  constexpr int L = VT::kLanes;
  constexpr int64_t CW = int64_t(NV) * L;
  const bool has_bias = bias != nullptr;
  auto chunks = [&](int64_t p, auto np_tag) {
    constexpr int NP = decltype(np_tag)::value;
    for (int64_t c = 0; c < kc; c += CW) {
      const int64_t n = std::min(CW, kc - c);
      Mask tail[NV];
      V bv[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        tail[v] = VT::mask(n - v * L);
        bv[v] = has_bias ? VT::load_masked(bias + c + v * L, tail[v]) : VT::zero();
      }
      if (n == CW)
        dw_pixels_block<VT, NP, NV, true, kPerm>(ntaps, src, p * src_ps, src_ps, perm, w, c, bv,
                                                 has_bias, relu, tail, out + p * out_ps, out_ps);
      else
        dw_pixels_block<VT, NP, NV, false, kPerm>(ntaps, src, p * src_ps, src_ps, perm, w, c,
                                                  bv, has_bias, relu, tail, out + p * out_ps,
                                                  out_ps);
    }
  };
  int64_t p = 0;
  for (; p + PB <= npx; p += PB) chunks(p, std::integral_constant<int, PB>{});
  for (; p < npx; ++p) chunks(p, std::integral_constant<int, 1>{});
}

template <class VT, int PB, int NV>
void dw_pixels(int64_t npx, int64_t kc, int64_t ntaps, const typename VT::T* const* src,
               int64_t src_ps, const int32_t* const* perm, const typename VT::T* const* w,
               const typename VT::T* bias, bool relu, typename VT::T* out, int64_t out_ps) {
  if (perm)
    dw_pixels_impl<VT, PB, NV, true>(npx, kc, ntaps, src, src_ps, perm, w, bias, relu, out,
                                     out_ps);
  else
    dw_pixels_impl<VT, PB, NV, false>(npx, kc, ntaps, src, src_ps, perm, w, bias, relu, out,
                                      out_ps);
}

// NHWC weight gradient: blocks of kDwWgradPixels pixels outer (they stay in L1, as in
// dw_pixels), then per channel vector up to TC taps' sums in registers across the block's
// pixels; a dy vector is loaded once per pixel and feeds every tap. Each sum still adds its
// pixels in order.
constexpr int64_t kDwWgradPixels = 8;
template <class VT, int TC, bool kPerm>
void dw_pixels_wgrad_impl(int64_t npx, int64_t kc, int64_t ntaps,
                          const typename VT::T* const* src, int64_t src_ps,
                          const int32_t* const* perm, const typename VT::T* dy, int64_t dy_ps,
                          typename VT::T* const* acc) {
  using T = typename VT::T;
  using V = typename VT::V;
  using Mask = typename VT::Mask;
  constexpr int L = VT::kLanes;
  for (int64_t p0 = 0; p0 < npx; p0 += kDwWgradPixels) {
    const int64_t p1 = std::min(npx, p0 + kDwWgradPixels);
    for (int64_t c = 0; c < kc; c += L) {
      const int64_t n = std::min<int64_t>(L, kc - c);
      const bool full = n == L;
      const Mask m = VT::mask(n);
      for (int64_t t0 = 0; t0 < ntaps; t0 += TC) {
        const int64_t nt = std::min<int64_t>(TC, ntaps - t0);
        V a[TC];
        const T* s[TC];
        const int32_t* pj[TC];
#pragma GCC unroll 32
        for (int j = 0; j < TC; ++j) {
          a[j] = j >= nt ? VT::zero()
                         : (full ? VT::loadu(acc[t0 + j] + c)
                                 : VT::load_masked(acc[t0 + j] + c, m));
          s[j] = (j < nt ? src[t0 + j] : src[t0]) + c;
          pj[j] = kPerm ? perm[j < nt ? t0 + j : t0] : nullptr;
        }
        // kPerm: consecutive taps with the same source share one load (a group's channels)
        bool fresh[TC];
#pragma GCC unroll 32
        for (int j = 0; j < TC; ++j) fresh[j] = !kPerm || j == 0 || s[j] != s[j - 1];
        if (full && nt == TC) {
          for (int64_t p = p0; p < p1; ++p) {
            const V dv = VT::loadu(dy + p * dy_ps + c);
            const int64_t so = p * src_ps;
            V xv = VT::zero();
#pragma GCC unroll 32
            for (int j = 0; j < TC; ++j) {
              if (fresh[j]) xv = VT::loadu(s[j] + so);
              a[j] = VT::fmadd(kPerm ? VT::permute(xv, pj[j]) : xv, dv, a[j]);
            }
          }
        } else {
          for (int64_t p = p0; p < p1; ++p) {
            const V dv = VT::load_masked(dy + p * dy_ps + c, m);
            const int64_t so = p * src_ps;
            V xv = VT::zero();
#pragma GCC unroll 32
            for (int j = 0; j < TC; ++j) {
              if (j >= nt) break;
              if (fresh[j]) xv = VT::load_masked(s[j] + so, m);
              a[j] = VT::fmadd(kPerm ? VT::permute(xv, pj[j]) : xv, dv, a[j]);
            }
          }
        }
#pragma GCC unroll 32
        for (int j = 0; j < TC; ++j) {
          if (j >= nt) break;
          if (full) VT::storeu(acc[t0 + j] + c, a[j]);
          else VT::store_masked(acc[t0 + j] + c, m, a[j]);
        }
      }
    }
  }
}

template <class VT, int TC>
void dw_pixels_wgrad(int64_t npx, int64_t kc, int64_t ntaps, const typename VT::T* const* src,
                     int64_t src_ps, const int32_t* const* perm, const typename VT::T* dy,
                     int64_t dy_ps, typename VT::T* const* acc) {
  if (perm)
    dw_pixels_wgrad_impl<VT, TC, true>(npx, kc, ntaps, src, src_ps, perm, dy, dy_ps, acc);
  else
    dw_pixels_wgrad_impl<VT, TC, false>(npx, kc, ntaps, src, src_ps, perm, dy, dy_ps, acc);
}

// Row split into 2 phases: 2 vectors in, deinterleaved; the row's last partial block
// masked, each vector permuted so its even (odd) lanes come first, half-vector stores.
template <class VT>
void dw_split2(const typename VT::T* src, int64_t n, typename VT::T* even,
               typename VT::T* odd) {
  using V = typename VT::V;
  constexpr int L = VT::kLanes;
  // The permutations live in static storage: a stack array the compiler knows to be
  // 64-byte aligned gets an aligned vector load, which faults where the stack is not
  // (AddressSanitizer's fake stack frames).
  struct Index {
    int32_t even[L], odd[L];
  };
  static const Index index = [] {
    Index t{};
    for (int l = 0; l < L; ++l) {
      t.even[l] = (2 * l) % L;
      t.odd[l] = (2 * l + 1) % L;
    }
    return t;
  }();
  const int32_t* ie = index.even;
  const int32_t* io = index.odd;
  int64_t i = 0;
  // Whole blocks of 2·L: plain loads, a two-source deinterleave, plain stores (the masked
  // half-vector stores below cost about 3× as much per element on Zen 4).
  for (; i + 2 * L <= n; i += 2 * L) {
    V e, o;
    VT::deinterleave2(VT::loadu(src + i), VT::loadu(src + i + L), e, o);
    VT::storeu(even + i / 2, e);
    VT::storeu(odd + i / 2, o);
  }
  for (; i < n; i += 2 * L) {
    const int64_t rem = n - i, ne = (rem + 1) / 2, no = rem / 2;  // evens, odds left
    // No load at all past the row (not even a fully masked one: the address may be
    // unmapped, and some compilers fold masked loads into the permute)
    const V v0 = VT::load_masked(src + i, VT::mask(rem));
    const V v1 = rem > L ? VT::load_masked(src + i + L, VT::mask(rem - L)) : VT::zero();
    VT::store_masked(even + i / 2, VT::mask(std::min<int64_t>(ne, L / 2)), VT::permute(v0, ie));
    VT::store_masked(even + i / 2 + L / 2, VT::mask(ne - L / 2), VT::permute(v1, ie));
    VT::store_masked(odd + i / 2, VT::mask(std::min<int64_t>(no, L / 2)), VT::permute(v0, io));
    VT::store_masked(odd + i / 2 + L / 2, VT::mask(no - L / 2), VT::permute(v1, io));
  }
}

// One tap of a chunk: DNV source vectors (whole, or through `m` when kMaskLoads) times each
// filter's broadcast weight, added into the accumulators (through `m` when kMaskFma: masked
// lanes keep theirs).
template <class VT, int DNV, bool kMaskLoads, bool kMaskFma>
[[gnu::always_inline]] inline void dense_rows_tap(typename VT::V (&acc)[kDenseRowFilters][DNV],
                                                  const typename VT::T* s,
                                                  const typename VT::T* wt,
                                                  const typename VT::Mask* m) {
  using V = typename VT::V;
  constexpr int L = VT::kLanes;
  V x[DNV];
#pragma GCC unroll 4
  for (int v = 0; v < DNV; ++v)
    x[v] = kMaskLoads ? VT::load_masked(s + v * L, m[v]) : VT::loadu(s + v * L);
#pragma GCC unroll 8
  for (int k = 0; k < kDenseRowFilters; ++k) {
    const V wv = VT::broadcast(wt + k);
#pragma GCC unroll 4
    for (int v = 0; v < DNV; ++v)
      acc[k][v] = kMaskFma ? VT::fmadd_masked(x[v], wv, acc[k][v], m[v])
                           : VT::fmadd(x[v], wv, acc[k][v]);
  }
}

// How a chunk of dense rows reads its taps: kWhole, every tap valid on all CW columns
// (plain loads); kTail, a chunk of n < CW columns on which every tap is valid (one mask
// on the loads, shared by all taps; the lanes past n add zeros and are never stored);
// kBorder, some tap clipped (each such tap's lanes masked, loads and FMAs; the taps valid
// on every lane run unmasked).
enum class ChunkMode { kWhole, kTail, kBorder };

// Dense NCHW rows (DenseRowsFn): kDenseRowFilters filters × DNV vectors of columns in
// registers across every tap of a chunk; per tap DNV loads of the source row and one
// broadcast weight per filter feed kDenseRowFilters · DNV FMAs. Padding is never read or
// multiplied (ChunkMode). A tail of at most one vector runs with one vector of accumulators
// (a 193-column row is 6 chunks of 32 and one column: the tail had cost a whole 2-vector
// chunk). Every column sees the same operations in the same order whatever its chunk, so
// the results do not depend on the chunking. (Masking every tap of a border chunk: 3×3/2
// RGB stem forward 1.05–1.17 against 0.96–1.15 ms, 5×20/2 speech layer 5.66–5.80 against
// 5.48–5.57; Zen 3, AVX2, 2 threads, two builds alternating. Same results: a full mask's
// blend is the FMA.)
template <class VT, int DNV, ChunkMode kMode>
inline void dense_rows_chunk(int64_t ntaps, const typename VT::T* const* src, int64_t so,
                             const int64_t* lo, const int64_t* hi,
                             const typename VT::T* const* w, int64_t u, int64_t n,
                             typename VT::V* acc_out) {
  using V = typename VT::V;
  constexpr int L = VT::kLanes;
  V acc[kDenseRowFilters][DNV];  // local, so the masked loop keeps it in registers
#pragma GCC unroll 8
  for (int k = 0; k < kDenseRowFilters; ++k)
#pragma GCC unroll 4
    for (int v = 0; v < DNV; ++v) acc[k][v] = VT::zero();
  typename VT::Mask tail[DNV];
  if (kMode == ChunkMode::kTail) {
#pragma GCC unroll 4
    for (int v = 0; v < DNV; ++v) tail[v] = VT::mask(n - int64_t(v) * L);
  }
  for (int64_t t = 0; t < ntaps; ++t) {
    const typename VT::T* s = src[t] + so + u;
    if (kMode == ChunkMode::kWhole ||
        (kMode == ChunkMode::kBorder && lo[t] <= u && u + int64_t(DNV) * L <= hi[t])) {
      dense_rows_tap<VT, DNV, false, false>(acc, s, w[t], nullptr);
      continue;
    }
    if (kMode == ChunkMode::kTail) {
      dense_rows_tap<VT, DNV, true, false>(acc, s, w[t], tail);
      continue;
    }
    typename VT::Mask m[DNV];
#pragma GCC unroll 4
    for (int v = 0; v < DNV; ++v) {
      const int64_t at = u + int64_t(v) * L;
      m[v] = VT::mask_range(lo[t] - at, std::min(hi[t], u + n) - at);
    }
    dense_rows_tap<VT, DNV, true, true>(acc, s, w[t], m);
  }
#pragma GCC unroll 8
  for (int k = 0; k < kDenseRowFilters; ++k)
#pragma GCC unroll 4
    for (int v = 0; v < DNV; ++v) acc_out[k * DNV + v] = acc[k][v];
}

// The chunk at column u (n columns, NV accumulator vectors) into the nk filters' rows:
// bias, ReLU, stores (masked past n). Inlined: as a call of its own, the 3×3/2 RGB stem's
// forward measured 7 % slower (Zen 4).
template <class VT, int NV>
[[gnu::always_inline]] inline void dense_rows_chunk_out(
    int64_t ntaps, const typename VT::T* const* src, int64_t so, const int64_t* lo,
    const int64_t* hi, const typename VT::T* const* w, int64_t u, int64_t n, bool valid,
    int64_t nk, const typename VT::T* bias, bool relu, typename VT::T* orow, int64_t out_ks) {
  using V = typename VT::V;
  constexpr int L = VT::kLanes;
  const bool whole = n == int64_t(NV) * L;
  V acc[kDenseRowFilters * NV];
  if (whole && valid)
    dense_rows_chunk<VT, NV, ChunkMode::kWhole>(ntaps, src, so, lo, hi, w, u, n, acc);
  else if (valid)
    dense_rows_chunk<VT, NV, ChunkMode::kTail>(ntaps, src, so, lo, hi, w, u, n, acc);
  else
    dense_rows_chunk<VT, NV, ChunkMode::kBorder>(ntaps, src, so, lo, hi, w, u, n, acc);
  for (int64_t k = 0; k < nk; ++k) {
    const V bv = bias ? VT::broadcast(bias + k) : VT::zero();
    typename VT::T* o = orow + k * out_ks + u;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      V r = acc[k * NV + v];
      if (bias) r = VT::add(r, bv);
      if (relu) r = VT::relu(r);
      if (whole) VT::storeu(o + v * L, r);
      else VT::store_masked(o + v * L, VT::mask(n - int64_t(v) * L), r);
    }
  }
}

template <class VT, int DNV>
void dense_rows(int64_t rows, int64_t len, int64_t ntaps, const typename VT::T* const* src,
                int64_t src_rs, const int64_t* lo, const int64_t* hi,
                const typename VT::T* const* w, int64_t nk, const typename VT::T* bias,
                bool relu, typename VT::T* out, int64_t out_ks, int64_t out_rs) {
  using T = typename VT::T;
  using V = typename VT::V;
  constexpr int L = VT::kLanes;
  constexpr int64_t CW = int64_t(DNV) * L;
  int64_t ilo = 0, ihi = len;  // columns where every tap is valid
  for (int64_t t = 0; t < ntaps; ++t) {
    ilo = std::max(ilo, lo[t]);
    ihi = std::min(ihi, hi[t]);
  }
  // Columns no tap reaches (reached_columns): each filter's empty-sum epilogue.
  int64_t u_begin, u_end;
  reached_columns(ntaps, lo, hi, len, u_begin, u_end);
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t so = i * src_rs;
    T* orow = out + i * out_rs;
    for (int64_t k = 0; k < nk; ++k) {
      const V c = empty_sum_epilogue<VT>(bias ? bias + k : nullptr, relu);
      fill_columns<VT>(orow + k * out_ks, 0, u_begin, c);
      fill_columns<VT>(orow + k * out_ks, u_end, len, c);
    }
    for (int64_t u = u_begin; u < u_end; u += CW) {
      const int64_t n = std::min(CW, u_end - u);
      const bool valid = u >= ilo && u + n <= ihi;  // every tap valid on the n columns
      if (DNV > 1 && n <= L)
        dense_rows_chunk_out<VT, 1>(ntaps, src, so, lo, hi, w, u, n, valid, nk, bias, relu,
                                    orow, out_ks);
      else
        dense_rows_chunk_out<VT, DNV>(ntaps, src, so, lo, hi, w, u, n, valid, nk, bias,
                                      relu, orow, out_ks);
    }
  }
}

// Dense rows' weight gradient (DenseRowsWgradFn): TB taps × KB filters of partial-sum
// vectors in registers while the rows stream past; per column vector TB source loads and KB
// dy loads feed TB·KB FMAs. A block's taps past ntaps or filters past nk load zeros and are
// never stored. The vectors where some tap of the block is clipped (the borders and the
// tail) run apart from the interior loop: each tap's lanes masked (loads and FMAs: padding
// never read or multiplied). (A branch per vector that chose between the two measured
// 1.65 against 1.50 ms on a 3×3/2 RGB stem, Zen 3, 2 threads. Blocks of rows, each running
// every tap block so that its rows stay in L1, measured slower at every block size: the
// blocks' setup and partial-sum round trips cost more than the L2 reads they save.)
// Filter blocks are the outer loop: a block's dy planes (KB planes of the rows) are read
// once per tap block, so they stay in L2 while the taps' source rows (a few input planes)
// are re-read. With the taps outer, every filter's dy was streamed again per tap block, from
// L3 once an image's dy outgrew L2 (the 7×7/2 stem: 64 planes of 112 × 112, 3.2 MB). Each
// (tap, filter) sum is formed in the same order either way, so the result is bitwise the
// same. 7×7/2 RGB stem, batch 16: Zen 4, 2 threads, 28.1 → 26.3 ms (builds alternating,
// median of 6); 16-core Xeon, 16 threads, 299 → 441–504 GFLOP/s. 5×20/2 one-channel speech
// layer (Zen 4, 2 threads): 2.57 → 2.39 ms.
template <class VT, int TB, int KB>
void dense_rows_wgrad(int64_t rows, int64_t len, int64_t ntaps, const typename VT::T* const* src,
                      int64_t src_rs, const int64_t* lo, const int64_t* hi,
                      const typename VT::T* dy, int64_t nk, int64_t dy_ks, int64_t dy_rs,
                      typename VT::T* const* acc) {
  using T = typename VT::T;
  using V = typename VT::V;
  using Mask = typename VT::Mask;
  constexpr int L = VT::kLanes;
  for (int64_t k0 = 0; k0 < nk; k0 += KB) {
    const int64_t kn = std::min<int64_t>(KB, nk - k0);
    const T* d[KB];
#pragma GCC unroll 8
    for (int k = 0; k < KB; ++k) d[k] = dy + (k0 + (k < kn ? k : 0)) * dy_ks;
    for (int64_t t0 = 0; t0 < ntaps; t0 += TB) {
      const int64_t nt = std::min<int64_t>(TB, ntaps - t0);
      int64_t ilo = 0, ihi = len;  // columns where every tap of the block is valid
      for (int64_t j = 0; j < nt; ++j) {
        ilo = std::max(ilo, lo[t0 + j]);
        ihi = std::min(ihi, hi[t0 + j]);
      }
      // Vectors on the grid from u_begin up to reach_hi (past it no tap of the block reaches:
      // nothing to add, lanes kept); whole and inside every tap's range in [f0, f1).
      int64_t reach_lo, reach_hi;
      reached_columns(nt, lo + t0, hi + t0, len, reach_lo, reach_hi);
      const int64_t u_begin = reach_lo / L * L;
      const int64_t f0 = std::min(u_begin + std::max<int64_t>(0, (ilo - u_begin + L - 1) / L) * L,
                                  reach_hi);
      const int64_t f1 = ihi - f0 >= L ? f0 + (ihi - f0) / L * L : f0;
      const T* s[TB];
#pragma GCC unroll 8
      for (int j = 0; j < TB; ++j) s[j] = src[t0 + (j < nt ? j : 0)];
      V a[TB][KB];
#pragma GCC unroll 8
      for (int j = 0; j < TB; ++j)
#pragma GCC unroll 8
        for (int k = 0; k < KB; ++k)
          a[j][k] = j < nt && k < kn ? VT::loadu(acc[t0 + j] + (k0 + k) * L) : VT::zero();
      // One clipped vector at u of row offsets (so, dof).
      auto border = [&](int64_t so, int64_t dof, int64_t u) {
        const int64_t n = std::min<int64_t>(L, len - u);
        const Mask tail = VT::mask(n);
        V dv[KB];
#pragma GCC unroll 8
        for (int k = 0; k < KB; ++k) dv[k] = VT::load_masked(d[k] + dof + u, tail);
#pragma GCC unroll 8
        for (int j = 0; j < TB; ++j) {
          const int64_t t = t0 + (j < nt ? j : 0);
          const Mask m = VT::mask_range(lo[t] - u, std::min(hi[t], u + n) - u);
          const V sv = VT::load_masked(s[j] + so + u, m);
#pragma GCC unroll 8
          for (int k = 0; k < KB; ++k) a[j][k] = VT::fmadd_masked(sv, dv[k], a[j][k], m);
        }
      };
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t so = i * src_rs, dof = i * dy_rs;
        for (int64_t u = u_begin; u < f0; u += L) border(so, dof, u);
        for (int64_t u = f0; u < f1; u += L) {
          if constexpr (TB <= KB) {
            // Hold the source vectors, stream dy: TB·KB + TB + 1 registers (16 for AVX2's
            // 3 × 4).
            V sv[TB];
#pragma GCC unroll 8
            for (int j = 0; j < TB; ++j) sv[j] = VT::loadu(s[j] + so + u);
#pragma GCC unroll 8
            for (int k = 0; k < KB; ++k) {
              const V dv = VT::loadu(d[k] + dof + u);
#pragma GCC unroll 8
              for (int j = 0; j < TB; ++j) a[j][k] = VT::fmadd(sv[j], dv, a[j][k]);
            }
          } else {
            V dv[KB];
#pragma GCC unroll 8
            for (int k = 0; k < KB; ++k) dv[k] = VT::loadu(d[k] + dof + u);
#pragma GCC unroll 8
            for (int j = 0; j < TB; ++j) {
              const V sv = VT::loadu(s[j] + so + u);
#pragma GCC unroll 8
              for (int k = 0; k < KB; ++k) a[j][k] = VT::fmadd(sv, dv[k], a[j][k]);
            }
          }
        }
        for (int64_t u = f1; u < reach_hi; u += L) border(so, dof, u);
      }
#pragma GCC unroll 8
      for (int j = 0; j < TB; ++j)
#pragma GCC unroll 8
        for (int k = 0; k < KB; ++k)
          if (j < nt && k < kn) VT::storeu(acc[t0 + j] + (k0 + k) * L, a[j][k]);
    }
  }
}

// The family for one target: NCHW rows of NV vectors, NHWC blocks of PB pixels × NV
// vectors, TC taps' gradient sums in registers, dense rows of DNV vectors, dense gradient
// blocks of DTB taps × DKB filters.
template <class VT, int NV, int PB, int TC, int DNV, int DTB, int DKB>
DwconvUkernel<typename VT::T> dwconv_family(const char* name) {
  return {&dw_rows<VT, NV>, &dw_rows_wgrad<VT, TC>, &dw_pixels<VT, PB, NV>,
          &dw_pixels_wgrad<VT, TC>, &dw_split2<VT>, VT::kLanes, name, &dense_rows<VT, DNV>,
          &dense_rows_wgrad<VT, DTB, DKB>};
}

}  // namespace
}  // namespace convcore::kernels::CONVCORE_KERNEL_NS
