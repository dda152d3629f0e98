// Microkernel interface shared by every target folder (kernels/<target>/) and the runtime.
// Only declarations and plain data live here: each target's source is compiled with its
// own -m flags, so no inline SIMD code may be shared between them (the linker could keep a
// wide-ISA copy for everyone). The families themselves are templates (gemm_family.inl)
// instantiated by each target in its own namespace, convcore::kernels::<target>.
#pragma once

#include <cstdint>

namespace convcore::kernels {

// C[0:m, 0:n] (row stride ldc, column stride 1) = (accumulate ? C : 0) + A·B, where
//   a: packed micro-panel of A, kc steps of MR values (a[p*MR + i]), rows >= m zero-padded;
//   b: packed micro-panel of B, kc steps of NR values (b[p*NR + j]), columns >= n zero-padded.
// m <= MR and n <= NR: edge tiles are handled inside the kernel (masked stores), so every
// element is computed by the same instruction sequence whatever the tile position.
template <typename T>
using GemmUkernelFn = void (*)(int64_t kc, const T* a, const T* b, T* c, int64_t ldc,
                               int64_t m, int64_t n, bool accumulate);

// The same tile with B read in place instead of from a packed panel: row p of the
// micro-panel is the NR values at b + b_off[p] (any alignment). Used by the stride-1
// direct convolution, whose B rows are shifted windows of a zero-padded image. All NR
// values of every row must be readable; columns >= n are computed and discarded.
template <typename T>
using GemmUkernelOffsetBFn = void (*)(int64_t kc, const T* a, const T* b, const int64_t* b_off,
                                      T* c, int64_t ldc, int64_t m, int64_t n, bool accumulate);

// The offset-B tile over nseg depth segments: segment s runs seg_len[s] steps from step
// seg_begin[s] — A's packed rows a[p·MR + i] and B's rows at b + b_off[p] for p in
// [seg_begin[s], seg_begin[s] + seg_len[s]) — and the steps outside every segment are
// never read. The accumulators stay in registers across the segments; with none, C is
// left (accumulate) or zeroed. Used by the NHWC weight gradient to skip the pixels whose
// tap lies in the padding, so only in-image rows of B are addressed.
template <typename T>
using GemmUkernelOffsetBSegFn = void (*)(int64_t nseg, const int64_t* seg_begin,
                                         const int64_t* seg_len, const T* a, const T* b,
                                         const int64_t* b_off, T* c, int64_t ldc, int64_t m,
                                         int64_t n, bool accumulate);

// The same tile with A read in place through row pointers instead of from a packed panel,
// in nseg depth segments: segment s is seg_len[s] steps deep, its row i is read at
// a_rows[s·MR + i] (rows >= m must still point at seg_len[s] readable values, e.g. a zero
// buffer) and its B rows start at row seg_off[s] of the packed panel (segments may skip
// rows: taps that none of the tile's pixels reach). The accumulators stay in registers
// across the segments. Used by the NHWC direct convolution, whose rows are pixels and
// whose depth segments are taps' contiguous channel runs (XNNPACK's indirection idea). The
// store may finish the tile: C = act(C + bias[j]) with bias[0:n] per column (none when
// null) and act ReLU (x < 0 ? 0 : x, NaN kept) when relu.
template <typename T>
using GemmUkernelIndirectAFn = void (*)(int64_t nseg, const int64_t* seg_len,
                                        const int64_t* seg_off, const T* const* a_rows,
                                        const T* b, T* c, int64_t ldc, int64_t m, int64_t n,
                                        bool accumulate, const T* bias, bool relu);

// The same tile with both operands gathered in place, one pixel per step: step p reads
// A(i, p) = a_rows[i][a_off[p]] (rows >= m must still be readable there, e.g. a repeat of
// row m − 1) and the n values of B at b + b_off[p] (only those: the loads are masked when
// n < NR). Used by the NHWC weight gradient with the filters on the columns: the rows are
// taps (a tap's input value at each pixel, through the pixel's offset) and B is the
// pixels' output-gradient rows, both read where they lie.
template <typename T>
using GemmUkernelGatherFn = void (*)(int64_t kc, const T* const* a_rows, const int64_t* a_off,
                                     const T* b, const int64_t* b_off, T* c, int64_t ldc,
                                     int64_t m, int64_t n, bool accumulate);

template <typename T>
struct GemmUkernel {
  GemmUkernelFn<T> fn = nullptr;
  GemmUkernelOffsetBFn<T> fn_offset_b = nullptr;
  GemmUkernelOffsetBSegFn<T> fn_offset_b_seg = nullptr;
  GemmUkernelIndirectAFn<T> fn_indirect_a = nullptr;
  GemmUkernelGatherFn<T> fn_gather = nullptr;
  int mr = 0;
  int nr = 0;
  const char* name = "";
};

// Winograd F(4×4, 3×3) transforms (winograd_family.inl), vectorised across tiles: lane t
// of every row is tile t. Points of a 6×6 tile are numbered ξ = 6·row + column.
//   input:  d holds n tiles' 6×6 input patches, point ξ of tile t at d[ξ·n + t]; writes
//           V = Bᵀ·d·B, point ξ of tile t to v[ξ·v_stride + t].
//   output: m holds 36 rows of n tiles, point ξ at m[ξ·m_stride + t]; writes
//           act(Aᵀ·m·A + bias) — bias the value *bias (none when null), act ReLU keeping
//           NaN (x < 0 ? 0 : x) when relu — output (i, j) of tile t to out[(4i + j)·n + t],
//           and out[16·n + t] = 0 when all 16 outputs of tile t were finite before the bias,
//           NaN otherwise (the caller recomputes such tiles by the definition).
//   weight: g holds n 3×3 filter slices, tap 3r + s of slice l at g[(3r + s)·g_stride + l];
//           writes U = G·g·Gᵀ, point ξ of slice l to u[ξ·u_stride + l].
// n is a multiple of the target's lane count (every gemm NR of the target is).
template <typename T>
using WinogradWeightFn = void (*)(const T* g, int64_t g_stride, T* u, int64_t u_stride,
                                  int64_t n);
template <typename T>
using WinogradInputFn = void (*)(const T* d, T* v, int64_t v_stride, int64_t n);
template <typename T>
using WinogradOutputFn = void (*)(const T* m, int64_t m_stride, T* out, int64_t n,
                                  const T* bias, bool relu);

// gather_rows: dst[j·ldd + i] = rows[i][j] for i < n and j < cols, n a multiple of the
// lane count, cols at most one vector: `cols` values read at each of n row pointers (an
// NHWC pixel's channels), transposed in register blocks so that each of the cols outputs
// holds the n rows side by side (the Winograd patches of several channels, tiles in lanes).
template <typename T>
using WinogradGatherFn = void (*)(const T* const* rows, int64_t cols, T* dst, int64_t ldd,
                                  int64_t n);

// scatter_rows: rows[i][j] = src[j·lds + i] for i < n and j < cols, n a multiple of the
// lane count, cols at most one vector (the inverse of gather_rows: the outputs of cols
// filters, tiles in lanes, stored to n NHWC pixels, each pixel's cols channels together).
template <typename T>
using WinogradScatterFn = void (*)(const T* src, int64_t lds, int64_t cols, T* const* rows,
                                   int64_t n);

template <typename T>
struct WinogradKernels {
  WinogradWeightFn<T> weight_f4x3 = nullptr;
  WinogradInputFn<T> input_f4x3 = nullptr;
  WinogradOutputFn<T> output_f4x3 = nullptr;
  int lanes = 0;
  WinogradGatherFn<T> gather_rows = nullptr;
  WinogradScatterFn<T> scatter_rows = nullptr;
};

// The dwconv family (dwconv_family.inl): depthwise convolution (one input channel per
// filter), no GEMM. A tap is one (input plane or pixel row, weight) pair the executor lists
// with its source pointer; taps whose source lies in the padding are never listed (NHWC) or
// masked lane by lane (NCHW), so padding is never multiplied.
//
// NCHW rows, vectorised along the output row (forward; backward-data as a correlation of
// dy): for rows i < rows and columns u < len,
//   out[i·out_rs + u] = act(bias + Σ_t w[t] · src[t][i·src_rs + u])
// where tap t contributes only for u in [lo[t], hi[t]) (its source elsewhere is padding and
// is never read). bias: *bias, or none when null; act: ReLU when relu. accumulate: out +=
// the sum instead (no bias, no activation).
template <typename T>
using DwRowsFn = void (*)(int64_t rows, int64_t len, int64_t ntaps, const T* const* src,
                          int64_t src_rs, const int64_t* lo, const int64_t* hi, const T* w,
                          const T* bias, bool relu, bool accumulate, T* out, int64_t out_rs);
// NCHW weight gradient rows: acc[t][l] += Σ over rows i and columns u < len with
// u ≡ l (mod lanes), u in [lo[t], hi[t]), of dy[i·dy_rs + u] · src[t][i·src_rs + u]
// (acc[t]: `lanes` partial sums per tap, summed by the executor in lane order).
template <typename T>
using DwRowsWgradFn = void (*)(int64_t rows, int64_t len, int64_t ntaps, const T* const* src,
                               int64_t src_rs, const int64_t* lo, const int64_t* hi,
                               const T* dy, int64_t dy_rs, T* const* acc);
// NHWC pixels, vectorised along channels (forward; backward-data): for pixels p < npx and
// channels c < kc, out[p·out_ps + c] = act(bias[c] + Σ_t x_t(p, c) · w[t][c]) with
// x_t(p, c) = src[t][p·src_ps + c], or, when perm is given (grouped convolution: a vector
// spans several groups), src[t][p·src_ps + c − c mod lanes + perm[t][c mod lanes]] — lane
// permutation perm[t] (`lanes` int32) of the vector at c − c mod lanes, which must lie in
// the first kc channels for the lanes c < kc; bias null: none; ntaps may be 0 (the output
// is then the bias, or 0).
template <typename T>
using DwPixelsFn = void (*)(int64_t npx, int64_t kc, int64_t ntaps, const T* const* src,
                            int64_t src_ps, const int32_t* const* perm, const T* const* w,
                            const T* bias, bool relu, T* out, int64_t out_ps);
// NHWC weight gradient: acc[t][c] += Σ_p dy[p·dy_ps + c] · x_t(p, c), c < kc (x_t as above).
template <typename T>
using DwPixelsWgradFn = void (*)(int64_t npx, int64_t kc, int64_t ntaps, const T* const* src,
                                 int64_t src_ps, const int32_t* const* perm, const T* dy,
                                 int64_t dy_ps, T* const* acc);

// Splits a row of n elements into its 2 phases: even[j] = src[2j], odd[j] = src[2j + 1]
// (the NCHW kernels' column stride 2: every tap then reads a contiguous phase row).
template <typename T>
using DwSplit2Fn = void (*)(const T* src, int64_t n, T* even, T* odd);

// NCHW rows of several filters over shared taps — a dense convolution with few input
// channels (RGB stems, one-channel speech front ends), where a tap is an (input channel, r,
// s) row segment: for filters k < nk (nk <= kDenseRowFilters), rows i < rows and columns
// u < len,
//   out[k·out_ks + i·out_rs + u] = act(bias[k] + Σ_t w[t][k] · src[t][i·src_rs + u])
// where w[t] points at kDenseRowFilters weights of tap t (those from nk on are read and
// unused), tap t contributes only for u in [lo[t], hi[t]) (its source elsewhere is padding
// and is never read, as for DwRowsFn); bias: bias[k], or none when null; act: ReLU when
// relu.
inline constexpr int kDenseRowFilters = 8;
template <typename T>
using DenseRowsFn = void (*)(int64_t rows, int64_t len, int64_t ntaps, const T* const* src,
                             int64_t src_rs, const int64_t* lo, const int64_t* hi,
                             const T* const* w, int64_t nk, const T* bias, bool relu, T* out,
                             int64_t out_ks, int64_t out_rs);

// Its weight gradient: for taps t < ntaps and filters k < nk, acc[t][k·lanes + l] += Σ over
// rows i < rows and columns u < len with u ≡ l (mod lanes), u in [lo[t], hi[t]), of
// dy[k·dy_ks + i·dy_rs + u] · src[t][i·src_rs + u] (per (tap, filter) `lanes` partial sums,
// summed by the executor in lane order; sources outside [lo, hi) never read).
template <typename T>
using DenseRowsWgradFn = void (*)(int64_t rows, int64_t len, int64_t ntaps,
                                  const T* const* src, int64_t src_rs, const int64_t* lo,
                                  const int64_t* hi, const T* dy, int64_t nk, int64_t dy_ks,
                                  int64_t dy_rs, T* const* acc);

template <typename T>
struct DwconvUkernel {
  DwRowsFn<T> rows = nullptr;
  DwRowsWgradFn<T> rows_wgrad = nullptr;
  DwPixelsFn<T> pixels = nullptr;
  DwPixelsWgradFn<T> pixels_wgrad = nullptr;
  DwSplit2Fn<T> split2 = nullptr;
  int lanes = 0;  // T per vector: the width of rows_wgrad's partial sums
  const char* name = "";
  DenseRowsFn<T> dense_rows = nullptr;
  DenseRowsWgradFn<T> dense_rows_wgrad = nullptr;
};

// dst[j·ldd + i] = src[i·lds + j] for i < rows, j < cols: a strided matrix transposed, in
// register blocks of kLanes × kLanes (the layout copies between channel planes and pixel
// rows, conv/layout_copy.hpp). Exact: values are moved, never combined.
template <typename T>
using TransposeFn = void (*)(const T* src, int64_t lds, T* dst, int64_t ldd, int64_t rows,
                             int64_t cols);

// Every kernel family of one target for one dtype: what a target TU hands the runtime.
template <typename T>
struct Families {
  GemmUkernel<T> gemm;
  // One vector of columns, more rows: for products with at most one vector of columns
  // (layers with few filters per group), where the main tile would leave most of its
  // columns empty.
  GemmUkernel<T> gemm_narrow;
  WinogradKernels<T> winograd;
  DwconvUkernel<T> dwconv;
  TransposeFn<T> transpose = nullptr;
  // Later families (igemm) become members here, each written once as a template beside
  // gemm_family.inl and instantiated by the same target TUs.
};

}  // namespace convcore::kernels

// Declares the entry points a target TU defines in convcore::kernels::<target>: its
// families per dtype. Used at namespace scope by runtime/targets.cpp, once per target.
#define CONVCORE_DECLARE_KERNEL_TARGET(target)                \
  namespace convcore::kernels::target {                       \
  ::convcore::kernels::Families<float> f32_families();        \
  ::convcore::kernels::Families<double> f64_families();       \
  }
