#include "etsmgr/executor/runtime.h"

#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "etsmgr/executor/testing/test_backends.h"
#include "etsmgr/executor/wait_slot.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

class RuntimeTest : public BackendTest {
 protected:
  std::unique_ptr<Runtime> Make(int schedulers = 2) {
    RuntimeOptions options;
    options.backend = backend();
    options.schedulers = schedulers;
    absl::StatusOr<std::unique_ptr<Runtime>> rt = Runtime::Create(options);
    EXPECT_TRUE(rt.ok()) << rt.status();
    return std::move(*rt);
  }
  void FarTimerParks(absl::Duration far);
};

Task<int> AddAfterYield(int a, int b) {
  co_await Yield();
  co_return a + b;
}
Task<void> Fails() {
  co_await Yield();
  throw std::runtime_error("task failed");
}
int g_value = 3;
Task<int&> RefToGlobal() {
  co_await Yield();
  co_return g_value;
}

TEST_P(RuntimeTest, BlockOnReturnsValuesAndRethrows) {
  auto rt = Make();
  EXPECT_EQ(rt->size(), 2);
  EXPECT_EQ(rt->backend(),
            backend() == BackendPreference::kIoUring ? Backend::kIoUring : Backend::kEpoll);
  EXPECT_EQ(rt->BlockOn(AddAfterYield(2, 3)), 5);
  EXPECT_EQ(&rt->BlockOn(RefToGlobal()), &g_value);
  try {
    rt->BlockOn(Fails());
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "task failed");
  }
  EXPECT_EQ(BlockOn(*rt, AddAfterYield(1, 1)), 2);
}

TEST_P(RuntimeTest, DefaultIsOneSchedulerPerCore) {
  RuntimeOptions options;
  options.backend = backend();
  auto rt = Runtime::Create(options);
  ASSERT_TRUE(rt.ok());
  EXPECT_EQ((*rt)->size(), static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
}

TEST_P(RuntimeTest, BadArgumentsAreErrors) {
  RuntimeOptions options;
  options.schedulers = -1;
  EXPECT_EQ(Runtime::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  auto rt = Make();
  absl::Status s = rt->Post([] {}, 7);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find("scheduler index 7"), std::string::npos);
  rt->Shutdown();
  EXPECT_EQ(rt->Spawn(Fails()).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THROW(rt->BlockOn(AddAfterYield(1, 2)), RuntimeShutDown);
}

Task<std::thread::id> ThreadOf() {
  co_await Yield();
  co_return std::this_thread::get_id();
}

// Work that cannot move (started tasks) keeps one scheduler busy while the other is idle: the
// idle one asks for work less and less often, and the busy one stops waking it after a donation
// found nothing. It was woken at once every time (a spin and an ask, close to a whole core).
TEST_P(RuntimeTest, AnIdleSchedulerDoesNotSpinBesideWorkThatCannotMove) {
  auto rt = Make(2);
  constexpr int kTasks = 4;
  constexpr int kYields = 1'500'000;
  std::atomic<int> left{kTasks};
  std::atomic<int64_t> busy_start_ns{0};
  std::promise<int64_t> busy_end_ns;
  std::future<int64_t> busy_end = busy_end_ns.get_future();
  auto thread_cpu_ns = [] {
    timespec ts;
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
  };
  auto process_cpu_ns = [] {
    timespec ts;
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
  };
  const int64_t process_start = process_cpu_ns();
  for (int i = 0; i < kTasks; ++i) {
    ASSERT_TRUE(rt->Spawn(
                      [](std::atomic<int>* left, std::atomic<int64_t>* start,
                         std::promise<int64_t>* end, auto cpu) -> Task<void> {
                        int64_t zero = 0;
                        start->compare_exchange_strong(zero, cpu());
                        for (int y = 0; y < kYields; ++y) co_await Yield();
                        if (left->fetch_sub(1) == 1) end->set_value(cpu());
                      }(&left, &busy_start_ns, &busy_end_ns, thread_cpu_ns),
                      0)
                    .ok());
  }
  ASSERT_EQ(busy_end.wait_for(std::chrono::seconds(120)), std::future_status::ready);
  const int64_t busy = busy_end.get() - busy_start_ns.load();
  const int64_t all = process_cpu_ns() - process_start;
  const int64_t idle = all - busy;  // The other scheduler (and this thread, which waited).
  EXPECT_LT(idle, busy / 4 + 20'000'000)
      << "the idle scheduler used " << idle / 1'000'000 << " ms of CPU beside " << busy / 1'000'000
      << " ms of busy work";
  EXPECT_EQ(rt->scheduler(1).stolen(), 0u) << "started tasks moved";
}

TEST_P(RuntimeTest, SpawnOnChosenScheduler) {
  auto rt = Make();
  std::thread::id on0 = rt->BlockOn(ThreadOf(), 0);
  std::thread::id on1 = rt->BlockOn(ThreadOf(), 1);
  EXPECT_NE(on0, on1);
  EXPECT_EQ(rt->BlockOn(ThreadOf(), 0), on0);
  EXPECT_NE(on0, std::this_thread::get_id());
}

TEST_P(RuntimeTest, PostsFromManyThreadsAllRun) {
  auto rt = Make();
  std::atomic<int> ran{0};
  constexpr int kThreads = 4;
  constexpr int kPosts = 5000;
  std::vector<std::thread> posters;
  for (int t = 0; t < kThreads; ++t) {
    posters.emplace_back([&] {
      for (int i = 0; i < kPosts; ++i) ASSERT_TRUE(rt->Post([&] { ran.fetch_add(1); }).ok());
    });
  }
  for (auto& t : posters) t.join();
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (ran.load() < kThreads * kPosts && absl::Now() < deadline) std::this_thread::yield();
  EXPECT_EQ(ran.load(), kThreads * kPosts);
}

// Two coroutines on different schedulers hand a token back and forth.
struct PingPong {
  WaitSlot to_ping;
  WaitSlot to_pong;
  int rounds = 0;
};

Task<void> Pong(PingPong* pp, int n) {
  for (int i = 0; i < n; ++i) {
    co_await pp->to_pong.Wait();
    pp->to_ping.Notify();
  }
}
Task<int> Ping(PingPong* pp, int n) {
  for (int i = 0; i < n; ++i) {
    pp->to_pong.Notify();
    co_await pp->to_ping.Wait();
    ++pp->rounds;
  }
  co_return pp->rounds;
}

TEST_P(RuntimeTest, CrossSchedulerPingPong) {
  auto rt = Make();
  PingPong pp;
  constexpr int kRounds = 20000;
  ASSERT_TRUE(rt->Spawn(Pong(&pp, kRounds), 1).ok());
  EXPECT_EQ(rt->BlockOn(Ping(&pp, kRounds), 0), kRounds);
}

struct Fired {
  int64_t deadline_ns;
  int64_t fired_ns;
};

Task<void> SleepAndRecord(absl::Duration d, std::vector<Fired>* out) {
  Scheduler* s = Scheduler::Current();
  int64_t deadline = s->NowNanos() + absl::ToInt64Nanoseconds(d);
  co_await SleepUntilNanos(deadline);
  out->push_back({deadline, s->NowNanos()});
}

Task<void> ManyTimers(int n, std::vector<Fired>* out) {
  absl::BitGen gen;
  std::vector<Task<void>> sleepers;
  for (int i = 0; i < n; ++i) {
    Scheduler::Current()->Spawn(
        SleepAndRecord(absl::Microseconds(absl::Uniform(gen, 0, 10'000)), out));
  }
  while (static_cast<int>(out->size()) < n) co_await Sleep(absl::Milliseconds(1));
}

TEST_P(RuntimeTest, ManyTimersFireInDeadlineOrderAndNotEarly) {
  auto rt = Make();
  std::vector<Fired> fired;
  constexpr int kTimers = 20000;
  rt->BlockOn(ManyTimers(kTimers, &fired), 0);
  ASSERT_EQ(fired.size(), static_cast<size_t>(kTimers));
  for (size_t i = 0; i < fired.size(); ++i) {
    EXPECT_GE(fired[i].fired_ns, fired[i].deadline_ns) << "timer " << i << " fired early";
    if (i > 0) {
      ASSERT_LE(fired[i - 1].deadline_ns, fired[i].deadline_ns) << "out of order at " << i;
    }
  }
}

struct Counted {
  std::atomic<int>* destroyed;
  ~Counted() { destroyed->fetch_add(1); }
};

Task<void> SuspendedForever(std::atomic<int>* destroyed, std::atomic<int>* started) {
  Counted c{destroyed};
  started->fetch_add(1);
  co_await Sleep(absl::Hours(1));
}

Task<void> WaitsForever(std::atomic<int>* destroyed, std::atomic<int>* started, WaitSlot* slot) {
  Counted c{destroyed};
  started->fetch_add(1);
  co_await slot->Wait();
}

TEST_P(RuntimeTest, ShutdownDestroysSuspendedFramesAndCancelsTimers) {
  std::atomic<int> destroyed{0};
  std::atomic<int> started{0};
  WaitSlot slot;
  auto rt = Make();
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(rt->Spawn(SuspendedForever(&destroyed, &started), i % 2).ok());
  }
  ASSERT_TRUE(rt->Spawn(WaitsForever(&destroyed, &started, &slot), 1).ok());
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (started.load() < 101 && absl::Now() < deadline) std::this_thread::yield();
  ASSERT_EQ(started.load(), 101);
  EXPECT_EQ(destroyed.load(), 0);
  rt->Shutdown();
  EXPECT_EQ(destroyed.load(), 101);
  EXPECT_EQ(rt->scheduler(0).pending_timers(), 0u);
  rt.reset();
  EXPECT_EQ(destroyed.load(), 101);
}

Task<int> NeverFinishes(WaitSlot* slot) {
  co_await slot->Wait();
  co_return 1;
}

TEST_P(RuntimeTest, BlockOnThrowsWhenShutdownDestroysItsTask) {
  auto rt = Make();
  WaitSlot slot;
  std::thread stopper([&] {
    while (rt->scheduler(0).live_roots() == 0) std::this_thread::yield();
    rt->Shutdown();
  });
  EXPECT_THROW(rt->BlockOn(NeverFinishes(&slot), 0), RuntimeShutDown);
  stopper.join();
}

// A BlockOn (any Spawn) racing a Shutdown on another thread, landing after the check that the
// runtime runs and before its task became a root: the task was added to a scheduler whose roots
// had been destroyed, never ran nor was destroyed, and BlockOn waited for ever. It throws now.
Runtime* g_shut_down_in_hook = nullptr;
void ShutDownOnce() {
  if (Runtime* rt = std::exchange(g_shut_down_in_hook, nullptr)) rt->Shutdown();
}

TEST_P(RuntimeTest, ABlockOnRacingShutdownThrowsInsteadOfWaitingForEver) {
  auto rt = Make();
  g_shut_down_in_hook = rt.get();
  executor_internal::g_before_root_hook.store(&ShutDownOnce);
  std::promise<bool> threw;
  std::future<bool> answer = threw.get_future();
  std::thread caller([&] {
    try {
      rt->BlockOn(AddAfterYield(1, 2), 0);
      threw.set_value(false);
    } catch (const RuntimeShutDown&) {
      threw.set_value(true);
    }
  });
  const bool answered = answer.wait_for(std::chrono::seconds(30)) == std::future_status::ready;
  executor_internal::g_before_root_hook.store(nullptr);
  if (!answered) {
    caller.detach();  // Stuck for ever: the failure below ends the test.
    FAIL() << "BlockOn raced with Shutdown and never returned";
  }
  caller.join();
  EXPECT_TRUE(answer.get()) << "BlockOn after a shutdown throws RuntimeShutDown";
}

TEST_P(RuntimeTest, IdleRuntimeParksEveryScheduler) {
  auto rt = Make();
  EXPECT_EQ(rt->BlockOn(AddAfterYield(1, 1)), 2);
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  auto all_parked = [&] {
    for (int i = 0; i < rt->size(); ++i) {
      if (!rt->scheduler(i).parked()) return false;
    }
    return true;
  };
  while (!all_parked() && absl::Now() < deadline) std::this_thread::yield();
  EXPECT_TRUE(all_parked()) << "a scheduler keeps spinning while idle";
  // Parked schedulers still wake for new work.
  EXPECT_EQ(rt->BlockOn(AddAfterYield(2, 2), 1), 4);
}

// A pending timer far ahead is no work: the idle scheduler that holds it parks until the timer
// is due (the wait's deadline), instead of spinning the whole time. (Where the idle spin is off,
// on one CPU, the scheduler parks at once and this holds trivially.)
TEST_P(RuntimeTest, AFarTimerDoesNotKeepItsSchedulerSpinning) {
  for (absl::Duration far :
       {absl::Hours(1), absl::Hours(24 * 365 * 1000), absl::InfiniteDuration()}) {
    SCOPED_TRACE(absl::StrCat("a timer ", absl::FormatDuration(far), " away"));
    FarTimerParks(far);
  }
}

void RuntimeTest::FarTimerParks(absl::Duration far) {
  auto rt = Make();
  std::atomic<bool> armed{false};
  ASSERT_TRUE(rt->Spawn(
                    [](std::atomic<bool>* armed, absl::Duration far) -> Task<void> {
                      armed->store(true);
                      co_await Sleep(far);
                    }(&armed, far),
                    0)
                  .ok());
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!armed.load() && absl::Now() < deadline) std::this_thread::yield();
  ASSERT_TRUE(armed.load()) << "the sleeper ran";
  // The spin lasts 50 us by default; parking well within 10 s is the event waited for.
  while (!rt->scheduler(0).parked() && absl::Now() < deadline) std::this_thread::yield();
  EXPECT_TRUE(rt->scheduler(0).parked())
      << "a scheduler whose only work is a far timer spins instead of parking";
  // It still wakes for new work.
  EXPECT_EQ(rt->BlockOn(AddAfterYield(3, 4), 0), 7);
}

ETSMGR_INSTANTIATE_ON_ALL_BACKENDS(RuntimeTest);

}  // namespace
}  // namespace etsmgr
