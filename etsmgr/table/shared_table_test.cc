// Table<K, V> with shared storage (TableOptions::shared): the Table API over a shared-memory
// segment, what survives the owner, what Delete removes, and what is refused.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <future>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "etsmgr/process/node.h"
#include "etsmgr/process/testing/test_util.h"
#include "etsmgr/table/shared/shared_map.h"
#include "etsmgr/table/shared/test_names.h"
#include "etsmgr/table/table.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

using IntTable = Table<int64_t, int64_t>;
using Entries = std::vector<std::pair<int64_t, int64_t>>;

// Shared storage is for types the segment can hold, and the compiler says so.
template <typename K, typename V>
concept CanNewShared = requires(SharedStorage s) {
  Table<K, V>::NewShared(s);
};
static_assert(CanNewShared<int64_t, int64_t>);
static_assert(CanNewShared<SharedString<16>, int64_t>);
static_assert(!CanNewShared<std::string, int64_t>);
static_assert(!CanNewShared<int64_t, std::string>);
static_assert(!CanNewShared<double, int64_t>);  // A key must have one byte pattern per value.

Entries Sorted(Entries v) {
  std::sort(v.begin(), v.end());
  return v;
}

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

class SharedTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    storage_.segment = shared_testing::UniqueSegmentName("etsmgr-table-test");
    storage_.map.shards = 4;
    storage_.map.max_bytes = uint64_t{1} << 26;
    node_ = Node::Create({.schedulers = 1}).value();
  }
  void TearDown() override {
    node_.reset();
    (void)SharedMap<int64_t, int64_t>::Remove(storage_.segment);
    unlink(ClaimPath().c_str());
  }
  std::string SegmentPath() const { return "/dev/shm/" + storage_.segment; }
  std::string ClaimPath() const { return "/dev/shm/." + storage_.segment + ".owner"; }
  // Runs `fn` in a process and returns once that process has exited (its tables deleted or
  // passed on, their claims released): the next Run may claim the same segment.
  void Run(std::function<void(Process&)> fn) {
    auto ran = std::make_shared<std::promise<void>>();
    std::future<void> done = ran->get_future();
    absl::StatusOr<Pid> pid = node_->Spawn([fn = std::move(fn), ran](Process& self) -> Task<void> {
      fn(self);
      ran->set_value();
      co_return;
    });
    ASSERT_TRUE(pid.ok()) << pid.status();
    ASSERT_EQ(done.wait_for(std::chrono::seconds(20)), std::future_status::ready);
    AwaitDeath(*node_, *pid);
  }

  SharedStorage storage_;
  std::unique_ptr<Node> node_;
};

TEST_F(SharedTableTest, TheTableApiOnASharedSegment) {
  Run([&](Process&) {
    IntTable t = IntTable::NewShared(storage_, {.access = Access::kPublic}).value();
    ASSERT_TRUE(t.Insert(1, 10).ok());
    ASSERT_TRUE(t.Insert({{2, 20}, {3, 30}}).ok());
    EXPECT_EQ(t.Get(1).value(), 10);
    EXPECT_EQ(t.Lookup(2).value(), std::vector<int64_t>{20});
    EXPECT_TRUE(t.Member(3).value());
    EXPECT_FALSE(t.InsertNew(1, 11).value());
    EXPECT_TRUE(t.InsertNew(4, 40).value());
    EXPECT_EQ(t.UpdateCounter(1, 5).value(), 15);
    EXPECT_EQ(t.UpdateCounter(9, 1, {.default_value = 100}).value(), 101);
    EXPECT_EQ(t.UpdateCounter(8, 1).status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(t.UpdateCounter(1, 100, {.threshold = 50, .set_value = 0}).value(), 0);
    EXPECT_EQ(t.Size().value(), 5u);
    EXPECT_EQ(Sorted(t.ToList().value()), (Entries{{1, 0}, {2, 20}, {3, 30}, {4, 40}, {9, 101}}));
    EXPECT_EQ(t.EraseObject(2, 21).value(), 0u);
    EXPECT_EQ(t.EraseObject(2, 20).value(), 1u);
    EXPECT_EQ(t.Take(3).value(), std::vector<int64_t>{30});
    EXPECT_EQ(t.Erase(4).value(), 1u);
    EXPECT_EQ(Sorted(t.ToList().value()), (Entries{{1, 0}, {9, 101}}));
    TableInfo info = t.Info().value();
    EXPECT_EQ(info.storage, "shared segment " + SegmentPath());
    EXPECT_EQ(info.size, 2u);
    EXPECT_GT(info.memory, 0u);
    ASSERT_TRUE(t.Clear().ok());
    EXPECT_EQ(t.Size().value(), 0u);
  });
}

// Get and UpdateCounter on shared storage are inlined into the caller and fall back to the
// general call for everything but the common case: what they answer is the general call's.
TEST_F(SharedTableTest, TheInlinedPathsAnswerAsTheCallsDo) {
  Run([&](Process&) {
    IntTable t = IntTable::NewShared(storage_, {.access = Access::kPublic}).value();
    constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
    ASSERT_TRUE(t.Insert(1, kMax - 1).ok());
    EXPECT_EQ(t.Get(1).value(), kMax - 1);
    EXPECT_EQ(t.Get(2).value(), std::nullopt) << "an absent key";
    EXPECT_EQ(t.UpdateCounter(1, 1).value(), kMax);
    EXPECT_EQ(t.UpdateCounter(1, 1).status().code(), absl::StatusCode::kOutOfRange);
    EXPECT_EQ(t.Get(1).value(), kMax) << "an overflowing update changes nothing";
    EXPECT_EQ(t.UpdateCounter(2, 1).status().code(), absl::StatusCode::kNotFound);
    ASSERT_TRUE(t.Insert(1, 0).ok());

    // A writer of another program killed while it holds the key's shard lock (after its store):
    // the next update takes the dead holder's lock word over, repairs the shard and counts on.
    pid_t child = fork();
    if (child == 0) {
      SharedMapOptions options = storage_.map;
      options.mode = SharedMapOptions::Mode::kOpen;
      absl::StatusOr<SharedMap<int64_t, int64_t>> map =
          SharedMap<int64_t, int64_t>::Open(storage_.segment, options);
      if (!map.ok()) _exit(2);
      shared_internal::g_crash_hook.store(+[](shared_internal::Crash point) {
        if (point == shared_internal::Crash::kSlotWritten) _exit(0);
      });
      (void)map->UpdateCounter(1, 5);
      _exit(3);  // The hook did not fire.
    }
    ASSERT_GT(child, 0);
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    EXPECT_EQ(t.UpdateCounter(1, 1).value(), 6) << "the killed writer's store, then ours";
    EXPECT_TRUE(t.CheckStorage().ok());

    ASSERT_TRUE(t.Delete().ok());
    EXPECT_FALSE(t.Get(1).ok()) << "a deleted table";
    EXPECT_FALSE(t.UpdateCounter(1, 1).ok()) << "a deleted table";
  });
}

TEST_F(SharedTableTest, SyncAndCheckStorage) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  storage_.map.directory = tmp != nullptr ? tmp : "/tmp";
  Run([&](Process&) {
    IntTable t = IntTable::NewShared(storage_).value();
    for (int64_t k = 0; k < 1000; ++k) ASSERT_TRUE(t.Insert(k, k).ok());
    EXPECT_TRUE(t.Sync().ok());
    EXPECT_TRUE(t.CheckStorage().ok());
    EXPECT_EQ(t.Info().value().storage,
              absl::StrCat("shared segment ", storage_.map.directory, "/", storage_.segment));
    ASSERT_TRUE(t.Delete().ok());
    EXPECT_EQ(t.Sync().code(), absl::StatusCode::kNotFound);
    IntTable heap = IntTable::New().value();
    EXPECT_EQ(heap.Sync().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(heap.CheckStorage().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(heap.Info().value().storage, "heap");
  });
  EXPECT_FALSE(Exists(absl::StrCat(storage_.map.directory, "/", storage_.segment)));
}

TEST_F(SharedTableTest, SelectFamilyUpdateAndTraversal) {
  Run([&](Process&) {
    IntTable t = IntTable::NewShared(storage_).value();
    for (int64_t k = 0; k < 100; ++k) ASSERT_TRUE(t.Insert(k, k * 10).ok());
    auto even = [](const int64_t& k, const int64_t&) { return k % 2 == 0; };
    EXPECT_EQ(t.SelectCount(even).value(), 50u);
    EXPECT_EQ(t.Select(IntTable::Pred(even)).value().size(), 50u);
    // Chunked select: every match exactly once.
    auto chunk = t.Select(even, 7).value();
    size_t seen = chunk.objects.size();
    while (!chunk.next.done()) {
      chunk = t.Select(std::move(chunk.next)).value();
      seen += chunk.objects.size();
    }
    EXPECT_EQ(seen, 50u);
    EXPECT_EQ(t.SelectReplace([](const int64_t& k, const int64_t& v) -> std::optional<int64_t> {
                 if (k < 10) return v + 1;
                 return std::nullopt;
               }).value(),
              10u);
    EXPECT_EQ(t.Get(3).value(), 31);
    EXPECT_EQ(t.SelectDelete([](const int64_t& k, const int64_t&) { return k >= 50; }).value(),
              50u);
    EXPECT_EQ(t.Size().value(), 50u);
    EXPECT_TRUE(t.Update(7, [](int64_t& v) { v = -7; }).value());
    EXPECT_FALSE(t.Update(70, [](int64_t& v) { v = 1; }).value());
    EXPECT_TRUE(t.Update(
                     70, [](int64_t& v) { v += 1; }, 100)
                    .value());
    EXPECT_EQ(t.Get(7).value(), -7);
    EXPECT_EQ(t.Get(70).value(), 101);
    EXPECT_EQ(t.LookupElement(70, [](const int64_t& v) { return v * 2; }).value(),
              std::vector<int64_t>{202});
    // First / Next visit every key once.
    size_t walked = 0;
    for (std::optional<int64_t> k = t.First().value(); k; k = t.Next(*k).value()) ++walked;
    EXPECT_EQ(walked, 51u);
    EXPECT_EQ(t.Next(12345).status().code(), absl::StatusCode::kNotFound);
    int64_t sum = 0;
    ASSERT_TRUE(t.ForEach([&](const int64_t&, const int64_t& v) { sum += v; }).ok());
    EXPECT_EQ(sum, t.Fold<int64_t>(0, [](int64_t a, const int64_t&, const int64_t& v) {
                      return a + v;
                    }).value());
  });
}

TEST_F(SharedTableTest, ThreadsShareAPublicSharedTable) {
  std::atomic<bool> done{false};
  Run([&](Process&) {
    IntTable shared = IntTable::NewShared(storage_, {.access = Access::kPublic}).value();
    constexpr int kThreads = 4, kEach = 5000;
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i) {
      threads.emplace_back([shared, i]() mutable {
        for (int n = 0; n < kEach; ++n) {
          ASSERT_TRUE(shared.UpdateCounter(0, 1, {.default_value = 0}).ok());
          ASSERT_TRUE(shared.Insert(1000 + i * kEach + n, n).ok());
          ASSERT_TRUE(shared.Get(1000 + i * kEach + n).value().has_value());
        }
      });
    }
    for (std::thread& th : threads) th.join();
    EXPECT_EQ(shared.Get(0).value(), kThreads * kEach);
    EXPECT_EQ(shared.Size().value(), size_t{kThreads * kEach + 1});
    EXPECT_TRUE(shared.CheckStorage().ok());
    done = true;
  });
  EXPECT_TRUE(done);
}

TEST_F(SharedTableTest, TheDataOutlivesTheOwnerAndComesBackWithoutCopying) {
  IntTable kept;  // A handle that outlives the owner.
  Run([&](Process&) {
    IntTable t = IntTable::NewShared(storage_).value();
    ASSERT_TRUE(t.Insert(1, 100).ok());
    EXPECT_FALSE(t.any().core()->storage_existed());
    kept = t;
  });
  EXPECT_EQ(kept.Get(1).status().code(), absl::StatusCode::kNotFound);  // Deleted here...
  // ... the owner exited with no heir: the table was deleted in this program (lost), but the
  // segment and its data stay for whoever comes next, and the claim is free again.
  EXPECT_TRUE(Exists(SegmentPath()));
  Run([&](Process&) {
    IntTable t = IntTable::NewShared(storage_).value();
    EXPECT_TRUE(t.any().core()->storage_existed());
    EXPECT_EQ(t.Get(1).value(), 100);
  });
}

TEST_F(SharedTableTest, DeleteRemovesTheSegmentAndItsClaim) {
  Run([&](Process&) {
    IntTable t = IntTable::NewShared(storage_).value();
    ASSERT_TRUE(t.Insert(1, 100).ok());
    EXPECT_TRUE(Exists(SegmentPath()));
    EXPECT_TRUE(Exists(ClaimPath()));
    ASSERT_TRUE(t.Delete().ok());
    EXPECT_EQ(t.Get(1).status().code(), absl::StatusCode::kNotFound);
    EXPECT_FALSE(Exists(SegmentPath()));
    EXPECT_FALSE(Exists(ClaimPath()));
  });
  Run([&](Process&) {
    IntTable t = IntTable::NewShared(storage_).value();
    EXPECT_FALSE(t.any().core()->storage_existed());
    EXPECT_EQ(t.Size().value(), 0u);
  });
}

TEST_F(SharedTableTest, OneTablePerSegmentAtATime) {
  Run([&](Process&) {
    IntTable t = IntTable::NewShared(storage_).value();
    absl::StatusOr<IntTable> again = IntTable::NewShared(storage_);
    EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists) << again.status();
    EXPECT_NE(again.status().message().find("held by another live program"), std::string::npos)
        << again.status();
    ASSERT_TRUE(t.Delete().ok());
    EXPECT_TRUE(IntTable::NewShared(storage_).ok());
  });
}

TEST_F(SharedTableTest, AFailedCreationLeavesNoSegmentBehind) {
  Run([&](Process&) {
    IntTable named = IntTable::New({.name = "taken"}).value();
    absl::StatusOr<IntTable> t = IntTable::NewShared(storage_, {.name = "taken"});
    EXPECT_EQ(t.status().code(), absl::StatusCode::kAlreadyExists) << t.status();
    EXPECT_FALSE(Exists(SegmentPath()));  // It made the segment, then removed it.
    EXPECT_FALSE(Exists(ClaimPath()));
  });
  Run([&](Process&) { ASSERT_TRUE(IntTable::NewShared(storage_).value().Insert(1, 1).ok()); });
  Run([&](Process&) {
    // A segment that existed stays, data and all.
    IntTable named = IntTable::New({.name = "taken"}).value();
    EXPECT_FALSE(IntTable::NewShared(storage_, {.name = "taken"}).ok());
    EXPECT_TRUE(Exists(SegmentPath()));
    EXPECT_EQ(IntTable::NewShared(storage_).value().Get(1).value(), 1);
  });
}

TEST_F(SharedTableTest, RefusedWithTypedErrors) {
  Run([&](Process&) {
    TableOptions options;
    options.type = TableType::kOrderedSet;
    absl::StatusOr<IntTable> ordered = IntTable::NewShared(storage_, options);
    EXPECT_EQ(ordered.status().code(), absl::StatusCode::kInvalidArgument) << ordered.status();
    EXPECT_NE(ordered.status().message().find("holds a set"), std::string::npos);

    SharedStorage bad = storage_;
    bad.segment = "../etc/passwd";
    absl::StatusOr<IntTable> traversal = IntTable::NewShared(bad);
    EXPECT_EQ(traversal.status().code(), absl::StatusCode::kInvalidArgument) << traversal.status();

    // The runtime option on a type the segment cannot hold (NewShared would not compile).
    TableOptions strings;
    strings.shared = storage_;
    absl::StatusOr<Table<std::string, int64_t>> s = Table<std::string, int64_t>::New(strings);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << s.status();
    EXPECT_NE(s.status().message().find("cannot be shared"), std::string::npos) << s.status();

    // A segment of other types.
    ASSERT_TRUE(IntTable::NewShared(storage_).ok());  // Made, then lost: the segment stays.
  });
  Run([&](Process&) {
    absl::StatusOr<Table<int32_t, int64_t>> other = Table<int32_t, int64_t>::NewShared(storage_);
    EXPECT_EQ(other.status().code(), absl::StatusCode::kInvalidArgument) << other.status();
  });
}

}  // namespace
}  // namespace etsmgr
