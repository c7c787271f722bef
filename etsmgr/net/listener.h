// A TCP listener under supervision: an acceptor process accepts connections and starts a process
// per connection under a connections supervisor.
//
//   absl::StatusOr<Listener> l = MakeListener({.listen = {.port = 6379}},
//       [](Process& self, int fd) -> Task<void> { ... serve fd ... });
//   children.push_back(l->spec);                 // in the application's supervisor
//   Log("listening on %s", l->address.ToString());
//
// Shape: the spec is a rest_for_one supervisor with two children, "connections" (a supervisor
// of temporary children: a connection that ends is not restarted) and "acceptor" (permanent).
// The listening socket is bound by MakeListener, once: an acceptor that crashes is restarted on
// the same socket, and connections waiting in the backlog meanwhile are not refused.
//
// Connections
// - Each runs `body(self, fd)` in its own process (trapping no exits unless the body asks). The
//   descriptor belongs to the listener: it is closed when the connection's process has exited
//   (whether its body returned, threw or was killed); the body must not close it itself.
// - Beyond `max_connections` live connections a new one gets `reject_message` (if any) and is
//   closed at once; the others are not disturbed.
// - Out of descriptors (EMFILE, ENFILE; not memory: ENOMEM, ENOBUFS), the acceptor frees a
//   descriptor it keeps spare, takes one waiting connection, sends it `reject_message` and closes
//   it, and so on while connections wait: clients are refused rather than left in the backlog
//   until some connection ends.
// - Stopping the listener's supervisor stops the acceptor, then every connection (each gets
//   `connection_shutdown` to finish after its exit signal `shutdown`).
#ifndef ETSMGR_NET_LISTENER_H_
#define ETSMGR_NET_LISTENER_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "etsmgr/base/notifier.h"
#include "etsmgr/executor/io.h"
#include "etsmgr/process/process.h"
#include "etsmgr/process/supervisor.h"

namespace etsmgr {

using ConnectionBody = std::function<Task<void>(Process& self, int fd)>;

struct ListenerOptions {
  ListenOptions listen;  // 127.0.0.1, any free port, by default.
  int max_connections = 10'000;
  std::string reject_message;  // Sent to a connection refused for max_connections.
  absl::Duration connection_shutdown = absl::Seconds(5);
  SupervisorFlags flags = {RestartStrategy::kRestForOne, 10, absl::Seconds(10)};
};

// Live counts, readable from any thread.
struct ListenerStats {
  std::atomic<int> live{0};
  std::atomic<uint64_t> accepted{0};
  std::atomic<uint64_t> rejected{0};  // Beyond max_connections, or out of descriptors.
  // Notified after each change of `live` and `rejected`: wait for a state with
  //   stats->changed.WaitUntil([&] { return stats->live == 0; }, deadline)
  // (say, connections drained before a shutdown goes on).
  mutable Notifier changed;
};

struct Listener {
  ChildSpec spec;
  SocketAddress address;  // Where it listens (the port chosen when 0 was asked for).
  std::shared_ptr<const ListenerStats> stats;
};

// Binds and listens now (errors name the address); the processes start with the spec.
absl::StatusOr<Listener> MakeListener(std::string id, ListenerOptions options, ConnectionBody body);

}  // namespace etsmgr

#endif  // ETSMGR_NET_LISTENER_H_
