// Cancellation inside a call: the state an InterruptPoll installs on the calling thread,
// handed to the worker threads by parallel_run, and the check the loops run at block
// boundaries (interrupt_point).
#pragma once

#include <atomic>
#include <chrono>

#include "convcore/interrupt.hpp"

namespace convcore::detail {

struct CancelState {
  InterruptPoll::Fn poll = nullptr;
  void* context = nullptr;
  std::chrono::steady_clock::duration interval{};
  std::chrono::steady_clock::time_point next_poll{};
  std::atomic<bool> cancelled{false};
  CancelState* previous = nullptr;  // the enclosing scope's (InterruptPoll nests)
  bool previous_owner = false;
};

// Per thread: the cancel state of the call this thread works for (null: nobody can
// interrupt it); whether this thread installed it (the only one that polls: the poll may
// need the caller's thread, e.g. Python runs signal handlers on the main thread only);
// and a countdown of checks until the next clock read. One thread-local, one lookup.
struct CancelTls {
  CancelState* state = nullptr;
  bool owner = false;
  int countdown = 0;
};
inline thread_local CancelTls t_cancel;

// The owner reads the clock every kChecksPerClockRead checks (checks are a few MFLOP
// apart at most, so the poll interval is still kept to within a few milliseconds).
inline constexpr int kChecksPerClockRead = 8;

[[noreturn]] void throw_interrupted();
void poll_interrupt(CancelState& s);  // owner only: polls when the interval has passed

// Called at block boundaries (at most a few MFLOP of work apart): a thread-local read and
// an atomic load; on the calling thread, every few checks, a clock read.
inline void interrupt_point() {
  CancelTls& t = t_cancel;
  CancelState* const s = t.state;
  if (!s) return;
  if (t.owner && --t.countdown <= 0) {
    t.countdown = kChecksPerClockRead;
    poll_interrupt(*s);
  }
  if (s->cancelled.load(std::memory_order_relaxed)) throw_interrupted();
}

// Installs the calling thread's cancel state on a worker thread for one parallel region.
class CancelShare {
 public:
  explicit CancelShare(CancelState* s) : saved_(t_cancel) {
    if (t_cancel.state != s) t_cancel = CancelTls{s, false, 0};  // a worker (thread 0 is the caller)
  }
  ~CancelShare() { t_cancel = saved_; }
  CancelShare(const CancelShare&) = delete;
  CancelShare& operator=(const CancelShare&) = delete;

 private:
  CancelTls saved_;
};

}  // namespace convcore::detail
