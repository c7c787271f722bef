// Asynchronous I/O from a process: the operations of etsmgr/executor/io.h, waited for in the
// process's mailbox, so that exit signals act while the process waits on I/O.
//
//   Task<void> Connection(Process& self, int fd) {
//     char buf[4096];
//     while (true) {
//       absl::StatusOr<size_t> n = co_await Recv(self, fd, buf, Deadline(absl::Minutes(5)));
//       if (!n.ok() || *n == 0) break;
//       if (!(co_await SendAll(self, fd, std::string_view(buf, *n))).ok()) break;
//     }
//     co_await Close(self, fd);
//   }
//
// Semantics are those of executor/io.h (one system call's worth per call, statuses naming the
// operation, deadlines that never drop data that arrived). In addition:
// - Waiting is a receive of the process API: a process killed (or taking a non-trapped exit
//   signal) while it waits dies at once; its operation is cancelled on the scheduler that runs it
//   (IORING_OP_ASYNC_CANCEL on io_uring), the kernel never writes into freed memory (each
//   operation owns its buffer), and an accepted connection nobody takes is closed. The
//   descriptor the process was using is not closed for it: whoever owns it does that (a
//   connection process closes its socket in a destructor or a supervisor's cleanup).
// - The completion arrives as a message only this wait matches; other messages stay queued in
//   order. A process waiting on I/O stays on its scheduler (work stealing skips it), so the
//   completion and a cancellation always find it there.
#ifndef ETSMGR_PROCESS_IO_H_
#define ETSMGR_PROCESS_IO_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "etsmgr/executor/io.h"
#include "etsmgr/executor/task.h"
#include "etsmgr/process/process.h"

namespace etsmgr {

// Runs the operation `spec` describes from the calling process: bytes moved, or the accepted
// descriptor.
Task<absl::StatusOr<size_t>> RunIo(Process& self, IoSpec spec,
                                   absl::Time deadline = absl::InfiniteFuture());

Task<absl::StatusOr<int>> Accept(Process& self, int listen_fd,
                                 absl::Time deadline = absl::InfiniteFuture());
Task<absl::Status> Connect(Process& self, int fd, SocketAddress address,
                           absl::Time deadline = absl::InfiniteFuture());
inline Task<absl::StatusOr<size_t>> Recv(Process& self, int fd, std::span<char> into,
                                         absl::Time deadline = absl::InfiniteFuture()) {
  return RunIo(self, RecvSpec(fd, into), deadline);
}
inline Task<absl::StatusOr<size_t>> Send(Process& self, int fd, std::string_view data,
                                         absl::Time deadline = absl::InfiniteFuture()) {
  return RunIo(self, SendSpec(fd, data), deadline);
}
// The bytes the socket takes now, 0 when it has no room; never waits (see TrySendSpec).
inline Task<absl::StatusOr<size_t>> TrySend(Process& self, int fd, std::string_view data) {
  return RunIo(self, TrySendSpec(fd, data));
}
// Waits until `fd` is ready for one of `events` (POLLIN, POLLOUT, ...): the ready events, as
// poll(2) reports them (POLLERR, POLLHUP included). Say, a server that must keep reading requests
// while a client is slow to take its replies waits for POLLIN | POLLOUT.
Task<absl::StatusOr<short>> Poll(Process& self, int fd, short events,
                                 absl::Time deadline = absl::InfiniteFuture());
inline Task<absl::StatusOr<size_t>> RecvV(Process& self, int fd, std::vector<std::span<char>> into,
                                          absl::Time deadline = absl::InfiniteFuture()) {
  return RunIo(self, RecvVSpec(fd, std::move(into)), deadline);
}
inline Task<absl::StatusOr<size_t>> SendV(Process& self, int fd,
                                          std::vector<std::string_view> pieces,
                                          absl::Time deadline = absl::InfiniteFuture()) {
  return RunIo(self, SendVSpec(fd, std::move(pieces)), deadline);
}
inline Task<absl::StatusOr<size_t>> Read(Process& self, int fd, std::span<char> into,
                                         int64_t offset = -1,
                                         absl::Time deadline = absl::InfiniteFuture()) {
  return RunIo(self, ReadSpec(fd, into, offset), deadline);
}
inline Task<absl::StatusOr<size_t>> Write(Process& self, int fd, std::string_view data,
                                          int64_t offset = -1,
                                          absl::Time deadline = absl::InfiniteFuture()) {
  return RunIo(self, WriteSpec(fd, data, offset), deadline);
}
Task<absl::Status> Close(Process& self, int fd);

// Sends all of `data`; the deadline covers the whole.
Task<absl::Status> SendAll(Process& self, int fd, std::string_view data,
                           absl::Time deadline = absl::InfiniteFuture());
// Like SendAll, and each send (one system call's worth) also gives up after `idle` without taking
// a byte (zero or infinite: no such limit): a peer that reads steadily gets all of a big `data`,
// one that stopped reading is given up on (a server's idle timeout, as Redis counts every write).
Task<absl::Status> SendAllProgressing(Process& self, int fd, std::string_view data,
                                      absl::Duration idle,
                                      absl::Time deadline = absl::InfiniteFuture());
// Like SendAll with the pieces gathered (sendmsg) instead of copied together by the caller.
Task<absl::Status> SendAllV(Process& self, int fd, std::vector<std::string_view> pieces,
                            absl::Time deadline = absl::InfiniteFuture());
// A connected TCP socket to host:port (numeric or "localhost"); closed again on failure.
Task<absl::StatusOr<int>> ConnectTcp(Process& self, std::string host, uint16_t port,
                                     absl::Time deadline = absl::InfiniteFuture());

}  // namespace etsmgr

#endif  // ETSMGR_PROCESS_IO_H_
