#include "testing/crash/soak.h"

#include <algorithm>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "etsmgr/manager/internal/instance.h"
#include "etsmgr/manager/managed_table.h"
#include "etsmgr/manager/manager.h"
#include "etsmgr/process/supervisor.h"

namespace etsmgr::testing {
namespace {

using Counter = ManagedTable<int64_t, int64_t>;
using IntTable = Table<int64_t, int64_t>;

constexpr char kInst[] = "soak";
constexpr char kAppSup[] = "soak_app_sup";
constexpr absl::Duration kCallTimeout = absl::Milliseconds(20);
constexpr absl::Duration kSettle = absl::Seconds(30);

std::string ClientName(int i) { return absl::StrCat("soak_client_", i); }
std::string CounterName(int i) { return absl::StrCat("c", i); }
std::string ScratchName(int i) { return absl::StrCat("s", i); }
std::string AddedName(int i) { return absl::StrCat("a", i); }

// --- The clients.

struct Incr {};
// One step on the client's scratch tables; the reply names a violation, or is empty.
struct Scratch {
  int op;
};
struct ScratchReply {
  std::string violation;
};

Task<std::string> ScratchStep(Process& self, int i, int op) {
  Etsmgr mgr(kInst);
  switch (op % 4) {
    case 0: {  // new_table of the scratch name: a table that is not new holds its marker.
      absl::StatusOr<ManagedTableRef> r =
          co_await mgr.NewTable<int64_t, int64_t>(self, ScratchName(i), kCallTimeout);
      if (!r.ok()) co_return std::string();
      IntTable t = IntTable::Attach(r->table).value();
      if (r->created) {
        (void)t.Insert(1, 1);
        co_return std::string();
      }
      absl::StatusOr<std::optional<int64_t>> marker = t.Get(1);
      if (!marker.ok() || !marker->has_value()) {
        co_return absl::StrCat(ScratchName(i), " came back as not new but without its marker");
      }
      co_return std::string();
    }
    case 1: {  // del_table, then delete it if we own it.
      // The table, if it is ours, stays with us unmanaged (and goes when we do).
      (void)co_await mgr.DelTable(self, ScratchName(i), kCallTimeout);
      co_return std::string();
    }
    case 2: {  // add_table of a table made here, with its marker.
      absl::StatusOr<IntTable> t = IntTable::New();
      if (!t.ok()) co_return std::string();
      (void)t->Insert(1, 1);
      absl::StatusOr<ManagedTableRef> r =
          co_await mgr.AddTable(self, AddedName(i), t->any(), kCallTimeout);
      if (!r.ok()) (void)t->Delete();  // Already managed (an earlier one): this one goes.
      co_return std::string();
    }
    default: {  // new_table of the added name: never new without the marker.
      absl::StatusOr<ManagedTableRef> r =
          co_await mgr.NewTable<int64_t, int64_t>(self, AddedName(i), kCallTimeout);
      if (!r.ok()) co_return std::string();
      IntTable t = IntTable::Attach(r->table).value();
      absl::StatusOr<std::optional<int64_t>> marker = t.Get(1);
      if (r->created) {
        (void)t.Insert(1, 1);
      } else if (!marker.ok() || !marker->has_value()) {
        co_return absl::StrCat(AddedName(i), " came back as not new but without its marker");
      }
      co_return std::string();
    }
  }
}

Task<void> ClientBody(Process& self, int i, Pid parent) {
  absl::StatusOr<Counter> counter = co_await Counter::Open(
      self, Etsmgr(kInst), CounterName(i), TableOptions(),
      [](IntTable& fresh) { return fresh.Insert(0, 0); }, absl::Seconds(5));
  // A failing client pauses before it crashes: its restarts must not spin without end (in
  // deterministic mode, virtual time only moves when every process waits).
  if (!counter.ok()) {
    co_await self.Sleep(absl::Milliseconds(1));
    throw std::runtime_error(std::string(counter.status().message()));
  }
  while (true) {
    Message m = co_await self.Receive();
    absl::StatusOr<bool> mine = co_await counter->Handle(self, m, absl::Seconds(5));
    if (!mine.ok()) {
      co_await self.Sleep(absl::Milliseconds(1));
      throw std::runtime_error(std::string(mine.status().message()));
    }
    if (*mine) continue;
    if (const auto* r = m.As<CallRequest<Incr>>()) {
      absl::StatusOr<int64_t> n = counter->table().UpdateCounter(0, 1);
      ReplyTo(*r, n.ok() ? *n : int64_t{-1});
    } else if (const auto* s = m.As<CallRequest<Scratch>>()) {
      CallRequest<Scratch> request = *s;
      std::string violation = co_await ScratchStep(self, i, request.request.op);
      ReplyTo(request, ScratchReply{violation});
    } else if (const auto* x = m.As<ExitSignal>()) {
      if (x->from == parent) {  // Our supervisor: its exit ends us, as in OTP.
        ExitReason reason = x->reason;
        co_await self.Exit(std::move(reason));
      }
    }
  }
}

// --- The driver.

enum class Mode { kEmbedded, kStandalone };

struct Chaos {
  std::mt19937_64 rng;
  std::vector<std::string> targets;
};

struct FaultsDone {
  std::map<std::string, int> hits;
};

// The kinds of fault, by name (clients are one kind).
std::vector<std::string> FaultKinds(Mode mode) {
  std::vector<std::string> kinds = {"client",     "etsmgr_srv", "etsmgr_vault",
                                    "etsmgr_sup", "app_sup",    "srv_past_intensity"};
  if (mode == Mode::kStandalone) kinds.push_back("stop_start");
  return kinds;
}

Task<void> FaultBody(Process& self, uint64_t seed, Mode mode, int clients, int faults, Pid driver) {
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + 1);
  std::vector<std::string> kinds = FaultKinds(mode);
  FaultsDone done;
  auto kill = [&](const std::string& name, const std::string& kind) {
    Pid victim = self.node().Whereis(name);
    if (!victim.valid()) return false;
    SendExit(victim, ExitReason::Kill(), self.self());
    ++done.hits[kind];
    return true;
  };
  for (int f = 0; f < faults; ++f) {
    co_await self.Sleep(absl::Microseconds(static_cast<int64_t>(rng() % 3000)));
    const std::string& kind = kinds[rng() % kinds.size()];
    if (kind == "client") {
      kill(ClientName(static_cast<int>(rng() % clients)), kind);
    } else if (kind == "app_sup") {
      kill(kAppSup, kind);
    } else if (kind == "srv_past_intensity") {
      // Faster than the instance's restart intensity allows: its supervisor gives up.
      int hit = 0;
      for (int k = 0; k < 4; ++k) {
        Etsmgr mgr(kInst);
        absl::StatusOr<Pid> m = co_await mgr.WaitForManager(self, Deadline(absl::Milliseconds(5)));
        if (!m.ok()) break;
        SendExit(*m, ExitReason::Kill(), self.self());
        ++hit;
        co_await self.Sleep(absl::Microseconds(static_cast<int64_t>(rng() % 50)));
      }
      if (hit > 0) done.hits[kind] += hit;
    } else if (kind == "stop_start") {
      absl::Status stopped = co_await StopManager(self, kInst);
      if (stopped.ok()) ++done.hits[kind];
      co_await self.Sleep(absl::Microseconds(static_cast<int64_t>(rng() % 500)));
      (void)co_await StartManager(self, kInst,
                                  ManagerOptions{.intensity = 3, .period = absl::Seconds(1)});
    } else {
      kill(InstToName(kind, kInst), kind);
    }
  }
  Send(driver, std::move(done));
}

struct Driver {
  uint64_t seed;
  SoakOptions options;
  Mode mode;
  Process& self;
  SeedResult* out;
  Pid app_sup;
  std::vector<int64_t> last_ack;  // Per client: the highest acknowledged counter value.
  std::string last_start_error;

  ManagerOptions InstanceOptions() const {
    return ManagerOptions{.intensity = 3, .period = absl::Seconds(1)};
  }

  std::vector<ChildSpec> AppChildren() {
    std::vector<ChildSpec> children;
    if (mode == Mode::kEmbedded) children.push_back(ManagerChildSpec(kInst, InstanceOptions()));
    for (int i = 0; i < options.clients; ++i) {
      ChildSpec c;
      c.id = ClientName(i);
      c.start = [i](Process& sup) -> Task<absl::StatusOr<Pid>> {
        // A client of the previous run (its supervisor was killed) may still be on its way out,
        // holding the name: see it gone first, as ManagerChildSpec does for the instance.
        Pid old = sup.node().Whereis(ClientName(i));
        if (old.valid()) {
          SendExit(old, ExitReason::Kill(), sup.self());
          co_await AwaitDown(sup, old);
        }
        SpawnOptions spawn;
        spawn.name = ClientName(i);
        spawn.trap_exit = true;
        Pid parent = sup.self();
        co_return sup.SpawnLink([i, parent](Process& p) { return ClientBody(p, i, parent); },
                                spawn);
      };
      c.shutdown = absl::Milliseconds(100);
      children.push_back(std::move(c));
    }
    return children;
  }

  // The application supervisor (restarted by the driver when it is killed) and, standalone, the
  // instance (started again when it is down or stopped). Under chaos a start can fail for a
  // while (a previous run still exiting, a kill during the start): the callers retry, and only
  // a settle that never comes fails the seed (naming the last error).
  Task<absl::Status> EnsureRunning() {
    absl::Status status = co_await TryToRun();
    if (!status.ok()) last_start_error = status.ToString();
    co_return status;
  }
  Task<absl::Status> TryToRun() {
    if (mode == Mode::kStandalone) {
      InstanceState state = GetInstanceState(self.node(), kInst);
      if (state == InstanceState::kDown || state == InstanceState::kStopped ||
          state == InstanceState::kNotStarted) {
        absl::Status started = co_await StartManager(self, kInst, InstanceOptions());
        if (!started.ok() && started.code() != absl::StatusCode::kAlreadyExists) {
          co_return started;
        }
      }
    }
    if (!app_sup.alive()) {
      SupervisorFlags flags;
      flags.strategy = RestartStrategy::kOneForOne;
      flags.intensity = 1000000;
      flags.period = absl::Seconds(1);
      SpawnOptions spawn;
      spawn.name = kAppSup;
      absl::StatusOr<Pid> sup =
          co_await StartSupervisorLink(self, flags, AppChildren(), std::move(spawn));
      if (!sup.ok()) co_return sup.status();
      app_sup = *sup;
    }
    co_return absl::OkStatus();
  }

  // One increment of client i; an acknowledged value must exceed every earlier one.
  Task<absl::Status> Increment(int i) {
    Pid client = self.node().Whereis(ClientName(i));
    if (!client.valid()) co_return absl::OkStatus();
    absl::StatusOr<int64_t> n = co_await Call<int64_t>(self, client, Incr{}, kCallTimeout);
    if (!n.ok() || *n < 0) co_return absl::OkStatus();  // Not acknowledged.
    if (*n <= last_ack[i]) {
      co_return absl::DataLossError(
          absl::StrCat("counter ", CounterName(i), " acknowledged ", *n, " after ", last_ack[i]));
    }
    last_ack[i] = *n;
    ++out->acks;
    co_return absl::OkStatus();
  }

  Task<absl::Status> ScratchOnce(int i, int op) {
    Pid client = self.node().Whereis(ClientName(i));
    if (!client.valid()) co_return absl::OkStatus();
    absl::StatusOr<ScratchReply> r =
        co_await Call<ScratchReply>(self, client, Scratch{op}, kCallTimeout);
    if (r.ok() && !r->violation.empty()) co_return absl::DataLossError(r->violation);
    co_return absl::OkStatus();
  }

  // Drops the driver's own exit signals and late replies (the application supervisor's exit;
  // replies that came after their call's deadline).
  Task<void> Drain() {
    while (co_await self.ReceiveIf(
        [](const Envelope& e) {
          return e.Is<ExitSignal>() || e.Is<CallReply<int64_t>>() ||
                 e.Is<CallReply<ScratchReply>>();
        },
        absl::InfinitePast())) {
    }
  }

  Task<absl::Status> Run() {
    last_ack.assign(options.clients, 0);
    (void)co_await EnsureRunning();  // Retried below until it holds.
    Pid me = self.self();
    uint64_t s = seed;
    int clients = options.clients;
    int faults = options.faults;
    Mode m = mode;
    self.Spawn([s, m, clients, faults, me](Process& p) {
          return FaultBody(p, s, m, clients, faults, me);
        })
        .value();
    std::mt19937_64 rng(seed);
    bool faults_done = false;
    while (!faults_done) {
      std::optional<FaultsDone> done = co_await self.ReceiveFor<FaultsDone>(absl::ZeroDuration());
      if (done) {
        faults_done = true;
        out->faults = std::move(done->hits);
      }
      co_await Drain();
      (void)co_await EnsureRunning();
      int i = static_cast<int>(rng() % options.clients);
      absl::Status step = rng() % 3 == 0 ? co_await ScratchOnce(i, static_cast<int>(rng() % 4))
                                         : co_await Increment(i);
      if (!step.ok()) co_return step;
      co_await self.Sleep(absl::Microseconds(100));
    }
    co_return co_await Settle();
  }

  // Everything back, then the checks.
  Task<absl::Status> Settle() {
    absl::Time deadline = Deadline(kSettle);
    // Every client answers an increment (it has its counter back, re-attached to the manager).
    for (int i = 0; i < options.clients; ++i) {
      while (true) {
        if (Now() > deadline) {
          co_return absl::DeadlineExceededError(
              absl::StrCat(ClientName(i), " did not come back (instance ",
                           ToString(GetInstanceState(self.node(), kInst)),
                           "; last start error: ", last_start_error, ")"));
        }
        co_await Drain();
        (void)co_await EnsureRunning();
        int64_t before = out->acks;
        absl::Status step = co_await Increment(i);
        if (!step.ok()) co_return step;
        if (out->acks > before) break;
        co_await self.Sleep(absl::Milliseconds(1));
      }
    }
    // The instance settled too: a manager and a vault both running (a vault killed last may
    // still be restarting, rest_for_one, after the old manager answered).
    Etsmgr mgr(kInst);
    while (true) {
      absl::StatusOr<Pid> manager = co_await mgr.WaitForManager(self, deadline);
      if (!manager.ok()) co_return manager.status();
      std::shared_ptr<manager_internal::Instance> st =
          manager_internal::FindInstance(self.node(), kInst);
      bool settled = false;
      if (st != nullptr) {
        ExclusiveLock lock(st->mu);
        settled =
            st->vault.alive() && st->manager == *manager && st->State() == InstanceState::kRunning;
      }
      if (settled) co_return Check(*manager);
      if (Now() > deadline) co_return absl::DeadlineExceededError("the instance did not settle");
      co_await self.Sleep(absl::Milliseconds(1));
    }
  }

  absl::Status Check(const Pid& manager) {
    std::shared_ptr<manager_internal::Instance> st =
        manager_internal::FindInstance(self.node(), kInst);
    if (st == nullptr) return absl::InternalError("the instance is gone");
    ExclusiveLock lock(st->mu);
    Pid vault = st->vault;
    if (!vault.alive()) return absl::InternalError("no vault after settling");
    if (st->keeper->parked_count() != 0) {
      return absl::DataLossError(
          absl::StrCat(st->keeper->parked_count(), " table(s) parked with a vault running"));
    }
    // Counters: present, at least every acknowledged value, read from the table itself.
    for (int i = 0; i < options.clients; ++i) {
      const manager_internal::Entry* e = st->dir.Find(CounterName(i));
      if (e == nullptr) return absl::DataLossError(CounterName(i) + " is not managed any more");
      absl::StatusOr<IntTable> t = IntTable::Attach(e->table);
      absl::StatusOr<std::optional<int64_t>> v =
          t.ok() ? t->Get(0) : absl::StatusOr<std::optional<int64_t>>(t.status());
      if (!v.ok() || !v->has_value()) {
        return absl::DataLossError(absl::StrCat(
            CounterName(i), " unreadable: ", v.ok() ? "empty" : v.status().ToString()));
      }
      if (**v < last_ack[i]) {
        return absl::DataLossError(absl::StrCat(CounterName(i), " holds ", **v, " but ",
                                                last_ack[i], " was acknowledged"));
      }
    }
    // The directory against the tables: alive, owned by the live client or by the vault.
    for (const Pid& client : st->dir.Clients()) {
      if (!client.alive()) return absl::InternalError("a dead client " + client.ToString());
    }
    for (int i = 0; i < options.clients; ++i) {
      for (const std::string& name : {CounterName(i), ScratchName(i), AddedName(i)}) {
        const manager_internal::Entry* e = st->dir.Find(name);
        if (e == nullptr) continue;
        ++out->tables;
        absl::StatusOr<Pid> owner = e->table.Owner();
        if (!owner.ok()) return absl::DataLossError(name + ": " + owner.status().ToString());
        bool by_client = e->client.valid() && *owner == e->client && e->client.alive();
        if (!by_client && *owner != vault) {
          return absl::InternalError(absl::StrCat(name, ": owner ", owner->ToString(), ", client ",
                                                  e->client.ToString(), ", vault ",
                                                  vault.ToString()));
        }
        if (e->table.core()->heir() != vault) {
          return absl::InternalError(absl::StrCat(
              name, ": heir ", e->table.core()->heir().ToString(), " is not the vault"));
        }
      }
    }
    absl::StatusOr<ProcessInfo> info = GetProcessInfo(manager);
    if (info.ok()) {
      for (const Pid& link : info->links) {
        if (!link.alive()) return absl::InternalError("the manager is linked to a dead process");
      }
    }
    out->lost = st->Counters().tables_lost;
    if (out->lost != 0) return absl::DataLossError(absl::StrCat(out->lost, " table(s) lost"));
    return absl::OkStatus();
  }
};

}  // namespace

SeedResult RunSeed(uint64_t seed, const SoakOptions& options) {
  SeedResult result;
  RuntimeOptions runtime;
  runtime.deterministic = options.threads == 0;
  runtime.seed = seed;
  runtime.schedulers = std::max(1, options.threads);
  absl::StatusOr<std::unique_ptr<Node>> node = Node::Create(runtime);
  if (!node.ok()) {
    result.error = node.status().ToString();
    return result;
  }
  Mode mode = seed % 2 == 1 ? Mode::kEmbedded : Mode::kStandalone;
  absl::Status status = (*node)->Run<absl::Status>(
      [&](Process& self) -> Task<absl::Status> {
        Driver driver{seed, options, mode, self, &result, Pid(), {}};
        co_return co_await driver.Run();
      },
      {.trap_exit = true});
  if (!status.ok()) result.error = status.ToString();
  return result;
}

}  // namespace etsmgr::testing
