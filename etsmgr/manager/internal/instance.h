// One manager instance (internal): node-level state that outlives the instance's processes.
//
// An instance is created on the node the first time it starts and stays until the node shuts down
// or StopManager discards it. It holds the directory, the counters, and the keeper (a
// TableKeeper) that every managed table names as its heir: when a client exits, its tables go to
// the keeper, whose holder is the instance's vault process, or are parked in the keeper while no
// vault runs. The vault and the manager are how the instance acts, not where it lives: killing
// either, or its supervisor, or exhausting its restart intensity, loses no table.
//
// Locking: `mu` guards the directory, the process Pids and the flags below it. Table locks and
// process locks nest inside it; nothing logs, suspends or walks the whole directory under it
// (info() takes a snapshot of pointers and reads the tables after).
#ifndef ETSMGR_MANAGER_INTERNAL_INSTANCE_H_
#define ETSMGR_MANAGER_INTERNAL_INSTANCE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "etsmgr/base/mutex.h"
#include "etsmgr/manager/internal/directory.h"
#include "etsmgr/manager/internal/shared_directory.h"
#include "etsmgr/manager/manager.h"
#include "etsmgr/process/node.h"
#include "etsmgr/table/table_keeper.h"

namespace etsmgr::manager_internal {

// The heir of every table the instance manages; counts what happens to them.
class InstanceKeeper final : public TableKeeper {
 public:
  explicit InstanceKeeper(std::string inst) : inst_(std::move(inst)) {}

  std::atomic<uint64_t> transfers{0};  // Tables the keeper took from exited owners.
  std::atomic<uint64_t> lost{0};       // Managed tables deleted other than by del_table/discard.

 protected:
  void OnKept(const AnyTable& table, const Pid& from, const Pid& holder) override;
  void OnLost(const AnyTable& table) override;

 private:
  const std::string inst_;
};

// Sent to the vault by the first client exit of a burst: it logs one line for the whole burst.
struct BurstNotice {};

struct Instance {
  explicit Instance(std::string name);
  ~Instance();
  Instance(const Instance&) = delete;
  Instance& operator=(const Instance&) = delete;

  const std::string inst;
  const uint64_t id;  // Unique for the life of the program.
  const std::shared_ptr<InstanceKeeper> keeper;
  // The directory of shared tables (its own lock; shared with other programs).
  const std::unique_ptr<SharedDirectory> shared_dir;

  AdaptiveMutex mu;
  Directory dir ABSL_GUARDED_BY(mu);
  Pid sup ABSL_GUARDED_BY(mu);  // The instance's supervisor while one runs (or ran last).
  Pid sup_parent
      ABSL_GUARDED_BY(mu);        // The application supervisor that started `sup` (embedded mode).
  Pid vault ABSL_GUARDED_BY(mu);  // The keeper's holder.
  // Set by the manager when it has linked the clients (then it registers its name).
  Pid manager ABSL_GUARDED_BY(mu);
  bool standalone ABSL_GUARDED_BY(mu) =
      false;  // Started by StartManager (not under an application's supervisor).
  bool stopped ABSL_GUARDED_BY(mu) = false;  // StopManager stopped it.
  // Discarded (StopManager with discard_tables): a start in progress takes a new instance.
  std::atomic<bool> discarded{false};
  uint64_t manager_starts ABSL_GUARDED_BY(mu) = 0;
  uint64_t vault_starts ABSL_GUARDED_BY(mu) = 0;
  // The last managers the instance had (serials, newest last): an exit signal from one of them
  // is a manager's, however far behind a client is. Bounded: kManagerHistory.
  static constexpr size_t kManagerHistory = 64;
  std::deque<uint64_t> manager_serials ABSL_GUARDED_BY(mu);
  uint64_t client_exits_by_manager ABSL_GUARDED_BY(mu) =
      0;  // Exits the manager handled itself (tests).

  // Client exits not yet logged: the vault logs one line per burst (see BurstNotice).
  std::atomic<uint64_t> burst_clients{0};
  std::atomic<uint64_t> burst_tables{0};

  InstanceState State() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  ManagerCounters Counters() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  // The view of `table` the decision functions take.
  TableView View(const AnyTable& table) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
};

// The instance named `inst` on `node`, or null.
std::shared_ptr<Instance> FindInstance(Node& node, const std::string& inst);
// The instance named `inst`, created if the node has none (or only a discarded one).
std::shared_ptr<Instance> FindOrCreateInstance(Node& node, const std::string& inst);
// Removes `instance` from its node (discarded): a later start makes a new one.
void ForgetInstance(Node& node, const Instance* instance);

// Tests: called by a discard (StopManager with discard_tables) once it has marked the instance
// and taken its entries, before it releases their tables.
using DiscardHook = void (*)(Instance& instance);
inline std::atomic<DiscardHook> g_discard_hook{nullptr};
// Tests: called by del_table of a shared table after it released the table, before it deletes it.
using DelTableHook = void (*)(const std::string& name);
inline std::atomic<DelTableHook> g_del_table_hook{nullptr};
// Tests: awaited by a vault (registered, alive) before it becomes the holder of its instance's
// tables.
using VaultStartHook = Task<void> (*)(Process& vault);
inline std::atomic<VaultStartHook> g_vault_start_hook{nullptr};

// Makes the calling process a client of `st` (the process has no table of the instance yet): adds
// its exit hook, which marks its entries client-less when it exits and unlinks it from the manager,
// all under st.mu. Keyed by the instance's unique id (an address could be reused by a later
// instance).
void WatchClientLocked(const std::shared_ptr<Instance>& st, Process& self)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(st->mu);
// A client exited (its exit hook, or the manager's link when the hook could not run): its
// entries become client-less; the keeper has, or is about to have, its tables.
void ClientGone(Instance& st, const Pid& client, const ExitReason& reason);

}  // namespace etsmgr::manager_internal

#endif  // ETSMGR_MANAGER_INTERNAL_INSTANCE_H_
