// Portable vector traits: a "register" is a plain array of 32 bytes of lanes, each
// operation a loop the compiler may auto-vectorise with whatever SIMD the baseline target
// has (SSE2 on x86-64, NEON on arm64) or keep scalar. See gemm_family.inl for the
// interface. Included only by this folder's target TU.
#pragma once

#include <cstdint>

namespace convcore::kernels::generic {

template <typename T_>
struct Vec {
  using T = T_;
  static constexpr int kLanes = static_cast<int>(32 / sizeof(T));
  // the masked store is a loop over the lanes
  static constexpr bool kCheapMaskedStore = false;
  struct V {
    T lane[kLanes];
  };
  struct Mask {  // lanes [lo, hi) are on
    int lo, hi;
  };

  static V zero() {
    V r;
    for (int l = 0; l < kLanes; ++l) r.lane[l] = T(0);
    return r;
  }
  static V broadcast(const T* p) {
    V r;
    for (int l = 0; l < kLanes; ++l) r.lane[l] = *p;
    return r;
  }
  static V loadu(const T* p) {
    V r;
    for (int l = 0; l < kLanes; ++l) r.lane[l] = p[l];
    return r;
  }
  static V load(const T* p) { return loadu(p); }
  // c + a·b as a multiply then an add (the portable baseline has no FMA instruction).
  static V fmadd(V a, V b, V c) {
    for (int l = 0; l < kLanes; ++l) c.lane[l] += a.lane[l] * b.lane[l];
    return c;
  }
  // a > b ? a : b per lane (b where either is NaN): max(zero(), x) is ReLU keeping NaN.
  static V max(V a, V b) {
    for (int l = 0; l < kLanes; ++l) a.lane[l] = a.lane[l] > b.lane[l] ? a.lane[l] : b.lane[l];
    return a;
  }
  static V add(V a, V b) {
    for (int l = 0; l < kLanes; ++l) a.lane[l] = a.lane[l] + b.lane[l];
    return a;
  }
  static void storeu(T* p, V v) {
    for (int l = 0; l < kLanes; ++l) p[l] = v.lane[l];
  }
  static int clamp_lanes(int64_t v) {
    return static_cast<int>(v > kLanes ? kLanes : (v < 0 ? 0 : v));
  }
  static Mask mask(int64_t count) { return Mask{0, clamp_lanes(count)}; }
  // Lanes [lo, hi) on (clamped to [0, kLanes]).
  static Mask mask_range(int64_t lo, int64_t hi) { return Mask{clamp_lanes(lo), clamp_lanes(hi)}; }
  static V load_masked(const T* p, Mask m) {
    V r;
    for (int l = 0; l < kLanes; ++l) r.lane[l] = l >= m.lo && l < m.hi ? p[l] : T(0);
    return r;
  }
  static void store_masked(T* p, Mask m, V v) {
    for (int l = m.lo; l < m.hi; ++l) p[l] = v.lane[l];
  }
  // Lanes on: c + a·b; lanes off: c unchanged.
  static V fmadd_masked(V a, V b, V c, Mask m) {
    for (int l = m.lo; l < m.hi; ++l) c.lane[l] += a.lane[l] * b.lane[l];
    return c;
  }
  // Lane l of the result = lane idx[l] of v (idx: kLanes int32 in [0, kLanes)).
  // even = lanes 0, 2, 4, … of the 2·kLanes values a then b; odd = lanes 1, 3, 5, ….
  static void deinterleave2(V a, V b, V& even, V& odd) {
    for (int l = 0; l < kLanes / 2; ++l) {
      even.lane[l] = a.lane[2 * l];
      odd.lane[l] = a.lane[2 * l + 1];
      even.lane[kLanes / 2 + l] = b.lane[2 * l];
      odd.lane[kLanes / 2 + l] = b.lane[2 * l + 1];
    }
  }
  // select(lanes(bits), a, b): lane l from b where bit l of bits is set, else from a.
  using Lanes = uint32_t;
  static Lanes lanes(uint32_t bits) { return bits; }
  static V select(Lanes m, V a, V b) {
    for (int l = 0; l < kLanes; ++l)
      if (m >> l & 1u) a.lane[l] = b.lane[l];
    return a;
  }
  static V permute(V v, const int32_t* idx) {
    V r;
    for (int l = 0; l < kLanes; ++l) r.lane[l] = v.lane[idx[l]];
    return r;
  }
  // 0 for v < 0, v otherwise (NaN kept).
  static V relu(V v) {
    for (int l = 0; l < kLanes; ++l) v.lane[l] = v.lane[l] < T(0) ? T(0) : v.lane[l];
    return v;
  }
  // r[i] lane j <- r[j] lane i.
  [[gnu::always_inline]] static inline void transpose(V (&r)[kLanes]) {
    for (int i = 0; i < kLanes; ++i)
      for (int j = i + 1; j < kLanes; ++j) {
        const T a = r[i].lane[j];
        r[i].lane[j] = r[j].lane[i];
        r[j].lane[i] = a;
      }
  }
};

}  // namespace convcore::kernels::generic
