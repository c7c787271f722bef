// Owner, heir and give_away: transfers on every kind of exit, their order against links, the
// error cases, and what a deleted table answers.
#include <algorithm>
#include <any>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "etsmgr/process/testing/test_util.h"
#include "etsmgr/table/table.h"
#include "etsmgr/table/testing/test_owner.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

using IntTable = Table<int64_t, int64_t>;

struct Go {};

enum class How { kReturn, kThrow, kExitShutdown, kKilled };

// Checks what a new owner finds on receiving the table (synchronous: no co_await inside): it is
// the owner, the transfer names a sender, carries `data`, and the table has `size` rows and
// takes the new owner's writes.
void ExpectTransfer(const Pid& me, const TableTransfer& t, int data, size_t size) {
  absl::StatusOr<IntTable> table = IntTable::Attach(t.table);
  ASSERT_TRUE(table.ok()) << "attach the transferred table: " << table.status();
  absl::StatusOr<TableInfo> info = table->Info();
  ASSERT_TRUE(info.ok()) << "the transferred table's info: " << info.status();
  const int* got_data = std::any_cast<int>(&t.heir_data);
  absl::Status write = table->Insert(1000, 1);  // Allowed only to the owner (protected).
  EXPECT_EQ(info->owner, me) << "the receiver owns the table";
  EXPECT_TRUE(t.from.valid()) << "the transfer names its sender";
  EXPECT_EQ(got_data != nullptr ? *got_data : -1, data) << "the transfer's data";
  EXPECT_EQ(info->size, size) << "the table's rows";
  EXPECT_TRUE(write.ok()) << "the new owner writes: " << write;
}

std::string HowName(const ::testing::TestParamInfo<How>& info) {
  const char* names[] = {"NormalExit", "Crash", "ExitShutdown", "Kill"};
  return names[static_cast<int>(info.param)];
}

class HeirTest : public ::testing::TestWithParam<How> {};

TEST_P(HeirTest, LiveHeirInheritsBeforeLinksFire) {
  auto node = Node::Create({.schedulers = 2}).value();
  auto heir_checked = std::make_shared<std::promise<void>>();
  auto watcher_checked = std::make_shared<std::promise<void>>();
  auto created = std::make_shared<std::promise<AnyTable>>();
  Pid heir = node->Spawn([heir_checked](Process& self) -> Task<void> {
                   TableTransfer t = co_await self.Receive<TableTransfer>();
                   ExpectTransfer(self.self(), t, /*data=*/42, /*size=*/5);
                   heir_checked->set_value();
                   co_await self.Receive<Go>();  // Stay alive (owning the table).
                 })
                 .value();
  How how = GetParam();
  Pid owner = node->Spawn([heir, how, created](Process& self) -> Task<void> {
                    TableOptions options;
                    options.heir = heir;
                    options.heir_data = 42;
                    IntTable t = IntTable::New(options).value();
                    for (int64_t k = 0; k < 5; ++k) EXPECT_TRUE(t.Insert(k, k).ok());
                    created->set_value(t.any());
                    co_await self.Receive<Go>();
                    if (how == How::kThrow) throw std::runtime_error("crash");
                    if (how == How::kExitShutdown) co_await self.Exit(ExitReason::Shutdown());
                    if (how == How::kKilled) co_await self.Receive<Go>();
                  })
                  .value();
  AnyTable table = created->get_future().get();
  // A watcher linked to the owner: when its exit signal arrives, the heir must already own the
  // table (OTP releases tables before links fire).
  auto linked = std::make_shared<std::promise<void>>();
  node->Spawn(
          [owner, heir, table, watcher_checked, linked](Process& self) -> Task<void> {
            self.Link(owner);
            linked->set_value();
            ExitSignal signal = co_await self.Receive<ExitSignal>();
            absl::StatusOr<Pid> now = table.Owner();
            EXPECT_EQ(signal.from, owner) << "the watcher's exit signal is from the owner";
            EXPECT_TRUE(now.ok() && *now == heir)
                << "the heir owns the table when the link fires: "
                << (now.ok() ? now->ToString() : now.status().ToString());
            watcher_checked->set_value();
          },
          {.trap_exit = true})
      .value();
  linked->get_future().get();
  if (how == How::kKilled) {
    SendExit(owner, ExitReason::Kill());
  } else {
    Send(owner, Go{});
  }
  heir_checked->get_future().get();
  watcher_checked->get_future().get();
  EXPECT_EQ(table.Owner().value(), heir);
  // The heir setting stays (ETS): the heir is now its own heir, so when it exits too, nobody
  // inherits and the table is deleted.
  EXPECT_EQ(table.Info().value().heir, heir);
  SendExit(heir, ExitReason::Kill());
  AwaitDeath(*node, heir);
  EXPECT_FALSE(table.alive());
  EXPECT_EQ(table.Info().status().code(), absl::StatusCode::kNotFound);
}

INSTANTIATE_TEST_SUITE_P(ExitKinds, HeirTest,
                         ::testing::Values(How::kReturn, How::kThrow, How::kExitShutdown,
                                           How::kKilled),
                         HowName);

// heir_data whose copy throws when armed.
struct ThrowingPayload {
  static inline std::atomic<bool> armed{false};
  ThrowingPayload() = default;
  ThrowingPayload(const ThrowingPayload&) {
    if (armed.load()) throw std::runtime_error("payload copy refused");
  }
  ThrowingPayload& operator=(const ThrowingPayload&) = default;
};

// A payload whose copy throws does not stop the hand-over: the heir inherits every table of the
// dead owner (without the data), each with its rows and as its owner.
TEST(HeirDataTest, APayloadWhoseCopyThrowsStillHandsEveryTableOver) {
  auto node = Node::Create({.schedulers = 1}).value();
  struct Got {
    int transfers = 0;
    int without_data = 0;
    int owned_with_rows = 0;
  };
  auto got = std::make_shared<std::promise<Got>>();
  Pid heir = node->Spawn([got](Process& self) -> Task<void> {
                   Got g;
                   for (; g.transfers < 2; ++g.transfers) {
                     TableTransfer t = co_await self.Receive<TableTransfer>();
                     g.without_data += !t.heir_data.has_value();
                     absl::StatusOr<TableInfo> info = t.table.Info();
                     g.owned_with_rows +=
                         info.ok() && info->owner == self.self() && info->size == 1;
                   }
                   got->set_value(g);
                   co_await self.Receive<Go>();
                 })
                 .value();
  auto made = std::make_shared<std::promise<void>>();
  Pid owner = node->Spawn([made, heir](Process& self) -> Task<void> {
                    for (int64_t i = 0; i < 2; ++i) {
                      TableOptions options;
                      options.heir = heir;
                      options.heir_data = ThrowingPayload();
                      (void)IntTable::New(options).value().Insert(i, i);
                    }
                    made->set_value();
                    co_await self.Receive<Go>();
                  })
                  .value();
  made->get_future().wait();
  ThrowingPayload::armed.store(true);
  SendExit(owner, ExitReason::Kill());
  std::future<Got> result = got->get_future();
  const bool ready = result.wait_for(std::chrono::seconds(30)) == std::future_status::ready;
  ThrowingPayload::armed.store(false);
  ASSERT_TRUE(ready) << "the heir did not receive both tables within 30 s";
  Got g = result.get();
  EXPECT_EQ(g.without_data, 2);
  EXPECT_EQ(g.owned_with_rows, 2);
  Send(heir, Go{});
}

// heir_data whose copy looks at the table it is the data of.
struct PeekingPayload {
  static inline std::atomic<const AnyTable*> table{nullptr};
  static inline std::atomic<int> peeks{0};
  PeekingPayload() = default;
  PeekingPayload(const PeekingPayload&) {
    if (const AnyTable* t = table.load(); t != nullptr && t->Info().ok()) peeks.fetch_add(1);
  }
  PeekingPayload& operator=(const PeekingPayload&) = default;
};

// The heir's data is copied outside the table's lock: a copy that uses the table (or takes long)
// neither deadlocks nor holds up the table's other users.
TEST(HeirDataTest, APayloadWhoseCopyUsesTheTableDoesNotDeadlock) {
  auto node = Node::Create({.schedulers = 1}).value();
  auto got = std::make_shared<std::promise<bool>>();
  Pid heir = node->Spawn([got](Process& self) -> Task<void> {
                   TableTransfer t = co_await self.Receive<TableTransfer>();
                   got->set_value(std::any_cast<PeekingPayload>(&t.heir_data) != nullptr);
                   co_await self.Receive<Go>();
                 })
                 .value();
  TableOptions options;
  options.heir = heir;
  options.heir_data = PeekingPayload();
  OwnedTable owned = SpawnOwner(*node, options);
  const AnyTable table = owned.table;
  PeekingPayload::table.store(&table);
  SendExit(owned.owner, ExitReason::Kill());
  std::future<bool> result = got->get_future();
  if (result.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
    (void)node.release();  // Its scheduler spins on the table's lock: do not join it.
    FAIL() << "the heir did not receive the table within 30 s (the data's copy deadlocked)";
  }
  PeekingPayload::table.store(nullptr);
  EXPECT_TRUE(result.get()) << "the transfer carries the data";
  EXPECT_GE(PeekingPayload::peeks.load(), 1);
  Send(heir, Go{});
}

TEST(HeirDeadTest, TableIsDeletedWithItsOwner) {
  auto node = Node::Create({.schedulers = 2}).value();
  Pid dead_heir = node->Spawn([](Process&) -> Task<void> { co_return; }).value();
  AwaitDeath(*node, dead_heir);
  TableOptions options;
  options.heir = dead_heir;
  options.name = "orphan";
  OwnedTable owned = SpawnOwner(*node, options, 3);
  std::weak_ptr<TableCore> core = owned.table.core();
  SendExit(owned.owner, ExitReason::Kill());
  AwaitDeath(*node, owned.owner);
  EXPECT_FALSE(owned.table.alive());
  EXPECT_EQ(FindTable(*node, "orphan").status().code(), absl::StatusCode::kNotFound);
  owned.table = AnyTable();
  EXPECT_TRUE(core.expired()) << "the last handle went: the table's memory must be freed";
}

TEST(HeirDeadTest, NoHeirMeansDeleted) {
  auto node = Node::Create({.schedulers = 1}).value();
  OwnedTable owned = SpawnOwner(*node, {}, 3);
  Send(owned.owner, StopOwner{});
  AwaitDeath(*node, owned.owner);
  absl::StatusOr<TableInfo> info = owned.table.Info();
  EXPECT_EQ(info.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(owned.table.lost_with_owner());
  EXPECT_NE(info.status().message().find("deleted"), std::string::npos) << info.status();
}

TEST(HeirSetLaterTest, OnlyTheOwnerSetsTheHeir) {
  auto node = Node::Create({.schedulers = 2}).value();
  auto checked = std::make_shared<std::promise<void>>();
  Pid heir = node->Spawn([checked](Process& self) -> Task<void> {
                   TableTransfer t = co_await self.Receive<TableTransfer>();
                   ExpectTransfer(self.self(), t, /*data=*/9, /*size=*/1);
                   checked->set_value();
                   co_await self.Receive<Go>();
                 })
                 .value();
  OwnedTable owned = SpawnOwner(*node, {}, 2);
  // From outside the owner: denied, from a process and from a thread.
  EXPECT_EQ(owned.table.SetHeir(heir, 7).code(), absl::StatusCode::kPermissionDenied);
  RunInProcess(*node, [&](Process&) {
    absl::Status st = owned.table.SetHeir(heir, 7);
    EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied);
    EXPECT_NE(st.message().find("only the owner"), std::string::npos) << st;
  });
  Send(owned.owner, StopOwner{});
  // An owner that sets the heir itself, then exits.
  RunInProcess(*node, [heir](Process& self) -> Task<void> {
    IntTable t = IntTable::New().value();
    EXPECT_TRUE(t.Insert(1, 1).ok());
    absl::Status st = t.SetHeir(heir, 9);
    EXPECT_TRUE(st.ok()) << "the owner sets the heir: " << st;
    co_await self.Sleep(absl::ZeroDuration());
  });
  checked->get_future().get();
  SendExit(heir, ExitReason::Kill());
}

TEST(GiveAwayTest, ReceiverGetsTransferAndOwnership) {
  auto node = Node::Create({.schedulers = 2}).value();
  auto checked = std::make_shared<std::promise<void>>();
  Pid receiver = node->Spawn([checked](Process& self) -> Task<void> {
                       TableTransfer t = co_await self.Receive<TableTransfer>();
                       ExpectTransfer(self.self(), t, /*data=*/5, /*size=*/1);
                       checked->set_value();
                       co_await self.Receive<Go>();
                     })
                     .value();
  RunInProcess(*node, [receiver](Process& self) {
    IntTable t = IntTable::New().value();
    EXPECT_TRUE(t.Insert(1, 1).ok());
    EXPECT_EQ(process_internal::ProcessAccess::ResourceCount(self.self()), 1u);
    absl::Status st = t.GiveAway(receiver, 5);
    EXPECT_TRUE(st.ok()) << "give_away: " << st;
    // No longer the owner: writes are denied now, and the process no longer holds it.
    absl::Status write = t.Insert(2, 2);
    EXPECT_EQ(write.code(), absl::StatusCode::kPermissionDenied)
        << "a write after the give_away: " << write;
    EXPECT_EQ(process_internal::ProcessAccess::ResourceCount(self.self()), 0u)
        << "the giver no longer holds the table";
  });
  checked->get_future().get();
  SendExit(receiver, ExitReason::Kill());
}

TEST(GiveAwayTest, EveryViolationIsAnError) {
  auto node = Node::Create({.schedulers = 2}).value();
  Pid dead = node->Spawn([](Process&) -> Task<void> { co_return; }).value();
  AwaitDeath(*node, dead);
  OwnedTable other = SpawnOwner(*node, {}, 1);
  RunInProcess(*node, [&](Process& self) {
    IntTable t = IntTable::New().value();
    ASSERT_TRUE(t.Insert(1, 1).ok());
    absl::Status to_dead = t.GiveAway(dead);
    EXPECT_EQ(to_dead.code(), absl::StatusCode::kFailedPrecondition) << to_dead;
    EXPECT_NE(to_dead.message().find(dead.ToString()), std::string::npos) << to_dead;
    absl::Status to_self = t.GiveAway(self.self());
    EXPECT_EQ(to_self.code(), absl::StatusCode::kInvalidArgument) << to_self;
    EXPECT_EQ(t.GiveAway(Pid()).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(t.Info().value().owner, self.self());  // Still ours after every failure.
    EXPECT_TRUE(t.Insert(2, 2).ok());
    // Not the owner.
    absl::Status not_owner = other.table.GiveAway(self.self());
    EXPECT_EQ(not_owner.code(), absl::StatusCode::kPermissionDenied) << not_owner;
    EXPECT_NE(not_owner.message().find("only the owner"), std::string::npos) << not_owner;
  });
  EXPECT_EQ(other.table.GiveAway(dead).code(), absl::StatusCode::kPermissionDenied);  // Thread.
  Send(other.owner, StopOwner{});
}

TEST(DeletedTableTest, EveryHandleAnswersNotFound) {
  auto node = Node::Create({.schedulers = 1}).value();
  RunInProcess(*node, [&](Process& self) {
    TableOptions options;
    options.name = "doomed";
    IntTable a = IntTable::New(options).value();
    IntTable b = IntTable::Attach(a.any()).value();
    AnyTable any = a.any();
    for (int64_t k = 0; k < 1000; ++k) ASSERT_TRUE(a.Insert(k, k).ok());
    ASSERT_TRUE(b.Delete().ok());
    EXPECT_FALSE(any.lost_with_owner());  // Deleted on purpose.
    EXPECT_EQ(process_internal::ProcessAccess::ResourceCount(self.self()), 0u);
    auto expect_gone = [](const absl::Status& st) {
      EXPECT_EQ(st.code(), absl::StatusCode::kNotFound) << st;
      EXPECT_NE(st.message().find("deleted"), std::string::npos) << st;
    };
    for (IntTable* t : {&a, &b}) {
      EXPECT_FALSE(t->alive());
      expect_gone(t->Insert(1, 1));
      expect_gone(t->Insert({{1, 1}}));
      expect_gone(t->InsertNew(1, 1).status());
      expect_gone(t->Lookup(1).status());
      expect_gone(t->Get(1).status());
      expect_gone(t->Member(1).status());
      expect_gone(t->Erase(1).status());
      expect_gone(t->EraseObject(1, 1).status());
      expect_gone(t->Take(1).status());
      expect_gone(t->UpdateCounter(1, 1).status());
      expect_gone(t->Size().status());
      expect_gone(t->ToList().status());
      expect_gone(t->Select([](const int64_t&, const int64_t&) { return true; }).status());
      expect_gone(t->ForEach([](const int64_t&, const int64_t&) {}));
      expect_gone(t->First().status());
      expect_gone(t->Last().status());
      expect_gone(t->Next(1).status());
      expect_gone(t->Prev(1).status());
      expect_gone(t->Clear());
      expect_gone(t->Info().status());
      expect_gone(t->GiveAway(self.self()));
      expect_gone(t->SetHeir(Pid()));
      expect_gone(t->Delete());
    }
    expect_gone(any.Size().status());
    expect_gone(any.Owner().status());
    EXPECT_EQ(IntTable::Attach(any).status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(FindTable(self.node(), "doomed").status().code(), absl::StatusCode::kNotFound);
  });
}

}  // namespace
}  // namespace etsmgr
