// Which kernel interface a scheduler waits on: io_uring, or epoll + eventfd + timerfd.
//
// io_uring can be unavailable: Docker's default seccomp profile answers io_uring_setup with EPERM,
// old kernels with ENOSYS, and `kernel.io_uring_disabled` can forbid it. The runtime probes once
// with a real ring (setup plus a NOP round trip) and falls back to epoll when that fails; both
// backends behave the same.
//
//   absl::StatusOr<Backend> b = ChooseBackend(BackendPreference::kAuto);
//   // b == Backend::kIoUring on a normal kernel, Backend::kEpoll under seccomp.
//
// The environment variable ETSMGR_BACKEND (`io_uring`, `epoll` or `auto`) overrides kAuto, so a
// whole test suite can be run on either backend without recompiling.
//
// Thread safety: all functions may be called from any thread. ProbeIoUring() caches its result
// after the first call.
#ifndef ETSMGR_EXECUTOR_BACKEND_H_
#define ETSMGR_EXECUTOR_BACKEND_H_

#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace etsmgr {

enum class Backend { kIoUring, kEpoll };

enum class BackendPreference {
  kAuto,     // io_uring when the probe succeeds, else epoll (ETSMGR_BACKEND may override).
  kIoUring,  // io_uring or an error: never silently falls back.
  kEpoll,    // always epoll.
};

// "io_uring" or "epoll".
std::string_view BackendName(Backend backend);

// OK when this process can set up an io_uring ring and complete a NOP through it; otherwise the
// reason, e.g. PermissionDenied "io_uring_queue_init: Operation not permitted (EPERM)".
absl::Status ProbeIoUring();

// Parses "auto", "io_uring" or "epoll"; anything else is InvalidArgument naming the text.
absl::StatusOr<BackendPreference> ParseBackendPreference(std::string_view text);

// Resolves a preference to the backend to run. kAuto consults ETSMGR_BACKEND, then the probe;
// when it falls back it logs one warning line with the probe's reason (once per process).
// kIoUring fails with the probe's status when io_uring is unavailable.
absl::StatusOr<Backend> ChooseBackend(BackendPreference preference);

}  // namespace etsmgr

#endif  // ETSMGR_EXECUTOR_BACKEND_H_
