// Access modes: every operation x private / protected / public x owner / other process / thread.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "etsmgr/process/internal/test_util.h"
#include "etsmgr/table/internal/test_owner.h"
#include "etsmgr/table/table.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

using IntTable = Table<int64_t, int64_t>;

enum class Caller { kOwner, kOtherProcess, kPlainThread };

// Runs every operation once; returns op name -> whether it was denied (PermissionDenied).
// Other failures are test failures. Delete is left out (it ends the table); see below.
std::map<std::string, bool> TryEveryOperation(IntTable t) {
  std::map<std::string, bool> denied;
  auto note = [&](const std::string& op, const absl::Status& st) {
    bool is_denied = st.code() == absl::StatusCode::kPermissionDenied;
    EXPECT_TRUE(st.ok() || is_denied) << op << ": " << st;
    if (is_denied) {
      EXPECT_NE(st.message().find(op), std::string::npos) << st;
      EXPECT_NE(st.message().find("denied"), std::string::npos) << st;
    }
    denied[op] = is_denied;
  };
  // Reads.
  note("lookup", t.Lookup(1).status());
  note("lookup", t.Get(1).status());
  note("member", t.Member(1).status());
  note("size", t.Size().status());
  note("size", t.any().Size().status());
  note("to_list", t.ToList().status());
  note("select", t.Select([](const int64_t&, const int64_t&) { return true; }).status());
  note("for_each", t.ForEach([](const int64_t&, const int64_t&) {}));
  std::function<int(int, const int64_t&, const int64_t&)> count =
      [](int acc, const int64_t&, const int64_t&) { return acc + 1; };
  note("fold", t.Fold<int>(0, count).status());
  note("first", t.First().status());
  note("last", t.Last().status());
  note("next", t.Next(1).status());
  note("prev", t.Prev(1).status());
  // Writes.
  note("insert", t.Insert(100, 100));
  note("insert", t.Insert({{101, 1}, {102, 2}}));
  note("insert_new", t.InsertNew(103, 3).status());
  note("erase", t.Erase(100).status());
  note("erase_object", t.EraseObject(101, 1).status());
  note("take", t.Take(102).status());
  note("update_counter", t.UpdateCounter(1, 1).status());
  note("clear", t.any().Clear());
  // Info is metadata: anyone may ask, whatever the mode.
  EXPECT_TRUE(t.Info().ok());
  return denied;
}

class AccessTest : public ::testing::TestWithParam<std::tuple<Access, Caller>> {};

TEST_P(AccessTest, EveryOperationFollowsTheMode) {
  auto [access, caller] = GetParam();
  auto node = Node::Create({.schedulers = 2}).value();
  TableOptions options;
  options.access = access;
  options.name = "guarded";
  std::map<std::string, bool> denied;
  OwnedTable owned;
  switch (caller) {
    case Caller::kOwner:
      RunInProcess(*node, [&](Process&) {
        IntTable t = IntTable::New(options).value();
        for (int64_t k = 0; k < 10; ++k) ASSERT_TRUE(t.Insert(k, k).ok());
        denied = TryEveryOperation(t);
      });
      break;
    case Caller::kOtherProcess:
      owned = SpawnOwner(*node, options, 10);
      RunInProcess(*node, [&](Process&) {
        denied = TryEveryOperation(IntTable::Attach(owned.table).value());
      });
      break;
    case Caller::kPlainThread:
      owned = SpawnOwner(*node, options, 10);
      denied = TryEveryOperation(IntTable::Attach(owned.table).value());
      break;
  }
  bool owner = caller == Caller::kOwner;
  bool may_read = owner || access != Access::kPrivate;
  bool may_write = owner || access == Access::kPublic;
  for (const char* op : {"lookup", "member", "size", "to_list", "select", "for_each", "fold",
                         "first", "last", "next", "prev"}) {
    EXPECT_EQ(denied.at(op), !may_read) << op;
  }
  for (const char* op :
       {"insert", "insert_new", "erase", "erase_object", "take", "update_counter", "clear"}) {
    EXPECT_EQ(denied.at(op), !may_write) << op;
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

std::string AccessTestName(const ::testing::TestParamInfo<std::tuple<Access, Caller>>& info) {
  const char* callers[] = {"Owner", "OtherProcess", "PlainThread"};
  std::string access = ToString(std::get<0>(info.param));
  access[0] = static_cast<char>(std::toupper(access[0]));
  return access + "_" + callers[static_cast<int>(std::get<1>(info.param))];
}

INSTANTIATE_TEST_SUITE_P(Modes, AccessTest,
                         ::testing::Combine(::testing::Values(Access::kPrivate, Access::kProtected,
                                                              Access::kPublic),
                                            ::testing::Values(Caller::kOwner, Caller::kOtherProcess,
                                                              Caller::kPlainThread)),
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
