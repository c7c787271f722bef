// ManagedTable<K, V>: the common client pattern of Erlang's etsmgr in a few lines.
//
//   Task<void> CounterServer(Process& self) {
//     auto t = co_await ManagedTable<std::string, int64_t>::Open(
//         self, Etsmgr(), "counter", TableOptions(),
//         [](Table<std::string, int64_t>& fresh) { return fresh.Insert("count", 0); });
//     if (!t.ok()) co_return;                      // the manager never came up
//     while (true) {
//       Message m = co_await self.Receive();
//       absl::StatusOr<bool> handled = co_await t->Handle(self, m);
//       if (handled.ok() && *handled) continue;    // the manager restarted; table re-added
//       ... the server's own messages, using t->table() ...
//     }
//   }
//
// Open: waits for the manager and asks for the table (new_table) until `wait` passes, riding
// out a manager that is restarting; `init` runs only when the table is new, so a restarted client
// finds its data. It sets trap_exit on the calling process (the manager is linked to its clients;
// its exit must not take them down) -- as Erlang's clients do.
// Handle: consumes an exit signal from any manager of the instance (the current one, or one that
// came and went before this client heard of it): re-attaches -- waits for the restarted manager
// and re-adds the table (nothing is at risk meanwhile: the instance is the table's heir whatever
// its processes do). Also consumes stray TableTransfer messages for this table. Yields false for
// any other message, which stays the caller's. DeadlineExceeded when no manager came back within
// `wait` (State() tells whether the instance is restarting, down or stopped): the table is still
// the caller's and still managed, and Reattach may be called again later.
// Close: del_table, then delete the table (the normal stop of a client); nothing is deleted when
// del_table fails.
#ifndef ETSMGR_MANAGER_MANAGED_TABLE_H_
#define ETSMGR_MANAGER_MANAGED_TABLE_H_

#include <functional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "etsmgr/base/error_atom.h"
#include "etsmgr/base/log.h"
#include "etsmgr/base/status_macros.h"
#include "etsmgr/executor/scheduler.h"
#include "etsmgr/manager/manager.h"
#include "etsmgr/table/internal/manager_access.h"

namespace etsmgr {

template <TableKey K, typename V>
class ManagedTable {
 public:
  using Init = std::function<absl::Status(Table<K, V>& fresh)>;

  static Task<absl::StatusOr<ManagedTable>> Open(Process& self, Etsmgr mgr, std::string name,
                                                 TableOptions options, Init init,
                                                 absl::Duration wait = kDefaultCallTimeout) {
    self.set_trap_exit(true);
    const absl::Time deadline = Deadline(wait);
    absl::StatusOr<ManagedTableRef> ref = absl::UnavailableError("not asked yet");
    while (true) {
      absl::StatusOr<Pid> manager = co_await mgr.WaitForManager(self, deadline);
      if (!manager.ok()) co_return manager.status();
      // With an init function, the segment of a shared table is marked initialised only once
      // init returned OK (a program killed during init leaves it "created" for the next).
      manager_internal::TableFactory factory = manager_internal::FactoryFor<K, V>();
      factory.caller_marks_initialised = static_cast<bool>(init);
      ref = co_await manager_internal::EtsmgrAccess::NewTableErased(mgr, self, name, options,
                                                                    std::move(factory), wait);
      // Unavailable: the manager died as we asked; wait for the next one (WaitForManager
      // suspends until it is running, so this never spins).
      if (ref.ok() || ref.status().code() != absl::StatusCode::kUnavailable) break;
      if (Now() >= deadline) co_return ref.status();
    }
    if (!ref.ok()) co_return ref.status();
    ETSMGR_CO_ASSIGN_OR_RETURN(auto table, (Table<K, V>::Attach(ref->table)));
    if (ref->created && init) {
      // Not initialised unless init returns OK (an error or an exception leaves it for the next
      // Open to initialise again).
      struct Undo {
        AnyTable table;
        bool done = false;
        ~Undo() {
          if (!done) table_internal::ManagerAccess::ClearInitialised(*table.core());
        }
      } undo{ref->table};
      absl::Status st = init(table);
      if (!st.ok()) co_return Annotate(st, "initialising table", name);
      undo.done = true;
      table_internal::ManagerAccess::SetStorageInitialised(*ref->table.core(), true);
    }
    co_return ManagedTable(std::move(mgr), std::move(name), std::move(table), ref->manager,
                           ref->created);
  }

  Table<K, V>& table() { return table_; }
  const std::string& name() const { return name_; }
  const Pid& manager() const { return manager_; }
  bool created() const { return created_; }

  Task<absl::StatusOr<bool>> Handle(Process& self, const Message& m,
                                    absl::Duration wait = kDefaultCallTimeout) {
    if (const TableTransfer* t = m.As<TableTransfer>()) co_return t->table == table_.any();
    const ExitSignal* exit = m.As<ExitSignal>();
    if (exit == nullptr) co_return false;
    if (exit->from != manager_ && !mgr_.IsManager(self.node(), exit->from)) co_return false;
    Logf(LogLevel::kNotice, "table \"%s\": manager %s exited (%s); waiting for its restart",
         name_.c_str(), exit->from.ToString().c_str(), exit->reason.ToString().c_str());
    ETSMGR_CO_RETURN_IF_ERROR(co_await Reattach(self, wait));
    co_return true;
  }

  // Waits (up to `wait`) for the instance's running manager and re-adds the table to it. OK at
  // once when the current manager is the one this table knows and it runs.
  Task<absl::Status> Reattach(Process& self, absl::Duration wait = kDefaultCallTimeout) {
    const absl::Time deadline = Deadline(wait);
    while (true) {
      absl::StatusOr<Pid> manager = co_await mgr_.WaitForManager(self, deadline);
      if (!manager.ok()) co_return manager.status();
      absl::StatusOr<ManagedTableRef> ref = co_await mgr_.AddTable(self, name_, table_.any());
      if (!ref.ok() && ref.status().code() == absl::StatusCode::kUnavailable && Now() >= deadline) {
        co_return ref.status();
      }
      if (ref.ok()) {
        bool changed = manager_ != ref->manager;
        manager_ = ref->manager;
        if (changed) {
          Logf(LogLevel::kNotice, "table \"%s\": re-added to manager %s", name_.c_str(),
               manager_.ToString().c_str());
        }
        co_return absl::OkStatus();
      }
      if (ref.status().code() != absl::StatusCode::kUnavailable) co_return ref.status();
    }
  }

  // Deletes the table only once del_table succeeded: a table still managed is never deleted
  // (during a manager restart Close answers Unavailable and the table stays, managed).
  Task<absl::Status> Close(Process& self, absl::Duration wait = kDefaultCallTimeout) {
    ETSMGR_CO_RETURN_IF_ERROR(co_await mgr_.DelTable(self, name_, wait));
    // A shared table is already gone (del_table removes its segment with it).
    if (!table_.alive()) co_return absl::OkStatus();
    co_return table_.Delete();
  }

 private:
  ManagedTable(Etsmgr mgr, std::string name, Table<K, V> table, Pid manager, bool created)
      : mgr_(std::move(mgr)),
        name_(std::move(name)),
        table_(std::move(table)),
        manager_(std::move(manager)),
        created_(created) {}

  Etsmgr mgr_;
  std::string name_;
  Table<K, V> table_;
  Pid manager_;
  bool created_;
};

}  // namespace etsmgr

#endif  // ETSMGR_MANAGER_MANAGED_TABLE_H_
