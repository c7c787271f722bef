// The select family, ranges, element updates, rename and the node-wide listing, on each of the
// four table types (TableSelectTest) and under each access mode (TableSelectAccessTest).
#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "etsmgr/process/node.h"
#include "etsmgr/process/testing/test_util.h"
#include "etsmgr/table/table.h"
#include "etsmgr/table/testing/test_owner.h"
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

std::string TypeParamName(TableType type) {
  std::string name = ToString(type);
  name.erase(std::remove(name.begin(), name.end(), '_'), name.end());
  return name;
}

// Keys 0..99 with value 10k; bags also hold 10k + 1 under each key.
Entries Seed(TableType type) {
  Entries all;
  for (int64_t k = 0; k < 100; ++k) {
    all.emplace_back(k, 10 * k);
    if (IsBag(type)) all.emplace_back(k, 10 * k + 1);
  }
  return all;
}

// Every object of every chunk, following the continuation; checks each chunk's size.
Entries Drain(const IntTable& t, absl::StatusOr<IntTable::Chunk> chunk, size_t limit,
              size_t* chunks = nullptr) {
  Entries all;
  size_t n = 0;
  while (true) {
    EXPECT_TRUE(chunk.ok()) << chunk.status();
    if (!chunk.ok()) return all;
    EXPECT_LE(chunk->objects.size(), limit);
    if (!chunk->next.done()) {
      EXPECT_EQ(chunk->objects.size(), limit);  // Only the last is short.
    }
    all.insert(all.end(), chunk->objects.begin(), chunk->objects.end());
    ++n;
    if (chunk->next.done()) break;
    chunk = t.Select(std::move(chunk->next));
  }
  if (chunks != nullptr) *chunks = n;
  return all;
}

class TableSelectTest : public ::testing::TestWithParam<TableType> {
 protected:
  void SetUp() override { node_ = Node::Create({.schedulers = 1}).value(); }
  IntTable NewTable(std::string name = "") {
    TableOptions options;
    options.type = GetParam();
    options.name = std::move(name);
    IntTable t = IntTable::New(options).value();
    EXPECT_TRUE(t.Insert(Seed(GetParam())).ok());
    return t;
  }
  void Run(std::function<void(Process&)> fn) { RunInProcess(*node_, std::move(fn)); }
  std::unique_ptr<Node> node_;
};

TEST_P(TableSelectTest, SelectCount) {
  Run([&](Process&) {
    IntTable t = NewTable();
    auto even_keys = [](const int64_t& k, const int64_t&) { return k % 2 == 0; };
    EXPECT_EQ(t.SelectCount(even_keys).value(), IsBag(GetParam()) ? 100u : 50u);
    auto odd_values = [](const int64_t&, const int64_t& v) { return v % 2 == 1; };
    EXPECT_EQ(t.SelectCount(odd_values).value(), IsBag(GetParam()) ? 100u : 0u);
    int calls = 0;  // A mutable callable works, and sees every object once.
    EXPECT_EQ(t.SelectCount([calls](const int64_t&, const int64_t&) mutable {
                 return ++calls > 0;
               }).value(),
              Seed(GetParam()).size());
    EXPECT_EQ(t.Size().value(), Seed(GetParam()).size());  // Nothing removed.
  });
}

// A predicate that throws stops the call with its exception; a bag key's objects are all
// handled or none (no object lost or duplicated half-way). A null std::function accepts all.
TEST_P(TableSelectTest, ThrowingAndNullPredicates) {
  Run([&](Process&) {
    IntTable t = NewTable();
    const size_t size = t.Size().value();
    std::function<bool(const int64_t&, const int64_t&)> none;
    EXPECT_EQ(t.SelectCount(none).value(), size);
    std::vector<std::pair<int64_t, int64_t>> before = Sorted(t.ToList().value());
    int calls = 0;
    EXPECT_THROW((void)t.SelectDelete([&](const int64_t& k, const int64_t&) {
      if (++calls == 2) throw std::runtime_error("boom");
      return k < 0;  // Deletes nothing before the throw.
    }),
                 std::runtime_error);
    EXPECT_EQ(Sorted(t.ToList().value()), before);
    calls = 0;
    EXPECT_THROW(
        (void)t.SelectReplace([&](const int64_t&, const int64_t& v) -> std::optional<int64_t> {
          if (++calls == 2) throw std::runtime_error("boom");
          return v;  // The same value: nothing changes before the throw.
        }),
        std::runtime_error);
    EXPECT_EQ(Sorted(t.ToList().value()), before);
    if (IsBag(GetParam())) {
      // Both objects of a key judged, the second throws: the first must not be gone.
      IntTable b = NewTable();
      ASSERT_TRUE(b.Clear().ok());
      ASSERT_TRUE(b.Insert({{7, 1}, {7, 2}}).ok());
      EXPECT_THROW((void)b.SelectDelete([](const int64_t&, const int64_t& v) {
        if (v == 2) throw std::runtime_error("boom");
        return true;
      }),
                   std::runtime_error);
      EXPECT_EQ(b.SelectCount(none).value(), 2u);
      std::vector<int64_t> values = b.Lookup(7).value();
      std::sort(values.begin(), values.end());
      EXPECT_EQ(values, (std::vector<int64_t>{1, 2}));
      EXPECT_EQ(b.SelectDelete(none).value(), 2u);
      EXPECT_EQ(b.Size().value(), 0u);
      ASSERT_TRUE(b.Delete().ok());
    }
    ASSERT_TRUE(t.Delete().ok());
  });
}

TEST_P(TableSelectTest, SelectDelete) {
  Run([&](Process&) {
    IntTable t = NewTable();
    size_t gone =
        t.SelectDelete([](const int64_t& k, const int64_t&) { return k % 2 == 0; }).value();
    Entries want;
    for (const auto& [k, v] : Seed(GetParam())) {
      if (k % 2 == 1) want.emplace_back(k, v);
    }
    EXPECT_EQ(Sorted(t.ToList().value()), Sorted(want));
    EXPECT_EQ(gone, Seed(GetParam()).size() - want.size());
    EXPECT_EQ(t.Size().value(), want.size());
    EXPECT_FALSE(t.Member(2).value());
    if (IsBag(GetParam())) {
      // Part of a key's objects: the key stays with the rest.
      EXPECT_EQ(
          t.SelectDelete([](const int64_t&, const int64_t& v) { return v % 10 == 1; }).value(),
          50u);
      EXPECT_EQ(t.Lookup(1).value(), std::vector<int64_t>({10}));
    }
    EXPECT_EQ(t.SelectDelete([](const int64_t&, const int64_t&) { return true; }).value(), 50u);
    EXPECT_EQ(t.Size().value(), 0u);
    EXPECT_EQ(t.SelectDelete([](const int64_t&, const int64_t&) { return true; }).value(), 0u);
    EXPECT_TRUE(t.Insert(7, 7).ok());  // Still usable.
    EXPECT_EQ(t.Get(7).value(), 7);
  });
}

TEST_P(TableSelectTest, SelectReplace) {
  Run([&](Process&) {
    IntTable t = NewTable();
    size_t replaced = t.SelectReplace([](const int64_t& k, const int64_t& v) {
                         return k < 10 ? std::optional<int64_t>(v + 1000) : std::nullopt;
                       }).value();
    EXPECT_EQ(replaced, IsBag(GetParam()) ? 20u : 10u);
    EXPECT_EQ(t.Size().value(), Seed(GetParam()).size());
    std::vector<int64_t> three = t.Lookup(3).value();
    std::sort(three.begin(), three.end());
    if (IsBag(GetParam())) {
      EXPECT_EQ(three, std::vector<int64_t>({1030, 1031}));
    } else {
      EXPECT_EQ(three, std::vector<int64_t>({1030}));
    }
    EXPECT_EQ(t.Get(50).value(), 500);  // Untouched.
    if (IsBag(GetParam())) {
      // Make both objects of key 5 identical: a bag keeps one, a duplicate_bag both.
      EXPECT_EQ(t.SelectReplace([](const int64_t& k, const int64_t&) {
                   return k == 5 ? std::optional<int64_t>(-5) : std::nullopt;
                 }).value(),
                2u);
      EXPECT_EQ(t.Lookup(5).value(), GetParam() == TableType::kBag
                                         ? std::vector<int64_t>({-5})
                                         : std::vector<int64_t>({-5, -5}));
      EXPECT_EQ(t.Size().value(), Seed(GetParam()).size() - (GetParam() == TableType::kBag));
    }
  });
}

TEST_P(TableSelectTest, ChunkedSelectSeesEveryMatchOnce) {
  Run([&](Process&) {
    IntTable t = NewTable();
    auto even = [](const int64_t& k, const int64_t&) { return k % 2 == 0; };
    Entries want;
    for (const auto& e : Seed(GetParam()))
      if (e.first % 2 == 0) want.push_back(e);
    for (size_t limit : {1u, 7u, 50u, 1000u}) {
      size_t chunks = 0;
      Entries got = Drain(t, t.Select(even, limit), limit, &chunks);
      if (GetParam() == TableType::kOrderedSet) {
        EXPECT_EQ(got, want) << "limit " << limit;  // Key order.
      } else {
        EXPECT_EQ(Sorted(got), Sorted(want)) << "limit " << limit;
      }
      EXPECT_GE(chunks, (want.size() + limit - 1) / limit);
      Entries reverse = Drain(t, t.SelectReverse(even, limit), limit);
      if (GetParam() == TableType::kOrderedSet) {
        Entries descending(want.rbegin(), want.rend());
        EXPECT_EQ(reverse, descending) << "limit " << limit;
      } else {
        EXPECT_EQ(Sorted(reverse), Sorted(want)) << "limit " << limit;
      }
    }
    // No predicate: everything. Nothing matching: one empty, final chunk.
    EXPECT_EQ(Sorted(Drain(t, t.Select(nullptr, 9), 9)), Sorted(Seed(GetParam())));
    absl::StatusOr<IntTable::Chunk> none =
        t.Select([](const int64_t&, const int64_t&) { return false; }, 5);
    ASSERT_TRUE(none.ok());
    EXPECT_TRUE(none->objects.empty());
    EXPECT_TRUE(none->next.done());
    // A done continuation yields an empty, done chunk.
    absl::StatusOr<IntTable::Chunk> after = t.Select(std::move(none->next));
    ASSERT_TRUE(after.ok());
    EXPECT_TRUE(after->objects.empty());
    EXPECT_TRUE(after->next.done());
    // Errors: a zero limit; another table's continuation.
    EXPECT_EQ(t.Select(even, 0).status().code(), absl::StatusCode::kInvalidArgument);
    IntTable other = NewTable();
    absl::StatusOr<IntTable::Chunk> first = other.Select(even, 3);
    ASSERT_TRUE(first.ok());
    absl::StatusOr<IntTable::Chunk> wrong = t.Select(std::move(first->next));
    EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument) << wrong.status();
  });
}

// A continuation survives deletes and inserts between chunks: never an object twice, every object
// present throughout exactly once.
TEST_P(TableSelectTest, ContinuationAcrossWrites) {
  Run([&](Process&) {
    IntTable t = NewTable();
    absl::StatusOr<IntTable::Chunk> chunk = t.Select(nullptr, 10);
    Entries got;
    int64_t next_new = 1000;
    size_t round = 0;
    while (true) {
      ASSERT_TRUE(chunk.ok()) << chunk.status();
      got.insert(got.end(), chunk->objects.begin(), chunk->objects.end());
      if (chunk->next.done()) break;
      // Keys 0..49 stay; 50..99 go one per round; for 20 rounds new keys arrive (and grow the
      // shards; an ordered_set scan finds those above its position).
      ASSERT_TRUE(t.Erase(50 + static_cast<int64_t>(round % 50)).ok());
      if (round++ < 20) {
        for (int i = 0; i < 40; ++i, ++next_new) ASSERT_TRUE(t.Insert(next_new, 0).ok());
      }
      chunk = t.Select(std::move(chunk->next));
    }
    Entries sorted = Sorted(got);
    EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end()) << "a repeat";
    for (const auto& e : Seed(GetParam())) {
      if (e.first < 50) {
        EXPECT_TRUE(std::binary_search(sorted.begin(), sorted.end(), e)) << e.first;
      }
    }
  });
}

TEST_P(TableSelectTest, SelectRange) {
  Run([&](Process&) {
    IntTable t = NewTable();
    absl::StatusOr<IntTable::Chunk> r = t.SelectRange(10, 20);
    if (GetParam() != TableType::kOrderedSet) {
      EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
      EXPECT_NE(r.status().message().find("ordered_set"), std::string::npos);
      return;
    }
    auto keys = [](const Entries& v) {
      std::vector<int64_t> out;
      for (const auto& e : v) out.push_back(e.first);
      return out;
    };
    auto range = [&](KeyRange<int64_t> range, size_t limit = IntTable::kNoLimit) {
      return keys(Drain(t, t.SelectRange(std::move(range), nullptr, limit), limit));
    };
    std::vector<int64_t> ten_to_twenty;
    for (int64_t k = 10; k <= 20; ++k) ten_to_twenty.push_back(k);
    EXPECT_EQ(range(KeyRange<int64_t>::Closed(10, 20)), ten_to_twenty);
    EXPECT_EQ(range(KeyRange<int64_t>::Closed(10, 20), 3), ten_to_twenty);
    EXPECT_EQ(range(KeyRange<int64_t>::HalfOpen(10, 21), 4), ten_to_twenty);
    EXPECT_EQ(range(KeyRange<int64_t>::HalfOpen(10, 10)), std::vector<int64_t>());
    EXPECT_EQ(range(KeyRange<int64_t>::Closed(10, 10)), std::vector<int64_t>({10}));
    EXPECT_EQ(range(KeyRange<int64_t>::Closed(20, 10)), std::vector<int64_t>());
    EXPECT_EQ(range(KeyRange<int64_t>::AtLeast(97)), std::vector<int64_t>({97, 98, 99}));
    EXPECT_EQ(range(KeyRange<int64_t>::GreaterThan(97)), std::vector<int64_t>({98, 99}));
    EXPECT_EQ(range(KeyRange<int64_t>::AtMost(2), 1), std::vector<int64_t>({0, 1, 2}));
    EXPECT_EQ(range(KeyRange<int64_t>::LessThan(2)), std::vector<int64_t>({0, 1}));
    EXPECT_EQ(range(KeyRange<int64_t>::All(), 7).size(), 100u);
    EXPECT_EQ(range(KeyRange<int64_t>::Closed(-50, 1000)).size(), 100u);  // Bounds need no keys.
    // With a predicate, a limit and the continuation.
    Entries odd = Drain(t,
                        t.SelectRange(
                            5, 15, [](const int64_t& k, const int64_t&) { return k % 2 == 1; }, 2),
                        2);
    EXPECT_EQ(keys(odd), std::vector<int64_t>({5, 7, 9, 11, 13, 15}));
    EXPECT_EQ(odd.front().second, 50);
  });
}

TEST_P(TableSelectTest, UpdateAndLookupElement) {
  Run([&](Process&) {
    IntTable t = NewTable();
    int64_t seen = -1;
    absl::StatusOr<bool> updated = t.Update(4, [&](int64_t& v) {
      v += 1;
      seen = v;
    });
    if (IsBag(GetParam())) {
      EXPECT_EQ(updated.status().code(), absl::StatusCode::kInvalidArgument) << updated.status();
      EXPECT_EQ(t.Update(
                     4, [](int64_t&) {}, 0)
                    .status()
                    .code(),
                absl::StatusCode::kInvalidArgument);
      std::vector<int64_t> halves =
          t.LookupElement(4, [](const int64_t& v) { return v / 2; }).value();
      std::sort(halves.begin(), halves.end());
      EXPECT_EQ(halves, std::vector<int64_t>({20, 20}));
      return;
    }
    EXPECT_TRUE(updated.value());
    EXPECT_EQ(seen, 41);
    EXPECT_EQ(t.Get(4).value(), 41);
    EXPECT_FALSE(t.Update(1000, [](int64_t& v) { v = 1; }).value());  // Absent: nothing.
    EXPECT_FALSE(t.Member(1000).value());
    EXPECT_TRUE(t.Update(
                     1000, [](int64_t& v) { v *= 3; }, 7)
                    .value());  // update_element/4.
    EXPECT_EQ(t.Get(1000).value(), 21);
    EXPECT_EQ(t.Size().value(), 101u);
    EXPECT_EQ(t.LookupElement(4, [](const int64_t& v) { return std::to_string(v); }).value(),
              std::vector<std::string>({"41"}));
    EXPECT_TRUE(t.LookupElement(5000, [](const int64_t& v) { return v; }).value().empty());
  });
}

// A projection copies only what it returns: one field of a large value.
TEST_P(TableSelectTest, LookupElementOfAStruct) {
  Run([&](Process&) {
    struct Big {
      int64_t id;
      std::vector<int64_t> payload;
      bool operator==(const Big&) const = default;
    };
    TableOptions options;
    options.type = GetParam();
    auto t = Table<std::string, Big>::New(options).value();
    ASSERT_TRUE(t.Insert("a", Big{7, std::vector<int64_t>(1000, 1)}).ok());
    EXPECT_EQ(t.LookupElement("a", [](const Big& b) { return b.id; }).value(),
              std::vector<int64_t>({7}));
    if (!IsBag(GetParam())) {
      EXPECT_TRUE(t.Update("a", [](Big& b) { b.payload.push_back(2); }).value());
      EXPECT_EQ(t.LookupElement("a", [](const Big& b) { return b.payload.size(); }).value(),
                std::vector<size_t>({1001u}));
    }
  });
}

TEST_P(TableSelectTest, Rename) {
  Run([&](Process&) {
    IntTable t = NewTable("before");
    ASSERT_TRUE(t.Rename("after").ok());
    EXPECT_EQ(FindTable(*node_, "before").status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(FindTable(*node_, "after").value(), t.any());
    EXPECT_EQ(t.Info().value().name, "after");
    EXPECT_NE(t.any().ToString().find("\"after\""), std::string::npos);
    EXPECT_TRUE(t.Rename("after").ok());  // Its own name: nothing to do.
    IntTable other = NewTable("taken");
    absl::Status clash = t.Rename("taken");
    EXPECT_EQ(clash.code(), absl::StatusCode::kAlreadyExists) << clash;
    EXPECT_NE(clash.message().find("\"taken\""), std::string::npos) << clash;
    EXPECT_EQ(FindTable(*node_, "after").value(), t.any());  // Unchanged by the failure.
    EXPECT_EQ(t.Rename("").code(), absl::StatusCode::kInvalidArgument);
    // An unnamed table gets a name; a deleted one answers NotFound and frees its name.
    IntTable unnamed = NewTable();
    ASSERT_TRUE(unnamed.Rename("now_named").ok());
    EXPECT_EQ(FindTable(*node_, "now_named").value(), unnamed.any());
    ASSERT_TRUE(unnamed.Delete().ok());
    EXPECT_EQ(unnamed.Rename("again").code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(FindTable(*node_, "now_named").status().code(), absl::StatusCode::kNotFound);
  });
}

TEST_P(TableSelectTest, DeletedTableAnswersNotFound) {
  Run([&](Process&) {
    IntTable t = NewTable();
    absl::StatusOr<IntTable::Chunk> chunk = t.Select(nullptr, 3);
    ASSERT_TRUE(chunk.ok());
    ASSERT_TRUE(t.Delete().ok());
    auto all = [](const int64_t&, const int64_t&) { return true; };
    const auto kNotFound = absl::StatusCode::kNotFound;
    EXPECT_EQ(t.SelectCount(all).status().code(), kNotFound);
    EXPECT_EQ(t.SelectDelete(all).status().code(), kNotFound);
    EXPECT_EQ(t.SelectReplace([](const int64_t&, const int64_t&) { return std::nullopt; })
                  .status()
                  .code(),
              kNotFound);
    EXPECT_EQ(t.Select(all, 3).status().code(), kNotFound);
    EXPECT_EQ(t.Select(std::move(chunk->next)).status().code(), kNotFound);
    EXPECT_EQ(t.Update(
                   1, [](int64_t&) {}, 0)
                  .status()
                  .code(),
              kNotFound);
    EXPECT_EQ(t.LookupElement(1, [](const int64_t& v) { return v; }).status().code(), kNotFound);
  });
}

INSTANTIATE_TEST_SUITE_P(AllTypes, TableSelectTest,
                         ::testing::Values(TableType::kSet, TableType::kOrderedSet, TableType::kBag,
                                           TableType::kDuplicateBag),
                         [](const ::testing::TestParamInfo<TableType>& info) {
                           return TypeParamName(info.param);
                         });

// Every new operation from a process that does not own the table, under each access mode: reads
// need protected or public, writes need public; the owner may do everything.
class TableSelectAccessTest : public ::testing::TestWithParam<std::tuple<TableType, Access>> {};

TEST_P(TableSelectAccessTest, NonOwnerPerAccessMode) {
  const auto [type, access] = GetParam();
  auto node = Node::Create({.schedulers = 1}).value();
  TableOptions options;
  options.type = type;
  options.access = access;
  OwnedTable owned = SpawnOwner(*node, options, /*seed=*/20);
  IntTable t = IntTable::Attach(owned.table).value();
  const bool may_read = access != Access::kPrivate;
  const bool may_write = access == Access::kPublic;
  const bool ordered = type == TableType::kOrderedSet;
  RunInProcess(*node, [&](Process&) {
    auto expect = [](const absl::Status& st, bool allowed, const char* op) {
      if (allowed) {
        EXPECT_NE(st.code(), absl::StatusCode::kPermissionDenied) << op << ": " << st;
      } else {
        EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied) << op << ": " << st;
        EXPECT_NE(st.message().find(op), std::string::npos) << st;
      }
    };
    auto odd = [](const int64_t& k, const int64_t&) { return k % 2 == 1; };
    expect(t.SelectCount(odd).status(), may_read, "select_count");
    expect(t.Select(odd, 5).status(), may_read, "select");
    expect(t.SelectReverse(odd, 5).status(), may_read, "select_reverse");
    absl::StatusOr<IntTable::Chunk> range = t.SelectRange(0, 10);
    expect(range.status(), may_read, "select_range");
    if (may_read && !ordered) {
      EXPECT_EQ(range.status().code(), absl::StatusCode::kInvalidArgument);
    }
    expect(t.LookupElement(1, [](const int64_t& v) { return v; }).status(), may_read,
           "lookup_element");
    expect(t.Update(1, [](int64_t& v) { ++v; }).status(), may_write, "update");
    expect(t.SelectReplace([](const int64_t& k, const int64_t& v) {
              return k == 2 ? std::optional<int64_t>(v + 100) : std::nullopt;
            }).status(),
           may_write, "select_replace");
    expect(t.SelectDelete(odd).status(), may_write, "select_delete");
    expect(t.Rename("renamed_by_other"), may_write, "rename");
    if (may_read) {  // The writes took effect exactly when allowed.
      EXPECT_EQ(t.SelectCount(odd).value(), may_write ? 0u : 10u);
      EXPECT_EQ(t.Get(2).value(), may_write ? 102 : 2);
      EXPECT_EQ(t.Get(1).value(), may_write ? std::nullopt : std::optional<int64_t>(1));
    }
  });
  Send(owned.owner, StopOwner{});
}

INSTANTIATE_TEST_SUITE_P(
    TypesAndModes, TableSelectAccessTest,
    ::testing::Combine(::testing::Values(TableType::kSet, TableType::kOrderedSet, TableType::kBag,
                                         TableType::kDuplicateBag),
                       ::testing::Values(Access::kPrivate, Access::kProtected, Access::kPublic)),
    [](const ::testing::TestParamInfo<std::tuple<TableType, Access>>& info) {
      return TypeParamName(std::get<0>(info.param)) + "_" + ToString(std::get<1>(info.param));
    });

// AllTables / AllTablesInfo: every live table of the node, named or not, with its metadata;
// deleted tables leave the list; another node's tables are not listed.
TEST(TableListingTest, ListsEveryLiveTableOfTheNode) {
  auto node = Node::Create({.schedulers = 1}).value();
  auto other_node = Node::Create({.schedulers = 1}).value();
  OwnedTable elsewhere = SpawnOwner(*other_node, {}, /*seed=*/1);
  Pid lister;
  RunInProcess(*node, [&](Process& self) {
    lister = self.self();
    const size_t before = AllTables(*node).size();
    TableOptions named;
    named.name = "listed";
    named.type = TableType::kOrderedSet;
    named.access = Access::kPublic;
    named.heir = self.self();  // Any pid will do for the listing.
    IntTable a = IntTable::New(named).value();
    IntTable b = IntTable::New().value();
    auto c = Table<std::string, std::string>::New().value();
    ASSERT_TRUE(a.Insert({{1, 1}, {2, 2}}).ok());
    ASSERT_TRUE(c.Insert("k", "v").ok());
    std::vector<AnyTable> all = AllTables(*node);
    ASSERT_EQ(all.size(), before + 3);
    EXPECT_EQ(std::count(all.begin(), all.end(), elsewhere.table), 0);
    EXPECT_EQ(all[before], a.any());  // Creation order.
    EXPECT_EQ(all[before + 1], b.any());
    EXPECT_EQ(all[before + 2], c.any());
    std::vector<TableInfo> infos = AllTablesInfo(*node);
    ASSERT_EQ(infos.size(), before + 3);
    const TableInfo& ia = infos[before];
    EXPECT_EQ(ia.name, "listed");
    EXPECT_EQ(ia.type, TableType::kOrderedSet);
    EXPECT_EQ(ia.access, Access::kPublic);
    EXPECT_EQ(ia.owner, self.self());
    EXPECT_EQ(ia.heir, self.self());
    EXPECT_EQ(ia.size, 2u);
    EXPECT_EQ(ia.memory, a.Info().value().memory);
    EXPECT_EQ(infos[before + 1].name, "");
    EXPECT_EQ(infos[before + 1].size, 0u);
    EXPECT_EQ(infos[before + 2].key_type, "std::string");
    ASSERT_TRUE(b.Delete().ok());
    all = AllTables(*node);
    EXPECT_EQ(all.size(), before + 2);
    EXPECT_EQ(std::count(all.begin(), all.end(), b.any()), 0);
  });
  // The creating process exited, its own heir: its tables went with it.
  AwaitDeath(*node, lister);
  EXPECT_TRUE(AllTables(*node).empty());
  EXPECT_EQ(AllTables(*other_node).size(), 1u);
  Send(elsewhere.owner, StopOwner{});
}

}  // namespace
}  // namespace etsmgr
