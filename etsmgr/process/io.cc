#include "etsmgr/process/io.h"

#include <unistd.h>

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "etsmgr/base/error_atom.h"
#include "etsmgr/base/status_macros.h"
#include "etsmgr/executor/scheduler.h"

namespace etsmgr {

// The control block and its helpers, used throughout this package's implementation.
using process_internal::ExitResource;
using process_internal::ExitSignalEnvelope;
using process_internal::Matcher;
using process_internal::NameRegistered;
using process_internal::ProcessAccess;
using process_internal::ProcessControl;
using process_internal::WaitRecord;
namespace {

// The completion message: `tag` names the operation it completes.
struct IoCompleted {
  uint64_t tag;
};

// An operation whose completion is a message to the process that started it. Send() to a dead
// process drops the message, so a completion racing the process's death is harmless.
class ProcessIoOp final : public IoOp, private IoWaker {
 public:
  ProcessIoOp(IoKind kind, int fd, Pid pid) : IoOp(kind, fd), pid_(std::move(pid)) { waker = this; }
  uint64_t tag() const { return reinterpret_cast<uint64_t>(this); }

 private:
  void IoDone(IoOp* /*op*/) noexcept override { etsmgr::Send(pid_, IoCompleted{tag()}); }
  Pid pid_;
};

// Drops the process's reference; a process dying while it waits abandons (and cancels) the
// operation. Keeps the process on the operation's scheduler meanwhile: it dies there, and the
// cancellation is submitted before its exit is seen by links and monitors.
class OpGuard {
 public:
  OpGuard(ProcessIoOp* op, ProcessControl* process) : op_(op), process_(process) {
    process_->AddIoWait(1);
  }
  OpGuard(const OpGuard&) = delete;
  OpGuard& operator=(const OpGuard&) = delete;
  ~OpGuard() {
    io_internal::Release(op_, consumed_);
    process_->AddIoWait(-1);
  }
  void set_consumed() { consumed_ = true; }

 private:
  ProcessIoOp* op_;
  ProcessControl* process_;
  bool consumed_ = false;
};

}  // namespace

Task<absl::StatusOr<size_t>> RunIo(Process& self, IoSpec spec, absl::Time deadline) {
  if (!spec.error.ok()) co_return spec.error;
  Scheduler* scheduler = Scheduler::Current();
  ETSMGR_CO_RETURN_IF_ERROR(io_internal::CheckScheduler(scheduler, spec.kind));
  auto* op = new ProcessIoOp(spec.kind, spec.fd, self.self());
  OpGuard guard(op, ProcessAccess::Control(self));
  ETSMGR_CO_RETURN_IF_ERROR(io_internal::Fill(spec, op, *scheduler));
  if (spec.kind == IoKind::kClose) scheduler->CancelIoOnFd(spec.fd);
  if (scheduler->SubmitIo(op)) {
    guard.set_consumed();
    absl::StatusOr<size_t> result = io_internal::Finish(spec, op, /*timed_out=*/false);
    // Done without waiting: still a reduction, so a connection that always finds data ready
    // yields like any other busy process. An accepted descriptor is closed should the process
    // die at that yield (nobody else knows of it yet).
    if (scheduler->Charge()) {
      io_internal::FdGuard accepted(
          spec.kind == IoKind::kAccept && result.ok() ? static_cast<int>(*result) : -1);
      co_await self.Yield();
      accepted.Release();
    }
    co_return result;
  }
  const uint64_t tag = op->tag();
  auto completes = [tag](const Envelope& e) {
    const IoCompleted* c = e.As<IoCompleted>();
    return c != nullptr && c->tag == tag;
  };
  std::optional<Message> done = co_await self.ReceiveIf(completes, deadline);
  bool timed_out = false;
  if (!done.has_value()) {
    // The deadline passed: cancel, then take whichever result comes (a completion that won the
    // race keeps its data).
    timed_out = true;
    op->owner->CancelIo(op);
    done = co_await self.ReceiveIf(completes);
  }
  guard.set_consumed();
  co_return io_internal::Finish(spec, op, timed_out);
}

Task<absl::StatusOr<int>> Accept(Process& self, int listen_fd, absl::Time deadline) {
  ETSMGR_CO_ASSIGN_OR_RETURN(size_t fd, co_await RunIo(self, AcceptSpec(listen_fd), deadline));
  co_return static_cast<int>(fd);
}

Task<absl::Status> Connect(Process& self, int fd, SocketAddress address, absl::Time deadline) {
  absl::StatusOr<size_t> r = co_await RunIo(self, ConnectSpec(fd, address), deadline);
  co_return r.status();
}

Task<absl::Status> Close(Process& self, int fd) {
  absl::StatusOr<size_t> r = co_await RunIo(self, CloseSpec(fd));
  co_return r.status();
}

Task<absl::StatusOr<short>> Poll(Process& self, int fd, short events, absl::Time deadline) {
  ETSMGR_CO_ASSIGN_OR_RETURN(size_t ready, co_await RunIo(self, PollSpec(fd, events), deadline));
  co_return static_cast<short>(ready);
}

Task<absl::Status> SendAll(Process& self, int fd, std::string_view data, absl::Time deadline) {
  return SendAllProgressing(self, fd, data, absl::InfiniteDuration(), deadline);
}

Task<absl::Status> SendAllProgressing(Process& self, int fd, std::string_view data,
                                      absl::Duration idle, absl::Time deadline) {
  while (!data.empty()) {
    const absl::Time until = idle > absl::ZeroDuration() && idle != absl::InfiniteDuration()
                                 ? std::min(deadline, Deadline(idle))
                                 : deadline;
    ETSMGR_CO_ASSIGN_OR_RETURN(size_t n, co_await RunIo(self, SendSpec(fd, data), until));
    if (n == 0) co_return absl::InternalError("send: the socket took no bytes");
    data.remove_prefix(n);
  }
  co_return absl::OkStatus();
}

Task<absl::Status> SendAllV(Process& self, int fd, std::vector<std::string_view> pieces,
                            absl::Time deadline) {
  size_t at = 0;  // The first piece not sent completely.
  while (true) {
    while (at < pieces.size() && pieces[at].empty()) ++at;
    if (at == pieces.size()) co_return absl::OkStatus();
    if (pieces.size() - at == 1) co_return co_await SendAll(self, fd, pieces[at], deadline);
    size_t count = std::min<size_t>(pieces.size() - at, 1024);
    std::vector<std::string_view> batch(pieces.begin() + at, pieces.begin() + at + count);
    ETSMGR_CO_ASSIGN_OR_RETURN(size_t sent,
                               co_await RunIo(self, SendVSpec(fd, std::move(batch)), deadline));
    if (sent == 0) co_return absl::InternalError("sendmsg: the socket took no bytes");
    while (sent > 0) {
      size_t take = std::min(sent, pieces[at].size());
      pieces[at].remove_prefix(take);
      sent -= take;
      if (pieces[at].empty()) ++at;
    }
  }
}

Task<absl::StatusOr<int>> ConnectTcp(Process& self, std::string host, uint16_t port,
                                     absl::Time deadline) {
  ETSMGR_CO_ASSIGN_OR_RETURN(SocketAddress address, ParseAddress(host, port));
  ETSMGR_CO_ASSIGN_OR_RETURN(int fd, TcpSocket(address.storage.ss_family));
  // Closed unless connected, also when the frame is destroyed while connecting.
  io_internal::FdGuard closer(fd);
  absl::Status connected = co_await Connect(self, fd, address, deadline);
  if (!connected.ok()) {
    co_return WithMessage(connected,
                          absl::StrCat(connected.message(), " (", address.ToString(), ")"));
  }
  closer.Release();
  co_return fd;
}

}  // namespace etsmgr
