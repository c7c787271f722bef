// Deterministic mode: one thread, seeded choice among ready coroutines, virtual time.
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "etsmgr/executor/runtime.h"
#include "etsmgr/executor/wait_slot.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

std::unique_ptr<Runtime> MakeDeterministic(uint64_t seed) {
  RuntimeOptions options;
  options.deterministic = true;
  options.seed = seed;
  absl::StatusOr<std::unique_ptr<Runtime>> rt = Runtime::Create(options);
  EXPECT_TRUE(rt.ok()) << rt.status();
  return std::move(*rt);
}

Task<void> Worker(int id, std::vector<std::string>* trace) {
  for (int i = 0; i < 5; ++i) {
    trace->push_back(std::to_string(id) + ":" + std::to_string(i));
    if ((id + i) % 3 == 0) {
      co_await Sleep(absl::Milliseconds(id));
    } else {
      co_await Yield();
    }
  }
}

std::vector<std::string> TraceFor(uint64_t seed) {
  auto rt = MakeDeterministic(seed);
  std::vector<std::string> trace;
  for (int id = 0; id < 8; ++id) EXPECT_TRUE(rt->Spawn(Worker(id, &trace)).ok());
  rt->RunUntilIdle();
  EXPECT_EQ(trace.size(), 40u);
  return trace;
}

// An infinite sleep never wakes, also when nothing else is left to run (virtual time jumped to
// it and fired it); and an infinite slice does not overflow virtual time (UBSan in the asan
// config).
TEST(DeterministicTest, InfiniteWaitsNeverComeDueAndHugeSlicesDoNotOverflow) {
  RuntimeOptions options;
  options.deterministic = true;
  options.slice = absl::InfiniteDuration();
  options.slice_reductions = 1;
  std::unique_ptr<Runtime> rt = Runtime::Create(options).value();
  bool woke = false;
  int hours = 0;
  ASSERT_TRUE(rt->Spawn([](bool* woke) -> Task<void> {
                  co_await Sleep(absl::InfiniteDuration());
                  *woke = true;
                }(&woke))
                  .ok());
  ASSERT_TRUE(rt->Spawn([](int* hours) -> Task<void> {
                  for (int i = 0; i < 3; ++i) {
                    co_await Sleep(absl::Hours(1));
                    ++*hours;
                  }
                }(&hours))
                  .ok());
  ASSERT_TRUE(rt->Spawn([]() -> Task<void> {
                  for (int i = 0; i < 10; ++i) co_await Yield();  // Slices used up.
                }())
                  .ok());
  rt->RunUntilIdle();
  EXPECT_EQ(hours, 3);
  EXPECT_FALSE(woke) << "an infinite sleep woke";
}

TEST(DeterministicTest, SameSeedReplaysExactly) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    EXPECT_EQ(TraceFor(seed), TraceFor(seed)) << "seed " << seed;
  }
}

TEST(DeterministicTest, SeedsChooseDifferentInterleavings) {
  std::set<std::vector<std::string>> distinct;
  for (uint64_t seed = 0; seed < 20; ++seed) distinct.insert(TraceFor(seed));
  EXPECT_GT(distinct.size(), 10u);
}

Task<absl::Duration> SleepAnHour() {
  Scheduler* s = Scheduler::Current();
  absl::Time before = s->Now();
  co_await Sleep(absl::Hours(1));
  co_return s->Now() - before;
}

TEST(DeterministicTest, VirtualTimeDoesNotWait) {
  auto rt = MakeDeterministic(1);
  absl::Time start = absl::Now();
  EXPECT_EQ(rt->BlockOn(SleepAnHour()), absl::Hours(1));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_EQ(rt->scheduler(0).Now(), absl::UnixEpoch() + absl::Hours(1));
}

Task<void> SleepThenLog(absl::Duration d, int id, std::vector<int>* order) {
  co_await Sleep(d);
  order->push_back(id);
}

TEST(DeterministicTest, TimersFireInDeadlineOrderWhateverTheSeed) {
  for (uint64_t seed = 0; seed < 10; ++seed) {
    auto rt = MakeDeterministic(seed);
    std::vector<int> order;
    for (int id : {5, 1, 4, 2, 3}) {
      ASSERT_TRUE(rt->Spawn(SleepThenLog(absl::Seconds(id), id, &order)).ok());
    }
    rt->RunUntilIdle();
    EXPECT_EQ(order, (std::vector<int>{1, 2, 3, 4, 5})) << "seed " << seed;
  }
}

Task<void> CountSteps(int* counter, int n) {
  for (int i = 0; i < n; ++i) {
    ++*counter;
    co_await Yield();
  }
}

TEST(DeterministicTest, StepByStep) {
  auto rt = MakeDeterministic(7);
  int counter = 0;
  ASSERT_TRUE(rt->Spawn(CountSteps(&counter, 3)).ok());
  Scheduler& s = rt->scheduler(0);
  EXPECT_TRUE(s.RunStep());
  EXPECT_EQ(counter, 1);
  EXPECT_TRUE(s.RunStep());
  EXPECT_EQ(counter, 2);
  EXPECT_TRUE(s.RunStep());
  EXPECT_EQ(counter, 3);
  EXPECT_TRUE(s.RunStep());   // Resumes after the last yield and finishes.
  EXPECT_FALSE(s.RunStep());  // Nothing left.
  EXPECT_EQ(s.live_roots(), 0u);
}

Task<int> WaitsForNothing(WaitSlot* slot) {
  co_await slot->Wait();
  co_return 0;
}

TEST(DeterministicTest, BlockOnReportsDeadlock) {
  auto rt = MakeDeterministic(3);
  WaitSlot slot;
  EXPECT_THROW(rt->BlockOn(WaitsForNothing(&slot)), std::logic_error);
}

Task<bool> WaitWithTimeout(WaitSlot* slot) {
  co_return co_await slot->Wait(absl::InfiniteFuture());
}

Task<bool> WaitOneSecond(WaitSlot* slot) {
  co_return co_await slot->Wait(Scheduler::Current()->Now() + absl::Seconds(1));
}

TEST(DeterministicTest, WaitSlotDeadlineUsesVirtualTime) {
  auto rt = MakeDeterministic(4);
  WaitSlot slot;
  EXPECT_FALSE(rt->BlockOn(WaitOneSecond(&slot)));
  EXPECT_EQ(rt->scheduler(0).Now(), absl::UnixEpoch() + absl::Seconds(1));
  slot.Notify();
  EXPECT_TRUE(rt->BlockOn(WaitWithTimeout(&slot)));
}

}  // namespace
}  // namespace etsmgr
