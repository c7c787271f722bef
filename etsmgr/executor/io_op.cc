#include "etsmgr/executor/io_op.h"

#include "etsmgr/executor/scheduler.h"

namespace etsmgr {

const char* IoKindName(IoKind kind) {
  switch (kind) {
    case IoKind::kAccept:
      return "accept";
    case IoKind::kConnect:
      return "connect";
    case IoKind::kRecv:
      return "recv";
    case IoKind::kSend:
      return "send";
    case IoKind::kRecvMsg:
      return "recvmsg";
    case IoKind::kSendMsg:
      return "sendmsg";
    case IoKind::kRead:
      return "read";
    case IoKind::kWrite:
      return "write";
    case IoKind::kReadV:
      return "readv";
    case IoKind::kWriteV:
      return "writev";
    case IoKind::kClose:
      return "close";
    case IoKind::kPoll:
      return "poll";
  }
  return "io";
}

void IoOp::CancelRunnable::Run() noexcept {
  op_->owner->CancelIo(op_);  // Now on the owner's thread: cancels directly.
  op_->Unref();
}

}  // namespace etsmgr
