// The table manager: Erlang's etsmgr for etsmgr tables, with no loss window.
//
//   // Standalone (the manager under its own supervisor), from a plain thread:
//   StartManager(*node).IgnoreError();                     // the default instance, "etsmgr"
//   // In a client process (which should trap exits, as Erlang's clients do):
//   Etsmgr mgr;                                            // or Etsmgr("inst") for a named one
//   absl::StatusOr<ManagedTableRef> t = co_await mgr.NewTable<std::string, int64_t>(self, "t");
//
// An instance is node-level state -- the directory (name -> table, client), the counters, and the
// tables held for clients that are down -- acted on by two processes under a rest_for_one
// supervisor (`etsmgr_sup[_<inst>]`): the *vault* (`etsmgr_vault[_<inst>]`), which holds the
// tables of dead clients, and the *manager* (`etsmgr_srv[_<inst>]`), linked to every client as
// in Erlang. The heir of every managed table is the instance itself (a TableKeeper): when a
// client exits, its tables go to the vault, or, while no vault runs, are *parked* in the instance
// (no process owns them; their data stays). A restarted vault adopts every parked table.
//
// The promise: a managed table is deleted only by del_table or an explicit discard. Any process
// may die at any point -- a client, the manager, the vault, the instance's supervisor, the
// application's supervisor -- and exhausting the restart intensity or StopManager changes nothing:
// the tables, with every write that returned, wait in the instance for the next start and for
// their clients. `tables_lost` counts any managed table deleted otherwise (its owner deleting it
// without del_table; ManagedTable::Close does both in order); it is 0 in every test and soak.
//
// Calls (from a process; none suspends, so no call can be interrupted half-way: each runs under
// the directory's lock in the calling process, and the caller cannot die inside it):
// - NewTable<K, V>(name, options): unknown name (or a deleted table) -> creates the table (the
//   caller owns it; the instance is its heir) and links the caller to the manager; a table held
//   by the instance -> handed back to the caller (its data intact); already the caller's -> OK;
//   held by another live process -> AlreadyExists (table_exists). The reply says whether the
//   table was created (`created`), so a client initialises only then. A table with shared
//   storage (TableOptions::shared, see table.h) whose segment a previous program left -- it died
//   holding it: killed, crashed, or exited -- comes back with its data, mapped, not copied, and
//   `created` false -- unless the segment is one this manager made and its client had not
//   initialised yet (a segment made here says so until ManagedTable::Open's init function
//   returned OK, or a plain NewTable answered `created`): a program killed before that leaves
//   it `created` for the next. A segment the manager did not make counts as initialised. While
//   another live program holds the segment: AlreadyExists, naming its pid. Shared tables: the
//   instance's directory of shared tables lives in a shared segment too
//   (/dev/shm/etsmgr-directory-<inst>): NewTable records name -> segment there, Info() lists the
//   records (`shared_tables`, with whether a live program holds each), and DelTable of a name
//   only that directory knows (a dead program's table nobody asked for again) removes the segment
//   unless a live program holds it (AlreadyExists). A shared table's name is at most
//   kMaxSharedTableName bytes.
// - NewTableFromFile<K, V>(name, path, options): as NewTable, but a table created (first
//   creation: unknown name or a deleted table) is filled from `path`, a file SaveTable wrote, so
//   a restarted machine finds its data. The reply then has `loaded` set and `created` false (the
//   data is there: do not initialise). No file at `path`: an empty table, `created` as NewTable.
//   A file that cannot be loaded (damaged: DataLoss; other types or not a table file:
//   InvalidArgument; unreadable: PermissionDenied...) or of another table type than
//   `options.type`: the error, naming the file, and no table -- move the file aside to start
//   empty; nothing is overwritten. The table takes `options`' name, access and write
//   concurrency, the file's objects. `options.shared` is refused (InvalidArgument): a loaded
//   table lives on the heap, and a shared table keeps its data in its segment across crashes. A
//   table the instance holds is handed back as by NewTable (the file is not read). The load runs in
//   the caller under the directory's lock: other calls on the instance wait for it (its cost:
//   bench/results/design-measurements.md).
// - AddTable(name, table): manage a table the caller owns, or re-register after a manager
//   restart (idempotent); the same checks; PermissionDenied (not_owner) when the caller does not
//   own the table; AlreadyExists when the table is managed under another name. Registration and
//   "the instance is the heir" are one step. A table added this way counts as initialised.
// - DelTable(name): only the registered client or the table's owner; NotFound
//   (no_such_table_entry) for an unknown name. The caller is unlinked from the manager with its
//   last table. A table the caller owns stays with it, with no heir (delete it if you are done);
//   one the instance holds is deleted, as nobody could claim it any more. A shared table is
//   deleted in both cases, and its segment removed (it would outlive the program otherwise).
// - Info(): every managed table with its client, owner, heir and size, and the counters.
// - WaitForManager(deadline): woken by the manager's registration, no polling.
// Errors: Unavailable when the instance's manager is not running (starting, restarting, stopped:
// State() tells which), DeadlineExceeded at a deadline; messages name the table and the pids, as
// `op "name": atom: detail` (`del_table "t": not_owner: caller <0.7> is neither ...`). An error
// with an Erlang atom (table_exists, not_owner, no_such_table_entry, already_started,
// not_started) carries it as a payload: decide by ErrorAtom(status) (etsmgr/base/error_atom.h),
// not by the message; it survives copies and StatusOr.
//
// Deadlines: use etsmgr::Deadline(d) / etsmgr::Now() (executor/scheduler.h), which follow the
// virtual clock of a deterministic runtime; absl::Now() does not.
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
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "etsmgr/base/error_atom.h"
#include "etsmgr/process/call.h"
#include "etsmgr/process/node.h"
#include "etsmgr/process/supervisor.h"
#include "etsmgr/table/table.h"
#include "etsmgr/table/table_file.h"

namespace etsmgr {

inline constexpr char kDefaultInstance[] = "etsmgr";

// Erlang's inst_to_name: ("etsmgr_srv", "etsmgr") -> "etsmgr_srv"; ("etsmgr_srv", "aaa") ->
// "etsmgr_srv_aaa".
std::string InstToName(std::string_view prefix, std::string_view inst);

struct ManagerOptions {
  // Restart intensity of the instance's supervisor: more than `intensity` restarts within
  // `period` and its processes stop (the tables stay in the instance).
  int intensity = 10;
  absl::Duration period = absl::Seconds(10);
};

struct StopOptions {
  // Also delete the tables the instance holds for clients that are down (counted as discarded,
  // not lost) and forget the instance; tables live clients own stay theirs, no longer managed.
  bool discard_tables = false;
};

// Standalone mode. StartManager: AlreadyExists with the atom already_started (ErrorAtom) while
// the instance runs, here or under another supervisor (an embedded start answers the same).
// StopManager: stops the processes; the tables stay parked in the instance for a later
// StartManager of the same name (unless discarded); NotFound with the atom not_started for an
// instance that never started; FailedPrecondition for an instance embedded in an
// application's supervisor (stop it there, with TerminateChild). Table calls on a stopped
// instance answer Unavailable; WaitForManager waits for its next start until its deadline.
// From a process:
Task<absl::Status> StartManager(Process& self, std::string inst, ManagerOptions options);
Task<absl::Status> StartManager(Process& self, std::string inst);
Task<absl::Status> StartManager(Process& self);
Task<absl::Status> StopManager(Process& self, std::string inst, StopOptions options);
Task<absl::Status> StopManager(Process& self, std::string inst);
Task<absl::Status> StopManager(Process& self);
// From a plain thread (Node::Run: FailedPrecondition from a scheduler thread).
absl::Status StartManager(Node& node, std::string inst = kDefaultInstance,
                          ManagerOptions options = {});
absl::Status StopManager(Node& node, std::string inst = kDefaultInstance, StopOptions options = {});

// Embedded mode: a child spec for the application's own supervisor (a nested rest_for_one
// supervisor, registered as etsmgr_sup[_<inst>], holding the vault and the manager of `inst`).
// If that supervisor is restarted while processes of its previous run are still exiting, the new
// run waits for them (it does not fail with already_started).
ChildSpec ManagerChildSpec(std::string inst = kDefaultInstance, ManagerOptions options = {});

enum class InstanceState {
  kNotStarted,  // No instance of that name on the node (never started, or discarded).
  kRunning,     // Its manager runs: calls are served.
  kRestarting,  // Its supervisor runs and is (re)starting the manager: wait for it.
  kDown,        // No supervisor runs: it failed or gave up; an embedding supervisor or a later
                // StartManager may start it again. Its tables are kept.
  kStopped,     // StopManager stopped it. Its tables are kept unless discarded.
};
const char* ToString(InstanceState state);
// Any thread.
InstanceState GetInstanceState(Node& node, const std::string& inst = kDefaultInstance);

struct ManagedTableRef {
  Pid manager;
  AnyTable table;
  // NewTable: initialise the table (it is new, or a client that got it new died before it could
  // initialise it); false: it was initialised before and comes back with its data. Reported
  // true once per table: initialise it before your next suspension point.
  bool created = false;
  // NewTableFromFile: the table was created and filled from the file (`created` is false).
  bool loaded = false;
};

struct ManagedTableInfo {
  std::string name;
  Pid client;  // Null while no client holds it ("none").
  Pid owner;   // The vault while it holds the table; null while the table is parked.
  Pid heir;    // The vault, unless the owner named an heir of its own.
  size_t size = 0;
  bool alive = true;  // False for an entry whose table was deleted.
};

struct ManagerCounters {
  uint64_t tables_created = 0;
  uint64_t transfers_to_manager = 0;  // Tables the instance took from exited owners.
  uint64_t hand_backs = 0;            // Tables the instance gave back to a client.
  uint64_t manager_restarts = 0;      // Manager restarts this instance survived.
  uint64_t vault_restarts = 0;        // Vault restarts (its tables were parked meanwhile).
  uint64_t tables_parked = 0;         // Right now: tables no process owns, waiting for a vault.
  uint64_t tables_discarded = 0;      // Deleted by StopManager(discard_tables).
  uint64_t tables_lost = 0;           // Managed tables deleted other than by del_table/discard.
};

// A shared table the instance's directory of shared tables knows (see "Shared tables" above).
inline constexpr size_t kMaxSharedTableName = 200;  // bytes of a shared table's managed name
struct SharedTableRecord {
  std::string name;       // the managed name
  std::string segment;    // SharedStorage::segment
  std::string directory;  // SharedStorage::map.directory (empty: /dev/shm)
  std::string path;       // where the segment is
  std::string key_type;
  std::string value_type;
  bool exists = false;  // the segment is there
  bool held = false;    // a live program (this one or another) holds it
};

struct ManagerInfo {
  Pid manager;
  Pid vault;
  std::vector<ManagedTableInfo> tables;  // In no particular order.
  // The instance's directory of shared tables, across programs: also the tables a program that
  // died left behind, before anyone asks for them again. In no particular order.
  std::vector<SharedTableRecord> shared_tables;
  // Read in the same step as the list of tables; each table's owner and size just after.
  ManagerCounters counters;
};

namespace manager_internal {
// The type-erased creation request of NewTable<K, V> (the caller creates the table).
struct TableFactory {
  const std::type_info* key_type = &typeid(void);
  const std::type_info* value_type = &typeid(void);
  absl::StatusOr<AnyTable> (*create)(TableOptions options) = nullptr;
  // NewTable<K, V> sets this to `create` (its own CreateTable<K, V>): what it makes needs no
  // check. Any other create function's table is checked (owner, types).
  absl::StatusOr<AnyTable> (*trusted)(TableOptions options) = nullptr;
  // NewTableFromFile<K, V>: loads a created table from `load_path` (LoadTableFor<K, V>).
  absl::StatusOr<AnyTable> (*load)(const std::string& path, TableOptions options) = nullptr;
  std::string load_path;
  // Shared storage: the caller marks the segment initialised itself once its initialisation
  // succeeded (ManagedTable::Open with an init function); otherwise NewTable marks it as it
  // replies "created".
  bool caller_marks_initialised = false;
};
template <typename K, typename V>
absl::StatusOr<AnyTable> CreateTable(TableOptions options);
// The factory of NewTable<K, V>.
template <typename K, typename V>
TableFactory FactoryFor() {
  TableFactory factory;
  factory.key_type = &typeid(K);
  factory.value_type = &typeid(V);
  factory.create = &CreateTable<K, V>;
  factory.trusted = factory.create;
  return factory;
}
template <typename K, typename V>
absl::StatusOr<AnyTable> CreateTable(TableOptions options) {
  absl::StatusOr<Table<K, V>> t = Table<K, V>::New(std::move(options));
  if (!t.ok()) return t.status();
  return t->any();
}
template <typename K, typename V>
absl::StatusOr<AnyTable> LoadTableFor(const std::string& path, TableOptions options) {
  // The header first: a table of another type is refused before anything is read or created.
  absl::StatusOr<TableFileInfo> header = TabFileInfo(path);
  if (!header.ok()) return header.status();
  if (header->type != options.type) {
    return absl::InvalidArgumentError(absl::StrCat("file \"", path, "\" holds a ",
                                                   ToString(header->type), ", not the ",
                                                   ToString(options.type), " asked for"));
  }
  LoadOptions load;
  load.name = options.name;
  load.access = options.access;
  load.write_concurrency = options.write_concurrency;
  absl::StatusOr<Table<K, V>> t = LoadTable<K, V>(path, std::move(load));
  if (!t.ok()) return t.status();
  return t->any();
}
class EtsmgrAccess;
}  // namespace manager_internal

// A client's handle on one instance (cheap to copy). Every call is made from a process.
class Etsmgr {
 public:
  explicit Etsmgr(std::string inst = kDefaultInstance);

  const std::string& instance() const { return inst_; }
  std::string server_name() const { return InstToName("etsmgr_srv", inst_); }
  std::string vault_name() const { return InstToName("etsmgr_vault", inst_); }
  std::string supervisor_name() const { return InstToName("etsmgr_sup", inst_); }

  // Options are taken by value; name them before awaiting (GCC12-WORKAROUND in task.h). The
  // timeouts are kept for compatibility: no call waits (see above).
  template <TableKey K, typename V>
  Task<absl::StatusOr<ManagedTableRef>> NewTable(
      Process& self, std::string name, TableOptions options,
      absl::Duration timeout = kDefaultCallTimeout) const;
  template <TableKey K, typename V>
  Task<absl::StatusOr<ManagedTableRef>> NewTable(
      Process& self, std::string name, absl::Duration timeout = kDefaultCallTimeout) const;
  template <TableKey K, typename V>
  requires TableSerializable<K> && TableSerializable<V> Task<absl::StatusOr<ManagedTableRef>>
  NewTableFromFile(Process& self, std::string name, std::string path, TableOptions options)
  const;
  // (GCC12-WORKAROUND: an overload, not a default argument: gcc 12 destroys a defaulted temporary
  // in a co_await expression twice.)
  template <TableKey K, typename V>
  requires TableSerializable<K> && TableSerializable<V> Task<absl::StatusOr<ManagedTableRef>>
  NewTableFromFile(Process& self, std::string name, std::string path)
  const { return NewTableFromFile<K, V>(self, std::move(name), std::move(path), TableOptions()); }
  Task<absl::StatusOr<ManagedTableRef>> AddTable(
      Process& self, std::string name, AnyTable table,
      absl::Duration timeout = kDefaultCallTimeout) const;
  Task<absl::Status> DelTable(Process& self, std::string name,
                              absl::Duration timeout = kDefaultCallTimeout) const;
  Task<absl::StatusOr<ManagerInfo>> Info(Process& self,
                                         absl::Duration timeout = kDefaultCallTimeout) const;
  // The running manager's Pid, woken by its registration; DeadlineExceeded at `deadline` (the
  // message says whether the instance is restarting, down or stopped: see State()). It waits
  // through a stop too: a stopped instance keeps its tables for its next start.
  Task<absl::StatusOr<Pid>> WaitForManager(Process& self, absl::Time deadline) const;

  // Any thread.
  InstanceState State(Node& node) const { return GetInstanceState(node, inst_); }
  // True when `pid` is or was this instance's manager (so an exit signal from it is the
  // manager's, even one older than the manager a client knows).
  bool IsManager(Node& node, const Pid& pid) const;

 private:
  friend class manager_internal::EtsmgrAccess;
  // The untyped form NewTable<K, V> uses. InvalidArgument for a factory with no create function.
  Task<absl::StatusOr<ManagedTableRef>> NewTableErased(Process& self, std::string name,
                                                       TableOptions options,
                                                       manager_internal::TableFactory factory,
                                                       absl::Duration timeout) const;

  std::string inst_;
};

template <TableKey K, typename V>
Task<absl::StatusOr<ManagedTableRef>> Etsmgr::NewTable(Process& self, std::string name,
                                                       TableOptions options,
                                                       absl::Duration timeout) const {
  return NewTableErased(self, std::move(name), std::move(options),
                        manager_internal::FactoryFor<K, V>(), timeout);
}

template <TableKey K, typename V>
Task<absl::StatusOr<ManagedTableRef>> Etsmgr::NewTable(Process& self, std::string name,
                                                       absl::Duration timeout) const {
  return NewTable<K, V>(self, std::move(name), TableOptions(), timeout);
}

template <TableKey K, typename V>
requires TableSerializable<K> && TableSerializable<V> Task<absl::StatusOr<ManagedTableRef>>
Etsmgr::NewTableFromFile(Process& self, std::string name, std::string path, TableOptions options)
const {
  manager_internal::TableFactory factory = manager_internal::FactoryFor<K, V>();
  factory.load = &manager_internal::LoadTableFor<K, V>;
  factory.load_path = std::move(path);
  return NewTableErased(self, std::move(name), std::move(options), std::move(factory),
                        kDefaultCallTimeout);
}

namespace manager_internal {
// The untyped new_table, for ManagedTable and tests (not public API: a TableFactory is internal).
class EtsmgrAccess {
 public:
  static Task<absl::StatusOr<ManagedTableRef>> NewTableErased(const Etsmgr& mgr, Process& self,
                                                              std::string name,
                                                              TableOptions options,
                                                              TableFactory factory,
                                                              absl::Duration timeout) {
    return mgr.NewTableErased(self, std::move(name), std::move(options), std::move(factory),
                              timeout);
  }
};
}  // namespace manager_internal

}  // namespace etsmgr

#endif  // ETSMGR_MANAGER_MANAGER_H_
