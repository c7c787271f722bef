// IoOp: one asynchronous I/O operation in flight on a scheduler's poller (io_uring or epoll).
//
// Most code uses the awaitables of io.h (tasks) or process/io.h (processes); this is the object
// under them. An IoOp is heap-allocated and reference-counted: the poller holds a reference from
// submission until the kernel is done with it, the awaiter until it has read the result. It owns
// its data buffer, so the kernel never reads or writes the awaiting frame's memory: a frame
// destroyed while its operation is in flight (a killed process, a runtime shutdown) only marks
// the operation abandoned and asks for its cancellation; the completion then frees it.
//
// Threads: an IoOp is submitted, cancelled and completed on the thread of its scheduler (the one
// it was submitted to); Scheduler::CancelIo may be called from anywhere and forwards there. Its
// waker runs on that thread.
#ifndef ETSMGR_EXECUTOR_IO_OP_H_
#define ETSMGR_EXECUTOR_IO_OP_H_

#include <sys/socket.h>
#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "etsmgr/executor/runnable.h"

namespace etsmgr {

class IoOp;
class Scheduler;

// Told when an operation has its result (on the scheduler's thread). Not told when abandoned.
// It must not resume a coroutine inline: post it (the poller is in the middle of a reap).
class IoWaker {
 public:
  virtual void IoDone(IoOp* op) noexcept = 0;

 protected:
  ~IoWaker() = default;
};

enum class IoKind : uint8_t {
  kAccept,
  kConnect,
  kRecv,
  kSend,
  kRecvMsg,  // Vectored recv (recvmsg).
  kSendMsg,  // Vectored send (sendmsg).
  kRead,
  kWrite,
  kReadV,
  kWriteV,
  kClose,
  kPoll,  // Readiness (poll(2)): the result is the ready events.
};
// epoll backend: how a read or write of a descriptor is made without blocking the scheduler's
// thread.
enum FileIoMode : int8_t {
  // A non-blocking descriptor, a regular file, a directory or a block device: the call as is.
  kFileIoDirect,
  // A blocking socket: the call as recv/send(msg) with MSG_DONTWAIT, which never waits.
  kFileIoSocketDontWait,
  // Any other blocking descriptor (a pipe, a FIFO, a terminal): every attempt checks readiness
  // first (poll with no wait: two operations queued on one pipe must not both read after one
  // readiness event), and a write moves at most PIPE_BUF bytes, which a pipe reported writable
  // takes without waiting (a blocking write waits until every byte is in). The operation's
  // buffer is sized for that (io_internal::Fill): a big WriteAll copies each byte once.
  kFileIoPollFirst,
};
FileIoMode FileIoModeOf(int fd);

// "accept", "recv", "sendmsg", ...: the operation's name in error messages.
const char* IoKindName(IoKind kind);
// Kinds that fill the buffer (their data is copied out after completion).
inline bool IoKindReads(IoKind kind) {
  return kind == IoKind::kRecv || kind == IoKind::kRecvMsg || kind == IoKind::kRead ||
         kind == IoKind::kReadV;
}
inline bool IoKindVectored(IoKind kind) {
  return kind == IoKind::kRecvMsg || kind == IoKind::kSendMsg || kind == IoKind::kReadV ||
         kind == IoKind::kWriteV;
}

class IoOp {
 public:
  // A new operation with one reference (the caller's).
  static IoOp* Create(IoKind kind, int fd) { return new IoOp(kind, fd); }

  void Ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  const IoKind kind;
  const int fd;
  // Reads: `length` bytes of room; writes: the `length` bytes to write, copied in. Vectored
  // kinds: `iov` describes pieces of `buffer` (each piece as long as the caller's).
  std::unique_ptr<char[]> buffer;
  size_t length = 0;
  std::vector<iovec> iov;
  msghdr msg{};             // recvmsg / sendmsg: points at `iov`.
  int64_t offset = -1;      // Reads and writes of files: the offset (-1: the file position).
  int16_t poll_events = 0;  // kPoll: the events waited for (POLLIN, POLLOUT, ...).
  // A socket send that never waits: where it would, its result is -EAGAIN at once.
  bool nowait = false;
  // A nowait send reads the caller's bytes in place (no copy): it ends inside its submission,
  // while the caller's data is alive. Null for every other operation.
  const char* send_from = nullptr;
  // connect: the address to connect to; accept: the peer's.
  sockaddr_storage addr{};
  socklen_t addrlen = 0;

  // The result: bytes moved, the accepted fd, or 0; -errno on failure (-ECANCELED when
  // cancelled before it completed).
  int32_t result = 0;
  bool done = false;  // The result is in (the scheduler's thread).
  IoWaker* waker = nullptr;

  // Who disposes of the result, decided once across threads: the completion (which wakes the
  // awaiter) or the awaiter giving up (whose operation then finishes unseen: an accepted
  // connection is closed).
  enum Outcome : uint8_t { kWaiting, kCompleted, kAbandoned };
  std::atomic<uint8_t> outcome{kWaiting};
  // The awaiter gives up. True: the operation had not completed, its result will be dropped
  // (cancel it). False: it completed first, and the result is the caller's to dispose of.
  bool Abandon() {
    uint8_t waiting = kWaiting;
    return outcome.compare_exchange_strong(waiting, kAbandoned, std::memory_order_acq_rel);
  }
  // The poller records the result. True: the awaiter still waits (wake it); false: abandoned.
  bool MarkCompleted() {
    uint8_t waiting = kWaiting;
    return outcome.compare_exchange_strong(waiting, kCompleted, std::memory_order_acq_rel);
  }
  Scheduler* owner = nullptr;  // Set at submission.

  // --- The poller's bookkeeping.
  IoOp* prev_in_flight = nullptr;
  IoOp* next_in_flight = nullptr;
  IoOp* next_waiting = nullptr;  // epoll: the fd's queue of operations waiting for readiness.
  bool connect_started = false;  // epoll: connect(2) returned EINPROGRESS.
  // epoll, reads and writes: how the call is made without blocking the scheduler (a
  // FileIoMode; -1: not found yet).
  int8_t file_io_mode = -1;
  bool cancel_sent = false;  // io_uring: an ASYNC_CANCEL for it was submitted.
  bool in_kernel = false;    // io_uring: its SQE was written.
  // Scheduler::CancelIo from another thread: posted to the owner once.
  std::atomic<bool> cancel_posted{false};
  class CancelRunnable final : public Runnable {
   public:
    explicit CancelRunnable(IoOp* op) : op_(op) {}
    void Run() noexcept override;
    void Discard() noexcept override { op_->Unref(); }

   private:
    IoOp* op_;
  };
  CancelRunnable cancel_node{this};

  virtual ~IoOp() = default;

 protected:
  IoOp(IoKind k, int f) : kind(k), fd(f) {}

 private:
  std::atomic<int> refs_{1};
};

}  // namespace etsmgr

#endif  // ETSMGR_EXECUTOR_IO_OP_H_
