// The state of one manager instance (internal): the directory and counters shared by the
// instance's vault and manager processes. It belongs to the instance, not to the manager
// process, so it survives manager restarts; the vault creates it and removes it when it exits.
#ifndef ETSMGR_MANAGER_INTERNAL_INSTANCE_H_
#define ETSMGR_MANAGER_INTERNAL_INSTANCE_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "etsmgr/base/adaptive_mutex.h"
#include "etsmgr/manager/manager.h"
#include "etsmgr/process/node.h"
#include "etsmgr/table/table_core.h"

namespace etsmgr::manager_internal {

// The heir data of a managed table: its name, shared. A table's heir data is copied at every
// inheritance, and a std::any holding a std::string allocates on each copy; this is one pointer
// (it fits in std::any's inline storage) to a reference-counted string.
//
// A SharedName the manager made for a table it created is also that table's listing token: the
// directory entry holds the same SharedName and marks it unlisted when the entry goes (under the
// directory lock). The vault, inheriting the table, then knows whether it is still managed from
// the token alone, without the directory lock (which the manager holds for long stretches while
// a burst of clients exits). A SharedName made elsewhere (add_table) is not a token: the vault
// looks its name up.
class SharedName {
 public:
  enum class Listing : uint8_t { kNotAToken, kListed, kUnlisted };

  explicit SharedName(std::string name, Listing listing = Listing::kNotAToken)
      : rep_(new Rep{std::move(name), {1}, {listing}}) {}
  SharedName() : rep_(nullptr) {}
  SharedName(const SharedName& other) noexcept : rep_(other.rep_) {
    if (rep_ != nullptr) rep_->refs.fetch_add(1, std::memory_order_relaxed);
  }
  SharedName(SharedName&& other) noexcept : rep_(std::exchange(other.rep_, nullptr)) {}
  SharedName& operator=(SharedName other) noexcept {
    std::swap(rep_, other.rep_);
    return *this;
  }
  ~SharedName() {
    if (rep_ != nullptr && rep_->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete rep_;
  }
  const std::string* get() const { return rep_ != nullptr ? &rep_->name : nullptr; }
  Listing listing() const {
    return rep_ != nullptr ? rep_->listing.load(std::memory_order_acquire) : Listing::kNotAToken;
  }
  // Once, when the directory entry holding this token goes (caller holds the directory lock).
  void Unlist() {
    if (rep_ != nullptr && rep_->listing.load(std::memory_order_relaxed) == Listing::kListed) {
      rep_->listing.store(Listing::kUnlisted, std::memory_order_release);
    }
  }

 private:
  struct Rep {
    std::string name;
    std::atomic<uint32_t> refs;
    std::atomic<Listing> listing;
  };
  Rep* rep_;
};

// A client's table names: most clients have one or a few, kept inline and searched in place (no
// allocation, no hashing on the new_table / exit paths); a client with more gets a hash set, so
// removing one of its 100k names stays O(1).
class ClientNames {
 public:
  bool empty() const { return many_ == nullptr ? few_.empty() : many_->empty(); }
  size_t size() const { return many_ == nullptr ? few_.size() : many_->size(); }
  void Insert(const std::string& name) {
    if (many_ != nullptr) {
      many_->insert(name);
      return;
    }
    if (std::find(few_.begin(), few_.end(), name) != few_.end()) return;
    if (few_.size() < kInline) {
      few_.push_back(name);
      return;
    }
    many_ = std::make_unique<absl::flat_hash_set<std::string>>(few_.begin(), few_.end());
    many_->insert(name);
    few_.clear();
  }
  void Erase(const std::string& name) {
    if (many_ != nullptr) {
      many_->erase(name);
      return;
    }
    auto it = std::find(few_.begin(), few_.end(), name);
    if (it != few_.end()) few_.erase(it);
  }
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

struct Entry {
  AnyTable table;
  Pid client;  // Null: no client ("none"); the vault holds the table.
  // The table's listing token when the manager (or a client's fast path) created it; null for
  // a table registered with add_table.
  SharedName token;
};

struct Instance {
  explicit Instance(std::string name) : inst(std::move(name)) {}
  const std::string inst;

  AdaptiveMutex mu;  // Guards everything below. Written by the manager; read by the vault.
  absl::flat_hash_map<std::string, Entry> tables;
  // Each client's table names: the link count of Erlang's etsmgr, and what a client's exit
  // touches (so a burst of exits costs the exiting clients' tables, not all tables).
  absl::flat_hash_map<Pid, ClientNames> clients;
  ManagerCounters counters;  // transfers_to_manager: see below.
  // Counted by the vault without the lock (see SharedName).
  std::atomic<uint64_t> transfers_to_manager{0};
  // Inheritances the vault handled as TableTransfer messages (the vault's KeeperHook settles
  // those of managed tables on the exiting client's thread; tests check it).
  std::atomic<uint64_t> vault_transfer_messages{0};
  uint64_t manager_starts = 0;
  uint64_t exit_work = 0;  // Directory entries touched handling client exits (tests check it).
  // Clients that registered themselves carry an exit hook that does the manager's share of their
  // exit (manager.cc, ClientExited). Exits the manager had to handle, counted (tests).
  uint64_t client_exits_by_manager = 0;
  Pid vault;
  Pid manager;

  // The counters, whole (caller holds mu).
  ManagerCounters Counters() const {
    ManagerCounters all = counters;
    all.transfers_to_manager = transfers_to_manager.load(std::memory_order_relaxed);
    return all;
  }
};

// Instances of one node by name (Node::Service).
struct Instances {
  AdaptiveMutex mu;
  absl::flat_hash_map<std::string, std::shared_ptr<Instance>> by_name;
};

// False when `inst` already has an instance on `node`.
bool RegisterInstance(Node& node, const std::shared_ptr<Instance>& instance);
void UnregisterInstance(Node& node, const Instance* instance);
std::shared_ptr<Instance> FindInstance(Node& node, const std::string& inst);

}  // namespace etsmgr::manager_internal

#endif  // ETSMGR_MANAGER_INTERNAL_INSTANCE_H_
