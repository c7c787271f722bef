#include "testing/crash/chaos.h"

#include <algorithm>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "etsmgr/process/node.h"

namespace etsmgr::testing {

std::string FaultEvent::ToString() const {
  return absl::StrCat("fault ", index, ": exit ", target, " ",
                      victim.valid() ? victim.ToString() : std::string("(not running)"));
}

Task<std::vector<FaultEvent>> RunFaults(Process& self, FaultSchedule schedule) {
  std::vector<FaultEvent> events;
  if (schedule.targets.empty()) co_return events;
  std::mt19937_64 rng(schedule.seed);
  const int64_t max_gap_ns = std::max<int64_t>(1, absl::ToInt64Nanoseconds(schedule.max_gap));
  for (int i = 0; i < schedule.faults; ++i) {
    absl::Duration gap = absl::Nanoseconds(static_cast<int64_t>(rng() % max_gap_ns));
    co_await self.Sleep(gap);
    FaultEvent event;
    event.index = i;
    event.target = schedule.targets[rng() % schedule.targets.size()];
    event.victim = self.node().Whereis(event.target);
    if (event.victim.valid()) SendExit(event.victim, schedule.reason, self.self());
    events.push_back(std::move(event));
  }
  co_return events;
}

}  // namespace etsmgr::testing
