#include "etsmgr/executor/backend.h"

#include <liburing.h>

#include <atomic>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "etsmgr/base/errno_status.h"
#include "etsmgr/base/log.h"

namespace etsmgr {
namespace {

absl::Status RunProbe() {
  io_uring ring;
  int rc = io_uring_queue_init(4, &ring, 0);
  if (rc < 0) return ErrnoToStatus(-rc, "io_uring_queue_init");
  absl::Status status;
  io_uring_sqe* sqe = io_uring_get_sqe(&ring);
  io_uring_prep_nop(sqe);
  rc = io_uring_submit(&ring);
  if (rc < 0) {
    status = ErrnoToStatus(-rc, "io_uring_submit(NOP)");
  } else {
    io_uring_cqe* cqe = nullptr;
    rc = io_uring_wait_cqe(&ring, &cqe);
    if (rc < 0) {
      status = ErrnoToStatus(-rc, "io_uring_wait_cqe(NOP)");
    } else {
      if (cqe->res < 0) status = ErrnoToStatus(-cqe->res, "io_uring NOP");
      io_uring_cqe_seen(&ring, cqe);
    }
  }
  io_uring_queue_exit(&ring);
  return status;
}

}  // namespace

std::string_view BackendName(Backend backend) {
  return backend == Backend::kIoUring ? "io_uring" : "epoll";
}

absl::Status ProbeIoUring() {
  static const absl::Status* const result = new absl::Status(RunProbe());
  return *result;
}

absl::StatusOr<BackendPreference> ParseBackendPreference(std::string_view text) {
  if (text == "auto") return BackendPreference::kAuto;
  if (text == "io_uring") return BackendPreference::kIoUring;
  if (text == "epoll") return BackendPreference::kEpoll;
  return absl::InvalidArgumentError(absl::StrCat("unknown executor backend \"",
                                                 absl::string_view(text.data(), text.size()),
                                                 "\": expected auto, io_uring or epoll"));
}

absl::StatusOr<Backend> ChooseBackend(BackendPreference preference) {
  if (preference == BackendPreference::kAuto) {
    if (const char* env = std::getenv("ETSMGR_BACKEND"); env != nullptr && *env != '\0') {
      absl::StatusOr<BackendPreference> from_env = ParseBackendPreference(env);
      if (!from_env.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("ETSMGR_BACKEND: ", from_env.status().message()));
      }
      preference = *from_env;
    }
  }
  switch (preference) {
    case BackendPreference::kEpoll:
      return Backend::kEpoll;
    case BackendPreference::kIoUring: {
      absl::Status probe = ProbeIoUring();
      if (!probe.ok()) {
        return absl::Status(
            probe.code(),
            absl::StrCat("io_uring backend requested but unavailable: ", probe.message()));
      }
      return Backend::kIoUring;
    }
    case BackendPreference::kAuto:
      break;
  }
  absl::Status probe = ProbeIoUring();
  if (probe.ok()) return Backend::kIoUring;
  static std::atomic<bool> warned{false};
  if (!warned.exchange(true)) {
    Logf(LogLevel::kWarning, "io_uring unavailable (%s); executor falls back to epoll",
         probe.message());
  }
  return Backend::kEpoll;
}

}  // namespace etsmgr
