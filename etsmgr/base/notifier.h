// Notifier: lets a thread wait, with a deadline, for a condition on state that other threads
// change and announce. The state itself is the caller's (atomics, say); Notify() after each
// change wakes the waiters, which re-check their condition.
//
//   struct Stats { std::atomic<int> live{0}; Notifier changed; };
//   stats.live.fetch_add(1); stats.changed.Notify();                        // the changer
//   bool drained = stats.changed.WaitUntil([&] { return stats.live == 0; },  // a waiter
//                                          absl::Now() + absl::Seconds(5));
//
// Any thread. Notify costs a mutex lock; use it on changes a waiter may care about (connections
// opened and closed, a restart done), not on a hot path.
#ifndef ETSMGR_BASE_NOTIFIER_H_
#define ETSMGR_BASE_NOTIFIER_H_

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <mutex>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace etsmgr {

class Notifier {
 public:
  void Notify() {
    { std::lock_guard<std::mutex> lock(mu_); }  // A waiter between its check and its wait sees it.
    cv_.notify_all();
  }
  // True once `condition()` holds; false if it still does not at `deadline` (wall clock).
  template <typename F>
  bool WaitUntil(F condition, absl::Time deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    while (!condition()) {
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) return false;
      // In steps of at most a second (an infinite deadline would overflow the clock's arithmetic).
      const absl::Duration step = std::min(left, absl::Seconds(1));
      if (cv_.wait_for(lock, absl::ToChronoNanoseconds(step)) == std::cv_status::timeout &&
          step == absl::Seconds(1)) {
        ++full_steps_;
      }
    }
    return true;
  }
  // How many times a waiter slept a whole one-second step without a Notify (under the mutex).
  // A wake-up lost between a waiter's check and its wait would show here rather than as a hang:
  // tests whose every change is announced expect none.
  uint64_t full_steps() {
    std::lock_guard<std::mutex> lock(mu_);
    return full_steps_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t full_steps_ = 0;
};

}  // namespace etsmgr

#endif  // ETSMGR_BASE_NOTIFIER_H_
