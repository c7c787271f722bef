#include "etsmgr/base/errno_status.h"

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace etsmgr {
namespace {

absl::StatusCode CodeFor(int error) {
  switch (error) {
    case EPERM:
    case EACCES:
      return absl::StatusCode::kPermissionDenied;
    case ENOSYS:
    case EOPNOTSUPP:
      return absl::StatusCode::kUnimplemented;
    case EINVAL:
    case EBADF:
    case EFAULT:
      return absl::StatusCode::kInvalidArgument;
    case ENOENT:
      return absl::StatusCode::kNotFound;
    case EEXIST:
      return absl::StatusCode::kAlreadyExists;
    case ENOMEM:
    case EMFILE:
    case ENFILE:
    case ENOBUFS:
    case EBUSY:
      return absl::StatusCode::kResourceExhausted;
    case ETIME:
    case ETIMEDOUT:
      return absl::StatusCode::kDeadlineExceeded;
    case ECANCELED:
      return absl::StatusCode::kCancelled;
    case EAGAIN:
    case EINTR:
      return absl::StatusCode::kUnavailable;
    default:
      return absl::StatusCode::kInternal;
  }
}

}  // namespace

absl::Status ErrnoToStatus(int error, std::string_view operation) {
  if (error == 0) return absl::OkStatus();
  char buffer[128];
  // GNU strerror_r returns the message, which may or may not live in `buffer`.
  const char* text = strerrordesc_np(error);
  if (text == nullptr) text = strerror_r(error, buffer, sizeof buffer);
  const char* name = strerrorname_np(error);
  return absl::Status(
      CodeFor(error),
      absl::StrCat(absl::string_view(operation.data(), operation.size()), ": ", text, " (",
                   name != nullptr ? name : absl::StrCat("errno ", error), ")"));
}

}  // namespace etsmgr
