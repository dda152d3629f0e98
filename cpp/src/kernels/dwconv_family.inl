// The dwconv family — depthwise convolution rows (NCHW) and pixels (NHWC), forward-style
// and weight-gradient (contracts in kernels.hpp) — written once over a vector-traits type
// and instantiated by each target TU, like gemm_family.inl (same inclusion rules: only
// from a target TU after it defines CONVCORE_KERNEL_NS; no include guard).
//
// Beyond gemm_family.inl's interface the traits type VT provides
//   mask_range(lo, hi): lanes [lo, hi) on (clamped to [0, kLanes]);
//   fmadd_masked(a, b, c, m): a·b + c on the lanes of m, c unchanged on the others;
//   relu(v): 0 where v < 0, v elsewhere (NaN kept).
// Padding is never multiplied: the NCHW kernels mask each tap's lanes to the columns whose
// source lies in the image (the load does not touch the others and the FMA leaves their
// accumulators alone); the NHWC kernels receive only the taps that lie in the image.
#if !defined(CONVCORE_KERNEL_NS)
#error "define CONVCORE_KERNEL_NS (the target's namespace) before including dwconv_family.inl"
#endif

#include <algorithm>

#include "kernels.hpp"

namespace convcore::kernels::CONVCORE_KERNEL_NS {
namespace {

// NCHW rows: columns in chunks of NV vectors. A chunk inside every tap's valid range runs
// unmasked (only the row's tail vector masked); a border chunk masks each tap's lanes.
template <class VT, int NV>
void dw_rows(int64_t rows, int64_t len, int64_t ntaps, const typename VT::T* const* src,
             int64_t src_rs, const int64_t* lo, const int64_t* hi, const typename VT::T* w,
             const typename VT::T* bias, bool relu, bool accumulate, typename VT::T* out,
             int64_t out_rs) {
  using T = typename VT::T;
  using V = typename VT::V;
  using Mask = typename VT::Mask;
  constexpr int L = VT::kLanes;
  constexpr int64_t CW = int64_t(NV) * L;
  int64_t ilo = 0, ihi = len;  // columns where every tap is valid
  for (int64_t t = 0; t < ntaps; ++t) {
    ilo = std::max(ilo, lo[t]);
    ihi = std::min(ihi, hi[t]);
  }
  const V bv = bias ? VT::broadcast(bias) : VT::zero();
  for (int64_t i = 0; i < rows; ++i) {
    T* o = out + i * out_rs;
    const int64_t so = i * src_rs;
    for (int64_t u = 0; u < len; u += CW) {
      const int64_t n = std::min(CW, len - u);
      V acc[NV];
      Mask tail[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        acc[v] = VT::zero();
        tail[v] = VT::mask(n - v * L);
      }
      if (u >= ilo && u + n <= ihi) {
        if (n == CW) {
          for (int64_t t = 0; t < ntaps; ++t) {
            const V wv = VT::broadcast(w + t);
            const T* s = src[t] + so + u;
#pragma GCC unroll 8
            for (int v = 0; v < NV; ++v) acc[v] = VT::fmadd(VT::loadu(s + v * L), wv, acc[v]);
          }
        } else {
          for (int64_t t = 0; t < ntaps; ++t) {
            const V wv = VT::broadcast(w + t);
            const T* s = src[t] + so + u;
#pragma GCC unroll 8
            for (int v = 0; v < NV; ++v)
              acc[v] = VT::fmadd(VT::load_masked(s + v * L, tail[v]), wv, acc[v]);
          }
        }
      } else {
        for (int64_t t = 0; t < ntaps; ++t) {
          const int64_t a = lo[t], b = std::min(hi[t], u + n);
          if (b <= u || a >= b) continue;
          const V wv = VT::broadcast(w + t);
          const T* s = src[t] + so + u;
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) {
            const int64_t at = u + int64_t(v) * L;
            const Mask m = VT::mask_range(a - at, b - at);
            acc[v] = VT::fmadd_masked(VT::load_masked(s + v * L, m), wv, acc[v], m);
          }
        }
      }
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        V r = acc[v];
        T* ov = o + u + v * L;
        if (accumulate) {
          r = VT::add(VT::load_masked(ov, tail[v]), r);
        } else {
          if (bias) r = VT::add(r, bv);
          if (relu) r = VT::relu(r);
        }
        if (n == CW) VT::storeu(ov, r);
        else VT::store_masked(ov, tail[v], r);
      }
    }
  }
}

// NCHW weight-gradient rows: up to TC taps' partial-sum vectors live in registers while the
// rows stream past; a dy vector is loaded once per column chunk and feeds every tap.
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
    V a[TC];
    const T* s[TC];
#pragma GCC unroll 32
    for (int j = 0; j < TC; ++j) {
      a[j] = j < nt ? VT::loadu(acc[t0 + j]) : VT::zero();
      s[j] = j < nt ? src[t0 + j] : src[t0];
    }
    for (int64_t i = 0; i < rows; ++i) {
      const T* d = dy + i * dy_rs;
      const int64_t so = i * src_rs;
      for (int64_t u = 0; u < len; u += L) {
        const int64_t n = std::min<int64_t>(L, len - u);
        if (n == L && u >= ilo && u + L <= ihi) {
          const V dv = VT::loadu(d + u);
          if (nt == TC) {
#pragma GCC unroll 32
            for (int j = 0; j < TC; ++j) a[j] = VT::fmadd(VT::loadu(s[j] + so + u), dv, a[j]);
          } else {
#pragma GCC unroll 32
            for (int j = 0; j < TC; ++j)
              if (j < nt) a[j] = VT::fmadd(VT::loadu(s[j] + so + u), dv, a[j]);
          }
        } else {
          const V dv = VT::load_masked(d + u, VT::mask(n));
#pragma GCC unroll 32
          for (int j = 0; j < TC; ++j) {
            if (j >= nt) break;
            const int64_t b = std::min(hi[t0 + j], u + n);
            const Mask m = VT::mask_range(lo[t0 + j] - u, b - u);
            a[j] = VT::fmadd_masked(VT::load_masked(s[j] + so + u, m), dv, a[j], m);
          }
        }
      }
    }
#pragma GCC unroll 32
    for (int j = 0; j < TC; ++j)
      if (j < nt) VT::storeu(acc[t0 + j], a[j]);
  }
}

// NHWC: NP pixels × NV channel vectors of accumulators; kFull: all NV vectors in range.
template <class VT, int NP, int NV, bool kFull>
inline void dw_pixels_block(int64_t ntaps, const typename VT::T* const* src, int64_t src_off,
                            int64_t src_ps, const typename VT::T* const* w, int64_t c,
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
  for (int64_t t = 0; t < ntaps; ++t) {
    V wv[NV];
    const T* wt = w[t] + c;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v)
      wv[v] = kFull ? VT::loadu(wt + v * L) : VT::load_masked(wt + v * L, tail[v]);
    const T* s = src[t] + src_off + c;
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

template <class VT, int PB, int NV>
void dw_pixels(int64_t npx, int64_t kc, int64_t ntaps, const typename VT::T* const* src,
               int64_t src_ps, const typename VT::T* const* w, const typename VT::T* bias,
               bool relu, typename VT::T* out, int64_t out_ps) {
  using V = typename VT::V;
  using Mask = typename VT::Mask;
  constexpr int L = VT::kLanes;
  constexpr int64_t CW = int64_t(NV) * L;
  for (int64_t c = 0; c < kc; c += CW) {
    const int64_t n = std::min(CW, kc - c);
    Mask tail[NV];
    V bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      tail[v] = VT::mask(n - v * L);
      bv[v] = bias ? VT::load_masked(bias + c + v * L, tail[v]) : VT::zero();
    }
    const bool has_bias = bias != nullptr;
    int64_t p = 0;
    if (n == CW) {
      for (; p + PB <= npx; p += PB)
        dw_pixels_block<VT, PB, NV, true>(ntaps, src, p * src_ps, src_ps, w, c, bv, has_bias,
                                          relu, tail, out + p * out_ps, out_ps);
      for (; p < npx; ++p)
        dw_pixels_block<VT, 1, NV, true>(ntaps, src, p * src_ps, src_ps, w, c, bv, has_bias,
                                         relu, tail, out + p * out_ps, out_ps);
    } else {
      for (; p + PB <= npx; p += PB)
        dw_pixels_block<VT, PB, NV, false>(ntaps, src, p * src_ps, src_ps, w, c, bv, has_bias,
                                           relu, tail, out + p * out_ps, out_ps);
      for (; p < npx; ++p)
        dw_pixels_block<VT, 1, NV, false>(ntaps, src, p * src_ps, src_ps, w, c, bv, has_bias,
                                          relu, tail, out + p * out_ps, out_ps);
    }
  }
}

// NHWC weight gradient: per channel vector, up to TC taps' sums in registers while the
// pixels stream past; a dy vector is loaded once per pixel and feeds every tap.
template <class VT, int TC>
void dw_pixels_wgrad(int64_t npx, int64_t kc, int64_t ntaps, const typename VT::T* const* src,
                     int64_t src_ps, const typename VT::T* dy, int64_t dy_ps,
                     typename VT::T* const* acc) {
  using T = typename VT::T;
  using V = typename VT::V;
  using Mask = typename VT::Mask;
  constexpr int L = VT::kLanes;
  for (int64_t c = 0; c < kc; c += L) {
    const int64_t n = std::min<int64_t>(L, kc - c);
    const bool full = n == L;
    const Mask m = VT::mask(n);
    for (int64_t t0 = 0; t0 < ntaps; t0 += TC) {
      const int64_t nt = std::min<int64_t>(TC, ntaps - t0);
      V a[TC];
      const T* s[TC];
#pragma GCC unroll 32
      for (int j = 0; j < TC; ++j) {
        a[j] = j >= nt ? VT::zero()
                       : (full ? VT::loadu(acc[t0 + j] + c) : VT::load_masked(acc[t0 + j] + c, m));
        s[j] = (j < nt ? src[t0 + j] : src[t0]) + c;
      }
      if (full && nt == TC) {
        for (int64_t p = 0; p < npx; ++p) {
          const V dv = VT::loadu(dy + p * dy_ps + c);
          const int64_t so = p * src_ps;
#pragma GCC unroll 32
          for (int j = 0; j < TC; ++j) a[j] = VT::fmadd(VT::loadu(s[j] + so), dv, a[j]);
        }
      } else {
        for (int64_t p = 0; p < npx; ++p) {
          const V dv = VT::load_masked(dy + p * dy_ps + c, m);
          const int64_t so = p * src_ps;
#pragma GCC unroll 32
          for (int j = 0; j < TC; ++j)
            if (j < nt) a[j] = VT::fmadd(VT::load_masked(s[j] + so, m), dv, a[j]);
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

// The family for one target: NCHW rows of NV vectors, NHWC blocks of PB pixels × NV
// vectors, TC taps' gradient sums in registers.
template <class VT, int NV, int PB, int TC>
DwconvUkernel<typename VT::T> dwconv_family(const char* name) {
  return {&dw_rows<VT, NV>, &dw_rows_wgrad<VT, TC>, &dw_pixels<VT, PB, NV>,
          &dw_pixels_wgrad<VT, TC>, VT::kLanes, name};
}

}  // namespace
}  // namespace convcore::kernels::CONVCORE_KERNEL_NS
