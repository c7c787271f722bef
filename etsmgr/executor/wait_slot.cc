#include "etsmgr/executor/wait_slot.h"

#include <cassert>

#include "etsmgr/base/log.h"

namespace etsmgr {

WaitSlot::Awaiter WaitSlot::Wait(absl::Time deadline) noexcept {
  Scheduler* s = Scheduler::Current();
  if (deadline == absl::InfiniteFuture() || s == nullptr) return Awaiter(this, INT64_MAX);
  return Awaiter(this, s->ToSchedulerNanos(deadline));
}

WaitSlot::Awaiter WaitSlot::WaitUntilNanos(int64_t deadline_ns) noexcept {
  return Awaiter(this, deadline_ns);
}

void WaitSlot::Notify() noexcept {
  uint32_t state = state_.load(std::memory_order_acquire);
  while (true) {
    if (state == kNotified) return;
    if (state == kEmpty) {
      if (state_.compare_exchange_weak(state, kNotified, std::memory_order_acq_rel,
                                       std::memory_order_acquire)) {
        return;
      }
      continue;
    }
    // kWaiting: whoever moves the state out of kWaiting owns the resumption.
    if (state_.compare_exchange_weak(state, kEmpty, std::memory_order_acq_rel,
                                     std::memory_order_acquire)) {
      Awaiter* waiter = waiter_;
      waiter->notified_ = true;
      waiter->scheduler_->Post(&waiter->resume_);
      return;
    }
  }
}

bool WaitSlot::TryCancelWait() noexcept {
  uint32_t expected = kWaiting;
  return state_.compare_exchange_strong(expected, kEmpty, std::memory_order_acq_rel,
                                        std::memory_order_acquire);
}

WaitSlot::Awaiter::~Awaiter() {
  // A frame destroyed while it waits (a root destroyed at shutdown, while what would notify it
  // lives on: a process whose exit notifies it as it is destroyed after it, say): the slot must
  // not keep pointing at this awaiter, or that Notify() writes into the freed frame.
  if (waiting_) slot_->TryCancelWait();
  if (armed()) DisarmOn(scheduler_);
}

bool WaitSlot::Awaiter::await_ready() noexcept {
  uint32_t expected = kNotified;
  if (slot_->state_.compare_exchange_strong(expected, kEmpty, std::memory_order_acq_rel,
                                            std::memory_order_acquire)) {
    notified_ = true;
    // No suspension needed, but a reduction of the time slice: past it, the waiter yields with
    // the notification in hand (fairness).
    Scheduler* s = Scheduler::Current();
    if (s != nullptr && s->Charge()) {
      yield_ = true;
      return false;
    }
    return true;
  }
  return false;
}

bool WaitSlot::Awaiter::await_suspend(std::coroutine_handle<> h) noexcept {
  scheduler_ = Scheduler::Current();
  if (yield_) {  // Notified already (await_ready): back of the queue, then on.
    resume_.set_handle(h);
    scheduler_->Post(&resume_);
    return true;
  }
  if (scheduler_ == nullptr) {
    // Misuse: nothing could resume us here. Do not suspend; answer as a deadline already past.
    Log(LogLevel::kError, "WaitSlot::Wait awaited off a scheduler thread: not waiting");
    notified_ = TakeNotification();
    return false;
  }
  resume_.set_handle(h);
  slot_->waiter_ = this;
  if (deadline_ns_ <= scheduler_->NowNanos()) {
    // Already expired: only a pending notification can win. Taken as such: await_ready's answer
    // is false also when it took one but must yield first, which lost that notification.
    if (auto hook = executor_internal::g_expired_wait_hook.load(std::memory_order_acquire)) {
      hook(slot_);
    }
    notified_ = TakeNotification();
    return false;
  }
  if (deadline_ns_ != INT64_MAX) ArmOn(scheduler_, deadline_ns_);
  uint32_t expected = kEmpty;
  if (slot_->state_.compare_exchange_strong(expected, kWaiting, std::memory_order_acq_rel,
                                            std::memory_order_acquire)) {
    waiting_ = true;
    return true;  // Suspended; Notify() or Fire() resumes us.
  }
  // A notification arrived between await_ready and here.
  assert(expected == kNotified);
  slot_->state_.store(kEmpty, std::memory_order_release);
  DisarmOn(scheduler_);
  notified_ = true;
  return false;
}

bool WaitSlot::Awaiter::TakeNotification() noexcept {
  uint32_t expected = kNotified;
  return slot_->state_.compare_exchange_strong(expected, kEmpty, std::memory_order_acq_rel,
                                               std::memory_order_acquire);
}

bool WaitSlot::Awaiter::await_resume() noexcept {
  waiting_ = false;
  if (armed()) DisarmOn(scheduler_);
  return notified_;
}

void WaitSlot::Awaiter::Fire() noexcept {
  if (slot_->TryCancelWait()) {
    notified_ = false;
    resume_.Run();
  }
  // Otherwise a Notify() won and already queued our resumption.
}

}  // namespace etsmgr
