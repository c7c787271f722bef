// Concurrent writers and lock-free readers on one segment: threads on two mappings of it in one
// process (what TSan can watch), and writer processes (fork). Counters end exact; readers never
// see a torn multi-word value; Check() holds afterwards.
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "etsmgr/table/shared/shared_map.h"
#include "etsmgr/table/shared/test_names.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

struct Wide {
  int64_t w[4];
};

class ConcurrencyTest : public ::testing::Test {
 protected:
  ConcurrencyTest() : name_(shared_testing::UniqueSegmentName("etsmgr-conc")) {
    options_.shards = 4;
    options_.max_bytes = uint64_t{1} << 30;
  }
  ~ConcurrencyTest() override { (void)SharedMap<int64_t, int64_t>::Remove(name_, options_); }
  std::string name_;
  SharedMapOptions options_;
};

TEST_F(ConcurrencyTest, ThreadsOnTwoMappings) {
  using Map = SharedMap<int64_t, int64_t>;
  Map a = Map::Open(name_, options_).value();
  Map b = Map::Open(name_, options_).value();
  constexpr int kThreads = 4;
  constexpr int64_t kOps = 20'000;
  constexpr int64_t kCounters = 8;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Map& m = t % 2 ? a : b;
      for (int64_t i = 0; i < kOps; ++i) {
        ASSERT_TRUE(m.UpdateCounter(-1 - i % kCounters, 1, {.default_value = 0}).ok());
        const int64_t own = t * kOps + i;  // grows every shard through several resizes
        ASSERT_TRUE(m.Insert(own, own).ok());
        if (i % 3 == 0) {
          ASSERT_TRUE(m.Erase(t * kOps + i / 2).ok());
        }
        absl::StatusOr<std::optional<int64_t>> got = m.Get(own);
        ASSERT_TRUE(got.ok() && (*got == own || i == 0));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  int64_t total = 0;
  for (int64_t c = 1; c <= kCounters; ++c) total += a.Get(-c).value().value_or(0);
  EXPECT_EQ(total, kThreads * kOps);
  EXPECT_TRUE(b.Check().ok()) << b.Check();
}

// An infinite lock_timeout waits as long as the holder holds (its deadline once overflowed and
// every contended write failed at once with DeadlineExceeded).
TEST_F(ConcurrencyTest, AnInfiniteLockTimeoutWaitsForTheHolder) {
  using Map = SharedMap<int64_t, int64_t>;
  options_.lock_timeout = absl::InfiniteDuration();
  Map a = Map::Open(name_, options_).value();
  Map b = Map::Open(name_, options_).value();
  std::atomic<bool> done{false};
  absl::Status waited;
  std::thread writer;
  absl::Status held = a.Mutate(7, [&](const int64_t*, int64_t* next) {
    writer = std::thread([&] {
      waited = b.Insert(7, 2);
      done.store(true);
    });
    // b's write must still be waiting after a good while (a bounded wait on the event).
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
    while (!done.load() && std::chrono::steady_clock::now() < until) std::this_thread::yield();
    EXPECT_FALSE(done.load()) << waited;
    *next = 1;
    return SharedMapAction::kPut;
  });
  writer.join();
  ASSERT_TRUE(held.ok()) << held;
  EXPECT_TRUE(waited.ok()) << waited;
  EXPECT_EQ(a.Get(7).value(), std::optional<int64_t>(2));
}

// A reader of 4-word values under a writer that rewrites them (and rebuilds the region now and
// then) never sees a mix of two values. The writer goes on until the reader has read a slot while
// it was being written (the sequence changed under the read, which was tried again: read_retries)
// at least 2,000 times, so the race the check is about did happen (60 s at most).
TEST_F(ConcurrencyTest, ReadersNeverSeeTornValues) {
  using Map = SharedMap<int64_t, Wide>;
  using shared_internal::MapCore;
  const std::string name = absl::StrCat(name_, "-wide");
  Map w = Map::Open(name, options_).value();
  Map r = Map::Open(name, options_).value();
  for (int64_t k = 0; k < 64; ++k) ASSERT_TRUE(w.Insert(k, Wide{{0, 0, 0, 0}}).ok());
  std::atomic<bool> stop{false};
  std::atomic<int64_t> torn{0};
  std::atomic<int64_t> reads{0};
  const uint64_t retries_before = MapCore::read_retries.value.load();
  auto met = [&] { return MapCore::read_retries.value.load() - retries_before; };
  std::thread reader([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      for (int64_t k = 0; k < 64; ++k) {
        absl::StatusOr<std::optional<Wide>> v = r.Get(k);
        if (!v.ok() || !v->has_value()) {
          torn.fetch_add(1);
          continue;
        }
        const Wide& x = **v;
        if (x.w[0] != x.w[1] || x.w[1] != x.w[2] || x.w[2] != x.w[3]) torn.fetch_add(1);
        reads.fetch_add(1, std::memory_order_relaxed);
      }
    }
  });
  constexpr uint64_t kMeetings = 2000;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int64_t i = 1;
  for (; i <= 50'000 || (met() < kMeetings && std::chrono::steady_clock::now() < deadline); ++i) {
    const int64_t k = i % 64;
    ASSERT_TRUE(w.Insert(k, Wide{{i, i, i, i}}).ok());
    if (i % 5000 == 0) {  // a rebuild under the reader's feet: insert and erase many keys
      for (int64_t j = 100; j < 400; ++j) ASSERT_TRUE(w.Insert(j, Wide{{j, j, j, j}}).ok());
      for (int64_t j = 100; j < 400; ++j) ASSERT_TRUE(w.Erase(j).ok());
    }
  }
  stop = true;
  reader.join();
  std::printf("%lld writes, %lld reads, %llu met a write\n", static_cast<long long>(i),
              static_cast<long long>(reads.load()), static_cast<unsigned long long>(met()));
  EXPECT_EQ(torn.load(), 0);
  EXPECT_GE(met(), kMeetings) << "the reader met the writer only " << met() << " times in " << i
                              << " writes and " << reads.load() << " reads";
  EXPECT_TRUE(w.Check().ok()) << w.Check();
  (void)Map::Remove(name, options_);
}

// Two writer processes incrementing the same counters: the sum is exact.
TEST_F(ConcurrencyTest, WriterProcesses) {
  using Map = SharedMap<int64_t, int64_t>;
  { ASSERT_TRUE(Map::Open(name_, options_).ok()); }
  constexpr int kProcs = 2;
  constexpr int64_t kOps = 50'000;
  std::vector<pid_t> pids;
  for (int p = 0; p < kProcs; ++p) {
    pid_t pid = fork();
    if (pid == 0) {
      absl::StatusOr<Map> m = Map::Open(name_, options_);
      if (!m.ok()) _exit(2);
      for (int64_t i = 0; i < kOps; ++i) {
        if (!m->UpdateCounter(i % 100, 1, {.default_value = 0}).ok()) _exit(3);
        if (!m->Insert(1000 + p * kOps + i, i).ok()) _exit(4);
      }
      _exit(0);
    }
    pids.push_back(pid);
  }
  for (pid_t pid : pids) {
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  Map m = Map::Open(name_, options_).value();
  int64_t total = 0;
  for (int64_t k = 0; k < 100; ++k) total += m.Get(k).value().value_or(0);
  EXPECT_EQ(total, kProcs * kOps);
  EXPECT_EQ(m.Size().value(), static_cast<size_t>(100 + kProcs * kOps));
  EXPECT_TRUE(m.Check().ok()) << m.Check();
}

}  // namespace
}  // namespace etsmgr
