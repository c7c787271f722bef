// The state of one manager instance (internal): the directory and counters shared by the
// instance's vault and manager processes. It belongs to the instance, not to the manager
// process, so it survives manager restarts; the vault creates it and removes it when it exits.
#ifndef ETSMGR_MANAGER_INTERNAL_INSTANCE_H_
#define ETSMGR_MANAGER_INTERNAL_INSTANCE_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "etsmgr/base/adaptive_mutex.h"
#include "etsmgr/manager/manager.h"
#include "etsmgr/process/node.h"
#include "etsmgr/table/table_core.h"

namespace etsmgr::manager_internal {

struct Entry {
  AnyTable table;
  Pid client;  // Null: no client ("none"); the vault holds the table.
};

struct Instance {
  explicit Instance(std::string name) : inst(std::move(name)) {}
  const std::string inst;

  AdaptiveMutex mu;  // Guards everything below. Written by the manager; read by the vault.
  absl::flat_hash_map<std::string, Entry> tables;
  // Each client's table names: the link count of Erlang's etsmgr, and what a client's exit
  // touches (so a burst of exits costs the exiting clients' tables, not all tables).
  absl::flat_hash_map<Pid, absl::flat_hash_set<std::string>> clients;
  ManagerCounters counters;
  uint64_t manager_starts = 0;
  uint64_t exit_work = 0;  // Directory entries touched handling client exits (tests check it).
  Pid vault;
  Pid manager;
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
