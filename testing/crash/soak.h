// The no-loss soak: a managed application under chaos over every process, seed after seed.
//
//   bazel run -c opt //testing/crash:soak -- --seeds=10000             # deterministic
//   bazel run -c opt //testing/crash:soak -- --seeds=1000 --threads=2  # real schedulers
//   bazel run -c opt //testing/crash:soak -- --seed=4711               # replay one seed
//
// One seed: an application supervisor runs client processes, each with a managed counter table
// (ManagedTable) and a scratch table it keeps creating, deleting and re-adding (new_table,
// del_table, add_table with short timeouts). The instance runs embedded (odd seeds) or
// standalone (even seeds; the driver starts it again when it is down, as an operator would).
// A fault schedule kills, at random moments: clients, etsmgr_srv, etsmgr_vault, etsmgr_sup, the
// application's supervisor, the manager several times in a row (past its restart intensity),
// and, standalone, runs StopManager/StartManager cycles. Meanwhile the driver increments
// counters and records every acknowledged value.
//
// After the schedule the driver brings everything back and checks, reading the tables itself:
// every managed table present with all acknowledged writes (each counter at least its highest
// acknowledged value; acknowledged values strictly increasing); a scratch table reported as not
// new is never empty; the directory consistent with the tables' owners and heirs (each entry's
// table alive, owned by its live client or by the vault, never parked with a vault running); no
// dead Pid among the directory's clients or the manager's links; tables_lost == 0.
//
// Deterministic mode (threads = 0) replays a seed exactly.
#ifndef TESTING_CRASH_SOAK_H_
#define TESTING_CRASH_SOAK_H_

#include <cstdint>
#include <map>
#include <string>

namespace etsmgr::testing {

struct SoakOptions {
  int threads = 0;  // 0: deterministic (one virtual scheduler); N: N real schedulers.
  int clients = 3;
  int faults = 16;
};

struct SeedResult {
  std::string error;                  // Empty when every invariant held.
  std::map<std::string, int> faults;  // Kills that hit a live process, per target kind.
  int64_t acks = 0;                   // Acknowledged writes checked.
  int64_t tables = 0;                 // Managed tables checked.
  uint64_t lost = 0;                  // tables_lost at the end.
};

SeedResult RunSeed(uint64_t seed, const SoakOptions& options);

}  // namespace etsmgr::testing

#endif  // TESTING_CRASH_SOAK_H_
