// No managed table lost, whatever dies. Each race runs in deterministic mode over many seeds (a
// failing seed replays with RuntimeOptions::seed) and, where it races threads, on a real
// two-scheduler runtime too (under tsan in the suite). Where a scenario has several acceptable
// outcomes, each must be seen across the seeds: a race test that never hits its race fails.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "etsmgr/base/log.h"
#include "etsmgr/manager/internal/instance.h"
#include "etsmgr/manager/managed_table.h"
#include "etsmgr/manager/manager.h"
#include "etsmgr/process/internal/process_control.h"
#include "etsmgr/process/testing/test_util.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

using IntTable = Table<int64_t, int64_t>;
constexpr char kInst[] = "noloss";
constexpr uint64_t kSeeds = 120;

struct Ready {
  bool ok;
};
struct Go {};
struct Crash {};

std::string Srv() { return InstToName("etsmgr_srv", kInst); }
std::string Vault() { return InstToName("etsmgr_vault", kInst); }
std::string Sup() { return InstToName("etsmgr_sup", kInst); }

// Creates `name` holding 1 -> 41, tells `driver`, then idles (trapping exits, never re-adding:
// the worst case for the manager). Crash{} makes it throw.
Task<void> Client(Process& self, Pid driver, std::string name) {
  Etsmgr mgr(kInst);
  absl::StatusOr<ManagedTableRef> r = co_await mgr.NewTable<int64_t, int64_t>(self, name);
  bool ok = r.ok() && IntTable::Attach(r->table)->Insert(1, 41).ok();
  Send(driver, Ready{ok});
  while (true) {
    Message m = co_await self.Receive();
    if (m.Is<Crash>()) throw std::runtime_error("client crash");
  }
}

Pid SpawnClient(Process& self, std::string name) {
  Pid me = self.self();
  SpawnOptions options;
  options.trap_exit = true;
  return self.Spawn([me, name](Process& p) { return Client(p, me, name); }, options).value();
}

// What a restarted client finds for `name`: whether it was handed out as new, and the value
// under key 1 (-1: none).
struct Claimed {
  bool created = false;
  int64_t value = -1;
};

// Waits for the manager (riding out restarts) and asks for `name`.
Task<absl::StatusOr<Claimed>> ClaimTable(Process& self, std::string name,
                                         absl::Duration wait = absl::Seconds(30)) {
  Etsmgr mgr(kInst);
  absl::Time deadline = Deadline(wait);
  while (true) {
    absl::StatusOr<Pid> m = co_await mgr.WaitForManager(self, deadline);
    if (!m.ok()) co_return m.status();
    absl::StatusOr<ManagedTableRef> r = co_await mgr.NewTable<int64_t, int64_t>(self, name);
    if (r.ok()) {
      absl::StatusOr<std::optional<int64_t>> v = IntTable::Attach(r->table)->Get(1);
      co_return Claimed{.created = r->created,
                        .value = v.ok() && v->has_value() ? **v : int64_t{-1}};
    }
    if (r.status().code() != absl::StatusCode::kUnavailable) co_return r.status();
  }
}

// The same as an outcome: "created=<0|1> value=<v>" or the error (for races with several
// acceptable outcomes, each of which must occur).
Task<std::string> Claim(Process& self, std::string name) {
  absl::StatusOr<Claimed> c = co_await ClaimTable(self, std::move(name));
  if (!c.ok()) co_return c.status().ToString();
  co_return absl::StrCat("created=", c->created, " value=", c->value);
}

// In a scenario: `name` comes back as the client left it (not created, 1 -> 41).
Task<void> ExpectBack(Process& self, std::string name) {
  absl::StatusOr<Claimed> c = co_await ClaimTable(self, name);
  CO_ASSERT_OK(c, absl::StrCat("claim ", name));
  EXPECT_FALSE(c->created) << name << " comes back held, not created";
  EXPECT_EQ(c->value, 41) << name << " comes back with its data";
}

// Info once the manager runs: "tables=N name:client=..,owner=vault|parked|..,size=.. lost=L".
Task<std::string> InfoLine(Process& self) {
  Etsmgr mgr(kInst);
  absl::Time deadline = Deadline(absl::Seconds(30));
  while (true) {
    absl::StatusOr<Pid> m = co_await mgr.WaitForManager(self, deadline);
    if (!m.ok()) co_return m.status().ToString();
    absl::StatusOr<ManagerInfo> info = co_await mgr.Info(self);
    if (!info.ok()) continue;
    std::map<std::string, std::string> rows;
    for (const ManagedTableInfo& t : info->tables) {
      std::string owner = t.owner == info->vault ? "vault" : !t.owner.valid() ? "parked" : "other";
      rows[t.name] = absl::StrCat(t.name, ":client=", t.client.valid() ? "some" : "none",
                                  ",owner=", owner, ",size=", t.size);
    }
    std::string line = absl::StrCat("tables=", info->tables.size());
    for (const auto& [name, row] : rows) line += " " + row;
    co_return line + absl::StrCat(" lost=", info->counters.tables_lost);
  }
}

// Starts the instance embedded under a supervisor linked to the driver (lenient intensity).
Task<absl::StatusOr<Pid>> StartEmbedded(Process& self, int parent_intensity = 100,
                                        ManagerOptions options = {}) {
  std::vector<ChildSpec> children;
  children.push_back(ManagerChildSpec(kInst, options));
  SupervisorFlags flags;
  flags.intensity = parent_intensity;
  co_return co_await StartSupervisorLink(self, flags, std::move(children));
}

Task<void> KillAndAwait(Process& self, const Pid& pid) {
  SendExit(pid, ExitReason::Kill());
  co_await AwaitDown(self, pid);
}

using Scenario = std::function<Task<void>(Process&)>;
using OutcomeScenario = std::function<Task<std::string>(Process&)>;

// A fresh node for a scenario: deterministic with `seed`, or on two schedulers.
std::unique_ptr<Node> ScenarioNode(bool deterministic, uint64_t seed) {
  RuntimeOptions options;
  options.deterministic = deterministic;
  options.seed = seed;
  options.schedulers = 2;
  return Node::Create(options).value();
}

// Runs `scenario` (it checks in place) on a fresh node; its error if it could not run to its end.
absl::Status RunChecked(const Scenario& scenario, bool deterministic, uint64_t seed) {
  auto node = ScenarioNode(deterministic, seed);
  return node->Run([scenario](Process& self) { return scenario(self); }, {.trap_exit = true});
}

// Runs an outcome scenario the same way and yields its outcome, or "did not finish".
std::string RunScenario(const OutcomeScenario& scenario, bool deterministic, uint64_t seed) {
  auto node = ScenarioNode(deterministic, seed);
  absl::StatusOr<std::string> out = node->Run<absl::StatusOr<std::string>>(
      [scenario](Process& self) -> Task<absl::StatusOr<std::string>> {
        co_return co_await scenario(self);
      },
      {.trap_exit = true});
  return out.ok() ? *out : "did not finish: " + out.status().ToString();
}

// Every seed in deterministic mode, then `runs` runs on two schedulers, each checking in place;
// stops at the first run with a failure and names it.
void RunEverywhere(const Scenario& scenario, int runs) {
  for (uint64_t seed = 0; seed < kSeeds; ++seed) {
    absl::Status ran = RunChecked(scenario, true, seed);
    EXPECT_TRUE(ran.ok()) << ran;
    if (::testing::Test::HasFailure()) FAIL() << "the failures above are from seed " << seed;
  }
  for (int run = 0; run < runs; ++run) {
    absl::Status ran = RunChecked(scenario, false, run);
    EXPECT_TRUE(ran.ok()) << ran;
    if (::testing::Test::HasFailure()) FAIL() << "the failures above are from threaded run " << run;
  }
}

// --- Erlang etsmgr's own loss windows.

// (a) The manager is killed, and the client is killed before it re-adds its table.
TEST(NoLossTest, A_ManagerKilledThenClientKilledBeforeReadding) {
  RunEverywhere(
      [](Process& self) -> Task<void> {
        absl::StatusOr<Pid> sup = co_await StartEmbedded(self);
        CO_ASSERT_OK(sup, "start the embedded instance");
        Pid first = SpawnClient(self, "counter");
        co_await self.Receive<Ready>();
        SendExit(self.node().Whereis(Srv()), ExitReason::Kill());
        co_await KillAndAwait(self, first);
        co_await ExpectBack(self, "counter");
      },
      30);
}

// (b) Tables held for dead clients survive a manager restart, and info() lists them.
TEST(NoLossTest, B_HeldTablesSurviveAManagerRestart) {
  RunEverywhere(
      [](Process& self) -> Task<void> {
        absl::StatusOr<Pid> sup = co_await StartEmbedded(self);
        CO_ASSERT_OK(sup, "start the embedded instance");
        Pid first = SpawnClient(self, "counter");
        co_await self.Receive<Ready>();
        Send(first, Crash{});
        co_await AwaitDown(self, first);
        co_await KillAndAwait(self, self.node().Whereis(Srv()));
        std::string info = co_await InfoLine(self);  // Named: GCC12-WORKAROUND (task.h).
        EXPECT_EQ(info, "tables=1 counter:client=none,owner=vault,size=1 lost=0")
            << "info() after the manager's restart";
        co_await ExpectBack(self, "counter");
      },
      30);
}

// --- Issue 14, problem 1: the vault's death, the instance supervisor's death, an exhausted
// restart intensity and StopManager lose nothing.

// The vault dies holding a table, and a client dies while no vault runs.
TEST(NoLossTest, VaultKilledWhileHoldingTables) {
  RunEverywhere(
      [](Process& self) -> Task<void> {
        absl::StatusOr<Pid> sup = co_await StartEmbedded(self);
        CO_ASSERT_OK(sup, "start the embedded instance");
        Pid held = SpawnClient(self, "held");
        Pid live = SpawnClient(self, "live");
        co_await self.Receive<Ready>();
        co_await self.Receive<Ready>();
        co_await KillAndAwait(self, held);  // The vault holds "held".
        Pid manager = self.node().Whereis(Srv());
        co_await KillAndAwait(self, self.node().Whereis(Vault()));
        co_await KillAndAwait(self, live);  // Whether or not a vault runs yet.
        co_await AwaitDown(self, manager);  // rest_for_one: the manager restarts after the vault.
        std::string info = co_await InfoLine(self);  // Named: GCC12-WORKAROUND (task.h).
        EXPECT_EQ(info,
                  "tables=2 held:client=none,owner=vault,size=1 "
                  "live:client=none,owner=vault,size=1 lost=0")
            << "info() after the vault's restart";
        co_await ExpectBack(self, "held");
        co_await ExpectBack(self, "live");
      },
      30);
}

// An heir that cannot take the table when its owner dies (no memory for its resource list) does
// not strand it: the table goes to the instance as if it had no heir, and comes back. (The
// exception left it with its dead owner, on nobody's list: every later new_table of the name was
// refused while the heir lived.)
std::atomic<int> g_adopt_faults{0};
void AdoptRunsOutOfMemoryOnce() {
  process_internal::g_adopt_resource_fault.store(nullptr);
  ++g_adopt_faults;
  throw std::bad_alloc();
}

TEST(NoLossTest, AnHeirThatCannotAdoptTheTableLeavesItWithTheInstance) {
  RunEverywhere(
      [](Process& self) -> Task<void> {
        absl::StatusOr<Pid> sup = co_await StartEmbedded(self);
        CO_ASSERT_OK(sup, "start the embedded instance");
        // An heir with nothing but its mailbox (no resource list yet).
        Pid heir =
            self.Spawn([](Process& p) -> Task<void> { co_await p.Receive<Crash>(); }).value();
        Pid me = self.self();
        Pid client = self.Spawn([me, heir](Process& p) -> Task<void> {
                           absl::StatusOr<ManagedTableRef> r =
                               co_await Etsmgr(kInst).NewTable<int64_t, int64_t>(p, "t");
                           bool ok = r.ok() && IntTable::Attach(r->table)->Insert(1, 41).ok() &&
                                     r->table.SetHeir(heir).ok();
                           Send(me, Ready{ok});
                           co_await p.Receive<Crash>();
                         })
                         .value();
        Ready ready = co_await self.Receive<Ready>();
        CO_ASSERT_TRUE(ready.ok, "the client made its table and named the heir");
        g_adopt_faults = 0;
        process_internal::g_adopt_resource_fault.store(&AdoptRunsOutOfMemoryOnce);
        co_await KillAndAwait(self, client);
        process_internal::g_adopt_resource_fault.store(nullptr);
        EXPECT_EQ(g_adopt_faults.load(), 1) << "the heir's adoption ran out of memory";
        co_await ExpectBack(self, "t");
        SendExit(heir, ExitReason::Kill());
      },
      10);
}

// The same for the instance's keeper: a client with no heir dies while the vault cannot take its
// table (no memory for its list): the table is parked, as when the vault is exiting, and comes
// back (an exception out of PlaceLocked, which is noexcept, ended the program).
TEST(NoLossTest, AKeeperThatCannotAdoptTheTableParksIt) {
  RunEverywhere(
      [](Process& self) -> Task<void> {
        absl::StatusOr<Pid> sup = co_await StartEmbedded(self);
        CO_ASSERT_OK(sup, "start the embedded instance");
        Pid client = SpawnClient(self, "t");
        Ready ready = co_await self.Receive<Ready>();
        CO_ASSERT_TRUE(ready.ok, "the client made its table");
        g_adopt_faults = 0;
        process_internal::g_adopt_resource_fault.store(&AdoptRunsOutOfMemoryOnce);
        co_await KillAndAwait(self, client);
        process_internal::g_adopt_resource_fault.store(nullptr);
        EXPECT_EQ(g_adopt_faults.load(), 1) << "the vault's adoption ran out of memory";
        co_await ExpectBack(self, "t");
      },
      10);
}

// The manager killed past the instance's restart intensity: its supervisor gives up (tables
// parked), the application's supervisor starts it again, and everything is back.
TEST(NoLossTest, RestartIntensityExhausted) {
  RunEverywhere(
      [](Process& self) -> Task<void> {
        ManagerOptions options;
        options.intensity = 1;
        options.period = absl::Seconds(60);
        absl::StatusOr<Pid> sup = co_await StartEmbedded(self, 100, options);
        CO_ASSERT_OK(sup, "start the embedded instance");
        Pid first = SpawnClient(self, "counter");
        co_await self.Receive<Ready>();
        co_await KillAndAwait(self, first);
        Pid inst_sup = self.node().Whereis(Sup());
        uint64_t ref = self.Monitor(inst_sup);
        for (int i = 0; i < 2; ++i) {
          Etsmgr mgr(kInst);
          absl::StatusOr<Pid> m = co_await mgr.WaitForManager(self, Deadline(absl::Seconds(30)));
          CO_ASSERT_OK(m, absl::StrCat("the manager, kill ", i));
          co_await KillAndAwait(self, *m);
        }
        Down d = co_await self.Receive<Down>();  // The instance's supervisor gave up.
        CO_ASSERT_TRUE(d.ref == ref, "the only Down is the instance supervisor's");
        // Restarted by the application's supervisor.
        std::string info = co_await InfoLine(self);  // Named: GCC12-WORKAROUND (task.h).
        EXPECT_EQ(info, "tables=1 counter:client=none,owner=vault,size=1 lost=0")
            << "info() after the instance's restart by the application's supervisor";
        co_await ExpectBack(self, "counter");
      },
      10);
}

// Standalone: the instance's supervisor killed, then StopManager/StartManager cycles; a table is
// created while the instance is down for good; discard deletes what is held, counted.
TEST(NoLossTest, StandaloneSupervisorKilledAndStopStartCycles) {
  RunEverywhere(
      [](Process& self) -> Task<void> {
        absl::Status started = co_await StartManager(self, kInst);
        CO_ASSERT_OK(started, "start the instance");
        Pid first = SpawnClient(self, "counter");
        co_await self.Receive<Ready>();
        co_await KillAndAwait(self, self.node().Whereis(Sup()));
        Etsmgr mgr(kInst);
        EXPECT_EQ(std::string(ToString(mgr.State(self.node()))), "down")
            << "the state after the instance's supervisor was killed";
        co_await KillAndAwait(self, first);  // No vault: parked.
        started = co_await StartManager(self, kInst);
        CO_ASSERT_OK(started, "start the instance again");
        co_await ExpectBack(self, "counter");  // Ours again (this driver).
        for (int cycle = 0; cycle < 2; ++cycle) {
          absl::Status stopped = co_await StopManager(self, kInst);
          EXPECT_TRUE(stopped.ok()) << "cycle " << cycle << ": stop: " << stopped;
          EXPECT_EQ(std::string(ToString(mgr.State(self.node()))), "stopped")
              << "cycle " << cycle << ": the state after the stop";
          started = co_await StartManager(self, kInst);
          EXPECT_TRUE(started.ok()) << "cycle " << cycle << ": start: " << started;
        }
        std::string info = co_await InfoLine(self);  // Named: GCC12-WORKAROUND (task.h).
        EXPECT_EQ(info, "tables=1 counter:client=some,owner=other,size=1 lost=0")
            << "info() after the stop/start cycles";
        absl::Status discarded =
            co_await StopManager(self, kInst, StopOptions{.discard_tables = true});
        EXPECT_TRUE(discarded.ok()) << "stop with discard: " << discarded;
        EXPECT_EQ(std::string(ToString(mgr.State(self.node()))), "not_started")
            << "the state after a discard";
      },
      10);
}

TEST(NoLossTest, DiscardDeletesHeldTablesAndCountsThem) {
  auto node = Node::Create({.schedulers = 2}).value();
  ASSERT_TRUE(StartManager(*node, kInst).ok());
  RunInProcess(*node, [](Process& self) -> Task<void> {
    Pid c = SpawnClient(self, "t");
    co_await self.Receive<Ready>();
    co_await KillAndAwait(self, c);
  });
  ASSERT_FALSE(::testing::Test::HasFailure());
  std::shared_ptr<manager_internal::Instance> st = manager_internal::FindInstance(*node, kInst);
  ASSERT_NE(st, nullptr);
  AnyTable table;
  {
    ExclusiveLock lock(st->mu);
    table = st->dir.Find("t")->table;
  }
  ASSERT_TRUE(table.alive());
  ASSERT_TRUE(StopManager(*node, kInst, {.discard_tables = true}).ok());
  EXPECT_FALSE(table.alive());
  EXPECT_FALSE(table.lost_with_owner());
  ExclusiveLock lock(st->mu);
  EXPECT_EQ(st->Counters().tables_discarded, 1u);
  EXPECT_EQ(st->Counters().tables_lost, 0u);
  EXPECT_EQ(GetInstanceState(*node, kInst), InstanceState::kNotStarted);
}

// --- Problem 2: add_table is one step; a stale "unlisted" registration cannot confuse the vault.

TEST(NoLossTest, AddTableIsAtomicWhateverTheTimeout) {
  RunEverywhere(
      [](Process& self) -> Task<void> {
        absl::StatusOr<Pid> sup = co_await StartEmbedded(self);
        CO_ASSERT_OK(sup, "start the embedded instance");
        Pid me = self.self();
        Pid adder = self.Spawn([me](Process& p) -> Task<void> {
                          IntTable t = IntTable::New().value();
                          (void)t.Insert(1, 41);
                          Etsmgr mgr(kInst);
                          absl::StatusOr<ManagedTableRef> r =
                              co_await mgr.AddTable(p, "added", t.any(), absl::Nanoseconds(1));
                          Send(me, Ready{r.ok()});
                          // Returns at once: a normal exit right after the call.
                        })
                        .value();
        Ready r = co_await self.Receive<Ready>();
        co_await AwaitDown(self, adder);
        EXPECT_TRUE(r.ok) << "add_table with a 1 ns timeout succeeded";
        co_await ExpectBack(self, "added");
      },
      10);
}

TEST(NoLossTest, ReAddAfterDelTableByANonOwnerKeepsTheTable) {
  RunEverywhere(
      [](Process& self) -> Task<void> {
        absl::StatusOr<Pid> sup = co_await StartEmbedded(self);
        CO_ASSERT_OK(sup, "start the embedded instance");
        Etsmgr mgr(kInst);
        Pid me = self.self();
        // The driver creates "t" and gives the table to an owner; the driver (its registered
        // client, not its owner) deletes the entry; the owner adds it again, then dies.
        absl::StatusOr<ManagedTableRef> r = co_await mgr.NewTable<int64_t, int64_t>(self, "t");
        CO_ASSERT_OK(r, "new_table(t)");
        (void)IntTable::Attach(r->table)->Insert(1, 41);
        Pid owner = self.Spawn([me](Process& p) -> Task<void> {
                          TableTransfer t = co_await p.Receive<TableTransfer>();
                          co_await p.Receive<Go>();
                          Etsmgr owner_mgr(kInst);
                          absl::StatusOr<ManagedTableRef> added =
                              co_await owner_mgr.AddTable(p, "t", t.table);
                          Send(me, Ready{added.ok()});
                          co_await p.Receive<Go>();
                        })
                        .value();
        CO_ASSERT_OK(r->table.GiveAway(owner), "give t to its owner");
        absl::Status del = co_await mgr.DelTable(self, "t");
        Send(owner, Go{});
        Ready added = co_await self.Receive<Ready>();
        co_await KillAndAwait(self, owner);
        EXPECT_TRUE(del.ok()) << "del_table by the registered client: " << del;
        EXPECT_TRUE(added.ok) << "the owner's add_table after the del_table";
        co_await ExpectBack(self, "t");
      },
      10);
}

// --- Problem 3: an embedded instance's supervisor killed restarts at once, without burning the
// application supervisor's intensity (the old manager is still exiting when it restarts).
TEST(NoLossTest, EmbeddedSupervisorKilledRestartsWithoutBurningTheParentsIntensity) {
  RunEverywhere(
      [](Process& self) -> Task<void> {
        absl::StatusOr<Pid> parent = co_await StartEmbedded(self, /*parent_intensity=*/1);
        CO_ASSERT_OK(parent, "start the embedded instance");
        Pid first = SpawnClient(self, "counter");
        co_await self.Receive<Ready>();
        uint64_t ref = self.Monitor(*parent);
        co_await KillAndAwait(self, self.node().Whereis(Sup()));
        co_await KillAndAwait(self, first);
        co_await ExpectBack(self, "counter");
        bool parent_alive = !(co_await self.ReceiveIfFor(
            [ref](const Envelope& e) {
              const Down* d = e.As<Down>();
              return d != nullptr && d->ref == ref;
            },
            absl::ZeroDuration()));
        EXPECT_TRUE(parent_alive) << "the application's supervisor (intensity 1) is still alive";
      },
      30);
}

// --- Problem 7: one table under one name at most.
TEST(NoLossTest, OneTableIsNeverManagedUnderTwoNames) {
  RunEverywhere(
      [](Process& self) -> Task<void> {
        absl::StatusOr<Pid> sup = co_await StartEmbedded(self);
        CO_ASSERT_OK(sup, "start the embedded instance");
        Pid me = self.self();
        std::string second;
        Pid c = self.Spawn([me](Process& p) -> Task<void> {
                      Etsmgr mgr(kInst);
                      absl::StatusOr<ManagedTableRef> r =
                          co_await mgr.NewTable<int64_t, int64_t>(p, "first");
                      (void)IntTable::Attach(r->table)->Insert(1, 41);
                      absl::StatusOr<ManagedTableRef> again =
                          co_await mgr.AddTable(p, "second", r->table);
                      absl::Status del = co_await mgr.DelTable(p, "second");
                      Send(me, Ready{!again.ok() &&
                                     again.status().code() == absl::StatusCode::kAlreadyExists &&
                                     del.code() == absl::StatusCode::kNotFound});
                      co_await p.Receive<Go>();
                    })
                    .value();
        Ready r = co_await self.Receive<Ready>();
        co_await KillAndAwait(self, c);
        EXPECT_TRUE(r.ok) << "add_table under a second name is already_exists, and del_table of "
                             "that name not_found";
        co_await ExpectBack(self, "first");
      },
      10);
}

// --- Problem 8: a table registered with add_table comes back initialised.
TEST(NoLossTest, AnAddedTableComesBackInitialised) {
  RunEverywhere(
      [](Process& self) -> Task<void> {
        absl::StatusOr<Pid> sup = co_await StartEmbedded(self);
        CO_ASSERT_OK(sup, "start the embedded instance");
        Pid me = self.self();
        Pid c = self.Spawn([me](Process& p) -> Task<void> {
                      IntTable t = IntTable::New().value();
                      (void)t.Insert(1, 41);
                      absl::StatusOr<ManagedTableRef> r =
                          co_await Etsmgr(kInst).AddTable(p, "mine", t.any());
                      Send(me, Ready{r.ok()});
                      co_await p.Receive<Go>();
                    })
                    .value();
        co_await self.Receive<Ready>();
        co_await KillAndAwait(self, c);
        co_await ExpectBack(self, "mine");
      },
      10);
}

// --- Problem 9: a ManagedTable rides out any restart of the instance: opened while the instance
// is down, re-attached after its supervisor is killed and the instance started again.
struct Bump {};
struct Value {
  int64_t count;
};
Task<void> CounterClient(Process& self, Pid driver) {
  absl::StatusOr<ManagedTable<std::string, int64_t>> t =
      co_await ManagedTable<std::string, int64_t>::Open(
          self, Etsmgr(kInst), "counter", TableOptions(),
          [](Table<std::string, int64_t>& fresh) { return fresh.Insert("count", 0); },
          absl::Seconds(60));
  if (!t.ok()) {
    Send(driver, Value{-1});
    co_return;
  }
  while (true) {
    Message m = co_await self.Receive();
    absl::StatusOr<bool> mine = co_await t->Handle(self, m, absl::Seconds(60));
    if (!mine.ok()) {
      Send(driver, Value{-2});
      co_return;
    }
    if (*mine) continue;
    if (m.Is<Bump>()) {
      (void)t->table().UpdateCounter("count", 1);
      Send(driver, Value{*t->table().Get("count").value()});
    }
  }
}

TEST(NoLossTest, ManagedTableRidesOutInstanceRestarts) {
  RunEverywhere(
      [](Process& self) -> Task<void> {
        Pid me = self.self();
        SpawnOptions options;
        options.trap_exit = true;
        Pid client = self.Spawn([me](Process& p) { return CounterClient(p, me); }, options).value();
        // Not started yet: Open waits for it.
        absl::Status started = co_await StartManager(self, kInst);
        CO_ASSERT_OK(started, "start the instance");
        Send(client, Bump{});
        Value v1 = co_await self.Receive<Value>();
        EXPECT_EQ(v1.count, 1) << "the count from a table opened before the start";
        Etsmgr mgr(kInst);
        co_await KillAndAwait(self, self.node().Whereis(Sup()));
        EXPECT_EQ(std::string(ToString(mgr.State(self.node()))), "down")
            << "the state after the instance's supervisor was killed";
        started = co_await StartManager(self, kInst);
        CO_ASSERT_OK(started, "start the instance again");
        Send(client, Bump{});
        Value v2 = co_await self.Receive<Value>();
        EXPECT_EQ(v2.count, 2) << "the count after the instance's restart";
        // Stop and start: the client re-attaches to the next run.
        absl::Status stopped = co_await StopManager(self, kInst);
        EXPECT_TRUE(stopped.ok()) << "stop: " << stopped;
        started = co_await StartManager(self, kInst);
        Send(client, Bump{});
        Value v3 = co_await self.Receive<Value>();
        EXPECT_EQ(v3.count, 3) << "the count after a stop and a start";
      },
      10);
}

// --- Problem 10: one notice line per burst of client exits, not one per client or table.
class CountingSink final : public LogSink {
 public:
  void Write(const LogRecord& record) override {
    std::lock_guard<std::mutex> lock(mu);
    if (record.level >= LogLevel::kNotice) lines.emplace_back(record.message);
  }
  std::mutex mu;
  std::vector<std::string> lines;
};

TEST(NoLossTest, OneLogLinePerBurstOfExits) {
  CountingSink sink;
  LogSink* previous = SetLogSink(&sink);
  LogLevel level = MinLogLevel();
  SetMinLogLevel(LogLevel::kInfo);  // The default.
  {
    RuntimeOptions options;
    options.deterministic = true;
    auto node = Node::Create(options).value();
    absl::Status ran = node->Run([](Process& self) -> Task<void> {
      absl::Status started = co_await StartManager(self, kInst);
      CO_ASSERT_OK(started, "start the instance");
      std::vector<Pid> clients;
      for (int c = 0; c < 50; ++c) {
        Pid me = self.self();
        clients.push_back(self.Spawn([me](Process& p) -> Task<void> {
                                Etsmgr mgr(kInst);
                                for (int t = 0; t < 10; ++t) {
                                  (void)co_await mgr.NewTable<int64_t, int64_t>(
                                      p, absl::StrCat(p.self().ToString(), "_", t));
                                }
                                Send(me, Ready{true});
                                co_await p.Receive<Go>();
                              })
                              .value());
      }
      for (size_t c = 0; c < clients.size(); ++c) co_await self.Receive<Ready>();
      for (const Pid& c : clients) SendExit(c, ExitReason::Kill());
      for (const Pid& c : clients) co_await AwaitDown(self, c);
      co_await self.Sleep(absl::Seconds(1));  // Virtual: past the burst window.
    });
    ASSERT_TRUE(ran.ok()) << ran;
  }
  SetLogSink(previous);
  SetMinLogLevel(level);
  int exit_lines = 0;
  for (const std::string& line : sink.lines) {
    if (line.find("exited") != std::string::npos) ++exit_lines;
  }
  EXPECT_EQ(exit_lines, 1);
  bool burst = false;
  for (const std::string& line : sink.lines) {
    burst |= line.find("50 client(s) exited; their 500 table(s) are held") != std::string::npos;
  }
  EXPECT_TRUE(burst);
}

// --- Problem 5: no log write under the directory lock (a full stderr pipe would stall every
// scheduler). On a deterministic runtime there is one thread: a sink that cannot take the
// directory lock while a line is written proves that the writer holds it.
class LockCheckingSink final : public LogSink {
 public:
  explicit LockCheckingSink(Node& node) : node_(node) {}
  void Write(const LogRecord& record) override {
    ++lines;
    std::shared_ptr<manager_internal::Instance> st = manager_internal::FindInstance(node_, kInst);
    if (st == nullptr) return;
    if (!st->mu.try_lock()) {
      under_lock.emplace_back(record.message);
      return;
    }
    st->mu.unlock();
  }
  Node& node_;
  int lines = 0;
  std::vector<std::string> under_lock;
};

TEST(NoLossTest, NoLogLineIsWrittenUnderTheDirectoryLock) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    RuntimeOptions options;
    options.deterministic = true;
    options.seed = seed;
    auto node = Node::Create(options).value();
    LockCheckingSink sink(*node);
    LogSink* previous = SetLogSink(&sink);
    LogLevel level = MinLogLevel();
    SetMinLogLevel(LogLevel::kDebug);  // Every line that exists.
    absl::StatusOr<std::string> got = node->Run<absl::StatusOr<std::string>>(
        [](Process& self) -> Task<absl::StatusOr<std::string>> {
          // Starts, client exits (hook and burst lines), hand-backs, manager and vault restarts,
          // a lost table, a stop and a discard: each writes log lines.
          absl::StatusOr<Pid> sup = co_await StartEmbedded(self);
          if (!sup.ok()) co_return sup.status();
          Pid a = SpawnClient(self, "a");
          co_await self.Receive<Ready>();
          co_await KillAndAwait(self, a);
          std::string claim = co_await Claim(self, "a");
          co_await KillAndAwait(self, self.node().Whereis(Srv()));
          co_await KillAndAwait(self, self.node().Whereis(Vault()));
          absl::StatusOr<ManagedTableRef> lost =
              co_await Etsmgr(kInst).NewTable<int64_t, int64_t>(self, "lost");
          if (lost.ok()) (void)lost->table.Delete();  // Deleted while managed: a warning.
          std::string info = co_await InfoLine(self);
          co_await self.Sleep(absl::Seconds(1));  // Past the burst window.
          co_return claim + " | " + info;
        },
        {.trap_exit = true});
    SetLogSink(previous);
    SetMinLogLevel(level);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_GT(sink.lines, 10) << "seed " << seed;
    EXPECT_TRUE(sink.under_lock.empty()) << "seed " << seed << ": " << sink.under_lock.size()
                                         << " line(s), first: " << sink.under_lock.front();
  }
}

// --- (d) Exits of some clients touch only their own entries, however many other tables exist,
// and settle on the exiting clients' threads (the manager handles none of them).
TEST(NoLossTest, D_ClientExitsCostOnlyTheirOwnTables) {
  auto node = Node::Create({.schedulers = 2}).value();
  ASSERT_TRUE(StartManager(*node, kInst).ok());
  constexpr int kClients = 100;
  constexpr int kTablesEach = 10;
  constexpr int kExiting = 7;
  std::vector<Pid> clients;
  std::vector<std::future<void>> ready;
  for (int c = 0; c < kClients; ++c) {
    auto made = std::make_shared<std::promise<void>>();
    ready.push_back(made->get_future());
    clients.push_back(node->Spawn(
                              [c, made](Process& self) -> Task<void> {
                                Etsmgr mgr(kInst);
                                for (int t = 0; t < kTablesEach; ++t) {
                                  std::string name = absl::StrCat("c", c, "_t", t);
                                  absl::StatusOr<ManagedTableRef> r =
                                      co_await mgr.NewTable<int64_t, int64_t>(self, name);
                                  EXPECT_TRUE(r.ok()) << r.status();
                                }
                                made->set_value();
                                co_await self.Receive<Go>();
                              },
                              {.trap_exit = true})
                          .value());
  }
  for (auto& f : ready) f.get();
  std::shared_ptr<manager_internal::Instance> st = manager_internal::FindInstance(*node, kInst);
  ASSERT_NE(st, nullptr);
  uint64_t before;
  {
    ExclusiveLock lock(st->mu);
    before = st->dir.exit_work;
  }
  for (int c = 0; c < kExiting; ++c) SendExit(clients[c], ExitReason::Kill());
  for (int c = 0; c < kExiting; ++c) AwaitDeath(*node, clients[c]);
  ExclusiveLock lock(st->mu);
  EXPECT_EQ(st->keeper->transfers.load(), static_cast<uint64_t>(kExiting * kTablesEach));
  EXPECT_EQ(st->dir.Clients().size(), static_cast<size_t>(kClients - kExiting));
  EXPECT_EQ(st->dir.exit_work - before, static_cast<uint64_t>(kExiting * kTablesEach));
  EXPECT_EQ(st->dir.size(), static_cast<size_t>(kClients * kTablesEach));
  EXPECT_EQ(st->client_exits_by_manager, 0u);
  for (Pid& c : clients) Send(c, Go{});
}

// --- (e) A table's owner deletes its entry (del_table) while being killed: either del_table ran
// first (the entry is gone, the table stays with its owner, unmanaged, and goes with it) or the
// kill did (the entry stays, the vault holds the table). A call is one step, so the kill lands
// before or after it, never inside: the seed picks when it is sent, and both must happen.
TEST(NoLossTest, E_DelTableRacingTheOwnersExitLeavesNothingBehind) {
  std::set<std::string> seen;
  for (bool threaded : {false, true}) {
    for (uint64_t seed = 0; seed < (threaded ? 60 : kSeeds); ++seed) {
      std::string out = RunScenario(
          [seed](Process& self) -> Task<std::string> {
            absl::StatusOr<Pid> sup = co_await StartEmbedded(self);
            if (!sup.ok()) co_return sup.status().ToString();
            Etsmgr mgr(kInst);
            absl::StatusOr<ManagedTableRef> r = co_await mgr.NewTable<int64_t, int64_t>(self, "t");
            if (!r.ok()) co_return r.status().ToString();
            Pid owner = self.Spawn([](Process& p) -> Task<void> {
                              co_await p.Receive<TableTransfer>();
                              co_await p.Sleep(absl::Microseconds(10));
                              (void)co_await Etsmgr(kInst).DelTable(p, "t");
                              co_await p.Receive<Go>();
                            })
                            .value();
            if (!r->table.GiveAway(owner).ok()) co_return "give_away failed";
            co_await self.Sleep(absl::Microseconds(seed % 20));
            co_await KillAndAwait(self, owner);
            std::shared_ptr<manager_internal::Instance> st =
                manager_internal::FindInstance(self.node(), kInst);
            bool listed;
            Pid vault;
            {
              ExclusiveLock lock(st->mu);
              listed = st->dir.Find("t") != nullptr;
              vault = st->vault;
            }
            absl::StatusOr<Pid> holder = r->table.Owner();
            bool vault_holds = holder.ok() && *holder == vault;
            if (listed && vault_holds) co_return std::string("kill first: held");
            if (!listed && !r->table.alive()) co_return std::string("del first: gone");
            co_return absl::StrCat("listed=", listed, " alive=", r->table.alive(),
                                   " vault_holds=", vault_holds);
          },
          !threaded, seed);
      EXPECT_TRUE(out == "kill first: held" || out == "del first: gone")
          << out << " (seed " << seed << (threaded ? ", threaded)" : ")");
      seen.insert(out);
    }
  }
  EXPECT_EQ(seen.size(), 2u) << "both orders must occur";
}

// --- A client killed at a moment the seed picks around its calls: before new_table (nothing),
// after it made and filled its table (held, with the data). No call has a point inside where it
// could be killed, so there is no third outcome; each must occur; "created=0" is never empty.
TEST(NoLossTest, C_ClientKilledAroundItsCalls) {
  std::set<std::string> seen;
  for (uint64_t seed = 0; seed < kSeeds; ++seed) {
    std::string out = RunScenario(
        [seed](Process& self) -> Task<std::string> {
          absl::StatusOr<Pid> sup = co_await StartEmbedded(self);
          if (!sup.ok()) co_return sup.status().ToString();
          Pid me = self.self();
          Pid doomed = self.Spawn([me](Process& p) { return Client(p, me, "counter"); }).value();
          if (seed % 2 == 1) co_await self.Sleep(absl::Microseconds(seed % 7));
          SendExit(doomed, ExitReason::Kill());
          co_await AwaitDown(self, doomed);
          co_return co_await Claim(self, "counter");
        },
        true, seed);
    EXPECT_TRUE(out == "created=1 value=-1" || out == "created=0 value=41") << out;
    seen.insert(out);
  }
  EXPECT_EQ(seen.size(), 2u) << "both outcomes must occur; seen: " << *seen.begin();
}

// --- Problem 6: the fast path never hands out a manager its caller is not linked to: whenever
// new_table answers, its manager is alive and linked, or its exit signal reaches the caller.
TEST(NoLossTest, ANewTableReplyNamesAManagerWhoseExitTheCallerHears) {
  // Replies checked, and of those, ones whose manager was not linked yet but whose exit signal
  // came (the race this test is about): a run where every new_table failed checked nothing.
  std::atomic<int> answered{0};
  std::atomic<int> heard{0};
  for (uint64_t seed = 0; seed < kSeeds; ++seed) {
    absl::Status ran = RunChecked(
        [&answered, &heard](Process& self) -> Task<void> {
          absl::StatusOr<Pid> sup = co_await StartEmbedded(self);
          CO_ASSERT_OK(sup, "start the embedded instance");
          Pid me = self.self();
          SpawnOptions options;
          options.trap_exit = true;
          Pid client = self.Spawn(
                               [me, &answered, &heard](Process& p) -> Task<void> {
                                 Etsmgr mgr(kInst);
                                 std::string bad;
                                 for (int i = 0; i < 20 && bad.empty(); ++i) {
                                   absl::StatusOr<ManagedTableRef> r =
                                       co_await mgr.NewTable<int64_t, int64_t>(p, "t");
                                   if (!r.ok()) {
                                     co_await p.Sleep(absl::Microseconds(50));
                                     continue;
                                   }
                                   Pid m = r->manager;
                                   answered.fetch_add(1);
                                   // Linked to it, or its exit signal is on its way.
                                   bool linked = false;
                                   absl::StatusOr<ProcessInfo> me_info = GetProcessInfo(p.self());
                                   for (const Pid& l : me_info->links) linked |= l == m;
                                   if (!linked) heard.fetch_add(1);  // (Unless flagged below.)
                                   if (!linked && !(co_await p.ReceiveIfFor(
                                                      [m](const Envelope& e) {
                                                        const ExitSignal* x = e.As<ExitSignal>();
                                                        return x != nullptr && x->from == m;
                                                      },
                                                      absl::Seconds(5)))) {
                                     bad = "manager " + m.ToString() + " neither linked nor heard";
                                   }
                                   (void)co_await mgr.DelTable(p, "t");
                                   (void)r->table.Delete();
                                 }
                                 EXPECT_TRUE(bad.empty()) << bad;
                                 Send(me, Value{bad.empty() ? 1 : 0});
                               },
                               options)
                           .value();
          (void)client;
          for (int k = 0; k < 3; ++k) {
            Pid m = self.node().Whereis(Srv());
            if (m.valid()) SendExit(m, ExitReason::Kill());
            co_await self.Sleep(absl::Microseconds(100));
          }
          co_await self.Receive<Value>();  // The client checked every reply.
        },
        true, seed);
    EXPECT_TRUE(ran.ok()) << ran;
    if (::testing::Test::HasFailure()) FAIL() << "the failures above are from seed " << seed;
  }
  EXPECT_GT(answered.load(), 0) << "no new_table answered in any seed: no reply was checked";
  std::printf("%d replies checked, %d from a manager not linked yet whose exit came\n",
              answered.load(), heard.load());
}

// --- Problem 11: misuse is a status, not a crash.
TEST(NoLossTest, ATableFactoryWithoutCreateIsInvalidArgument) {
  auto node = Node::Create({.schedulers = 1}).value();
  ASSERT_TRUE(StartManager(*node, kInst).ok());
  RunInProcess(*node, [](Process& self) -> Task<void> {
    absl::StatusOr<ManagedTableRef> r = co_await manager_internal::EtsmgrAccess::NewTableErased(
        Etsmgr(kInst), self, "t", TableOptions(), manager_internal::TableFactory(),
        absl::Seconds(1));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument)
        << "a factory without create: " << r.status();
    EXPECT_NE(r.status().message().find("factory"), std::string::npos) << r.status();
  });
}

}  // namespace
}  // namespace etsmgr
