// The processes of a manager instance (internal): the vault, the manager and their supervisor's
// flags and child specs.
#ifndef ETSMGR_MANAGER_INTERNAL_PROCESSES_H_
#define ETSMGR_MANAGER_INTERNAL_PROCESSES_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "etsmgr/manager/manager.h"
#include "etsmgr/process/supervisor.h"

namespace etsmgr::manager_internal {

// The vault and the manager of `inst`, in start order (rest_for_one: the vault dies, the manager
// restarts too). The vault's start claims the instance for the supervisor running it: it fails
// with already_started while another live supervisor runs the instance, and waits for processes
// of a previous run that are still exiting. `standalone`: started by StartManager.
std::vector<ChildSpec> InstanceChildren(const std::string& inst, bool standalone);
SupervisorFlags InstanceFlags(const ManagerOptions& options);

// AlreadyExists `etsmgr instance "inst": already_started: supervisor <0.5> runs it`, with the atom.
absl::Status AlreadyStarted(const std::string& inst, const Pid& sup);

}  // namespace etsmgr::manager_internal

#endif  // ETSMGR_MANAGER_INTERNAL_PROCESSES_H_
