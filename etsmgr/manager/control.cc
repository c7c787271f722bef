// Starting, stopping and discarding instances; their state.
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "etsmgr/base/error_atom.h"
#include "etsmgr/base/log.h"
#include "etsmgr/base/status_macros.h"
#include "etsmgr/manager/internal/instance.h"
#include "etsmgr/manager/internal/processes.h"
#include "etsmgr/manager/manager.h"

namespace etsmgr {

using manager_internal::Entry;
using manager_internal::FindInstance;
using manager_internal::Instance;

std::string InstToName(std::string_view prefix, std::string_view inst) {
  if (inst == kDefaultInstance) return std::string(prefix);
  return absl::StrCat(std::string(prefix), "_", std::string(inst));
}

const char* ToString(InstanceState state) {
  switch (state) {
    case InstanceState::kNotStarted:
      return "not_started";
    case InstanceState::kRunning:
      return "running";
    case InstanceState::kRestarting:
      return "restarting";
    case InstanceState::kDown:
      return "down";
    case InstanceState::kStopped:
      return "stopped";
  }
  return "?";
}

InstanceState GetInstanceState(Node& node, const std::string& inst) {
  std::shared_ptr<Instance> st = FindInstance(node, inst);
  if (st == nullptr) return InstanceState::kNotStarted;
  ExclusiveLock lock(st->mu);
  return st->State();
}

namespace {

absl::Status CheckStart(const std::string& inst, const ManagerOptions& options) {
  if (inst.empty()) return absl::InvalidArgumentError("start: empty instance name");
  absl::Status flags = ValidateFlags(manager_internal::InstanceFlags(options));
  if (!flags.ok()) {
    return Annotate(absl::InvalidArgumentError(flags.message()), "start", inst);
  }
  return absl::OkStatus();
}

// Deletes what the instance holds for dead clients, lets live clients keep theirs unmanaged, and
// forgets the instance. Its processes are stopped; one started again meanwhile wins (nothing is
// discarded then).
absl::Status Discard(Node& node, const std::shared_ptr<Instance>& st) {
  std::vector<Entry> entries;
  {
    ExclusiveLock lock(st->mu);
    if (st->sup.alive()) {
      return Annotate(absl::FailedPreconditionError(
                          absl::StrCat("started again (supervisor ", st->sup.ToString(),
                                       ") before its tables were discarded; nothing discarded")),
                      "stop", st->inst);
    }
    // From here a start takes a new instance (FindOrCreateInstance, StartVault), and a live
    // client that registers its table there meanwhile takes it from this keeper (Abandon): the
    // release below then leaves it alone.
    st->discarded.store(true, std::memory_order_release);
    st->keeper->Abandon();
    entries = st->dir.TakeAll();
  }
  if (manager_internal::DiscardHook hook =
          manager_internal::g_discard_hook.load(std::memory_order_acquire)) {
    hook(*st);
  }
  uint64_t discarded = 0;
  for (const Entry& entry : entries) {
    const std::optional<SharedStorage> storage =
        entry.table.core() != nullptr ? entry.table.core()->shared_storage() : std::nullopt;
    absl::StatusOr<bool> deleted = st->keeper->Release(entry.table);
    if (!deleted.ok() || !*deleted) continue;
    ++discarded;
    // A deleted shared table's segment is gone: its record in the directory of shared tables
    // goes too (unless it names another program's table by now).
    if (storage.has_value() && entry.name != nullptr) {
      (void)st->shared_dir->Unbind(*entry.name, *storage);
    }
  }
  {
    ExclusiveLock lock(st->mu);
    st->dir.counters.tables_discarded += discarded;
  }
  manager_internal::ForgetInstance(node, st.get());
  Logf(LogLevel::kNotice, "etsmgr %s: discarded; %u held table(s) deleted, %u left to their owners",
       st->inst, discarded, entries.size() - discarded);
  return absl::OkStatus();
}

absl::Status NotStarted(const std::string& inst) {
  return Annotate(WithAtom(absl::NotFoundError(""), Atom::kNotStarted), "stop", inst);
}

}  // namespace

Task<absl::Status> StartManager(Process& self, std::string inst, ManagerOptions options) {
  ETSMGR_CO_RETURN_IF_ERROR(CheckStart(inst, options));
  // Already started shows as the supervisor's name being taken (standalone) or the vault finding
  // the instance run by another supervisor (embedded elsewhere): both AlreadyExists.
  SpawnOptions spawn;
  spawn.name = InstToName("etsmgr_sup", inst);
  absl::StatusOr<Pid> sup = co_await StartSupervisor(
      self, manager_internal::InstanceFlags(options),
      manager_internal::InstanceChildren(inst, /*standalone=*/true), std::move(spawn));
  if (!sup.ok()) {
    if (sup.status().code() == absl::StatusCode::kAlreadyExists) {
      co_return Annotate(WithAtom(absl::AlreadyExistsError(""), Atom::kAlreadyStarted), "start",
                         inst);
    }
    co_return Annotate(sup.status(), "start", inst);
  }
  co_return absl::OkStatus();
}

Task<absl::Status> StartManager(Process& self, std::string inst) {
  return StartManager(self, std::move(inst), ManagerOptions());
}

Task<absl::Status> StartManager(Process& self) {
  return StartManager(self, std::string(kDefaultInstance), ManagerOptions());
}

Task<absl::Status> StopManager(Process& self, std::string inst, StopOptions options) {
  std::shared_ptr<Instance> st = FindInstance(self.node(), inst);
  if (st == nullptr) co_return NotStarted(inst);
  Pid sup;
  {
    ExclusiveLock lock(st->mu);
    if (st->sup.alive()) {
      if (!st->standalone) {
        co_return Annotate(absl::FailedPreconditionError(absl::StrCat(
                               "the instance runs under an application's supervisor ",
                               st->sup.ToString(), "; stop it there (TerminateChild)")),
                           "stop", inst);
      }
      sup = st->sup;
    }
  }
  if (!sup.valid() && !options.discard_tables) {
    co_return NotStarted(inst);
  }
  if (sup.valid()) {
    // No timeout: the supervisor stops its children in turn (each bounded by its shutdown).
    absl::Status stopped = co_await StopSupervisor(self, sup);
    if (!stopped.ok()) co_return Annotate(stopped, "stop", inst);
    ExclusiveLock lock(st->mu);
    if (st->sup == sup) st->stopped = true;  // Unless a new run began meanwhile.
  }
  if (options.discard_tables) co_return Discard(self.node(), st);
  co_return absl::OkStatus();
}

Task<absl::Status> StopManager(Process& self, std::string inst) {
  return StopManager(self, std::move(inst), StopOptions());
}

Task<absl::Status> StopManager(Process& self) {
  return StopManager(self, std::string(kDefaultInstance), StopOptions());
}

absl::Status StartManager(Node& node, std::string inst, ManagerOptions options) {
  return node.Run<absl::Status>([inst = std::move(inst), options](Process& self) {
    return StartManager(self, inst, options);
  });
}

absl::Status StopManager(Node& node, std::string inst, StopOptions options) {
  return node.Run<absl::Status>([inst = std::move(inst), options](Process& self) {
    return StopManager(self, inst, options);
  });
}

namespace {

// The embedded start: a supervisor of a previous run whose parent died (its application's
// supervisor was killed and restarted) may still be stopping, holding the name: it is killed and
// waited for, so the restart does not fail. A run under another live application supervisor, or a
// standalone one, is already_started.
Task<absl::StatusOr<Pid>> StartEmbedded(Process& parent, std::string inst, SupervisorFlags flags,
                                        std::vector<ChildSpec> children) {
  if (inst.empty()) co_return absl::InvalidArgumentError("etsmgr instance: empty name");
  std::shared_ptr<Instance> st;
  Pid orphan;
  Pid previous;  // A run this supervisor started before, maybe still exiting (a failed start).
  while (true) {
    st = manager_internal::FindOrCreateInstance(parent.node(), inst);
    ExclusiveLock lock(st->mu);
    if (st->discarded.load(std::memory_order_acquire)) continue;  // Being discarded: a new one.
    if (st->sup.alive()) {
      if (!st->standalone && st->sup_parent == parent.self()) {
        previous = st->sup;
      } else if (st->standalone || st->sup_parent.alive()) {
        co_return manager_internal::AlreadyStarted(inst, st->sup);
      } else {
        // Only a supervisor whose application supervisor is gone is an orphan of an earlier run.
        orphan = st->sup;
      }
    }
    break;
  }
  if (previous.valid()) {
    // An earlier run of ours that failed to start is on its way out: give it a moment. One that
    // stays is a second child spec of the same instance: already_started.
    const uint64_t ref = parent.Monitor(previous);
    std::optional<Message> down = co_await parent.ReceiveIfFor(
        [ref](const Envelope& e) {
          const Down* d = e.As<Down>();
          return d != nullptr && d->ref == ref;
        },
        absl::Seconds(1));
    if (!down) {
      parent.Demonitor(ref, /*flush=*/true);
      co_return manager_internal::AlreadyStarted(inst, previous);
    }
  }
  if (orphan.valid()) {
    const uint64_t ref = parent.Monitor(orphan);
    SendExit(orphan, ExitReason::Kill(), parent.self());
    std::optional<Message> down = co_await parent.ReceiveIfFor(
        [ref](const Envelope& e) {
          const Down* d = e.As<Down>();
          return d != nullptr && d->ref == ref;
        },
        absl::Seconds(5));
    if (!down) {
      parent.Demonitor(ref, /*flush=*/true);
      co_return absl::DeadlineExceededError(absl::StrCat("etsmgr instance \"", inst,
                                                         "\": the supervisor of its previous run ",
                                                         orphan.ToString(), " did not exit"));
    }
  }
  {
    ExclusiveLock lock(st->mu);
    st->sup_parent = parent.self();
  }
  SpawnOptions options;
  options.name = InstToName("etsmgr_sup", inst);
  co_return co_await StartSupervisorLink(parent, flags, std::move(children), std::move(options));
}

}  // namespace

ChildSpec ManagerChildSpec(std::string inst, ManagerOptions options) {
  ChildSpec spec;
  spec.id = InstToName("etsmgr_sup", inst);
  SupervisorFlags flags = manager_internal::InstanceFlags(options);
  std::vector<ChildSpec> children = manager_internal::InstanceChildren(inst, /*standalone=*/false);
  spec.start = [flags, children = std::move(children), inst](Process& parent) {
    return StartEmbedded(parent, inst, flags, children);
  };
  spec.shutdown = absl::InfiniteDuration();  // OTP's default for supervisor children.
  spec.is_supervisor = true;
  return spec;
}

}  // namespace etsmgr
