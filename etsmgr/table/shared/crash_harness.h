// Kill-and-verify harness for shared maps (test-only): writer processes forked from a
// single-threaded parent apply a seeded stream of writes to one segment and acknowledge each
// returned write through a pipe; the parent SIGKILLs them at seeded random moments, re-opens the
// segment, runs Check() and verifies every acknowledged write against its own model.
//
//   KillRunResult r = RunKills({.seed = 7, .kills = 500});
//   EXPECT_TRUE(r.ok()) << r.first_failure;
//
// Each writer's stream is a pure function of (seed, writer, index): the parent replays it. At a
// kill at most one write per writer is in flight (the one after its last acknowledgement); the
// parent accepts the map with that write done or not done, and nothing else. With two writers
// their keys are disjoint (key % 2), and both add to 16 shared counters (keys < 0), each of which
// must lie between the sum of acknowledged increments and that plus the in-flight ones.
// The seed fixes the writes, the kill targets (after how many acknowledgements) and the delays;
// where exactly in the code a kill lands is up to the scheduler, so a failing seed replays the
// same schedule, not necessarily the same instruction.
//
// Call only from a single-threaded process (it forks), and not under a runtime.
#ifndef ETSMGR_TABLE_SHARED_CRASH_HARNESS_H_
#define ETSMGR_TABLE_SHARED_CRASH_HARNESS_H_

#include <cstdint>
#include <functional>
#include <string>

#include "etsmgr/table/shared/shared_options.h"

namespace etsmgr::shared_testing {

struct KillRunOptions {
  uint64_t seed = 1;
  int kills = 100;  // total SIGKILLs (two writers: two per round)
  int writers = 1;  // 1 or 2
  // Where the segment lives (empty: /dev/shm); it is created fresh and removed at the end.
  std::string directory;
  uint32_t shards = 4;
  int key_space = 4000;             // distinct keys per writer
  int max_acks = 3000;              // a writer is killed after 0..max_acks acknowledged writes
  int max_delay_us = 30;            // ... plus a random busy delay
  int64_t clear_per_million = 300;  // single writer: how often a write is a Clear()
  // For tests of the reporting only: the first round's verification pretends that one
  // acknowledged write is missing.
  bool lose_a_write_for_test = false;
  // Called after each verified round with a progress line (may be empty).
  std::function<void(const std::string&)> progress;
};

struct KillRunResult {
  int kills = 0;
  int64_t writes_checked = 0;  // acknowledged writes verified after kills
  int check_failures = 0;      // Check() (or re-opening) failed
  int64_t lost_writes = 0;     // acknowledged writes missing, or state no write explains
  int harness_failures = 0;    // a writer failed a write, exited by itself or stalled
  std::string first_failure;   // what went wrong first, with the round
  SharedMapInfo info;          // the segment's repair counters at the end
  bool ok() const { return check_failures == 0 && lost_writes == 0 && harness_failures == 0; }
};

KillRunResult RunKills(const KillRunOptions& options);

}  // namespace etsmgr::shared_testing

#endif  // ETSMGR_TABLE_SHARED_CRASH_HARNESS_H_
