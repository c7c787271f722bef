#include "etsmgr/executor/internal/poller.h"

#include <liburing.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "etsmgr/base/errno_status.h"
#include "etsmgr/base/log.h"

namespace etsmgr {
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

class UringPoller final : public Poller {
 public:
  static absl::StatusOr<std::unique_ptr<Poller>> Create() {
    absl::StatusOr<EventFd> efd = EventFd::Create();
    if (!efd.ok()) return efd.status();
    auto poller = std::unique_ptr<UringPoller>(new UringPoller(std::move(*efd)));
    int rc = io_uring_queue_init(kEntries, &poller->ring_, 0);
    if (rc < 0) return ErrnoToStatus(-rc, "io_uring_queue_init");
    poller->ring_ready_ = true;
    return std::unique_ptr<Poller>(std::move(poller));
  }

  ~UringPoller() override {
    if (ring_ready_) io_uring_queue_exit(&ring_);  // Cancels the armed eventfd read.
  }

  Backend backend() const override { return Backend::kIoUring; }
  int wake_fd() const override { return efd_.get(); }
  void Wake() override { WriteEventfd(efd_.get()); }
  void Drain() override { DrainEventfd(efd_.get()); }

  void Wait(int64_t timeout_ns) override {
    if (!read_armed_) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
      // The ring holds kEntries SQEs and we keep at most one in flight, so this cannot fail.
      io_uring_prep_read(sqe, efd_.get(), &read_buffer_, sizeof read_buffer_, 0);
      io_uring_sqe_set_data64(sqe, kWakeRead);
      read_armed_ = true;
    }
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
    unsigned head;
    unsigned seen = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      if (io_uring_cqe_get_data64(cqe) == kWakeRead) read_armed_ = false;
      ++seen;
    }
    io_uring_cq_advance(&ring_, seen);
  }

 private:
  static constexpr unsigned kEntries = 64;
  static constexpr uint64_t kWakeRead = 1;

  explicit UringPoller(EventFd efd) : efd_(std::move(efd)) {}

  EventFd efd_;
  io_uring ring_{};
  bool ring_ready_ = false;
  bool read_armed_ = false;
  uint64_t read_buffer_ = 0;
};

class EpollPoller final : public Poller {
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
    if (tfd_ >= 0) ::close(tfd_);
    if (epfd_ >= 0) ::close(epfd_);
  }

  Backend backend() const override { return Backend::kEpoll; }
  int wake_fd() const override { return efd_.get(); }
  void Wake() override { WriteEventfd(efd_.get()); }
  void Drain() override { DrainEventfd(efd_.get()); }

  void Wait(int64_t timeout_ns) override {
    int epoll_timeout = -1;
    if (timeout_ns == 0) {
      epoll_timeout = 0;
    } else if (timeout_ns > 0) {
      itimerspec spec{};
      spec.it_value = ToTimespec(timeout_ns);
      ::timerfd_settime(tfd_, 0, &spec, nullptr);
      timer_armed_ = true;
    }
    epoll_event events[2];
    int n = ::epoll_wait(epfd_, events, 2, epoll_timeout);
    for (int i = 0; i < n; ++i) DrainEventfd(events[i].data.fd);  // Works for timerfd too.
    if (timer_armed_) {
      itimerspec off{};
      ::timerfd_settime(tfd_, 0, &off, nullptr);
      timer_armed_ = false;
    }
  }

 private:
  explicit EpollPoller(EventFd efd) : efd_(std::move(efd)) {}

  EventFd efd_;
  int epfd_ = -1;
  int tfd_ = -1;
  bool timer_armed_ = false;
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

}  // namespace etsmgr
