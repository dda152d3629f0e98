// Microkernels checked directly, on every ISA the CPU has, against plain loops: the
// register-block transpose (layout copies), the Winograd row gather and scatter (NHWC
// patches and outputs), the dense rows of few-channel NCHW layers, and the gathered gemm tile (the weight gradient with the filters on
// the columns), at full and edge block sizes.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "convcore/config.hpp"
#include "runtime/runtime.hpp"
#include "test_support.hpp"

namespace {

using convcore::Isa;
using convcore_test::all_isas;
using convcore_test::cpu_has;
using convcore_test::isa_param_name;

class KernelTest : public testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!cpu_has(GetParam())) GTEST_SKIP() << "CPU lacks " << convcore::isa_name(GetParam());
  }
};

template <typename T>
void check_transpose(Isa isa) {
  const auto& e = convcore::detail::engine_for<T>(isa);
  ASSERT_NE(e.transpose, nullptr);
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> u(-1, 1);
  // ldd == rows: back-to-back destination rows (planes of an RGB image to pixel rows),
  // which ISAs with slow masked stores write with whole vectors; lds == cols: back-to-back
  // source rows (pixel rows of an RGB image to planes). A guard after the last row must
  // stay untouched.
  constexpr int64_t kGuard = 64;
  for (int64_t rows : {1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 33})
    for (int64_t cols : {1, 2, 3, 4, 5, 8, 16, 19, 40, 67})
      for (int64_t gap : {0, 2})
        for (int64_t src_gap : {0, 3}) {
          const int64_t lds = cols + src_gap, ldd = rows + gap;
          std::vector<T> src(rows * lds), dst(cols * ldd + kGuard, T(-7));
          for (auto& v : src) v = T(u(rng));
          e.transpose(src.data(), lds, dst.data(), ldd, rows, cols);
          for (int64_t j = 0; j < cols; ++j)
            for (int64_t i = 0; i < ldd; ++i) {
              const T want = i < rows ? src[i * lds + j] : T(-7);  // beyond `rows`: untouched
              ASSERT_EQ(dst[j * ldd + i], want) << rows << "x" << cols << " at " << i << "," << j;
            }
          for (int64_t g = 0; g < kGuard; ++g)
            ASSERT_EQ(dst[cols * ldd + g], T(-7)) << rows << "x" << cols << " guard " << g;
        }
}

TEST_P(KernelTest, TransposeMovesEveryElementAndNothingElse) {
  check_transpose<float>(GetParam());
  check_transpose<double>(GetParam());
}

// gather_rows: dst[j·ldd + i] = rows[i][j]; scatter_rows: rows[i][j] = src[j·lds + i];
// i < n (whole vectors), j < cols (up to one vector). Nothing else is written.
template <typename T>
void check_winograd_rows(Isa isa) {
  const auto& e = convcore::detail::engine_for<T>(isa);
  const auto& wk = e.winograd;
  ASSERT_NE(wk.gather_rows, nullptr);
  ASSERT_NE(wk.scatter_rows, nullptr);
  const int64_t L = wk.lanes;
  std::mt19937 rng(9);
  std::uniform_real_distribution<double> u(-1, 1);
  for (int64_t n : {L, 2 * L, 4 * L})
    for (int64_t cols = 1; cols <= L; ++cols) {
      // Each row its own place in one pool, in a shuffled order, L + 3 apart.
      const int64_t pitch = L + 3;
      std::vector<T> pool(n * pitch);
      for (auto& v : pool) v = T(u(rng));
      std::vector<int64_t> at(n);
      for (int64_t i = 0; i < n; ++i) at[i] = (i * 7 + 3) % n;  // n is a power of 2: a permutation
      std::vector<const T*> rows(n);
      for (int64_t i = 0; i < n; ++i) rows[i] = pool.data() + at[i] * pitch;
      const int64_t ldd = n + 5;
      std::vector<T> dst(L * ldd, T(-7));
      wk.gather_rows(rows.data(), cols, dst.data(), ldd, n);
      for (int64_t j = 0; j < L; ++j)
        for (int64_t i = 0; i < ldd; ++i) {
          const T want = j < cols && i < n ? rows[i][j] : T(-7);
          ASSERT_EQ(dst[j * ldd + i], want) << "gather n=" << n << " cols=" << cols;
        }
      // Back: scatter the gathered block into a fresh pool.
      std::vector<T> out(n * pitch, T(-7));
      std::vector<T*> orows(n);
      for (int64_t i = 0; i < n; ++i) orows[i] = out.data() + at[i] * pitch;
      wk.scatter_rows(dst.data(), ldd, cols, orows.data(), n);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < pitch; ++j) {
          const T want = j < cols ? rows[i][j] : T(-7);
          ASSERT_EQ(orows[i][j], want) << "scatter n=" << n << " cols=" << cols;
        }
    }
}

TEST_P(KernelTest, WinogradRowGatherAndScatterMoveEveryElementAndNothingElse) {
  check_winograd_rows<float>(GetParam());
  check_winograd_rows<double>(GetParam());
}

// The tile [0, m) × [0, n) of C (mr rows of ldc, every element 0.5 before the call) against
// want(i, j) in float64 (plus the 0.5 when accumulating); nothing written outside the tile.
template <typename T, typename Want>
void expect_tile(const std::vector<T>& c, int mr, int64_t ldc, int m, int n, bool accumulate,
                 Want&& want, const std::string& what) {
  for (int i = 0; i < mr; ++i)
    for (int64_t j = 0; j < ldc; ++j) {
      if (i >= m || j >= n) {
        ASSERT_EQ(c[i * ldc + j], T(0.5)) << "wrote outside the tile, " << what;
        continue;
      }
      ASSERT_NEAR(c[i * ldc + j], (accumulate ? 0.5 : 0.0) + want(i, j),
                  sizeof(T) == 4 ? 1e-4 : 1e-12)
          << what << ", " << m << "x" << n << " at " << i << "," << j;
    }
}

// check(engine) for the ISA's main and narrow gemm tiles, float and double.
template <typename Check>
void on_every_tile(Isa isa, Check&& check) {
  for (const auto* e : {&convcore::detail::engine_for<float>(isa),
                        convcore::detail::engine_for<float>(isa).narrow})
    check(*e);
  for (const auto* e : {&convcore::detail::engine_for<double>(isa),
                        convcore::detail::engine_for<double>(isa).narrow})
    check(*e);
}

// C (m × n, ldc) = Σ_p A(i, p)·B(p, j), A(i, p) = rows[i][a_off[p]], B(p, j) = b[b_off[p] + j].
// kc: 37 and 64 steps cover the tall tiles' blocks of 32 steps, a partial last block and
// none.
template <typename T>
void check_gather(const convcore::detail::Engine<T>& e, int64_t kc) {
  const int mr = e.blocking.mr, nr = e.blocking.nr;
  std::mt19937 rng(9);
  std::uniform_real_distribution<double> u(-1, 1);
  std::vector<T> x(4000), b(kc * 50 + nr);
  for (auto& v : x) v = T(u(rng));
  for (auto& v : b) v = T(u(rng));
  std::vector<const T*> rows(mr);
  std::vector<int64_t> a_off(kc), b_off(kc);
  for (int64_t p = 0; p < kc; ++p) {
    a_off[p] = (p * 53) % 1900;
    b_off[p] = (kc - 1 - p) * 50;
  }
  for (int m : {1, mr / 2 + 1, mr})
    for (int n : {1, nr / 2 + 1, nr}) {
      for (int i = 0; i < mr; ++i) rows[i] = x.data() + 31 * std::min(i, m - 1) + 7;
      const int64_t ldc = nr + 5;
      for (bool accumulate : {false, true}) {
        std::vector<T> c(mr * ldc, T(0.5));
        e.ukernel.fn_gather(kc, rows.data(), a_off.data(), b.data(), b_off.data(), c.data(),
                            ldc, m, n, accumulate);
        expect_tile(c, mr, ldc, m, n, accumulate, [&](int i, int64_t j) {
          double want = 0.0;
          for (int64_t p = 0; p < kc; ++p)
            want += double(rows[i][a_off[p]]) * double(b[b_off[p] + j]);
          return want;
        }, "gathered");
      }
    }
}

template <typename T>
void check_gather(const convcore::detail::Engine<T>& e) {
  for (int64_t kc : {1, 37, 64}) check_gather(e, kc);
}

TEST_P(KernelTest, GatheredTileMatchesTheLoopsOnBothTiles) {
  on_every_tile(GetParam(), [](const auto& e) { check_gather(e); });
}

// The segmented offset-B tile: C = Σ over the segments' steps p of A(i, p)·B(p, j), A packed
// (a[p·MR + i]) and B's row p at b + b_off[p]. The steps outside every segment hold NaN in
// both operands: a step read or multiplied there would show.
template <typename T>
void check_offset_b_segments(const convcore::detail::Engine<T>& e) {
  const int mr = e.blocking.mr, nr = e.blocking.nr;
  std::mt19937 rng(11);
  std::uniform_real_distribution<double> u(-1, 1);
  const int64_t kc = 41, pitch = nr + 3;
  const T nan = std::numeric_limits<T>::quiet_NaN();
  const std::vector<std::vector<std::pair<int64_t, int64_t>>> cases = {
      {}, {{0, kc}}, {{3, 5}, {10, 1}, {20, kc - 20}}, {{kc - 1, 1}}, {{0, 1}, {2, 7}}};
  for (const auto& segs : cases) {
    std::vector<bool> used(kc, false);
    std::vector<int64_t> begin, len;
    for (const auto& [b0, l] : segs) {
      begin.push_back(b0);
      len.push_back(l);
      for (int64_t p = b0; p < b0 + l; ++p) used[p] = true;
    }
    std::vector<T> a(kc * mr), b((kc + 1) * pitch);
    std::vector<int64_t> b_off(kc);
    for (int64_t p = 0; p < kc; ++p) {
      b_off[p] = ((p * 17) % kc) * pitch;  // rows out of order, each read by one step
      for (int i = 0; i < mr; ++i) a[p * mr + i] = used[p] ? T(u(rng)) : nan;
      for (int64_t j = 0; j < pitch; ++j) b[b_off[p] + j] = used[p] ? T(u(rng)) : nan;
    }
    for (int m : {1, mr / 2 + 1, mr})
      for (int n : {1, nr / 2 + 1, nr})
        for (bool accumulate : {false, true}) {
          const int64_t ldc = nr + 5;
          std::vector<T> c(mr * ldc, T(0.5));
          e.ukernel.fn_offset_b_seg(int64_t(begin.size()), begin.data(), len.data(), a.data(),
                                    b.data(), b_off.data(), c.data(), ldc, m, n, accumulate);
          expect_tile(c, mr, ldc, m, n, accumulate, [&](int i, int64_t j) {
            double want = 0.0;
            for (int64_t p = 0; p < kc; ++p)
              if (used[p]) want += double(a[p * mr + i]) * double(b[b_off[p] + j]);
            return want;
          }, std::to_string(segs.size()) + " segments");
        }
  }
}

TEST_P(KernelTest, SegmentedOffsetBTileReadsOnlyItsSegments) {
  on_every_tile(GetParam(), [](const auto& e) { check_offset_b_segments(e); });
}

// Dense rows (the dwconv family's few-channel kernel): out[k·out_ks + i·out_rs + u] =
// act(bias[k] + Σ_t w[t][k] · src[t][i·src_rs + u]) over each tap's valid columns [lo, hi).
// Sources outside [lo, hi) hold NaN: a lane read or multiplied there would show.
template <typename T>
void check_dense_rows(Isa isa) {
  const auto& e = convcore::detail::engine_for<T>(isa);
  ASSERT_NE(e.dwconv.dense_rows, nullptr);
  constexpr int KB = convcore::kernels::kDenseRowFilters;
  const T nan = std::numeric_limits<T>::quiet_NaN();
  std::mt19937 rng(13);
  std::uniform_real_distribution<double> u(-1, 1);
  const int64_t ntaps = 7, rows = 3, L = e.dwconv.lanes;
  // mixed: taps valid on all columns, a left border, a right border, both, none (no chunk
  // has every tap valid); interior: only tap 1 clipped (2 columns on the left), so whole
  // chunks and the tail past them have every tap valid (the unmasked and tail paths).
  for (bool interior : {false, true})
  for (int64_t len : {int64_t(1), L - 1, 2 * L, 2 * L + 1, 3 * L + 5, int64_t(70), 6 * L + 1})
    for (int64_t nk : {int64_t(1), int64_t(KB / 2 + 1), int64_t(KB)})
      for (bool fused : {false, true}) {
        const int64_t src_rs = len + 11, out_rs = len + 3, out_ks = rows * out_rs + 2;
        std::vector<std::vector<T>> src(ntaps, std::vector<T>(rows * src_rs));
        std::vector<const T*> sp(ntaps);
        std::vector<int64_t> lo(ntaps), hi(ntaps);
        std::vector<T> w(ntaps * KB), bias(KB);
        std::vector<const T*> wp(ntaps);
        for (int64_t t = 0; t < ntaps; ++t) {
          // taps valid on all columns, a left border, a right border, both, none
          if (interior) {
            lo[t] = t == 1 ? std::min<int64_t>(len, 2) : 0;
            hi[t] = len;
          } else {
            lo[t] = t % 3 == 1 ? std::min<int64_t>(len, t) : 0;
            hi[t] = t % 4 == 2 ? std::max<int64_t>(lo[t], len - t) : len;
            if (t == ntaps - 1) lo[t] = hi[t] = len / 2;
          }
          for (int64_t i = 0; i < rows; ++i)
            for (int64_t c = 0; c < src_rs; ++c)
              src[t][i * src_rs + c] = c >= lo[t] && c < hi[t] ? T(u(rng)) : nan;
          sp[t] = src[t].data();
          for (int k = 0; k < KB; ++k) w[t * KB + k] = T(u(rng));
          wp[t] = w.data() + t * KB;
        }
        for (auto& v : bias) v = T(u(rng));
        std::vector<T> out((KB + 1) * out_ks, T(-7));
        e.dwconv.dense_rows(rows, len, ntaps, sp.data(), src_rs, lo.data(), hi.data(),
                            wp.data(), nk, fused ? bias.data() : nullptr, fused, out.data(),
                            out_ks, out_rs);
        for (int64_t k = 0; k <= KB; ++k)
          for (int64_t i = 0; i < out_ks; ++i) {
            const int64_t row = i / out_rs, col = i % out_rs;
            const T got = out[k * out_ks + i];
            if (k >= nk || row >= rows || col >= len) {
              ASSERT_EQ(got, T(-7)) << "wrote outside: filter " << k << " at " << i;
              continue;
            }
            double want = fused ? double(bias[k]) : 0.0;
            for (int64_t t = 0; t < ntaps; ++t)
              if (col >= lo[t] && col < hi[t])
                want += double(w[t * KB + k]) * double(src[t][row * src_rs + col]);
            if (fused && want < 0) want = 0;
            ASSERT_NEAR(got, want, sizeof(T) == 4 ? 1e-5 : 1e-13)
                << (interior ? "interior" : "mixed") << " len " << len << " nk " << nk
                << " filter " << k << " row " << row
                << " col " << col;
          }
      }
}

// Dense rows' weight gradient: acc[t][k·lanes + l] += Σ over rows and columns u ≡ l (mod
// lanes) in [lo[t], hi[t]) of dy[k][i][u] · src[t][i][u]; NaN outside the valid columns.
template <typename T>
void check_dense_rows_wgrad(Isa isa) {
  const auto& e = convcore::detail::engine_for<T>(isa);
  ASSERT_NE(e.dwconv.dense_rows_wgrad, nullptr);
  const int64_t L = e.dwconv.lanes;
  const T nan = std::numeric_limits<T>::quiet_NaN();
  std::mt19937 rng(17);
  std::uniform_real_distribution<double> u(-1, 1);
  const int64_t rows = 3;
  // ntaps 10: taps 0 and 1 (one block on every target) have disjoint ranges, so no
  // column of their block is valid for both.
  for (int64_t ntaps : {int64_t(1), int64_t(5), int64_t(9), int64_t(10)})
    for (int64_t len : {int64_t(1), L - 1, 2 * L, 3 * L + 5})
      for (int64_t nk : {int64_t(1), int64_t(3), int64_t(6), int64_t(9)}) {
        const int64_t src_rs = len + 11, dy_rs = len + 3, dy_ks = rows * dy_rs + 2;
        std::vector<std::vector<T>> src(ntaps, std::vector<T>(rows * src_rs));
        std::vector<const T*> sp(ntaps);
        std::vector<int64_t> lo(ntaps), hi(ntaps);
        for (int64_t t = 0; t < ntaps; ++t) {
          lo[t] = t % 3 == 1 ? std::min<int64_t>(len, t) : 0;
          hi[t] = t % 4 == 2 ? std::max<int64_t>(lo[t], len - t) : len;
          if (t == 4) lo[t] = hi[t] = len / 2;
          if (ntaps == 10 && t == 0) lo[t] = 0, hi[t] = len / 3;
          if (ntaps == 10 && t == 1) lo[t] = len - len / 3, hi[t] = len;
          for (int64_t i = 0; i < rows; ++i)
            for (int64_t c = 0; c < src_rs; ++c)
              src[t][i * src_rs + c] = c >= lo[t] && c < hi[t] ? T(u(rng)) : nan;
          sp[t] = src[t].data();
        }
        std::vector<T> dy(nk * dy_ks);
        for (int64_t k = 0; k < nk; ++k)
          for (int64_t i = 0; i < dy_ks; ++i)
            dy[k * dy_ks + i] = i % dy_rs < len && i / dy_rs < rows ? T(u(rng)) : nan;
        // per tap: nk·L sums starting at 0.25, then 2 guard values
        const int64_t per_tap = nk * L + 2;
        std::vector<T> acc(ntaps * per_tap, T(0.25));
        std::vector<T*> ap(ntaps);
        for (int64_t t = 0; t < ntaps; ++t) ap[t] = acc.data() + t * per_tap;
        e.dwconv.dense_rows_wgrad(rows, len, ntaps, sp.data(), src_rs, lo.data(), hi.data(),
                                  dy.data(), nk, dy_ks, dy_rs, ap.data());
        for (int64_t t = 0; t < ntaps; ++t) {
          for (int64_t g = nk * L; g < per_tap; ++g)
            ASSERT_EQ(acc[t * per_tap + g], T(0.25)) << "wrote past tap " << t << "'s sums";
          for (int64_t k = 0; k < nk; ++k)
            for (int64_t l = 0; l < L; ++l) {
              double want = 0.25;
              for (int64_t i = 0; i < rows; ++i)
                for (int64_t c = l; c < len; c += L)
                  if (c >= lo[t] && c < hi[t])
                    want += double(dy[k * dy_ks + i * dy_rs + c]) *
                            double(src[t][i * src_rs + c]);
              ASSERT_NEAR(acc[t * per_tap + k * L + l], want, sizeof(T) == 4 ? 1e-5 : 1e-13)
                  << "taps " << ntaps << " len " << len << " nk " << nk << " tap " << t
                  << " filter " << k << " lane " << l;
            }
        }
      }
}

TEST_P(KernelTest, DenseRowsWeightGradientMatchesTheLoops) {
  check_dense_rows_wgrad<float>(GetParam());
  check_dense_rows_wgrad<double>(GetParam());
}

TEST_P(KernelTest, DenseRowsMatchTheLoopsAndReadOnlyValidColumns) {
  check_dense_rows<float>(GetParam());
  check_dense_rows<double>(GetParam());
}

TEST_P(KernelTest, NarrowTileIsOneVectorWide) {
  const auto& e = convcore::detail::engine_for<float>(GetParam());
  ASSERT_NE(e.narrow, nullptr);
  EXPECT_LE(e.narrow->blocking.nr, e.blocking.nr);
  EXPECT_GE(e.narrow->blocking.mr, e.blocking.mr);
  EXPECT_EQ(e.narrow->narrow, e.narrow);
}

INSTANTIATE_TEST_SUITE_P(Isa, KernelTest, testing::ValuesIn(all_isas()), isa_param_name);

}  // namespace
