#include "etsmgr/executor/io.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <new>
#include <utility>

#include "absl/strings/str_cat.h"
#include "etsmgr/base/errno_status.h"
#include "etsmgr/base/error_atom.h"
#include "etsmgr/base/status_macros.h"

namespace etsmgr {
namespace {

size_t TotalSize(const std::vector<std::span<char>>& pieces) {
  size_t total = 0;
  for (const auto& p : pieces) total += p.size();
  return total;
}

// The common checks of every spec: a descriptor, a sane offset.
IoSpec MakeSpec(IoKind kind, int fd, int64_t offset = -1) {
  IoSpec spec;
  spec.kind = kind;
  spec.fd = fd;
  spec.offset = offset;
  if (fd < 0) {
    spec.error = absl::InvalidArgumentError(
        absl::StrCat(IoKindName(kind), ": invalid file descriptor ", fd));
  } else if (offset < -1) {
    spec.error = absl::InvalidArgumentError(absl::StrCat(
        IoKindName(kind), ": invalid offset ", offset, " (-1: the file position, or >= 0)"));
  }
  return spec;
}

void CheckPieces(IoSpec& spec, size_t count) {
  if (!spec.error.ok()) return;
  if (count == 0) {
    spec.error = absl::InvalidArgumentError(absl::StrCat(IoKindName(spec.kind), ": no buffers"));
  } else if (count > IOV_MAX) {
    spec.error = absl::InvalidArgumentError(
        absl::StrCat(IoKindName(spec.kind), ": ", count, " buffers (at most ", IOV_MAX, ")"));
  }
}

void CheckRoom(IoSpec& spec, size_t room) {
  if (spec.error.ok() && room == 0) {
    // A zero-length read would "succeed" with 0, indistinguishable from the end of the stream.
    spec.error = absl::InvalidArgumentError(absl::StrCat(IoKindName(spec.kind), ": empty buffer"));
  }
}

}  // namespace

// --- Addresses and sockets.

std::string SocketAddress::ToString() const {
  char text[INET6_ADDRSTRLEN] = "?";
  if (storage.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&storage);
    ::inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
    return absl::StrCat(text, ":", ntohs(in->sin_port));
  }
  if (storage.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&storage);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
    return absl::StrCat("[", text, "]:", ntohs(in6->sin6_port));
  }
  return "(no address)";
}

uint16_t SocketAddress::port() const {
  if (storage.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in*>(&storage)->sin_port);
  }
  if (storage.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_port);
  }
  return 0;
}

absl::StatusOr<SocketAddress> ParseAddress(std::string_view host, uint16_t port) {
  std::string text(host == "localhost" ? std::string_view("127.0.0.1") : host);
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']') {
    text = text.substr(1, text.size() - 2);
  }
  SocketAddress address;
  auto* in = reinterpret_cast<sockaddr_in*>(&address.storage);
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&address.storage);
  if (::inet_pton(AF_INET, text.c_str(), &in->sin_addr) == 1) {
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    address.length = sizeof(sockaddr_in);
    return address;
  }
  if (::inet_pton(AF_INET6, text.c_str(), &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    address.length = sizeof(sockaddr_in6);
    return address;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("address \"", std::string(host),
                   "\": not a numeric IPv4 or IPv6 address or localhost (names are not resolved)"));
}

absl::StatusOr<int> TcpSocket(int family) {
  if (family != AF_INET && family != AF_INET6) {
    return absl::InvalidArgumentError(absl::StrCat("socket: family ", family, " is not TCP/IP"));
  }
  int fd = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoToStatus(errno, "socket");
  return fd;
}

absl::StatusOr<int> ListenTcp(const ListenOptions& options) {
  absl::StatusOr<SocketAddress> address = ParseAddress(options.host, options.port);
  if (!address.ok()) return address.status();
  if (options.backlog <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen: backlog ", options.backlog, " (must be positive)"));
  }
  absl::StatusOr<int> fd = TcpSocket(address->storage.ss_family);
  if (!fd.ok()) return fd.status();
  int one = 1;
  if (options.reuse_address && ::setsockopt(*fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) {
    absl::Status status = ErrnoToStatus(errno, "setsockopt(SO_REUSEADDR)");
    ::close(*fd);
    return status;
  }
  if (::bind(*fd, reinterpret_cast<const sockaddr*>(&address->storage), address->length) < 0) {
    absl::Status status = ErrnoToStatus(errno, absl::StrCat("bind ", address->ToString()));
    ::close(*fd);
    return status;
  }
  if (::listen(*fd, options.backlog) < 0) {
    absl::Status status = ErrnoToStatus(errno, absl::StrCat("listen ", address->ToString()));
    ::close(*fd);
    return status;
  }
  return *fd;
}

absl::StatusOr<SocketAddress> LocalAddress(int fd) {
  SocketAddress address;
  address.length = sizeof address.storage;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address.storage), &address.length) < 0) {
    return ErrnoToStatus(errno, "getsockname");
  }
  return address;
}

absl::StatusOr<SocketAddress> PeerAddress(int fd) {
  SocketAddress address;
  address.length = sizeof address.storage;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&address.storage), &address.length) < 0) {
    return ErrnoToStatus(errno, "getpeername");
  }
  return address;
}

// --- Specs.

IoSpec AcceptSpec(int listen_fd) { return MakeSpec(IoKind::kAccept, listen_fd); }

IoSpec ConnectSpec(int fd, const SocketAddress& address) {
  IoSpec spec = MakeSpec(IoKind::kConnect, fd);
  spec.address = address;
  if (spec.error.ok() && address.length == 0) {
    spec.error = absl::InvalidArgumentError("connect: no address");
  }
  return spec;
}

IoSpec RecvSpec(int fd, std::span<char> into) {
  IoSpec spec = MakeSpec(IoKind::kRecv, fd);
  spec.into = into;
  CheckRoom(spec, into.size());
  return spec;
}

IoSpec SendSpec(int fd, std::string_view data) {
  IoSpec spec = MakeSpec(IoKind::kSend, fd);
  spec.from = data;
  return spec;
}

IoSpec TrySendSpec(int fd, std::string_view data) {
  IoSpec spec = SendSpec(fd, data);
  spec.nowait = true;
  return spec;
}

IoSpec PollSpec(int fd, short events) {
  IoSpec spec = MakeSpec(IoKind::kPoll, fd);
  spec.events = events;
  constexpr short kWaitable = POLLIN | POLLOUT | POLLPRI | POLLRDHUP;
  if (spec.error.ok() && (events & kWaitable) == 0) {
    spec.error = absl::InvalidArgumentError(
        absl::StrCat("poll: events ", events,
                     " name nothing to wait for (POLLIN, POLLOUT, POLLPRI, POLLRDHUP)"));
  } else if (spec.error.ok() && (events & ~(kWaitable | POLLERR | POLLHUP)) != 0) {
    spec.error = absl::InvalidArgumentError(absl::StrCat(
        "poll: events ", events, " include bits other than POLLIN, POLLOUT, POLLPRI, POLLRDHUP"));
  }
  return spec;
}

IoSpec RecvVSpec(int fd, std::vector<std::span<char>> into) {
  IoSpec spec = MakeSpec(IoKind::kRecvMsg, fd);
  CheckPieces(spec, into.size());
  CheckRoom(spec, TotalSize(into));
  spec.intos = std::move(into);
  return spec;
}

IoSpec SendVSpec(int fd, std::vector<std::string_view> pieces) {
  IoSpec spec = MakeSpec(IoKind::kSendMsg, fd);
  CheckPieces(spec, pieces.size());
  spec.froms = std::move(pieces);
  return spec;
}

IoSpec ReadSpec(int fd, std::span<char> into, int64_t offset) {
  IoSpec spec = MakeSpec(IoKind::kRead, fd, offset);
  spec.into = into;
  CheckRoom(spec, into.size());
  return spec;
}

IoSpec WriteSpec(int fd, std::string_view data, int64_t offset) {
  IoSpec spec = MakeSpec(IoKind::kWrite, fd, offset);
  spec.from = data;
  return spec;
}

IoSpec ReadVSpec(int fd, std::vector<std::span<char>> into, int64_t offset) {
  IoSpec spec = MakeSpec(IoKind::kReadV, fd, offset);
  CheckPieces(spec, into.size());
  CheckRoom(spec, TotalSize(into));
  spec.intos = std::move(into);
  return spec;
}

IoSpec WriteVSpec(int fd, std::vector<std::string_view> pieces, int64_t offset) {
  IoSpec spec = MakeSpec(IoKind::kWriteV, fd, offset);
  CheckPieces(spec, pieces.size());
  spec.froms = std::move(pieces);
  return spec;
}

IoSpec CloseSpec(int fd) { return MakeSpec(IoKind::kClose, fd); }

namespace io_internal {

FdGuard::~FdGuard() {
  if (fd_ >= 0) ::close(fd_);
}

namespace {

void FillOrThrow(const IoSpec& spec, IoOp* op, const Scheduler& scheduler) {
  op->offset = spec.offset;
  op->nowait = spec.nowait && spec.kind == IoKind::kSend;  // Only a send may not wait.
  size_t most = kMaxIoBytes;                               // What one operation moves at most.
  if (scheduler.backend() == Backend::kEpoll &&
      (spec.kind == IoKind::kRead || spec.kind == IoKind::kWrite || spec.kind == IoKind::kReadV ||
       spec.kind == IoKind::kWriteV)) {
    op->file_io_mode = FileIoModeOf(spec.fd);
    const bool writes = spec.kind == IoKind::kWrite || spec.kind == IoKind::kWriteV;
    if (writes && op->file_io_mode == kFileIoPollFirst) most = PIPE_BUF;
  }
  switch (spec.kind) {
    case IoKind::kAccept:
    case IoKind::kClose:
      return;
    case IoKind::kPoll:
      op->poll_events = spec.events;
      return;
    case IoKind::kConnect:
      op->addr = spec.address.storage;
      op->addrlen = spec.address.length;
      return;
    case IoKind::kRecv:
    case IoKind::kRead:
      op->length = std::min(spec.into.size(), kMaxIoBytes);
      op->buffer = std::make_unique_for_overwrite<char[]>(op->length);
      return;
    case IoKind::kSend:
    case IoKind::kWrite:
      op->length = std::min(spec.from.size(), most);
      if (spec.nowait && spec.kind == IoKind::kSend) {
        op->send_from = spec.from.data();  // Done within the submission: no copy needed.
        return;
      }
      op->buffer = std::make_unique_for_overwrite<char[]>(op->length);
      if (op->length > 0) std::memcpy(op->buffer.get(), spec.from.data(), op->length);
      return;
    case IoKind::kRecvMsg:
    case IoKind::kReadV: {
      size_t total = std::min(TotalSize(spec.intos), kMaxIoBytes);
      op->buffer = std::make_unique_for_overwrite<char[]>(total);
      op->length = total;
      size_t at = 0;
      for (const auto& piece : spec.intos) {
        size_t n = std::min(piece.size(), total - at);
        if (n == 0) continue;
        op->iov.push_back(iovec{op->buffer.get() + at, n});
        at += n;
      }
      break;
    }
    case IoKind::kSendMsg:
    case IoKind::kWriteV: {
      size_t total = 0;
      for (auto piece : spec.froms) total += piece.size();
      total = std::min(total, most);
      op->buffer = std::make_unique_for_overwrite<char[]>(total);
      op->length = total;
      size_t at = 0;
      for (auto piece : spec.froms) {
        size_t n = std::min(piece.size(), total - at);
        if (n == 0) continue;
        std::memcpy(op->buffer.get() + at, piece.data(), n);
        op->iov.push_back(iovec{op->buffer.get() + at, n});
        at += n;
      }
      break;
    }
  }
  if (op->iov.empty()) op->iov.push_back(iovec{op->buffer.get(), 0});
  op->msg.msg_iov = op->iov.data();
  op->msg.msg_iovlen = op->iov.size();
}

}  // namespace

absl::Status Fill(const IoSpec& spec, IoOp* op, const Scheduler& scheduler) {
  try {
    if (FillFault fault = g_fill_fault.load(std::memory_order_acquire)) fault();
    FillOrThrow(spec, op, scheduler);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat(IoKindName(spec.kind), ": no memory for the operation's buffer"));
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> Finish(const IoSpec& spec, const IoOp* op, bool timed_out) {
  const char* name = IoKindName(spec.kind);
  if (op->result < 0) {
    int error = -op->result;
    if (error == ECANCELED && timed_out) {
      return absl::DeadlineExceededError(absl::StrCat(name, ": deadline exceeded"));
    }
    if (error == ECANCELED) {
      return absl::CancelledError(absl::StrCat(
          name, ": cancelled (its descriptor was closed, or the runtime is stopping)"));
    }
    if (error == EAGAIN && spec.nowait && spec.kind == IoKind::kSend) return 0;  // No room now.
    return ErrnoToStatus(error, name);
  }
  auto n = static_cast<size_t>(op->result);
  if (spec.kind == IoKind::kRecv || spec.kind == IoKind::kRead) {
    std::memcpy(spec.into.data(), op->buffer.get(), std::min(n, spec.into.size()));
  } else if (spec.kind == IoKind::kRecvMsg || spec.kind == IoKind::kReadV) {
    // The pieces are laid end to end in the buffer, filled in order.
    size_t at = 0;
    for (const auto& piece : spec.intos) {
      if (at >= n) break;
      size_t m = std::min(piece.size(), n - at);
      std::memcpy(piece.data(), op->buffer.get() + at, m);
      at += m;
    }
  }
  return n;
}

void Release(IoOp* op, bool consumed) {
  if (!consumed && op->owner != nullptr) {  // (No owner: never submitted, nothing to cancel.)
    if (op->Abandon()) {
      // Still in flight: it finishes unseen (the poller closes what an accept brings).
      op->owner->CancelIo(op);
    } else if (op->kind == IoKind::kAccept && op->result >= 0) {
      ::close(op->result);  // Completed, but its awaiter is gone before taking it.
    }
  }
  op->Unref();
}

absl::Status CheckScheduler(const Scheduler* s, IoKind kind) {
  if (s == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        IoKindName(kind), ": not on a scheduler thread (await I/O in a task or process)"));
  }
  if (s->deterministic()) {
    return absl::FailedPreconditionError(absl::StrCat(
        IoKindName(kind), ": a deterministic scheduler has no I/O (it never waits in the kernel)"));
  }
  return absl::OkStatus();
}

}  // namespace io_internal

// --- IoAwaiter.

IoAwaiter::~IoAwaiter() {
  if (op_ == nullptr) return;
  if (armed()) DisarmOn(scheduler_);
  io_internal::Release(op_, consumed_);
}

bool IoAwaiter::await_ready() noexcept { return !spec_.error.ok(); }

bool IoAwaiter::await_suspend(std::coroutine_handle<> h) noexcept {
  scheduler_ = Scheduler::Current();
  absl::Status ok = io_internal::CheckScheduler(scheduler_, spec_.kind);
  if (!ok.ok()) {
    spec_.error = std::move(ok);
    return false;
  }
  try {
    op_ = IoOp::Create(spec_.kind, spec_.fd);
  } catch (const std::bad_alloc&) {
    spec_.error = absl::ResourceExhaustedError(
        absl::StrCat(IoKindName(spec_.kind), ": no memory for the operation"));
    return false;
  }
  if (absl::Status filled = io_internal::Fill(spec_, op_, *scheduler_); !filled.ok()) {
    spec_.error = std::move(filled);
    io_internal::Release(std::exchange(op_, nullptr), /*consumed=*/false);
    return false;
  }
  op_->waker = this;
  if (spec_.kind == IoKind::kClose) scheduler_->CancelIoOnFd(spec_.fd);
  if (scheduler_->SubmitIo(op_)) {
    // Done at once. Still a reduction: a task that always finds its data ready yields when its
    // slice is used up, like any busy runnable.
    if (!scheduler_->Charge()) return false;
    resume_.set_handle(h);
    scheduler_->Post(&resume_);
    return true;
  }
  handle_ = h;
  if (deadline_ != absl::InfiniteFuture()) {
    ArmOn(scheduler_, scheduler_->ToSchedulerNanos(deadline_));
  }
  return true;
}

absl::StatusOr<size_t> IoAwaiter::await_resume() {
  if (!spec_.error.ok()) return spec_.error;
  consumed_ = true;
  return io_internal::Finish(spec_, op_, timed_out_);
}

void IoAwaiter::IoDone(IoOp* /*op*/) noexcept {
  if (armed()) DisarmOn(scheduler_);
  resume_.set_handle(handle_);
  scheduler_->Post(&resume_);
}

void IoAwaiter::Fire() noexcept {
  timed_out_ = true;
  scheduler_->CancelIo(op_);
}

// --- Helpers.

Task<absl::Status> SendAll(int fd, std::string_view data, absl::Time deadline) {
  while (!data.empty()) {
    ETSMGR_CO_ASSIGN_OR_RETURN(size_t n, co_await Send(fd, data, deadline));
    if (n == 0) co_return absl::InternalError("send: the socket took no bytes");
    data.remove_prefix(n);
  }
  co_return absl::OkStatus();
}

Task<absl::Status> WriteAll(int fd, std::string_view data, int64_t offset, absl::Time deadline) {
  while (!data.empty()) {
    ETSMGR_CO_ASSIGN_OR_RETURN(size_t n, co_await Write(fd, data, offset, deadline));
    if (n == 0) co_return absl::InternalError("write: the descriptor took no bytes");
    data.remove_prefix(n);
    if (offset >= 0) offset += static_cast<int64_t>(n);
  }
  co_return absl::OkStatus();
}

Task<absl::StatusOr<int>> ConnectTcp(std::string host, uint16_t port, absl::Time deadline) {
  ETSMGR_CO_ASSIGN_OR_RETURN(SocketAddress address, ParseAddress(host, port));
  ETSMGR_CO_ASSIGN_OR_RETURN(int fd, TcpSocket(address.storage.ss_family));
  // Closed unless connected, also when the frame is destroyed while connecting.
  io_internal::FdGuard closer(fd);
  absl::Status connected = co_await Connect(fd, address, deadline);
  if (!connected.ok()) {
    co_return WithMessage(connected,
                          absl::StrCat(connected.message(), " (", address.ToString(), ")"));
  }
  closer.Release();
  co_return fd;
}

}  // namespace etsmgr
