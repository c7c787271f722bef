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

// Every step needs the other side's wake-up: a lost one would stall the exchange (a second per
// step at least, past the test's timeout over 500 steps).
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
}

TEST(NotifierTest, AConditionThatNeverHoldsGivesUpAtTheDeadline) {
  Notifier changed;
  EXPECT_FALSE(changed.WaitUntil([] { return false; }, absl::Now() + absl::Milliseconds(5)));
  EXPECT_TRUE(changed.WaitUntil([] { return true; }, absl::InfinitePast()));
}

}  // namespace
}  // namespace etsmgr
