// Shared pieces of the convcore_bench executable (Google Benchmark).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace convcore_bench {

// Registration hooks, called from main() after the command line is parsed (the conv suite
// is read from a file at run time, so it cannot use static registration).
void register_gemm_benchmarks();
// Returns false (after printing why) when the layer suite cannot be read.
bool register_conv_benchmarks();

// Uniform [-1, 1) data from a fixed seed: every run times the same numbers.
template <typename T>
std::vector<T> random_data(int64_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<T> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = static_cast<T>(dist(rng));
  return v;
}

}  // namespace convcore_bench
