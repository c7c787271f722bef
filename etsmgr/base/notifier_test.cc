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

TEST(NotifierTest, AConditionThatNeverHoldsGivesUpAtTheDeadline) {
  Notifier changed;
  EXPECT_FALSE(changed.WaitUntil([] { return false; }, absl::Now() + absl::Milliseconds(5)));
  EXPECT_TRUE(changed.WaitUntil([] { return true; }, absl::InfinitePast()));
}

}  // namespace
}  // namespace etsmgr
