#include "etsmgr/executor/scheduler.h"

#include <poll.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "etsmgr/executor/testing/test_backends.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

class SchedulerTest : public BackendTest {
 protected:
  std::unique_ptr<Scheduler> Make(bool shuffle = false) {
    SchedulerOptions options;
    options.backend = backend();
    options.shuffle = shuffle;
    absl::StatusOr<std::unique_ptr<Scheduler>> s = Scheduler::Create(options);
    EXPECT_TRUE(s.ok()) << s.status();
    return std::move(*s);
  }

  // Drives an embedded scheduler like a foreign event loop would, until `done` or a deadline.
  static bool DriveEmbedded(Scheduler& s, const std::function<bool()>& done,
                            absl::Duration limit = absl::Seconds(10)) {
    absl::Time deadline = absl::Now() + limit;
    while (!done()) {
      if (absl::Now() > deadline) return false;
      absl::Duration wait = std::min(s.TimeUntilNextTimer(), deadline - absl::Now());
      pollfd pfd{s.wake_fd(), POLLIN, 0};
      ::poll(&pfd, 1, static_cast<int>(absl::ToInt64Milliseconds(wait)) + 1);
      s.RunReady();
    }
    return true;
  }
};

Task<void> Record(std::vector<std::string>* log, std::string name, int yields) {
  for (int i = 0; i < yields; ++i) {
    log->push_back(name + std::to_string(i));
    co_await Yield();
  }
  log->push_back(name + "!");
}

TEST_P(SchedulerTest, ReportsBackend) {
  auto s = Make();
  EXPECT_EQ(s->backend(),
            backend() == BackendPreference::kIoUring ? Backend::kIoUring : Backend::kEpoll);
}

TEST_P(SchedulerTest, YieldInterleavesFifo) {
  auto s = Make();
  std::vector<std::string> log;
  s->Spawn(Record(&log, "a", 2));
  s->Spawn(Record(&log, "b", 2));
  ASSERT_TRUE(DriveEmbedded(*s, [&] { return log.size() == 6; }));
  EXPECT_EQ(log, (std::vector<std::string>{"a0", "b0", "a1", "b1", "a!", "b!"}));
  EXPECT_EQ(s->live_roots(), 0u);
}

TEST_P(SchedulerTest, RunReadyRunsOnlyWhatWasReady) {
  auto s = Make();
  std::vector<std::string> log;
  s->Spawn(Record(&log, "a", 1000));
  s->RunReady();
  EXPECT_EQ(log.size(), 1u);  // One step; the yield queued the next one for a later round.
  s->RunReady();
  EXPECT_EQ(log.size(), 2u);
}

Task<void> SleepThenSet(absl::Duration d, std::vector<int>* order, int id) {
  co_await Sleep(d);
  order->push_back(id);
}

TEST_P(SchedulerTest, TimersFireInDeadlineOrder) {
  auto s = Make();
  std::vector<int> order;
  s->Spawn(SleepThenSet(absl::Milliseconds(30), &order, 3));
  s->Spawn(SleepThenSet(absl::Milliseconds(10), &order, 1));
  s->Spawn(SleepThenSet(absl::Milliseconds(20), &order, 2));
  s->Spawn(SleepThenSet(absl::ZeroDuration(), &order, 0));
  absl::Time start = absl::Now();
  ASSERT_TRUE(DriveEmbedded(*s, [&] { return order.size() == 4; }));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(30));
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(s->pending_timers(), 0u);
}

Task<void> SleepUntilThenSet(absl::Time t, bool* done) {
  co_await SleepUntil(t);
  *done = absl::Now() >= t;
}

TEST_P(SchedulerTest, SleepUntilWallClock) {
  auto s = Make();
  bool done = false;
  s->Spawn(SleepUntilThenSet(absl::Now() + absl::Milliseconds(15), &done));
  ASSERT_TRUE(DriveEmbedded(*s, [&] { return done; }));
}

class PostedFlag final : public Runnable {
 public:
  void Run() noexcept override { ran.store(true); }
  void Discard() noexcept override { discarded = true; }
  std::atomic<bool> ran{false};
  bool discarded = false;
};

TEST_P(SchedulerTest, PostFromAnotherThreadWakesEmbeddedLoop) {
  auto s = Make();
  PostedFlag flag;
  std::thread poster([&] { s->Post(&flag); });
  ASSERT_TRUE(DriveEmbedded(*s, [&] { return flag.ran.load(); }));
  poster.join();
}

// Run() runs posted work by itself (no RunReady() behind it), and Stop() from another thread
// makes it return.
TEST_P(SchedulerTest, RunRunsPostedWorkUntilStopFromAnotherThread) {
  PostedFlag flag;  // Outlives the scheduler, which discards it if it never ran.
  auto s = Make();
  std::thread driver([&] { s->Run(); });
  s->Post(&flag);
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!flag.ran.load() && absl::Now() < deadline) std::this_thread::yield();
  EXPECT_TRUE(flag.ran.load()) << "Run() did not run the posted work within 10 s";
  s->Stop();
  driver.join();
}

struct Counted {
  int* destroyed;
  explicit Counted(int* d) : destroyed(d) {}
  Counted(Counted&& o) noexcept : destroyed(std::exchange(o.destroyed, nullptr)) {}
  ~Counted() {
    if (destroyed != nullptr) ++*destroyed;
  }
};

Task<void> SleepForever(Counted c) {
  Counted local(c.destroyed);
  co_await Sleep(absl::Hours(24));
}

Task<void> WaitForever(Counted c) {
  co_await Yield();
  co_await SleepForever(std::move(c));
}

TEST_P(SchedulerTest, DestructionDestroysSuspendedFramesOnceAndCancelsTimers) {
  int destroyed = 0;
  PostedFlag queued;
  {
    auto s = Make();
    for (int i = 0; i < 10; ++i) s->Spawn(WaitForever(Counted(&destroyed)));
    s->RunReady();
    s->RunReady();
    EXPECT_EQ(s->pending_timers(), 10u);
    EXPECT_EQ(destroyed, 0);
    s->Spawn(SleepForever(Counted(&destroyed)));  // Never started: only queued.
    s->Post(&queued);
  }
  // 10 started frames hold two Counted each (parameter + local); the unstarted one holds one.
  EXPECT_EQ(destroyed, 21);
  EXPECT_TRUE(queued.discarded);
  EXPECT_FALSE(queued.ran.load());
}

Task<void> Throwing() {
  co_await Yield();
  throw std::runtime_error("spawned failure");
}

TEST_P(SchedulerTest, ExceptionInSpawnedTaskIsContained) {
  auto s = Make();
  s->Spawn(Throwing());
  ASSERT_TRUE(DriveEmbedded(*s, [&] { return s->live_roots() == 0; }));
}

TEST_P(SchedulerTest, ShuffleRunsEverythingInSomeOrder) {
  auto s = Make(/*shuffle=*/true);
  std::vector<std::string> log;
  for (int i = 0; i < 20; ++i) s->Spawn(Record(&log, "t" + std::to_string(i) + ".", 3));
  ASSERT_TRUE(DriveEmbedded(*s, [&] { return s->live_roots() == 0; }));
  ASSERT_EQ(log.size(), 20u * 4);
  // Each task's own steps stay in order...
  for (int i = 0; i < 20; ++i) {
    std::string t = "t" + std::to_string(i) + ".";
    std::vector<std::string> steps;
    for (const std::string& entry : log) {
      if (entry.rfind(t, 0) == 0) steps.push_back(entry.substr(t.size()));
    }
    EXPECT_EQ(steps, (std::vector<std::string>{"0", "1", "2", "!"})) << t;
  }
  // ...but the tasks are not taken in FIFO order (which a random pick among ~20 ready tasks, 80
  // times over, reproduces with a probability far below 1e-50).
  std::vector<std::string> fifo;
  for (const std::string step : {"0", "1", "2", "!"}) {
    for (int i = 0; i < 20; ++i) fifo.push_back("t" + std::to_string(i) + "." + step);
  }
  EXPECT_NE(log, fifo);
}

Task<void> Hop(Scheduler* to, std::thread::id* seen, bool* done) {
  co_await ResumeOn(*to);
  *seen = std::this_thread::get_id();
  *done = true;
}

TEST_P(SchedulerTest, ResumeOnMovesToAnotherScheduler) {
  auto a = Make();
  auto b = Make();
  std::thread::id seen;
  bool done = false;
  a->Spawn(Hop(b.get(), &seen, &done));
  a->RunReady();
  EXPECT_FALSE(done);
  std::thread other([&] { DriveEmbedded(*b, [&] { return done; }); });
  std::thread::id other_id = other.get_id();
  other.join();
  EXPECT_TRUE(done);
  EXPECT_EQ(seen, other_id);
}

ETSMGR_INSTANTIATE_ON_ALL_BACKENDS(SchedulerTest);

}  // namespace
}  // namespace etsmgr
