#include "interrupt.hpp"

#include <algorithm>

namespace convcore {

InterruptPoll::InterruptPoll(Fn poll, void* context, int interval_ms) {
  auto* s = new detail::CancelState;
  s->poll = poll;
  s->context = context;
  s->interval = std::chrono::milliseconds(std::max(1, interval_ms));
  s->next_poll = std::chrono::steady_clock::now() + s->interval;
  s->previous = detail::t_cancel.state;
  s->previous_owner = detail::t_cancel.owner;
  detail::t_cancel = detail::CancelTls{s, true, 0};
  state_ = s;
}

InterruptPoll::~InterruptPoll() {
  auto* s = static_cast<detail::CancelState*>(state_);
  detail::t_cancel = detail::CancelTls{s->previous, s->previous_owner, 0};
  delete s;
}

namespace detail {

void throw_interrupted() { throw Interrupted(); }

// Once a poll said stop, the scope stays stopped: later calls in it throw at their first
// check.
void poll_interrupt(CancelState& s) {
  if (!s.poll || s.cancelled.load(std::memory_order_relaxed)) return;
  const auto now = std::chrono::steady_clock::now();
  if (now < s.next_poll) return;
  s.next_poll = now + s.interval;
  if (s.poll(s.context)) s.cancelled.store(true, std::memory_order_relaxed);
}

}  // namespace detail
}  // namespace convcore
