#include "etsmgr/executor/io_op.h"

#include <fcntl.h>
#include <sys/stat.h>

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

FileIoMode FileIoModeOf(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || (flags & O_NONBLOCK) != 0) return kFileIoDirect;
  struct stat st;
  if (::fstat(fd, &st) != 0 || S_ISREG(st.st_mode) || S_ISDIR(st.st_mode) || S_ISBLK(st.st_mode)) {
    return kFileIoDirect;
  }
  return S_ISSOCK(st.st_mode) ? kFileIoSocketDontWait : kFileIoPollFirst;
}

void IoOp::CancelRunnable::Run() noexcept {
  op_->owner->CancelIo(op_);  // Now on the owner's thread: cancels directly.
  op_->Unref();
}

}  // namespace etsmgr
