#include "runtime.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <new>
#include <stdexcept>

namespace convcore {
namespace detail {
namespace {

long cache_bytes(int name, long fallback) {
#if defined(_SC_LEVEL1_DCACHE_SIZE)
  const long v = sysconf(name);
  if (v > 0) return v;
#else
  (void)name;
#endif
  return fallback;
}

int64_t round_down(int64_t v, int64_t to) { return std::max(to, v / to * to); }

// Block sizes from the cache sizes (BLIS's analytical model, simplified):
//  KC: a KC×NR micro-panel of B stays in L1 while A micro-panels stream past: use half of L1.
//  MC: an MC×KC block of A stays in L2 while B micro-panels stream: use half of L2.
//  NC: a KC×NC block of B lives in (this core's share of) L3.
template <typename T>
Blocking derive_blocking(const kernels::GemmUkernel<T>& k) {
#if defined(_SC_LEVEL1_DCACHE_SIZE)
  const long l1 = cache_bytes(_SC_LEVEL1_DCACHE_SIZE, 32 * 1024);
  const long l2 = cache_bytes(_SC_LEVEL2_CACHE_SIZE, 1024 * 1024);
  const long l3 = cache_bytes(_SC_LEVEL3_CACHE_SIZE, 8 * 1024 * 1024);
#else
  const long l1 = 32 * 1024, l2 = 1024 * 1024, l3 = 8 * 1024 * 1024;
#endif
  const int64_t sz = sizeof(T);
  Blocking b;
  b.mr = k.mr;
  b.nr = k.nr;
  b.kernel_name = k.name;
  b.kc = std::clamp<int64_t>(round_down(l1 / 2 / (k.nr * sz), 16), 64, kMaxKC);
  b.mc = std::clamp<int64_t>(round_down(l2 / 2 / (b.kc * sz), k.mr), k.mr, 1024 / k.mr * k.mr);
  // Virtual machines often report the whole socket's (or a bogus) L3: cap the share.
  const long l3_share = std::min<long>(l3, 32l * 1024 * 1024) / 4;
  b.nc = std::clamp<int64_t>(round_down(l3_share / (b.kc * sz), k.nr), k.nr, 4096);
  return b;
}

template <typename T>
kernels::GemmUkernel<T> ukernel_for(Isa isa);

template <>
kernels::GemmUkernel<float> ukernel_for<float>(Isa isa) {
#if defined(CONVCORE_HAVE_X86_KERNELS)
  if (isa == Isa::Avx512) return kernels::f32_gemm_ukernel_avx512();
  if (isa == Isa::Avx2) return kernels::f32_gemm_ukernel_avx2();
#endif
  (void)isa;
  return kernels::f32_gemm_ukernel_generic();
}
template <>
kernels::GemmUkernel<double> ukernel_for<double>(Isa isa) {
#if defined(CONVCORE_HAVE_X86_KERNELS)
  if (isa == Isa::Avx512) return kernels::f64_gemm_ukernel_avx512();
  if (isa == Isa::Avx2) return kernels::f64_gemm_ukernel_avx2();
#endif
  (void)isa;
  return kernels::f64_gemm_ukernel_generic();
}

template <typename T>
struct EngineTable {
  GemmEngine<T> entries[3];
  EngineTable() {
    for (int i = 0; i < 3; ++i) {
      const auto k = ukernel_for<T>(static_cast<Isa>(i));
      entries[i] = GemmEngine<T>{k, derive_blocking(k)};
    }
  }
};

std::atomic<int> g_threads{0};     // 0: not yet initialised
std::atomic<int> g_calls_in_flight{0};

int default_threads() {
#if defined(CONVCORE_OPENMP)
  return std::max(1, omp_get_max_threads());
#else
  return 1;
#endif
}

struct ScratchBuffer {
  void* ptr = nullptr;
  std::size_t bytes = 0;
  ~ScratchBuffer() { std::free(ptr); }
};

}  // namespace

template <typename T>
const GemmEngine<T>& engine_for(Isa isa) {
  static const EngineTable<T> table;
  return table.entries[static_cast<int>(isa)];
}
template <typename T>
const GemmEngine<T>& engine() {
  return engine_for<T>(active_isa());
}
template const GemmEngine<float>& engine<float>();
template const GemmEngine<double>& engine<double>();
template const GemmEngine<float>& engine_for<float>(Isa);
template const GemmEngine<double>& engine_for<double>(Isa);

CallScope::CallScope() { g_calls_in_flight.fetch_add(1, std::memory_order_relaxed); }
CallScope::~CallScope() { g_calls_in_flight.fetch_sub(1, std::memory_order_relaxed); }

int threads_for(double flops) {
  const int configured = get_num_threads();
  const int callers = std::max(1, g_calls_in_flight.load(std::memory_order_relaxed));
  int n = std::max(1, configured / callers);
  // Below ~2 MFLOP per thread the fork/join costs more than it saves.
  const double min_flops_per_thread = 2e6;
  const double useful = flops / min_flops_per_thread;
  if (useful < n) n = std::max(1, static_cast<int>(useful));
  return n;
}

void* thread_scratch(Scratch which, std::size_t bytes) {
  thread_local ScratchBuffer buffers[static_cast<int>(Scratch::Count)];
  ScratchBuffer& b = buffers[static_cast<int>(which)];
  if (b.bytes < bytes) {
    std::free(b.ptr);
    b.ptr = nullptr;
    b.bytes = 0;
    const std::size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (!p) throw std::bad_alloc();
    b.ptr = p;
    b.bytes = rounded;
  }
  return b.ptr;
}

}  // namespace detail

template <typename T>
Blocking blocking() {
  return detail::engine<T>().blocking;
}
template Blocking blocking<float>();
template Blocking blocking<double>();

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("set_num_threads: n must be >= 1, got " + std::to_string(n));
  detail::g_threads.store(n, std::memory_order_relaxed);
}

int get_num_threads() {
  int n = detail::g_threads.load(std::memory_order_relaxed);
  if (n == 0) {
    n = detail::default_threads();
    int expected = 0;
    detail::g_threads.compare_exchange_strong(expected, n);
    n = detail::g_threads.load(std::memory_order_relaxed);
  }
  return n;
}

bool has_openmp() {
#if defined(CONVCORE_OPENMP)
  return true;
#else
  return false;
#endif
}

}  // namespace convcore
