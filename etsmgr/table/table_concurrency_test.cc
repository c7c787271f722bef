// Tables under concurrency: counters from many threads and processes, readers during writes,
// ownership passed around while others read, and deletion racing with every kind of use.
// Run under tsan and asan by the suite (no sleeps: every wait is on an event with a deadline).
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "etsmgr/base/read_bias.h"
#include "etsmgr/process/testing/test_util.h"
#include "etsmgr/table/table.h"
#include "etsmgr/table/testing/test_owner.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

using IntTable = Table<int64_t, int64_t>;

class TableConcurrencyTest : public ::testing::TestWithParam<TableType> {
 protected:
  TableOptions Options(Access access) {
    TableOptions options;
    options.type = GetParam();
    options.access = access;
    return options;
  }
  bool IsBag() const {
    return GetParam() == TableType::kBag || GetParam() == TableType::kDuplicateBag;
  }
};

TEST_P(TableConcurrencyTest, CountersFromThreadsAndProcessesAreExact) {
  if (IsBag()) GTEST_SKIP() << "update_counter needs a set or ordered_set";
  auto node = Node::Create({.schedulers = 2}).value();
  OwnedTable owned = SpawnOwner(*node, Options(Access::kPublic));
  IntTable t = IntTable::Attach(owned.table).value();
  ASSERT_TRUE(t.Insert(0, 0).ok());
  constexpr int kPerWorker = 20000;
  constexpr int kThreads = 3;
  constexpr int kProcesses = 4;
  // Every worker starts once all are ready (20,000 updates take a millisecond or so: started one
  // by one, a thread could be done before the next began).
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      ready.fetch_add(1);
      while (ready.load() < kThreads + kProcesses) std::this_thread::yield();
      for (int n = 0; n < kPerWorker; ++n) ASSERT_TRUE(t.UpdateCounter(0, 1).ok());
    });
  }
  std::vector<std::thread> procs;
  for (int i = 0; i < kProcesses; ++i) {
    procs.emplace_back([&] {
      RunInProcess(*node, [&](Process& self) -> Task<void> {
        ready.fetch_add(1);
        while (ready.load() < kThreads + kProcesses) co_await self.Sleep(absl::ZeroDuration());
        for (int n = 0; n < kPerWorker; ++n) {
          EXPECT_TRUE(t.UpdateCounter(0, 1).ok());
          if (n % 1000 == 0) co_await self.Sleep(absl::ZeroDuration());  // Interleave.
        }
      });
    });
  }
  for (auto& th : threads) th.join();
  for (auto& p : procs) p.join();
  EXPECT_EQ(t.Get(0).value(), int64_t{kPerWorker} * (kThreads + kProcesses));
  Send(owned.owner, StopOwner{});
}

// Readers check whole objects while writers churn. The writers keep churning until the readers
// have made passes that began after both writers' first round (whose keys 2 and 3 mod 4 are then
// present for good), so those passes overlap the churn and must find objects.
TEST_P(TableConcurrencyTest, ReadersSeeWholeObjectsWhileWritersChurn) {
  auto node = Node::Create({.schedulers = 2}).value();
  OwnedTable owned = SpawnOwner(*node, Options(Access::kPublic));
  IntTable t = IntTable::Attach(owned.table).value();
  std::atomic<bool> stop{false};
  std::atomic<int> first_rounds_done{0};
  std::atomic<int> passes_during_churn{0};
  constexpr int kPassesDuringChurn = 4;
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  // Invariant: every value stored under k is k * 3 (writers only ever write that).
  std::vector<std::thread> workers;
  for (int w = 0; w < 2; ++w) {
    workers.emplace_back([&, w] {
      for (int round = 0; round < 30 || (passes_during_churn.load() < kPassesDuringChurn &&
                                         absl::Now() < deadline);
           ++round) {
        for (int64_t k = w; k < 2000; k += 2) ASSERT_TRUE(t.Insert(k, k * 3).ok());
        for (int64_t k = w; k < 2000; k += 4) ASSERT_TRUE(t.Erase(k).ok());
        std::vector<std::pair<int64_t, int64_t>> batch = {{10000 + w, (10000 + w) * 3},
                                                          {20000 + w, (20000 + w) * 3}};
        ASSERT_TRUE(t.Insert(batch).ok());
        if (round == 0) first_rounds_done.fetch_add(1);
      }
    });
  }
  std::vector<std::thread> readers;
  std::atomic<int64_t> seen{0};
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&] {
      while (!stop.load(std::memory_order_acquire)) {
        bool during_churn = first_rounds_done.load() == 2;
        int64_t found = 0;
        for (int64_t k = 0; k < 2000; k += 7) {
          std::vector<int64_t> values = t.Lookup(k).value();
          for (int64_t v : values) ASSERT_EQ(v, k * 3);
          found += static_cast<int64_t>(values.size());
        }
        std::vector<std::pair<int64_t, int64_t>> all = t.ToList().value();
        for (const auto& [k, v] : all) ASSERT_EQ(v, k * 3);
        ASSERT_TRUE(t.Size().ok());
        if (during_churn) {
          // Keys 2 and 3 mod 4 below 2000 stay present once written: 143 of them on this stride.
          ASSERT_GE(found, 143);
          ASSERT_GE(all.size(), 1000u);
          seen.fetch_add(found);
          passes_during_churn.fetch_add(1);
        }
      }
    });
  }
  for (auto& w : workers) w.join();
  stop.store(true, std::memory_order_release);
  for (auto& r : readers) r.join();
  EXPECT_GE(passes_during_churn.load(), kPassesDuringChurn) << "readers never overlapped the churn";
  EXPECT_GE(seen.load(), 143 * kPassesDuringChurn);
  EXPECT_TRUE(t.Member(3).value());   // Inserted by writer 1, never erased.
  EXPECT_FALSE(t.Member(1).value());  // Erased by writer 1 in every round.
  Send(owned.owner, StopOwner{});
}

struct Partner {
  Pid pid;
};

// Get reads without a lock while the table's read bias is on (etsmgr/base/read_bias.h). Two
// writers on different shards change the table while two threads read it: one clears the table
// each round (freeing the shards' arrays) and refills it, growing them again, with counters
// (key << 32 | round) and churn keys (k * 3); the other churns its own keys. A reader checks that
// every value it gets was once written and is not older than the last round published before
// its Get began (linearizable), and that no version goes back. The writers keep on until they
// have revoked the bias many times, so biased reads and writes really alternate; tsan checks that
// they never overlap, asan that no read touches a freed array.
TEST_P(TableConcurrencyTest, BiasedReadsSeeOnlyWrittenValuesThroughRehashes) {
  if (IsBag()) GTEST_SKIP() << "the biased read is Get's, on a set or ordered_set";
  auto node = Node::Create({.schedulers = 1}).value();
  OwnedTable owned = SpawnOwner(*node, Options(Access::kPublic));
  IntTable t = IntTable::Attach(owned.table).value();
  constexpr int64_t kCounters = 64;
  const uint64_t revocations = ReadBias::Revocations();
  constexpr uint64_t kRevocations = 20;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  std::atomic<int64_t> published{0};  // the last round whose counters are all written
  std::atomic<bool> stop{false};
  std::atomic<int64_t> bad{0}, present{0};
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      std::vector<int64_t> last(kCounters, 0);
      for (uint64_t i = r; !stop.load(std::memory_order_relaxed); ++i) {
        const int64_t k = static_cast<int64_t>(i % kCounters);
        const int64_t floor = published.load(std::memory_order_acquire);
        std::optional<int64_t> v = t.Get(k).value();
        if (v.has_value()) {
          const int64_t version = *v & 0xffffffff;
          if ((*v >> 32) != k || version < floor || version < last[k]) bad.fetch_add(1);
          last[k] = version;
          present.fetch_add(1, std::memory_order_relaxed);
        }
        const int64_t churn = 1000 + static_cast<int64_t>(i % 2500);
        std::optional<int64_t> c = t.Get(churn).value();
        if (c.has_value() && *c != churn * 3) bad.fetch_add(1);
      }
    });
  }
  threads.emplace_back([&] {  // The second writer: keys 3000-3499, in and out.
    while (!stop.load(std::memory_order_relaxed)) {
      for (int64_t k = 3000; k < 3500; ++k) EXPECT_TRUE(t.Insert(k, k * 3).ok());
      for (int64_t k = 3000; k < 3500; ++k) EXPECT_TRUE(t.Erase(k).ok());
    }
  });
  int64_t round = 0;
  bool ok = true;
  while (ok && (ReadBias::Revocations() < revocations + kRevocations || present.load() == 0) &&
         absl::Now() < deadline) {
    ++round;
    ok = t.Clear().ok();
    for (int64_t k = 0; ok && k < kCounters; ++k) ok = t.Insert(k, k << 32 | round).ok();
    for (int64_t k = 1000; ok && k < 2000; ++k) ok = t.Insert(k, k * 3).ok();
    published.store(round, std::memory_order_release);
    std::this_thread::yield();  // A moment without this writer, for a reader to turn the bias on.
  }
  stop.store(true);
  for (auto& th : threads) th.join();
  EXPECT_TRUE(ok) << "a write failed in round " << round;
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(present.load(), 0) << "no read found a counter";
  EXPECT_GE(ReadBias::Revocations(), revocations + kRevocations)
      << "the writers met the read bias on too rarely to test it (" << round << " rounds)";
  Send(owned.owner, StopOwner{});
}

// A value whose copy throws when armed: Get copies the value out while reading.
struct ThrowsOnCopy {
  static inline std::atomic<bool> armed{false};
  ThrowsOnCopy() = default;
  explicit ThrowsOnCopy(int64_t v) : n(v) {}
  ThrowsOnCopy(const ThrowsOnCopy& other) : n(other.n) {
    if (armed.load()) throw std::runtime_error("copy refused");
  }
  ThrowsOnCopy(ThrowsOnCopy&&) noexcept = default;
  ThrowsOnCopy& operator=(const ThrowsOnCopy&) = default;
  ThrowsOnCopy& operator=(ThrowsOnCopy&&) noexcept = default;
  int64_t n = 0;
};

// A public table of `type` owned by a process that waits for StopOwner.
template <typename T>
std::pair<T, Pid> PublicTable(Node& node, TableType type) {
  TableOptions options;
  options.access = Access::kPublic;
  options.type = type;
  OwnedTable owned = SpawnOwnerOf<T>(node, options, [](T&) {});
  return {T::Attach(owned.table).value(), owned.owner};
}

// Runs `write` on a thread and waits for it at most 30 s. False when it did not finish: the thread
// is left behind, stuck, rather than hang the test.
bool FinishesWithin30s(const std::function<void()>& write) {
  auto finished = std::make_shared<std::atomic<bool>>(false);
  std::thread writer([write, finished] {
    write();
    finished->store(true);
  });
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (!finished->load() && absl::Now() < deadline) std::this_thread::yield();
  if (!finished->load()) {
    writer.detach();
    return false;
  }
  writer.join();
  return true;
}

// A Get that throws out of a biased read ends it: the next write does not wait for it forever.
TEST(TableReadBias, AGetThatThrowsLeavesNoReaderBehind) {
  using Table = etsmgr::Table<int64_t, ThrowsOnCopy>;
  auto node = Node::Create({.schedulers = 1}).value();
  auto [t, owner] = PublicTable<Table>(*node, TableType::kSet);
  Table& table = t;  // (clang 14 cannot capture a structured binding.)
  ASSERT_TRUE(t.Insert(1, ThrowsOnCopy(7)).ok());
  for (int i = 0; i < 2000; ++i) ASSERT_EQ(t.Get(1).value()->n, 7);  // Reads turn the bias on.
  const uint64_t revocations = ReadBias::Revocations();
  ThrowsOnCopy::armed.store(true);
  EXPECT_THROW((void)t.Get(1), std::runtime_error);
  ThrowsOnCopy::armed.store(false);
  if (!FinishesWithin30s([&table] { EXPECT_TRUE(table.Insert(1, ThrowsOnCopy(8)).ok()); })) {
    FAIL() << "a write waited 30 s for a Get that had thrown";
  }
  // The write found the bias on (the thrown read was a biased one) and revoked it.
  EXPECT_EQ(ReadBias::Revocations(), revocations + 1);
  EXPECT_EQ(t.Get(1).value()->n, 8);
  Send(owner, StopOwner{});
}

// A key whose comparison throws when armed: UpdateCounter compares the key under the shard lock.
struct ThrowsOnCompare {
  static inline std::atomic<bool> armed{false};
  int64_t n = 0;
  friend bool operator==(const ThrowsOnCompare& a, const ThrowsOnCompare& b) {
    if (armed.load()) throw std::runtime_error("comparison refused");
    return a.n == b.n;
  }
  friend auto operator<=>(const ThrowsOnCompare& a, const ThrowsOnCompare& b) {
    return a.n <=> b.n;
  }
  template <typename H>
  friend H AbslHashValue(H h, const ThrowsOnCompare& k) {
    return H::combine(std::move(h), k.n);
  }
};

// An UpdateCounter that throws out of its shard's lock releases it: the next write of the key
// does not wait for it forever (the inlined fast path, where the lock is taken by hand).
TEST(TableLocks, AnUpdateCounterThatThrowsLeavesItsShardUnlocked) {
  using Table = etsmgr::Table<ThrowsOnCompare, int64_t>;
  auto node = Node::Create({.schedulers = 1}).value();
  auto [t, owner] = PublicTable<Table>(*node, TableType::kSet);
  Table& table = t;  // (clang 14 cannot capture a structured binding.)
  ASSERT_TRUE(t.Insert(ThrowsOnCompare{1}, 0).ok());
  ASSERT_EQ(t.UpdateCounter(ThrowsOnCompare{1}, 1).value(), 1);
  ThrowsOnCompare::armed.store(true);
  EXPECT_THROW((void)t.UpdateCounter(ThrowsOnCompare{1}, 1), std::runtime_error);
  ThrowsOnCompare::armed.store(false);
  if (!FinishesWithin30s([&table] { EXPECT_TRUE(table.Insert(ThrowsOnCompare{1}, 5).ok()); })) {
    FAIL() << "a write waited 30 s for an UpdateCounter that had thrown";
  }
  EXPECT_EQ(t.UpdateCounter(ThrowsOnCompare{1}, 1).value(), 6);
  Send(owner, StopOwner{});
}

// update_element with a default: a function that throws takes the default object it added with
// it, and a default whose copy throws leaves the table as it was (no slot half made).
TEST(TableThrows, AnUpdateThatThrowsLeavesNoDefaultBehind) {
  using Table = etsmgr::Table<int64_t, ThrowsOnCopy>;
  auto node = Node::Create({.schedulers = 1}).value();
  for (TableType type : {TableType::kSet, TableType::kOrderedSet}) {
    auto [t, owner] = PublicTable<Table>(*node, type);
    auto refuse = [](ThrowsOnCopy&) { throw std::runtime_error("update refused"); };
    EXPECT_THROW((void)t.Update(1, refuse, ThrowsOnCopy(5)), std::runtime_error);
    EXPECT_FALSE(t.Member(1).value()) << ToString(type);
    ThrowsOnCopy::armed.store(true);
    EXPECT_THROW((void)t.Update(
                     2, [](ThrowsOnCopy& v) { v.n = 9; }, ThrowsOnCopy(5)),
                 std::runtime_error);
    ThrowsOnCopy::armed.store(false);
    EXPECT_FALSE(t.Member(2).value()) << ToString(type);
    EXPECT_EQ(t.Size().value(), 0u) << ToString(type);
    ASSERT_TRUE(t.Update(
                     2, [](ThrowsOnCopy& v) { v.n = 9; }, ThrowsOnCopy(5))
                    .value());
    EXPECT_EQ(t.Get(2).value()->n, 9) << ToString(type);
    EXPECT_EQ(t.Size().value(), 1u) << ToString(type);
    Send(owner, StopOwner{});
  }
}

// A value whose == throws once `left` more comparisons have passed (-1: never).
struct FlakyEquals {
  static inline std::atomic<int> left{-1};
  int64_t n = 0;
  friend bool operator==(const FlakyEquals& a, const FlakyEquals& b) {
    const int now = left.load();
    if (now == 0) throw std::runtime_error("comparison refused");
    if (now > 0) left.store(now - 1);
    return a.n == b.n;
  }
};

std::vector<int64_t> Numbers(const std::vector<FlakyEquals>& values) {
  std::vector<int64_t> out;
  for (const FlakyEquals& v : values) out.push_back(v.n);
  return out;
}

// erase_object and select_replace on bags compare objects: an == that throws half-way leaves the
// key's objects as they were (before, objects were moved as they were judged: one was lost and
// another doubled, or replacements were stored and their duplicates left in a bag).
TEST(TableThrows, ABagWriteWhoseComparisonThrowsLeavesTheObjectsWhole) {
  using Table = etsmgr::Table<int64_t, FlakyEquals>;
  auto node = Node::Create({.schedulers = 1}).value();
  {
    auto [t, owner] = PublicTable<Table>(*node, TableType::kDuplicateBag);
    for (int64_t n : {1, 2, 3, 2, 4}) ASSERT_TRUE(t.Insert(1, FlakyEquals{n}).ok());
    FlakyEquals::left.store(3);  // The fourth comparison throws, after a match.
    EXPECT_THROW((void)t.EraseObject(1, FlakyEquals{2}), std::runtime_error);
    FlakyEquals::left.store(-1);
    EXPECT_EQ(Numbers(t.Lookup(1).value()), (std::vector<int64_t>{1, 2, 3, 2, 4}));
    EXPECT_EQ(t.Size().value(), 5u);
    EXPECT_EQ(t.EraseObject(1, FlakyEquals{2}).value(), 2u);
    EXPECT_EQ(Numbers(t.Lookup(1).value()), (std::vector<int64_t>{1, 3, 4}));
    Send(owner, StopOwner{});
  }
  {
    auto [t, owner] = PublicTable<Table>(*node, TableType::kBag);
    for (int64_t n : {1, 2, 3}) ASSERT_TRUE(t.Insert(1, FlakyEquals{n}).ok());
    auto three_to_one = [](const int64_t&, const FlakyEquals& v) -> std::optional<FlakyEquals> {
      if (v.n != 3) return std::nullopt;
      return FlakyEquals{1};
    };
    FlakyEquals::left.store(0);  // The duplicate check's first comparison throws.
    EXPECT_THROW((void)t.SelectReplace(three_to_one), std::runtime_error);
    FlakyEquals::left.store(-1);
    EXPECT_EQ(Numbers(t.Lookup(1).value()), (std::vector<int64_t>{1, 2, 3}));
    EXPECT_EQ(t.Size().value(), 3u);
    EXPECT_EQ(t.SelectReplace(three_to_one).value(), 1u);
    EXPECT_EQ(Numbers(t.Lookup(1).value()), (std::vector<int64_t>{1, 2}));
    EXPECT_EQ(t.Size().value(), 2u);
    Send(owner, StopOwner{});
  }
}

// Two processes pass the table back and forth with GiveAway; each writes as owner on receipt.
// Meanwhile threads read it (protected: reads are open) and try to write (always denied: a
// thread is never the owner). At the end the last holder is killed and its heir inherits while
// the readers keep reading. Every owner write lands; no other write does.
TEST_P(TableConcurrencyTest, OwnershipPassesWhileOthersRead) {
  auto node = Node::Create({.schedulers = 2}).value();
  constexpr int kPasses = 300;
  auto last = std::make_shared<std::promise<Pid>>();
  auto inherited = std::make_shared<std::promise<std::string>>();
  Pid heir = node->Spawn([inherited](Process& self) -> Task<void> {
                   TableTransfer t = co_await self.Receive<TableTransfer>();
                   inherited->set_value(absl::StrCat("from ", t.from.ToString()));
                   co_await self.Receive<StopOwner>();
                 })
                 .value();
  auto body = [last](Process& self) -> Task<void> {
    Partner partner = co_await self.Receive<Partner>();
    while (true) {
      TableTransfer transfer = co_await self.Receive<TableTransfer>();
      int remaining = std::any_cast<int>(transfer.heir_data);
      IntTable t = IntTable::Attach(transfer.table).value();
      EXPECT_TRUE(t.Insert(1000 + remaining, 1).ok());  // Owner write: allowed.
      if (remaining == 0) {
        last->set_value(self.self());
        co_await self.Receive<StopOwner>();  // Killed here.
      }
      EXPECT_TRUE(t.GiveAway(partner.pid, remaining - 1).ok());
    }
  };
  Pid a = node->Spawn(body).value();
  Pid b = node->Spawn(body).value();
  Send(a, Partner{b});
  Send(b, Partner{a});
  // The creator hands the table to `a` once the readers run.
  auto created = std::make_shared<std::promise<AnyTable>>();
  auto go = std::make_shared<std::promise<void>>();
  std::shared_future<void> go_future = go->get_future().share();
  TableOptions options = Options(Access::kProtected);
  options.heir = heir;
  node->Spawn([created, go_future, options, a, kPasses](Process& self) -> Task<void> {
        IntTable t = IntTable::New(options).value();
        created->set_value(t.any());
        co_await self.Sleep(absl::ZeroDuration());
        go_future.wait();
        EXPECT_TRUE(t.GiveAway(a, kPasses).ok());
      })
      .value();
  IntTable t = IntTable::Attach(created->get_future().get()).value();
  std::atomic<bool> stop{false};
  std::atomic<int> denied{0};
  std::atomic<int> running{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&] {
      bool counted = false;
      while (!stop.load(std::memory_order_acquire)) {
        ASSERT_TRUE(t.Size().ok());
        ASSERT_TRUE(t.Lookup(1000).ok());
        if (t.Insert(1, 1).code() == absl::StatusCode::kPermissionDenied) denied.fetch_add(1);
        if (!std::exchange(counted, true)) running.fetch_add(1);
      }
    });
  }
  // Both readers have run a round before the passing starts (so they overlap it).
  while (running.load() < 2) std::this_thread::yield();
  go->set_value();
  Pid holder = last->get_future().get();
  SendExit(holder, ExitReason::Kill());
  EXPECT_EQ(inherited->get_future().get(), "from " + holder.ToString());
  stop.store(true, std::memory_order_release);
  for (auto& r : readers) r.join();
  EXPECT_GT(denied.load(), 0);
  EXPECT_EQ(t.Size().value(), static_cast<size_t>(kPasses + 1));  // Only the owners' writes.
  EXPECT_FALSE(t.Member(1).value());
  EXPECT_EQ(t.Info().value().owner, heir);
  Send(a, StopOwner{});
  Send(b, StopOwner{});
  Send(heir, StopOwner{});
}

TEST_P(TableConcurrencyTest, DeleteRacesWithEveryKindOfUse) {
  auto node = Node::Create({.schedulers = 2}).value();
  OwnedTable owned = SpawnOwner(*node, Options(Access::kPublic), 1000);
  IntTable t = IntTable::Attach(owned.table).value();
  std::atomic<int> started{0};
  std::vector<std::thread> users;
  for (int u = 0; u < 3; ++u) {
    users.emplace_back([&, u] {
      IntTable mine = IntTable::Attach(owned.table).value();  // Each its own handle.
      started.fetch_add(1);
      for (int64_t i = 0;; ++i) {
        absl::Status st;
        switch ((i + u) % 5) {
          case 0:
            st = mine.Insert(i % 3000, i);
            break;
          case 1:
            st = mine.Lookup(i % 3000).status();
            break;
          case 2:
            st = mine.ToList().status();
            break;
          case 3:
            st = mine.Erase(i % 3000).status();
            break;
          case 4:
            st = mine.Next(i % 3000).status();
            if (st.code() == absl::StatusCode::kNotFound && mine.alive()) st = absl::OkStatus();
            break;
        }
        if (!st.ok()) {
          ASSERT_EQ(st.code(), absl::StatusCode::kNotFound) << st;
          ASSERT_FALSE(mine.alive());
          return;  // Deleted: every later call must agree.
        }
      }
    });
  }
  while (started.load() < 3) std::this_thread::yield();
  RunInProcess(*node, [&](Process&) { ASSERT_TRUE(t.Delete().ok()); });
  for (auto& th : users) th.join();
  EXPECT_EQ(t.Insert(1, 1).code(), absl::StatusCode::kNotFound);
  Send(owned.owner, StopOwner{});
}

INSTANTIATE_TEST_SUITE_P(AllTypes, TableConcurrencyTest,
                         ::testing::Values(TableType::kSet, TableType::kOrderedSet, TableType::kBag,
                                           TableType::kDuplicateBag));

}  // namespace
}  // namespace etsmgr
