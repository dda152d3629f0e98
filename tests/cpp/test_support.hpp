// Helpers shared by the GoogleTest suites: ISA and thread-count guards, seeded random
// data, norm-wise error, and buffers with sentinel guard zones that catch stray writes.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "convcore/config.hpp"

// gtest prints test parameters through PrintTo found by argument-dependent lookup.
namespace convcore {
inline void PrintTo(Isa isa, std::ostream* os) { *os << isa_name(isa); }
}  // namespace convcore

namespace convcore_test {

using convcore::Isa;

// Every ISA a build may carry, best last. Tests are instantiated for all of them and skip
// the ones this CPU cannot run (so a report shows what was not exercised).
inline std::vector<Isa> all_isas() { return {Isa::Generic, Isa::Avx2, Isa::Avx512}; }

inline bool cpu_has(Isa isa) {
  const auto v = convcore::available_isas();
  return std::find(v.begin(), v.end(), isa) != v.end();
}

inline std::string isa_param_name(const testing::TestParamInfo<Isa>& info) {
  return convcore::isa_name(info.param);
}

// Restores the active ISA and the thread count on scope exit.
class RuntimeGuard {
 public:
  RuntimeGuard() : isa_(convcore::active_isa()), threads_(convcore::get_num_threads()) {}
  ~RuntimeGuard() {
    convcore::set_active_isa(isa_);
    convcore::set_num_threads(threads_);
  }
  RuntimeGuard(const RuntimeGuard&) = delete;
  RuntimeGuard& operator=(const RuntimeGuard&) = delete;

 private:
  Isa isa_;
  int threads_;
};

// Fixture for tests parameterised by ISA: skips ISAs the CPU lacks, activates the ISA for
// the test body, names it in every failure message, and restores the previous state.
class IsaTest : public testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!cpu_has(GetParam()))
      GTEST_SKIP() << "CPU cannot run ISA '" << convcore::isa_name(GetParam()) << "'";
    guard_.emplace();
    convcore::set_active_isa(GetParam());
    trace_.emplace(__FILE__, __LINE__, std::string("isa=") + convcore::isa_name(GetParam()));
  }
  void TearDown() override {
    trace_.reset();
    guard_.reset();
  }

 private:
  std::optional<RuntimeGuard> guard_;
  std::optional<testing::ScopedTrace> trace_;
};

// Runs fn(isa) once per ISA the CPU has, with the ISA active and named in failures.
template <typename Fn>
void for_each_isa(Fn&& fn) {
  RuntimeGuard guard;
  for (Isa isa : convcore::available_isas()) {
    SCOPED_TRACE(std::string("isa=") + convcore::isa_name(isa));
    convcore::set_active_isa(isa);
    fn(isa);
  }
}

template <typename T>
const char* type_name() {
  return sizeof(T) == 4 ? "float" : "double";
}

// Norm-wise relative tolerance of the fast paths against the long-double oracle.
template <typename T>
constexpr double tolerance() {
  return sizeof(T) == 4 ? 1e-5 : 1e-12;
}

template <typename T>
std::vector<T> random_vector(std::size_t n, std::mt19937& rng, double lo = -1.0, double hi = 1.0) {
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(dist(rng));
  return v;
}

// Norm-wise error of `got` against the oracle `want`, relative to `magnitude`: the oracle
// run on the absolute values of the inputs (|A|·|B| + |C0|, conv(|x|, |w|) + |b|, ...).
// That is the scale of the rounding error of any summation order, so the measure does not
// blow up when a short sum happens to cancel (a 1×1 result near zero), yet a real bug
// (a dropped or doubled term, a wrong tap) still shows as >= ~1/k. Falls back to the
// absolute error when the magnitude is zero. NaN in `got` where `want` has none (e.g. an
// element never written over its NaN fill) gives +inf.
template <typename T>
double scaled_error(const T* got, const T* want, const T* magnitude, std::size_t n) {
  long double diff = 0, scale = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (std::isnan(got[i]) != std::isnan(want[i])) return std::numeric_limits<double>::infinity();
    if (std::isnan(got[i])) continue;
    const long double d = static_cast<long double>(got[i]) - static_cast<long double>(want[i]);
    diff += d * d;
    scale += static_cast<long double>(magnitude[i]) * magnitude[i];
  }
  const long double err = std::sqrt(diff);
  return static_cast<double>(scale > 0 ? err / std::sqrt(scale) : err);
}

template <typename T>
std::vector<T> abs_copy(const std::vector<T>& v) {
  std::vector<T> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = std::fabs(v[i]);
  return out;
}

// Index and values of the first element that differs bitwise, for failure messages.
template <typename T>
std::string first_difference(const T* a, const T* b, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    if (std::memcmp(a + i, b + i, sizeof(T)) != 0) {
      char buf[128];
      std::snprintf(buf, sizeof buf, "first difference at %zu: %.17g vs %.17g", i, double(a[i]),
                    double(b[i]));
      return buf;
    }
  return "identical";
}

// A buffer of n elements followed by a guard zone filled with a sentinel bit pattern.
// Stray writes past the end show up in guard_intact().
template <typename T>
class Guarded {
 public:
  static constexpr std::size_t kGuard = 64;
  explicit Guarded(std::size_t n, T fill = std::numeric_limits<T>::quiet_NaN())
      : n_(n), v_(n + kGuard, fill) {
    std::fill(v_.begin() + static_cast<std::ptrdiff_t>(n), v_.end(), sentinel());
  }
  static T sentinel() { return T(-1234.5); }
  T* data() { return v_.data(); }
  const T* data() const { return v_.data(); }
  std::size_t size() const { return n_; }
  T& operator[](std::size_t i) { return v_[i]; }
  bool guard_intact() const {
    const T s = sentinel();
    for (std::size_t i = n_; i < v_.size(); ++i)
      if (std::memcmp(&v_[i], &s, sizeof(T)) != 0) return false;
    return true;
  }

 private:
  std::size_t n_;
  std::vector<T> v_;
};

}  // namespace convcore_test
