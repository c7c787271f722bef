#include "etsmgr/executor/wait_slot.h"

#include <atomic>
#include <cstdio>
#include <memory>
#include <thread>
#include <vector>

#include "etsmgr/executor/internal/test_backends.h"
#include "etsmgr/executor/runtime.h"
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

// Notify races with the deadline: exactly one of them resumes the waiter, never both, never
// neither, and nothing touches a finished frame (asan/tsan check the latter).
Task<int> RaceOnce(WaitSlot* slot, Runtime* rt, int other_scheduler) {
  // The notifier runs on the other scheduler at about the deadline.
  absl::Time deadline = absl::Now() + absl::Microseconds(50);
  (void)rt->Post(
      [slot, deadline] {
        while (absl::Now() < deadline) {
        }
        slot->Notify();
      },
      other_scheduler);
  bool notified = co_await slot->Wait(deadline);
  co_return notified ? 1 : 0;
}

Task<std::pair<int, int>> RaceMany(WaitSlot* slot, Runtime* rt, int iterations) {
  int notified = 0;
  int timed_out = 0;
  for (int i = 0; i < iterations; ++i) {
    if (co_await RaceOnce(slot, rt, 1) == 1) {
      ++notified;
    } else {
      ++timed_out;
      // The late notification is now pending; consume it so the next round starts clean.
      while (!co_await slot->Wait(absl::Now() + absl::Seconds(10))) {
      }
    }
  }
  co_return std::make_pair(notified, timed_out);
}

TEST_P(WaitSlotTest, NotifyRacesDeadlineManyTimes) {
  WaitSlot slot;
  constexpr int kIterations = 2000;
  auto [notified, timed_out] = rt_->BlockOn(RaceMany(&slot, rt_.get(), kIterations), 0);
  EXPECT_EQ(notified + timed_out, kIterations);
  EXPECT_FALSE(slot.waiting());
  std::printf("notify won %d, deadline won %d\n", notified, timed_out);
}

// A frame suspended in Wait is destroyed after TryCancelWait wins; later notifies touch only the
// slot.
TEST_P(WaitSlotTest, CancelThenDestroySuspendedWaiter) {
  auto slot = std::make_shared<WaitSlot>();
  std::atomic<bool> cancelled{false};
  for (int i = 0; i < 200; ++i) {
    auto owner = std::make_shared<Task<bool>>(WaitOnce(slot.get(), absl::Hours(1)));
    std::atomic<int> phase{0};
    // Start the wait on scheduler 0 by resuming the task's frame there.
    ASSERT_TRUE(rt_->Post(
                       [owner, &phase] {
                         owner->handle().resume();
                         phase.store(1);
                       },
                       0)
                    .ok());
    while (phase.load() != 1) std::this_thread::yield();
    std::thread notifier([slot] { slot->Notify(); });
    ASSERT_TRUE(rt_->Post(
                       [owner, slot, &phase, &cancelled] {
                         if (slot->TryCancelWait()) {
                           cancelled.store(true);
                           *owner = Task<bool>();  // Destroys the suspended frame.
                           phase.store(2);
                         } else {
                           phase.store(3);  // The notifier won; its resumption is queued.
                         }
                       },
                       0)
                    .ok());
    notifier.join();
    while (phase.load() < 2) std::this_thread::yield();
    // Let a queued resumption (if any) run before the Task goes away. Run queues may be shuffled
    // (sanitizer builds), so one later post is no proof: ask scheduler 0, which runs the frame,
    // until the frame is gone or finished.
    while (true) {
      std::atomic<int> finished{0};  // 1: yes, 2: not yet.
      ASSERT_TRUE(rt_->Post(
                         [owner, &finished] {
                           bool done = !owner->handle() || owner->handle().done();
                           finished.store(done ? 1 : 2);
                         },
                         0)
                      .ok());
      while (finished.load() == 0) std::this_thread::yield();
      if (finished.load() == 1) break;
    }
    // Reset the slot for the next round.
    if (slot->notified()) {
      EXPECT_TRUE(rt_->BlockOn(WaitOnce(slot.get(), absl::Seconds(1)), 0));
    }
  }
  std::printf("cancel won at least once: %d\n", cancelled.load());
}

ETSMGR_INSTANTIATE_ON_ALL_BACKENDS(WaitSlotTest);

}  // namespace
}  // namespace etsmgr
