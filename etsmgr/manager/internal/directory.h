// The directory of one manager instance (internal): which name manages which table for which
// client, and the one decision function every table call goes through.
//
// Plain state: the instance's lock (Instance::mu) guards a Directory, and nothing here takes a
// lock, logs, suspends or touches a process. What the tables themselves say (alive, owner,
// whether the instance's keeper has them) comes in as a TableView read under the same lock.
#ifndef ETSMGR_MANAGER_INTERNAL_DIRECTORY_H_
#define ETSMGR_MANAGER_INTERNAL_DIRECTORY_H_

#include <algorithm>
#include <cstdint>
#include <deque>
#include <memory>
#include <set>
#include <string>
#include <typeinfo>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "etsmgr/process/pid.h"
#include "etsmgr/table/table_core.h"

namespace etsmgr::manager_internal {

// A client's table names: most clients have one or a few, kept inline and searched in place (no
// allocation, no hashing on the new_table / exit paths); a client with more gets a hash set, so
// removing one of its 100k names stays O(1).
class ClientNames {
 public:
  bool empty() const { return many_ == nullptr ? few_.empty() : many_->empty(); }
  size_t size() const { return many_ == nullptr ? few_.size() : many_->size(); }
  void Insert(const std::string& name);
  void Erase(const std::string& name);
  template <typename F>
  void ForEach(F f) const {
    if (many_ != nullptr) {
      for (const std::string& name : *many_) f(name);
    } else {
      for (const std::string& name : few_) f(name);
    }
  }

 private:
  static constexpr size_t kInline = 8;
  absl::InlinedVector<std::string, 1> few_;
  std::unique_ptr<absl::flat_hash_set<std::string>> many_;
};

// The name a table is managed under, shared by its directory entry and the table (its keeper
// tag): a table carries the name it is managed as, so one table cannot be managed under two.
using ManagedName = std::shared_ptr<const std::string>;

struct Entry {
  AnyTable table;
  Pid client;  // Null: no client ("none"); the instance's keeper has the table.
  ManagedName name;
};

// What the directory needs to know of a table, read under the directory lock.
struct TableView {
  bool alive = false;
  bool held = false;           // The instance's keeper has it: its vault owns it, or it is parked.
  Pid owner;                   // Null when held and parked, or deleted.
  bool owner_exiting = false;  // Its owner's exit has begun: the keeper has it next.
  bool initialised = false;
};

// A process that runs and has not begun to exit.
bool Live(const Pid& pid);

// The one decision of new_table and add_table, over the directory's entry for the name.
enum class Action {
  kCreate,    // No (live) table under the name: create one (new_table) or register it (add_table).
  kClaim,     // The keeper has it: hand it to the caller.
  kConfirm,   // The caller owns it already.
  kConflict,  // The status says why not.
};
struct Decision {
  Action action;
  absl::Status status;  // kConflict only.
};

// new_table<key, value>(name) by `caller`. `entry` is the name's entry or null; `view` describes
// its table.
Decision DecideNewTable(const std::string& name, const std::type_info& key,
                        const std::type_info& value, const Entry* entry, const TableView& view,
                        const Pid& caller);
// add_table(name, table) by `caller`. `table_view` describes `table`; `managed_as` is the name it
// is already managed under by this instance (null if none).
Decision DecideAddTable(const std::string& name, const Entry* entry, const TableView& entry_view,
                        const AnyTable& table, const TableView& table_view,
                        const std::string* managed_as, const Pid& caller);
// del_table(name) by `caller`: OK (remove it) or why not.
absl::Status DecideDelTable(const std::string& name, const Entry* entry, const TableView& view,
                            const Pid& caller);

// Counters kept under the directory lock (the keeper's are atomics: see Instance).
struct DirectoryCounters {
  uint64_t tables_created = 0;
  uint64_t hand_backs = 0;
  uint64_t manager_restarts = 0;
  uint64_t tables_discarded = 0;
};

class Directory {
 public:
  const Entry* Find(const std::string& name) const;
  Entry* Find(const std::string& name);
  size_t size() const { return entries_.size(); }

  // Adds an entry (the name must be free) and makes `client` its client; true when that is the
  // client's first table (link it).
  bool Add(const std::string& name, Entry entry);
  // Makes `client` the entry's client. Sets `*dropped` to the previous client when this was its
  // last table (unlink it) and yields true when this is the new client's first table (link it).
  bool SetClient(Entry& entry, const Pid& client, Pid* dropped);
  // Removes the name's entry; yields the removed entry and sets `*dropped` to its client when
  // that was the client's last table.
  Entry Erase(const std::string& name, Pid* dropped);
  // A client exited: its entries become client-less. Yields the names it had (for the log).
  std::vector<std::string> MarkClientGone(const Pid& client);
  bool HasClient(const Pid& client) const { return clients_.contains(client); }
  std::vector<Pid> Clients() const;
  // Every entry, removed (an instance discarded).
  std::vector<Entry> TakeAll();

  // info(): calls `visit(name, entry)` for every entry (caller holds the lock), and promises
  // that every entry's table (its TableCore) stays valid until EndSnapshot(id), whatever
  // happens to the entries meanwhile (removed entries wait in a graveyard until no snapshot
  // older than their removal is open), so the caller can read the tables after the lock.
  // EndSnapshot hands back what no open snapshot needs any more: drop it after the lock.
  template <typename Visit>
  uint64_t BeginSnapshot(Visit visit) {
    const uint64_t id = next_snapshot_++;
    open_snapshots_.insert(id);
    for (const auto& [name, entry] : entries_) visit(name, entry);
    return id;
  }
  std::vector<Entry> EndSnapshot(uint64_t id);

  DirectoryCounters counters;
  uint64_t exit_work = 0;  // Entries touched handling client exits (tests check it).

 private:
  void Bury(Entry entry);

  absl::flat_hash_map<std::string, Entry> entries_;
  // Each client's names: the link count of Erlang's etsmgr, and what a client's exit touches
  // (so a burst of exits costs the exiting clients' tables, not all tables).
  absl::flat_hash_map<Pid, ClientNames> clients_;
  // Open snapshots by id (ids grow), and removed entries tagged with the next id at removal: an
  // entry is needed while a snapshot with a smaller id is open.
  uint64_t next_snapshot_ = 1;
  std::set<uint64_t> open_snapshots_;
  std::deque<std::pair<uint64_t, Entry>> graveyard_;
};

}  // namespace etsmgr::manager_internal

#endif  // ETSMGR_MANAGER_INTERNAL_DIRECTORY_H_
