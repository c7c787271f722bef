#include "etsmgr/executor/internal/poller.h"

#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <deque>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "etsmgr/base/errno_status.h"
#include "etsmgr/base/log.h"

namespace etsmgr::executor_internal {
namespace {

constexpr int64_t kNanosPerSecond = 1'000'000'000;

timespec ToTimespec(int64_t ns) {
  return timespec{static_cast<time_t>(ns / kNanosPerSecond),
                  static_cast<long>(ns % kNanosPerSecond)};
}

void WriteEventfd(int fd) {
  uint64_t one = 1;
  while (::write(fd, &one, sizeof one) < 0 && errno == EINTR) {
  }
  // EAGAIN means the counter is saturated: a wake-up is pending anyway.
}

void DrainEventfd(int fd) {
  uint64_t value;
  while (::read(fd, &value, sizeof value) < 0 && errno == EINTR) {
  }
}

class EventFd {
 public:
  static absl::StatusOr<EventFd> Create() {
    int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) return ErrnoToStatus(errno, "eventfd");
    return EventFd(fd);
  }
  EventFd(EventFd&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  EventFd& operator=(EventFd&&) = delete;
  ~EventFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  explicit EventFd(int fd) : fd_(fd) {}
  int fd_;
};

// What both backends share: the list of operations in flight and completion.
class IoPoller : public Poller {
 public:
  size_t in_flight() const override { return in_flight_; }

 protected:
  void Track(IoOp* op) {
    op->Ref();
    op->prev_in_flight = nullptr;
    op->next_in_flight = head_;
    if (head_ != nullptr) head_->prev_in_flight = op;
    head_ = op;
    ++in_flight_;
  }
  // Unlinks `op`, records its result and tells its waker; drops the poller's reference.
  void Complete(IoOp* op, int32_t result) {
    if (op->prev_in_flight != nullptr) {
      op->prev_in_flight->next_in_flight = op->next_in_flight;
    } else {
      head_ = op->next_in_flight;
    }
    if (op->next_in_flight != nullptr) op->next_in_flight->prev_in_flight = op->prev_in_flight;
    op->prev_in_flight = op->next_in_flight = nullptr;
    --in_flight_;
    op->result = result;
    op->done = true;
    if (!op->MarkCompleted()) {
      // Nobody takes what it produced: an accepted connection is closed, not leaked.
      if (op->kind == IoKind::kAccept && result >= 0) ::close(result);
    } else if (op->waker != nullptr) {
      op->waker->IoDone(op);
    }
    op->Unref();
  }
  // Completes, at the next Reap() or Wait(), an operation finished outside the kernel's queue
  // (cancelled before it started).
  void Defer(IoOp* op, int32_t result) { deferred_.emplace_back(op, result); }
  size_t DeliverDeferred() {
    size_t n = 0;
    while (!deferred_.empty()) {
      std::vector<std::pair<IoOp*, int32_t>> batch;
      batch.swap(deferred_);
      for (auto& [op, result] : batch) Complete(op, result);
      n += batch.size();
    }
    return n;
  }
  bool HasDeferred() const { return !deferred_.empty(); }
  bool IsDeferred(const IoOp* op) const {
    for (const auto& entry : deferred_) {
      if (entry.first == op) return true;
    }
    return false;
  }
  IoOp* head_ = nullptr;
  size_t in_flight_ = 0;

 private:
  std::vector<std::pair<IoOp*, int32_t>> deferred_;
};

class UringPoller final : public IoPoller {
 public:
  static absl::StatusOr<std::unique_ptr<Poller>> Create() {
    absl::StatusOr<EventFd> efd = EventFd::Create();
    if (!efd.ok()) return efd.status();
    auto poller = std::unique_ptr<UringPoller>(new UringPoller(std::move(*efd)));
    // Completions wait for this thread's next entry into the kernel (COOP_TASKRUN) instead of
    // interrupting whatever it runs; TASKRUN_FLAG says when some are waiting (Reap enters).
    int rc = io_uring_queue_init(kEntries, &poller->ring_,
                                 IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG);
    if (rc == -EINVAL) rc = io_uring_queue_init(kEntries, &poller->ring_, 0);  // before 5.19
    if (rc < 0) return ErrnoToStatus(-rc, "io_uring_queue_init");
    poller->ring_ready_ = true;
    return std::unique_ptr<Poller>(std::move(poller));
  }

  ~UringPoller() override {
    if (!ring_ready_) return;
    // The kernel may write into an operation's buffer until it completes: cancel everything in
    // flight and wait for each completion before the buffers go. Nobody takes the results.
    for (IoOp* op = head_; op != nullptr; op = op->next_in_flight) op->Abandon();
    for (IoOp* op = head_; op != nullptr;) {
      IoOp* next = op->next_in_flight;
      Cancel(op);
      op = next;
    }
    DeliverDeferred();
    int64_t give_up = MonotonicNanos() + 5 * kNanosPerSecond;
    while (in_flight_ > 0 && MonotonicNanos() < give_up) {
      FlushPending();
      io_uring_cqe* cqe = nullptr;
      __kernel_timespec ts{0, 100'000'000};
      io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
      ProcessCqes();
    }
    if (in_flight_ > 0) {
      // Freeing their buffers now could let the kernel write into freed memory: leak them.
      Logf(LogLevel::kError,
           "io_uring: %zu operations did not finish their cancellation; leaking them", in_flight_);
    } else {
      // The queue's references (their operations are done).
      for (IoOp* op : pending_cancels_) op->Unref();
      pending_cancels_.clear();
    }
    io_uring_queue_exit(&ring_);  // Also cancels the armed eventfd read.
  }

  Backend backend() const override { return Backend::kIoUring; }
  int wake_fd() const override { return efd_.get(); }
  int io_fd() const override { return ring_.ring_fd; }
  void Wake() override { WriteEventfd(efd_.get()); }
  void Drain() override { DrainEventfd(efd_.get()); }

  void Wait(int64_t timeout_ns) override {
    if (!read_armed_) {
      io_uring_sqe* sqe = GetSqe();
      if (sqe != nullptr) {
        io_uring_prep_read(sqe, efd_.get(), &read_buffer_, sizeof read_buffer_, 0);
        io_uring_sqe_set_data64(sqe, kWakeRead);
        read_armed_ = true;
      }
    }
    FlushPending();
    if (HasDeferred() || !read_armed_) timeout_ns = 0;
    io_uring_cqe* cqe = nullptr;
    int rc;
    if (timeout_ns < 0) {
      rc = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, nullptr, nullptr);
    } else {
      __kernel_timespec ts{static_cast<long long>(timeout_ns / kNanosPerSecond),
                           static_cast<long long>(timeout_ns % kNanosPerSecond)};
      rc = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
    }
    if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
      Logf(LogLevel::kError, "io_uring wait: %s", ErrnoToStatus(-rc, "io_uring_enter").message());
    }
    ProcessCqes();
    DeliverDeferred();
  }

  bool Submit(IoOp* op) override {
    // Socket transfers try the non-blocking call first: when the data (or the buffer space) is
    // there, that is one system call instead of a ring submission, an io_uring_enter and a
    // completion to reap (what an epoll loop pays). Only EAGAIN goes to the ring. (Two
    // operations in the same direction on one socket at once have no defined order on either
    // backend.)
    if (TryAtOnce(op)) return true;
    if (op->nowait) {
      // It would wait: a send that must not says so at once.
      op->result = -EAGAIN;
      op->done = true;
      op->MarkCompleted();
      return true;
    }
    Track(op);
    if (!pending_.empty() || !Prepare(op)) pending_.push_back(op);
    return false;
  }

  static bool TryAtOnce(IoOp* op) {
    ssize_t rc;
    char* buffer = op->buffer.get();
    switch (op->kind) {
      case IoKind::kPoll: {
        pollfd p{op->fd, op->poll_events, 0};
        rc = ::poll(&p, 1, 0);
        if (rc == 0) return false;  // Not ready: the ring waits.
        if (rc > 0) rc = static_cast<uint16_t>(p.revents);
        break;
      }
      case IoKind::kRecv:
        rc = ::recv(op->fd, buffer, op->length, MSG_DONTWAIT);
        break;
      case IoKind::kSend:
        do {
          rc = ::send(op->fd, op->send_from != nullptr ? op->send_from : buffer, op->length,
                      MSG_DONTWAIT | MSG_NOSIGNAL);
        } while (rc < 0 && errno == EINTR && op->nowait);  // A send that must not wait retries.
        break;
      case IoKind::kRecvMsg:
        rc = ::recvmsg(op->fd, &op->msg, MSG_DONTWAIT);
        break;
      case IoKind::kSendMsg:
        rc = ::sendmsg(op->fd, &op->msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        break;
      default:
        return false;
    }
    // EAGAIN: the ring waits for it; EINTR: the ring does it. Any other error (ENOTSOCK
    // included) is the operation's result, as the ring's would be.
    if (rc < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return false;
    op->result = rc < 0 ? -errno : static_cast<int32_t>(rc);
    op->done = true;
    op->MarkCompleted();
    return true;
  }

  void Cancel(IoOp* op) override {
    if (op->done || op->cancel_sent) return;
    op->cancel_sent = true;
    if (!op->in_kernel) {
      // Still waiting for a submission slot: it never reaches the kernel.
      for (auto it = pending_.begin(); it != pending_.end(); ++it) {
        if (*it == op) {
          pending_.erase(it);
          break;
        }
      }
      Defer(op, -ECANCELED);
      return;
    }
    if (!pending_cancels_.empty() || !PrepareCancel(op)) {
      op->Ref();  // Held by the queue: the operation may complete and go before its turn.
      pending_cancels_.push_back(op);
      return;
    }
    // At once, not at the next reap: a cancelled receive must not take data that arrives after
    // its awaiter is gone (a killed process's socket may be read by another).
    io_uring_submit(&ring_);
  }

  void CancelFd(int fd) override {
    for (IoOp* op = head_; op != nullptr;) {
      IoOp* next = op->next_in_flight;
      if (op->fd == fd && op->kind != IoKind::kClose) Cancel(op);
      op = next;
    }
  }

  size_t Reap() override {
    size_t n = DeliverDeferred();
    FlushPending();
    if (io_uring_sq_ready(&ring_) > 0) {
      io_uring_submit(&ring_);
    } else if (TaskRunPending()) {
      io_uring_get_events(&ring_);
    }
    n += ProcessCqes();
    return n + DeliverDeferred();
  }

  bool HasCompletions() const override {
    return HasDeferred() || io_uring_cq_ready(const_cast<io_uring*>(&ring_)) > 0 ||
           TaskRunPending();
  }

 private:
  static constexpr unsigned kEntries = 256;
  static constexpr uint64_t kWakeRead = 1;
  static constexpr uint64_t kCancelTag = 2;

  explicit UringPoller(EventFd efd) : efd_(std::move(efd)) {}

  // Completions the kernel holds until this thread enters it: task work it defers
  // (IORING_SETUP_TASKRUN_FLAG), and completions that overflowed a full CQ (flushed only by an
  // entry with GETEVENTS). Either way Reap enters the kernel.
  bool TaskRunPending() const {
    return (IO_URING_READ_ONCE(*ring_.sq.kflags) & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) !=
           0;
  }

  io_uring_sqe* GetSqe() {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {
      io_uring_submit(&ring_);
      sqe = io_uring_get_sqe(&ring_);
    }
    return sqe;
  }

  // Writes the operation's SQE; false when the submission queue is full.
  bool Prepare(IoOp* op) {
    io_uring_sqe* sqe = GetSqe();
    if (sqe == nullptr) return false;
    char* buffer = op->buffer.get();
    auto offset = static_cast<uint64_t>(op->offset);
    switch (op->kind) {
      case IoKind::kAccept:
        op->addrlen = sizeof op->addr;
        io_uring_prep_accept(sqe, op->fd, reinterpret_cast<sockaddr*>(&op->addr), &op->addrlen,
                             SOCK_NONBLOCK | SOCK_CLOEXEC);
        break;
      case IoKind::kConnect:
        io_uring_prep_connect(sqe, op->fd, reinterpret_cast<const sockaddr*>(&op->addr),
                              op->addrlen);
        break;
      case IoKind::kRecv:
        io_uring_prep_recv(sqe, op->fd, buffer, op->length, 0);
        break;
      case IoKind::kSend:
        io_uring_prep_send(sqe, op->fd, buffer, op->length, MSG_NOSIGNAL);
        break;
      case IoKind::kRecvMsg:
        io_uring_prep_recvmsg(sqe, op->fd, &op->msg, 0);
        break;
      case IoKind::kSendMsg:
        io_uring_prep_sendmsg(sqe, op->fd, &op->msg, MSG_NOSIGNAL);
        break;
      case IoKind::kRead:
        io_uring_prep_read(sqe, op->fd, buffer, static_cast<unsigned>(op->length), offset);
        break;
      case IoKind::kWrite:
        io_uring_prep_write(sqe, op->fd, buffer, static_cast<unsigned>(op->length), offset);
        break;
      case IoKind::kReadV:
        io_uring_prep_readv(sqe, op->fd, op->iov.data(), static_cast<unsigned>(op->iov.size()),
                            offset);
        break;
      case IoKind::kWriteV:
        io_uring_prep_writev(sqe, op->fd, op->iov.data(), static_cast<unsigned>(op->iov.size()),
                             offset);
        break;
      case IoKind::kClose:
        io_uring_prep_close(sqe, op->fd);
        break;
      case IoKind::kPoll:
        io_uring_prep_poll_add(sqe, op->fd, static_cast<uint16_t>(op->poll_events));
        break;
    }
    io_uring_sqe_set_data(sqe, op);
    op->in_kernel = true;
    return true;
  }

  bool PrepareCancel(IoOp* op) {
    io_uring_sqe* sqe = GetSqe();
    if (sqe == nullptr) return false;
    io_uring_prep_cancel64(sqe, reinterpret_cast<uint64_t>(op), 0);
    io_uring_sqe_set_data64(sqe, kCancelTag);
    return true;
  }

  // Writes queued SQEs while the submission queue has room.
  void FlushPending() {
    while (!pending_.empty() && Prepare(pending_.front())) pending_.pop_front();
    while (!pending_cancels_.empty()) {
      IoOp* op = pending_cancels_.front();
      if (!op->done && !PrepareCancel(op)) break;
      pending_cancels_.pop_front();
      op->Unref();
    }
  }

  // Completes what the completion queue holds. Returns how many operations completed.
  size_t ProcessCqes() {
    std::vector<std::pair<IoOp*, int32_t>> finished;
    finished.swap(scratch_);
    unsigned head;
    unsigned seen = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      uint64_t data = io_uring_cqe_get_data64(cqe);
      if (data == kWakeRead) {
        read_armed_ = false;
      } else if (data != kCancelTag) {
        finished.emplace_back(reinterpret_cast<IoOp*>(data), cqe->res);
      }
      ++seen;
    }
    io_uring_cq_advance(&ring_, seen);
    for (auto& [op, result] : finished) {
      op->in_kernel = false;
      Complete(op, result);
    }
    size_t n = finished.size();
    finished.clear();
    scratch_.swap(finished);
    return n;
  }

  EventFd efd_;
  io_uring ring_{};
  bool ring_ready_ = false;
  bool read_armed_ = false;
  uint64_t read_buffer_ = 0;
  std::deque<IoOp*> pending_;          // Submitted while the SQ ring was full.
  std::deque<IoOp*> pending_cancels_;  // Cancellations waiting for room likewise.
  std::vector<std::pair<IoOp*, int32_t>> scratch_;
};

// The epoll backend runs each operation as a non-blocking system call: at once when it can
// complete, else when epoll reports its descriptor ready (one-shot interest, re-armed while
// operations wait). Regular files are always ready: their reads and writes run at submission.
class EpollPoller final : public IoPoller {
 public:
  static absl::StatusOr<std::unique_ptr<Poller>> Create() {
    absl::StatusOr<EventFd> efd = EventFd::Create();
    if (!efd.ok()) return efd.status();
    auto poller = std::unique_ptr<EpollPoller>(new EpollPoller(std::move(*efd)));
    poller->epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (poller->epfd_ < 0) return ErrnoToStatus(errno, "epoll_create1");
    poller->tfd_ = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (poller->tfd_ < 0) return ErrnoToStatus(errno, "timerfd_create");
    for (int fd : {poller->efd_.get(), poller->tfd_}) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.fd = fd;
      if (::epoll_ctl(poller->epfd_, EPOLL_CTL_ADD, fd, &ev) < 0) {
        return ErrnoToStatus(errno, "epoll_ctl(ADD)");
      }
    }
    return std::unique_ptr<Poller>(std::move(poller));
  }

  ~EpollPoller() override {
    // Nothing is in the kernel: waiting operations just end, unseen.
    for (IoOp* op = head_; op != nullptr; op = op->next_in_flight) op->Abandon();
    for (auto& [fd, waiters] : fds_) {
      for (IoOp* op : {waiters.readers, waiters.writers, waiters.pollers}) {
        while (op != nullptr) {
          IoOp* next = op->next_waiting;
          op->next_waiting = nullptr;
          Defer(op, -ECANCELED);
          op = next;
        }
      }
    }
    fds_.clear();
    DeliverDeferred();
    if (tfd_ >= 0) ::close(tfd_);
    if (epfd_ >= 0) ::close(epfd_);
  }

  Backend backend() const override { return Backend::kEpoll; }
  int wake_fd() const override { return efd_.get(); }
  int io_fd() const override { return epfd_; }
  void Wake() override { WriteEventfd(efd_.get()); }
  void Drain() override { DrainEventfd(efd_.get()); }

  void Wait(int64_t timeout_ns) override {
    int epoll_timeout = -1;
    if (timeout_ns == 0 || HasDeferred()) {
      epoll_timeout = 0;
    } else if (timeout_ns > 0) {
      itimerspec spec{};
      spec.it_value = ToTimespec(timeout_ns);
      ::timerfd_settime(tfd_, 0, &spec, nullptr);
      timer_armed_ = true;
    }
    PollEvents(epoll_timeout);
    if (timer_armed_) {
      itimerspec off{};
      ::timerfd_settime(tfd_, 0, &off, nullptr);
      timer_armed_ = false;
    }
    DeliverDeferred();
  }

  bool Submit(IoOp* op) override {
    if (op->kind == IoKind::kClose) {
      CancelFd(op->fd);
      int rc = ::close(op->fd);
      op->result = rc < 0 ? -errno : 0;
      op->done = true;
      op->MarkCompleted();
      return true;
    }
    int32_t result;
    Interest interest = Attempt(op, &result);
    if (interest != Interest::kNone && op->nowait) {
      interest = Interest::kNone;  // It would wait: a send that must not says so at once.
      result = -EAGAIN;
    }
    if (interest == Interest::kNone) {
      op->result = result;
      op->done = true;
      op->MarkCompleted();
      return true;
    }
    Track(op);
    Waiters& w = fds_[op->fd];
    // With no operation waiting, the descriptor may have been closed since it was armed (the
    // kernel then dropped its registration) and its number reused: arm it afresh.
    if (w.idle()) w.armed = 0;
    Append(interest == Interest::kRead    ? w.readers
           : interest == Interest::kWrite ? w.writers
                                          : w.pollers,
           op);
    Arm(op->fd, w);
    return false;
  }

  void Cancel(IoOp* op) override {
    if (op->done) return;
    auto it = fds_.find(op->fd);
    if (it == fds_.end()) return;
    if (Remove(it->second.readers, op) || Remove(it->second.writers, op) ||
        Remove(it->second.pollers, op)) {
      Defer(op, -ECANCELED);
    }
  }

  void CancelFd(int fd) override {
    auto it = fds_.find(fd);
    if (it == fds_.end()) return;
    for (IoOp* op : {it->second.readers, it->second.writers, it->second.pollers}) {
      while (op != nullptr) {
        IoOp* next = op->next_waiting;
        op->next_waiting = nullptr;
        Defer(op, -ECANCELED);
        op = next;
      }
    }
    fds_.erase(it);
    ::epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);  // Fails harmlessly if it was not added.
  }

  size_t Reap() override {
    size_t n = DeliverDeferred();
    if (in_flight_ > 0) n += PollEvents(0);
    return n + DeliverDeferred();
  }

  // Readiness is only known through epoll_wait.
  bool HasCompletions() const override { return HasDeferred(); }

 private:
  // kPoll: a readiness wait (its own events, either direction).
  enum class Interest { kNone, kRead, kWrite, kPoll };
  struct Waiters {
    IoOp* readers = nullptr;  // FIFO through next_waiting.
    IoOp* writers = nullptr;
    IoOp* pollers = nullptr;  // Readiness waits: each completes on its own events.
    bool idle() const { return readers == nullptr && writers == nullptr && pollers == nullptr; }
    uint32_t armed = 0;  // The events of the one-shot registration now armed (0: none).
  };

  explicit EpollPoller(EventFd efd) : efd_(std::move(efd)) {}

  static void Append(IoOp*& head, IoOp* op) {
    op->next_waiting = nullptr;
    IoOp** link = &head;
    while (*link != nullptr) link = &(*link)->next_waiting;
    *link = op;
  }
  static bool Remove(IoOp*& head, IoOp* op) {
    for (IoOp** link = &head; *link != nullptr; link = &(*link)->next_waiting) {
      if (*link == op) {
        *link = op->next_waiting;
        op->next_waiting = nullptr;
        return true;
      }
    }
    return false;
  }

  // Makes a socket non-blocking (accept and connect have no per-call flag for it).
  static void MakeNonBlocking(int fd) {
    int flags = ::fcntl(fd, F_GETFL);
    if (flags >= 0 && (flags & O_NONBLOCK) == 0) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  }
  // A read or write of a file descriptor (kRead, kWrite, kReadV, kWriteV): the system call's
  // result, or -1 with errno EAGAIN when it must wait for readiness. io_internal::Fill set the
  // operation's FileIoMode and sized a write to a blocking pipe or terminal to PIPE_BUF at most.
  static ssize_t FileIo(IoOp* op, bool writes) {
    const int fd = op->fd;
    char* buffer = op->buffer.get();
    const size_t length = op->length;
    const std::vector<iovec>* iov = &op->iov;
    if (op->file_io_mode == kFileIoPollFirst) {
      pollfd p{fd, static_cast<int16_t>(writes ? POLLOUT : POLLIN), 0};
      const int ready = ::poll(&p, 1, 0);
      if (ready < 0) return -1;  // errno set (EINTR: tried again).
      if (ready == 0) {
        errno = EAGAIN;
        return -1;
      }
      // Ready, or POLLERR / POLLHUP / POLLNVAL: the call reports what is there, or the error.
    }
    const auto iovcnt = static_cast<int>(iov->size());
    if (op->file_io_mode == kFileIoSocketDontWait && op->offset < 0) {
      if (op->kind == IoKind::kRead) return ::recv(fd, buffer, length, MSG_DONTWAIT);
      if (op->kind == IoKind::kWrite) {
        return ::send(fd, buffer, length, MSG_DONTWAIT | MSG_NOSIGNAL);
      }
      msghdr msg{};
      msg.msg_iov = const_cast<iovec*>(iov->data());
      msg.msg_iovlen = iov->size();
      return writes ? ::sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL)
                    : ::recvmsg(fd, &msg, MSG_DONTWAIT);
    }
    switch (op->kind) {
      case IoKind::kRead:
        return op->offset < 0 ? ::read(fd, buffer, length)
                              : ::pread(fd, buffer, length, op->offset);
      case IoKind::kWrite:
        return op->offset < 0 ? ::write(fd, buffer, length)
                              : ::pwrite(fd, buffer, length, op->offset);
      case IoKind::kReadV:
        return op->offset < 0 ? ::readv(fd, iov->data(), iovcnt)
                              : ::preadv(fd, iov->data(), iovcnt, op->offset);
      default:
        return op->offset < 0 ? ::writev(fd, iov->data(), iovcnt)
                              : ::pwritev(fd, iov->data(), iovcnt, op->offset);
    }
  }

  // Tries the operation's system call. kNone: done, `*result` holds the result; otherwise it
  // must wait for the descriptor to become readable or writable.
  static Interest Attempt(IoOp* op, int32_t* result) {
    ssize_t rc = 0;
    Interest wait = Interest::kRead;
    const int fd = op->fd;
    char* buffer = op->buffer.get();
    do {
      switch (op->kind) {
        case IoKind::kPoll: {
          pollfd p{fd, op->poll_events, 0};
          rc = ::poll(&p, 1, 0);
          if (rc == 0) return Interest::kPoll;
          if (rc > 0) rc = static_cast<uint16_t>(p.revents);
          break;
        }
        case IoKind::kAccept:
          MakeNonBlocking(fd);
          op->addrlen = sizeof op->addr;
          rc = ::accept4(fd, reinterpret_cast<sockaddr*>(&op->addr), &op->addrlen,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
          break;
        case IoKind::kConnect:
          wait = Interest::kWrite;
          if (op->connect_started) {
            int error = 0;
            socklen_t len = sizeof error;
            rc = ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len);
            if (rc == 0 && error != 0) {
              errno = error;
              rc = -1;
            }
            if (rc < 0 && (errno == EINPROGRESS || errno == EALREADY)) return wait;
          } else {
            MakeNonBlocking(fd);
            rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&op->addr), op->addrlen);
            if (rc < 0 && errno == EINPROGRESS) {
              op->connect_started = true;
              return wait;
            }
          }
          break;
        case IoKind::kRecv:
          rc = ::recv(fd, buffer, op->length, MSG_DONTWAIT);
          break;
        case IoKind::kSend:
          wait = Interest::kWrite;
          rc = ::send(fd, op->send_from != nullptr ? op->send_from : buffer, op->length,
                      MSG_DONTWAIT | MSG_NOSIGNAL);
          break;
        case IoKind::kRecvMsg:
          rc = ::recvmsg(fd, &op->msg, MSG_DONTWAIT);
          break;
        case IoKind::kSendMsg:
          wait = Interest::kWrite;
          rc = ::sendmsg(fd, &op->msg, MSG_DONTWAIT | MSG_NOSIGNAL);
          break;
        case IoKind::kRead:
        case IoKind::kReadV:
        case IoKind::kWrite:
        case IoKind::kWriteV: {
          const bool writes = op->kind == IoKind::kWrite || op->kind == IoKind::kWriteV;
          if (writes) wait = Interest::kWrite;
          rc = FileIo(op, writes);
          break;
        }
        case IoKind::kClose:
          rc = ::close(fd);
          break;
      }
    } while (rc < 0 && errno == EINTR);
    if (rc < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return wait;
    *result = rc < 0 ? -errno : static_cast<int32_t>(rc);
    return Interest::kNone;
  }

  // Arms the one-shot registration for what `w` waits on; on failure its operations fail.
  void Arm(int fd, Waiters& w) {
    uint32_t events = 0;
    if (w.readers != nullptr) events |= EPOLLIN | EPOLLRDHUP;
    if (w.writers != nullptr) events |= EPOLLOUT;
    // Each readiness wait arms exactly its own events: one armed for more would fire at once
    // again and again (level-triggered) on, say, unread data while it waits for a hang-up.
    for (IoOp* op = w.pollers; op != nullptr; op = op->next_waiting) {
      if ((op->poll_events & POLLIN) != 0) events |= EPOLLIN;
      if ((op->poll_events & POLLRDHUP) != 0) events |= EPOLLRDHUP;
      if ((op->poll_events & POLLPRI) != 0) events |= EPOLLPRI;
      if ((op->poll_events & POLLOUT) != 0) events |= EPOLLOUT;
    }
    if (events == 0 || events == w.armed) return;
    epoll_event ev{};
    ev.events = events | EPOLLONESHOT;
    ev.data.fd = fd;
    int rc = ::epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &ev);
    if (rc < 0 && errno == ENOENT) rc = ::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
    if (rc == 0) {
      w.armed = events;
      return;
    }
    int error = errno;
    for (IoOp** head : {&w.readers, &w.writers, &w.pollers}) {
      while (IoOp* op = *head) {
        *head = op->next_waiting;
        op->next_waiting = nullptr;
        Defer(op, -error);
      }
    }
    fds_.erase(fd);
  }

  // epoll_wait with `timeout_ms`; runs what became ready. Returns how many operations completed.
  size_t PollEvents(int timeout_ms) {
    epoll_event events[64];
    int n = ::epoll_wait(epfd_, events, 64, timeout_ms);
    std::vector<std::pair<IoOp*, int32_t>> finished;
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == efd_.get() || fd == tfd_) {
        DrainEventfd(fd);  // Works for the timerfd too.
        continue;
      }
      auto it = fds_.find(fd);
      if (it == fds_.end()) continue;
      Waiters& w = it->second;
      w.armed = 0;  // One-shot: it fired.
      uint32_t ev = events[i].events;
      bool broken = (ev & (EPOLLERR | EPOLLHUP)) != 0;
      if (broken || (ev & (EPOLLIN | EPOLLRDHUP)) != 0) RunReady(w.readers, &finished);
      if (broken || (ev & EPOLLOUT) != 0) RunReady(w.writers, &finished);
      RunPollers(w.pollers, &finished);
      if (w.idle()) continue;  // Stays registered, disarmed.
      Arm(fd, w);
    }
    for (auto& [op, result] : finished) Complete(op, result);
    return finished.size();
  }

  // Retries the queue's operations in order until one must wait again.
  static void RunReady(IoOp*& head, std::vector<std::pair<IoOp*, int32_t>>* finished) {
    while (IoOp* op = head) {
      int32_t result = -ECANCELED;
      // An abandoned operation (its process died on another thread; the cancellation is on its
      // way) makes no system call: its descriptor may already be closed and its number reused.
      if (op->outcome.load(std::memory_order_acquire) != IoOp::kAbandoned &&
          Attempt(op, &result) != Interest::kNone) {
        break;
      }
      head = op->next_waiting;
      op->next_waiting = nullptr;
      finished->emplace_back(op, result);
    }
  }

  // Completes every readiness wait whose events are there now; the others keep waiting.
  static void RunPollers(IoOp*& head, std::vector<std::pair<IoOp*, int32_t>>* finished) {
    for (IoOp** link = &head; IoOp* op = *link;) {
      int32_t result = -ECANCELED;
      if (op->outcome.load(std::memory_order_acquire) != IoOp::kAbandoned &&
          Attempt(op, &result) != Interest::kNone) {
        link = &op->next_waiting;
        continue;
      }
      *link = op->next_waiting;
      op->next_waiting = nullptr;
      finished->emplace_back(op, result);
    }
  }

  EventFd efd_;
  int epfd_ = -1;
  int tfd_ = -1;
  bool timer_armed_ = false;
  absl::flat_hash_map<int, Waiters> fds_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Poller>> Poller::Create(Backend backend) {
  return backend == Backend::kIoUring ? UringPoller::Create() : EpollPoller::Create();
}

int64_t MonotonicNanos() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * kNanosPerSecond + ts.tv_nsec;
}

}  // namespace etsmgr::executor_internal
