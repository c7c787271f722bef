// Supervisors: OTP's supervisor behaviour for etsmgr processes.
//
//   std::vector<ChildSpec> children = {
//       WorkerChild("counter", CounterBody),                      // permanent, 5 s shutdown
//       WorkerChild("cache", CacheBody, RestartType::kTransient),
//   };
//   Pid sup = StartSupervisor(*node, {.strategy = RestartStrategy::kOneForOne,
//                                     .intensity = 3, .period = absl::Seconds(5)},
//                             children, {.name = "app_sup"}).value();
//
// Semantics (OTP's `supervisor` module)
// - Children start in list order; a child that fails to start stops the ones already started
//   (in reverse order) and the supervisor fails to start with a status naming the child and why.
// - Strategies: one_for_one restarts the child that exited; one_for_all stops the others (in
//   reverse start order) and restarts all in order; rest_for_one stops the children started
//   after it (in reverse) and restarts it and them in order.
// - Restart types: permanent always restarts; transient restarts unless the exit reason was
//   normal or shutdown; temporary never restarts (and its spec is removed when it exits).
// - Intensity: more than `intensity` restarts within `period` (sub-second periods allowed) and
//   the supervisor stops all children and exits with reason shutdown.
// - Shutdown of a child: `shutdown == ZeroDuration()` is brutal_kill (exit kill); otherwise exit
//   shutdown, then kill if it has not exited within `shutdown` (InfiniteDuration(): wait).
//   Stopping the supervisor stops children in reverse start order.
// - The supervisor traps exits; an exit signal from its parent (the process it is linked to that
//   started it) stops it, children first; so does StopSupervisor(). Supervisors nest:
//   SupervisorChild(...) is a child spec.
//
// Client calls (from a process; each takes a deadline like gen_server:call):
//   StartChild, TerminateChild, DeleteChild, RestartChild, WhichChildren, CountChildren.
#ifndef ETSMGR_PROCESS_SUPERVISOR_H_
#define ETSMGR_PROCESS_SUPERVISOR_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "etsmgr/process/call.h"
#include "etsmgr/process/node.h"
#include "etsmgr/process/process.h"

namespace etsmgr {

enum class RestartStrategy { kOneForOne, kOneForAll, kRestForOne };
enum class RestartType { kPermanent, kTransient, kTemporary };

struct ChildSpec {
  std::string id;
  // Starts the child linked to the supervisor (`sup`) and yields its Pid, or why it failed.
  std::function<Task<absl::StatusOr<Pid>>(Process& sup)> start;
  RestartType restart = RestartType::kPermanent;
  absl::Duration shutdown = absl::Seconds(5);  // ZeroDuration(): brutal_kill.
  bool is_supervisor = false;
};

struct SupervisorFlags {
  RestartStrategy strategy = RestartStrategy::kOneForOne;
  int intensity = 1;
  absl::Duration period = absl::Seconds(5);
};

// A worker child whose body is `body` (spawn_link'ed by the supervisor).
ChildSpec WorkerChild(std::string id, ProcessBody body,
                      RestartType restart = RestartType::kPermanent,
                      absl::Duration shutdown = absl::Seconds(5));
// A nested supervisor as a child.
ChildSpec SupervisorChild(std::string id, SupervisorFlags flags, std::vector<ChildSpec> children,
                          RestartType restart = RestartType::kPermanent);

// InvalidArgument for a negative intensity or a period that is not positive and finite. Every
// start checks the flags first.
absl::Status ValidateFlags(const SupervisorFlags& flags);

// Starts a supervisor and waits until its children are started (or it failed: a status naming
// the child, or Aborted when it exited first). From a plain thread (see Node::Run; from a
// scheduler thread: FailedPrecondition). Not linked to anything.
absl::StatusOr<Pid> StartSupervisor(Node& node, SupervisorFlags flags,
                                    std::vector<ChildSpec> children, SpawnOptions options = {});
// From a process: starts a supervisor *not* linked to `starter` (a standalone one, as the plain
// thread form) and waits until it is initialised, or has exited (Aborted).
Task<absl::StatusOr<Pid>> StartSupervisor(Process& starter, SupervisorFlags flags,
                                          std::vector<ChildSpec> children, SpawnOptions options);
// From a process: starts a supervisor linked to `parent` and waits until it is initialised, or
// has exited (Aborted).
Task<absl::StatusOr<Pid>> StartSupervisorLink(Process& parent, SupervisorFlags flags,
                                              std::vector<ChildSpec> children,
                                              SpawnOptions options);
// Same with default options. (GCC12-WORKAROUND: an overload, not a default argument: gcc 12
// destroys an aggregate default argument of a coroutine twice when the call is awaited; see
// task.h.)
inline Task<absl::StatusOr<Pid>> StartSupervisorLink(Process& parent, SupervisorFlags flags,
                                                     std::vector<ChildSpec> children) {
  return StartSupervisorLink(parent, flags, std::move(children), SpawnOptions());
}

struct ChildInfo {
  std::string id;
  Pid pid;  // Null when not running.
  bool is_supervisor;
  // Its restart failed and the supervisor is trying again (OTP's `restarting`); pid is null.
  bool restarting = false;
};
struct ChildCounts {
  int specs = 0;
  int active = 0;
  int supervisors = 0;
  int workers = 0;
};

Task<absl::StatusOr<Pid>> StartChild(Process& self, Pid sup, ChildSpec spec,
                                     absl::Duration timeout = kDefaultCallTimeout);
Task<absl::Status> TerminateChild(Process& self, Pid sup, std::string id,
                                  absl::Duration timeout = kDefaultCallTimeout);
Task<absl::Status> DeleteChild(Process& self, Pid sup, std::string id,
                               absl::Duration timeout = kDefaultCallTimeout);
Task<absl::StatusOr<Pid>> RestartChild(Process& self, Pid sup, std::string id,
                                       absl::Duration timeout = kDefaultCallTimeout);
Task<absl::StatusOr<std::vector<ChildInfo>>> WhichChildren(
    Process& self, Pid sup, absl::Duration timeout = kDefaultCallTimeout);
Task<absl::StatusOr<ChildCounts>> CountChildren(Process& self, Pid sup,
                                                absl::Duration timeout = kDefaultCallTimeout);
// Stops the children in reverse start order, then the supervisor (reason normal, as
// gen_server:stop, so a linked parent is not taken down); returns when it is gone. (An exit signal
// from a process other than its parent does not stop a supervisor, as in OTP.)
Task<absl::Status> StopSupervisor(Process& self, Pid sup,
                                  absl::Duration timeout = absl::InfiniteDuration());

}  // namespace etsmgr

#endif  // ETSMGR_PROCESS_SUPERVISOR_H_
