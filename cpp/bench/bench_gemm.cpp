// convcore::gemm on a square product and on the GEMM shapes of common conv layers
// (M×N×K = K_out × Ho·Wo × C·R·S for forward; C·R·S × K_out × Ho·Wo for backward-weight).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "convcore/gemm.hpp"

namespace convcore_bench {
namespace {

struct GemmShape {
  const char* what;
  int64_t m, n, k;
};

template <typename T>
void bench_gemm(benchmark::State& state, GemmShape s) {
  const auto a = random_data<T>(s.m * s.k, 1);
  const auto b = random_data<T>(s.k * s.n, 2);
  std::vector<T> c(static_cast<std::size_t>(s.m * s.n));
  for (auto _ : state) {
    convcore::gemm<T>(s.m, s.n, s.k, a.data(), s.k, 1, b.data(), s.n, 1, c.data(), s.n, false);
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  state.counters["FLOPS"] = benchmark::Counter(2.0 * double(s.m) * double(s.n) * double(s.k),
                                               benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(s.what);
}

template <typename T>
void add(const char* dtype, const GemmShape& s) {
  const std::string name = std::string("gemm/") + dtype + "/" + std::to_string(s.m) + "x" +
                           std::to_string(s.n) + "x" + std::to_string(s.k);
  benchmark::RegisterBenchmark(name.c_str(), [s](benchmark::State& st) { bench_gemm<T>(st, s); })
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
}

}  // namespace

void register_gemm_benchmarks() {
  add<float>("f32", {"square", 2048, 2048, 2048});
  // Forward GEMMs of conv layers: M = K_out, N = Ho*Wo, K = C*R*S.
  add<float>("f32", {"fwd 3x3 c64->64 at 112x112", 64, 12544, 576});
  add<float>("f32", {"fwd 3x3 c128->256 at 56x56", 256, 3136, 1152});
  add<float>("f32", {"fwd 3x3 c512->512 at 28x28", 512, 784, 4608});
  add<float>("f32", {"fwd alexnet conv1 11x11 s4", 96, 3025, 363});
  // Backward-weight of the 28x28 layer, transposed: M = C*R*S, N = K_out, K = Ho*Wo.
  add<float>("f32", {"bwd_weight^T 3x3 c512->512 at 28x28", 4608, 512, 784});
  add<double>("f64", {"square", 1024, 1024, 1024});
}

}  // namespace convcore_bench
