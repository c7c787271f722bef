#include "etsmgr/base/notifier.h"

#include <atomic>
#include <thread>

#include "gtest/gtest.h"

namespace etsmgr {
namespace {

TEST(NotifierTest, AWaiterWakesOnTheChangeItWaitsFor) {
  Notifier changed;
  std::atomic<int> value{0};
  std::thread changer([&] {
    for (int i = 1; i <= 1000; ++i) {
      value.store(i);
      changed.Notify();
    }
  });
  EXPECT_TRUE(
      changed.WaitUntil([&] { return value.load() == 1000; }, absl::Now() + absl::Seconds(30)));
  changer.join();
}

// Every step needs the other side's wake-up; a lost one stalls the exchange until the waiter's
// one-second step runs out, which full_steps() counts (no step of a healthy exchange takes a
// second).
TEST(NotifierTest, APingPongWhereEveryStepNeedsAWakeUp) {
  Notifier changed;
  std::atomic<int> turn{0};
  constexpr int kSteps = 500;
  std::thread other([&] {
    for (int i = 1; i < 2 * kSteps; i += 2) {
      ASSERT_TRUE(changed.WaitUntil([&] { return turn.load() == i; }, absl::InfiniteFuture()));
      turn.store(i + 1);
      changed.Notify();
    }
  });
  for (int i = 0; i < 2 * kSteps; i += 2) {
    ASSERT_TRUE(changed.WaitUntil([&] { return turn.load() == i; }, absl::InfiniteFuture()));
    turn.store(i + 1);
    changed.Notify();
  }
  other.join();
  EXPECT_EQ(turn.load(), 2 * kSteps);
  EXPECT_EQ(changed.full_steps(), 0u) << "wake-ups were lost";
}

// The race a Notifier exists to close: the change and its Notify() come between a waiter's check
// of its condition and its wait. The waiter's check takes 20 us after it read the state, and the
// changer (which never waits on the Notifier: it spins) changes the state after a delay swept over
// 0-39 us, so most steps put the change inside the check. A wake-up lost there shows as a
// whole one-second step (full_steps()); the exchange stops at the first.
TEST(NotifierTest, AChangeDuringTheWaitersCheckIsNotMissed) {
  Notifier changed;
  std::atomic<int> turn{0};
  std::atomic<bool> stop{false};
  constexpr int kSteps = 2000;
  auto spin = [](absl::Duration d) {
    const absl::Time until = absl::Now() + d;
    while (absl::Now() < until) {
    }
  };
  std::thread changer([&] {
    for (int i = 1; i < 2 * kSteps; i += 2) {
      while (turn.load() != i) {
        if (stop.load()) return;
      }
      spin(absl::Microseconds(i / 2 % 40));
      turn.store(i + 1);
      changed.Notify();
    }
  });
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  for (int i = 0; i < 2 * kSteps; i += 2) {
    const bool came = changed.WaitUntil(
        [&] {
          if (turn.load() == i) return true;
          spin(absl::Microseconds(20));
          return false;
        },
        deadline);
    if (!came || changed.full_steps() > 0) {
      stop.store(true);
      break;
    }
    turn.store(i + 1);
  }
  changer.join();
  EXPECT_EQ(changed.full_steps(), 0u) << "a wake-up was lost";
  EXPECT_EQ(turn.load(), 2 * kSteps);
}

TEST(NotifierTest, AConditionThatNeverHoldsGivesUpAtTheDeadline) {
  Notifier changed;
  EXPECT_FALSE(changed.WaitUntil([] { return false; }, absl::Now() + absl::Milliseconds(5)));
  EXPECT_TRUE(changed.WaitUntil([] { return true; }, absl::InfinitePast()));
}

}  // namespace
}  // namespace etsmgr
