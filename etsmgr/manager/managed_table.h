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
// Open: waits for the manager (up to `wait`), then new_table; `init` runs only when the table
// is new, so a restarted client finds its data. It sets trap_exit on the calling process (the
// manager is linked to its clients; its exit must not take them down) — as Erlang's clients do.
// Handle: consumes the manager's exit signal (waits for the restarted manager and re-adds the
// table; with the vault as heir nothing is at risk meanwhile) and stray TableTransfer messages
// for this table. Yields false for any other message, which stays the caller's.
// Close: del_table, then delete the table (the normal stop of a client).
#ifndef ETSMGR_MANAGER_MANAGED_TABLE_H_
#define ETSMGR_MANAGER_MANAGED_TABLE_H_

#include <functional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "etsmgr/base/log.h"
#include "etsmgr/manager/manager.h"

namespace etsmgr {

template <TableKey K, typename V>
class ManagedTable {
 public:
  using Init = std::function<absl::Status(Table<K, V>& fresh)>;

  static Task<absl::StatusOr<ManagedTable>> Open(Process& self, Etsmgr mgr, std::string name,
                                                 TableOptions options, Init init,
                                                 absl::Duration wait = kDefaultCallTimeout) {
    self.set_trap_exit(true);
    absl::StatusOr<Pid> manager = co_await mgr.WaitForManager(self, absl::Now() + wait);
    if (!manager.ok()) co_return manager.status();
    absl::StatusOr<ManagedTableRef> ref =
        co_await mgr.NewTable<K, V>(self, name, std::move(options), wait);
    if (!ref.ok()) co_return ref.status();
    absl::StatusOr<Table<K, V>> table = Table<K, V>::Attach(ref->table);
    if (!table.ok()) co_return table.status();
    if (ref->created && init) {
      absl::Status st = init(*table);
      if (!st.ok()) {
        ref->table.core()->SetInitialised(false);  // The next Open initialises it again.
        co_return absl::Status(st.code(),
                               absl::StrCat("initialising table \"", name, "\": ", st.message()));
      }
    }
    co_return ManagedTable(std::move(mgr), std::move(name), std::move(*table), ref->manager,
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
    if (exit == nullptr || exit->from != manager_) co_return false;
    Logf(LogLevel::kNotice, "table \"%s\": manager %s exited (%s); waiting for its restart",
         name_.c_str(), manager_.ToString().c_str(), exit->reason.ToString().c_str());
    absl::StatusOr<Pid> manager = co_await mgr_.WaitForManager(self, absl::Now() + wait);
    if (!manager.ok()) co_return manager.status();
    absl::StatusOr<ManagedTableRef> ref = co_await mgr_.AddTable(self, name_, table_.any(), wait);
    if (!ref.ok()) co_return ref.status();
    manager_ = ref->manager;
    Logf(LogLevel::kNotice, "table \"%s\": re-added to manager %s", name_.c_str(),
         manager_.ToString().c_str());
    co_return true;
  }

  Task<absl::Status> Close(Process& self, absl::Duration wait = kDefaultCallTimeout) {
    absl::Status del = co_await mgr_.DelTable(self, name_, wait);
    absl::Status deleted = table_.Delete();
    co_return del.ok() ? deleted : del;
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
