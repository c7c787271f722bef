// The manager's edge cases: impostors and stale processes holding names, discards racing starts,
// stale messages to the vault, exit signals from live processes, misuse through the public API.
// Each case once made a table lost, a call spin or hang, or a process crash.
#include <cstdint>
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
#include "etsmgr/process/internal/test_util.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

namespace etsmgr {
namespace {

using IntTable = Table<int64_t, int64_t>;
using Report = std::function<void(std::string)>;
struct Go {};

class EdgeCasesTest : public ::testing::Test {
 protected:
  void SetUp() override { node_ = Node::Create({.schedulers = 2}).value(); }
  std::string Probe(ProbeBody body) {
    return RunProbe(*node_, std::move(body), {.trap_exit = true});
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
  std::string got = Probe([](Process& self, Report report) -> Task<void> {
    Etsmgr mgr("imp");
    absl::StatusOr<Pid> m = co_await mgr.WaitForManager(self, Deadline(absl::Milliseconds(30)));
    absl::StatusOr<ManagedTable<int64_t, int64_t>> t =
        co_await ManagedTable<int64_t, int64_t>::Open(self, mgr, "t", TableOptions(), nullptr,
                                                      absl::Milliseconds(30));
    report(absl::StrCat(absl::StatusCodeToString(m.status().code()), " ",
                        absl::StatusCodeToString(t.status().code())));
  });
  EXPECT_EQ(got, "DEADLINE_EXCEEDED DEADLINE_EXCEEDED");
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
    absl::StatusOr<std::string> got = node->Run<absl::StatusOr<std::string>>(
        [](Process& self) -> Task<absl::StatusOr<std::string>> {
          absl::Status started = co_await StartManager(self, "d");
          if (!started.ok()) co_return started;
          absl::Status stopped = co_await StopManager(self, "d");
          if (!stopped.ok()) co_return stopped;
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
            if (!again.ok()) co_return absl::InternalError("restart: " + again.ToString());
          }
          absl::StatusOr<ManagedTableRef> r =
              co_await Etsmgr("d").NewTable<int64_t, int64_t>(self, "t");
          if (!r.ok()) co_return absl::InternalError("new_table: " + r.status().ToString());
          absl::Status stop = co_await StopManager(self, "d");
          absl::Status start = co_await StartManager(self, "d");
          co_return absl::StrCat(stop.ok(), start.ok());
        },
        {.trap_exit = true});
    ASSERT_TRUE(got.ok()) << "seed " << seed << ": " << got.status();
    EXPECT_EQ(*got, "11") << "seed " << seed;
  }
}

// A table given to the vault by hand and claimed back before the vault read the transfer: the
// stale message must not delete the client's table. Both orders occur across the seeds.
TEST(EdgeCasesDeterministicTest, AStaleTransferToTheVaultDeletesNothing) {
  std::set<bool> vault_first;
  for (uint64_t seed = 0; seed < 80; ++seed) {
    auto node = Deterministic(seed);
    absl::StatusOr<std::string> got = node->Run<absl::StatusOr<std::string>>(
        [&vault_first, seed](Process& self) -> Task<absl::StatusOr<std::string>> {
          absl::Status started = co_await StartManager(self, "v");
          if (!started.ok()) co_return started;
          Etsmgr mgr("v");
          TableOptions pub;
          pub.access = Access::kPublic;  // Anyone may delete it: the vault's rule is all there is.
          absl::StatusOr<ManagedTableRef> r =
              co_await mgr.NewTable<int64_t, int64_t>(self, "t", pub);
          if (!r.ok()) co_return r.status();
          (void)IntTable::Attach(r->table)->Insert(1, 41);
          Pid vault = self.node().Whereis(mgr.vault_name());
          if (!r->table.GiveAway(vault).ok()) co_return absl::InternalError("give_away");
          co_await self.Sleep(seed % 2 == 0 ? absl::ZeroDuration() : absl::Milliseconds(1));
          vault_first.insert(GetProcessInfo(vault)->mailbox_length == 0);
          absl::StatusOr<ManagedTableRef> back =
              co_await mgr.NewTable<int64_t, int64_t>(self, "t", pub);
          if (!back.ok()) co_return back.status();
          absl::Status del = co_await mgr.DelTable(self, "t");
          co_await self.Sleep(absl::Milliseconds(1));  // The vault reads its mailbox.
          absl::StatusOr<Pid> owner = r->table.Owner();
          co_return absl::StrCat("del=", del.ok(), " mine=", owner.ok() && *owner == self.self());
        });
    ASSERT_TRUE(got.ok()) << "seed " << seed << ": " << got.status();
    EXPECT_EQ(*got, "del=1 mine=1") << "seed " << seed;
  }
  EXPECT_EQ(vault_first.size(), 2u) << "both orders must occur";
}

// A table of another instance given to this vault is not deleted (nor lost to its instance).
TEST_F(EdgeCasesTest, TheVaultKeepsAnotherInstancesTable) {
  ASSERT_TRUE(StartManager(*node_, "a").ok());
  ASSERT_TRUE(StartManager(*node_, "b").ok());
  std::string got = Probe([](Process& self, Report report) -> Task<void> {
    absl::StatusOr<ManagedTableRef> r = co_await Etsmgr("b").NewTable<int64_t, int64_t>(self, "t");
    Pid vault_a = self.node().Whereis(Etsmgr("a").vault_name());
    EXPECT_TRUE(r->table.GiveAway(vault_a).ok());
    // The vault has read the transfer once a message sent after it is answered.
    while (GetProcessInfo(vault_a)->mailbox_length > 0) co_await self.Sleep(absl::Microseconds(50));
    co_await self.Sleep(absl::Milliseconds(1));
    absl::StatusOr<ManagerInfo> b = co_await Etsmgr("b").Info(self);
    report(absl::StrCat("alive=", r->table.alive(), " lost=", b->counters.tables_lost));
  });
  EXPECT_EQ(got, "alive=1 lost=0");
}

// Close while the manager is restarting answers Unavailable and deletes nothing.
TEST_F(EdgeCasesTest, CloseDuringARestartDeletesNothing) {
  ASSERT_TRUE(StartManager(*node_, "c").ok());
  std::string got = Probe([](Process& self, Report report) -> Task<void> {
    Etsmgr mgr("c");
    absl::StatusOr<ManagedTable<int64_t, int64_t>> t =
        co_await ManagedTable<int64_t, int64_t>::Open(self, mgr, "t", TableOptions(), nullptr);
    if (!t.ok()) co_return report(t.status().ToString());
    absl::Status stopped = co_await StopManager(self, "c");
    absl::Status closed = co_await t->Close(self);
    report(absl::StrCat(stopped.ok(), " ", absl::StatusCodeToString(closed.code()),
                        " alive=", t->table().alive()));
  });
  EXPECT_EQ(got, "1 UNAVAILABLE alive=1");
}

// A client that replaces its own dead entry stays linked to the manager.
TEST_F(EdgeCasesTest, ReplacingYourOwnDeadEntryKeepsTheLink) {
  ASSERT_TRUE(StartManager(*node_, "l").ok());
  std::string got = Probe([](Process& self, Report report) -> Task<void> {
    Etsmgr mgr("l");
    absl::StatusOr<ManagedTableRef> r = co_await mgr.NewTable<int64_t, int64_t>(self, "t");
    EXPECT_TRUE(r->table.Delete().ok());  // Deleted while managed (counted lost).
    absl::StatusOr<ManagedTableRef> again = co_await mgr.NewTable<int64_t, int64_t>(self, "t");
    absl::StatusOr<ProcessInfo> info = GetProcessInfo(self.self());
    bool linked = false;
    for (const Pid& l : info->links) linked |= l == again->manager;
    absl::StatusOr<ManagerInfo> mi = co_await mgr.Info(self);
    report(absl::StrCat("created=", again->created, " linked=", linked,
                        " lost=", mi->counters.tables_lost));
  });
  EXPECT_EQ(got, "created=1 linked=1 lost=1");
}

// exit(manager, normal) from a live client is not that client's death: its entries stay.
TEST_F(EdgeCasesTest, AnExitSignalFromALiveClientIsNotItsDeath) {
  ASSERT_TRUE(StartManager(*node_, "x").ok());
  std::string got = Probe([](Process& self, Report report) -> Task<void> {
    Etsmgr mgr("x");
    absl::StatusOr<ManagedTableRef> r = co_await mgr.NewTable<int64_t, int64_t>(self, "t");
    SendExit(r->manager, ExitReason::Normal(), self.self());
    absl::StatusOr<ManagerInfo> info;
    for (int i = 0; i < 3; ++i) {  // Three round trips through the manager's mailbox.
      co_await self.Sleep(absl::Milliseconds(1));
      info = co_await mgr.Info(self);
    }
    report(absl::StrCat("client_is_me=", info->tables.at(0).client == self.self()));
  });
  EXPECT_EQ(got, "client_is_me=1");
}

// Misuse is a status: a keeper not owned by a shared_ptr; a factory that returns no table, a
// foreign table or other types; a table call from inside a factory.
TEST_F(EdgeCasesTest, MisuseIsAStatusNotACrash) {
  ASSERT_TRUE(StartManager(*node_, "m").ok());
  std::string got = Probe([](Process& self, Report report) -> Task<void> {
    std::string out;
    TableKeeper on_stack;
    IntTable t = IntTable::New().value();
    out += absl::StatusCodeToString(on_stack.Keep(t.any(), nullptr).code());
    Etsmgr mgr("m");
    auto with = [&](absl::StatusOr<AnyTable> (*create)(TableOptions)) {
      manager_internal::TableFactory f;
      f.key_type = &typeid(int64_t);
      f.value_type = &typeid(int64_t);
      f.create = create;
      return f;
    };
    for (auto create : std::vector<absl::StatusOr<AnyTable> (*)(TableOptions)>{
             [](TableOptions) -> absl::StatusOr<AnyTable> { return AnyTable(); },
             [](TableOptions) -> absl::StatusOr<AnyTable> {
               return Table<std::string, int64_t>::New().value().any();
             }}) {
      absl::StatusOr<ManagedTableRef> r = co_await manager_internal::EtsmgrAccess::NewTableErased(
          mgr, self, "f", TableOptions(), with(create), absl::Seconds(1));
      out += " " + std::string(absl::StatusCodeToString(r.status().code()));
    }
    report(out);
  });
  EXPECT_EQ(got, "FAILED_PRECONDITION INVALID_ARGUMENT INVALID_ARGUMENT");
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
  std::string got = Probe([](Process& self, Report report) -> Task<void> {
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
    report(absl::StrCat("created=", r.ok() && r->created));
  });
  EXPECT_EQ(got, "created=1");
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
  absl::StatusOr<std::string> got = node->Run<absl::StatusOr<std::string>>(
      [](Process& self) -> Task<absl::StatusOr<std::string>> {
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
        if (!back.ok()) co_return back.status();
        absl::StatusOr<ManagedTableRef> r = co_await mgr.NewTable<int64_t, int64_t>(self, "t");
        if (!r.ok()) co_return r.status();
        absl::StatusOr<ManagerInfo> info = co_await mgr.Info(self);
        if (!info.ok()) co_return info.status();
        absl::StatusOr<std::optional<int64_t>> v = IntTable::Attach(r->table)->Get(1);
        co_return absl::StrCat("created=", r->created,
                               " value=", v.ok() && v->has_value() ? **v : -1,
                               " restarts=", info->counters.manager_restarts,
                               " in_time=", Now() - t0 < absl::Seconds(5));
      },
      {.trap_exit = true});
  for (const Pid& f : flooders) Send(f, Go{});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "created=0 value=41 restarts=1 in_time=1");
}

}  // namespace
}  // namespace etsmgr
