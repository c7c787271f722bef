#include "etsmgr/net/listener.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mutex>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "etsmgr/base/log.h"
#include "etsmgr/base/mutex.h"
#include "etsmgr/process/io.h"

namespace etsmgr {
namespace {

// The listening socket, closed with the last spec that refers to it.
struct ListenSocket {
  explicit ListenSocket(int f) : fd(f) {}
  ~ListenSocket() { ::close(fd); }
  ListenSocket(const ListenSocket&) = delete;
  ListenSocket& operator=(const ListenSocket&) = delete;
  const int fd;
};

struct Shared {
  std::shared_ptr<ListenSocket> socket;
  ListenerOptions options;
  ConnectionBody body;
  std::shared_ptr<ListenerStats> stats = std::make_shared<ListenerStats>();
  // The running connections supervisor, set by its start (rest_for_one: the acceptor starts
  // after it, and again after each restart of it).
  Mutex mu;
  Pid connections ABSL_GUARDED_BY(mu);
  uint64_t next_id = 0;  // Acceptor only.
};

// One accepted connection: its descriptor is closed, and the live count dropped, when the last
// holder lets go: the connection's process (its body function) and the supervisor's spec.
struct Connection {
  Connection(int f, std::shared_ptr<ListenerStats> s) : fd(f), stats(std::move(s)) {}
  ~Connection() {
    ::close(fd);
    stats->live.fetch_sub(1, std::memory_order_relaxed);
    stats->changed.Notify();
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  const int fd;
  std::shared_ptr<ListenerStats> stats;
};

Pid ConnectionsSupervisor(Shared& shared) {
  ExclusiveLock lock(shared.mu);
  return shared.connections;
}

// Refuses the accepted connection `fd` (counted in `rejected`): sends the reject message (best
// effort, without waiting: a full socket buffer just loses it) and closes it. A client that
// already sent its request still reads the message: Linux hands over received data before the
// reset that closing with unread input causes.
void Refuse(Shared& shared, int fd) {
  shared.stats->rejected.fetch_add(1, std::memory_order_relaxed);
  shared.stats->changed.Notify();
  const std::string& message = shared.options.reject_message;
  if (!message.empty()) {
    (void)!::send(fd, message.data(), message.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  }
  ::close(fd);
}

// A descriptor kept open for the moment the process has none left (EMFILE): closed, it lets the
// acceptor take one waiting connection and refuse it, so clients in the backlog are told instead
// of waiting there until some connection ends.
class SpareDescriptor {
 public:
  SpareDescriptor() { Reopen(); }
  ~SpareDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  SpareDescriptor(const SpareDescriptor&) = delete;
  SpareDescriptor& operator=(const SpareDescriptor&) = delete;
  // Closes it (false: there was none).
  bool Free() {
    if (fd_ < 0) return false;
    ::close(fd_);
    fd_ = -1;
    return true;
  }
  void Reopen() {
    if (fd_ < 0) fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }

 private:
  int fd_ = -1;
};

// With the spare descriptor freed: takes one connection waiting on `listen_fd`, if any (-1:
// none was waiting, or it could not be taken). The listening socket is non-blocking (ListenTcp).
int TakeOneWaiting(int listen_fd) {
  pollfd p{listen_fd, POLLIN, 0};
  if (::poll(&p, 1, 0) != 1 || (p.revents & POLLIN) == 0) return -1;
  return ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

// The process (EMFILE) or the system (ENFILE) is out of descriptors: not memory pressure
// (ENOMEM, ENOBUFS), which the same status code names and which passes by itself.
bool OutOfDescriptors(const absl::Status& status) {
  return status.code() == absl::StatusCode::kResourceExhausted &&
         (absl::StrContains(status.message(), "(EMFILE)") ||
          absl::StrContains(status.message(), "(ENFILE)"));
}

Task<void> Acceptor(Process& self, std::shared_ptr<Shared> shared) {
  const int listen_fd = shared->socket->fd;
  int failures = 0;  // Accept failures in a row.
  SpareDescriptor spare;
  while (true) {
    spare.Reopen();  // (Lost when descriptors ran out: taken again as soon as one is free.)
    absl::StatusOr<int> fd = co_await Accept(self, listen_fd);
    if (!fd.ok() && OutOfDescriptors(fd.status()) && spare.Free()) {
      // Out of descriptors: the spare one takes a waiting connection, which is refused.
      const int waiting = TakeOneWaiting(listen_fd);
      if (waiting >= 0) {
        shared->stats->accepted.fetch_add(1, std::memory_order_relaxed);
        Refuse(*shared, waiting);
      }
      spare.Reopen();
      if (waiting >= 0) {
        if (++failures == 1 || failures % 1000 == 0) {
          Logf(LogLevel::kWarning,
               "listener: out of descriptors (%s): refusing waiting connections (%d in a row)",
               fd.status().ToString().c_str(), failures);
        }
        continue;
      }
    }
    if (!fd.ok()) {
      const absl::StatusCode code = fd.status().code();
      if (code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kCancelled) {
        // The listening socket itself is unusable (EBADF, EINVAL: closed or shut down behind
        // the listener's back): crash, so that supervision sees it, rather than retry for ever.
        Logf(LogLevel::kError, "listener: the listening socket failed: %s",
             fd.status().ToString().c_str());
        co_await self.Exit(ExitReason::Custom(std::string(fd.status().message())));
      }
      if (++failures == 1 || failures % 1000 == 0) {
        Logf(LogLevel::kWarning, "listener: %s (%d in a row)", fd.status().ToString().c_str(),
             failures);
      }
      // Out of descriptors or memory (EMFILE and friends): the backlog waits; try again shortly
      // rather than spin. A failure of one connection (ECONNABORTED, EPROTO, ...) goes straight
      // on to the next, a few times in a row.
      if (code == absl::StatusCode::kResourceExhausted || failures > 3) {
        co_await self.Sleep(absl::Milliseconds(10));
      }
      continue;
    }
    failures = 0;
    shared->stats->accepted.fetch_add(1, std::memory_order_relaxed);
    if (shared->stats->live.load(std::memory_order_relaxed) >= shared->options.max_connections) {
      Refuse(*shared, *fd);
      continue;
    }
    shared->stats->live.fetch_add(1, std::memory_order_relaxed);
    shared->stats->changed.Notify();
    auto connection = std::make_shared<Connection>(*fd, shared->stats);
    ConnectionBody body = shared->body;
    ChildSpec spec = WorkerChild(
        absl::StrCat("connection-", ++shared->next_id),
        [connection, body](Process& conn) -> Task<void> { co_await body(conn, connection->fd); },
        RestartType::kTemporary, shared->options.connection_shutdown);
    absl::StatusOr<Pid> started =
        co_await StartChild(self, ConnectionsSupervisor(*shared), std::move(spec));
    if (!started.ok()) {
      // The connections supervisor is gone (it is being restarted, and so will this acceptor):
      // the connection is closed with the last reference to it.
      Logf(LogLevel::kWarning, "listener: connection not started: %s",
           started.status().ToString().c_str());
    }
  }
}

}  // namespace

absl::StatusOr<Listener> MakeListener(std::string id, ListenerOptions options,
                                      ConnectionBody body) {
  if (!body) return absl::InvalidArgumentError("listener: no connection body");
  if (options.max_connections <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("listener: max_connections ", options.max_connections, " (must be positive)"));
  }
  if (absl::Status flags = ValidateFlags(options.flags); !flags.ok()) return flags;
  absl::StatusOr<int> fd = ListenTcp(options.listen);
  if (!fd.ok()) return fd.status();
  auto shared = std::make_shared<Shared>();
  shared->socket = std::make_shared<ListenSocket>(*fd);
  shared->options = std::move(options);
  shared->body = std::move(body);
  absl::StatusOr<SocketAddress> address = LocalAddress(*fd);
  if (!address.ok()) return address.status();

  // "connections": many temporary children; their exits never count against the intensity.
  SupervisorFlags connection_flags{RestartStrategy::kOneForOne, 0, absl::Seconds(1)};
  ChildSpec connections =
      SupervisorChild("connections", connection_flags, std::vector<ChildSpec>{});
  auto start_connections = std::move(connections.start);
  connections.start = [shared, start_connections](Process& sup) -> Task<absl::StatusOr<Pid>> {
    absl::StatusOr<Pid> pid = co_await start_connections(sup);
    if (pid.ok()) {
      ExclusiveLock lock(shared->mu);
      shared->connections = *pid;
    }
    co_return pid;
  };
  std::vector<ChildSpec> children;
  children.push_back(std::move(connections));
  children.push_back(WorkerChild(
      "acceptor", [shared](Process& self) -> Task<void> { return Acceptor(self, shared); },
      RestartType::kPermanent, absl::ZeroDuration()));
  Listener listener;
  listener.spec = SupervisorChild(std::move(id), shared->options.flags, std::move(children));
  listener.address = *address;
  listener.stats = shared->stats;
  return listener;
}

}  // namespace etsmgr
