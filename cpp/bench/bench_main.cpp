// convcore_bench: GEMM and convolution-layer benchmarks with FLOP/s counters.
//
//   convcore_bench [--benchmark_filter=REGEX] [--benchmark_min_time=SECONDS] ...
//
// Environment:
//   CONVCORE_BENCH_THREADS  threads for convcore (default: convcore's own default, i.e.
//                           OMP_NUM_THREADS or all cores)
//   CONVCORE_LAYERS         layer-suite CSV (default: the one in the source tree)
//   CONVCORE_ISA            force generic / avx2 / avx512 (read by the library)
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "bench_common.hpp"
#include "convcore/config.hpp"

namespace {

// Applies CONVCORE_BENCH_THREADS; false when it is set to something that is not a count.
bool apply_thread_env() {
  const char* env = std::getenv("CONVCORE_BENCH_THREADS");
  if (!env || !*env) return true;
  char* end = nullptr;
  const long n = std::strtol(env, &end, 10);
  if (*end != '\0' || n < 1 || n > 4096) {
    std::fprintf(stderr, "convcore_bench: CONVCORE_BENCH_THREADS must be a positive integer, got '%s'\n", env);
    return false;
  }
  convcore::set_num_threads(static_cast<int>(n));
  return true;
}

void add_context() {
  const convcore::Blocking f = convcore::blocking<float>();
  const convcore::Blocking d = convcore::blocking<double>();
  auto blocks = [](const convcore::Blocking& b) {
    return std::string(b.kernel_name) + " MR=" + std::to_string(b.mr) + " NR=" + std::to_string(b.nr) +
           " KC=" + std::to_string(b.kc) + " MC=" + std::to_string(b.mc) + " NC=" + std::to_string(b.nc);
  };
  benchmark::AddCustomContext("convcore_version", convcore::kVersion);
  benchmark::AddCustomContext("convcore_isa", convcore::isa_name(convcore::active_isa()));
  benchmark::AddCustomContext("convcore_threads", std::to_string(convcore::get_num_threads()));
  benchmark::AddCustomContext("convcore_openmp", convcore::has_openmp() ? "yes" : "no");
  benchmark::AddCustomContext("convcore_f32_kernel", blocks(f));
  benchmark::AddCustomContext("convcore_f64_kernel", blocks(d));
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  try {
    if (!apply_thread_env()) return 1;
    add_context();
    convcore_bench::register_gemm_benchmarks();
    if (!convcore_bench::register_conv_benchmarks()) return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "convcore_bench: %s\n", e.what());
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
