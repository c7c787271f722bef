// The one place where errno values (including io_uring's negative `res`) become absl::Status.
//
//   if (fd < 0) return ErrnoToStatus(errno, "epoll_create1");
//   if (cqe->res < 0) return ErrnoToStatus(-cqe->res, "io_uring timeout");
//
// The message names the operation and the errno text: "io_uring_queue_init: Operation not
// permitted (EPERM)". Thread-safe (uses strerror_r).
#ifndef ETSMGR_BASE_ERRNO_STATUS_H_
#define ETSMGR_BASE_ERRNO_STATUS_H_

#include <string_view>

#include "absl/status/status.h"

namespace etsmgr {

// `error` is a positive errno value; 0 gives OkStatus().
absl::Status ErrnoToStatus(int error, std::string_view operation);

}  // namespace etsmgr

#endif  // ETSMGR_BASE_ERRNO_STATUS_H_
