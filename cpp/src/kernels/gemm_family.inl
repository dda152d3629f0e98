// The gemm family — packed, offset-B (whole or in segments), indirect-A and gathered tiles (contracts in
// kernels.hpp) — written once over a vector-traits type and instantiated by each target TU.
//
// Included only by the target TUs (kernels/<target>/kernels_<target>.cpp), each compiled
// with its own -m flags, after they define CONVCORE_KERNEL_NS: every function here then
// lives in convcore::kernels::<target> with internal linkage, so no inline SIMD code is
// shared between flag sets (the linker could otherwise keep a wide-ISA copy for everyone).
// Hence no include guard, and never include this from a baseline TU.
//
// The traits type VT (kernels/<target>/traits.hpp) provides:
//   T, V (one register of kLanes T), Mask; zero(), broadcast(const T*), load(const T*)
//   (vector-aligned), loadu(const T*), fmadd(a, b, c) = a·b + c, add(a, b), storeu(T*, V);
//   max(a, b) = a > b ? a : b per lane (b where either is NaN; the Winograd epilogue's ReLU);
//   mask(count): the first count lanes, count clamped to [0, kLanes];
//   load_masked(const T*, Mask) (lanes off read as 0, their memory untouched) and
//   store_masked(T*, Mask, V); for the interleaving transpose, permute(v, idx) (lane l =
//   lane idx[l] of v) and Lanes, lanes(bits), select(m, a, b) (lane l from b where bit l is
//   set, else from a).
// Every target performs the same operations in the same order, so a target's results
// depend only on its fmadd (fused or not) — bitwise reproducible per target.
#if !defined(CONVCORE_KERNEL_NS)
#error "define CONVCORE_KERNEL_NS (the target's namespace) before including gemm_family.inl"
#endif

#include "kernels.hpp"

namespace convcore::kernels::CONVCORE_KERNEL_NS {
namespace {

// Where the operands come from: both packed, B through an offset table, or A through row
// pointers.
enum class Operands { kPacked, kOffsetB, kIndirectA };

// Tile shape: MR rows broadcast from A times NR = NV·kLanes columns of B, MR·NV register
// accumulators. Edge tiles (m < MR or n < NR) run the same loop and mask the stores, so
// every element of C is computed by the same instruction sequence wherever its tile lies.

// acc += kc steps of A·B (A packed or through row pointers a_rows[i] + p, B packed or
// through offsets); advances b past the steps when B is packed.
template <class VT, int MR, int NV, Operands kOps>
[[gnu::always_inline]] inline void madd_steps(typename VT::V (&acc)[MR][NV], int64_t kc,
                                              const typename VT::T* __restrict a,
                                              const typename VT::T* const* a_rows,
                                              const typename VT::T* __restrict& b,
                                              const int64_t* __restrict b_off) {
  using V = typename VT::V;
  constexpr int L = VT::kLanes;
  constexpr int NR = L * NV;
#pragma GCC unroll 2
  for (int64_t p = 0; p < kc; ++p) {
    V bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v)
      bv[v] = kOps == Operands::kOffsetB ? VT::loadu(b + b_off[p] + v * L) : VT::load(b + v * L);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      const V ai = VT::broadcast(kOps == Operands::kIndirectA ? a_rows[i] + p : a + i);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] = VT::fmadd(ai, bv[v], acc[i][v]);
    }
    if (kOps != Operands::kIndirectA) a += MR;
    if (kOps != Operands::kOffsetB) b += NR;
  }
}

// C[0:m, 0:n] = act((accumulate ? C : 0) + acc + bias): bias[j] per column j when bias is
// given, then ReLU (x < 0 ? 0 : x, NaN kept) when relu — the operations, in the order, of
// the executors' separate BiasActivation pass, so fusing changes no bit.
template <class VT, int MR, int NV>
[[gnu::always_inline]] inline void store_tile(const typename VT::V (&acc)[MR][NV],
                                              typename VT::T* __restrict c, int64_t ldc,
                                              int64_t m, int64_t n, bool accumulate,
                                              const typename VT::T* bias, bool relu) {
  using T = typename VT::T;
  using V = typename VT::V;
  constexpr int L = VT::kLanes;
  constexpr int NR = L * NV;
  const bool full = m == MR && n == NR;
  typename VT::Mask mask[NV];
  V bv[NV] = {};
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    mask[v] = VT::mask(n - v * L);
    if (bias) bv[v] = full ? VT::loadu(bias + v * L) : VT::load_masked(bias + v * L, mask[v]);
  }
  const auto finish = [&](V r, int v) {
    if (bias) r = VT::add(r, bv[v]);
    if (relu) r = VT::max(VT::zero(), r);
    return r;
  };
  if (full) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      T* ci = c + i * ldc;
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        V r = acc[i][v];
        if (accumulate) r = VT::add(VT::loadu(ci + v * L), r);
        VT::storeu(ci + v * L, finish(r, v));
      }
    }
    return;
  }
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
    if (i >= m) break;
    T* ci = c + i * ldc;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      V r = acc[i][v];
      if (accumulate) r = VT::add(VT::load_masked(ci + v * L, mask[v]), r);
      VT::store_masked(ci + v * L, mask[v], finish(r, v));
    }
  }
}

template <class VT, int MR, int NV>
[[gnu::always_inline]] inline void zero_tile(typename VT::V (&acc)[MR][NV]) {
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = VT::zero();
}

template <class VT, int MR, int NV, Operands kOps>
void gemm_tile(int64_t kc, const typename VT::T* __restrict a,
               const typename VT::T* __restrict b, const int64_t* __restrict b_off,
               typename VT::T* __restrict c, int64_t ldc, int64_t m, int64_t n,
               bool accumulate) {
  typename VT::V acc[MR][NV];
  zero_tile<VT, MR, NV>(acc);
  madd_steps<VT, MR, NV, kOps>(acc, kc, a, nullptr, b, b_off);
  store_tile<VT, MR, NV>(acc, c, ldc, m, n, accumulate, nullptr, false);
}

template <class VT, int MR, int NV>
void packed(int64_t kc, const typename VT::T* a, const typename VT::T* b, typename VT::T* c,
            int64_t ldc, int64_t m, int64_t n, bool accumulate) {
  gemm_tile<VT, MR, NV, Operands::kPacked>(kc, a, b, nullptr, c, ldc, m, n, accumulate);
}
template <class VT, int MR, int NV>
void offset_b(int64_t kc, const typename VT::T* a, const typename VT::T* b, const int64_t* b_off,
              typename VT::T* c, int64_t ldc, int64_t m, int64_t n, bool accumulate) {
  gemm_tile<VT, MR, NV, Operands::kOffsetB>(kc, a, b, b_off, c, ldc, m, n, accumulate);
}
// Segment s (of nseg) runs seg_len[s] steps from step seg_begin[s] of the packed A panel
// and of the offset table; the accumulators stay in registers across every segment (the
// steps between segments are skipped: pixels whose tap lies in the padding).
template <class VT, int MR, int NV>
void offset_b_segments(int64_t nseg, const int64_t* seg_begin, const int64_t* seg_len,
                       const typename VT::T* a, const typename VT::T* b,
                       const int64_t* b_off, typename VT::T* c, int64_t ldc, int64_t m,
                       int64_t n, bool accumulate) {
  typename VT::V acc[MR][NV];
  zero_tile<VT, MR, NV>(acc);
  for (int64_t s = 0; s < nseg; ++s) {
    const typename VT::T* bs = b;
    madd_steps<VT, MR, NV, Operands::kOffsetB>(acc, seg_len[s], a + seg_begin[s] * MR, nullptr,
                                               bs, b_off + seg_begin[s]);
  }
  store_tile<VT, MR, NV>(acc, c, ldc, m, n, accumulate, nullptr, false);
}
// Segment s (of nseg) reads seg_len[s] steps of A through a_rows[s·MR + i] and of B from
// row seg_off[s] of the panel; the accumulators stay in registers across every segment
// (every tap of a KC block that the tile's pixels reach).
template <class VT, int MR, int NV>
void indirect_a(int64_t nseg, const int64_t* seg_len, const int64_t* seg_off,
                const typename VT::T* const* a_rows, const typename VT::T* b,
                typename VT::T* c, int64_t ldc, int64_t m, int64_t n, bool accumulate,
                const typename VT::T* bias, bool relu) {
  constexpr int NR = NV * VT::kLanes;
  typename VT::V acc[MR][NV];
  zero_tile<VT, MR, NV>(acc);
  for (int64_t s = 0; s < nseg; ++s) {
    const typename VT::T* bs = b + seg_off[s] * NR;
    madd_steps<VT, MR, NV, Operands::kIndirectA>(acc, seg_len[s], nullptr, a_rows + s * MR, bs,
                                                 nullptr);
  }
  store_tile<VT, MR, NV>(acc, c, ldc, m, n, accumulate, bias, relu);
}

// acc += kc steps of A(i, p) = a_rows[i][a_off[p]] times the row of B at b + b_off[p],
// whose vectors are read whole (kFull) or through `mask`.
template <class VT, int MR, int NV, bool kFull>
[[gnu::always_inline]] inline void madd_gathered(typename VT::V (&acc)[MR][NV], int64_t kc,
                                                 const typename VT::T* const* a_rows,
                                                 const int64_t* __restrict a_off,
                                                 const typename VT::T* __restrict b,
                                                 const int64_t* __restrict b_off,
                                                 const typename VT::Mask (&mask)[NV]) {
  using V = typename VT::V;
  constexpr int L = VT::kLanes;
  for (int64_t p = 0; p < kc; ++p) {
    const typename VT::T* bp = b + b_off[p];
    const int64_t o = a_off[p];
    V bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v)
      bv[v] = kFull ? VT::loadu(bp + v * L) : VT::load_masked(bp + v * L, mask[v]);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      const V ai = VT::broadcast(a_rows[i] + o);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] = VT::fmadd(ai, bv[v], acc[i][v]);
    }
  }
}

// The same steps for a tall one-vector tile (the narrow 28×1 and 12×1 tiles), in blocks of
// kGatherBlock steps, each block's rows in phases of PR: a phase holds its PR row pointers
// in registers and runs the block's steps, B's vector reloaded per phase (from L1). With
// every row in one loop the 28 row pointers did not fit the general registers: half of
// them were reloaded from the stack every step (3×3/2 RGB stem's NHWC weight gradient: the
// tile at 83 % of the FMA peak, Zen 4). Each accumulator still adds its steps in order.
constexpr int64_t kGatherBlock = 32;
template <class VT, int MR, int PR, bool kFull>
[[gnu::always_inline]] inline void madd_gathered_phased(typename VT::V (&acc)[MR][1],
                                                        int64_t kc,
                                                        const typename VT::T* const* a_rows,
                                                        const int64_t* __restrict a_off,
                                                        const typename VT::T* __restrict b,
                                                        const int64_t* __restrict b_off,
                                                        typename VT::Mask mask) {
  static_assert(MR % PR == 0, "phases of whole rows");
  using V = typename VT::V;
  for (int64_t p0 = 0; p0 < kc; p0 += kGatherBlock) {
    const int64_t p1 = kc - p0 < kGatherBlock ? kc : p0 + kGatherBlock;
#pragma GCC unroll 8
    for (int ph = 0; ph < MR / PR; ++ph) {
      const typename VT::T* ar[PR];
#pragma GCC unroll 16
      for (int i = 0; i < PR; ++i) ar[i] = a_rows[ph * PR + i];
      for (int64_t p = p0; p < p1; ++p) {
        const typename VT::T* bp = b + b_off[p];
        const int64_t o = a_off[p];
        const V bv = kFull ? VT::loadu(bp) : VT::load_masked(bp, mask);
#pragma GCC unroll 16
        for (int i = 0; i < PR; ++i)
          acc[ph * PR + i][0] = VT::fmadd(VT::broadcast(ar[i] + o), bv, acc[ph * PR + i][0]);
      }
    }
  }
}

// Rows per phase of a tall one-vector tile (0: no phases).
template <int MR, int NV>
constexpr int gather_phase_rows() {
  return NV != 1 || MR <= 8 ? 0 : MR % 7 == 0 ? 7 : MR % 6 == 0 ? 6 : 0;
}

template <class VT, int MR, int NV>
void gather(int64_t kc, const typename VT::T* const* a_rows, const int64_t* a_off,
            const typename VT::T* b, const int64_t* b_off, typename VT::T* c, int64_t ldc,
            int64_t m, int64_t n, bool accumulate) {
  constexpr int L = VT::kLanes;
  typename VT::V acc[MR][NV];
  typename VT::Mask mask[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) mask[v] = VT::mask(n - v * L);
  zero_tile<VT, MR, NV>(acc);
  constexpr int PR = gather_phase_rows<MR, NV>();
  if constexpr (PR > 0) {
    if (n == L)
      madd_gathered_phased<VT, MR, PR, true>(acc, kc, a_rows, a_off, b, b_off, mask[0]);
    else
      madd_gathered_phased<VT, MR, PR, false>(acc, kc, a_rows, a_off, b, b_off, mask[0]);
  } else {
    if (n == NV * L)
      madd_gathered<VT, MR, NV, true>(acc, kc, a_rows, a_off, b, b_off, mask);
    else
      madd_gathered<VT, MR, NV, false>(acc, kc, a_rows, a_off, b, b_off, mask);
  }
  store_tile<VT, MR, NV>(acc, c, ldc, m, n, accumulate, nullptr, false);
}

// A few rows (M ≤ kInterleaveMaxRows) into back-to-back rows of M (ldd = M: an RGB image's
// planes to pixel rows): each block of kLanes columns is M loads, M output vectors, each
// the M rows permuted to its lanes and selected — M² permutes per M·kLanes values instead
// of a kLanes × kLanes register transpose with M useful rows and kLanes short stores
// (AlexNet conv1's NCHW forward through via_nhwc, whose input is 3 planes: 8.44 → 8.30 ms,
// Zen 4, 2 threads, builds alternating; its weight gradient's transposes are mostly of dy
// and did not change). The column tail runs the same steps on masked loads, its last output
// vector stored masked. Values are moved, never combined.
constexpr int kInterleaveMaxRows = 4;
template <int L, int M>
struct InterleaveTable {
  // Output vector k of a block (M·L values) takes lane l from row (k·L + l) % M, lane
  // (k·L + l) / M: idx[k] for every row, bits[k][row] the lanes that row fills.
  int32_t idx[M][L];
  uint32_t bits[M][M];
  constexpr InterleaveTable() : idx(), bits() {
    for (int k = 0; k < M; ++k)
      for (int l = 0; l < L; ++l) {
        idx[k][l] = (k * L + l) / M;
        bits[k][(k * L + l) % M] |= 1u << l;
      }
  }
};
template <class VT, int M>
void interleave_rows(const typename VT::T* src, int64_t lds, typename VT::T* dst,
                     int64_t cols) {
  using V = typename VT::V;
  constexpr int L = VT::kLanes;
  static constexpr InterleaveTable<L, M> kTable{};
  typename VT::Lanes from[M][M];
#pragma GCC unroll 4
  for (int k = 0; k < M; ++k)
#pragma GCC unroll 4
    for (int c = 1; c < M; ++c) from[k][c] = VT::lanes(kTable.bits[k][c]);
  for (int64_t j0 = 0; j0 < cols; j0 += L) {
    const int64_t n = cols - j0 < L ? cols - j0 : L;
    V r[M];
    if (n == L) {
#pragma GCC unroll 4
      for (int c = 0; c < M; ++c) r[c] = VT::loadu(src + c * lds + j0);
    } else {
      const typename VT::Mask in = VT::mask(n);
#pragma GCC unroll 4
      for (int c = 0; c < M; ++c) r[c] = VT::load_masked(src + c * lds + j0, in);
    }
    typename VT::T* d = dst + j0 * M;
#pragma GCC unroll 4
    for (int k = 0; k < M; ++k) {
      V o = VT::permute(r[0], kTable.idx[k]);
#pragma GCC unroll 4
      for (int c = 1; c < M; ++c) o = VT::select(from[k][c], o, VT::permute(r[c], kTable.idx[k]));
      const int64_t left = n * M - k * L;  // values of the block from this vector on
      if (left >= L) VT::storeu(d + k * L, o);
      else if (left > 0) VT::store_masked(d + k * L, VT::mask(left), o);
    }
  }
}

// The TransposeFn contract (kernels.hpp): whole kLanes × kLanes blocks loaded, transposed
// in registers and stored; edge blocks through masks. A block row of kLanes whole rows (the
// common case: layout copies, weight packing) runs its whole blocks with the row
// addresses stepped once per block, then its column tail with masked loads and plain
// stores. (The single loop with both cases inside kept the sixteen row pointers on the
// stack: 1.7× slower on 256 × 9 filters, Zen 4.)
template <class VT>
void transpose(const typename VT::T* src, int64_t lds, typename VT::T* dst, int64_t ldd,
               int64_t rows, int64_t cols) {
  using T = typename VT::T;
  constexpr int L = VT::kLanes;
  typename VT::V r[L];
  const int64_t cols_whole = cols / L * L;
  for (int64_t i0 = 0; i0 < rows; i0 += L) {
    const int64_t m = rows - i0 < L ? rows - i0 : L;
    const T* s = src + i0 * lds;
    T* d = dst + i0;
    if (m == L) {
      int64_t j0 = 0;
      for (; j0 < cols_whole; j0 += L) {
#pragma GCC unroll 16
        for (int i = 0; i < L; ++i) r[i] = VT::loadu(s + j0 + i * lds);
        VT::transpose(r);
#pragma GCC unroll 16
        for (int j = 0; j < L; ++j) VT::storeu(d + j0 * ldd + j * ldd, r[j]);
      }
      if (j0 < cols) {
        const int64_t n = cols - j0;
        const typename VT::Mask in = VT::mask(n);
#pragma GCC unroll 16
        for (int i = 0; i < L; ++i) r[i] = VT::load_masked(s + j0 + i * lds, in);
        VT::transpose(r);
        for (int64_t j = 0; j < n; ++j) VT::storeu(d + (j0 + j) * ldd, r[j]);
      }
      continue;
    }
    if (i0 == 0 && ldd == m && m <= kInterleaveMaxRows) {
      switch (m) {
        case 1: interleave_rows<VT, 1>(s, lds, dst, cols); return;
        case 2: interleave_rows<VT, 2>(s, lds, dst, cols); return;
        case 3: interleave_rows<VT, 3>(s, lds, dst, cols); return;
        default: interleave_rows<VT, 4>(s, lds, dst, cols); return;
      }
    }
    const typename VT::Mask out = VT::mask(m);
    if (!VT::kCheapMaskedStore && i0 == 0 && ldd == m) {
      // Fewer than kLanes rows written as back-to-back rows of m (an RGB image's planes to
      // pixel rows): whole-vector stores in column order, each one's lanes past m
      // overwritten by the next column's; only the stores that would run past the end are
      // masked. A loop of its own: folded into the masked loop below (a flag per store), the
      // 3×3/2 RGB stem through via_nhwc measured 2.35–2.58 against 1.90–2.18 ms (Zen 3).
      const int64_t end = cols * ldd;
      for (int64_t j0 = 0; j0 < cols; j0 += L) {
        const int64_t n = cols - j0 < L ? cols - j0 : L;
        const typename VT::Mask in = VT::mask(n);
#pragma GCC unroll 16
        for (int i = 0; i < L; ++i)
          r[i] = i >= m ? VT::zero()
                 : n == L ? VT::loadu(s + j0 + i * lds)
                          : VT::load_masked(s + j0 + i * lds, in);
        VT::transpose(r);
        if (n == L && (j0 + L - 1) * ldd + L <= end) {  // registers only, no spill
#pragma GCC unroll 16
          for (int j = 0; j < L; ++j) VT::storeu(d + (j0 + j) * ldd, r[j]);
          continue;
        }
        for (int64_t j = 0; j < n; ++j) {
          const int64_t at = (j0 + j) * ldd;
          if (at + L <= end) VT::storeu(d + at, r[j]);
          else VT::store_masked(d + at, out, r[j]);
        }
      }
      return;
    }
    for (int64_t j0 = 0; j0 < cols; j0 += L) {
      const int64_t n = cols - j0 < L ? cols - j0 : L;
      const typename VT::Mask in = VT::mask(n);
#pragma GCC unroll 16
      for (int i = 0; i < L; ++i) r[i] = i < m ? VT::load_masked(s + j0 + i * lds, in) : VT::zero();
      VT::transpose(r);
      for (int64_t j = 0; j < n; ++j) VT::store_masked(d + (j0 + j) * ldd, out, r[j]);
    }
  }
}

// The family for one tile shape: MR rows × NV vectors of VT.
template <class VT, int MR, int NV>
GemmUkernel<typename VT::T> gemm_family(const char* name) {
  return {&packed<VT, MR, NV>, &offset_b<VT, MR, NV>, &offset_b_segments<VT, MR, NV>,
          &indirect_a<VT, MR, NV>, &gather<VT, MR, NV>, MR, NV * VT::kLanes, name};
}

}  // namespace
}  // namespace convcore::kernels::CONVCORE_KERNEL_NS
