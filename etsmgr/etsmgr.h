// The etsmgr library in one include, for the //etsmgr umbrella target (`deps =
// ["@etsmgr//etsmgr"]`).
//
//   #include "etsmgr/etsmgr.h"
//
// Runtime: Node, Process, Pid, Task, messages, links, monitors, supervisors (process/).
// Tables: Table<K, V> with owner, heir, give_away, access modes; save/load (table/).
// The manager: Etsmgr, ManagedTable, StartManager / StopManager (manager/).
// Errors: absl::Status with the Erlang atom as a payload, ErrorAtom(status) (base/error_atom.h).
// Each header opens with its contract; everything under an `internal/` directory, and every
// `*_internal` namespace, is the library's own and may change without notice.
#ifndef ETSMGR_ETSMGR_H_
#define ETSMGR_ETSMGR_H_

#include "etsmgr/base/error_atom.h"
#include "etsmgr/base/log.h"
#include "etsmgr/base/status_macros.h"
#include "etsmgr/executor/backend.h"
#include "etsmgr/executor/runtime.h"
#include "etsmgr/executor/task.h"
#include "etsmgr/manager/managed_table.h"
#include "etsmgr/manager/manager.h"
#include "etsmgr/process/call.h"
#include "etsmgr/process/exit_reason.h"
#include "etsmgr/process/message.h"
#include "etsmgr/process/node.h"
#include "etsmgr/process/pid.h"
#include "etsmgr/process/process.h"
#include "etsmgr/process/supervisor.h"
#include "etsmgr/table/table.h"
#include "etsmgr/table/table_file.h"

#endif  // ETSMGR_ETSMGR_H_
