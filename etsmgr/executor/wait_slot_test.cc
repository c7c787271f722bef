#include "etsmgr/executor/wait_slot.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "etsmgr/executor/runtime.h"
#include "etsmgr/executor/testing/test_backends.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

class WaitSlotTest : public BackendTest {
 protected:
  void SetUp() override {
    BackendTest::SetUp();
    if (IsSkipped()) return;
    RuntimeOptions options;
    options.backend = backend();
    options.schedulers = 2;
    absl::StatusOr<std::unique_ptr<Runtime>> rt = Runtime::Create(options);
    ASSERT_TRUE(rt.ok()) << rt.status();
    rt_ = std::move(*rt);
  }
  std::unique_ptr<Runtime> rt_;
};

Task<bool> WaitOnce(WaitSlot* slot, absl::Duration timeout) {
  co_return co_await slot->Wait(absl::Now() + timeout);
}

TEST_P(WaitSlotTest, NotifyBeforeWaitIsRemembered) {
  WaitSlot slot;
  slot.Notify();
  slot.Notify();  // Counts once.
  EXPECT_TRUE(slot.notified());
  EXPECT_TRUE(rt_->BlockOn(WaitOnce(&slot, absl::Seconds(10))));
  EXPECT_FALSE(rt_->BlockOn(WaitOnce(&slot, absl::Milliseconds(1))));
}

TEST_P(WaitSlotTest, DeadlinePassesWithoutNotify) {
  WaitSlot slot;
  absl::Time start = absl::Now();
  EXPECT_FALSE(rt_->BlockOn(WaitOnce(&slot, absl::Milliseconds(20))));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(20));
}

TEST_P(WaitSlotTest, ExpiredDeadlineDoesNotSuspend) {
  WaitSlot slot;
  EXPECT_FALSE(rt_->BlockOn(WaitOnce(&slot, -absl::Seconds(1))));
  slot.Notify();
  EXPECT_TRUE(rt_->BlockOn(WaitOnce(&slot, -absl::Seconds(1))));
}

Task<void> SignalWhenWaiting(WaitSlot* slot, std::atomic<bool>* waiting, bool* result) {
  waiting->store(true);
  *result = co_await slot->Wait();
}

// A notification that lands after an expired wait's first look (another thread's Notify) is
// taken by the wait, also when its time slice is used up. It was consumed and reported as a
// deadline passed (await_ready's "must yield first" answer read as "none"): lost.
TEST_P(WaitSlotTest, ANotifyLandingInAnExpiredWaitIsNotLost) {
  RuntimeOptions options;
  options.backend = backend();
  options.schedulers = 1;
  options.slice_reductions = 1;  // Every charge uses the slice up.
  std::unique_ptr<Runtime> rt = Runtime::Create(options).value();
  executor_internal::g_expired_wait_hook.store(+[](WaitSlot* slot) { slot->Notify(); });
  WaitSlot slot;
  const bool woke = rt->BlockOn(WaitOnce(&slot, -absl::Seconds(1)));
  executor_internal::g_expired_wait_hook.store(nullptr);
  EXPECT_TRUE(woke) << "the notification was taken but reported as a deadline passed";
  EXPECT_FALSE(slot.notified()) << "taken once";
}

TEST_P(WaitSlotTest, NotifyFromPlainThreadWakesWaiter) {
  WaitSlot slot;
  std::atomic<bool> waiting{false};
  bool result = false;
  std::thread notifier([&] {
    while (!slot.waiting()) std::this_thread::yield();
    slot.Notify();
  });
  rt_->BlockOn(SignalWhenWaiting(&slot, &waiting, &result));
  notifier.join();
  EXPECT_TRUE(result);
}

// Runs `fn` on scheduler `index` and waits (with a deadline) until it has run.
::testing::AssertionResult RunOn(Runtime& rt, int index, std::function<void()> fn) {
  auto ran = std::make_shared<std::promise<void>>();
  std::future<void> done = ran->get_future();
  absl::Status posted = rt.Post(
      [fn = std::move(fn), ran] {
        fn();
        ran->set_value();
      },
      index);
  if (!posted.ok()) return ::testing::AssertionFailure() << posted;
  if (done.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
    return ::testing::AssertionFailure() << "scheduler " << index << " did not run the post";
  }
  return ::testing::AssertionSuccess();
}

// Waits (with a deadline) until the frame `owner` holds has finished or is gone, asking scheduler
// 0, which runs it. Run queues may be shuffled (sanitizer builds), so one later post is no proof
// that a queued resumption has run.
::testing::AssertionResult AwaitFrameGone(Runtime& rt, const std::shared_ptr<Task<bool>>& owner) {
  absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    bool gone = false;
    ::testing::AssertionResult ran =
        RunOn(rt, 0, [owner, &gone] { gone = !owner->valid() || owner->done(); });
    if (!ran) return ran;
    if (gone) return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "the waiting frame never finished";
}

// Notify races with the deadline: exactly one of them resumes the waiter, never both, never
// neither, and nothing touches a finished frame (asan/tsan check the latter). The notifier's
// moment steps from well before the deadline to well after it, so over the rounds both must win
// at times: a Wait that ignores its deadline, or a notification, fails.
enum class Round { kNotified, kTimedOut, kNotifiedUnsent };

Task<Round> RaceOnce(WaitSlot* slot, Runtime* rt, int other_scheduler, absl::Duration offset) {
  // The notifier runs on the other scheduler at `offset` from the deadline.
  absl::Time deadline = absl::Now() + absl::Microseconds(500);
  auto sent = std::make_shared<std::atomic<bool>>(false);
  (void)rt->Post(
      [slot, notify_at = deadline + offset, sent] {
        while (absl::Now() < notify_at) {
        }
        sent->store(true);
        slot->Notify();
      },
      other_scheduler);
  bool notified = co_await slot->Wait(deadline);
  if (!notified) co_return Round::kTimedOut;
  co_return sent->load() ? Round::kNotified : Round::kNotifiedUnsent;
}

struct RaceCounts {
  int notified = 0;
  int timed_out = 0;
  int notified_unsent = 0;
};

Task<RaceCounts> RaceMany(WaitSlot* slot, Runtime* rt, int iterations) {
  RaceCounts counts;
  for (int i = 0; i < iterations; ++i) {
    absl::Duration offset = absl::Microseconds(50 * (i % 21 - 10));  // -500 .. +500 µs
    switch (co_await RaceOnce(slot, rt, 1, offset)) {
      case Round::kNotified:
        ++counts.notified;
        break;
      case Round::kNotifiedUnsent:
        ++counts.notified_unsent;
        break;
      case Round::kTimedOut:
        ++counts.timed_out;
        // The late notification is now pending; consume it so the next round starts clean.
        while (!co_await slot->Wait(absl::Now() + absl::Seconds(10))) {
        }
        break;
    }
  }
  co_return counts;
}

TEST_P(WaitSlotTest, NotifyRacesDeadlineManyTimes) {
  WaitSlot slot;
  constexpr int kIterations = 1000;
  RaceCounts counts = rt_->BlockOn(RaceMany(&slot, rt_.get(), kIterations), 0);
  EXPECT_EQ(counts.notified_unsent, 0) << "a waiter was told it was notified before any Notify";
  EXPECT_GT(counts.notified, 0) << "a notification never won";
  EXPECT_GT(counts.timed_out, 0) << "the deadline never won";
  EXPECT_EQ(counts.notified + counts.timed_out, kIterations);
  EXPECT_FALSE(slot.waiting());
  EXPECT_FALSE(slot.notified());
  std::printf("notify won %d, deadline won %d\n", counts.notified, counts.timed_out);
}

// Starts WaitOnce(slot, 1 h) on scheduler 0 (by resuming the task's frame there): when it
// returns, the frame is suspended in Wait.
std::shared_ptr<Task<bool>> StartWaiting(Runtime& rt, WaitSlot* slot) {
  auto owner = std::make_shared<Task<bool>>(WaitOnce(slot, absl::Hours(1)));
  EXPECT_TRUE(RunOn(rt, 0, [owner] { owner->handle().resume(); }));
  EXPECT_TRUE(slot->waiting());
  return owner;
}

// Cancel before any Notify: TryCancelWait wins, the frame may be destroyed, and a later Notify
// touches only the slot (asan would see a touch of the freed frame).
TEST_P(WaitSlotTest, CancelWinsWithoutNotify) {
  auto slot = std::make_shared<WaitSlot>();
  std::shared_ptr<Task<bool>> owner = StartWaiting(*rt_, slot.get());
  bool cancelled = false;
  ASSERT_TRUE(RunOn(*rt_, 0, [owner, slot, &cancelled] {
    cancelled = slot->TryCancelWait();
    if (cancelled) *owner = Task<bool>();  // Destroys the suspended frame.
  }));
  ASSERT_TRUE(cancelled);
  EXPECT_FALSE(slot->waiting());
  slot->Notify();
  EXPECT_TRUE(slot->notified());  // Remembered for the next Wait, as with no waiter.
  EXPECT_TRUE(rt_->BlockOn(WaitOnce(slot.get(), absl::Seconds(1)), 0));
}

// Notify before the cancel: the resumption is queued, so TryCancelWait loses and the frame
// finishes with "notified".
TEST_P(WaitSlotTest, CancelLosesAfterNotify) {
  auto slot = std::make_shared<WaitSlot>();
  std::shared_ptr<Task<bool>> owner = StartWaiting(*rt_, slot.get());
  slot->Notify();
  EXPECT_FALSE(slot->waiting());
  bool cancelled = true;
  ASSERT_TRUE(RunOn(*rt_, 0, [slot, &cancelled] { cancelled = slot->TryCancelWait(); }));
  EXPECT_FALSE(cancelled);
  ASSERT_TRUE(AwaitFrameGone(*rt_, owner));
  ASSERT_TRUE(owner->done());
  EXPECT_TRUE(owner->handle().promise().take_result());
  EXPECT_FALSE(slot->notified());  // The waiter consumed it.
}

// The race itself: a notifier thread against a cancel on the waiter's scheduler. Each round checks
// what its winner promises: cancel won -> the frame is destroyed and the late Notify leaves the
// slot notified; notify won -> the frame finishes with "notified".
TEST_P(WaitSlotTest, CancelRacesNotifyThenDestroy) {
  auto slot = std::make_shared<WaitSlot>();
  int cancelled = 0;
  int notified = 0;
  // At least 200 rounds, and more (up to 5,000) until each side has won once: how often each
  // wins depends on the machine and the sanitizer (under TSan the notify once won all of 200).
  for (int i = 0; i < 5000 && (i < 200 || cancelled == 0 || notified == 0); ++i) {
    std::shared_ptr<Task<bool>> owner = StartWaiting(*rt_, slot.get());
    // The notifier starts when the cancel is about to run (a thread's start-up alone would
    // otherwise decide the race).
    auto go = std::make_shared<std::atomic<bool>>(false);
    std::thread notifier([slot, go] {
      while (!go->load(std::memory_order_acquire)) {
      }
      slot->Notify();
    });
    bool won = false;
    // The cancel waits a little after the start, longer each round (up to ~16k spins): the rounds
    // sweep the race window instead of hitting one side of it every time.
    const int delay = (i % 64) * 256;
    ASSERT_TRUE(RunOn(*rt_, 0, [owner, slot, go, delay, &won] {
      go->store(true, std::memory_order_release);
      for (int k = 0; k < delay; ++k) asm volatile("" ::: "memory");
      won = slot->TryCancelWait();
      if (won) *owner = Task<bool>();  // Destroys the suspended frame.
    }));
    notifier.join();
    if (won) {
      ++cancelled;
      EXPECT_FALSE(owner->valid());
      // The notifier came after the cancel: its Notify found no waiter.
      ASSERT_TRUE(slot->notified());
      EXPECT_TRUE(rt_->BlockOn(WaitOnce(slot.get(), absl::Seconds(1)), 0));
    } else {
      ++notified;
      ASSERT_TRUE(AwaitFrameGone(*rt_, owner));
      ASSERT_TRUE(owner->done());
      EXPECT_TRUE(owner->handle().promise().take_result());
      EXPECT_FALSE(slot->notified());
    }
  }
  std::printf("cancel won %d, notify won %d\n", cancelled, notified);
  // Both sides of the race were taken.
  EXPECT_GT(cancelled, 0) << "the cancel never won: its branch was not exercised";
  EXPECT_GT(notified, 0) << "the notify never won: its branch was not exercised";
}

ETSMGR_INSTANTIATE_ON_ALL_BACKENDS(WaitSlotTest);

}  // namespace
}  // namespace etsmgr
