// The table manager: Erlang's etsmgr for etsmgr tables, with no loss window.
//
//   // Standalone (the manager under its own supervisor), from a plain thread:
//   StartManager(*node).IgnoreError();                     // the default instance, "etsmgr"
//   // In a client process (which should trap exits, as Erlang's clients do):
//   Etsmgr mgr;                                            // or Etsmgr("inst") for a named one
//   absl::StatusOr<ManagedTableRef> t = co_await mgr.NewTable<std::string, int64_t>(self, "t");
//
// An instance is two processes under a rest_for_one supervisor: the *vault*
// (`etsmgr_vault[_<inst>]`), heir of every managed table, which holds tables while their clients
// are down, and the *manager* (`etsmgr_srv[_<inst>]`), which serves the calls below and keeps
// the directory (name -> table, client). The directory belongs to the instance, not to the
// manager process: killing the manager loses nothing, and a client that dies while the manager
// is down still leaves its table to the vault. Only stopping the instance (or killing its vault)
// lets go of the tables it holds.
//
// The directory is shared state under a lock, so the common calls need no message: new_table of
// a free name and del_table by the table's client run in the caller (the table is created in the
// caller, which links itself to the manager, all under the directory lock and with no suspension
// point, so the caller cannot die half-way). Everything else -- hand-backs, conflicts, add_table,
// info -- is a call to the manager process, which also watches the clients' exits.
//
// Calls (from a process; each with a timeout, default 5 s as gen_server:call):
// - NewTable<K, V>(name, options): unknown name (or a deleted table) -> creates the table (the
//   caller owns it, the vault is its heir with the name as heir_data) and links the manager to the
//   caller; a live table held by the vault -> handed back to the caller (its data intact);
//   already the caller's -> OK; held by another live process -> AlreadyExists (table_exists).
//   The reply says whether the table was created (`created`), so a client initialises only then.
// - AddTable(name, table): manage a table the caller owns, or re-register after a manager
//   restart (idempotent); the same checks; PermissionDenied (not_owner) when the caller neither
//   owns the table nor is its client. On success the table's heir becomes the vault.
// - DelTable(name): only the registered client or the table's owner; NotFound
//   (no_such_table_entry) for an unknown name. The manager unlinks a client when its last table
//   goes. A table the caller owns stays with it, with no heir (delete it if you are done); one
//   the vault holds (its client gone) is deleted, as nobody could claim it any more.
// - Info(): every managed table with its client, owner, heir and size, and the counters.
// - WaitForManager(deadline): woken by the manager's registration, no polling.
// Errors: Unavailable at once when the manager is not running or exits during the call,
// DeadlineExceeded at the timeout; messages name the table and the pids.
#ifndef ETSMGR_MANAGER_MANAGER_H_
#define ETSMGR_MANAGER_MANAGER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <typeindex>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "etsmgr/process/call.h"
#include "etsmgr/process/node.h"
#include "etsmgr/process/supervisor.h"
#include "etsmgr/table/table.h"

namespace etsmgr {

inline constexpr char kDefaultInstance[] = "etsmgr";

// Erlang's inst_to_name: ("etsmgr_srv", "etsmgr") -> "etsmgr_srv"; ("etsmgr_srv", "aaa") ->
// "etsmgr_srv_aaa".
std::string InstToName(std::string_view prefix, std::string_view inst);

struct ManagerOptions {
  // Restart intensity of the instance's supervisor: more than `intensity` restarts of the
  // manager within `period` and the instance stops.
  int intensity = 10;
  absl::Duration period = absl::Seconds(10);
};

// Standalone mode, from a plain thread (they wait for the processes). Errors: AlreadyExists
// (already_started) / NotFound (not_started), naming the instance.
absl::Status StartManager(Node& node, std::string inst = kDefaultInstance,
                          ManagerOptions options = {});
absl::Status StopManager(Node& node, std::string inst = kDefaultInstance);

// Embedded mode: a child spec for the application's own supervisor (a nested rest_for_one
// supervisor holding the vault and the manager of `inst`).
ChildSpec ManagerChildSpec(std::string inst = kDefaultInstance, ManagerOptions options = {});

struct ManagedTableRef {
  Pid manager;
  AnyTable table;
  // NewTable: initialise the table (it is new, or a client that got it new died before it could
  // initialise it); false: it was initialised before and comes back with its data. Reported
  // true once per table: initialise it before your next suspension point.
  bool created = false;
};

struct ManagedTableInfo {
  std::string name;
  Pid client;  // Null while no client holds it ("none").
  Pid owner;
  Pid heir;
  size_t size = 0;
  bool alive = true;  // False for an entry whose table was deleted.
};

struct ManagerCounters {
  uint64_t tables_created = 0;
  uint64_t transfers_to_manager = 0;  // Tables the vault inherited from exited clients.
  uint64_t hand_backs = 0;            // Tables the vault gave back to a client.
  uint64_t manager_restarts = 0;      // Manager restarts this instance survived.
  uint64_t tables_lost = 0;           // Managed tables deleted for want of a live heir: 0.
};

struct ManagerInfo {
  Pid manager;
  Pid vault;
  std::vector<ManagedTableInfo> tables;  // In no particular order.
  ManagerCounters counters;
};

namespace manager_internal {
// The type-erased creation request of NewTable<K, V> (the caller or the manager creates the table).
struct TableFactory {
  const std::type_info* key_type = &typeid(void);
  const std::type_info* value_type = &typeid(void);
  absl::StatusOr<AnyTable> (*create)(TableOptions options) = nullptr;
};
template <typename K, typename V>
absl::StatusOr<AnyTable> CreateTable(TableOptions options) {
  absl::StatusOr<Table<K, V>> t = Table<K, V>::New(std::move(options));
  if (!t.ok()) return t.status();
  return t->any();
}
}  // namespace manager_internal

// A client's handle on one instance (cheap to copy). Every call is made from a process.
class Etsmgr {
 public:
  explicit Etsmgr(std::string inst = kDefaultInstance);

  const std::string& instance() const { return inst_; }
  std::string server_name() const { return InstToName("etsmgr_srv", inst_); }
  std::string vault_name() const { return InstToName("etsmgr_vault", inst_); }
  std::string supervisor_name() const { return InstToName("etsmgr_sup", inst_); }

  // Options are taken by value; name them before awaiting (gcc 12 caveat in task.h).
  template <TableKey K, typename V>
  Task<absl::StatusOr<ManagedTableRef>> NewTable(
      Process& self, std::string name, TableOptions options,
      absl::Duration timeout = kDefaultCallTimeout) const;
  template <TableKey K, typename V>
  Task<absl::StatusOr<ManagedTableRef>> NewTable(
      Process& self, std::string name, absl::Duration timeout = kDefaultCallTimeout) const;
  Task<absl::StatusOr<ManagedTableRef>> AddTable(
      Process& self, std::string name, AnyTable table,
      absl::Duration timeout = kDefaultCallTimeout) const;
  Task<absl::Status> DelTable(Process& self, std::string name,
                              absl::Duration timeout = kDefaultCallTimeout) const;
  Task<absl::StatusOr<ManagerInfo>> Info(Process& self,
                                         absl::Duration timeout = kDefaultCallTimeout) const;
  // The manager's Pid once registered; DeadlineExceeded at `deadline`.
  Task<absl::StatusOr<Pid>> WaitForManager(Process& self, absl::Time deadline) const;

  // The untyped form NewTable<K, V> uses.
  Task<absl::StatusOr<ManagedTableRef>> NewTableErased(Process& self, std::string name,
                                                       TableOptions options,
                                                       manager_internal::TableFactory factory,
                                                       absl::Duration timeout) const;

 private:
  std::string inst_;
};

template <TableKey K, typename V>
Task<absl::StatusOr<ManagedTableRef>> Etsmgr::NewTable(Process& self, std::string name,
                                                       TableOptions options,
                                                       absl::Duration timeout) const {
  manager_internal::TableFactory factory;
  factory.key_type = &typeid(K);
  factory.value_type = &typeid(V);
  factory.create = &manager_internal::CreateTable<K, V>;
  return NewTableErased(self, std::move(name), std::move(options), std::move(factory), timeout);
}

template <TableKey K, typename V>
Task<absl::StatusOr<ManagedTableRef>> Etsmgr::NewTable(Process& self, std::string name,
                                                       absl::Duration timeout) const {
  return NewTable<K, V>(self, std::move(name), TableOptions(), timeout);
}

}  // namespace etsmgr

#endif  // ETSMGR_MANAGER_MANAGER_H_
