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

// The cancel state of the call this thread works for (null: nobody can interrupt it), and
// whether this thread is the one that installed it (the only one allowed to poll: the
// poll may need the caller's thread, e.g. Python's signal handlers run on the main thread).
inline thread_local CancelState* t_cancel = nullptr;
inline thread_local bool t_cancel_owner = false;

[[noreturn]] void throw_interrupted();
void poll_interrupt(CancelState& s);  // owner only: polls when the interval has passed

// Called at block boundaries (every few hundred microseconds of work at most): one
// thread-local read and an atomic load on worker threads, plus a clock read on the caller.
inline void interrupt_point() {
  CancelState* s = t_cancel;
  if (!s) return;
  if (t_cancel_owner) poll_interrupt(*s);
  if (s->cancelled.load(std::memory_order_relaxed)) throw_interrupted();
}

// Installs the calling thread's cancel state on a worker thread for one parallel region.
class CancelShare {
 public:
  explicit CancelShare(CancelState* s) : saved_(t_cancel), saved_owner_(t_cancel_owner) {
    if (t_cancel != s) {  // a worker (thread 0 is the caller and keeps its own)
      t_cancel = s;
      t_cancel_owner = false;
    }
  }
  ~CancelShare() {
    t_cancel = saved_;
    t_cancel_owner = saved_owner_;
  }
  CancelShare(const CancelShare&) = delete;
  CancelShare& operator=(const CancelShare&) = delete;

 private:
  CancelState* saved_;
  bool saved_owner_;
};

}  // namespace convcore::detail
