// The manager's edge cases: impostors and stale processes holding names, discards racing starts,
// stale messages to the vault, exit signals from live processes, misuse through the public API.
// Each case once made a table lost, a call spin or hang, or a process crash.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "etsmgr/base/error_atom.h"
#include "etsmgr/manager/internal/instance.h"
#include "etsmgr/manager/managed_table.h"
#include "etsmgr/manager/manager.h"
#include "etsmgr/process/testing/test_util.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

namespace etsmgr {
namespace {

using IntTable = Table<int64_t, int64_t>;
struct Go {};

class EdgeCasesTest : public ::testing::Test {
 protected:
  void SetUp() override { node_ = Node::Create({.schedulers = 2}).value(); }
  // Runs `body` in a fresh process that traps exits, until it returns (it asserts in place).
  void InProcess(std::function<Task<void>(Process&)> body) {
    RunInProcess(*node_, std::move(body), {.trap_exit = true});
  }
  std::unique_ptr<Node> node_;
};

std::unique_ptr<Node> Deterministic(uint64_t seed) {
  RuntimeOptions options;
  options.deterministic = true;
  options.seed = seed;
  return Node::Create(options).value();
}

// A process that is not the instance's manager holds its name: waiting for the manager waits
// (and times out), it never spins; ManagedTable::Open gives up at its deadline.
TEST_F(EdgeCasesTest, AnImpostorHoldingTheManagersNameIsWaitedOutNotSpunOn) {
  Pid impostor = node_
                     ->Spawn([](Process& self) -> Task<void> { co_await self.Receive<Go>(); },
                             {.name = "etsmgr_srv_imp"})
                     .value();
  InProcess([](Process& self) -> Task<void> {
    Etsmgr mgr("imp");
    absl::StatusOr<Pid> m = co_await mgr.WaitForManager(self, Deadline(absl::Milliseconds(30)));
    EXPECT_EQ(m.status().code(), absl::StatusCode::kDeadlineExceeded)
        << "wait_for_manager with an impostor holding the name: " << m.status();
    absl::StatusOr<ManagedTable<int64_t, int64_t>> t =
        co_await ManagedTable<int64_t, int64_t>::Open(self, mgr, "t", TableOptions(), nullptr,
                                                      absl::Milliseconds(30));
    EXPECT_EQ(t.status().code(), absl::StatusCode::kDeadlineExceeded)
        << "ManagedTable::Open with an impostor holding the name: " << t.status();
  });
  Send(impostor, Go{});
}

// Node::Run whose process is killed before its first run: Aborted, never a hang. Both outcomes
// (killed before, or after the body returned) occur across the seeds.
TEST(EdgeCasesDeterministicTest, NodeRunKilledBeforeItsFirstRunAnswers) {
  std::set<std::string> seen;
  for (uint64_t seed = 0; seed < 60; ++seed) {
    auto node = Deterministic(seed);
    node->Spawn([](Process& self) -> Task<void> {
          std::optional<Pid> victim = co_await self.WaitForRegistered("victim");
          if (victim) SendExit(*victim, ExitReason::Kill());
        })
        .value();
    absl::StatusOr<int> got = node->Run<absl::StatusOr<int>>(
        [](Process&) -> Task<absl::StatusOr<int>> { co_return 42; }, {.name = "victim"});
    seen.insert(got.ok() ? "ran" : std::string(absl::StatusCodeToString(got.status().code())));
  }
  EXPECT_EQ(seen, (std::set<std::string>{"ABORTED", "ran"}));
}

// StopManager(discard) racing StartManager: whichever wins, the instance is usable afterwards
// (no zombie that answers already_started to starts and not_started to stops).
TEST(EdgeCasesDeterministicTest, DiscardRacingAStartLeavesAUsableInstance) {
  for (uint64_t seed = 0; seed < 60; ++seed) {
    auto node = Deterministic(seed);
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    absl::Status ran = node->Run(
        [](Process& self) -> Task<void> {
          absl::Status started = co_await StartManager(self, "d");
          CO_ASSERT_OK(started, "start d");
          absl::Status stopped = co_await StopManager(self, "d");
          CO_ASSERT_OK(stopped, "stop d");
          Pid me = self.self();
          self.Spawn([me](Process& p) -> Task<void> {
                (void)co_await StartManager(p, "d");
                Send(me, Go{});
              })
              .value();
          (void)co_await StopManager(self, "d", StopOptions{.discard_tables = true});
          co_await self.Receive<Go>();
          // Usable: a table can be made (starting it if the discard won), stopped, started.
          if (GetInstanceState(self.node(), "d") != InstanceState::kRunning) {
            absl::Status again = co_await StartManager(self, "d");
            CO_ASSERT_OK(again, "restart d after the discard won");
          }
          absl::StatusOr<ManagedTableRef> r =
              co_await Etsmgr("d").NewTable<int64_t, int64_t>(self, "t");
          CO_ASSERT_OK(r, "new_table after the race");
          absl::Status stop = co_await StopManager(self, "d");
          EXPECT_TRUE(stop.ok()) << "stop after the race: " << stop;
          absl::Status start = co_await StartManager(self, "d");
          EXPECT_TRUE(start.ok()) << "start after the race: " << start;
        },
        {.trap_exit = true});
    ASSERT_TRUE(ran.ok()) << "seed " << seed << ": " << ran;
  }
}

// A table given to the vault by hand and claimed back before the vault read the transfer: the
// stale message must not delete the client's table. Both orders occur across the seeds.
TEST(EdgeCasesDeterministicTest, AStaleTransferToTheVaultDeletesNothing) {
  std::set<bool> vault_first;
  for (uint64_t seed = 0; seed < 80; ++seed) {
    auto node = Deterministic(seed);
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    absl::Status ran = node->Run([&vault_first, seed](Process& self) -> Task<void> {
      absl::Status started = co_await StartManager(self, "v");
      CO_ASSERT_OK(started, "start v");
      Etsmgr mgr("v");
      TableOptions pub;
      pub.access = Access::kPublic;  // Anyone may delete it: the vault's rule is all there is.
      absl::StatusOr<ManagedTableRef> r = co_await mgr.NewTable<int64_t, int64_t>(self, "t", pub);
      CO_ASSERT_OK(r, "new_table(t)");
      (void)IntTable::Attach(r->table)->Insert(1, 41);
      Pid vault = self.node().Whereis(mgr.vault_name());
      CO_ASSERT_OK(r->table.GiveAway(vault), "give t to the vault by hand");
      co_await self.Sleep(seed % 2 == 0 ? absl::ZeroDuration() : absl::Milliseconds(1));
      vault_first.insert(GetProcessInfo(vault)->mailbox_length == 0);
      absl::StatusOr<ManagedTableRef> back =
          co_await mgr.NewTable<int64_t, int64_t>(self, "t", pub);
      CO_ASSERT_OK(back, "claim t back");
      absl::Status del = co_await mgr.DelTable(self, "t");
      EXPECT_TRUE(del.ok()) << "del_table(t): " << del;
      co_await self.Sleep(absl::Milliseconds(1));  // The vault reads its mailbox.
      absl::StatusOr<Pid> owner = r->table.Owner();
      EXPECT_TRUE(owner.ok() && *owner == self.self())
          << "the stale transfer deleted nothing: the table is still ours: "
          << (owner.ok() ? owner->ToString() : owner.status().ToString());
    });
    ASSERT_TRUE(ran.ok()) << "seed " << seed << ": " << ran;
  }
  EXPECT_EQ(vault_first.size(), 2u) << "both orders must occur";
}

// A table of another instance given to this vault is not deleted (nor lost to its instance).
// A discard marks its instance, then releases the tables it took and forgets the instance; the
// manager can still be alive meanwhile (its supervisor died, it has not yet handled its parent's
// exit). A call in that window is refused (Unavailable): answered OK, its table would be kept by
// an instance about to be freed, in no directory a later start adopts. The window is made by
// hand here (the mark without the rest of the discard): it is a few instructions wide otherwise.
TEST_F(EdgeCasesTest, ACallOnAnInstanceBeingDiscardedIsRefused) {
  InProcess([](Process& self) -> Task<void> {
    absl::Status started = co_await StartManager(self, "disc");
    CO_ASSERT_OK(started, "start disc");
    std::shared_ptr<manager_internal::Instance> st =
        manager_internal::FindInstance(self.node(), "disc");
    CO_ASSERT_TRUE(st != nullptr, "the instance disc");
    st->discarded.store(true, std::memory_order_release);
    Etsmgr mgr("disc");
    absl::StatusOr<ManagedTableRef> made = co_await mgr.NewTable<int64_t, int64_t>(self, "t");
    EXPECT_THAT(made.status(), StatusIs(absl::StatusCode::kUnavailable));
    absl::StatusOr<IntTable> mine = IntTable::New();
    CO_ASSERT_OK(mine.status(), "new table mine");
    absl::StatusOr<ManagedTableRef> added = co_await mgr.AddTable(self, "mine", mine->any());
    EXPECT_THAT(added.status(), StatusIs(absl::StatusCode::kUnavailable));
    EXPECT_TRUE(mine->Insert(1, 1).ok()) << "a refused AddTable leaves the caller its table";
    st->discarded.store(false, std::memory_order_release);
    absl::Status stopped = co_await StopManager(self, "disc");
    EXPECT_TRUE(stopped.ok()) << stopped;
  });
}

// A discard releases its tables one by one after marking the instance; a start meanwhile makes a
// new instance, where a live client registers its table again (as ManagedTable's reattach does
// when it sees the old manager go). The old keeper, not reached yet, still kept the table: the
// registration was refused (table_exists) and the release that followed left the table with no
// keeper, deleted when its owner exits. The window is made by hand (the mark and the taking of
// the entries without the releases, which follow the new registration).
TEST_F(EdgeCasesTest, ATableRegisteredAgainWhileADiscardReleasesItStaysManaged) {
  InProcess([](Process& self) -> Task<void> {
    absl::Status started = co_await StartManager(self, "redisc");
    CO_ASSERT_OK(started, "start redisc");
    Etsmgr mgr("redisc");
    absl::StatusOr<ManagedTableRef> made = co_await mgr.NewTable<int64_t, int64_t>(self, "t");
    CO_ASSERT_OK(made.status(), "new_table t");
    IntTable t = IntTable::Attach(made->table).value();
    CO_ASSERT_OK(t.Insert(1, 100), "insert");
    absl::Status stopped = co_await StopManager(self, "redisc");
    CO_ASSERT_OK(stopped, "stop redisc (tables kept)");
    std::shared_ptr<manager_internal::Instance> old =
        manager_internal::FindInstance(self.node(), "redisc");
    CO_ASSERT_TRUE(old != nullptr, "the stopped instance redisc");
    std::vector<manager_internal::Entry> entries;
    {
      ExclusiveLock lock(old->mu);
      old->discarded.store(true, std::memory_order_release);
      old->keeper->Abandon();
      entries = old->dir.TakeAll();
    }
    CO_ASSERT_TRUE(entries.size() == 1u, "the discard took t's entry");
    started = co_await StartManager(self, "redisc");
    CO_ASSERT_OK(started, "start redisc again");
    absl::StatusOr<ManagedTableRef> added = co_await mgr.AddTable(self, "t", made->table);
    CO_ASSERT_OK(added.status(), "add_table t to the new instance during the discard");
    absl::StatusOr<bool> deleted = old->keeper->Release(entries[0].table);
    EXPECT_FALSE(deleted.ok() && *deleted) << "the old keeper's release deleted nothing";
    EXPECT_TRUE(t.alive());
    std::shared_ptr<manager_internal::Instance> fresh =
        manager_internal::FindInstance(self.node(), "redisc");
    CO_ASSERT_TRUE(fresh != nullptr && fresh != old, "a new instance redisc");
    EXPECT_TRUE(fresh->keeper->TagOf(made->table) != nullptr) << "the new instance keeps t";
    EXPECT_EQ(t.Get(1).value(), std::optional<int64_t>(100));
    absl::Status stopped_again = co_await StopManager(self, "redisc");
    EXPECT_TRUE(stopped_again.ok()) << stopped_again;
  });
}

// A client that named an heir for its managed table is exiting (held in an exit hook here): a
// new_table of the name meanwhile is refused because the heir inherits (ETS's rule). Another
// process is answered table_exists, as for any table a live process holds (it was
// FailedPrecondition, no atom: a caller deciding by the atom misread it); the heir itself is
// answered Unavailable (the table is on its way to it: ask again).
struct AskForT {};
TEST_F(EdgeCasesTest, ANewTableWhileTheOwnerExitsAndItsHeirInheritsIsTableExists) {
  ASSERT_TRUE(StartManager(*node_, "heirx").ok());
  auto heir_asked = std::make_shared<std::promise<absl::Status>>();
  Pid heir = node_
                 ->Spawn(
                     [heir_asked](Process& self) -> Task<void> {
                       co_await self.Receive<AskForT>();
                       absl::StatusOr<ManagedTableRef> r =
                           co_await Etsmgr("heirx").NewTable<int64_t, int64_t>(self, "t");
                       heir_asked->set_value(r.status());
                       co_await self.Receive<Go>();
                     },
                     {.scheduler = 1, .pin = true})
                 .value();
  ExitGate gate;
  Pid client = node_
                   ->Spawn(
                       [gate = gate.handle(), heir](Process& self) -> Task<void> {
                         absl::StatusOr<ManagedTableRef> r =
                             co_await Etsmgr("heirx").NewTable<int64_t, int64_t>(self, "t");
                         EXPECT_TRUE(r.ok()) << r.status();
                         if (!r.ok()) {
                           gate.GiveUp();
                           co_return;
                         }
                         EXPECT_TRUE(r->table.SetHeir(heir).ok());
                         gate.Install(self.self());
                       },
                       {.scheduler = 0, .pin = true})
                   .value();
  ASSERT_TRUE(gate.WaitEntered());
  // The client's exit blocks scheduler 0: everything else runs pinned to scheduler 1.
  absl::Status asked;
  RunInProcess(*node_,
               [&](Process& self) -> Task<void> {
                 absl::StatusOr<ManagedTableRef> r =
                     co_await Etsmgr("heirx").NewTable<int64_t, int64_t>(self, "t");
                 asked = r.status();
               },
               {.scheduler = 1, .pin = true});
  Send(heir, AskForT{});
  std::future<absl::Status> heir_answer = heir_asked->get_future();
  ASSERT_EQ(heir_answer.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  gate.Open();
  AwaitDeath(*node_, client);
  EXPECT_THAT(asked, StatusIs(absl::StatusCode::kAlreadyExists, Atom::kTableExists));
  EXPECT_THAT(heir_answer.get(), StatusIs(absl::StatusCode::kUnavailable));
  Send(heir, Go{});
  ASSERT_TRUE(StopManager(*node_, "heirx").ok());
}

TEST_F(EdgeCasesTest, TheVaultKeepsAnotherInstancesTable) {
  ASSERT_TRUE(StartManager(*node_, "a").ok());
  ASSERT_TRUE(StartManager(*node_, "b").ok());
  InProcess([](Process& self) -> Task<void> {
    absl::StatusOr<ManagedTableRef> r = co_await Etsmgr("b").NewTable<int64_t, int64_t>(self, "t");
    CO_ASSERT_OK(r, "new_table(t) of instance b");
    Pid vault_a = self.node().Whereis(Etsmgr("a").vault_name());
    Pid vault_b = self.node().Whereis(Etsmgr("b").vault_name());
    EXPECT_TRUE(r->table.GiveAway(vault_a).ok());
    // Vault a passes it on to the vault of the instance that keeps it (held by vault a, instance
    // b answered table_exists for it until vault a exited).
    const absl::Time deadline = Deadline(absl::Seconds(10));
    while (r->table.Owner().value_or(Pid()) != vault_b && absl::Now() < deadline) {
      co_await self.Sleep(absl::Microseconds(50));
    }
    EXPECT_EQ(r->table.Owner().value_or(Pid()), vault_b) << "passed on to instance b's vault";
    EXPECT_TRUE(r->table.alive()) << "the vault of instance a did not delete b's table";
    absl::StatusOr<ManagedTableRef> again =
        co_await Etsmgr("b").NewTable<int64_t, int64_t>(self, "t");
    CO_ASSERT_OK(again, "new_table(t) of instance b gets it back");
    EXPECT_FALSE(again->created);
    EXPECT_EQ(again->table, r->table);
    absl::StatusOr<ManagerInfo> b = co_await Etsmgr("b").Info(self);
    CO_ASSERT_OK(b, "info of instance b");
    EXPECT_EQ(b->counters.tables_lost, 0u) << "instance b lost no table";
  });
}

// The same while instance b is down (stopped; the same holds while its vault restarts or after
// its restart intensity ran out): vault a parks b's table for b's next vault instead of holding
// it, so b's restarted instance hands it back. (Held by vault a, b answered table_exists for it
// for as long as vault a lived.)
TEST_F(EdgeCasesTest, AnotherInstancesTableWaitsForItsInstanceToComeBack) {
  ASSERT_TRUE(StartManager(*node_, "a").ok());
  ASSERT_TRUE(StartManager(*node_, "b").ok());
  InProcess([](Process& self) -> Task<void> {
    absl::StatusOr<ManagedTableRef> r = co_await Etsmgr("b").NewTable<int64_t, int64_t>(self, "t");
    CO_ASSERT_OK(r, "new_table(t) of instance b");
    CO_ASSERT_TRUE(IntTable::Attach(r->table)->Insert(1, 100).ok(), "insert into t");
    absl::Status stopped = co_await StopManager(self, "b");
    CO_ASSERT_OK(stopped, "stop b");
    Pid vault_a = self.node().Whereis(Etsmgr("a").vault_name());
    CO_ASSERT_TRUE(r->table.GiveAway(vault_a).ok(), "give t to vault a");
    // Vault a takes it in, then lets b's keeper have it: parked, owned by nobody.
    const absl::Time deadline = Deadline(absl::Seconds(10));
    while (r->table.Owner().value_or(Pid()) != Pid() && absl::Now() < deadline) {
      co_await self.Sleep(absl::Microseconds(50));
    }
    EXPECT_EQ(r->table.Owner().value_or(vault_a), Pid()) << "parked for instance b's next vault";
    absl::Status started = co_await StartManager(self, "b");
    CO_ASSERT_OK(started, "start b again");
    absl::StatusOr<ManagedTableRef> again =
        co_await Etsmgr("b").NewTable<int64_t, int64_t>(self, "t");
    CO_ASSERT_OK(again, "new_table(t) of the restarted instance b gets it back");
    EXPECT_FALSE(again->created);
    EXPECT_EQ(again->table, r->table);
    EXPECT_EQ(IntTable::Attach(again->table)->Get(1).value_or(std::nullopt),
              std::optional<int64_t>(100));
    absl::StatusOr<ManagerInfo> b = co_await Etsmgr("b").Info(self);
    CO_ASSERT_OK(b, "info of instance b");
    EXPECT_EQ(b->counters.tables_lost, 0u) << "instance b lost no table";
  });
}

// A call that fails leaves alone a link the caller had made to the manager itself: it undid
// "the link this call made", which was the caller's own, and the caller no longer heard of the
// manager's exit.
TEST_F(EdgeCasesTest, AFailedCallKeepsTheCallersOwnLinkToTheManager) {
  ASSERT_TRUE(StartManager(*node_, "own").ok());
  InProcess([](Process& self) -> Task<void> {
    Etsmgr mgr("own");
    // Another process makes "t" and keeps it while the test asks for it.
    CO_ASSERT_TRUE(self.node().Register("own-test", self.self()).ok(), "register");
    Pid holder = self.Spawn([](Process& p) -> Task<void> {
                       absl::StatusOr<ManagedTableRef> r =
                           co_await Etsmgr("own").NewTable<int64_t, int64_t>(p, "t");
                       EXPECT_TRUE(r.ok()) << r.status();
                       Send(p.node().Whereis("own-test"), Go{});
                       co_await p.Receive<Go>();
                     })
                     .value();
    co_await self.Receive<Go>();
    Pid manager = self.node().Whereis(mgr.server_name());
    CO_ASSERT_TRUE(manager.valid(), "the manager runs");
    self.Link(manager);
    absl::StatusOr<ManagedTableRef> r = co_await mgr.NewTable<int64_t, int64_t>(self, "t");
    EXPECT_EQ(r.status().code(), absl::StatusCode::kAlreadyExists) << r.status();
    EXPECT_TRUE(self.LinkedTo(manager)) << "the caller's own link to the manager was undone";
    Send(holder, Go{});
  });
}

struct VaultWaits {
  Pid vault;
};
struct VaultGo {};
Task<void> HoldTheVault(Process& vault) {
  Send(vault.node().Whereis("vault-test"), VaultWaits{vault.self()});
  co_await vault.Receive<VaultGo>();
}

// A table given to a restarted vault before that vault became the holder (it is registered and
// alive from its spawn): held by it from then on, so new_table hands it back. It was owned by
// the vault but not "held" (that was judged against the dead vault), and every new_table got
// table_exists until the vault exited.
TEST_F(EdgeCasesTest, ATableReachingARestartedVaultBeforeItHoldsIsHeld) {
  ASSERT_TRUE(StartManager(*node_, "hv").ok());
  InProcess([](Process& self) -> Task<void> {
    Etsmgr mgr("hv");
    CO_ASSERT_TRUE(self.node().Register("vault-test", self.self()).ok(), "register");
    absl::StatusOr<ManagedTableRef> r = co_await mgr.NewTable<int64_t, int64_t>(self, "t");
    CO_ASSERT_OK(r, "new_table(t)");
    manager_internal::g_vault_start_hook.store(&HoldTheVault);
    SendExit(self.node().Whereis(mgr.vault_name()), ExitReason::Kill());
    VaultWaits waits = co_await self.Receive<VaultWaits>();
    manager_internal::g_vault_start_hook.store(nullptr);
    CO_ASSERT_TRUE(r->table.GiveAway(waits.vault).ok(), "give t to the restarted vault");
    Send(waits.vault, VaultGo{});
    absl::StatusOr<ManagedTableRef> again;
    const absl::Time deadline = Deadline(absl::Seconds(10));
    do {
      co_await self.Sleep(absl::Microseconds(100));
      again = co_await mgr.NewTable<int64_t, int64_t>(self, "t");
    } while (!again.ok() && absl::Now() < deadline);
    CO_ASSERT_OK(again, "new_table(t) gets it back from the vault");
    EXPECT_FALSE(again->created);
    EXPECT_EQ(again->table, r->table);
  });
}

// Close while the manager is restarting answers Unavailable and deletes nothing.
TEST_F(EdgeCasesTest, CloseDuringARestartDeletesNothing) {
  ASSERT_TRUE(StartManager(*node_, "c").ok());
  InProcess([](Process& self) -> Task<void> {
    Etsmgr mgr("c");
    absl::StatusOr<ManagedTable<int64_t, int64_t>> t =
        co_await ManagedTable<int64_t, int64_t>::Open(self, mgr, "t", TableOptions(), nullptr);
    CO_ASSERT_OK(t, "open t");
    absl::Status stopped = co_await StopManager(self, "c");
    EXPECT_TRUE(stopped.ok()) << "stop c: " << stopped;
    absl::Status closed = co_await t->Close(self);
    EXPECT_EQ(closed.code(), absl::StatusCode::kUnavailable)
        << "close while the manager is down: " << closed;
    EXPECT_TRUE(t->table().alive()) << "close while the manager is down deletes nothing";
  });
}

// A client that replaces its own dead entry stays linked to the manager.
TEST_F(EdgeCasesTest, ReplacingYourOwnDeadEntryKeepsTheLink) {
  ASSERT_TRUE(StartManager(*node_, "l").ok());
  InProcess([](Process& self) -> Task<void> {
    Etsmgr mgr("l");
    absl::StatusOr<ManagedTableRef> r = co_await mgr.NewTable<int64_t, int64_t>(self, "t");
    CO_ASSERT_OK(r, "new_table(t)");
    EXPECT_TRUE(r->table.Delete().ok());  // Deleted while managed (counted lost).
    absl::StatusOr<ManagedTableRef> again = co_await mgr.NewTable<int64_t, int64_t>(self, "t");
    CO_ASSERT_OK(again, "new_table(t) replacing its own dead entry");
    absl::StatusOr<ProcessInfo> info = GetProcessInfo(self.self());
    bool linked = false;
    for (const Pid& l : info->links) linked |= l == again->manager;
    absl::StatusOr<ManagerInfo> mi = co_await mgr.Info(self);
    EXPECT_TRUE(again->created) << "the replacement is created";
    EXPECT_TRUE(linked) << "the client stays linked to the manager";
    CO_ASSERT_OK(mi, "info");
    EXPECT_EQ(mi->counters.tables_lost, 1u) << "the deleted managed table counts as lost";
  });
}

// exit(manager, normal) from a live client is not that client's death: its entries stay.
TEST_F(EdgeCasesTest, AnExitSignalFromALiveClientIsNotItsDeath) {
  ASSERT_TRUE(StartManager(*node_, "x").ok());
  InProcess([](Process& self) -> Task<void> {
    Etsmgr mgr("x");
    absl::StatusOr<ManagedTableRef> r = co_await mgr.NewTable<int64_t, int64_t>(self, "t");
    CO_ASSERT_OK(r, "new_table(t)");
    SendExit(r->manager, ExitReason::Normal(), self.self());
    absl::StatusOr<ManagerInfo> info;
    for (int i = 0; i < 3; ++i) {  // Three round trips through the manager's mailbox.
      co_await self.Sleep(absl::Milliseconds(1));
      info = co_await mgr.Info(self);
    }
    CO_ASSERT_OK(info, "info");
    CO_ASSERT_TRUE(!info->tables.empty(), "the table is still managed");
    EXPECT_EQ(info->tables.at(0).client, self.self()) << "the entry keeps its live client";
  });
}

// Misuse is a status: a keeper not owned by a shared_ptr; a factory that returns no table, a
// foreign table or other types; a table call from inside a factory.
// A call given another process's Process& (a captured reference, say) is refused: it would make
// the table's owner (the running process) and the registered client two processes, and suspend
// a process that is not running.
TEST_F(EdgeCasesTest, ACallWithAnotherProcesssProcessIsInvalidArgument) {
  ASSERT_TRUE(StartManager(*node_, "wrong").ok());
  auto other_self = std::make_shared<std::promise<Process*>>();
  Pid other = node_
                  ->Spawn([other_self](Process& self) -> Task<void> {
                    other_self->set_value(&self);
                    co_await self.Receive<Go>();
                  })
                  .value();
  Process* theirs = other_self->get_future().get();
  InProcess([theirs](Process& self) -> Task<void> {
    Etsmgr mgr("wrong");
    absl::StatusOr<ManagedTableRef> made = co_await mgr.NewTable<int64_t, int64_t>(*theirs, "t");
    EXPECT_THAT(made.status(), StatusIs(absl::StatusCode::kInvalidArgument));
    IntTable mine = IntTable::New().value();
    EXPECT_THAT(co_await mgr.AddTable(*theirs, "t", mine.any()),
                StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(co_await mgr.DelTable(*theirs, "t"), StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT((co_await mgr.Info(*theirs)).status(),
                StatusIs(absl::StatusCode::kInvalidArgument));
    // It would suspend the other process waiting for a manager (WaitForManager, and
    // ManagedTable::Open through it).
    Etsmgr not_started("not-started");
    EXPECT_THAT(
        (co_await not_started.WaitForManager(*theirs, Deadline(absl::Milliseconds(300)))).status(),
        StatusIs(absl::StatusCode::kInvalidArgument));
    absl::StatusOr<ManagedTableRef> right = co_await mgr.NewTable<int64_t, int64_t>(self, "t");
    EXPECT_TRUE(right.ok()) << right.status();
  });
  Send(other, Go{});
  ASSERT_TRUE(StopManager(*node_, "wrong").ok());
}

TEST_F(EdgeCasesTest, MisuseIsAStatusNotACrash) {
  ASSERT_TRUE(StartManager(*node_, "m").ok());
  InProcess([](Process& self) -> Task<void> {
    TableKeeper on_stack;
    IntTable t = IntTable::New().value();
    absl::Status kept = on_stack.Keep(t.any(), nullptr);
    EXPECT_EQ(kept.code(), absl::StatusCode::kFailedPrecondition)
        << "Keep on a keeper not owned by a shared_ptr: " << kept;
    Etsmgr mgr("m");
    auto with = [&](absl::StatusOr<AnyTable> (*create)(TableOptions)) {
      manager_internal::TableFactory f;
      f.key_type = &typeid(int64_t);
      f.value_type = &typeid(int64_t);
      f.create = create;
      return f;
    };
    const char* const kFactories[] = {"a factory that returns no table",
                                      "a factory that returns a table of other types"};
    int i = 0;
    for (auto create : std::vector<absl::StatusOr<AnyTable> (*)(TableOptions)>{
             [](TableOptions) -> absl::StatusOr<AnyTable> { return AnyTable(); },
             [](TableOptions) -> absl::StatusOr<AnyTable> {
               return Table<std::string, int64_t>::New().value().any();
             }}) {
      absl::StatusOr<ManagedTableRef> r = co_await manager_internal::EtsmgrAccess::NewTableErased(
          mgr, self, "f", TableOptions(), with(create), absl::Seconds(1));
      EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument)
          << kFactories[i] << ": " << r.status();
      ++i;
    }
  });
}

// Two child specs of one instance under one supervisor: the second is already_started (they do
// not kill each other); an empty instance name is refused.
TEST_F(EdgeCasesTest, EmbeddedDuplicatesAndEmptyNames) {
  std::vector<ChildSpec> twice = {ManagerChildSpec("dup"), ManagerChildSpec("dup")};
  twice[1].id = "second";
  absl::StatusOr<Pid> sup = StartSupervisor(*node_, {}, twice);
  EXPECT_THAT(sup, StatusIs(absl::StatusCode::kAlreadyExists, Atom::kAlreadyStarted));
  absl::StatusOr<Pid> empty = StartSupervisor(*node_, {}, {ManagerChildSpec("")});
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument) << empty.status();
}

// An init that throws leaves the table for the next Open to initialise.
TEST_F(EdgeCasesTest, AThrowingInitLeavesTheTableUninitialised) {
  ASSERT_TRUE(StartManager(*node_, "i").ok());
  InProcess([](Process& self) -> Task<void> {
    Pid me = self.self();
    Pid first = self.Spawn([me](Process& p) -> Task<void> {
                      (void)co_await ManagedTable<int64_t, int64_t>::Open(
                          p, Etsmgr("i"), "t", TableOptions(),
                          [](IntTable&) -> absl::Status { throw std::runtime_error("init"); });
                      Send(me, Go{});
                    })
                    .value();
    co_await AwaitDown(self, first);
    absl::StatusOr<ManagedTableRef> r = co_await Etsmgr("i").NewTable<int64_t, int64_t>(self, "t");
    EXPECT_TRUE(r.ok() && r->created) << "the next new_table creates (initialises) the table: "
                                      << (r.ok() ? "created=0" : r.status().ToString());
  });
}

// System processes keep making progress under any user load: four processes that always have a
// message ready flood the only scheduler, and still the manager restarts after a kill, a dead
// client's table is handed back, and info() answers -- each within a bound.
struct Flood {};
TEST(EdgeCasesFloodTest, TheInstanceWorksWhileUserProcessesFloodItsScheduler) {
  auto node = Node::Create({.schedulers = 1}).value();
  ASSERT_TRUE(StartManager(*node, "f").ok());
  std::vector<Pid> flooders;
  for (int i = 0; i < 4; ++i) {
    flooders.push_back(node->Spawn([](Process& self) -> Task<void> {
                             while (true) {
                               Send(self.self(), Flood{});
                               Message m = co_await self.Receive();
                               if (m.Is<Go>()) co_return;
                             }
                           })
                           .value());
  }
  absl::Status ran = node->Run(
      [](Process& self) -> Task<void> {
        Etsmgr mgr("f");
        absl::Time t0 = Now();
        // A client makes a table and dies; the manager is killed; a new client gets the table.
        Pid me = self.self();
        Pid client = self.Spawn([me](Process& p) -> Task<void> {
                           absl::StatusOr<ManagedTableRef> r =
                               co_await Etsmgr("f").NewTable<int64_t, int64_t>(p, "t");
                           if (r.ok()) (void)IntTable::Attach(r->table)->Insert(1, 41);
                           Send(me, Go{});
                           co_await p.Receive<Go>();
                         })
                         .value();
        co_await self.Receive<Go>();
        SendExit(client, ExitReason::Kill());
        co_await AwaitDown(self, client);
        Pid manager = self.node().Whereis(mgr.server_name());
        SendExit(manager, ExitReason::Kill());
        co_await AwaitDown(self, manager);
        absl::StatusOr<Pid> back = co_await mgr.WaitForManager(self, Deadline(absl::Seconds(10)));
        CO_ASSERT_OK(back, "the manager's restart");
        absl::StatusOr<ManagedTableRef> r = co_await mgr.NewTable<int64_t, int64_t>(self, "t");
        CO_ASSERT_OK(r, "new_table(t) by a new client");
        absl::StatusOr<ManagerInfo> info = co_await mgr.Info(self);
        CO_ASSERT_OK(info, "info");
        absl::StatusOr<std::optional<int64_t>> v = IntTable::Attach(r->table)->Get(1);
        EXPECT_FALSE(r->created) << "the dead client's table is handed back, not created";
        EXPECT_EQ(v.ok() && v->has_value() ? **v : -1, 41) << "with its data";
        EXPECT_EQ(info->counters.manager_restarts, 1u) << "manager_restarts";
        EXPECT_LT(Now() - t0, absl::Seconds(5)) << "all of it within 5 s under the flood";
      },
      {.trap_exit = true});
  for (const Pid& f : flooders) Send(f, Go{});
  ASSERT_TRUE(ran.ok()) << ran;
}

}  // namespace
}  // namespace etsmgr
