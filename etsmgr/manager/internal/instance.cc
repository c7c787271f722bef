#include "etsmgr/manager/internal/instance.h"

#include <mutex>
#include <utility>
#include <vector>

#include "absl/strings/str_join.h"
#include "etsmgr/base/log.h"
#include "etsmgr/table/internal/manager_access.h"

namespace etsmgr::manager_internal {

// --- InstanceKeeper.

void InstanceKeeper::OnKept(const AnyTable& table, const Pid& from, const Pid& holder) {
  transfers.fetch_add(1, std::memory_order_relaxed);
  if (!LogEnabled(LogLevel::kDebug)) return;  // Once per table: not even the arguments.
  Logf(LogLevel::kDebug, "etsmgr %s: owner %s of %s exited; %s", inst_, from.ToString(),
       table.ToString(),
       holder.valid() ? "the vault " + holder.ToString() + " holds it"
                      : std::string("no vault runs: parked"));
}

void InstanceKeeper::OnLost(const AnyTable& table) {
  lost.fetch_add(1, std::memory_order_relaxed);
  Logf(LogLevel::kWarning,
       "etsmgr %s: managed %s was deleted while still managed (del_table it first); counted lost",
       inst_, table.ToString());
}

// --- Instance.

namespace {
std::atomic<uint64_t> g_next_instance_id{1};
}  // namespace

Instance::Instance(std::string name)
    : inst(std::move(name)),
      id(g_next_instance_id.fetch_add(1, std::memory_order_relaxed)),
      keeper(std::make_shared<InstanceKeeper>(inst)),
      shared_dir(std::make_unique<SharedDirectory>(inst)) {}

Instance::~Instance() = default;

InstanceState Instance::State() const {
  if (stopped) return InstanceState::kStopped;
  // A manager whose supervisor is gone is on its way out (it is linked to it).
  if (!sup.alive()) return InstanceState::kDown;
  return manager.alive() ? InstanceState::kRunning : InstanceState::kRestarting;
}

ManagerCounters Instance::Counters() const {
  ManagerCounters c;
  c.tables_created = dir.counters.tables_created;
  c.hand_backs = dir.counters.hand_backs;
  c.manager_restarts = dir.counters.manager_restarts;
  c.vault_restarts = vault_starts > 0 ? vault_starts - 1 : 0;
  c.tables_discarded = dir.counters.tables_discarded;
  c.transfers_to_manager = keeper->transfers.load(std::memory_order_relaxed);
  c.tables_lost = keeper->lost.load(std::memory_order_relaxed);
  c.tables_parked = keeper->parked_count();
  return c;
}

TableView Instance::View(const AnyTable& table) const {
  TableView v;
  TableKeeper::Look look = keeper->LookAt(table);  // One look under the table's lock.
  v.alive = look.alive;
  if (!v.alive) return v;
  v.held = look.held;
  v.owner = std::move(look.owner);
  v.owner_exiting = look.owner_exiting;
  v.initialised = table_internal::ManagerAccess::Initialised(*table.core());
  return v;
}

// --- The node's instances.

namespace {

struct Instances {
  AdaptiveMutex mu;
  absl::flat_hash_map<std::string, std::shared_ptr<Instance>> by_name;
};

// Instances change rarely (start, discard) and are looked up on every client call: each thread
// keeps its last answer, good while no instance of any node was created or forgotten since (the
// version counts those, process-wide, so a registry at a reused address cannot match).
std::atomic<uint64_t> g_instances_version{1};

struct LastFound {
  const Instances* registry = nullptr;
  uint64_t version = 0;
  std::string inst;
  std::weak_ptr<Instance> instance;
};
thread_local LastFound t_last_found;

}  // namespace

std::shared_ptr<Instance> FindInstance(Node& node, const std::string& inst) {
  Instances& all = node.Service<Instances>();
  LastFound& last = t_last_found;
  if (last.registry == &all && last.inst == inst &&
      last.version == g_instances_version.load(std::memory_order_acquire)) {
    if (std::shared_ptr<Instance> found = last.instance.lock()) return found;
  }
  ExclusiveLock lock(all.mu);
  auto it = all.by_name.find(inst);
  if (it == all.by_name.end()) return nullptr;
  last.registry = &all;
  last.version = g_instances_version.load(std::memory_order_relaxed);  // Changes under the lock.
  last.inst = inst;
  last.instance = it->second;
  return it->second;
}

std::shared_ptr<Instance> FindOrCreateInstance(Node& node, const std::string& inst) {
  Instances& all = node.Service<Instances>();
  ExclusiveLock lock(all.mu);
  std::shared_ptr<Instance>& slot = all.by_name[inst];
  if (slot == nullptr || slot->discarded.load(std::memory_order_acquire)) {
    slot = std::make_shared<Instance>(inst);
    g_instances_version.fetch_add(1, std::memory_order_acq_rel);
  }
  return slot;
}

void ForgetInstance(Node& node, const Instance* instance) {
  std::shared_ptr<Instance> dropped;  // Released after the lock.
  Instances& all = node.Service<Instances>();
  ExclusiveLock lock(all.mu);
  auto it = all.by_name.find(instance->inst);
  if (it != all.by_name.end() && it->second.get() == instance) {
    dropped = std::move(it->second);
    all.by_name.erase(it);
    g_instances_version.fetch_add(1, std::memory_order_acq_rel);
  }
}

// --- Clients.

void ClientGone(Instance& st, const Pid& client, const ExitReason& reason) {
  std::vector<std::string> names;
  {
    ExclusiveLock lock(st.mu);
    names = st.dir.MarkClientGone(client);
    // Under the lock, so no client registration of ours can interleave with this unlink.
    if (st.manager.valid()) process_internal::ProcessAccess::Unlink(client, st.manager);
  }
  if (names.empty()) return;
  // One log line per burst of exits, written by the vault (the first exit of a burst wakes it).
  st.burst_tables.fetch_add(names.size(), std::memory_order_relaxed);
  if (st.burst_clients.fetch_add(1, std::memory_order_acq_rel) == 0) {
    Pid vault;
    {
      ExclusiveLock lock(st.mu);
      vault = st.vault;
    }
    Send(vault, BurstNotice{});
  }
  if (!LogEnabled(LogLevel::kDebug)) return;
  std::sort(names.begin(), names.end());
  if (names.size() > 8) names.resize(8), names.push_back("...");
  Logf(LogLevel::kDebug, "etsmgr %s: client %s exited (%s); its tables are held: %s", st.inst,
       client.ToString(), reason.ToString(), absl::StrJoin(names, ", "));
}

void WatchClientLocked(const std::shared_ptr<Instance>& st, Process& self) {
  // Keyed by the instance: one hook per client and instance, however often it comes back. The
  // caller runs, so its exit has not begun and the hook will run.
  const void* key = reinterpret_cast<const void*>(static_cast<uintptr_t>(st->id));
  if (process_internal::ProcessAccess::HasExitHook(self.self(), key))
    return;  // A client coming back: no hook to build.
  std::weak_ptr<Instance> weak = st;
  process_internal::ProcessAccess::AddExitHook(
      self.self(),
      [weak](const Pid& pid, const ExitReason& reason) {
        if (std::shared_ptr<Instance> instance = weak.lock()) ClientGone(*instance, pid, reason);
      },
      key);
}

}  // namespace etsmgr::manager_internal
