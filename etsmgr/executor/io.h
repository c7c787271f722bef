// Asynchronous socket and file I/O on the executor: awaitables on the scheduler's poller
// (io_uring, or the epoll fallback with the same behaviour).
//
//   Task<void> Echo(int fd) {
//     char buf[4096];
//     while (true) {
//       absl::StatusOr<size_t> n = co_await Recv(fd, buf, Deadline(absl::Seconds(30)));
//       if (!n.ok() || *n == 0) break;  // Error, deadline or end of stream.
//       if (!(co_await SendAll(fd, std::string_view(buf, *n))).ok()) break;
//     }
//     co_await Close(fd);
//   }
//
// These are for plain Tasks. A process uses the overloads of etsmgr/process/io.h, which take its
// Process& and wait in its mailbox, so that an exit signal (a kill) acts while it waits on I/O.
//
// Semantics
// - Each call is one system call's worth of work, as the system call would do it: Recv and Read
//   may return fewer bytes than asked (0 at the end of a stream), Send and Write may move fewer
//   than given (SendAll / WriteAll loop). One operation moves at most kMaxIoBytes.
// - Results: bytes moved (or the accepted descriptor); errors as absl::Status naming the
//   operation and the errno ("recv: Connection reset by peer (ECONNRESET)"); a deadline that
//   passes first gives DeadlineExceeded ("recv: deadline exceeded") -- unless the operation
//   completed meanwhile, whose result then wins (no data is dropped by a deadline).
// - Buffers: the operation works on its own copy, so the caller's buffer is only touched when the
//   awaiting coroutine resumes. A frame destroyed while its operation is in flight (a runtime shut
//   down, a killed process) cancels the operation; no completion touches the destroyed frame, and
//   an accepted connection nobody takes is closed.
// - Descriptors: the epoll backend makes sockets given to Accept/Connect non-blocking; Read and
//   Write of a blocking socket never wait in the call (MSG_DONTWAIT); of another blocking
//   descriptor (a pipe, a FIFO, a terminal) each attempt checks readiness first and a write moves
//   at most PIPE_BUF bytes (WriteAll loops), so operations of one scheduler never block its
//   thread. A blocking descriptor that another thread or program also reads or writes can still
//   block it between the check and the call, and a terminal reported writable may have room for
//   less than PIPE_BUF (its write then waits for the terminal to drain): give such descriptors
//   O_NONBLOCK. Regular files are
//   read and written at submission on epoll (the kernel has no readiness for them).
//   Close() cancels operations in flight on the descriptor on this scheduler first (io_uring
//   would otherwise keep a receive on a closed socket waiting).
// - Poll waits for readiness (either direction at once: a server that keeps reading requests
//   while its client is slow to take the replies); TrySend takes what fits and never waits.
// - Speed: on io_uring a socket receive or send first tries the non-blocking system call and
//   goes to the ring only when it would block (an epoll loop pays the same one call).
// - Must be awaited on a scheduler thread of a non-deterministic runtime: otherwise the result is
//   FailedPrecondition (deterministic mode has no kernel waits).
//
// Threading: an operation completes on the scheduler it was started on; the awaiting task resumes
// there.
//
// Side effect to know: the kernel's io_uring task work may interrupt a blocking system call with
// a timeout (say a recv with SO_RCVTIMEO) in the thread that created or destroyed a runtime, which
// then fails with EINTR, as POSIX allows any time: retry such calls on EINTR.
#ifndef ETSMGR_EXECUTOR_IO_H_
#define ETSMGR_EXECUTOR_IO_H_

#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "etsmgr/executor/internal/timer_heap.h"
#include "etsmgr/executor/io_op.h"
#include "etsmgr/executor/runnable.h"
#include "etsmgr/executor/scheduler.h"
#include "etsmgr/executor/task.h"

namespace etsmgr {

class Scheduler;

// The most one operation moves (a larger request is a short read or write).
inline constexpr size_t kMaxIoBytes = size_t{4} << 20;

// An IPv4 or IPv6 address with a port.
struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t length = 0;
  // "127.0.0.1:6379", "[::1]:6379".
  std::string ToString() const;
  uint16_t port() const;
};
// A numeric address ("127.0.0.1", "::1") or "localhost"; InvalidArgument names what is wrong.
absl::StatusOr<SocketAddress> ParseAddress(std::string_view host, uint16_t port);

struct ListenOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;  // 0: any free port (LocalAddress tells which).
  int backlog = 511;
  bool reuse_address = true;
};
// A listening TCP socket (non-blocking, close-on-exec). Synchronous: no kernel wait involved.
absl::StatusOr<int> ListenTcp(const ListenOptions& options);
// A TCP socket for `family` (AF_INET / AF_INET6), non-blocking, close-on-exec.
absl::StatusOr<int> TcpSocket(int family);
absl::StatusOr<SocketAddress> LocalAddress(int fd);
absl::StatusOr<SocketAddress> PeerAddress(int fd);

// The description of one operation before it starts (shared with process/io.h).
struct IoSpec {
  IoKind kind = IoKind::kRecv;
  int fd = -1;
  int64_t offset = -1;
  std::span<char> into;                 // recv, read
  std::string_view from;                // send, write
  std::vector<std::span<char>> intos;   // recvmsg, readv
  std::vector<std::string_view> froms;  // sendmsg, writev
  SocketAddress address;                // connect
  int16_t events = 0;                   // poll
  bool nowait = false;                  // send only: never wait (TrySendSpec)
  absl::Status error;                   // A bad argument: the operation does not start.
};

namespace io_internal {
// Copies what `spec` sends into `op` and sizes its buffers, for `scheduler`'s backend (on epoll a
// write to a blocking pipe or terminal is one PIPE_BUF at most: see FileIoMode).
// ResourceExhausted when a buffer cannot be allocated (the operation must not be submitted).
absl::Status Fill(const IoSpec& spec, IoOp* op, const Scheduler& scheduler);
// Tests: runs where Fill allocates; may throw as an allocation would (std::bad_alloc).
using FillFault = void (*)();
inline std::atomic<FillFault> g_fill_fault{nullptr};
// The operation's result: bytes, or the accepted descriptor; copies received data into the
// spec's spans. `timed_out`: cancelled by its deadline.
absl::StatusOr<size_t> Finish(const IoSpec& spec, const IoOp* op, bool timed_out);
// Drops the awaiter's reference to a submitted `op`. Not `consumed` (the awaiter is destroyed
// before reading the result): the operation is abandoned and cancelled, or if it completed
// first, what it produced is disposed of (an accepted descriptor is closed). Any thread.
void Release(IoOp* op, bool consumed);
// FailedPrecondition unless I/O can run on `s` (a real scheduler's thread).
absl::Status CheckScheduler(const Scheduler* s, IoKind kind);
// Closes a descriptor nobody has taken yet when it goes out of scope (also when a coroutine
// frame holding it is destroyed at a suspension point); Release() hands it on.
class FdGuard {
 public:
  explicit FdGuard(int fd) : fd_(fd) {}
  ~FdGuard();
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;
  int Release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};
}  // namespace io_internal

// The awaitable under every task-side operation.
class IoAwaiter : private IoWaker, private executor_internal::TimerNode {
 public:
  IoAwaiter(IoSpec spec, absl::Time deadline) : spec_(std::move(spec)), deadline_(deadline) {}
  IoAwaiter(const IoAwaiter&) = delete;
  IoAwaiter& operator=(const IoAwaiter&) = delete;
  ~IoAwaiter();

  bool await_ready() noexcept;
  bool await_suspend(std::coroutine_handle<> h) noexcept;
  absl::StatusOr<size_t> await_resume();

 private:
  void IoDone(IoOp* op) noexcept override;
  void Fire() noexcept override;

  IoSpec spec_;
  absl::Time deadline_;
  Scheduler* scheduler_ = nullptr;
  IoOp* op_ = nullptr;
  bool timed_out_ = false;
  bool consumed_ = false;
  std::coroutine_handle<> handle_;
  ResumeRunnable resume_;
};

// Converts the byte count of IoAwaiter into another result shape.
template <typename Result>
class IoResultAwaiter {
 public:
  IoResultAwaiter(IoSpec spec, absl::Time deadline) : inner_(std::move(spec), deadline) {}
  bool await_ready() noexcept { return inner_.await_ready(); }
  bool await_suspend(std::coroutine_handle<> h) noexcept { return inner_.await_suspend(h); }
  Result await_resume() {
    absl::StatusOr<size_t> r = inner_.await_resume();
    if constexpr (std::is_same_v<Result, absl::Status>) {
      return r.status();
    } else {
      if (!r.ok()) return r.status();
      return static_cast<int>(*r);
    }
  }

 private:
  IoAwaiter inner_;
};

// --- Specs (for the overloads here and in process/io.h).
IoSpec AcceptSpec(int listen_fd);
IoSpec ConnectSpec(int fd, const SocketAddress& address);
IoSpec RecvSpec(int fd, std::span<char> into);
IoSpec SendSpec(int fd, std::string_view data);
// A send that takes what the socket has room for now and never waits: 0 bytes when it has none.
IoSpec TrySendSpec(int fd, std::string_view data);
// Waits until `fd` is ready for one of `events` (POLLIN, POLLOUT, POLLPRI, POLLRDHUP): the result
// is the ready events as poll(2) reports them (POLLERR and POLLHUP always count).
IoSpec PollSpec(int fd, short events);
IoSpec RecvVSpec(int fd, std::vector<std::span<char>> into);
IoSpec SendVSpec(int fd, std::vector<std::string_view> pieces);
IoSpec ReadSpec(int fd, std::span<char> into, int64_t offset);
IoSpec WriteSpec(int fd, std::string_view data, int64_t offset);
IoSpec ReadVSpec(int fd, std::vector<std::span<char>> into, int64_t offset);
IoSpec WriteVSpec(int fd, std::vector<std::string_view> pieces, int64_t offset);
IoSpec CloseSpec(int fd);

// --- Task awaitables. `deadline` on the scheduler's clock (etsmgr::Deadline(d) builds one).
// -> absl::StatusOr<int>: the connection, non-blocking and close-on-exec.
inline IoResultAwaiter<absl::StatusOr<int>> Accept(int listen_fd,
                                                   absl::Time deadline = absl::InfiniteFuture()) {
  return {AcceptSpec(listen_fd), deadline};
}
// -> absl::Status.
inline IoResultAwaiter<absl::Status> Connect(int fd, const SocketAddress& address,
                                             absl::Time deadline = absl::InfiniteFuture()) {
  return {ConnectSpec(fd, address), deadline};
}
// -> absl::StatusOr<size_t> for each of these.
inline IoAwaiter Recv(int fd, std::span<char> into, absl::Time deadline = absl::InfiniteFuture()) {
  return {RecvSpec(fd, into), deadline};
}
inline IoAwaiter Send(int fd, std::string_view data, absl::Time deadline = absl::InfiniteFuture()) {
  return {SendSpec(fd, data), deadline};
}
// -> absl::StatusOr<size_t>: the bytes the socket took, 0 when it had no room; never waits.
inline IoAwaiter TrySend(int fd, std::string_view data) {
  return {TrySendSpec(fd, data), absl::InfiniteFuture()};
}
// -> absl::StatusOr<int>: the ready events (see PollSpec).
inline IoResultAwaiter<absl::StatusOr<int>> Poll(int fd, short events,
                                                 absl::Time deadline = absl::InfiniteFuture()) {
  return {PollSpec(fd, events), deadline};
}
inline IoAwaiter RecvV(int fd, std::vector<std::span<char>> into,
                       absl::Time deadline = absl::InfiniteFuture()) {
  return {RecvVSpec(fd, std::move(into)), deadline};
}
inline IoAwaiter SendV(int fd, std::vector<std::string_view> pieces,
                       absl::Time deadline = absl::InfiniteFuture()) {
  return {SendVSpec(fd, std::move(pieces)), deadline};
}
// offset -1: at the file position (and moving it), as read(2)/write(2).
inline IoAwaiter Read(int fd, std::span<char> into, int64_t offset = -1,
                      absl::Time deadline = absl::InfiniteFuture()) {
  return {ReadSpec(fd, into, offset), deadline};
}
inline IoAwaiter Write(int fd, std::string_view data, int64_t offset = -1,
                       absl::Time deadline = absl::InfiniteFuture()) {
  return {WriteSpec(fd, data, offset), deadline};
}
inline IoAwaiter ReadV(int fd, std::vector<std::span<char>> into, int64_t offset = -1,
                       absl::Time deadline = absl::InfiniteFuture()) {
  return {ReadVSpec(fd, std::move(into), offset), deadline};
}
inline IoAwaiter WriteV(int fd, std::vector<std::string_view> pieces, int64_t offset = -1,
                        absl::Time deadline = absl::InfiniteFuture()) {
  return {WriteVSpec(fd, std::move(pieces), offset), deadline};
}
// -> absl::Status. The descriptor is gone afterwards whatever the result (as close(2)).
inline IoResultAwaiter<absl::Status> Close(int fd) {
  return {CloseSpec(fd), absl::InfiniteFuture()};
}

// Sends all of `data` (Send until done); the deadline covers the whole.
Task<absl::Status> SendAll(int fd, std::string_view data,
                           absl::Time deadline = absl::InfiniteFuture());
// Writes all of `data` from `offset` (-1: the file position).
Task<absl::Status> WriteAll(int fd, std::string_view data, int64_t offset = -1,
                            absl::Time deadline = absl::InfiniteFuture());
// A connected TCP socket to host:port (numeric or "localhost"); closed again on failure.
Task<absl::StatusOr<int>> ConnectTcp(std::string host, uint16_t port,
                                     absl::Time deadline = absl::InfiniteFuture());

}  // namespace etsmgr

#endif  // ETSMGR_EXECUTOR_IO_H_
