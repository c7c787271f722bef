// WaitSlot: one coroutine waits, any thread notifies, with an optional deadline.
//
// The building block for mailboxes and other "sleep until something arrives" points. Exactly one
// of {notification, deadline} resumes a waiter; the loser of that race backs off without
// touching the waiter again, so neither a late notification nor a late timer can resume a frame
// twice or after it was destroyed.
//
//   WaitSlot slot;
//   // waiter, on a scheduler:
//   bool notified = co_await slot.Wait(deadline);   // false: the deadline passed first
//   // any thread:
//   slot.Notify();
//
// Semantics
// - Notify() with no waiter leaves the slot notified; the next Wait() returns true at once and
//   consumes it. Several Notify()s before a Wait() count once (like an auto-reset event).
// - A notified waiter is resumed on the scheduler it waited on, never inline in Notify().
// - The timer lives in the waiter's frame and is cancelled on resumption or frame destruction.
//
// Cancellation: a frame suspended in Wait() may be destroyed only after TryCancelWait() returned
// true on the waiter's scheduler thread (the slot is then no longer waited on, and no Notify can
// reach the frame); if it returns false a resumption is already queued and will run. A frame
// destroyed while it waits (at shutdown) cancels the wait itself, so that a later Notify() finds
// no waiter; a Notify() running at that moment on another thread is not defended against.
//
// Threading: Notify() from any thread; Wait() and TryCancelWait() on the waiter's scheduler.
// Awaited off any scheduler thread (a misuse: nothing could resume the waiter), Wait() does not
// suspend: it yields whether the slot was notified, as with a deadline already past, and logs
// an error.
// The slot must outlive every Notify() call (owners keep it in a reference-counted block), and
// every frame that waits on it (a frame destroyed while it waits cancels its wait on the slot).
// Memory ordering: Notify() happens-before the waiter's resumption (acq_rel on the state).
#ifndef ETSMGR_EXECUTOR_WAIT_SLOT_H_
#define ETSMGR_EXECUTOR_WAIT_SLOT_H_

#include <atomic>
#include <coroutine>
#include <cstdint>

#include "absl/time/time.h"
#include "etsmgr/executor/internal/timer_heap.h"
#include "etsmgr/executor/runnable.h"
#include "etsmgr/executor/scheduler.h"

namespace etsmgr {

class WaitSlot {
 public:
  class Awaiter;

  WaitSlot() = default;
  WaitSlot(const WaitSlot&) = delete;
  WaitSlot& operator=(const WaitSlot&) = delete;

  void Notify() noexcept;
  bool TryCancelWait() noexcept;

  // Awaiting yields true when notified, false when `deadline` passed first.
  Awaiter Wait(absl::Time deadline = absl::InfiniteFuture()) noexcept;
  // Same, with a deadline already on the scheduler's clock (INT64_MAX: none).
  Awaiter WaitUntilNanos(int64_t deadline_ns) noexcept;

  bool notified() const noexcept { return state_.load(std::memory_order_acquire) == kNotified; }
  bool waiting() const noexcept { return state_.load(std::memory_order_acquire) == kWaiting; }

  class Awaiter final : private executor_internal::TimerNode {
   public:
    Awaiter(WaitSlot* slot, int64_t deadline_ns) : slot_(slot), deadline_ns_(deadline_ns) {}
    Awaiter(Awaiter&& other) noexcept : slot_(other.slot_), deadline_ns_(other.deadline_ns_) {}
    ~Awaiter();

    bool await_ready() noexcept;
    bool await_suspend(std::coroutine_handle<> h) noexcept;
    bool await_resume() noexcept;

   private:
    friend class WaitSlot;
    void Fire() noexcept override;
    // Takes a pending notification (no suspension, no yield): whether there was one.
    bool TakeNotification() noexcept;

    WaitSlot* slot_;
    int64_t deadline_ns_;
    Scheduler* scheduler_ = nullptr;
    ResumeRunnable resume_;
    bool notified_ = true;
    bool yield_ = false;    // Notified, but yielding first: the time slice was used up.
    bool waiting_ = false;  // Suspended in the slot (until resumed).
  };

 private:
  enum State : uint32_t { kEmpty = 0, kNotified = 1, kWaiting = 2 };
  std::atomic<uint32_t> state_{kEmpty};
  Awaiter* waiter_ = nullptr;  // Published by the kEmpty -> kWaiting release.
};

namespace executor_internal {
// Tests: called by a Wait whose deadline has passed, before it takes a pending notification (a
// Notify from another thread can land there).
using ExpiredWaitHook = void (*)(WaitSlot* slot);
inline std::atomic<ExpiredWaitHook> g_expired_wait_hook{nullptr};
}  // namespace executor_internal

}  // namespace etsmgr

#endif  // ETSMGR_EXECUTOR_WAIT_SLOT_H_
