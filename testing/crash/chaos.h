// Crash injection: seeded fault schedules that kill registered processes (clients, managers,
// supervisors) at random points, for tests of your own applications.
//
//   FaultSchedule schedule;
//   schedule.seed = seed;                         // the same seed, the same faults
//   schedule.faults = 20;
//   schedule.targets = {"counter", "etsmgr_srv"}; // registered names
//   std::vector<FaultEvent> done = co_await RunFaults(self, schedule);
//
// RunFaults runs in the calling process: it sleeps a random gap (up to `max_gap`), picks a target
// at random and sends it exit(`reason`) if the name is registered at that moment (a target that
// is restarting is skipped, and the event says so). Combined with a deterministic runtime
// (RuntimeOptions{.deterministic = true, .seed = seed}) a failing seed replays exactly: the
// schedule's choices and the scheduler's come from seeds, and time is virtual.
#ifndef TESTING_CRASH_CHAOS_H_
#define TESTING_CRASH_CHAOS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "etsmgr/process/exit_reason.h"
#include "etsmgr/process/process.h"

namespace etsmgr::testing {

struct FaultSchedule {
  uint64_t seed = 0;
  int faults = 10;
  absl::Duration max_gap = absl::Milliseconds(2);
  std::vector<std::string> targets;
  ExitReason reason = ExitReason::Kill();
};

struct FaultEvent {
  int index = 0;
  std::string target;
  Pid victim;                    // Null when the name was not registered (the fault was skipped).
  std::string ToString() const;  // "fault 3: kill etsmgr_srv <0.7>" / "... (not running)"
};

// Runs `schedule` from the calling process; yields what it did, in order.
Task<std::vector<FaultEvent>> RunFaults(Process& self, FaultSchedule schedule);

}  // namespace etsmgr::testing

#endif  // TESTING_CRASH_CHAOS_H_
