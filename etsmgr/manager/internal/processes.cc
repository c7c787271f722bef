#include "etsmgr/manager/internal/processes.h"

#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "etsmgr/base/error_atom.h"
#include "etsmgr/base/log.h"
#include "etsmgr/base/status_macros.h"
#include "etsmgr/manager/internal/instance.h"

namespace etsmgr::manager_internal {
namespace {

// How long a new run of an instance waits for the processes of the previous run to exit (they are
// killed, so only a process stuck outside the process API takes long).
constexpr absl::Duration kOrphanWait = absl::Seconds(5);
// Sent by a new vault or manager to its supervisor once it is in place: the vault holds every
// parked table, the manager has linked the clients and registered its name.
struct Ready {
  uint64_t ref;
};

// The vault collects a burst of client exits this long before it logs them in one line.
constexpr absl::Duration kBurstWindow = absl::Milliseconds(100);

// --- The vault: the keeper's holder. It holds the tables of dead clients; while it is down they
// are parked in the instance, and it adopts them when it starts again.

void LogBurst(Instance& st) {
  uint64_t clients = st.burst_clients.exchange(0, std::memory_order_acq_rel);
  uint64_t tables = st.burst_tables.exchange(0, std::memory_order_acq_rel);
  if (clients == 0) return;
  Logf(LogLevel::kNotice, "etsmgr %s: %u client(s) exited; their %u table(s) are held", st.inst,
       clients, tables);
}

// Waits (in the supervisor `sup`) for the child `pid` it just started to say Ready{ref}; Aborted
// if it exits first.
Task<absl::StatusOr<Pid>> AwaitReady(Process& sup, const std::string& inst, const char* what,
                                     Pid pid, uint64_t ref) {
  const uint64_t monitor = sup.Monitor(pid);
  std::optional<Message> m = co_await sup.ReceiveIf([ref, monitor](const Envelope& e) {
    if (const Ready* r = e.As<Ready>()) return r->ref == ref;
    const Down* d = e.As<Down>();
    return d != nullptr && d->ref == monitor;
  });
  if (const Down* d = m->As<Down>()) {
    co_return absl::AbortedError(absl::StrCat("etsmgr instance \"", inst, "\": ", what, " ",
                                              pid.ToString(), " exited while starting (",
                                              d->reason.ToString(), ")"));
  }
  sup.Demonitor(monitor, /*flush=*/true);
  co_return pid;
}

// True when `parent` no longer runs the instance: a process it started late, after a newer run
// began, must not touch the instance.
bool Superseded(const Instance& st, const Pid& parent) ABSL_EXCLUSIVE_LOCKS_REQUIRED(st.mu) {
  return st.sup != parent;
}

Task<void> VaultBody(Process& self, std::shared_ptr<Instance> st, Pid parent, uint64_t ready) {
  uint64_t restart = 0;
  bool superseded;
  {
    ExclusiveLock lock(st->mu);
    superseded = Superseded(*st, parent);
    if (!superseded) restart = st->vault_starts++;
  }
  if (superseded) {
    co_await self.Exit(ExitReason::Custom("etsmgr: a newer run of the instance started"));
  }
  if (VaultStartHook hook = g_vault_start_hook.load(std::memory_order_acquire)) co_await hook(self);
  // Only the current run's vault (a later run kills it before it starts its own).
  absl::StatusOr<size_t> adopted = st->keeper->BecomeHolder();
  Send(parent, Ready{ready});
  if (restart > 0 || (adopted.ok() && *adopted > 0)) {
    Logf(LogLevel::kNotice, "etsmgr %s: vault %s started; it holds %u parked table(s)", st->inst,
         self.self().ToString(), adopted.ok() ? *adopted : 0);
  }
  LogBurst(*st);  // Exits that happened while no vault ran.
  while (true) {
    Message m = co_await self.Receive();
    if (m.Is<BurstNotice>()) {
      co_await self.Sleep(kBurstWindow);
      LogBurst(*st);
    } else if (const auto* t = m.As<TableTransfer>()) {
      // A table given to the vault by hand (or passed on by the manager). Kept by a keeper (this
      // instance's or another's): held, and it goes to that keeper if the vault exits. Otherwise
      // nobody could claim it back: not kept forever -- if it is still ours (the message may be
      // older than a hand-back).
      absl::StatusOr<Pid> owner = t->table.Owner();
      if (owner.ok() && *owner == self.self()) {
        // Kept: its keeper has it from now on. This instance's: held here (it may have reached
        // this vault before the vault became the holder, by hand or as a named heir). Another
        // instance's (given to this vault by hand, or this vault named as its heir): adopted by
        // that instance's vault, or parked for its next one when none runs -- never held here,
        // where its instance could not hand it back (it answered table_exists while this vault
        // lived).
        const bool ours = st->keeper->TagOf(t->table) != nullptr;
        absl::StatusOr<Pid> holder = t->table.core()->ReturnToKeeper();
        if (!holder.ok() && holder.status().code() == absl::StatusCode::kFailedPrecondition &&
            !t->table.core()->has_keeper() && t->table.Owner().value_or(Pid()) == self.self()) {
          // Not kept (never, or its keeper let it go meanwhile: a del_table): nobody could claim
          // it back.
          Logf(LogLevel::kNotice, "etsmgr %s: %s from %s is not managed; deleted", st->inst,
               t->table.ToString(), t->from.ToString());
          t->table.Delete().IgnoreError();
        } else if (!ours) {
          Logf(LogLevel::kNotice, "etsmgr %s: %s from %s is another instance's: %s", st->inst,
               t->table.ToString(), t->from.ToString(),
               !holder.ok()      ? absl::StrCat("held (", holder.status().message(), ")")
               : holder->valid() ? absl::StrCat("passed on to its vault ", holder->ToString())
                                 : std::string("parked for its next vault"));
        }
      }
    } else {
      Logf(LogLevel::kWarning, "etsmgr %s vault: unexpected %s message ignored", st->inst,
           m.type_name());
    }
  }
}

// --- The manager: linked to every client (so a client hears of its restart, as in Erlang) and
// the mark of a running instance: the table calls run in the clients while it lives.

Task<void> ManagerBody(Process& self, std::shared_ptr<Instance> st, Pid parent, uint64_t ready) {
  std::vector<Pid> dead;
  size_t tables = 0;
  uint64_t restarts = 0;
  bool superseded;
  {
    ExclusiveLock lock(st->mu);
    superseded = Superseded(*st, parent);
    if (!superseded) {
      st->manager = self.self();
      st->manager_serials.push_back(self.self().serial());
      if (st->manager_serials.size() > Instance::kManagerHistory) st->manager_serials.pop_front();
      if (st->manager_starts++ > 0) ++st->dir.counters.manager_restarts;
      // Links died with the previous manager. Clients that died meanwhile are marked now (so the
      // first info() is right); one dying after this answers the link with noproc.
      for (const Pid& client : st->dir.Clients()) {
        if (!self.TryLink(client)) dead.push_back(client);
      }
      for (const Pid& client : dead) st->dir.MarkClientGone(client);
      tables = st->dir.size();
      restarts = st->dir.counters.manager_restarts;
    }
  }
  if (superseded) {
    co_await self.Exit(ExitReason::Custom("etsmgr: a newer run of the instance started"));
  }
  // Registered only now, so whoever finds the name finds a manager with its clients linked.
  absl::Status registered = self.Register(InstToName("etsmgr_srv", st->inst));
  if (!registered.ok()) {
    Logf(LogLevel::kError, "etsmgr %s: manager %s cannot register: %s", st->inst,
         self.self().ToString(), registered.message());
    co_await self.Exit(ExitReason::Custom(std::string(registered.message())));
  }
  Send(parent, Ready{ready});
  Logf(LogLevel::kNotice, "etsmgr %s: manager %s started (%u managed tables, restart %u)", st->inst,
       self.self().ToString(), tables, restarts);
  while (true) {
    Message m = co_await self.Receive();
    if (const auto* x = m.As<ExitSignal>()) {
      if (x->from == parent) {
        ExitReason reason = x->reason;
        co_await self.Exit(std::move(reason));
      }
      // An exit signal from a live process (exit/2) is not a client's death.
      if (x->from.alive()) continue;
      // A linked client whose exit hook did not unlink it first (it cannot, before this
      // manager's Init links it): the same bookkeeping, once.
      {
        ExclusiveLock lock(st->mu);
        if (st->dir.HasClient(x->from)) ++st->client_exits_by_manager;
      }
      ClientGone(*st, x->from, x->reason);
    } else if (const auto* t = m.As<TableTransfer>()) {
      // Tables given to the manager go to the vault, which keeps the managed ones.
      Pid vault;
      {
        ExclusiveLock lock(st->mu);
        vault = st->vault;
      }
      t->table.GiveAway(vault, t->heir_data).IgnoreError();
    } else {
      Logf(LogLevel::kWarning, "etsmgr %s: unexpected %s message ignored", st->inst, m.type_name());
    }
  }
}

// Kills the processes a previous run of the instance left (their supervisor died; they are
// exiting, or about to) and waits until they are gone, from the new supervisor `sup`.
Task<absl::Status> AwaitOrphans(Process& sup, std::vector<Pid> orphans) {
  for (const Pid& orphan : orphans) {
    SendExit(orphan, ExitReason::Kill(), sup.self());
    std::optional<ExitReason> gone = co_await AwaitDown(sup, orphan, Deadline(kOrphanWait));
    if (!gone) {
      co_return absl::DeadlineExceededError(
          absl::StrCat("process ", orphan.ToString(), " of the previous run did not exit within ",
                       absl::FormatDuration(kOrphanWait)));
    }
  }
  co_return absl::OkStatus();
}

Task<absl::StatusOr<Pid>> StartVault(Process& sup, std::string inst, bool standalone) {
  std::shared_ptr<Instance> st;
  std::vector<Pid> orphans;
  while (true) {
    st = FindOrCreateInstance(sup.node(), inst);
    ExclusiveLock lock(st->mu);
    if (st->discarded.load(std::memory_order_acquire)) continue;  // Being discarded: a new one.
    if (st->sup.valid() && st->sup != sup.self() && st->sup.alive()) {
      co_return AlreadyStarted(inst, st->sup);
    }
    st->sup = sup.self();
    st->standalone = standalone;
    if (standalone) st->sup_parent = Pid();
    st->stopped = false;
    for (const Pid* p : {&st->manager, &st->vault}) {
      if (p->alive()) orphans.push_back(*p);
    }
    break;
  }
  absl::Status gone = co_await AwaitOrphans(sup, std::move(orphans));
  if (!gone.ok()) co_return Annotate(gone, "etsmgr instance", inst);
  SpawnOptions options;
  options.name = InstToName("etsmgr_vault", inst);
  Pid parent = sup.self();
  const uint64_t ready = sup.node().NextRef();
  auto body = [st, parent, ready](Process& self) { return VaultBody(self, st, parent, ready); };
  ETSMGR_CO_ASSIGN_OR_RETURN(Pid pid, sup.SpawnLink(std::move(body), options));
  {
    ExclusiveLock lock(st->mu);
    st->vault = pid;
  }
  // Started means holding: every parked table is the vault's before the manager starts.
  co_return co_await AwaitReady(sup, inst, "vault", pid, ready);
}

Task<absl::StatusOr<Pid>> StartManagerProcess(Process& sup, std::string inst) {
  std::shared_ptr<Instance> st = FindInstance(sup.node(), inst);
  if (st == nullptr) {
    co_return Annotate(absl::FailedPreconditionError("manager started without its vault"),
                       "etsmgr instance", inst);
  }
  SpawnOptions options;
  options.trap_exit = true;
  Pid parent = sup.self();
  const uint64_t ready = sup.node().NextRef();
  auto body = [st, parent, ready](Process& self) { return ManagerBody(self, st, parent, ready); };
  ETSMGR_CO_ASSIGN_OR_RETURN(Pid pid, sup.SpawnLink(std::move(body), options));
  {
    // Recorded at once: a later run of the instance finds it and waits for it to go.
    ExclusiveLock lock(st->mu);
    if (Superseded(*st, parent)) {
      co_return Annotate(absl::AbortedError("a newer run started meanwhile"), "etsmgr instance",
                         inst);
    }
    st->manager = pid;
  }
  // Started means serving: wait until it has linked the clients and registered its name.
  co_return co_await AwaitReady(sup, inst, "manager", pid, ready);
}

}  // namespace

absl::Status AlreadyStarted(const std::string& inst, const Pid& sup) {
  return Annotate(
      WithAtom(absl::AlreadyExistsError(absl::StrCat("supervisor ", sup.ToString(), " runs it")),
               Atom::kAlreadyStarted),
      "etsmgr instance", inst);
}

std::vector<ChildSpec> InstanceChildren(const std::string& inst, bool standalone) {
  ChildSpec vault;
  vault.id = "vault";
  vault.start = [inst, standalone](Process& sup) { return StartVault(sup, inst, standalone); };
  ChildSpec manager;
  manager.id = "manager";
  manager.start = [inst](Process& sup) { return StartManagerProcess(sup, inst); };
  std::vector<ChildSpec> children;
  children.push_back(std::move(vault));
  children.push_back(std::move(manager));
  return children;
}

SupervisorFlags InstanceFlags(const ManagerOptions& options) {
  SupervisorFlags flags;
  flags.strategy = RestartStrategy::kRestForOne;  // The vault dies: the manager restarts too.
  flags.intensity = options.intensity;
  flags.period = options.period;
  return flags;
}

}  // namespace etsmgr::manager_internal
