// convcore::gemm against the long-double reference, for every ISA the CPU has: edge tiles
// (m in 1..2·MR+1, n in 1..2·NR+1), reduction depths around the KC block, transposed and
// strided operands, accumulation, padded C, shapes crossing the MC/NC blocks, and bitwise
// determinism across thread counts.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "convcore/config.hpp"
#include "reference.hpp"  // reference::gemm
#include "convcore/gemm.hpp"
#include "test_support.hpp"

namespace convcore_test {
namespace {

// How the operands are laid out in memory for one call.
struct GemmLayout {
  bool trans_a = false;   // A stored column-major (a_row_stride small, a_col_stride large)
  bool trans_b = false;   // B stored column-major
  int64_t step = 1;       // distance between consecutive elements along the minor axis
  int64_t pad = 0;        // extra elements at the end of each major line (stride > extent)
  bool accumulate = false;
  int64_t ldc_pad = 0;    // ldc = n + ldc_pad; the padding columns must stay untouched
};

std::string describe(int64_t m, int64_t n, int64_t k, const GemmLayout& l) {
  std::ostringstream os;
  os << "m=" << m << " n=" << n << " k=" << k << " transA=" << l.trans_a
     << " transB=" << l.trans_b << " step=" << l.step << " pad=" << l.pad
     << " accumulate=" << l.accumulate << " ldc_pad=" << l.ldc_pad;
  return os.str();
}

// A strided view of a rows×cols matrix: element (i, j) at i*rs + j*cs inside a buffer
// whose unused slots hold NaN, so reading outside the view poisons the result.
template <typename T>
struct StridedMatrix {
  std::vector<T> storage;
  int64_t rs = 0, cs = 0;
  StridedMatrix(int64_t rows, int64_t cols, bool col_major, int64_t step, int64_t pad,
                std::mt19937& rng) {
    if (!col_major) {
      cs = step;
      rs = cols * step + pad;
    } else {
      rs = step;
      cs = rows * step + pad;
    }
    const int64_t size = rows > 0 && cols > 0 ? (rows - 1) * rs + (cols - 1) * cs + 1 : 1;
    storage.assign(static_cast<std::size_t>(size) + pad + step,
                   std::numeric_limits<T>::quiet_NaN());
    std::uniform_real_distribution<double> dist(-1.0, 1.0);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) storage[i * rs + j * cs] = static_cast<T>(dist(rng));
  }
};

// Runs one product with convcore::gemm and the reference on identical inputs and checks
// the result, the untouched C padding and the guard zone.
template <typename T>
void check_gemm(int64_t m, int64_t n, int64_t k, const GemmLayout& l, std::mt19937& rng) {
  SCOPED_TRACE(std::string(type_name<T>()) + " " + describe(m, n, k, l));
  const StridedMatrix<T> a(m, k, l.trans_a, l.step, l.pad, rng);
  const StridedMatrix<T> b(k, n, l.trans_b, l.step, l.pad, rng);
  const int64_t ldc = n + l.ldc_pad;
  const std::size_t c_elems = static_cast<std::size_t>(m * ldc);

  Guarded<T> c(c_elems);
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < ldc; ++j)
      c[i * ldc + j] = j >= n ? Guarded<T>::sentinel()
                              : (l.accumulate ? static_cast<T>(dist(rng))
                                              : std::numeric_limits<T>::quiet_NaN());
  std::vector<T> want(c.data(), c.data() + c_elems);
  const std::vector<T> before = want;

  reference::gemm<T>(m, n, k, a.storage.data(), a.rs, a.cs, b.storage.data(), b.rs,
                               b.cs, want.data(), ldc, l.accumulate);
  std::vector<T> magnitude = abs_copy(before);
  reference::gemm<T>(m, n, k, abs_copy(a.storage).data(), a.rs, a.cs,
                               abs_copy(b.storage).data(), b.rs, b.cs, magnitude.data(), ldc,
                               l.accumulate);
  convcore::gemm<T>(m, n, k, a.storage.data(), a.rs, a.cs, b.storage.data(), b.rs, b.cs,
                    c.data(), ldc, l.accumulate);

  std::vector<T> got_valid, want_valid, magnitude_valid;
  bool padding_intact = true;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < ldc; ++j) {
      const std::size_t idx = static_cast<std::size_t>(i * ldc + j);
      if (j < n) {
        got_valid.push_back(c[idx]);
        want_valid.push_back(want[idx]);
        magnitude_valid.push_back(magnitude[idx]);
      } else if (std::memcmp(&c[idx], &before[idx], sizeof(T)) != 0) {
        padding_intact = false;
      }
    }
  const double err = scaled_error(got_valid.data(), want_valid.data(), magnitude_valid.data(),
                                  got_valid.size());
  EXPECT_LE(err, tolerance<T>()) << "error relative to the magnitude " << err;
  EXPECT_TRUE(padding_intact) << "gemm wrote into the ldc padding columns";
  EXPECT_TRUE(c.guard_intact()) << "gemm wrote past the end of C";
}

// Edge values around a tile size: 1, t−1, t, t+1, 2t+1 (deduplicated, >= 1).
std::vector<int64_t> edges(int64_t t) {
  std::vector<int64_t> v;
  for (int64_t x : {int64_t(1), t - 1, t, t + 1, 2 * t + 1})
    if (x >= 1 && std::find(v.begin(), v.end(), x) == v.end()) v.push_back(x);
  return v;
}

std::vector<int64_t> blocked_depths(const convcore::Blocking& bl) {
  return {bl.kc - 1, bl.kc, bl.kc + 1, 2 * bl.kc + 3};
}

using GemmTest = IsaTest;

// Every (m, n) in [1, 2·MR+1] × [1, 2·NR+1] with shallow reductions: all edge tiles of the
// microkernel, one and two full tiles, and a partial third.
template <typename T>
void sweep_tiles_shallow() {
  const convcore::Blocking bl = convcore::blocking<T>();
  SCOPED_TRACE(bl.kernel_name);
  std::mt19937 rng(1234);
  for (int64_t k : {1, 2, 7, 31})
    for (int64_t m = 1; m <= 2 * bl.mr + 1; ++m)
      for (int64_t n = 1; n <= 2 * bl.nr + 1; ++n) {
        check_gemm<T>(m, n, k, GemmLayout{}, rng);
        if (testing::Test::HasFailure()) return;  // one shape's report is enough
      }
}
TEST_P(GemmTest, EdgeTilesShallowFloat) { sweep_tiles_shallow<float>(); }
TEST_P(GemmTest, EdgeTilesShallowDouble) { sweep_tiles_shallow<double>(); }

// Depths around the KC block (KC−1, KC, KC+1, 2·KC+3: a partial block, exactly one, one
// plus a one-deep remainder, several) on every (m, n) of the same sweep.
template <typename T>
void sweep_tiles_blocked_k() {
  const convcore::Blocking bl = convcore::blocking<T>();
  SCOPED_TRACE(bl.kernel_name);
  std::mt19937 rng(99);
  for (int64_t k : blocked_depths(bl))
    for (int64_t m = 1; m <= 2 * bl.mr + 1; ++m)
      for (int64_t n = 1; n <= 2 * bl.nr + 1; ++n) {
        check_gemm<T>(m, n, k, GemmLayout{}, rng);
        if (testing::Test::HasFailure()) return;
      }
}
TEST_P(GemmTest, BlockedDepthFloat) { sweep_tiles_blocked_k<float>(); }
TEST_P(GemmTest, BlockedDepthDouble) { sweep_tiles_blocked_k<double>(); }

// Transposed (column-major) operands, strided views (row stride > row length, element
// step > 1), accumulation into C and a padded C, each alone and combined.
template <typename T>
void layouts() {
  const convcore::Blocking bl = convcore::blocking<T>();
  SCOPED_TRACE(bl.kernel_name);
  std::mt19937 rng(7);
  std::vector<GemmLayout> ls;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      GemmLayout l;
      l.trans_a = ta;
      l.trans_b = tb;
      ls.push_back(l);  // plain transposes
      l.pad = 3;        // row (or column) stride > extent
      ls.push_back(l);
      l.step = 2;  // every other element
      ls.push_back(l);
      l.accumulate = true;
      l.ldc_pad = 5;
      ls.push_back(l);
    }
  GemmLayout acc;
  acc.accumulate = true;
  ls.push_back(acc);
  GemmLayout padded_c;
  padded_c.ldc_pad = 1;
  ls.push_back(padded_c);
  padded_c.ldc_pad = bl.nr + 3;
  ls.push_back(padded_c);

  for (const GemmLayout& l : ls)
    for (int64_t m : edges(bl.mr))
      for (int64_t n : edges(bl.nr))
        for (int64_t k : {int64_t(1), int64_t(7), bl.kc + 1}) {
          check_gemm<T>(m, n, k, l, rng);
          if (testing::Test::HasFailure()) return;
        }
}
TEST_P(GemmTest, OperandLayoutsFloat) { layouts<float>(); }
TEST_P(GemmTest, OperandLayoutsDouble) { layouts<double>(); }

// Products larger than one MC×NC block (several ic/jc iterations and thread tiles).
template <typename T>
void cross_cache_blocks() {
  const convcore::Blocking bl = convcore::blocking<T>();
  SCOPED_TRACE(bl.kernel_name);
  std::mt19937 rng(2024);
  check_gemm<T>(bl.mc + 5, bl.nc + 7, 3, GemmLayout{}, rng);
  GemmLayout l;
  l.trans_a = true;
  l.accumulate = true;
  l.ldc_pad = 2;
  check_gemm<T>(bl.mc + 5, 2 * bl.nr + 3, bl.kc + 3, l, rng);
  check_gemm<T>(2 * bl.mr + 1, bl.nc + 7, 2, l, rng);
}
TEST_P(GemmTest, CrossesCacheBlocksFloat) { cross_cache_blocks<float>(); }
TEST_P(GemmTest, CrossesCacheBlocksDouble) { cross_cache_blocks<double>(); }

// k = 0 is an empty sum: C becomes 0, or keeps its value when accumulating. m = 0 or
// n = 0 writes nothing.
TEST_P(GemmTest, EmptyDimensions) {
  const float a[4] = {1, 2, 3, 4}, b[4] = {5, 6, 7, 8};
  std::vector<float> c = {9, 9, 9, 9, 9, 9};  // 2×2 with ldc 3
  convcore::gemm<float>(2, 2, 0, a, 1, 1, b, 1, 1, c.data(), 3, false);
  EXPECT_EQ(c, (std::vector<float>{0, 0, 9, 0, 0, 9}));
  c = {9, 9, 9, 9, 9, 9};
  convcore::gemm<float>(2, 2, 0, a, 1, 1, b, 1, 1, c.data(), 3, true);
  EXPECT_EQ(c, (std::vector<float>{9, 9, 9, 9, 9, 9}));
  convcore::gemm<float>(0, 2, 2, a, 2, 1, b, 2, 1, c.data(), 3, false);
  convcore::gemm<float>(2, 0, 2, a, 2, 1, b, 2, 1, c.data(), 3, false);
  EXPECT_EQ(c, (std::vector<float>{9, 9, 9, 9, 9, 9}));
}

// Bitwise identical results for 1, 2, 3 and 7 threads (tiles differ, the reduction order
// must not).
template <typename T>
void deterministic_across_threads() {
  const convcore::Blocking bl = convcore::blocking<T>();
  SCOPED_TRACE(bl.kernel_name);
  std::mt19937 rng(31337);
  struct Shape { int64_t m, n, k; };
  // Big enough for every thread count to get tiles (>= 2 MFLOP each), odd so tiles are
  // ragged, deep enough for several KC blocks.
  for (Shape s : {Shape{301, 517, 2 * bl.kc + 5}, Shape{3 * bl.mr + 1, bl.nc + 33, 97}}) {
    const auto a = random_vector<T>(static_cast<std::size_t>(s.m * s.k), rng);
    const auto b = random_vector<T>(static_cast<std::size_t>(s.k * s.n), rng);
    const auto c0 = random_vector<T>(static_cast<std::size_t>(s.m * s.n), rng);
    std::vector<T> first;
    for (int threads : {1, 2, 3, 7}) {
      SCOPED_TRACE("threads=" + std::to_string(threads) + " m=" + std::to_string(s.m) +
                   " n=" + std::to_string(s.n) + " k=" + std::to_string(s.k));
      convcore::set_num_threads(threads);
      std::vector<T> c = c0;
      // A transposed, accumulate: the general path.
      convcore::gemm<T>(s.m, s.n, s.k, a.data(), 1, s.m, b.data(), s.n, 1, c.data(), s.n, true);
      if (first.empty()) {
        first = c;
      } else {
        ASSERT_EQ(0, std::memcmp(first.data(), c.data(), c.size() * sizeof(T)))
            << first_difference(first.data(), c.data(), c.size());
      }
    }
  }
}
TEST_P(GemmTest, DeterministicAcrossThreadsFloat) { deterministic_across_threads<float>(); }
TEST_P(GemmTest, DeterministicAcrossThreadsDouble) { deterministic_across_threads<double>(); }

INSTANTIATE_TEST_SUITE_P(Isa, GemmTest, testing::ValuesIn(all_isas()), isa_param_name);

// ---- runtime configuration ---------------------------------------------------------

TEST(Runtime, AvailableIsasBestFirstAndSettable) {
  RuntimeGuard guard;
  const auto isas = convcore::available_isas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.front(), convcore::detected_isa());
  EXPECT_EQ(isas.back(), convcore::Isa::Generic);
  for (auto isa : isas) {
    convcore::set_active_isa(isa);
    EXPECT_EQ(convcore::active_isa(), isa);
    EXPECT_EQ(convcore::parse_isa(convcore::isa_name(isa)), isa);
    for (const convcore::Blocking& bl : {convcore::blocking<float>(), convcore::blocking<double>()}) {
      SCOPED_TRACE(bl.kernel_name);
      EXPECT_GE(bl.mr, 1);
      EXPECT_GE(bl.nr, 1);
      EXPECT_GE(bl.kc, 1);
      EXPECT_GE(bl.mc, bl.mr);
      EXPECT_GE(bl.nc, bl.nr);
    }
  }
  for (auto isa : all_isas()) {
    if (!cpu_has(isa)) {
      EXPECT_THROW(convcore::set_active_isa(isa), std::invalid_argument);
    }
  }
  EXPECT_THROW(convcore::parse_isa("sse2"), std::invalid_argument);
}

// The target table: each ISA at most once, and each one's engine built from its own
// target (its kernel names carry the ISA's suffix), so no entry points at another's code.
TEST(Runtime, EachAvailableIsaHasItsOwnKernels) {
  RuntimeGuard guard;
  const auto isas = convcore::available_isas();
  for (std::size_t i = 0; i < isas.size(); ++i) {
    for (std::size_t j = i + 1; j < isas.size(); ++j) EXPECT_NE(isas[i], isas[j]);
    convcore::set_active_isa(isas[i]);
    const std::string suffix = std::string("__") + convcore::isa_name(isas[i]);
    EXPECT_NE(std::string(convcore::blocking<float>().kernel_name).find(suffix), std::string::npos)
        << convcore::blocking<float>().kernel_name;
    EXPECT_NE(std::string(convcore::blocking<double>().kernel_name).find(suffix), std::string::npos)
        << convcore::blocking<double>().kernel_name;
  }
}

TEST(Runtime, ThreadCount) {
  RuntimeGuard guard;
  EXPECT_GE(convcore::get_num_threads(), 1);
  convcore::set_num_threads(3);
  EXPECT_EQ(convcore::get_num_threads(), 3);
  EXPECT_THROW(convcore::set_num_threads(0), std::invalid_argument);
  EXPECT_THROW(convcore::set_num_threads(-2), std::invalid_argument);
  EXPECT_EQ(convcore::get_num_threads(), 3);
}

TEST(GemmValidation, RejectsBadArguments) {
  float a[4] = {}, b[4] = {}, c[4] = {};
  EXPECT_THROW(convcore::gemm<float>(-1, 2, 2, a, 2, 1, b, 2, 1, c, 2), std::invalid_argument);
  EXPECT_THROW(convcore::gemm<float>(2, -1, 2, a, 2, 1, b, 2, 1, c, 2), std::invalid_argument);
  EXPECT_THROW(convcore::gemm<float>(2, 2, -1, a, 2, 1, b, 2, 1, c, 2), std::invalid_argument);
  EXPECT_THROW(convcore::gemm<float>(2, 2, 2, a, 2, 1, b, 2, 1, c, 1), std::invalid_argument);
}

}  // namespace
}  // namespace convcore_test
