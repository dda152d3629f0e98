#include "runtime.hpp"

#include <pthread.h>
#include <sched.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "targets.hpp"

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
Blocking derive_blocking(const kernels::GemmUkernel<T>& k, int lanes) {
#if defined(_SC_LEVEL1_DCACHE_SIZE)
  const long l1 = cache_bytes(_SC_LEVEL1_DCACHE_SIZE, 32 * 1024);
  const long l2 = cache_bytes(_SC_LEVEL2_CACHE_SIZE, 1024 * 1024);
  const long l3 = cache_bytes(_SC_LEVEL3_CACHE_SIZE, 8 * 1024 * 1024);
#else
  const long l1 = 32 * 1024, l2 = 1024 * 1024, l3 = 8 * 1024 * 1024;
#endif
  // Buffers elsewhere are sized by these limits (row-pointer tables, the indirect
  // executor's zero run): a kernel outside them is a build error caught at start-up.
  if (k.mr < 1 || k.nr < 1 || k.mr > kMaxTile || k.nr > kMaxTile)
    throw std::logic_error(std::string("kernel ") + k.name + " has a tile beyond kMaxTile");
  const int64_t sz = sizeof(T);
  Blocking b;
  b.mr = k.mr;
  b.nr = k.nr;
  b.kernel_name = k.name;
  b.vector_bytes = lanes * static_cast<int>(sz);
  b.kc = std::clamp<int64_t>(round_down(l1 / 2 / (k.nr * sz), 16), 64, kMaxKC);  // <= kMaxKC
  b.mc = std::clamp<int64_t>(round_down(l2 / 2 / (b.kc * sz), k.mr), k.mr, 1024 / k.mr * k.mr);
  // Virtual machines often report the whole socket's (or a bogus) L3: cap the share.
  const long l3_share = std::min<long>(l3, 32l * 1024 * 1024) / 4;
  b.nc = std::clamp<int64_t>(round_down(l3_share / (b.kc * sz), k.nr), k.nr, 4096);
  return b;
}

template <typename T>
kernels::Families<T> families_of(const Target& t);
template <>
kernels::Families<float> families_of<float>(const Target& t) { return t.f32(); }
template <>
kernels::Families<double> families_of<double>(const Target& t) { return t.f64(); }

// One engine per compiled target this CPU supports, in table order. The others' getters
// are never called: they run code compiled with flags the CPU may lack.
template <typename T>
struct EngineTable {
  struct Entry {
    Isa isa;
    Engine<T> engine;
    Engine<T> narrow;  // engine with the narrow gemm tile; engine.narrow points here
  };
  std::vector<Entry> entries;
  EngineTable() {
    for (const Target& t : compiled_targets()) {
      if (!t.supported()) continue;
      const kernels::Families<T> f = families_of<T>(t);
      entries.push_back({t.isa,
                         Engine<T>{f.gemm, derive_blocking(f.gemm, f.dwconv.lanes), f.winograd,
                                   f.dwconv, f.transpose},
                         Engine<T>{f.gemm_narrow, derive_blocking(f.gemm_narrow, f.dwconv.lanes),
                                   f.winograd,
                                   f.dwconv, f.transpose}});
    }
    // The vector is complete: the entries no longer move.
    for (Entry& e : entries) {
      e.engine.narrow = &e.narrow;
      e.narrow.narrow = &e.narrow;
    }
  }
};

std::atomic<int> g_threads{0};     // 0: not yet initialised
std::atomic<int> g_calls_in_flight{0};
std::atomic<bool> g_threads_started{false};  // an OpenMP region ran on several threads
std::atomic<bool> g_forked_serial{false};    // a fork child of such a process: one thread

// CPUs this process may run on (its affinity mask; all online CPUs when unknown).
int usable_cpus() {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  const long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<int>(std::min<long>(n, 1 << 20)) : 1;
}

int default_threads() {
#if defined(CONVCORE_OPENMP)
  const char* env = std::getenv("OMP_NUM_THREADS");
  return threads_within_quota(omp_get_max_threads(), env,
                              env && *env ? 0 : cgroup_cpu_limit());
#else
  return 1;
#endif
}

struct ScratchBuffer {
  void* ptr = nullptr;
  std::size_t bytes = 0;
  ~ScratchBuffer() { std::free(ptr); }
};

// The first line of a small file, without its newline; empty when it cannot be read.
// (C stdio: no iostreams in the library, see params.cpp.)
std::string first_line(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return {};
  char buf[256];
  std::string line;
  if (std::fgets(buf, sizeof buf, f)) line = buf;
  std::fclose(f);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  return line;
}

// A whole decimal integer (optional sign); false for anything else.
bool parse_int(const std::string& text, long long& v) {
  if (text.empty() || text.size() > 20) return false;
  char* end = nullptr;
  errno = 0;
  v = std::strtoll(text.c_str(), &end, 10);
  return errno == 0 && end && *end == '\0' && end != text.c_str();
}

// root/rel and the folders above it up to root, those that exist: the limits of a
// cgroup's ancestors bind it too. Inside a container the path often names the host's
// hierarchy, absent here: then root alone.
std::vector<std::string> cgroup_folders(const std::string& root, const std::string& rel) {
  std::vector<std::string> out;
  std::string at = root;
  auto add = [&](const std::string& d) {
    if (access(d.c_str(), F_OK) == 0) out.push_back(d);
  };
  add(at);
  std::size_t i = 0;
  while (i < rel.size()) {
    std::size_t j = rel.find('/', i);
    if (j == std::string::npos) j = rel.size();
    if (j > i) {
      at += "/" + rel.substr(i, j - i);
      add(at);
    }
    i = j + 1;
  }
  return out;
}

// ceil(quota / period) CPUs, or 0 for none (unlimited, unreadable, nonsense).
int cpus_of(long long quota, long long period) {
  if (quota <= 0 || period <= 0) return 0;
  const long long n = (quota + period - 1) / period;
  return static_cast<int>(std::min<long long>(n, 1 << 20));
}

// One line of /proc/<pid>/cgroup: "hierarchy-id:controllers:path" (v2: "0::path").
struct CgroupLine {
  std::string hid, controllers, rel;
  bool v2() const { return hid == "0" && controllers.empty(); }
  bool has(const char* controller) const {  // in the comma-separated list (v1)
    for (std::size_t i = 0; i <= controllers.size();) {
      std::size_t j = controllers.find(',', i);
      if (j == std::string::npos) j = controllers.size();
      if (controllers.compare(i, j - i, controller) == 0) return true;
      i = j + 1;
    }
    return false;
  }
};

// The process's cgroup lines; none when the file cannot be read.
std::vector<CgroupLine> cgroup_lines(const char* proc_cgroup) {
  std::vector<CgroupLine> out;
  std::FILE* f = std::fopen(proc_cgroup, "r");
  if (!f) return out;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, f)) {
    std::string line = buf;
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
    const std::size_t a = line.find(':');
    const std::size_t b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    out.push_back({line.substr(0, a), line.substr(a + 1, b - a - 1), line.substr(b + 1)});
  }
  std::fclose(f);
  return out;
}

// Limits at or above this are cgroup v1's way of saying "no limit" (2^63 rounded down to
// pages).
constexpr long long kNoMemoryLimit = 1LL << 62;

// The lowest byte limit in `file` over `folders`; -1 where none is set ("max", absent,
// unreadable, unlimited).
long long lowest_bytes(const std::vector<std::string>& folders, const char* file) {
  long long best = -1;
  for (const std::string& d : folders) {
    long long v = 0;
    if (parse_int(first_line(d + "/" + file), v) && v >= 0 && v < kNoMemoryLimit &&
        (best < 0 || v < best))
      best = v;
  }
  return best;
}

}  // namespace

int threads_within_quota(int counted, const char* omp_num_threads, int quota) {
  int n = std::max(1, counted);
  // OMP_NUM_THREADS set: the user's number. Otherwise libgomp counts the affinity mask,
  // which in a container with a CPU quota is the host's cores: threads past the quota only
  // wait for their share of the period (and OpenMP's barriers wait for the slowest).
  if (!(omp_num_threads && *omp_num_threads) && quota > 0) n = std::min(n, quota);
  return n;
}

template <typename T>
const GemmEngine<T>& engine_for(Isa isa) {
  static const EngineTable<T> table;
  for (const auto& e : table.entries)
    if (e.isa == isa) return e.engine;
  throw std::invalid_argument(std::string("no engine for isa '") + isa_name(isa) +
                              "': not compiled into this build or not supported by this CPU");
}
template <typename T>
const GemmEngine<T>& engine() {
  return engine_for<T>(active_isa());
}
template <typename T>
kernels::TransposeFn<T> packing_transpose() {
  return engine<T>().transpose;
}
template kernels::TransposeFn<float> packing_transpose<float>();
template kernels::TransposeFn<double> packing_transpose<double>();
template const GemmEngine<float>& engine<float>();
template const GemmEngine<double>& engine<double>();
template const GemmEngine<float>& engine_for<float>(Isa);
template const GemmEngine<double>& engine_for<double>(Isa);

void note_threads_started() {
  if (!g_threads_started.load(std::memory_order_relaxed))
    g_threads_started.store(true);  // once per process: ordering before the region starts
}
bool forked_serial() { return g_forked_serial.load(std::memory_order_relaxed); }

namespace {
// Before fork: finish the lazy one-time initialisations (engine tables, CPU probe) so the
// child never inherits one half-done by another thread (its guard would stay locked).
void before_fork() {
  try {
    (void)engine<float>();
    (void)engine<double>();
  } catch (...) {
  }
}
// In the child only the forking thread exists: no call is in flight, and if threads ever
// ran here, OpenMP's pool is unusable (see runtime.hpp).
void in_fork_child() {
  g_calls_in_flight.store(0, std::memory_order_relaxed);
  if (g_threads_started.load(std::memory_order_relaxed))
    g_forked_serial.store(true, std::memory_order_relaxed);
}
[[maybe_unused]] const int g_fork_handlers = pthread_atfork(before_fork, nullptr, in_fork_child);
}  // namespace

CallScope::CallScope() { g_calls_in_flight.fetch_add(1, std::memory_order_relaxed); }
CallScope::~CallScope() { g_calls_in_flight.fetch_sub(1, std::memory_order_relaxed); }

int team_threads() {
  if (forked_serial()) return 1;
  const int callers = std::max(1, g_calls_in_flight.load(std::memory_order_relaxed));
  return std::max(1, get_num_threads() / callers);
}

int threads_for(double flops, double min_per_thread) {
  int n = team_threads();
  const double useful = flops / min_per_thread;
  if (useful < n) n = std::max(1, static_cast<int>(useful));
  return n;
}

namespace {
thread_local ScratchBuffer t_scratch[static_cast<int>(Scratch::Count)];
constexpr std::size_t kHugePageBytes = std::size_t(2) << 20;
constexpr std::size_t kHugeScratchBytes = std::size_t(4) << 20;
}

void* thread_scratch(Scratch which, std::size_t bytes, const char* what) {
  ScratchBuffer& b = t_scratch[static_cast<int>(which)];
  if (b.bytes < bytes) {
    std::free(b.ptr);
    b.ptr = nullptr;
    b.bytes = 0;
    // Large buffers (a call's transformed weights, big panels) are aligned to 2 MiB and
    // offered to transparent huge pages: one page fault per 2 MiB instead of 512.
    const bool huge = bytes >= kHugeScratchBytes;
    const std::size_t align = huge ? kHugePageBytes : 64;
    const std::size_t rounded = (bytes + align - 1) / align * align;
    void* p = rounded >= bytes ? std::aligned_alloc(align, rounded) : nullptr;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (p && huge) madvise(p, rounded, MADV_HUGEPAGE);  // advice only: failure is harmless
#endif
    if (!p)
      throw ScratchAllocError(std::string("cannot allocate ") + std::to_string(bytes) +
                              " bytes for " + what);
    b.ptr = p;
    b.bytes = rounded;
  }
  return b.ptr;
}

void trim_thread_scratch(bool include_call_slots) {
  for (int i = 0; i < static_cast<int>(Scratch::Count); ++i) {
    if (!include_call_slots && (i == static_cast<int>(Scratch::Weights) ||
                                i == static_cast<int>(Scratch::Partials)))
      continue;
    ScratchBuffer& b = t_scratch[i];
    if (b.bytes > kScratchKeepBytes) {
      std::free(b.ptr);
      b.ptr = nullptr;
      b.bytes = 0;
    }
  }
}

}  // namespace detail

template <typename T>
Blocking blocking() {
  return detail::engine<T>().blocking;
}
template Blocking blocking<float>();
template Blocking blocking<double>();

int max_num_threads() { return std::max(64, 4 * detail::usable_cpus()); }

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("set_num_threads: n must be >= 1, got " + std::to_string(n));
  detail::g_threads.store(std::min(n, max_num_threads()), std::memory_order_relaxed);
}

int get_num_threads() {
  if (detail::forked_serial()) return 1;
  int n = detail::g_threads.load(std::memory_order_relaxed);
  if (n == 0) {
    n = std::min(detail::default_threads(), max_num_threads());
    int expected = 0;
    detail::g_threads.compare_exchange_strong(expected, n);
    n = detail::g_threads.load(std::memory_order_relaxed);
  }
  return n;
}

int cgroup_cpu_limit(const char* proc_cgroup, const char* root) {
  using namespace detail;
  int best = 0;
  const auto take = [&best](int n) {
    if (n > 0 && (best == 0 || n < best)) best = n;
  };
  for (const CgroupLine& c : cgroup_lines(proc_cgroup)) {
    if (c.v2()) {  // cpu.max is "quota period" or "max period"
      for (const std::string& d : cgroup_folders(root, c.rel)) {
        const std::string text = first_line(d + "/cpu.max");
        const std::size_t sp = text.find(' ');
        long long quota = 0, period = 0;
        if (sp != std::string::npos && parse_int(text.substr(0, sp), quota) &&
            parse_int(text.substr(sp + 1), period))
          take(cpus_of(quota, period));
      }
    } else if (c.has("cpu")) {  // v1: mounted at root/<its controllers> ("cpu,cpuacct")
      for (const std::string& d : cgroup_folders(std::string(root) + "/" + c.controllers, c.rel)) {
        long long quota = 0, period = 0;
        if (parse_int(first_line(d + "/cpu.cfs_quota_us"), quota) &&
            parse_int(first_line(d + "/cpu.cfs_period_us"), period))
          take(cpus_of(quota, period));
      }
    }
  }
  return best;
}

int64_t cgroup_memory_limit(int64_t host_swap, const char* proc_cgroup, const char* root) {
  using namespace detail;
  const long long swap_cap = std::clamp<long long>(host_swap, 0, kNoMemoryLimit);
  long long best = -1;
  const auto take = [&best](long long v) {
    if (v >= 0 && (best < 0 || v < best)) best = v;
  };
  for (const CgroupLine& c : cgroup_lines(proc_cgroup)) {
    if (c.v2()) {
      const std::vector<std::string> folders = cgroup_folders(root, c.rel);
      const long long mem = lowest_bytes(folders, "memory.max");
      if (mem < 0) continue;
      const long long swap = lowest_bytes(folders, "memory.swap.max");
      take(mem + (swap < 0 ? swap_cap : std::min(swap, swap_cap)));
    } else if (c.has("memory")) {  // v1
      const std::vector<std::string> folders =
          cgroup_folders(std::string(root) + "/memory", c.rel);
      const long long memsw = lowest_bytes(folders, "memory.memsw.limit_in_bytes");
      const long long mem = lowest_bytes(folders, "memory.limit_in_bytes");
      if (memsw >= 0)
        take(mem < 0 ? memsw : std::min(memsw, mem + swap_cap));
      else if (mem >= 0)
        take(mem + swap_cap);
    }
  }
  return best;
}

bool has_openmp() {
#if defined(CONVCORE_OPENMP)
  return true;
#else
  return false;
#endif
}

}  // namespace convcore
