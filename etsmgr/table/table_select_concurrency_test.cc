// Chunked selects, ranges and traversal while writers change the table, and the atomicity of the
// predicate writes (SelectDelete, SelectReplace, Update) against concurrent writers. Run under
// tsan and asan by the suite; every wait is on an event (a join or an atomic count), no sleeps.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "etsmgr/process/testing/test_util.h"
#include "etsmgr/table/table.h"
#include "etsmgr/table/testing/test_owner.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

using IntTable = Table<int64_t, int64_t>;

constexpr int64_t kStable = 3000;  // Keys 0..kStable-1 hold k for the whole test.
constexpr int64_t kChurn = 2000;   // Keys kStable..kStable+kChurn-1 come and go.

// Writers that insert and erase the churn keys (value: the key) until stopped; `rounds` counts
// their passes, so a test can wait until the churn has really overlapped its scans.
class Churn {
 public:
  explicit Churn(IntTable t) : t_(std::move(t)) {
    for (int w = 0; w < 2; ++w) {
      threads_.emplace_back([this, w] {
        while (!stop_.load(std::memory_order_acquire)) {
          for (int64_t k = kStable + w; k < kStable + kChurn; k += 2) {
            ASSERT_TRUE(t_.Insert(k, k).ok());
          }
          for (int64_t k = kStable + w; k < kStable + kChurn; k += 4) {
            ASSERT_TRUE(t_.Erase(k).ok());
          }
          rounds_.fetch_add(1, std::memory_order_release);
        }
      });
    }
  }
  ~Churn() { Stop(); }
  void Stop() {
    stop_.store(true, std::memory_order_release);
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  int64_t rounds() const { return rounds_.load(std::memory_order_acquire); }

 private:
  IntTable t_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> rounds_{0};
  std::vector<std::thread> threads_;
};

class SelectUnderWritersTest : public ::testing::TestWithParam<TableType> {
 protected:
  void SetUp() override {
    node_ = Node::Create({.schedulers = 2}).value();
    TableOptions options;
    options.type = GetParam();
    options.access = Access::kPublic;
    owned_ = SpawnOwner(*node_, options, /*seed=*/kStable);
    t_ = IntTable::Attach(owned_.table).value();
  }
  void TearDown() override { Send(owned_.owner, StopOwner{}); }
  bool ordered() const { return GetParam() == TableType::kOrderedSet; }

  // One whole chunked scan; checks order (ordered_set) and that no object comes twice, and that
  // every stable key comes exactly once.
  void CheckOneScan(bool reverse, size_t limit) {
    absl::StatusOr<IntTable::Chunk> chunk =
        reverse ? t_.SelectReverse(nullptr, limit) : t_.Select(nullptr, limit);
    std::vector<std::pair<int64_t, int64_t>> all;
    while (true) {
      ASSERT_TRUE(chunk.ok()) << chunk.status();
      ASSERT_LE(chunk->objects.size(), limit);
      all.insert(all.end(), chunk->objects.begin(), chunk->objects.end());
      if (chunk->next.done()) break;
      chunk = t_.Select(std::move(chunk->next));
    }
    if (ordered()) {
      for (size_t i = 1; i < all.size(); ++i) {
        ASSERT_TRUE(reverse ? all[i].first < all[i - 1].first : all[i - 1].first < all[i].first)
            << "out of order at " << i;
      }
    }
    std::map<std::pair<int64_t, int64_t>, int> seen;
    for (const auto& e : all) {
      ASSERT_EQ(e.second, e.first);  // Whole objects only.
      ++seen[e];
    }
    for (int64_t k = 0; k < kStable; ++k) ASSERT_EQ((seen[{k, k}]), 1) << "stable key " << k;
    if (GetParam() != TableType::kDuplicateBag) {  // (There churned keys have twins.)
      for (const auto& [e, n] : seen) ASSERT_EQ(n, 1) << "object " << e.first << " twice";
    }
  }

  std::unique_ptr<Node> node_;
  OwnedTable owned_;
  IntTable t_;
};

TEST_P(SelectUnderWritersTest, ContinuationsSeeStableObjectsExactlyOnce) {
  Churn churn(t_);
  // Scans until both writers have finished a pass during them (then the scans overlapped). One
  // pass, not several: under asan an ordered_set scan of 7-object chunks holds the writers off
  // long enough that three passes once took two and a half minutes.
  const int64_t start = churn.rounds();
  int scans = 0;
  while (scans < 6 || churn.rounds() < start + 2) {
    CheckOneScan(/*reverse=*/scans % 2 == 1, /*limit=*/scans % 3 == 0 ? 7 : 97);
    if (HasFatalFailure()) return;
    ++scans;
    ASSERT_LT(scans, 10000) << "the writers made no progress";
  }
}

TEST_P(SelectUnderWritersTest, RangesSeeStableKeysExactlyOnceInOrder) {
  if (!ordered()) GTEST_SKIP() << "ranges are for ordered_set";
  // Churn keys interleave with stable ones here: stable k -> 2k, churned odd keys in between.
  ASSERT_TRUE(t_.Clear().ok());
  for (int64_t k = 0; k < 2 * kStable; k += 2) ASSERT_TRUE(t_.Insert(k, k).ok());
  std::atomic<bool> stop{false};
  std::atomic<int64_t> rounds{0};
  std::thread writer([&] {
    while (!stop.load(std::memory_order_acquire)) {
      for (int64_t k = 1; k < 2 * kStable; k += 2) ASSERT_TRUE(t_.Insert(k, k).ok());
      for (int64_t k = 1; k < 2 * kStable; k += 2) ASSERT_TRUE(t_.Erase(k).ok());
      rounds.fetch_add(1, std::memory_order_release);
    }
  });
  int scans = 0;
  const int64_t lo = 501, hi = 4001;  // [lo, hi): stable keys 502..4000.
  while (scans < 6 || rounds.load(std::memory_order_acquire) < 3) {
    absl::StatusOr<IntTable::Chunk> chunk =
        t_.SelectRange(KeyRange<int64_t>::HalfOpen(lo, hi), nullptr, 50);
    std::vector<int64_t> keys;
    while (true) {
      ASSERT_TRUE(chunk.ok()) << chunk.status();
      for (const auto& [k, v] : chunk->objects) keys.push_back(k);
      if (chunk->next.done()) break;
      chunk = t_.Select(std::move(chunk->next));
    }
    ASSERT_TRUE(std::is_sorted(keys.begin(), keys.end()));
    ASSERT_EQ(std::adjacent_find(keys.begin(), keys.end()), keys.end()) << "a key twice";
    ASSERT_TRUE(keys.empty() || (keys.front() >= lo && keys.back() < hi));
    std::vector<int64_t> stable;
    std::copy_if(keys.begin(), keys.end(), std::back_inserter(stable),
                 [](int64_t k) { return k % 2 == 0; });
    ASSERT_EQ(stable.size(), static_cast<size_t>((4000 - 502) / 2 + 1));
    ++scans;
    ASSERT_LT(scans, 10000) << "the writer made no progress";
  }
  stop = true;
  writer.join();
}

// First/Next on an ordered_set while the key the walk stands on is deleted (by the walker itself,
// then by another thread): every key present throughout is visited once, in order.
TEST_P(SelectUnderWritersTest, NextAfterTheCurrentKeyIsDeleted) {
  if (!ordered()) GTEST_SKIP() << "hash types need a present key (documented in table.h)";
  std::vector<int64_t> visited;
  for (std::optional<int64_t> k = t_.First().value(); k; k = t_.Next(*k).value()) {
    visited.push_back(*k);
    if (*k % 3 == 0) {
      ASSERT_EQ(t_.Erase(*k).value(), 1u);  // Gone before Next asks.
    }
  }
  ASSERT_EQ(visited.size(), static_cast<size_t>(kStable));
  for (int64_t k = 0; k < kStable; ++k) ASSERT_EQ(visited[k], k);
  std::vector<int64_t> back;
  for (std::optional<int64_t> k = t_.Last().value(); k; k = t_.Prev(*k).value()) {
    back.push_back(*k);
    ASSERT_EQ(t_.Erase(*k).value(), 1u);
  }
  ASSERT_EQ(back.size(), static_cast<size_t>(kStable - (kStable + 2) / 3));
  ASSERT_TRUE(std::is_sorted(back.rbegin(), back.rend()));
  // Concurrently: a thread erases odd keys while the walk goes on. Rounds repeat (up to 50) until
  // one overlapped: the walk saw some odd keys and missed others (a walk wholly before or after
  // the erasing proves nothing).
  bool overlapped = false;
  for (int round = 0; round < 50 && !overlapped; ++round) {
    for (int64_t k = 0; k < kStable; ++k) ASSERT_TRUE(t_.Insert(k, k).ok());
    std::atomic<bool> walking{false};
    std::thread eraser([&] {
      while (!walking.load()) std::this_thread::yield();  // The walk has its first key.
      for (int64_t k = 1; k < kStable; k += 2) ASSERT_TRUE(t_.Erase(k).ok());
    });
    std::vector<int64_t> walk;
    for (std::optional<int64_t> k = t_.First().value(); k; k = t_.Next(*k).value()) {
      walk.push_back(*k);
      walking.store(true);
    }
    walking.store(true);
    eraser.join();
    ASSERT_TRUE(std::is_sorted(walk.begin(), walk.end()));
    ASSERT_EQ(std::adjacent_find(walk.begin(), walk.end()), walk.end());
    for (int64_t k = 0; k < kStable; k += 2) {
      ASSERT_TRUE(std::binary_search(walk.begin(), walk.end(), k)) << k;
    }
    const auto odd = std::count_if(walk.begin(), walk.end(), [](int64_t k) { return k % 2 == 1; });
    overlapped = odd > 0 && odd < kStable / 2;
  }
  EXPECT_TRUE(overlapped) << "no walk ran while the keys were erased: the test proves nothing";
}

// SelectReplace and Update against each other: no update is lost (each is atomic per object).
TEST_P(SelectUnderWritersTest, ReplaceAndUpdateLoseNothing) {
  if (GetParam() == TableType::kBag || GetParam() == TableType::kDuplicateBag) {
    GTEST_SKIP() << "Update needs a set or ordered_set";
  }
  // The updaters run until the passes are done (counted), so every pass has them beside it; a
  // pass during which no update landed is not counted as overlapped, and one must be.
  std::atomic<bool> stop{false};
  std::atomic<int64_t> updates{0};
  std::vector<std::thread> updaters;
  for (int u = 0; u < 2; ++u) {
    updaters.emplace_back([&, u] {
      for (int i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        ASSERT_TRUE(t_.Update((i * 31 + u) % kStable, [](int64_t& v) { v += 1; }).value());
        updates.fetch_add(1);
      }
    });
  }
  while (updates.load() == 0) std::this_thread::yield();
  int64_t replaced = 0;
  int overlapped = 0;
  constexpr int kPasses = 20;
  for (int round = 0; round < kPasses; ++round) {
    const int64_t before = updates.load();
    replaced += static_cast<int64_t>(
        t_.SelectReplace([](const int64_t&, const int64_t& v) -> std::optional<int64_t> {
            return v + 1;
          }).value());
    if (updates.load() > before) ++overlapped;
  }
  stop = true;
  for (auto& u : updaters) u.join();
  int64_t sum = 0;
  ASSERT_TRUE(t_.ForEach([&](const int64_t&, const int64_t& v) { sum += v; }).ok());
  const int64_t base = kStable * (kStable - 1) / 2;
  EXPECT_EQ(replaced, kPasses * kStable);
  EXPECT_EQ(sum, base + updates.load() + replaced);
  EXPECT_GT(overlapped, 0) << "no pass ran while updates landed: the test proves nothing";
}

// SelectDelete against inserts: every inserted object is either deleted (counted) or still there.
// At least one pass must have run while inserts landed: the inserter goes on past its 30,000 keys
// (with keys a pass deletes) until one did, for 60 s at most.
TEST_P(SelectUnderWritersTest, SelectDeleteCountsEveryObjectOnce) {
  ASSERT_TRUE(t_.Clear().ok());
  constexpr int64_t kInserts = 30000;
  std::atomic<bool> done{false};
  std::atomic<int64_t> inserted{0};
  std::atomic<int> overlapped{0};  // passes during which inserts landed
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  std::thread inserter([&] {
    for (int64_t k = 0; k < kInserts || (overlapped.load() == 0 && absl::Now() < deadline); ++k) {
      EXPECT_TRUE(t_.Insert(k, k).ok()) << k;  // Not ASSERT: `done` must be set whatever fails.
      inserted.store(k + 1, std::memory_order_release);
    }
    done.store(true, std::memory_order_release);
  });
  size_t deleted = 0;
  auto odd_or_late = [](const int64_t& k, const int64_t&) { return k % 2 == 1 || k > 20000; };
  // A pass over the whole table, then another once the inserter has moved on (its inserts overlap
  // the passes). Passes back to back would make the two threads share a fair lock pass by pass:
  // ~30,000 passes over up to 10,000 keys, minutes under ASan.
  int passes = 0;
  while (!done.load(std::memory_order_acquire)) {
    const int64_t before = inserted.load(std::memory_order_acquire);
    deleted += t_.SelectDelete(odd_or_late).value();
    const int64_t seen = inserted.load(std::memory_order_acquire);
    ++passes;
    if (seen > before) ++overlapped;
    while (!done.load(std::memory_order_acquire) &&
           inserted.load(std::memory_order_acquire) < seen + 200) {
      std::this_thread::yield();
    }
  }
  inserter.join();
  deleted += t_.SelectDelete(odd_or_late).value();
  EXPECT_EQ(deleted, static_cast<size_t>(inserted.load() - 10001));
  EXPECT_EQ(t_.Size().value(), 10001u);
  EXPECT_EQ(t_.SelectCount(odd_or_late).value(), 0u);
  std::printf("%d of %d passes overlapped inserts\n", overlapped.load(), passes);
  EXPECT_GT(overlapped, 0) << "no pass ran while inserts landed: the test proves nothing";
}

INSTANTIATE_TEST_SUITE_P(AllTypes, SelectUnderWritersTest,
                         ::testing::Values(TableType::kSet, TableType::kOrderedSet, TableType::kBag,
                                           TableType::kDuplicateBag),
                         [](const ::testing::TestParamInfo<TableType>& info) {
                           std::string name = ToString(info.param);
                           name.erase(std::remove(name.begin(), name.end(), '_'), name.end());
                           return name;
                         });

}  // namespace
}  // namespace etsmgr
