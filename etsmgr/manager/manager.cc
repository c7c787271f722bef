#include "etsmgr/manager/manager.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <any>
#include <atomic>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <typeindex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "etsmgr/base/log.h"
#include "etsmgr/manager/internal/instance.h"

namespace etsmgr {
namespace manager_internal {

namespace {

// Instances change rarely (start, stop) and are looked up on every client call: each thread keeps
// its last answer, good while no instance of any node was registered or unregistered since (the
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

bool RegisterInstance(Node& node, const std::shared_ptr<Instance>& instance) {
  Instances& all = node.Service<Instances>();
  std::lock_guard<AdaptiveMutex> lock(all.mu);
  if (!all.by_name.emplace(instance->inst, instance).second) return false;
  g_instances_version.fetch_add(1, std::memory_order_acq_rel);
  return true;
}

void UnregisterInstance(Node& node, const Instance* instance) {
  std::shared_ptr<Instance> dropped;  // Released after the lock.
  Instances& all = node.Service<Instances>();
  std::lock_guard<AdaptiveMutex> lock(all.mu);
  auto it = all.by_name.find(instance->inst);
  if (it != all.by_name.end() && it->second.get() == instance) {
    dropped = std::move(it->second);
    all.by_name.erase(it);
    g_instances_version.fetch_add(1, std::memory_order_acq_rel);
  }
}

std::shared_ptr<Instance> FindInstance(Node& node, const std::string& inst) {
  Instances& all = node.Service<Instances>();
  LastFound& last = t_last_found;
  if (last.registry == &all && last.inst == inst &&
      last.version == g_instances_version.load(std::memory_order_acquire)) {
    if (std::shared_ptr<Instance> found = last.instance.lock()) return found;
  }
  std::lock_guard<AdaptiveMutex> lock(all.mu);
  auto it = all.by_name.find(inst);
  if (it == all.by_name.end()) return nullptr;
  last.registry = &all;
  last.version = g_instances_version.load(std::memory_order_relaxed);  // Changes under the lock.
  last.inst = inst;
  last.instance = it->second;
  return it->second;
}

namespace {

// --- Protocol between clients, the manager and the vault.

struct NewTableRequest {
  std::string name;
  TableOptions options;
  TableFactory factory;
};
struct AddTableRequest {
  std::string name;
  AnyTable table;
};
struct DelTableRequest {
  std::string name;
};
struct InfoRequest {};

// Room for `n` more elements of `v`, with its pages faulted in by one system call where the
// kernel can (MADV_POPULATE_WRITE, Linux 5.14): an info() reply over 100k tables is ~7 MB of
// fresh memory, and taking its ~1,800 page faults one by one cost ~3 ms here.
template <typename T>
void ReserveFaultedIn(std::vector<T>& v, size_t n) {
  v.reserve(v.size() + n);
#ifdef MADV_POPULATE_WRITE
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin =
      (reinterpret_cast<uintptr_t>(v.data() + v.size()) + page - 1) & ~(page - 1);
  const uintptr_t end = reinterpret_cast<uintptr_t>(v.data() + v.capacity()) & ~(page - 1);
  // Best effort: an older kernel answers EINVAL and the pages fault in as they are written.
  if (end > begin) (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_WRITE);
#endif
}

struct Reply {
  ManagedTableRef ref;
  Pid vault;
  bool transferred = false;  // A TableTransfer for ref.table was sent to the caller first.
};
using ReplyOr = absl::StatusOr<Reply>;

// Manager -> vault: give `table` to `client` and answer its call (ref) directly.
struct GiveBack {
  Pid client;
  uint64_t ref;
  AnyTable table;
  std::string name;
  Pid manager;
};
// Manager -> vault: a table it holds left the directory; delete it.
struct DropTable {
  AnyTable table;
};

// --- The directory's client bookkeeping (caller holds st.mu). Links follow the per-client
// table count, as Erlang's etsmgr: whoever changes the count makes or breaks the link (the
// manager from its side, a client on the fast paths below from its own).

// True when `name` is the client's first table: link the client and the manager.
bool AddClientName(Instance& st, const Pid& client, const std::string& name) {
  ClientNames& names = st.clients[client];
  bool first = names.empty();
  names.Insert(name);
  return first;
}

// True when that was the client's last table: unlink the client and the manager.
bool RemoveClientName(Instance& st, const Pid& client, const std::string& name) {
  auto it = st.clients.find(client);
  if (it == st.clients.end()) return false;
  it->second.Erase(name);
  if (!it->second.empty()) return false;
  st.clients.erase(it);
  return true;
}

// Removes a directory entry (counting a table lost with its owner). Returns its client when
// that was the client's last table (unlink the client and the manager), else the null Pid.
Pid EraseEntry(Instance& st, absl::flat_hash_map<std::string, Entry>::iterator it) {
  if (it->second.table.lost_with_owner()) ++st.counters.tables_lost;
  it->second.token.Unlist();
  Pid client = std::move(it->second.client);
  bool last = client.valid() && RemoveClientName(st, client, it->first);
  st.tables.erase(it);
  return last ? client : Pid();
}

// A client exited: its entries become client-less (the vault has, or is about to have, its
// tables). Caller holds st.mu.
void MarkClientGone(Instance& st, const Pid& client, const ExitReason& reason) {
  auto it = st.clients.find(client);
  if (it == st.clients.end()) return;
  // The set is moved out first (its names are the only copies we need, and only to log).
  ClientNames names = std::move(it->second);
  st.clients.erase(it);
  names.ForEach([&](const std::string& name) {
    auto e = st.tables.find(name);
    if (e != st.tables.end() && e->second.client == client) e->second.client = Pid();
    ++st.exit_work;
  });
  if (!LogEnabled(LogLevel::kNotice)) return;
  std::vector<std::string> shown;
  names.ForEach([&](const std::string& name) { shown.push_back(name); });
  std::sort(shown.begin(), shown.end());
  if (shown.size() > 8) shown.resize(8), shown.push_back("...");
  Logf(LogLevel::kNotice, "etsmgr %s: client %s exited (%s); its tables are held: %s",
       st.inst.c_str(), client.ToString().c_str(), reason.ToString().c_str(),
       absl::StrJoin(shown, ", ").c_str());
}

// The exit hook of a client that registered itself (RegisterClientHere): runs in the exiting
// client before its links fire. It does the manager's share of the exit here, then unlinks from
// the manager, so a burst of exits is handled by the exiting clients on every scheduler and the
// manager is not woken at all. (A client the manager registered is linked as before, and its exit
// reaches the manager; either way MarkClientGone runs once per exit: it finds nothing the second
// time.)
//
// The hook carries only the instance's address (two pointers fit in std::function without an
// allocation), so it finds the instance again in its node's registry: an instance that went away
// meanwhile is not there, and one registered at the same address since is the same kind of
// directory, where marking this client gone is just as right.
void ClientExited(const Instance* instance, const Pid& client, const ExitReason& reason) {
  std::shared_ptr<Instance> st;
  {
    Instances& all = client.control()->node()->Service<Instances>();
    std::lock_guard<AdaptiveMutex> lock(all.mu);
    for (const auto& [name, registered] : all.by_name) {
      if (registered.get() == instance) st = registered;
    }
  }
  if (st == nullptr) return;
  Pid manager;
  {
    std::lock_guard<AdaptiveMutex> lock(st->mu);
    MarkClientGone(*st, client, reason);
    manager = st->manager;
  }
  client.control()->Unlink(manager);
}

bool SameTypes(const TableCore& core, const TableFactory& factory) {
  return core.key_type() == std::type_index(*factory.key_type) &&
         core.value_type() == std::type_index(*factory.value_type);
}

// The vault holds the entry's table for a live client other than `claimant`: a hand-back to
// that client is under way, so nobody else may claim it (table_exists).
bool HandingBackToAnother(const Entry& entry, const Pid& claimant) {
  return entry.client.valid() && entry.client != claimant && entry.client.alive();
}

void LogHandBack(const Instance& st, const std::string& name, const Pid& client) {
  if (!LogEnabled(LogLevel::kNotice)) return;
  Logf(LogLevel::kNotice, "etsmgr %s: table %s handed back to %s", st.inst.c_str(), name.c_str(),
       client.ToString().c_str());
}

void Answer(const Pid& to, uint64_t ref, ReplyOr reply) {
  Send(to, CallReply<ReplyOr>{ref, std::move(reply)});
}

std::string Quoted(const std::string& name) { return absl::StrCat("\"", name, "\""); }

// Creates `name`'s table as the directory makes them: the vault its heir, and as heir data a
// fresh listing token, also returned in `token` for the entry. Caller holds st.mu.
absl::StatusOr<AnyTable> CreateManagedTable(const Instance& st, const std::string& name,
                                            TableOptions options, const TableFactory& factory,
                                            SharedName& token) {
  token = SharedName(name, SharedName::Listing::kListed);
  options.heir = st.vault;
  options.heir_data = token;
  absl::StatusOr<AnyTable> table = factory.create(std::move(options));
  if (!table.ok()) {
    return absl::Status(table.status().code(),
                        absl::StrCat("new_table ", Quoted(name), ": ", table.status().message()));
  }
  return table;
}

// --- The vault: heir of every managed table; holds tables while their clients are down.

// Removes the instance from the node when the vault's frame goes (exit or shutdown).
class InstanceGuard {
 public:
  InstanceGuard(Node& node, std::shared_ptr<Instance> instance)
      : node_(node), instance_(std::move(instance)) {}
  ~InstanceGuard() { UnregisterInstance(node_, instance_.get()); }
  InstanceGuard(const InstanceGuard&) = delete;
  InstanceGuard& operator=(const InstanceGuard&) = delete;

 private:
  Node& node_;
  std::shared_ptr<Instance> instance_;
};

// The vault inherited a managed table (from a client that exited): counted and logged.
void NoteVaultHolds(Instance& st, const TableTransfer& t, const std::string& name) {
  st.transfers_to_manager.fetch_add(1, std::memory_order_relaxed);
  if (!LogEnabled(LogLevel::kNotice)) return;   // Skip formatting the arguments too.
  absl::StatusOr<Pid> vault = t.table.Owner();  // The vault, unless already taken back.
  Logf(LogLevel::kNotice, "etsmgr %s: client %s exited; vault %s holds table %s (%s)",
       st.inst.c_str(), t.from.ToString().c_str(),
       vault.ok() ? vault->ToString().c_str() : "(gone)", name.c_str(), t.table.ToString().c_str());
}

// Settles managed inheritances on the exiting client's thread (see KeeperHook): a burst of client
// exits then wakes neither the manager nor the vault. Only tables whose listing token reads
// listed (see VaultInherited for why that means managed); the rest come as messages.
// Holds no Pid: the vault's control block holds this hook.
class VaultKeeper final : public KeeperHook {
 public:
  explicit VaultKeeper(std::weak_ptr<Instance> st) : st_(std::move(st)) {}
  bool Take(TableTransfer& transfer) const override {
    const auto* token = std::any_cast<SharedName>(&transfer.heir_data);
    if (token == nullptr || token->listing() != SharedName::Listing::kListed) return false;
    std::shared_ptr<Instance> st = st_.lock();
    if (st == nullptr) return false;
    NoteVaultHolds(*st, transfer, *token->get());
    return true;
  }

 private:
  const std::weak_ptr<Instance> st_;
};

void VaultInherited(Instance& st, const Pid& vault, const TableTransfer& t) {
  st.vault_transfer_messages.fetch_add(1, std::memory_order_relaxed);
  // The name the heir data carries: a SharedName, or a plain std::string (a table given to the
  // vault by hand, or added with add_table). Null for anything else.
  const auto* token = std::any_cast<SharedName>(&t.heir_data);
  const std::string* name =
      token != nullptr ? token->get() : std::any_cast<std::string>(&t.heir_data);
  bool managed = false;
  if (token != nullptr && token->listing() != SharedName::Listing::kNotAToken) {
    // The entry goes (Unlist) before whoever removes it looks at the owner, and the owner changed
    // to us before this message was sent (or the keeper hook ran): if it reads listed, the
    // remover saw us as the owner and sends us DropTable.
    managed = token->listing() == SharedName::Listing::kListed;
  } else if (name != nullptr) {
    std::lock_guard<AdaptiveMutex> lock(st.mu);
    auto it = st.tables.find(*name);
    managed = it != st.tables.end() && it->second.table == t.table;
  }
  if (managed) {
    NoteVaultHolds(st, t, *name);
    return;
  }
  // Taken back already (a client claims a table from the vault directly) and then dropped.
  absl::StatusOr<Pid> owner = t.table.Owner();
  if (!owner.ok() || *owner != vault) return;
  // Not (or no longer) in the directory: nobody can claim it back; do not keep it forever.
  if (LogEnabled(LogLevel::kNotice)) {
    Logf(LogLevel::kNotice, "etsmgr %s: %s from %s is not managed; deleted", st.inst.c_str(),
         t.table.ToString().c_str(), t.from.ToString().c_str());
  }
  t.table.Delete().IgnoreError();
}

void VaultGiveBack(Instance& st, const GiveBack& g) {
  // No data: the client API takes this TableTransfer itself (and a std::string in a std::any
  // is an allocation per hand-back).
  absl::Status given = g.table.GiveAway(g.client);
  if (!given.ok()) {
    Answer(g.client, g.ref,
           absl::FailedPreconditionError(absl::StrCat("hand-back of table ", Quoted(g.name), " to ",
                                                      g.client.ToString(), ": ", given.message())));
    return;
  }
  Pid vault;
  {
    std::lock_guard<AdaptiveMutex> lock(st.mu);
    ++st.counters.hand_backs;
    vault = st.vault;
  }
  LogHandBack(st, g.name, g.client);
  // Still "created" if the client that got it new died before it could initialise it.
  Answer(g.client, g.ref,
         Reply{.ref = {g.manager, g.table, !g.table.core()->initialised()},
               .vault = std::move(vault),
               .transferred = true});
}

Task<void> VaultBody(Process& self, std::shared_ptr<Instance> st) {
  InstanceGuard guard(self.node(), st);
  (void)SetKeeperHook(std::make_shared<VaultKeeper>(st));
  while (true) {
    Message m = co_await self.Receive();
    if (const auto* t = m.As<TableTransfer>()) {
      VaultInherited(*st, self.self(), *t);
    } else if (const auto* g = m.As<GiveBack>()) {
      VaultGiveBack(*st, *g);
    } else if (const auto* d = m.As<DropTable>()) {
      d->table.Delete().IgnoreError();
    } else {
      Logf(LogLevel::kWarning, "etsmgr %s vault: unexpected %s message ignored", st->inst.c_str(),
           m.type_name());
    }
  }
}

// --- The manager.

class Manager {
 public:
  Manager(Process& self, std::shared_ptr<Instance> st) : self_(self), st_(std::move(st)) {}

  void Init() {
    std::lock_guard<AdaptiveMutex> lock(st_->mu);
    st_->manager = self_.self();
    if (st_->manager_starts++ > 0) ++st_->counters.manager_restarts;
    // Links died with the previous manager. Clients that died meanwhile are marked now (so the
    // first info() is right); one dying after this check answers the link with noproc.
    std::vector<Pid> dead;
    for (const auto& [client, names] : st_->clients) {
      if (client.alive()) {
        self_.Link(client);
      } else {
        dead.push_back(client);
      }
    }
    for (const Pid& client : dead) MarkClientGone(*st_, client, ExitReason::NoProc());
    Logf(LogLevel::kNotice, "etsmgr %s: manager %s started (%zu managed tables, restart %u)",
         st_->inst.c_str(), self_.self().ToString().c_str(), st_->tables.size(),
         static_cast<unsigned>(st_->counters.manager_restarts));
  }

  void HandleNew(const CallRequest<NewTableRequest>& req) {
    const std::string& name = req.request.name;
    const Pid& client = req.from;
    std::unique_lock<AdaptiveMutex> lock(st_->mu);
    auto it = st_->tables.find(name);
    if (it != st_->tables.end() && it->second.table.alive()) {
      const AnyTable& table = it->second.table;
      const TableFactory& f = req.request.factory;
      if (!SameTypes(*table.core(), f)) {
        Answer(client, req.ref,
               absl::InvalidArgumentError(
                   absl::StrCat("new_table ", Quoted(name), ": the managed table holds ",
                                table.core()->type_names(), ", not <", TypeName(*f.key_type), ", ",
                                TypeName(*f.value_type), ">")));
        return;
      }
      ClaimExisting(lock, it->second, name, client, req.ref, "new_table");
      return;
    }
    if (it != st_->tables.end()) RemoveEntry(it);  // A dead entry: start afresh.
    SharedName token;
    absl::StatusOr<AnyTable> table =
        CreateManagedTable(*st_, name, req.request.options, req.request.factory, token);
    if (!table.ok()) {
      Answer(client, req.ref, table.status());
      return;
    }
    // In the directory before the client can own it: if the client dies right after, the vault
    // must find the entry when it inherits the table.
    st_->tables.emplace(name, Entry{*table, client, std::move(token)});
    AddClient(client, name);
    absl::Status given = table->GiveAway(client);  // No data: see VaultGiveBack.
    if (!given.ok()) {
      // The client died while its request was queued: nobody to give it to.
      RemoveEntry(st_->tables.find(name));
      table->Delete().IgnoreError();
      Logf(LogLevel::kNotice, "etsmgr %s: new_table %s for %s dropped: %s", st_->inst.c_str(),
           name.c_str(), client.ToString().c_str(), std::string(given.message()).c_str());
      return;
    }
    ++st_->counters.tables_created;
    Reply reply{.ref = {self_.self(), *table, true}, .vault = st_->vault, .transferred = true};
    lock.unlock();
    Answer(client, req.ref, std::move(reply));
  }

  void HandleAdd(const CallRequest<AddTableRequest>& req) {
    const std::string& name = req.request.name;
    const AnyTable& table = req.request.table;
    const Pid& client = req.from;
    if (!table.valid()) {
      Answer(client, req.ref,
             absl::InvalidArgumentError(absl::StrCat("add_table ", Quoted(name), ": null table")));
      return;
    }
    absl::StatusOr<Pid> owner = table.Owner();
    if (!owner.ok()) {
      Answer(client, req.ref,
             absl::NotFoundError(
                 absl::StrCat("add_table ", Quoted(name), ": ", owner.status().message())));
      return;
    }
    std::unique_lock<AdaptiveMutex> lock(st_->mu);
    auto it = st_->tables.find(name);
    if (it != st_->tables.end() && it->second.table.alive()) {
      if (!(it->second.table == table)) {
        Answer(client, req.ref,
               absl::AlreadyExistsError(
                   absl::StrCat("add_table ", Quoted(name), ": table_exists: the name manages ",
                                it->second.table.ToString(), ", not ", table.ToString())));
        return;
      }
      ClaimExisting(lock, it->second, name, client, req.ref, "add_table");
      return;
    }
    if (*owner != client && *owner != st_->vault) {
      Answer(client, req.ref, NotOwner("add_table", name, table, client, Pid(), *owner));
      return;
    }
    if (it != st_->tables.end()) RemoveEntry(it);
    Entry& entry = st_->tables.emplace(name, Entry{table, Pid(), SharedName()}).first->second;
    ClaimExisting(lock, entry, name, client, req.ref, "add_table");
  }

  void HandleDel(const CallRequest<DelTableRequest>& req) {
    const std::string& name = req.request.name;
    const Pid& client = req.from;
    std::unique_lock<AdaptiveMutex> lock(st_->mu);
    auto it = st_->tables.find(name);
    if (it == st_->tables.end()) {
      Answer(
          client, req.ref,
          absl::NotFoundError(absl::StrCat("del_table ", Quoted(name), ": no_such_table_entry")));
      return;
    }
    AnyTable table = it->second.table;
    absl::StatusOr<Pid> owner = table.Owner();  // Not OK once the table was deleted.
    bool allowed = client == it->second.client || !owner.ok() || *owner == client;
    if (!allowed) {
      Answer(client, req.ref,
             NotOwner("del_table", name, table, client, it->second.client, *owner));
      return;
    }
    RemoveEntry(it);
    // Read again now that the entry is gone (its token unlisted): a vault that inherited the
    // table before this took it as managed, and is told to drop it here.
    owner = table.Owner();
    bool vault_holds = owner.ok() && *owner == st_->vault;
    Pid vault = st_->vault;
    lock.unlock();
    if (vault_holds) Send(vault, DropTable{table});
    Answer(client, req.ref, Reply{.ref = {self_.self(), table, false}, .vault = std::move(vault)});
  }

  void HandleInfo(const CallRequest<InfoRequest>& req) {
    ManagerInfo info;
    {
      // One pass under the directory lock (table locks nest inside it, as everywhere here).
      std::lock_guard<AdaptiveMutex> lock(st_->mu);
      info.manager = self_.self();
      info.vault = st_->vault;
      info.counters = st_->Counters();
      ReserveFaultedIn(info.tables, st_->tables.size());
      // Each table is its own allocation, and at 100k tables the cache misses, not the work,
      // are the cost: a second iterator runs a few entries ahead prefetching their tables.
      constexpr int kAhead = 16;
      auto ahead = st_->tables.begin();
      const auto end = st_->tables.end();
      for (int i = 0; i < kAhead && ahead != end; ++i)
        ahead++->second.table.core()->PrefetchGlance();
      // 300k Pid copies of a few processes (~1,000 clients and the vault): counted per process.
      PidCopier pids;
      for (const auto& [name, entry] : st_->tables) {
        if (ahead != end) ahead++->second.table.core()->PrefetchGlance();
        ManagedTableInfo& t = info.tables.emplace_back();
        t.name = name;
        t.client = pids.Copy(entry.client);
        // Owner, heir and size only (TableInfo also demangles type names: slow at 100k).
        const std::shared_ptr<TableCore>& core = entry.table.core();
        if (!core->Glance(pids, &t.owner, &t.heir, &t.size)) {
          t.alive = false;
          if (core->lost_with_owner()) ++info.counters.tables_lost;
        }
      }
    }
    Send(req.from, CallReply<absl::StatusOr<ManagerInfo>>{req.ref, std::move(info)});
  }

  // A linked client exited: its entries become client-less; the vault has its tables. (Clients
  // that registered themselves did this in their exit hook and unlinked: see ClientExited.)
  void HandleClientExit(const Pid& client, const ExitReason& reason) {
    std::lock_guard<AdaptiveMutex> lock(st_->mu);
    if (st_->clients.contains(client)) ++st_->client_exits_by_manager;
    MarkClientGone(*st_, client, reason);
  }

 private:
  // The caller claims a live entry: hand the table back from the vault, or confirm it.
  void ClaimExisting(std::unique_lock<AdaptiveMutex>& lock, Entry& entry, const std::string& name,
                     const Pid& client, uint64_t ref, const char* what) {
    AnyTable table = entry.table;
    absl::StatusOr<Pid> owner = table.Owner();
    if (!owner.ok()) {
      Answer(client, ref,
             absl::Status(owner.status().code(),
                          absl::StrCat(what, " ", Quoted(name), ": ", owner.status().message())));
      return;
    }
    if (*owner != client && *owner != st_->vault) {
      Answer(client, ref,
             absl::AlreadyExistsError(absl::StrCat(
                 what, " ", Quoted(name), ": table_exists: ", table.ToString(), " is held by ",
                 owner->ToString(), ", not by the caller ", client.ToString())));
      return;
    }
    if (*owner == st_->vault && HandingBackToAnother(entry, client)) {
      Answer(client, ref,
             absl::AlreadyExistsError(
                 absl::StrCat(what, " ", Quoted(name), ": table_exists: ", table.ToString(),
                              " is being handed back to ", entry.client.ToString())));
      return;
    }
    SetClient(entry, name, client);
    Pid vault = st_->vault;
    lock.unlock();
    if (*owner == vault) {
      Send(vault, GiveBack{client, ref, table, name, self_.self()});  // The vault answers.
      return;
    }
    Answer(client, ref,
           Reply{.ref = {self_.self(), table, !table.core()->initialised()},
                 .vault = std::move(vault)});
  }

  // "del_table(\"counter\"): not_owner: caller <0.7> is neither the registered client <0.4>
  // nor the owner <0.9> of table #3". `registered` is null when the name has no client.
  absl::Status NotOwner(const char* what, const std::string& name, const AnyTable& table,
                        const Pid& caller, const Pid& registered, const Pid& owner) {
    return absl::PermissionDeniedError(
        absl::StrCat(what, "(", Quoted(name), "): not_owner: caller ", caller.ToString(),
                     " is neither the registered client ",
                     registered.valid() ? registered.ToString() : std::string("(none)"),
                     " nor the owner ", owner.ToString(), " of ", table.ToString()));
  }

  // Caller holds st_->mu.
  void SetClient(Entry& entry, const std::string& name, const Pid& client) {
    if (entry.client == client) {
      AddClient(client, name);  // Idempotent; relinks after a manager restart.
      return;
    }
    if (entry.client.valid()) RemoveClient(entry.client, name);
    entry.client = client;
    AddClient(client, name);
  }

  void AddClient(const Pid& client, const std::string& name) {
    if (AddClientName(*st_, client, name)) self_.Link(client);
  }

  void RemoveClient(const Pid& client, const std::string& name) {
    if (RemoveClientName(*st_, client, name)) self_.Unlink(client);
  }

  void RemoveEntry(absl::flat_hash_map<std::string, Entry>::iterator it) {
    Pid last = EraseEntry(*st_, it);
    if (last.valid()) self_.Unlink(last);
  }

  Process& self_;
  std::shared_ptr<Instance> st_;
};

Task<void> ManagerBody(Process& self, std::string inst, Pid parent) {
  std::shared_ptr<Instance> st = FindInstance(self.node(), inst);
  if (st == nullptr) {
    Logf(LogLevel::kError, "etsmgr %s: manager started without its vault", inst.c_str());
    ExitReason reason = ExitReason::Custom("etsmgr: no vault for instance " + inst);
    co_await self.Exit(std::move(reason));
  }
  Manager manager(self, st);
  manager.Init();
  while (true) {
    Message m = co_await self.Receive();
    if (const auto* r = m.As<CallRequest<NewTableRequest>>()) {
      manager.HandleNew(*r);
    } else if (const auto* a = m.As<CallRequest<AddTableRequest>>()) {
      manager.HandleAdd(*a);
    } else if (const auto* d = m.As<CallRequest<DelTableRequest>>()) {
      manager.HandleDel(*d);
    } else if (const auto* i = m.As<CallRequest<InfoRequest>>()) {
      manager.HandleInfo(*i);
    } else if (const auto* x = m.As<ExitSignal>()) {
      if (x->from == parent) {
        ExitReason reason = x->reason;
        co_await self.Exit(std::move(reason));
      }
      manager.HandleClientExit(x->from, x->reason);
    } else if (const auto* t = m.As<TableTransfer>()) {
      // Managed tables name the vault as heir; anything else that reaches us goes there too.
      t->table.GiveAway(st->vault, t->heir_data).IgnoreError();
    } else {
      Logf(LogLevel::kWarning, "etsmgr %s: unexpected %s message ignored", inst.c_str(),
           m.type_name());
    }
  }
}

// --- Client fast paths: the common new_table / del_table done by the client itself, under the
// directory lock and with no suspension point (so the client cannot die half-way), instead of a
// call to the manager. They decline (std::nullopt) whenever the manager has something to decide
// or report, and the client then calls the manager as usual.

// The caller becomes `name`'s client, linked to the manager. If the manager exited since the
// caller checked it, the link fails, and the next manager links every live client on start.
void RegisterClientHere(Process& self, Instance& st, Entry& entry, const std::string& name) {
  const Pid& client = self.self();
  if (entry.client.valid() && entry.client != client) RemoveClientName(st, entry.client, name);
  entry.client = client;
  if (!AddClientName(st, client, name)) return;
  self.TryLink(st.manager);
  // Once per process and instance (a client that deletes its last table and makes another keeps
  // the hook it has).
  const Instance* instance = &st;
  self.control()->AddExitHook(
      [instance](const Pid& pid, const ExitReason& reason) { ClientExited(instance, pid, reason); },
      instance);
}

// new_table of a name whose table the vault holds (its client died): the caller takes it over
// from the vault directly. Declines when the types differ, another live client holds the name
// (a hand-back on its way), or the vault does not own the table.
std::optional<absl::StatusOr<ManagedTableRef>> TryClaimHere(Process& self, Instance& st,
                                                            Entry& entry, const std::string& name,
                                                            const TableFactory& factory) {
  const std::shared_ptr<TableCore>& core = entry.table.core();
  if (!SameTypes(*core, factory) || HandingBackToAnother(entry, self.self())) return std::nullopt;
  if (!core->TakeOverFrom(st.vault).ok()) return std::nullopt;
  RegisterClientHere(self, st, entry, name);
  ++st.counters.hand_backs;
  LogHandBack(st, name, self.self());
  // Still "created" if the client that got it new died before it could initialise it.
  return ManagedTableRef{st.manager, entry.table, !core->initialised()};
}

// new_table without a call: a free name (the caller creates the table: it owns it, the vault is
// its heir) or a table the vault holds (TryClaimHere). Declines (leaving `options` untouched)
// when the manager or the vault is not running, or the manager has to decide: the name is held
// by a live process, or a dead entry under it belongs to another client.
std::optional<absl::StatusOr<ManagedTableRef>> TryNewTableHere(Process& self, Instance& st,
                                                               const std::string& name,
                                                               TableOptions& options,
                                                               const TableFactory& factory) {
  const Pid& client = self.self();
  std::lock_guard<AdaptiveMutex> lock(st.mu);
  if (!st.manager.alive() || !st.vault.alive()) return std::nullopt;
  auto it = st.tables.find(name);
  if (it != st.tables.end() && it->second.table.alive()) {
    return TryClaimHere(self, st, it->second, name, factory);
  }
  if (it != st.tables.end() && it->second.client.valid() && it->second.client != client) {
    return std::nullopt;
  }
  SharedName token;
  absl::StatusOr<AnyTable> table = CreateManagedTable(st, name, std::move(options), factory, token);
  if (!table.ok()) return table.status();
  // A dead entry (of this client or none): start afresh (the link stays; the client re-registers).
  if (it != st.tables.end()) EraseEntry(st, it);
  Entry& entry = st.tables.emplace(name, Entry{*table, Pid(), std::move(token)}).first->second;
  RegisterClientHere(self, st, entry, name);
  ++st.counters.tables_created;
  return ManagedTableRef{st.manager, *std::move(table), true};
}

// del_table by the table's registered client: unregisters it, unlinking the client from the
// manager with its last table. Declines when the manager is not running or the caller is not the
// registered client (the owner of a table registered to another client asks the manager).
std::optional<absl::Status> TryDelTableHere(Process& self, Instance& st, const std::string& name) {
  const Pid& client = self.self();
  AnyTable table;
  Pid vault;
  bool mine = false;
  {
    std::lock_guard<AdaptiveMutex> lock(st.mu);
    if (!st.manager.alive()) return std::nullopt;
    auto it = st.tables.find(name);
    if (it == st.tables.end()) {
      return absl::NotFoundError(absl::StrCat("del_table ", Quoted(name), ": no_such_table_entry"));
    }
    if (it->second.client != client) return std::nullopt;
    table = it->second.table;
    if (EraseEntry(st, it).valid()) self.Unlink(st.manager);
    absl::StatusOr<Pid> owner = table.Owner();
    if (owner.ok() && *owner == st.vault) vault = st.vault;
    mine = owner.ok() && *owner == client;
  }
  // No longer managed: ours stays ours with no heir; one the vault holds (a hand-back still on
  // its way) is deleted, as nobody can claim it any more.
  if (mine) table.SetHeir(Pid()).IgnoreError();
  if (vault.valid()) Send(vault, DropTable{table});
  return absl::OkStatus();
}

std::vector<ChildSpec> InstanceChildren(const std::string& inst) {
  ChildSpec vault;
  vault.id = "vault";
  vault.start = [inst](Process& sup) -> Task<absl::StatusOr<Pid>> {
    auto st = std::make_shared<Instance>(inst);
    if (!RegisterInstance(sup.node(), st)) {
      co_return absl::AlreadyExistsError(
          absl::StrCat("etsmgr instance \"", inst, "\": already_started"));
    }
    SpawnOptions options;
    options.name = InstToName("etsmgr_vault", inst);
    absl::StatusOr<Pid> pid =
        sup.SpawnLink([st](Process& self) { return VaultBody(self, st); }, options);
    if (!pid.ok()) {
      UnregisterInstance(sup.node(), st.get());
      co_return pid;
    }
    // Known before the manager starts (the vault's body may not have run yet): every table the
    // manager creates names it as heir.
    std::lock_guard<AdaptiveMutex> lock(st->mu);
    st->vault = *pid;
    co_return pid;
  };
  ChildSpec manager;
  manager.id = "manager";
  manager.start = [inst](Process& sup) -> Task<absl::StatusOr<Pid>> {
    SpawnOptions options;
    options.name = InstToName("etsmgr_srv", inst);
    options.trap_exit = true;
    Pid parent = sup.self();
    co_return sup.SpawnLink(
        [inst, parent](Process& self) { return ManagerBody(self, inst, parent); }, options);
  };
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

}  // namespace
}  // namespace manager_internal

using manager_internal::AddTableRequest;
using manager_internal::DelTableRequest;
using manager_internal::InfoRequest;
using manager_internal::NewTableRequest;
using manager_internal::ReplyOr;

std::string InstToName(std::string_view prefix, std::string_view inst) {
  if (inst == kDefaultInstance) return std::string(prefix);
  return absl::StrCat(std::string(prefix), "_", std::string(inst));
}

absl::Status StartManager(Node& node, std::string inst, ManagerOptions options) {
  if (inst.empty()) return absl::InvalidArgumentError("start: empty instance name");
  if (options.intensity < 0 || options.period <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "start(\"", inst, "\"): restart intensity must be >= 0 and the period positive (got ",
        options.intensity, " in ", absl::FormatDuration(options.period), ")"));
  }
  // Already started shows as the supervisor's name being taken (standalone) or the vault finding
  // the instance registered (embedded elsewhere): both AlreadyExists.
  SpawnOptions spawn;
  spawn.name = InstToName("etsmgr_sup", inst);
  absl::StatusOr<Pid> sup =
      StartSupervisor(node, manager_internal::InstanceFlags(options),
                      manager_internal::InstanceChildren(inst), std::move(spawn));
  if (!sup.ok()) {
    if (sup.status().code() == absl::StatusCode::kAlreadyExists) {
      return absl::AlreadyExistsError(absl::StrCat("start(\"", inst, "\"): already_started"));
    }
    return absl::Status(sup.status().code(),
                        absl::StrCat("start(\"", inst, "\"): ", sup.status().message()));
  }
  return absl::OkStatus();
}

absl::Status StopManager(Node& node, std::string inst) {
  Pid sup = node.Whereis(InstToName("etsmgr_sup", inst));
  if (!sup.valid()) {
    return absl::NotFoundError(absl::StrCat("stop(\"", inst, "\"): not_started"));
  }
  auto done = std::make_shared<std::promise<absl::Status>>();
  std::future<absl::Status> stopped = done->get_future();
  absl::StatusOr<Pid> helper = node.Spawn([sup, done](Process& self) -> Task<void> {
    absl::Status st = co_await StopSupervisor(self, sup);
    done->set_value(std::move(st));
  });
  if (!helper.ok()) return helper.status();
  absl::Status st = stopped.get();
  if (!st.ok())
    return absl::Status(st.code(), absl::StrCat("stop(\"", inst, "\"): ", st.message()));
  return absl::OkStatus();
}

ChildSpec ManagerChildSpec(std::string inst, ManagerOptions options) {
  return SupervisorChild(InstToName("etsmgr_sup", inst), manager_internal::InstanceFlags(options),
                         manager_internal::InstanceChildren(inst));
}

// --- Client API.

Etsmgr::Etsmgr(std::string inst) : inst_(std::move(inst)) {}

namespace {

// `op("name")` in client error messages, built only when something fails.
std::string Describe(const char* op, const std::string& name) {
  return absl::StrCat(op, " \"", name, "\"");
}

absl::Status NotRunning(const std::string& what, const std::string& server) {
  return absl::UnavailableError(absl::StrCat(what, ": the manager ", server, " is not running"));
}

// The client side of new_table / add_table / del_table: checks the name, calls the instance's
// manager and flattens the transport status and the manager's answer into one.
template <typename Request>
Task<absl::StatusOr<manager_internal::Reply>> CallManager(Process& self, std::string server,
                                                          const char* op, Request request,
                                                          absl::Duration timeout) {
  std::string name = request.name;  // Kept for messages; the request moves into the call.
  if (name.empty()) co_return absl::InvalidArgumentError(absl::StrCat(op, ": empty table name"));
  Pid pid = self.node().Whereis(server);
  if (!pid.valid()) co_return NotRunning(Describe(op, name), server);
  absl::StatusOr<ReplyOr> called = co_await Call<ReplyOr>(self, pid, std::move(request), timeout);
  if (!called.ok()) {
    co_return absl::Status(called.status().code(),
                           absl::StrCat(Describe(op, name), ": ", called.status().message()));
  }
  co_return std::move(*called);
}

// Takes the TableTransfer the giver sent before its reply (same sender: already queued).
Task<void> TakeTransfer(Process& self, uint64_t table_id) {
  co_await self.ReceiveIfFor(
      [table_id](const Envelope& e) {
        const TableTransfer* t = e.As<TableTransfer>();
        return t != nullptr && t->table.id() == table_id;
      },
      absl::Seconds(5));
}

}  // namespace

Task<absl::StatusOr<ManagedTableRef>> Etsmgr::NewTableErased(Process& self, std::string name,
                                                             TableOptions options,
                                                             manager_internal::TableFactory factory,
                                                             absl::Duration timeout) const {
  if (name.empty()) co_return absl::InvalidArgumentError("new_table: empty table name");
  std::optional<absl::StatusOr<ManagedTableRef>> ref;
  if (std::shared_ptr<manager_internal::Instance> st =
          manager_internal::FindInstance(self.node(), inst_)) {
    ref = manager_internal::TryNewTableHere(self, *st, name, options, factory);
  }
  if (!ref.has_value()) {
    NewTableRequest request;
    request.name = std::move(name);
    request.options = std::move(options);
    request.factory = std::move(factory);
    absl::StatusOr<manager_internal::Reply> reply =
        co_await CallManager(self, server_name(), "new_table", std::move(request), timeout);
    if (!reply.ok()) co_return reply.status();
    if (reply->transferred) co_await TakeTransfer(self, reply->ref.table.id());
    ref = std::move(reply->ref);
  }
  // From here to the caller's code there is no suspension point, so the caller cannot be killed
  // between learning "created" and initialising: mark it now. A caller killed before this point
  // leaves the table uninitialised, and the next claimant is told "created" again.
  if (ref->ok() && (*ref)->created) (*ref)->table.core()->SetInitialised(true);
  co_return std::move(*ref);
}

Task<absl::StatusOr<ManagedTableRef>> Etsmgr::AddTable(Process& self, std::string name,
                                                       AnyTable table,
                                                       absl::Duration timeout) const {
  if (!table.valid()) {
    co_return absl::InvalidArgumentError(Describe("add_table", name) + ": null table handle");
  }
  AddTableRequest request;
  request.name = name;
  request.table = table;
  absl::StatusOr<manager_internal::Reply> reply =
      co_await CallManager(self, server_name(), "add_table", std::move(request), timeout);
  if (!reply.ok()) co_return reply.status();
  if (reply->transferred) co_await TakeTransfer(self, reply->ref.table.id());
  // We own it now: make the vault its heir (no suspension point since the reply, so this process
  // cannot have been killed in between).
  absl::Status heir = reply->ref.table.SetHeir(reply->vault, manager_internal::SharedName(name));
  if (!heir.ok()) {
    co_return absl::Status(heir.code(),
                           absl::StrCat(Describe("add_table", name), ": ", heir.message()));
  }
  co_return std::move(reply->ref);
}

Task<absl::Status> Etsmgr::DelTable(Process& self, std::string name, absl::Duration timeout) const {
  if (name.empty()) co_return absl::InvalidArgumentError("del_table: empty table name");
  if (std::shared_ptr<manager_internal::Instance> st =
          manager_internal::FindInstance(self.node(), inst_)) {
    std::optional<absl::Status> here = manager_internal::TryDelTableHere(self, *st, name);
    if (here.has_value()) co_return std::move(*here);
  }
  DelTableRequest request;
  request.name = std::move(name);
  absl::StatusOr<manager_internal::Reply> reply =
      co_await CallManager(self, server_name(), "del_table", std::move(request), timeout);
  if (!reply.ok()) co_return reply.status();
  // No longer managed: if it is ours, it no longer has the vault as heir.
  absl::StatusOr<Pid> owner = reply->ref.table.Owner();
  if (owner.ok() && *owner == self.self()) reply->ref.table.SetHeir(Pid()).IgnoreError();
  co_return absl::OkStatus();
}

Task<absl::StatusOr<ManagerInfo>> Etsmgr::Info(Process& self, absl::Duration timeout) const {
  Pid server = self.node().Whereis(server_name());
  if (!server.valid()) co_return NotRunning("info", server_name());
  InfoRequest request;
  absl::StatusOr<absl::StatusOr<ManagerInfo>> called =
      co_await Call<absl::StatusOr<ManagerInfo>>(self, server, request, timeout);
  if (!called.ok()) {
    co_return absl::Status(called.status().code(),
                           absl::StrCat("info: ", called.status().message()));
  }
  co_return std::move(*called);
}

Task<absl::StatusOr<Pid>> Etsmgr::WaitForManager(Process& self, absl::Time deadline) const {
  std::optional<Pid> pid = co_await self.WaitForRegistered(server_name(), deadline);
  if (!pid) {
    co_return absl::DeadlineExceededError(
        absl::StrCat("wait_for_manager: ", server_name(), " was not running by the deadline"));
  }
  co_return std::move(*pid);
}

}  // namespace etsmgr
