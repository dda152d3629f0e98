// Internal runtime services: the per-target engine (kernel families + blocking), threads and
// per-thread packing workspace.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <string>
#include <utility>
#include <initializer_list>
#include <new>
#include <type_traits>

#include "convcore/config.hpp"
#include "../kernels/kernels.hpp"
#include "checked.hpp"
#include "interrupt.hpp"

#if defined(CONVCORE_OPENMP)
#include <omp.h>
#endif

namespace convcore::detail {

// Everything the drivers need from one target for one dtype: its kernel families
// (kernels::Families) and what the runtime derives for them.
template <typename T>
struct Engine {
  kernels::GemmUkernel<T> ukernel;  // the gemm family
  Blocking blocking;                // cache blocking for ukernel's tile
  kernels::WinogradKernels<T> winograd;  // F(4×4, 3×3) transforms (conv/winograd.hpp)
  kernels::DwconvUkernel<T> dwconv;      // the depthwise family (conv/depthwise.cpp)
  kernels::TransposeFn<T> transpose = nullptr;  // layout copies (conv/layout_copy.hpp)
  // The same target's engine with the narrow gemm tile (one vector of columns) and its
  // blocking, for products with at most narrow->blocking.nr columns; never null (the
  // narrow engine's own narrow is itself).
  const Engine* narrow = nullptr;
  // Later families (igemm) join here, with their own parameters.
};
template <typename T>
using GemmEngine = Engine<T>;

// The engine of the active ISA, and of any available one (built once per target the CPU
// supports; engine_for throws std::invalid_argument for an ISA that is not available).
template <typename T>
const GemmEngine<T>& engine();
template <typename T>
const GemmEngine<T>& engine_for(Isa isa);

// The default thread count from OpenMP's (`counted`, the CPUs of the affinity mask unless
// OMP_NUM_THREADS is set) and the container's CPU quota (cgroup_cpu_limit, 0 for none):
// capped by the quota unless OMP_NUM_THREADS (`omp_num_threads`, null when unset) says
// how many; at least 1.
int threads_within_quota(int counted, const char* omp_num_threads, int quota);

// Threads to use for one call: the configured count, shared fairly when several callers
// run at once (so concurrent Python threads don't oversubscribe the cores), and capped
// so each thread gets at least `min_per_thread` of the work (by default 2 MFLOP: below
// that the fork/join costs more than it saves).
int threads_for(double flops, double min_per_thread = 2e6);
// Threads for a memory-bound pass over `elements` values (a layout copy, a packing, a sum
// of partials): threads_for's rule counted such an element as a few FLOPs and left most of
// a large team idle (4 of 16 threads on a 2.4 Mi-element transpose), but a copying thread
// adds bandwidth, and every region launches the whole team anyway (parallel_run): one
// thread per kCopyElemsPerThread elements (64 KiB of float32, tens of microseconds).
inline constexpr double kCopyElemsPerThread = 16384;
inline int threads_for_copy(double elements) {
  return threads_for(elements, kCopyElemsPerThread);
}
// The team every parallel region of this caller launches: threads_for's count before the
// cap (the configured count shared among the callers in flight).
int team_threads();

// Counts the calls in flight (RAII), consulted by threads_for().
class CallScope {
 public:
  CallScope();
  ~CallScope();
  CallScope(const CallScope&) = delete;
  CallScope& operator=(const CallScope&) = delete;
};

void trim_thread_scratch(bool include_call_slots);  // see the scratch rule below

// Fork safety. The OpenMP runtime (GNU libgomp) does not survive fork(): in the child its
// worker threads are gone while its bookkeeping says they exist, and the next parallel
// region waits for them forever. So once this process (or an ancestor, before forking it)
// has run a region on several threads, a child made by fork runs every call on one thread
// (threads_for() returns 1 and parallel_run() never enters OpenMP). A fork handler also
// resets the calls-in-flight count (threads that were inside a call are not in the child).
// threads_started() records the first region; forked_serial() says the child rule applies.
void note_threads_started();
bool forked_serial();

// Runs body(tid, nthreads) on nthreads threads (inline when 1). Exceptions thrown by any
// thread are rethrown on the caller's thread after the region ends. The caller's
// interrupt state (interrupt.hpp) is shared with the workers for the region.
//
// The region itself always has team_threads() threads (or nthreads, if more), those past
// nthreads idle to its end: GNU libgomp ends the pool threads a smaller team leaves out
// and creates them again for the next larger one, so a call whose regions asked for 4,
// then 16, then 4 threads paid a dozen thread creations per region (16 threads, 1×1
// c512→2048 at batch 1: 0.49 ms per call at 4 threads, 0.74 at 16).
template <typename Body>
void parallel_run(int nthreads, Body&& body) {
#if defined(CONVCORE_OPENMP)
  if (nthreads > 1 && !forked_serial()) {
    note_threads_started();
    CancelState* const cancel = t_cancel.state;
    std::exception_ptr error;
    std::mutex error_mutex;
    const int team = std::max(nthreads, team_threads());
#pragma omp parallel num_threads(team)
    {
      CancelShare share(cancel);
      try {
        const int nt = std::min(nthreads, omp_get_num_threads()), tid = omp_get_thread_num();
        if (tid < nt) body(tid, nt);
        trim_thread_scratch(false);
      } catch (...) {
        trim_thread_scratch(false);
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
    return;
  }
#else
  (void)nthreads;
#endif
  struct Trim {
    ~Trim() { trim_thread_scratch(false); }
  } trim;
  body(0, 1);
}

// Splits [0, count) into nthreads contiguous chunks; returns thread tid's [begin, end).
inline void static_range(int64_t count, int tid, int nthreads, int64_t& begin, int64_t& end) {
  begin = count * tid / nthreads;
  end = count * (tid + 1) / nthreads;
}

// Limits the kernels and blocking must respect; buffers sized by them are checked where
// the blocking is made (runtime.cpp) and static_assert-ed where they are declared.
inline constexpr int kMaxTile = 64;     // largest MR or NR of any kernel
inline constexpr int64_t kMaxKC = 512;  // largest KC the blocking derives

// 64-byte aligned scratch owned by the calling thread, grown on demand and reused across
// calls (packed A and B blocks, the buffered C blocks, padded image rows, and — in the
// calling thread — the weights prepacked for all threads). Each slot holds one kind of
// value: element slots hold float or double (a thread may use a slot for either dtype, one
// call at a time), Offsets holds int64 offset tables, Pointers row-pointer tables (const
// float* or const double*). thread_scratch_as checks the pairing at compile time.
//
// What the scratch may hold (the memory rule): every executor's scratch is bounded by the
// blocking (MC·KC, KC·NC, MC·NC panels), by the weights (packed weights, offset tables of
// Cg·R·S entries), by a fixed count (row-pointer tables), or by kImageScratchElems (padded
// row copies: executors whose copies would exceed it do not apply, see their why_not) —
// never by stride, dilation, padding or the
// output size. Buffers are kept between calls up to kScratchKeepBytes per slot; a slot that
// grew beyond that for one large call is freed when the call's parallel region ends
// (trim_thread_scratch, called by parallel_run on every thread it used; the Weights and
// Partials slots, which the calling thread holds across regions, by the primitive at the
// end of the call). So a thread pins at most Count × kScratchKeepBytes between calls. An
// allocation that fails throws ScratchAllocError (a std::bad_alloc naming the buffer and its
// size). Partials: the weight gradient's per-chunk partial dWs (at most 15 copies of dW),
// written by every thread of one region and summed in the next; kept between calls, they
// no longer come back from the allocator as fresh pages on every call (5×5 c192→32: 316
// page faults per call, and a speed that depended on what the process had allocated before).
enum class Scratch {
  PackA = 0, PackB = 1, Tile = 2, Image = 3, Weights = 4, Offsets = 5, Pointers = 6,
  Partials = 7, Count = 8
};
inline constexpr std::size_t kScratchKeepBytes = std::size_t(16) << 20;
inline constexpr int64_t kImageScratchElems = int64_t(1) << 21;

class ScratchAllocError : public std::bad_alloc {
 public:
  explicit ScratchAllocError(std::string msg) : msg_(std::move(msg)) {}
  const char* what() const noexcept override { return msg_.c_str(); }

 private:
  std::string msg_;
};

void* thread_scratch(Scratch which, std::size_t bytes, const char* what);
// Frees this thread's slots larger than kScratchKeepBytes: all of them when
// include_call_slots, else all but the two the calling thread holds across a call's
// regions (Weights, Partials).
void trim_thread_scratch(bool include_call_slots);
template <Scratch kSlot, typename T>
T* thread_scratch_as(int64_t elements, const char* what = "a scratch buffer") {
  static_assert(kSlot != Scratch::Count, "not a slot");
  static_assert((kSlot == Scratch::Offsets) == std::is_same_v<T, int64_t>,
                "Offsets holds int64_t offset tables; the other slots hold elements");
  static_assert((kSlot == Scratch::Pointers) ==
                    (std::is_pointer_v<T> &&
                     std::is_floating_point_v<std::remove_cv_t<std::remove_pointer_t<T>>>),
                "Pointers holds row-pointer tables; the other slots hold no pointers");
  static_assert(kSlot == Scratch::Offsets || kSlot == Scratch::Pointers ||
                    std::is_floating_point_v<T>,
                "element slot");
  return static_cast<T*>(thread_scratch(kSlot, checked_bytes<T>(elements, what), what));
}

// Whether the product of non-negative factors is at most `limit` (no overflow: computed
// in 128 bits, saturating).
inline bool product_at_most(std::initializer_list<int64_t> factors, int64_t limit) {
  __int128 r = 1;
  for (int64_t f : factors) {
    if (f <= 0) return true;
    r *= f;
    if (r > limit) return false;
  }
  return true;
}

}  // namespace convcore::detail
