// TableKeeper: a kept table is never deleted for want of an heir. Its holder takes it, or it is
// parked until a holder comes; hand-over, release, tags, and the keeper's own lifetime.
#include "etsmgr/table/table_keeper.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "etsmgr/process/testing/test_util.h"
#include "etsmgr/table/table.h"
#include "etsmgr/table/testing/test_owner.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

using IntTable = Table<int64_t, int64_t>;

// Counts what the hooks report.
class CountingKeeper final : public TableKeeper {
 public:
  std::atomic<int> kept_by_holder{0};
  std::atomic<int> parked{0};
  std::atomic<int> lost{0};

 protected:
  void OnKept(const AnyTable&, const Pid& from, const Pid& holder) override {
    EXPECT_TRUE(from.valid());
    ++(holder.valid() ? kept_by_holder : parked);
  }
  void OnLost(const AnyTable&) override { ++lost; }
};

// A process that becomes the keeper's holder, reports how many parked tables it adopted, and
// waits for StopOwner.
struct Holder {
  Pid pid;
  size_t adopted = 0;
};
Holder SpawnHolder(Node& node, std::shared_ptr<TableKeeper> keeper) {
  auto adopted = std::make_shared<std::promise<size_t>>();
  Pid pid = node.Spawn([keeper, adopted](Process& self) -> Task<void> {
                  absl::StatusOr<size_t> n = keeper->BecomeHolder();
                  EXPECT_TRUE(n.ok()) << n.status();
                  adopted->set_value(n.ok() ? *n : 0);
                  co_await self.Receive<StopOwner>();
                })
                .value();
  return Holder{pid, adopted->get_future().get()};
}

// Runs `fn` in a fresh process and waits until that process has exited.
void RunToExit(Node& node, std::function<void(Process&)> fn) {
  Pid pid = node.Spawn([fn](Process& self) -> Task<void> {
                  fn(self);
                  co_return;
                })
                .value();
  AwaitDeath(node, pid);
}

void Kill(Node& node, const Pid& pid) {
  SendExit(pid, ExitReason::Kill());
  AwaitDeath(node, pid);
}

int64_t SizeOf(const AnyTable& t) { return static_cast<int64_t>(t.core()->Size("test").value()); }

TEST(TableKeeperTest, HolderTakesTheTableOfAnExitedOwnerBeforeLinksFire) {
  auto node = Node::Create({.schedulers = 2}).value();
  auto keeper = std::make_shared<CountingKeeper>();
  Holder holder = SpawnHolder(*node, keeper);
  EXPECT_EQ(holder.adopted, 0u);
  OwnedTable owned = SpawnOwner(*node, {}, 5);
  ASSERT_TRUE(keeper->Keep(owned.table, nullptr).ok());
  EXPECT_FALSE(keeper->Holds(owned.table));  // Its owner has it.
  // A watcher linked to the owner: when the exit signal arrives, the holder owns the table.
  RunInProcess(*node,
               [&](Process& self) -> Task<void> {
                 self.Link(owned.owner);
                 SendExit(owned.owner, ExitReason::Kill());
                 co_await self.Receive<ExitSignal>();
                 absl::StatusOr<Pid> owner = owned.table.Owner();
                 CO_ASSERT_OK(owner, "the table's owner at the exit signal");
                 EXPECT_EQ(*owner, holder.pid) << "the holder owns the table when the link fires";
               },
               {.trap_exit = true});
  EXPECT_TRUE(keeper->Holds(owned.table));
  EXPECT_EQ(SizeOf(owned.table), 5);
  EXPECT_EQ(owned.table.core()->heir(), holder.pid);  // The keeper's holder is its heir.
  EXPECT_EQ(keeper->kept_by_holder.load(), 1);
  EXPECT_EQ(keeper->parked.load(), 0);
  EXPECT_EQ(process_internal::ProcessAccess::ResourceCount(holder.pid), 1u);
  Send(holder.pid, StopOwner{});
}

// A keeper whose hook throws.
class ThrowingKeeper final : public TableKeeper {
 protected:
  void OnKept(const AnyTable&, const Pid&, const Pid&) override {
    throw std::runtime_error("OnKept refused");
  }
};

// A hook that throws does not stop the owner's exit half-way: every table it owned is kept.
TEST(TableKeeperTest, AHookThatThrowsStillKeepsEveryTable) {
  auto node = Node::Create({.schedulers = 1}).value();
  auto keeper = std::make_shared<ThrowingKeeper>();
  auto made = std::make_shared<std::promise<std::vector<AnyTable>>>();
  Pid owner = node->Spawn([made](Process& self) -> Task<void> {
                    std::vector<AnyTable> tables;
                    for (int64_t i = 0; i < 3; ++i) {
                      IntTable t = IntTable::New().value();
                      EXPECT_TRUE(t.Insert(i, i).ok());
                      tables.push_back(t.any());
                    }
                    made->set_value(tables);
                    co_await self.Receive<StopOwner>();
                  })
                  .value();
  std::vector<AnyTable> tables = made->get_future().get();
  for (const AnyTable& t : tables) ASSERT_TRUE(keeper->Keep(t, nullptr).ok());
  Kill(*node, owner);
  EXPECT_EQ(keeper->parked_count(), 3u);
  for (const AnyTable& t : tables) {
    EXPECT_TRUE(t.alive());
    EXPECT_TRUE(keeper->Holds(t));
    EXPECT_EQ(SizeOf(t), 1);
  }
}

TEST(TableKeeperTest, WithNoHolderTheTableIsParkedIntactAndTheNextHolderAdoptsIt) {
  auto node = Node::Create({.schedulers = 2}).value();
  auto keeper = std::make_shared<CountingKeeper>();
  std::vector<OwnedTable> owned;
  for (int i = 0; i < 3; ++i) {
    owned.push_back(SpawnOwner(*node, {}, 10 + i));
    ASSERT_TRUE(keeper->Keep(owned.back().table, nullptr).ok());
  }
  Kill(*node, owned[0].owner);
  Send(owned[1].owner, StopOwner{});  // A normal exit: the same.
  AwaitDeath(*node, owned[1].owner);
  for (int i = 0; i < 2; ++i) {
    const AnyTable& t = owned[i].table;
    EXPECT_TRUE(t.alive());
    EXPECT_FALSE(t.Owner().value().valid());  // Parked: no owner.
    EXPECT_TRUE(keeper->Holds(t));
    EXPECT_EQ(SizeOf(t), 10 + i);
    // Nobody may write a protected table that no process owns; anyone may read it.
    RunInProcess(*node, [&](Process&) {
      IntTable typed = IntTable::Attach(t).value();
      EXPECT_EQ(typed.Insert(99, 99).code(), absl::StatusCode::kPermissionDenied);
      EXPECT_EQ(typed.Get(1).value(), std::optional<int64_t>(1));
    });
  }
  EXPECT_EQ(keeper->parked_count(), 2u);
  EXPECT_EQ(keeper->parked.load(), 2);
  Holder holder = SpawnHolder(*node, keeper);
  EXPECT_EQ(holder.adopted, 2u);
  EXPECT_EQ(keeper->parked_count(), 0u);
  for (int i = 0; i < 2; ++i) EXPECT_EQ(owned[i].table.Owner().value(), holder.pid);
  EXPECT_EQ(owned[2].table.Owner().value(), owned[2].owner);  // Untouched.
  EXPECT_EQ(keeper->lost.load(), 0);
  Send(owned[2].owner, StopOwner{});
  Send(holder.pid, StopOwner{});
}

TEST(TableKeeperTest, AnExitingHolderParksWhatItHeld) {
  auto node = Node::Create({.schedulers = 2}).value();
  auto keeper = std::make_shared<CountingKeeper>();
  Holder first = SpawnHolder(*node, keeper);
  OwnedTable owned = SpawnOwner(*node, {}, 7);
  ASSERT_TRUE(keeper->Keep(owned.table, nullptr).ok());
  Kill(*node, owned.owner);
  ASSERT_EQ(owned.table.Owner().value(), first.pid);
  Kill(*node, first.pid);  // The holder dies: the table is not its to lose.
  EXPECT_TRUE(owned.table.alive());
  EXPECT_FALSE(owned.table.Owner().value().valid());
  EXPECT_EQ(SizeOf(owned.table), 7);
  Holder second = SpawnHolder(*node, keeper);
  EXPECT_EQ(second.adopted, 1u);
  EXPECT_EQ(owned.table.Owner().value(), second.pid);
  EXPECT_EQ(keeper->lost.load(), 0);
  Send(second.pid, StopOwner{});
}

TEST(TableKeeperTest, HandOverGivesTheTableBackAndItStaysKept) {
  auto node = Node::Create({.schedulers = 2}).value();
  auto keeper = std::make_shared<CountingKeeper>();
  OwnedTable owned = SpawnOwner(*node, {}, 3);
  OwnedTable other = SpawnOwner(*node, {}, 0);
  ASSERT_TRUE(keeper->Keep(owned.table, nullptr).ok());
  // Not while a live process other than the holder owns it.
  absl::Status busy = keeper->HandOver(owned.table, other.owner);
  EXPECT_EQ(busy.code(), absl::StatusCode::kFailedPrecondition) << busy;
  EXPECT_NE(busy.message().find(owned.owner.ToString()), std::string::npos) << busy;
  Kill(*node, owned.owner);  // Parked.
  Pid dead = node->Spawn([](Process&) -> Task<void> { co_return; }).value();
  AwaitDeath(*node, dead);
  EXPECT_EQ(keeper->HandOver(owned.table, dead).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(keeper->HandOver(owned.table, Pid()).code(), absl::StatusCode::kInvalidArgument);
  // To a live process: it owns it now (and may write), with no message.
  RunToExit(*node, [&](Process& self) {
    ASSERT_TRUE(keeper->HandOver(owned.table, self.self()).ok());
    IntTable t = IntTable::Attach(owned.table).value();
    EXPECT_TRUE(t.Insert(100, 100).ok());
    EXPECT_EQ(self.mailbox_size(), 0u);
    EXPECT_FALSE(keeper->Holds(owned.table));
  });
  // That process returned: the table came back to the keeper (parked), with its write.
  EXPECT_TRUE(owned.table.alive());
  EXPECT_TRUE(keeper->Holds(owned.table));
  EXPECT_EQ(SizeOf(owned.table), 4);
  EXPECT_EQ(keeper->parked_count(), 1u);
  // A keeper that does not keep it may not hand it over.
  auto stranger = std::make_shared<TableKeeper>();
  EXPECT_EQ(stranger->HandOver(owned.table, other.owner).code(),
            absl::StatusCode::kFailedPrecondition);
  Send(other.owner, StopOwner{});
}

TEST(TableKeeperTest, ReleaseDeletesWhatTheKeeperHasAndLeavesOwnedTablesToTheirOwner) {
  auto node = Node::Create({.schedulers = 2}).value();
  auto keeper = std::make_shared<CountingKeeper>();
  OwnedTable parked = SpawnOwner(*node, {}, 2);
  OwnedTable live = SpawnOwner(*node, {}, 2);
  ASSERT_TRUE(keeper->Keep(parked.table, nullptr).ok());
  ASSERT_TRUE(keeper->Keep(live.table, nullptr).ok());
  Kill(*node, parked.owner);
  EXPECT_EQ(keeper->Release(parked.table).value(), true);
  EXPECT_FALSE(parked.table.alive());
  EXPECT_EQ(keeper->parked_count(), 0u);
  EXPECT_EQ(keeper->Release(live.table).value(), false);
  EXPECT_TRUE(live.table.alive());
  EXPECT_EQ(keeper->Release(live.table).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(live.table.core()->heir().valid());
  // No longer kept: ETS's rule again, deleted with its owner.
  Kill(*node, live.owner);
  EXPECT_FALSE(live.table.alive());
  EXPECT_TRUE(live.table.lost_with_owner());
  EXPECT_EQ(keeper->lost.load(), 0);  // Released tables are not the keeper's losses.
}

// An abandoned keeper (its user releases its tables next) gives a table a live process owns to
// another keeper that process registers it with; one it has (parked, here) stays its own.
TEST(TableKeeperTest, AnAbandonedKeepersTableOwnedByALiveProcessGoesToTheNextKeeper) {
  auto node = Node::Create({.schedulers = 2}).value();
  auto old_keeper = std::make_shared<CountingKeeper>();
  auto new_keeper = std::make_shared<CountingKeeper>();
  OwnedTable parked = SpawnOwner(*node, {}, 2);
  OwnedTable live = SpawnOwner(*node, {}, 2);
  ASSERT_TRUE(old_keeper->Keep(parked.table, nullptr).ok());
  ASSERT_TRUE(old_keeper->Keep(live.table, nullptr).ok());
  Kill(*node, parked.owner);
  ASSERT_EQ(old_keeper->parked_count(), 1u);
  // Not abandoned: another keeper is refused.
  EXPECT_EQ(new_keeper->Keep(live.table, nullptr).code(), absl::StatusCode::kFailedPrecondition);
  old_keeper->Abandon();
  EXPECT_TRUE(new_keeper->Keep(live.table, nullptr).ok());
  EXPECT_EQ(new_keeper->Keep(parked.table, nullptr).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(old_keeper->Release(live.table).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(live.table.alive());
  EXPECT_EQ(old_keeper->Release(parked.table).value(), true);
  // Kept by the new keeper: its owner's exit parks it there instead of deleting it.
  Kill(*node, live.owner);
  EXPECT_TRUE(live.table.alive());
  EXPECT_EQ(new_keeper->parked_count(), 1u);
  EXPECT_EQ(SizeOf(live.table), 2);
}

TEST(TableKeeperTest, AKeptTableDeletedByItsOwnerIsReportedLost) {
  auto node = Node::Create({.schedulers = 2}).value();
  auto keeper = std::make_shared<CountingKeeper>();
  RunInProcess(*node, [&](Process&) {
    IntTable t = IntTable::New().value();
    ASSERT_TRUE(keeper->Keep(t.any(), nullptr).ok());
    ASSERT_TRUE(t.Delete().ok());
  });
  EXPECT_EQ(keeper->lost.load(), 1);
}

TEST(TableKeeperTest, KeepingClearsTheHeirAndAnHeirSetLaterInheritsFirst) {
  auto node = Node::Create({.schedulers = 2}).value();
  auto keeper = std::make_shared<CountingKeeper>();
  OwnedTable heir = SpawnOwner(*node, {}, 0);
  TableOptions options;
  options.heir = heir.owner;
  OwnedTable owned = SpawnOwner(*node, options, 1);
  ASSERT_TRUE(keeper->Keep(owned.table, nullptr).ok());
  EXPECT_FALSE(owned.table.Info().value().heir.valid());  // No holder yet, no heir.
  Kill(*node, owned.owner);
  EXPECT_FALSE(owned.table.Owner().value().valid());  // Parked, not given to the old heir.
  // Handed to a process that names an heir: ETS's rule first.
  RunToExit(*node, [&](Process& self) {
    EXPECT_TRUE(keeper->HandOver(owned.table, self.self()).ok());
    EXPECT_TRUE(owned.table.SetHeir(heir.owner).ok());
  });
  EXPECT_EQ(owned.table.Owner().value(), heir.owner);
  EXPECT_FALSE(keeper->Holds(owned.table));
  Send(heir.owner, StopOwner{});
}

// ETS gives a dying owner's table to its heir. A hand-over asked for while the owner is exiting
// (its exit hooks still running) used to take the table first; it is refused, and the heir
// inherits.
TEST(TableKeeperTest, AHandOverDuringTheOwnersExitLeavesTheTableToItsLiveHeir) {
  auto node = Node::Create({.schedulers = 2}).value();
  auto keeper = std::make_shared<TableKeeper>();
  OwnedTable heir = SpawnOwner(*node, {}, 0);
  OwnedTable other = SpawnOwner(*node, {}, 0);
  OwnedTable owned = SpawnOwner(*node, {}, 1);
  ASSERT_TRUE(keeper->Keep(owned.table, nullptr).ok());
  Kill(*node, owned.owner);  // parked
  ExitGate gate;
  AnyTable table = owned.table;
  Pid heir_pid = heir.owner;
  Pid exiting =
      node->Spawn([keeper, table, heir_pid, gate = gate.handle()](Process& self) -> Task<void> {
            EXPECT_TRUE(keeper->HandOver(table, self.self()).ok());
            EXPECT_TRUE(table.SetHeir(heir_pid).ok());
            gate.Install(self.self());  // Holds the exit until the test has asked.
            co_return;
          })
          .value();
  ASSERT_TRUE(gate.WaitEntered());
  absl::Status taken = keeper->HandOver(table, other.owner);
  gate.Open();
  AwaitDeath(*node, exiting);
  EXPECT_EQ(taken.code(), absl::StatusCode::kFailedPrecondition) << taken;
  EXPECT_EQ(owned.table.Owner().value(), heir.owner);
  Send(heir.owner, StopOwner{});
  Send(other.owner, StopOwner{});
}

TEST(TableKeeperTest, OneKeeperPerTableAndTagsAreTheirOwn) {
  auto node = Node::Create({.schedulers = 2}).value();
  auto keeper = std::make_shared<TableKeeper>();
  auto other = std::make_shared<TableKeeper>();
  OwnedTable owned = SpawnOwner(*node, {}, 0);
  auto tag = std::make_shared<const std::string>("first");
  ASSERT_TRUE(keeper->Keep(owned.table, tag).ok());
  EXPECT_TRUE(keeper->Keep(owned.table, tag).ok());  // Idempotent.
  absl::Status retag = keeper->Keep(owned.table, std::make_shared<const std::string>("second"));
  EXPECT_EQ(retag.code(), absl::StatusCode::kFailedPrecondition) << retag;
  EXPECT_EQ(other->Keep(owned.table, nullptr).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(keeper->TagOf(owned.table), tag);
  EXPECT_EQ(other->TagOf(owned.table), nullptr);
  EXPECT_EQ(keeper->Keep(AnyTable(), nullptr).code(), absl::StatusCode::kFailedPrecondition);
  Send(owned.owner, StopOwner{});
}

TEST(TableKeeperTest, ParkedTablesGoWithTheKeeperAndKeptOnesFallBackToEts) {
  auto node = Node::Create({.schedulers = 2}).value();
  auto keeper = std::make_shared<TableKeeper>();
  OwnedTable parked = SpawnOwner(*node, {}, 1);
  OwnedTable live = SpawnOwner(*node, {}, 1);
  ASSERT_TRUE(keeper->Keep(parked.table, nullptr).ok());
  ASSERT_TRUE(keeper->Keep(live.table, nullptr).ok());
  Kill(*node, parked.owner);
  std::weak_ptr<TableCore> parked_core = parked.table.core();
  parked = OwnedTable{};
  EXPECT_FALSE(parked_core.expired());  // The keeper holds it.
  keeper.reset();
  EXPECT_TRUE(parked_core.expired());  // Freed with the keeper (no cycle).
  Kill(*node, live.owner);
  EXPECT_FALSE(live.table.alive());
}

// Owners exit on two schedulers while holders come and go: no kept table is ever deleted, and
// once a last holder is in, it has every one of them.
TEST(TableKeeperTest, NoTableLostWhileOwnersAndHoldersDieConcurrently) {
  auto node = Node::Create({.schedulers = 2}).value();
  auto keeper = std::make_shared<CountingKeeper>();
  constexpr int kTables = 200;
  std::vector<OwnedTable> owned;
  for (int i = 0; i < kTables; ++i) {
    owned.push_back(SpawnOwner(*node, {}, 3));
    ASSERT_TRUE(keeper->Keep(owned.back().table, nullptr).ok());
  }
  std::thread killer([&] {
    for (const OwnedTable& o : owned) SendExit(o.owner, ExitReason::Kill());
  });
  for (int round = 0; round < 20; ++round) {
    Holder holder = SpawnHolder(*node, keeper);
    SendExit(holder.pid, ExitReason::Kill());
  }
  killer.join();
  for (const OwnedTable& o : owned) AwaitDeath(*node, o.owner);
  Holder last = SpawnHolder(*node, keeper);
  for (const OwnedTable& o : owned) {
    ASSERT_TRUE(o.table.alive());
    EXPECT_EQ(o.table.Owner().value(), last.pid);
    EXPECT_EQ(SizeOf(o.table), 3);
  }
  // Each owner's exit, and each holder's while it held some (the race this test is for).
  EXPECT_GE(keeper->kept_by_holder.load() + keeper->parked.load(), kTables);
  EXPECT_EQ(keeper->lost.load(), 0);
  EXPECT_EQ(keeper->parked_count(), 0u);
  Send(last.pid, StopOwner{});
}

}  // namespace
}  // namespace etsmgr
