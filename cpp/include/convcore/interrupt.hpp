// convcore: stopping long calls early (Ctrl-C in the Python module, a cancel button in an
// application).
#pragma once

#include <stdexcept>

namespace convcore {

// Thrown by a call that stopped because an InterruptPoll asked it to. Every thread of the
// call has left by then and its temporary memory is freed; the outputs are left partially
// written (their contents are unspecified), the inputs and any prepacked weights are
// untouched, and the library is ready for the next call.
class Interrupted : public std::runtime_error {
 public:
  Interrupted() : std::runtime_error("convcore: the call was interrupted") {}
};

// While an InterruptPoll lives on a thread, the calls that thread makes ask
// poll(context) — on that thread, about every `interval_ms` milliseconds of compute —
// whether to stop. When it returns true, every thread of the call leaves at its next
// block boundary (well under a millisecond of work apart) and the call throws Interrupted.
// poll must not throw and must not call into convcore. Scopes nest (the innermost one
// polls). Calls made on other threads are not affected.
class InterruptPoll {
 public:
  using Fn = bool (*)(void* context);
  InterruptPoll(Fn poll, void* context, int interval_ms = 25);
  ~InterruptPoll();
  InterruptPoll(const InterruptPoll&) = delete;
  InterruptPoll& operator=(const InterruptPoll&) = delete;

 private:
  void* state_;  // detail::CancelState
};

}  // namespace convcore
