// Access modes: every operation x private / protected / public x owner / other process / thread.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "etsmgr/process/testing/test_util.h"
#include "etsmgr/table/table.h"
#include "etsmgr/table/testing/test_owner.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

using IntTable = Table<int64_t, int64_t>;

enum class Caller { kOwner, kOtherProcess, kPlainThread };

enum class Kind { kRead, kWrite };

struct Outcome {
  Kind kind;
  bool denied;
};

// Runs every operation once, each code path under its own key (Get's inline fast path and its
// call, UpdateCounter's fast path and its threshold path, Table's and AnyTable's Size and Clear,
// single and batch Insert); returns key -> whether it was denied (PermissionDenied). `what` is the
// operation name the denial must carry. Other failures are test failures. Delete is left out (it
// ends the table); see below.
std::map<std::string, Outcome> TryEveryOperation(IntTable t, TableType type) {
  std::map<std::string, Outcome> outcomes;
  auto note = [&](const std::string& key, Kind kind, const std::string& what,
                  const absl::Status& st) {
    bool is_denied = st.code() == absl::StatusCode::kPermissionDenied;
    EXPECT_TRUE(st.ok() || is_denied) << key << ": " << st;
    if (is_denied) {
      EXPECT_NE(st.message().find(what), std::string::npos) << st;
      EXPECT_NE(st.message().find("denied"), std::string::npos) << st;
    }
    EXPECT_TRUE(outcomes.emplace(key, Outcome{kind, is_denied}).second)
        << "key noted twice: " << key;
  };
  auto read = [&](const std::string& key, const std::string& what, const absl::Status& st) {
    note(key, Kind::kRead, what, st);
  };
  auto write = [&](const std::string& key, const std::string& what, const absl::Status& st) {
    note(key, Kind::kWrite, what, st);
  };
  // A bag has no counters: UpdateCounter checks access first, then answers InvalidArgument.
  auto counter = [&](const absl::Status& st) {
    if (type == TableType::kDuplicateBag && st.code() == absl::StatusCode::kInvalidArgument) {
      return absl::OkStatus();
    }
    return st;
  };
  // Reads.
  read("lookup", "lookup", t.Lookup(1).status());
  read("get", "lookup", t.Get(1).status());
  read("member", "member", t.Member(1).status());
  read("size", "size", t.Size().status());
  read("any_size", "size", t.any().Size().status());
  read("to_list", "to_list", t.ToList().status());
  read("select", "select", t.Select([](const int64_t&, const int64_t&) { return true; }).status());
  read("for_each", "for_each", t.ForEach([](const int64_t&, const int64_t&) {}));
  std::function<int(int, const int64_t&, const int64_t&)> count =
      [](int acc, const int64_t&, const int64_t&) { return acc + 1; };
  read("fold", "fold", t.Fold<int>(0, count).status());
  read("first", "first", t.First().status());
  read("last", "last", t.Last().status());
  read("next", "next", t.Next(1).status());
  read("prev", "prev", t.Prev(1).status());
  // Writes.
  write("insert", "insert", t.Insert(100, 100));
  write("insert_batch", "insert", t.Insert({{101, 1}, {102, 2}}));
  write("insert_new", "insert_new", t.InsertNew(103, 3).status());
  write("erase", "erase", t.Erase(100).status());
  write("erase_object", "erase_object", t.EraseObject(101, 1).status());
  write("take", "take", t.Take(102).status());
  write("update_counter", "update_counter", counter(t.UpdateCounter(1, 1).status()));
  CounterOptions<int64_t> wrap;
  wrap.threshold = 1000;
  write("update_counter_threshold", "update_counter",
        counter(t.UpdateCounter(2, 1, wrap).status()));
  write("clear", "clear", t.Clear());
  write("any_clear", "clear", t.any().Clear());
  // Info is metadata: anyone may ask, whatever the mode.
  EXPECT_TRUE(t.Info().ok());
  return outcomes;
}

class AccessTest : public ::testing::TestWithParam<std::tuple<Access, Caller, TableType>> {};

TEST_P(AccessTest, EveryOperationFollowsTheMode) {
  auto [access, caller, type] = GetParam();
  auto node = Node::Create({.schedulers = 2}).value();
  TableOptions options;
  options.access = access;
  options.type = type;
  options.name = "guarded";
  std::map<std::string, Outcome> outcomes;
  OwnedTable owned;
  switch (caller) {
    case Caller::kOwner:
      RunInProcess(*node, [&](Process&) {
        IntTable t = IntTable::New(options).value();
        for (int64_t k = 0; k < 10; ++k) ASSERT_TRUE(t.Insert(k, k).ok());
        outcomes = TryEveryOperation(t, options.type);
      });
      break;
    case Caller::kOtherProcess:
      owned = SpawnOwner(*node, options, 10);
      RunInProcess(*node, [&](Process&) {
        outcomes = TryEveryOperation(IntTable::Attach(owned.table).value(), options.type);
      });
      break;
    case Caller::kPlainThread:
      owned = SpawnOwner(*node, options, 10);
      outcomes = TryEveryOperation(IntTable::Attach(owned.table).value(), type);
      break;
  }
  bool owner = caller == Caller::kOwner;
  bool may_read = owner || access != Access::kPrivate;
  bool may_write = owner || access == Access::kPublic;
  for (const auto& [key, outcome] : outcomes) {
    bool allowed = outcome.kind == Kind::kRead ? may_read : may_write;
    EXPECT_EQ(outcome.denied, !allowed) << key;
  }
  // Delete: a write.
  if (!owner) {
    absl::Status del = owned.table.Delete();
    if (may_write) {
      EXPECT_TRUE(del.ok()) << del;
      EXPECT_FALSE(owned.table.alive());
    } else {
      EXPECT_EQ(del.code(), absl::StatusCode::kPermissionDenied) << del;
      EXPECT_TRUE(owned.table.alive());
    }
    Send(owned.owner, StopOwner{});
  }
}

std::string AccessTestName(
    const ::testing::TestParamInfo<std::tuple<Access, Caller, TableType>>& info) {
  const char* callers[] = {"Owner", "OtherProcess", "PlainThread"};
  std::string access = ToString(std::get<0>(info.param));
  access[0] = static_cast<char>(std::toupper(access[0]));
  std::string type;
  for (char c : std::string(ToString(std::get<2>(info.param)))) {
    if (c != '_') type += c;
  }
  type[0] = static_cast<char>(std::toupper(type[0]));
  return access + "_" + callers[static_cast<int>(std::get<1>(info.param))] + "_" + type;
}

INSTANTIATE_TEST_SUITE_P(
    Modes, AccessTest,
    ::testing::Combine(
        ::testing::Values(Access::kPrivate, Access::kProtected, Access::kPublic),
        ::testing::Values(Caller::kOwner, Caller::kOtherProcess, Caller::kPlainThread),
        // Set and ordered_set take Get's and UpdateCounter's
        // inline fast paths (and set Insert's), a bag the calls.
        ::testing::Values(TableType::kSet, TableType::kOrderedSet, TableType::kDuplicateBag)),
    AccessTestName);

TEST(AccessMessageTest, NamesTableCallerAndOwner) {
  auto node = Node::Create({.schedulers = 1}).value();
  TableOptions options;
  options.name = "ledger";
  OwnedTable owned = SpawnOwner(*node, options);
  IntTable t = IntTable::Attach(owned.table).value();
  absl::Status st = t.Insert(1, 1);
  ASSERT_EQ(st.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(st.message().find("\"ledger\""), std::string::npos) << st;
  EXPECT_NE(st.message().find("protected"), std::string::npos) << st;
  EXPECT_NE(st.message().find(owned.owner.ToString()), std::string::npos) << st;
  EXPECT_NE(st.message().find("outside any process"), std::string::npos) << st;
  Send(owned.owner, StopOwner{});
}

}  // namespace
}  // namespace etsmgr
