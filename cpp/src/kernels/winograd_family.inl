// The Winograd F(4×4, 3×3) transforms (contracts in kernels.hpp), written once over a
// vector-traits type and instantiated by each target TU, like gemm_family.inl (same rules:
// included only by the target TUs after CONVCORE_KERNEL_NS is defined; no include guard).
//
// F(4, 3) on the points 0, ±1, ±2, ∞ (Lavin & Gray, 2015): a 6-point input patch d gives
// 4 outputs y = Aᵀ[(G·g) ⊙ (Bᵀ·d)] of the 3-tap correlation, and nested in 2-D
// Y = Aᵀ[(G·g·Gᵀ) ⊙ (Bᵀ·d·B)]A. The weight side G·g·Gᵀ runs when the primitive packs the
// weights (once with set_weights); the input and output sides run per call:
//
//   Bᵀ = | 4  0 -5  0  1  0 |        Aᵀ = | 1  1  1  1  1  0 |
//        | 0 -4 -4  1  1  0 |             | 0  1 -1  2 -2  0 |
//        | 0  4 -4 -1  1  0 |             | 0  1  1  4  4  0 |
//        | 0 -2 -1  2  1  0 |             | 0  1 -1  8 -8  1 |
//        | 0  2 -1 -2  1  0 |
//        | 0  4  0 -5  0  1 |
//
//   G  = |  1/4    0     0   |
//        | -1/6  -1/6  -1/6  |
//        | -1/6   1/6  -1/6  |
//        |  1/24  1/12  1/6  |
//        |  1/24 -1/12  1/6  |
//        |   0     0     1   |
//
// Each 1-D transform is factored into shared sums (below); every lane (tile) sees the same
// operations in the same order, so results are independent of where a tile's lane falls.
#if !defined(CONVCORE_KERNEL_NS)
#error "define CONVCORE_KERNEL_NS (the target's namespace) before including winograd_family.inl"
#endif

#include "kernels.hpp"

namespace convcore::kernels::CONVCORE_KERNEL_NS {
namespace {

template <class VT>
struct WinogradOps {
  using T = typename VT::T;
  using V = typename VT::V;
  static V cst(T c) { return VT::broadcast(&c); }
  static V sub(V a, V b) { return VT::fmadd(cst(T(-1)), b, a); }  // exact: a − b
  static V mul(V a, V b) { return VT::fmadd(a, b, VT::zero()); }    // exact: a·b rounded

  // t = Bᵀ·z for one column (or row) of 6 points.
  static void input_1d(const V* z, V* t) {
    const V m4 = cst(T(-4)), m5 = cst(T(-5)), four = cst(T(4)), two = cst(T(2)),
            m2 = cst(T(-2));
    const V a = VT::fmadd(m4, z[2], z[4]);  // z4 − 4·z2
    const V b = VT::fmadd(m4, z[1], z[3]);  // z3 − 4·z1
    const V c = sub(z[4], z[2]);
    const V e = sub(z[3], z[1]);
    t[0] = VT::fmadd(four, z[0], VT::fmadd(m5, z[2], z[4]));
    t[1] = VT::add(a, b);
    t[2] = sub(a, b);
    t[3] = VT::fmadd(two, e, c);
    t[4] = VT::fmadd(m2, e, c);
    t[5] = VT::fmadd(four, z[1], VT::fmadd(m5, z[3], z[5]));
  }
  // u = G·z for one column (or row) of 3 taps.
  static void weight_1d(const V* z, V* u) {
    const V k4 = cst(T(1) / T(4)), k6 = cst(T(1) / T(6)), m6 = cst(T(-1) / T(6)),
            k12 = cst(T(1) / T(12)), k24 = cst(T(1) / T(24));
    const V s = VT::add(z[0], z[2]);
    const V h = VT::fmadd(k24, z[0], mul(k6, z[2]));
    const V d = mul(k12, z[1]);
    u[0] = mul(k4, z[0]);
    u[1] = mul(m6, VT::add(s, z[1]));
    u[2] = mul(m6, sub(s, z[1]));
    u[3] = VT::add(h, d);
    u[4] = sub(h, d);
    u[5] = z[2];
  }
  // o = Aᵀ·m for one column (or row) of 6 points.
  static void output_1d(const V* m, V* o) {
    const V two = cst(T(2)), four = cst(T(4)), eight = cst(T(8));
    const V p = VT::add(m[1], m[2]);
    const V q = sub(m[1], m[2]);
    const V r = VT::add(m[3], m[4]);
    const V s = sub(m[3], m[4]);
    o[0] = VT::add(VT::add(m[0], p), r);
    o[1] = VT::fmadd(two, s, q);
    o[2] = VT::fmadd(four, r, p);
    o[3] = VT::add(VT::fmadd(eight, s, q), m[5]);
  }
};

template <class VT>
void winograd_weight_f4x3(const typename VT::T* g, int64_t g_stride, typename VT::T* u,
                          int64_t u_stride, int64_t n) {
  using Ops = WinogradOps<VT>;
  using V = typename VT::V;
  constexpr int L = VT::kLanes;
  for (int64_t l = 0; l < n; l += L) {
    V t[6][3];  // t[a][s] = Σ_r G[a][r]·g[r][s]
    for (int s = 0; s < 3; ++s) {
      V z[3], col[6];
      for (int r = 0; r < 3; ++r) z[r] = VT::loadu(g + (3 * r + s) * g_stride + l);
      Ops::weight_1d(z, col);
      for (int a = 0; a < 6; ++a) t[a][s] = col[a];
    }
    for (int a = 0; a < 6; ++a) {
      V row[6];
      Ops::weight_1d(t[a], row);
      for (int b = 0; b < 6; ++b) VT::storeu(u + (6 * a + b) * u_stride + l, row[b]);
    }
  }
}

template <class VT>
void winograd_input_f4x3(const typename VT::T* d, typename VT::T* v, int64_t v_stride,
                         int64_t n) {
  using Ops = WinogradOps<VT>;
  using V = typename VT::V;
  constexpr int L = VT::kLanes;
  for (int64_t l = 0; l < n; l += L) {
    V t[6][6];  // t[a][j] = Σ_i Bᵀ[a][i]·d[i][j]
    for (int j = 0; j < 6; ++j) {
      V z[6], col[6];
      for (int i = 0; i < 6; ++i) z[i] = VT::loadu(d + (6 * i + j) * n + l);
      Ops::input_1d(z, col);
      for (int a = 0; a < 6; ++a) t[a][j] = col[a];
    }
    for (int a = 0; a < 6; ++a) {
      V row[6];
      Ops::input_1d(t[a], row);
      for (int b = 0; b < 6; ++b) VT::storeu(v + (6 * a + b) * v_stride + l, row[b]);
    }
  }
}

template <class VT>
void winograd_output_f4x3(const typename VT::T* m, int64_t m_stride, typename VT::T* out,
                          int64_t n, const typename VT::T* bias, bool relu) {
  using Ops = WinogradOps<VT>;
  using V = typename VT::V;
  constexpr int L = VT::kLanes;
  const V zero = VT::zero();
  const V b = bias ? VT::broadcast(bias) : zero;
  for (int64_t l = 0; l < n; l += L) {
    V t[4][6];  // t[i][b] = Σ_a Aᵀ[i][a]·m[a][b]
    for (int b = 0; b < 6; ++b) {
      V z[6], col[4];
      for (int a = 0; a < 6; ++a) z[a] = VT::loadu(m + (6 * a + b) * m_stride + l);
      Ops::output_1d(z, col);
      for (int i = 0; i < 4; ++i) t[i][b] = col[i];
    }
    V finite = zero;  // Σ 0·y: 0 exactly when every y is finite
    for (int i = 0; i < 4; ++i) {
      V row[4];
      Ops::output_1d(t[i], row);
      for (int j = 0; j < 4; ++j) {
        finite = VT::fmadd(zero, row[j], finite);
        V y = bias ? VT::add(row[j], b) : row[j];
        if (relu) y = VT::max(zero, y);  // 0 > y ? 0 : y: NaN stays NaN
        VT::storeu(out + (4 * i + j) * n + l, y);
      }
    }
    VT::storeu(out + 16 * n + l, finite);
  }
}

// The WinogradGatherFn contract (kernels.hpp): blocks of kLanes rows loaded (masked to
// cols), transposed in registers, and the first cols vectors stored.
template <class VT>
void winograd_gather_rows(const typename VT::T* const* rows, int64_t cols, typename VT::T* dst,
                          int64_t ldd, int64_t n) {
  constexpr int L = VT::kLanes;
  typename VT::V r[L];
  const bool whole = cols == L;
  const typename VT::Mask in = VT::mask(cols);
  for (int64_t i0 = 0; i0 < n; i0 += L) {
    if (whole) {
#pragma GCC unroll 16
      for (int i = 0; i < L; ++i) r[i] = VT::loadu(rows[i0 + i]);
    } else {
#pragma GCC unroll 16
      for (int i = 0; i < L; ++i) r[i] = VT::load_masked(rows[i0 + i], in);
    }
    VT::transpose(r);
    for (int64_t j = 0; j < cols; ++j) VT::storeu(dst + j * ldd + i0, r[j]);
  }
}

// The WinogradScatterFn contract (kernels.hpp): blocks of cols rows (zeros beyond)
// transposed in registers, each of kLanes vectors stored to its row pointer masked to cols.
template <class VT>
void winograd_scatter_rows(const typename VT::T* src, int64_t lds, int64_t cols,
                           typename VT::T* const* rows, int64_t n) {
  constexpr int L = VT::kLanes;
  typename VT::V r[L];
  const bool whole = cols == L;
  const typename VT::Mask out = VT::mask(cols);
  for (int64_t i0 = 0; i0 < n; i0 += L) {
#pragma GCC unroll 16
    for (int j = 0; j < L; ++j) r[j] = j < cols ? VT::loadu(src + j * lds + i0) : VT::zero();
    VT::transpose(r);
    if (whole) {
#pragma GCC unroll 16
      for (int i = 0; i < L; ++i) VT::storeu(rows[i0 + i], r[i]);
    } else {
#pragma GCC unroll 16
      for (int i = 0; i < L; ++i) VT::store_masked(rows[i0 + i], out, r[i]);
    }
  }
}

template <class VT>
WinogradKernels<typename VT::T> winograd_family() {
  return {&winograd_weight_f4x3<VT>, &winograd_input_f4x3<VT>, &winograd_output_f4x3<VT>,
          VT::kLanes, &winograd_gather_rows<VT>, &winograd_scatter_rows<VT>};
}

}  // namespace
}  // namespace convcore::kernels::CONVCORE_KERNEL_NS
