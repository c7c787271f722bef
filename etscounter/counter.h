// etscounter: the example application of Erlang's etsmgr, ported.
//
// A counter server (`etscounter_srv`, under its own supervisor `etscounter_sup`) keeps a count in
// a managed table. On start it waits for the manager, gets its table through new_table
// (initialising count = 0 only if the table is new) and then serves:
//   count  update_counter +1, logs "Counter N";
//   check  logs the table's contents;
//   die    kills itself (the supervisor restarts it; the table comes back with its count).
// The manager's exit is handled by waiting for the restarted manager and re-adding the table —
// where the Erlang example crashes (its add_table match fails), this one goes on counting.
//
// Storage: by default the table lives on the heap (it survives crashes of the counter and of the
// manager, not of the program). With StorageOptions::shared_segment it lives in a shared-memory
// segment (TableOptions::shared), so it survives the crash of the whole program too: a restarted
// program's counter gets it back through new_table with its count (created == false).
//
// CounterClient drives it from a plain thread (the shell, the demo, tests): every operation
// waits for its effect, so steps are ordered without sleeping.
#ifndef ETSCOUNTER_COUNTER_H_
#define ETSCOUNTER_COUNTER_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "etsmgr/manager/manager.h"
#include "etsmgr/process/node.h"
#include "etsmgr/table/shared/shared_string.h"

namespace etscounter {

inline constexpr char kServerName[] = "etscounter_srv";
inline constexpr char kSupervisorName[] = "etscounter_sup";
inline constexpr char kTableName[] = "etscounter";

// The counter's key: a fixed-size string, so the table can live in shared memory.
using CounterKey = etsmgr::SharedString<16>;

struct StorageOptions {
  // Empty: the heap. Otherwise the shared segment's name (see etsmgr::SharedStorage).
  std::string shared_segment;
  // Shared mode: where the segment lives (empty: /dev/shm; a directory: a file there).
  std::string shared_directory;
  // The manager instance the counter's table is managed by (its directory of shared tables is
  // /dev/shm/etsmgr-directory-<instance>).
  std::string instance = etsmgr::kDefaultInstance;
};

// Starts the counter's supervisor (and so the server) on `node`; the manager should run (the
// server waits for it). From a plain thread.
absl::Status StartCounter(etsmgr::Node& node, const StorageOptions& storage = {});

// Operations on a running counter, from a plain thread, each bounded by `timeout`.
class CounterClient {
 public:
  explicit CounterClient(etsmgr::Node& node, std::string instance = etsmgr::kDefaultInstance,
                         absl::Duration timeout = absl::Seconds(10))
      : node_(node), instance_(std::move(instance)), timeout_(timeout) {}

  // count: the new value.
  absl::StatusOr<int64_t> Count();
  // check: the table's contents, e.g. {{"count", 2}}.
  absl::StatusOr<std::vector<std::pair<std::string, int64_t>>> Check();
  // die: the server kills itself; returns once its replacement runs.
  absl::Status Die();
  // kill: exit(kill) from outside; returns once the replacement runs.
  absl::Status Kill();
  // kill-manager: exit(kill) to the manager; returns once a new manager runs (the counter
  // re-adds its table before it handles anything sent after this returns).
  absl::Status KillManager();
  absl::StatusOr<etsmgr::ManagerInfo> Info();

  etsmgr::Pid server() const { return node_.Whereis(kServerName); }

 private:
  // How the process goes: asked (a crash inside its own code, the `die` command) or killed.
  enum class Ending { kAskToDie, kKill };
  // Ends the registered process `name` and waits for it to be gone and for `name` to be
  // registered again.
  absl::Status KillAndAwaitRestart(const std::string& name, Ending ending);

  etsmgr::Node& node_;
  const std::string instance_;
  absl::Duration timeout_;
};

// "[{count,2}]": the table's contents the way the Erlang example logs them.
std::string FormatContents(const std::vector<std::pair<std::string, int64_t>>& contents);

}  // namespace etscounter

#endif  // ETSCOUNTER_COUNTER_H_
