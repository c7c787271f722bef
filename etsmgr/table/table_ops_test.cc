// Every table operation on each of the four table types.
#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

#include "etsmgr/base/large_block.h"
#include "etsmgr/process/node.h"
#include "etsmgr/process/testing/test_util.h"
#include "etsmgr/table/internal/manager_access.h"
#include "etsmgr/table/table.h"
#include "etsmgr/table/table_keeper.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

using IntTable = Table<int64_t, int64_t>;
using Entries = std::vector<std::pair<int64_t, int64_t>>;

bool IsBag(TableType t) { return t == TableType::kBag || t == TableType::kDuplicateBag; }

Entries Sorted(Entries v) {
  std::sort(v.begin(), v.end());
  return v;
}

class TableOpsTest : public ::testing::TestWithParam<TableType> {
 protected:
  void SetUp() override { node_ = Node::Create({.schedulers = 1}).value(); }
  IntTable NewTable() {
    TableOptions options;
    options.type = GetParam();
    return IntTable::New(options).value();
  }
  void Run(std::function<void(Process&)> fn) { RunInProcess(*node_, std::move(fn)); }
  std::unique_ptr<Node> node_;
};

TEST_P(TableOpsTest, InsertLookupMemberSize) {
  Run([&](Process&) {
    IntTable t = NewTable();
    EXPECT_EQ(t.Size().value(), 0u);
    EXPECT_TRUE(t.Lookup(1).value().empty());
    EXPECT_FALSE(t.Get(1).value().has_value());
    EXPECT_FALSE(t.Member(1).value());
    ASSERT_TRUE(t.Insert(1, 10).ok());
    ASSERT_TRUE(t.Insert(1, 11).ok());
    ASSERT_TRUE(t.Insert(1, 11).ok());
    ASSERT_TRUE(t.Insert(2, 20).ok());
    EXPECT_TRUE(t.Member(1).value());
    std::vector<int64_t> ones = t.Lookup(1).value();
    switch (GetParam()) {
      case TableType::kSet:
      case TableType::kOrderedSet:
        EXPECT_EQ(ones, std::vector<int64_t>({11}));  // Replaced.
        EXPECT_EQ(t.Size().value(), 2u);
        break;
      case TableType::kBag:
        EXPECT_EQ(ones, std::vector<int64_t>({10, 11}));  // Identical objects kept once.
        EXPECT_EQ(t.Size().value(), 3u);
        break;
      case TableType::kDuplicateBag:
        EXPECT_EQ(ones, std::vector<int64_t>({10, 11, 11}));
        EXPECT_EQ(t.Size().value(), 4u);
        break;
    }
    EXPECT_EQ(t.Get(1).value().value(), ones.front());
  });
}

TEST_P(TableOpsTest, InsertManyAndInsertNew) {
  Run([&](Process&) {
    IntTable t = NewTable();
    ASSERT_TRUE(t.Insert(Entries{{1, 1}, {2, 2}, {3, 3}}).ok());
    EXPECT_EQ(t.Size().value(), 3u);
    EXPECT_FALSE(t.InsertNew(2, 99).value());
    EXPECT_EQ(t.Lookup(2).value(), std::vector<int64_t>({2}));
    EXPECT_TRUE(t.InsertNew(4, 4).value());
    // All or nothing: one present key blocks the whole batch.
    EXPECT_FALSE(t.InsertNew(Entries{{5, 5}, {1, 100}}).value());
    EXPECT_FALSE(t.Member(5).value());
    EXPECT_TRUE(t.InsertNew(Entries{{5, 5}, {6, 6}}).value());
    EXPECT_EQ(t.Size().value(), 6u);
  });
}

TEST_P(TableOpsTest, EraseEraseObjectTake) {
  Run([&](Process&) {
    IntTable t = NewTable();
    ASSERT_TRUE(t.Insert(Entries{{1, 10}, {1, 11}, {2, 20}, {3, 30}}).ok());
    size_t ones = IsBag(GetParam()) ? 2 : 1;
    EXPECT_EQ(t.Erase(1).value(), ones);
    EXPECT_EQ(t.Erase(1).value(), 0u);  // Absent: not an error.
    EXPECT_FALSE(t.Member(1).value());
    EXPECT_EQ(t.EraseObject(2, 21).value(), 0u);  // Value differs: nothing removed.
    EXPECT_EQ(t.EraseObject(2, 20).value(), 1u);
    EXPECT_FALSE(t.Member(2).value());
    EXPECT_EQ(t.Take(3).value(), std::vector<int64_t>({30}));
    EXPECT_TRUE(t.Take(3).value().empty());
    EXPECT_EQ(t.Size().value(), 0u);
    if (GetParam() == TableType::kDuplicateBag) {
      ASSERT_TRUE(t.Insert(Entries{{7, 1}, {7, 1}, {7, 2}}).ok());
      EXPECT_EQ(t.EraseObject(7, 1).value(), 2u);  // Every copy.
      EXPECT_EQ(t.Lookup(7).value(), std::vector<int64_t>({2}));
    }
  });
}

TEST_P(TableOpsTest, ToListSelectForEachFoldClear) {
  Run([&](Process&) {
    IntTable t = NewTable();
    Entries all;
    for (int64_t k = 0; k < 100; ++k) all.emplace_back(k, k * k);
    ASSERT_TRUE(t.Insert(all).ok());
    EXPECT_EQ(Sorted(t.ToList().value()), all);
    // The predicate sees each key with its own value, and exactly the matching objects come out.
    Entries even;
    for (int64_t k = 0; k < 100; k += 2) even.emplace_back(k, k * k);
    Entries selected = t.Select([](const int64_t& k, const int64_t& v) {
                          return v == k * k && k % 2 == 0;
                        }).value();
    EXPECT_EQ(Sorted(selected), even);
    Entries by_value =
        t.Select([](const int64_t&, const int64_t& v) { return v >= 9025; }).value();  // 95^2
    EXPECT_EQ(Sorted(by_value), Entries(all.begin() + 95, all.end()));
    int64_t sum = 0;
    ASSERT_TRUE(t.ForEach([&](const int64_t&, const int64_t& v) { sum += v; }).ok());
    EXPECT_EQ(sum, 328350);
    std::function<int64_t(int64_t, const int64_t&, const int64_t&)> add =
        [](int64_t acc, const int64_t& k, const int64_t&) { return acc + k; };
    EXPECT_EQ(t.Fold<int64_t>(0, add).value(), 4950);
    // Callbacks run without a lock: they may write to the table.
    absl::Status each = t.ForEach([&](const int64_t& k, const int64_t&) {
      if (k == 0) {
        EXPECT_TRUE(t.Insert(1000, 1).ok());
      }
    });
    ASSERT_TRUE(each.ok());
    EXPECT_TRUE(t.Member(1000).value());
    ASSERT_TRUE(t.Clear().ok());
    EXPECT_EQ(t.Size().value(), 0u);
    EXPECT_TRUE(t.ToList().value().empty());
  });
}

TEST_P(TableOpsTest, Traversal) {
  Run([&](Process&) {
    IntTable t = NewTable();
    EXPECT_FALSE(t.First().value().has_value());
    EXPECT_FALSE(t.Last().value().has_value());
    std::vector<int64_t> keys = {50, 10, 40, 20, 30};
    for (int64_t k : keys) ASSERT_TRUE(t.Insert(k, k).ok());
    std::vector<int64_t> walked;
    for (std::optional<int64_t> k = t.First().value(); k; k = t.Next(*k).value()) {
      walked.push_back(*k);
      ASSERT_LE(walked.size(), keys.size());
    }
    if (GetParam() == TableType::kOrderedSet) {
      EXPECT_EQ(walked, std::vector<int64_t>({10, 20, 30, 40, 50}));
      EXPECT_EQ(t.Last().value(), 50);
      EXPECT_EQ(t.Prev(50).value(), 40);
      EXPECT_EQ(t.Prev(10).value(), std::nullopt);
      EXPECT_EQ(t.Next(25).value(), 30);  // Any key, present or not.
      EXPECT_EQ(t.Prev(25).value(), 20);
      EXPECT_EQ(t.Next(50).value(), std::nullopt);
    } else {
      std::sort(walked.begin(), walked.end());
      EXPECT_EQ(walked, std::vector<int64_t>({10, 20, 30, 40, 50}));  // Each key once.
      EXPECT_EQ(t.Last().value(), t.First().value());
      absl::StatusOr<std::optional<int64_t>> missing = t.Next(25);
      EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
    }
  });
}

TEST_P(TableOpsTest, UpdateCounter) {
  Run([&](Process&) {
    IntTable t = NewTable();
    ASSERT_TRUE(t.Insert(1, 5).ok());
    absl::StatusOr<int64_t> r = t.UpdateCounter(1, 1);
    if (IsBag(GetParam())) {
      EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
      EXPECT_NE(r.status().message().find("bag"), std::string::npos);
      return;
    }
    EXPECT_EQ(r.value(), 6);
    EXPECT_EQ(t.UpdateCounter(1, -10).value(), -4);
    absl::StatusOr<int64_t> missing = t.UpdateCounter(2, 1);
    EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
    EXPECT_NE(missing.status().message().find("no key 2"), std::string::npos) << missing.status();
    CounterOptions<int64_t> with_default;
    with_default.default_value = 100;
    EXPECT_EQ(t.UpdateCounter(2, 1, with_default).value(), 101);
    // Threshold wrap, as ETS {Pos, Incr, Threshold, SetValue}.
    CounterOptions<int64_t> wrap;
    wrap.threshold = 3;
    wrap.set_value = 0;
    ASSERT_TRUE(t.Insert(3, 2).ok());
    EXPECT_EQ(t.UpdateCounter(3, 1, wrap).value(), 3);
    EXPECT_EQ(t.UpdateCounter(3, 1, wrap).value(), 0);  // 4 > 3: wrapped.
    CounterOptions<int64_t> floor;
    floor.threshold = -2;
    floor.set_value = 10;
    EXPECT_EQ(t.UpdateCounter(3, -2, floor).value(), -2);
    EXPECT_EQ(t.UpdateCounter(3, -1, floor).value(), 10);  // -3 < -2: wrapped.
    // Overflow is an error, never undefined behaviour; with a threshold it wraps.
    ASSERT_TRUE(t.Insert(4, INT64_MAX).ok());
    absl::StatusOr<int64_t> over = t.UpdateCounter(4, 1);
    EXPECT_EQ(over.status().code(), absl::StatusCode::kOutOfRange);
    EXPECT_EQ(t.Get(4).value(), INT64_MAX);
    CounterOptions<int64_t> big;
    big.threshold = INT64_MAX;
    big.set_value = 0;
    EXPECT_EQ(t.UpdateCounter(4, 1, big).value(), 0);
    // A call that fails has no effect: a missing key whose default would overflow is not
    // inserted (ETS's update_counter/4 raises badarg and changes nothing).
    const size_t size = t.Size().value();
    CounterOptions<int64_t> at_max;
    at_max.default_value = INT64_MAX;
    EXPECT_EQ(t.UpdateCounter(5, 1, at_max).status().code(), absl::StatusCode::kOutOfRange);
    EXPECT_FALSE(t.Member(5).value()) << "a failed update_counter inserted its default";
    EXPECT_EQ(t.Size().value(), size);
  });
}

TEST_P(TableOpsTest, InfoAndMemory) {
  Run([&](Process& self) {
    TableOptions options;
    options.type = GetParam();
    options.name = "info_table";
    IntTable t = IntTable::New(options).value();
    TableInfo empty = t.Info().value();
    EXPECT_EQ(empty.name, "info_table");
    EXPECT_EQ(empty.type, GetParam());
    EXPECT_EQ(empty.access, Access::kProtected);
    EXPECT_EQ(empty.owner, self.self());
    EXPECT_FALSE(empty.heir.valid());
    EXPECT_EQ(empty.size, 0u);
    EXPECT_EQ(empty.key_type, "long");
    EXPECT_LE(empty.memory, 512u);
    for (int64_t k = 0; k < 10000; ++k) ASSERT_TRUE(t.Insert(k, k).ok());
    TableInfo full = t.Info().value();
    EXPECT_EQ(full.size, 10000u);
    EXPECT_GT(full.memory, empty.memory + 10000 * 16);
    ASSERT_TRUE(t.Clear().ok());
    EXPECT_LT(t.Info().value().memory, full.memory / 4);
  });
}

// Glance (what the manager's info() reads of each table): owner, heir and size of a table that
// never stored anything, of one that holds entries, and nothing of a deleted one.
TEST_P(TableOpsTest, GlanceAtOwnerHeirAndSize) {
  Run([&](Process& self) {
    IntTable t = NewTable();
    PidCopier pids;
    Pid owner, heir;
    size_t size = 99;
    bool kept = true;
    ASSERT_TRUE(
        table_internal::ManagerAccess::Glance(*t.any().core(), pids, &owner, &heir, &size, &kept));
    EXPECT_EQ(owner, self.self());
    EXPECT_FALSE(heir.valid());
    EXPECT_EQ(size, 0u);
    EXPECT_FALSE(kept);
    auto keeper = std::make_shared<TableKeeper>();
    ASSERT_TRUE(keeper->Keep(t.any(), nullptr).ok());
    ASSERT_TRUE(t.Insert({{1, 1}, {2, 2}, {2, 3}}).ok());
    ASSERT_TRUE(
        table_internal::ManagerAccess::Glance(*t.any().core(), pids, &owner, &heir, &size, &kept));
    EXPECT_EQ(size, IsBag(GetParam()) ? 3u : 2u);
    EXPECT_TRUE(kept);
    ASSERT_TRUE(keeper->Release(t.any()).ok());
    ASSERT_TRUE(t.Delete().ok());
    EXPECT_FALSE(
        table_internal::ManagerAccess::Glance(*t.any().core(), pids, &owner, &heir, &size, &kept));
    IntTable never_written = NewTable();
    ASSERT_TRUE(never_written.Delete().ok());
    EXPECT_FALSE(table_internal::ManagerAccess::Glance(*never_written.any().core(), pids, &owner,
                                                       &heir, &size, &kept));
  });
}

// A big table's hash arrays come from large blocks (huge-page mappings) and go back to the system
// when the table is deleted; the table's memory figure counts them. (Sets and bags: an ordered_set
// is a tree of small nodes.)
TEST_P(TableOpsTest, BigArraysLiveOnLargeBlocks) {
  if (GetParam() == TableType::kOrderedSet) GTEST_SKIP() << "no big arrays";
  Run([&](Process&) {
    const size_t before = large_block::BytesInUse();
    TableOptions options;
    options.type = GetParam();
    options.write_concurrency = false;  // One shard, so one big array.
    IntTable t = IntTable::New(options).value();
    constexpr int64_t kEntries = 300'000;  // A 4.5 MB array (sets; bags' slots are bigger).
    for (int64_t k = 0; k < kEntries; ++k) ASSERT_TRUE(t.Insert(k, k * 3).ok());
    const size_t held = large_block::BytesInUse() - before;
    if (large_block::kEnabled) {
      EXPECT_GE(held, large_block::kMinBytes);
      EXPECT_GE(t.Info().value().memory, held);
    } else {
      EXPECT_EQ(held, 0u);
    }
    for (int64_t k = 0; k < kEntries; k += 997) EXPECT_EQ(t.Get(k).value(), k * 3);
    ASSERT_TRUE(t.Delete().ok());
    EXPECT_EQ(large_block::BytesInUse(), before);
  });
}

TEST_P(TableOpsTest, StringKeysAndValues) {
  Run([&](Process&) {
    TableOptions options;
    options.type = GetParam();
    auto t = Table<std::string, std::string>::New(options).value();
    ASSERT_TRUE(t.Insert("alpha", "a").ok());
    ASSERT_TRUE(t.Insert("beta", "b").ok());
    EXPECT_EQ(t.Get("alpha").value(), "a");
    EXPECT_EQ(t.Lookup("gamma").value().size(), 0u);
    EXPECT_EQ(t.Info().value().key_type, "std::string");
  });
}

INSTANTIATE_TEST_SUITE_P(AllTypes, TableOpsTest,
                         ::testing::Values(TableType::kSet, TableType::kOrderedSet, TableType::kBag,
                                           TableType::kDuplicateBag),
                         [](const ::testing::TestParamInfo<TableType>& info) {
                           std::string name = ToString(info.param);
                           name.erase(std::remove(name.begin(), name.end(), '_'), name.end());
                           return name;
                         });

struct NoEquality {
  int x;
};

// A NaN key (alone or inside a pair) has no order: every operation given one answers
// InvalidArgument and changes nothing. An ordered_set holding one broke its tree's order, and a
// lookup of NaN answered with another key's value.
TEST_P(TableOpsTest, NaNKeysAreRefused) {
  Run([&](Process&) {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    TableOptions options;
    options.type = GetParam();
    auto t = Table<double, int64_t>::New(options).value();
    ASSERT_TRUE(t.Insert(1.5, 15).ok());
    auto refused = [](const absl::Status& st, const char* what) {
      EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << what << ": " << st;
      EXPECT_NE(st.message().find("NaN"), std::string::npos) << what << ": " << st;
    };
    refused(t.Insert(nan, 1), "insert");
    refused(t.Insert({{2.5, 25}, {nan, 1}}), "insert of many");
    refused(t.InsertNew(nan, 1).status(), "insert_new");
    refused(t.InsertNew({{2.5, 25}, {nan, 1}}).status(), "insert_new of many");
    refused(t.Get(nan).status(), "get");
    refused(t.Lookup(nan).status(), "lookup");
    refused(t.Member(nan).status(), "member");
    refused(t.LookupElement(nan, [](const int64_t& v) { return v; }).status(), "lookup_element");
    refused(t.Erase(nan).status(), "erase");
    refused(t.EraseObject(nan, 1).status(), "erase_object");
    refused(t.Take(nan).status(), "take");
    refused(t.Next(nan).status(), "next");
    refused(t.Prev(nan).status(), "prev");
    if (!IsBag(GetParam())) {
      refused(t.UpdateCounter(nan, 1, {.default_value = 0}).status(), "update_counter");
      refused(t.Update(
                   nan, [](int64_t& v) { v = 1; }, 0)
                  .status(),
              "update_element");
    }
    if (GetParam() == TableType::kOrderedSet) {
      refused(t.SelectRange(nan, 2.0).status(), "select_range");
      refused(t.SelectRange(0.0, nan).status(), "select_range");
    }
    EXPECT_EQ(t.Size().value(), 1u) << "nothing was written";
    EXPECT_EQ(t.Get(1.5).value(), std::optional<int64_t>(15));
    auto pairs = Table<std::pair<double, int>, int64_t>::New(options).value();
    refused(pairs.Insert({nan, 1}, 1), "insert of a pair holding a NaN");
    EXPECT_TRUE(pairs.Insert({0.5, 1}, 1).ok());
    // Inside any container a key type may be made of.
    auto vectors = Table<std::vector<double>, int64_t>::New(options).value();
    refused(vectors.Insert({1.0, nan}, 1), "insert of a vector holding a NaN");
    EXPECT_TRUE(vectors.Insert({1.0, 2.0}, 1).ok());
    auto optionals = Table<std::optional<float>, int64_t>::New(options).value();
    refused(optionals.Insert(std::numeric_limits<float>::quiet_NaN(), 1), "an optional NaN");
    EXPECT_TRUE(optionals.Insert(std::nullopt, 1).ok());
    auto variants = Table<std::variant<int, double>, int64_t>::New(options).value();
    refused(variants.Insert(nan, 1), "a variant holding a NaN");
    EXPECT_TRUE(variants.Insert(3, 1).ok());
    auto tuples = Table<std::tuple<int, std::array<double, 2>>, int64_t>::New(options).value();
    refused(tuples.Insert({1, {0.0, nan}}, 1), "a tuple holding an array holding a NaN");
    static_assert(!table_internal::MayHoldNaN<std::string>());
    static_assert(!table_internal::MayHoldNaN<std::pair<int64_t, std::string>>());
  });
}

TEST(TableCreateTest, ErrorsAreClear) {
  auto node = Node::Create({.schedulers = 1}).value();
  // Outside a process there is nobody to own a table.
  absl::StatusOr<IntTable> outside = IntTable::New();
  EXPECT_EQ(outside.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(outside.status().message().find("process"), std::string::npos);
  RunInProcess(*node, [](Process&) {
    TableOptions named;
    named.name = "dup";
    IntTable first = IntTable::New(named).value();
    absl::StatusOr<IntTable> second = IntTable::New(named);
    EXPECT_EQ(second.status().code(), absl::StatusCode::kAlreadyExists);
    EXPECT_NE(second.status().message().find("dup"), std::string::npos);
    TableOptions bag;
    bag.type = TableType::kBag;
    absl::StatusOr<Table<int, NoEquality>> no_eq = Table<int, NoEquality>::New(bag);
    EXPECT_EQ(no_eq.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(no_eq.status().message().find("NoEquality"), std::string::npos) << no_eq.status();
    bag.type = TableType::kDuplicateBag;
    absl::StatusOr<Table<int, NoEquality>> dup_bag = Table<int, NoEquality>::New(bag);
    EXPECT_TRUE(dup_bag.ok());
    TableOptions bad;
    bad.type = static_cast<TableType>(42);
    EXPECT_EQ(IntTable::New(bad).status().code(), absl::StatusCode::kInvalidArgument);
    // A null handle answers, never crashes.
    IntTable null;
    EXPECT_EQ(null.Insert(1, 1).code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(null.Lookup(1).status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(AnyTable().Info().status().code(), absl::StatusCode::kFailedPrecondition);
  });
}

TEST(TableCreateTest, NamedTablesAndAttach) {
  auto node = Node::Create({.schedulers = 1}).value();
  RunInProcess(*node, [&](Process&) {
    TableOptions named;
    named.name = "scores";
    IntTable t = IntTable::New(named).value();
    ASSERT_TRUE(t.Insert(1, 2).ok());
    AnyTable any = FindTable(*node, "scores").value();
    EXPECT_EQ(any, t.any());
    EXPECT_EQ(any.ToString(), "table #" + std::to_string(any.id()) + " \"scores\"");
    EXPECT_EQ(IntTable::Find(*node, "scores").value().Get(1).value(), 2);
    absl::StatusOr<Table<std::string, int64_t>> wrong = Table<std::string, int64_t>::Attach(any);
    ASSERT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(wrong.status().message().find("Table<std::string, long>"), std::string::npos)
        << wrong.status();
    EXPECT_NE(wrong.status().message().find("<long, long>"), std::string::npos) << wrong.status();
    EXPECT_EQ(FindTable(*node, "nope").status().code(), absl::StatusCode::kNotFound);
    // Deleting frees the name.
    ASSERT_TRUE(t.Delete().ok());
    EXPECT_EQ(FindTable(*node, "scores").status().code(), absl::StatusCode::kNotFound);
    EXPECT_TRUE(IntTable::New(named).ok());
  });
}

}  // namespace
}  // namespace etsmgr
