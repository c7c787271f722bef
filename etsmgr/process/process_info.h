// ProcessInfo: a snapshot of one process (Erlang's process_info), as GetProcessInfo returns it.
#ifndef ETSMGR_PROCESS_PROCESS_INFO_H_
#define ETSMGR_PROCESS_PROCESS_INFO_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "etsmgr/process/pid.h"

namespace etsmgr {

// Where a process is in its life: runnable (queued or running), waiting in a receive or sleep,
// exiting (its exit procedure is under way), dead.
enum class ProcessStatus : uint8_t { kRunnable, kWaiting, kExiting, kDead };

struct ProcessInfo {
  ProcessStatus status;
  size_t mailbox_length;
  std::vector<Pid> links;
  std::vector<Pid> monitored_by;  // processes monitoring this one
  std::vector<Pid> monitoring;    // processes this one monitors
  bool trap_exit;
  std::string registered_name;  // empty when unregistered
  size_t memory;                // bytes: the control block and its link and monitor tables
};

}  // namespace etsmgr

#endif  // ETSMGR_PROCESS_PROCESS_INFO_H_
