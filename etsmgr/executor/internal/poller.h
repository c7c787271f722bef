// Poller: the kernel interface a scheduler parks on. Two implementations with one behaviour:
// io_uring (a ring per scheduler) and epoll + eventfd + timerfd.
//
// Both use an eventfd for cross-thread wake-ups, written with write(2) by the waker: waking a ring
// through IORING_OP_WRITE to an eventfd is punted to an io-wq worker (slow:
// bench/results/design-measurements.md), and MSG_RING cannot be sent from a plain thread that has
// no ring. On io_uring the eventfd is read through an IORING_OP_READ kept armed on the ring, and
// the wait deadline goes to the same io_uring_enter (liburing's submit_and_wait_timeout: the
// IORING_ENTER_EXT_ARG timeout, or an IORING_OP_TIMEOUT on kernels without it), so one system
// call waits for wake-ups, the next timer and, later, real I/O. The scheduler keeps its timers in
// its own heap and passes only the nearest deadline to the kernel.
//
// Threading: Wake() from any thread; everything else from the owning scheduler's thread.
#ifndef ETSMGR_EXECUTOR_INTERNAL_POLLER_H_
#define ETSMGR_EXECUTOR_INTERNAL_POLLER_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "etsmgr/executor/backend.h"
#include "etsmgr/executor/io_op.h"

namespace etsmgr::executor_internal {

class Poller {
 public:
  static absl::StatusOr<std::unique_ptr<Poller>> Create(Backend backend);
  virtual ~Poller() = default;

  virtual Backend backend() const = 0;
  // Readable when a wake-up is pending (for event loops that embed a scheduler).
  virtual int wake_fd() const = 0;
  // Readable when I/O completions are waiting (the ring's or the epoll descriptor), for event
  // loops that embed a scheduler with I/O in flight.
  virtual int io_fd() const = 0;
  // Any thread: makes a current or the next Wait() return.
  virtual void Wake() = 0;
  // Blocks until woken or `timeout_ns` passes (-1: no timeout). Consumes pending wake-ups.
  virtual void Wait(int64_t timeout_ns) = 0;
  // Consumes pending wake-ups without blocking.
  virtual void Drain() = 0;

  // --- Asynchronous I/O (owner thread). Wait() and Reap() complete operations: each finished
  // one gets its result, `done`, and its waker's IoDone (unless abandoned), then the poller drops
  // its reference.
  // Starts `op`. Returns true when it completed at once (the epoll backend tries the system call
  // first): the result is in, the waker is not called and the poller keeps no reference.
  // Otherwise the poller takes a reference and the operation completes later; io_uring batches
  // submissions until the next Reap() or Wait().
  virtual bool Submit(IoOp* op) = 0;
  // Asks for `op` to finish early: it completes with -ECANCELED, or with its own result if that
  // came first. A no-op for an operation that is done.
  virtual void Cancel(IoOp* op) = 0;
  // Cancels every operation in flight on `fd` (before closing it: io_uring keeps a receive on a
  // closed socket waiting).
  virtual void CancelFd(int fd) = 0;
  // Without blocking: submits what is queued and completes what is finished. Returns how many
  // operations completed.
  virtual size_t Reap() = 0;
  // Operations submitted and not completed yet.
  virtual size_t in_flight() const = 0;
  // Cheap check (no system call) for completions a Reap() would deliver now; false when the
  // backend cannot tell without one.
  virtual bool HasCompletions() const = 0;
};

// Monotonic clock in nanoseconds (CLOCK_MONOTONIC).
int64_t MonotonicNanos();

}  // namespace etsmgr::executor_internal

#endif  // ETSMGR_EXECUTOR_INTERNAL_POLLER_H_
