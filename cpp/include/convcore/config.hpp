// convcore: runtime configuration (ISA choice, threads, blocking parameters).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace convcore {

inline constexpr const char* kVersion = "0.1.0";

// Instruction-set paths a build can carry (CONVCORE_KERNEL_TARGETS picks which). Generic is
// portable C++ and always present. The values only name targets: the preference between
// them is the build's target table, not this order.
enum class Isa { Generic = 0, Avx2 = 1, Avx512 = 2 };

const char* isa_name(Isa isa);
// Parses "generic" / "avx2" / "avx512"; throws std::invalid_argument otherwise.
Isa parse_isa(const std::string& name);

// The best ISA compiled into this build that the CPU (and the OS, for the wide register
// state) supports.
Isa detected_isa();
// Every ISA compiled into this build that this CPU can run, best first (generic last).
std::vector<Isa> available_isas();
// The ISA in use: detected_isa() unless CONVCORE_ISA or set_active_isa() forced another.
Isa active_isa();
// Forces an ISA (tests use this to exercise every path). Throws std::invalid_argument
// when it is not one of available_isas().
void set_active_isa(Isa isa);

// Register and cache blocking of the GEMM for one dtype on the active ISA.
struct Blocking {
  int mr = 0, nr = 0;            // microkernel tile (rows of A, columns of B)
  int64_t kc = 0, mc = 0, nc = 0;  // cache blocks: depth, rows, columns
  const char* kernel_name = "";
  int vector_bytes = 0;  // the ISA's vector registers: 64 (zmm), 32 (ymm, portable)
};
template <typename T>
Blocking blocking();

// Threads used by convcore calls. Defaults to OMP_NUM_THREADS when set; otherwise to the
// CPUs this process may run on (OpenMP's count), capped by its control groups' CPU quota (a
// container's, rounded up); 1 without OpenMP. n < 1 is rejected (std::invalid_argument); n above max_num_threads() is clamped
// to it. In a child made by fork() after this process ran a call on several threads,
// every call runs on one thread and get_num_threads() returns 1 (the OpenMP runtime's
// threads do not survive fork; set_num_threads there has no effect).
void set_num_threads(int n);
int get_num_threads();
// The most threads set_num_threads accepts: 4 per CPU this process may run on (its
// affinity mask), at least 64. More threads than that only oversubscribe the cores.
int max_num_threads();
bool has_openmp();

// What this process's control groups (a container's limits) allow, read from proc_cgroup
// (the process's /proc/<pid>/cgroup) and the cgroup file systems mounted under root: the
// lowest limit along the process's cgroup path and its ancestors (the mount root alone
// where the path's folders are absent, as in a cgroup namespace), v1 and v2 hierarchies.
// The arguments other than the defaults are for tests (fake trees).
//
// CPUs' worth of time per period, rounded up: v2 cpu.max ("quota period"), v1
// cpu.cfs_quota_us / cpu.cfs_period_us (under root/<the controllers' list>, "cpu,cpuacct").
// 0 when no quota is set or the files cannot be read. The default thread count is capped
// by it unless OMP_NUM_THREADS is set.
int cgroup_cpu_limit(const char* proc_cgroup = "/proc/self/cgroup",
                     const char* root = "/sys/fs/cgroup");
// Bytes of memory plus swap: v2 memory.max plus memory.swap.max (at most host_swap); v1
// memory.memsw.limit_in_bytes, or memory.limit_in_bytes plus host_swap (under
// root/memory). Values of 2^62 and above (v1's "unlimited"), "max" and unreadable files
// count as no limit; -1 when there is none. The Python package refuses arrays larger than
// the lower of this and RAM + swap before allocating them (a container's limit kills the
// process instead of failing the allocation).
int64_t cgroup_memory_limit(int64_t host_swap, const char* proc_cgroup = "/proc/self/cgroup",
                            const char* root = "/sys/fs/cgroup");

}  // namespace convcore
