// The directory alone: the decision functions over every case, the client bookkeeping, and the
// info() snapshot. No manager runs here; a node only mints Pids and owns tables.
#include "etsmgr/manager/internal/directory.h"

#include <algorithm>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "etsmgr/base/error_atom.h"
#include "etsmgr/manager/internal/instance.h"
#include "etsmgr/process/testing/test_util.h"
#include "etsmgr/table/table.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

namespace etsmgr::manager_internal {
namespace {

using IntTable = Table<int64_t, int64_t>;

std::vector<std::string> Sorted(const ClientNames& names) {
  std::vector<std::string> all;
  names.ForEach([&](const std::string& name) { all.push_back(name); });
  std::sort(all.begin(), all.end());
  return all;
}

TEST(ClientNamesTest, FewAndManyBehaveAsOneSet) {
  ClientNames names;
  EXPECT_TRUE(names.empty());
  names.Insert("a");
  names.Insert("a");  // Idempotent.
  names.Insert("b");
  EXPECT_EQ(names.size(), 2u);
  names.Erase("a");
  names.Erase("zzz");  // Not there: no effect.
  EXPECT_EQ(Sorted(names), std::vector<std::string>{"b"});
  // Past the inline few: every name is kept, once.
  std::vector<std::string> expected = {"b"};
  for (int i = 0; i < 100; ++i) {
    names.Insert(absl::StrCat("t", i));
    names.Insert(absl::StrCat("t", i));
    expected.push_back(absl::StrCat("t", i));
  }
  names.Insert("b");
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(Sorted(names), expected);
  for (int i = 0; i < 100; ++i) names.Erase(absl::StrCat("t", i));
  names.Erase("b");
  EXPECT_TRUE(names.empty());
  EXPECT_EQ(names.size(), 0u);
}

// Pids of idle processes, a dead one, and a table owned by a process of the fixture.
class DecideTest : public ::testing::Test {
 protected:
  void SetUp() override {
    node_ = Node::Create({.schedulers = 1}).value();
    for (Pid* p : {&caller_, &other_, &dead_}) *p = node_->Spawn(Idle).value();
    SendExit(dead_, ExitReason::Kill());
    AwaitDeath(*node_, dead_);
    RunInProcess(*node_, [&](Process&) {
      table_ = IntTable::New().value().any();  // Deleted when this process returns.
    });
  }
  void TearDown() override {
    for (const Pid& p : {caller_, other_}) SendExit(p, ExitReason::Kill());
  }
  static Task<void> Idle(Process& self) { co_await self.Receive<int>(); }

  Entry MakeEntry(const Pid& client) {
    return Entry{table_, client, std::make_shared<const std::string>("t")};
  }
  static TableView Alive(const Pid& owner, bool held = false) {
    TableView v;
    v.alive = true;
    v.owner = owner;
    v.held = held;
    return v;
  }

  std::unique_ptr<Node> node_;
  Pid caller_, other_, dead_;
  AnyTable table_;  // Deleted once its owner returned; only its identity and types matter here.
};

TEST_F(DecideTest, NewTable) {
  const auto& k = typeid(int64_t);
  const auto& v = typeid(int64_t);
  // No entry, or a dead table: create.
  EXPECT_EQ(DecideNewTable("t", k, v, nullptr, TableView(), caller_).action, Action::kCreate);
  Entry e = MakeEntry(other_);
  EXPECT_EQ(DecideNewTable("t", k, v, &e, TableView(), caller_).action, Action::kCreate);
  // Other types: InvalidArgument naming both.
  Decision types = DecideNewTable("t", typeid(std::string), v, &e, Alive(other_), caller_);
  EXPECT_EQ(types.action, Action::kConflict);
  EXPECT_EQ(types.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(types.status.message().find("<long, long>"), std::string::npos) << types.status;
  EXPECT_NE(types.status.message().find("std::string"), std::string::npos) << types.status;
  // Ours already: confirm.
  EXPECT_EQ(DecideNewTable("t", k, v, &e, Alive(caller_), caller_).action, Action::kConfirm);
  // Held by the keeper, no client or a dead one: claim.
  Entry none = MakeEntry(Pid());
  EXPECT_EQ(DecideNewTable("t", k, v, &none, Alive(Pid(), true), caller_).action, Action::kClaim);
  Entry gone = MakeEntry(dead_);
  EXPECT_EQ(DecideNewTable("t", k, v, &gone, Alive(Pid(), true), caller_).action, Action::kClaim);
  // Its owner is exiting (the keeper has it next): claimed from it directly.
  TableView exiting = Alive(other_);
  exiting.owner_exiting = true;
  EXPECT_EQ(DecideNewTable("t", k, v, &none, exiting, caller_).action, Action::kClaim);
  // Held for another live client: table_exists naming it.
  Decision held = DecideNewTable("t", k, v, &e, Alive(Pid(), true), caller_);
  EXPECT_EQ(held.action, Action::kConflict);
  EXPECT_THAT(held.status, StatusIs(absl::StatusCode::kAlreadyExists, Atom::kTableExists));
  EXPECT_NE(held.status.message().find("held for its live client " + other_.ToString()),
            std::string::npos)
      << held.status;
  // Owned by another live process: table_exists naming it and the caller.
  Decision taken = DecideNewTable("t", k, v, &e, Alive(other_), caller_);
  EXPECT_EQ(taken.action, Action::kConflict);
  EXPECT_THAT(taken.status, StatusIs(absl::StatusCode::kAlreadyExists, Atom::kTableExists));
  EXPECT_NE(taken.status.message().find(other_.ToString()), std::string::npos);
  EXPECT_NE(taken.status.message().find(caller_.ToString()), std::string::npos);
}

TEST_F(DecideTest, AddTable) {
  AnyTable another;
  RunInProcess(*node_, [&](Process&) { another = IntTable::New().value().any(); });
  Entry e = MakeEntry(other_);
  const std::string t = "t";
  const std::string elsewhere = "u";
  // A deleted table: NotFound.
  EXPECT_EQ(
      DecideAddTable(t, nullptr, TableView(), table_, TableView(), nullptr, caller_).status.code(),
      absl::StatusCode::kNotFound);
  // Managed under another name: table_exists naming it (and not_owner first for a non-owner).
  Decision twice =
      DecideAddTable(t, nullptr, TableView(), table_, Alive(caller_), &elsewhere, caller_);
  EXPECT_EQ(DecideAddTable(t, nullptr, TableView(), table_, Alive(other_), &elsewhere, caller_)
                .status.code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(twice.status, StatusIs(absl::StatusCode::kAlreadyExists, Atom::kTableExists));
  EXPECT_NE(twice.status.message().find("already managed as \"u\""), std::string::npos)
      << twice.status;
  // The name manages another live table: table_exists.
  Decision clash = DecideAddTable(t, &e, Alive(other_), another, Alive(caller_), nullptr, caller_);
  EXPECT_THAT(clash.status, StatusIs(absl::StatusCode::kAlreadyExists, Atom::kTableExists));
  // The same table: confirm (ours), claim (held), conflict (another's).
  EXPECT_EQ(DecideAddTable(t, &e, Alive(caller_), table_, Alive(caller_), &t, caller_).action,
            Action::kConfirm);
  Entry none = MakeEntry(Pid());
  EXPECT_EQ(
      DecideAddTable(t, &none, Alive(Pid(), true), table_, Alive(Pid(), true), &t, caller_).action,
      Action::kClaim);
  EXPECT_EQ(DecideAddTable(t, &e, Alive(other_), table_, Alive(other_), &t, caller_).action,
            Action::kConflict);
  // A new name: only its owner may add it.
  Decision not_mine =
      DecideAddTable(t, nullptr, TableView(), table_, Alive(other_), nullptr, caller_);
  EXPECT_THAT(not_mine.status, StatusIs(absl::StatusCode::kPermissionDenied, Atom::kNotOwner));
  EXPECT_EQ(
      DecideAddTable(t, nullptr, TableView(), table_, Alive(caller_), nullptr, caller_).action,
      Action::kCreate);
}

TEST_F(DecideTest, DelTable) {
  absl::Status unknown = DecideDelTable("t", nullptr, TableView(), caller_);
  EXPECT_THAT(unknown, StatusIs(absl::StatusCode::kNotFound, Atom::kNoSuchTableEntry));
  Entry mine = MakeEntry(caller_);
  EXPECT_TRUE(DecideDelTable("t", &mine, Alive(other_), caller_).ok());  // Registered client.
  Entry theirs = MakeEntry(other_);
  EXPECT_TRUE(DecideDelTable("t", &theirs, Alive(caller_), caller_).ok());  // Owner.
  EXPECT_TRUE(DecideDelTable("t", &theirs, TableView(), caller_).ok());     // Deleted table.
  absl::Status denied = DecideDelTable("t", &theirs, Alive(other_), caller_);
  EXPECT_EQ(denied.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(denied.message().find(
                absl::StrCat("caller ", caller_.ToString(), " is neither the registered client ",
                             other_.ToString(), " nor the owner ", other_.ToString())),
            std::string::npos)
      << denied;
}

TEST_F(DecideTest, DirectoryKeepsClientCountsAndSnapshots) {
  Directory dir;
  auto entry = [&](const std::string& name) {
    return Entry{table_, Pid(), std::make_shared<const std::string>(name)};
  };
  Entry a = entry("a");
  a.client = caller_;
  EXPECT_TRUE(dir.Add("a", std::move(a)));  // The caller's first table: link.
  Entry b = entry("b");
  b.client = caller_;
  EXPECT_FALSE(dir.Add("b", std::move(b)));
  // Another client takes "a": not its first... it is; the caller keeps "b".
  Pid dropped;
  EXPECT_TRUE(dir.SetClient(*dir.Find("a"), other_, &dropped));
  EXPECT_FALSE(dropped.valid());
  // A snapshot keeps removed entries' tables until it ends.
  std::vector<std::string> seen;
  uint64_t first_id =
      dir.BeginSnapshot([&](const std::string& name, const Entry&) { seen.push_back(name); });
  EXPECT_EQ(seen.size(), 2u);
  Entry gone = dir.Erase("b", &dropped);
  EXPECT_EQ(dropped, caller_);  // Its last table: unlink.
  std::weak_ptr<const std::string> gone_name = gone.name;
  gone = Entry();
  EXPECT_FALSE(gone_name.expired());  // In the graveyard.
  // Snapshots overlap: an entry removed while the first was open waits for it, not for later
  // ones; one removed during the second only waits for the second.
  uint64_t second_id = dir.BeginSnapshot([](const std::string&, const Entry&) {});
  Entry a_gone = dir.Erase("a", &dropped);
  std::weak_ptr<const std::string> a_name = a_gone.name;
  a_gone = Entry();
  std::vector<Entry> buried = dir.EndSnapshot(first_id);
  EXPECT_EQ(buried.size(), 1u);  // "b": only the first snapshot could see it.
  buried.clear();
  EXPECT_TRUE(gone_name.expired());
  EXPECT_FALSE(a_name.expired());  // Still needed by the second.
  EXPECT_EQ(dir.EndSnapshot(second_id).size(), 1u);
  EXPECT_TRUE(a_name.expired());
  // Put "a" back for the rest.
  Entry again = entry("a");
  again.client = other_;
  EXPECT_TRUE(dir.Add("a", std::move(again)));
  // A client's exit: its entries become client-less; the names are reported.
  EXPECT_EQ(dir.MarkClientGone(other_), std::vector<std::string>{"a"});
  EXPECT_FALSE(dir.Find("a")->client.valid());
  EXPECT_FALSE(dir.HasClient(other_));
  EXPECT_EQ(dir.TakeAll().size(), 1u);
  EXPECT_EQ(dir.size(), 0u);
}

// Lookups are cached per thread; creating or forgetting any instance invalidates them.
TEST(FindInstanceTest, SeesEveryChange) {
  auto node = Node::Create(RuntimeOptions()).value();
  EXPECT_EQ(FindInstance(*node, "x"), nullptr);
  std::shared_ptr<Instance> a = FindOrCreateInstance(*node, "x");
  EXPECT_EQ(FindOrCreateInstance(*node, "x"), a);  // One per name.
  EXPECT_EQ(FindInstance(*node, "x"), a);
  EXPECT_EQ(FindInstance(*node, "x"), a);  // From the cache.
  EXPECT_EQ(FindInstance(*node, "y"), nullptr);
  ForgetInstance(*node, a.get());
  EXPECT_EQ(FindInstance(*node, "x"), nullptr);  // Though `a` is still alive here.
  std::shared_ptr<Instance> b = FindOrCreateInstance(*node, "x");
  EXPECT_NE(b, a);
  EXPECT_EQ(FindInstance(*node, "x"), b);
  auto other = Node::Create(RuntimeOptions()).value();  // Another node: its own registry.
  EXPECT_EQ(FindInstance(*other, "x"), nullptr);
}

}  // namespace
}  // namespace etsmgr::manager_internal
