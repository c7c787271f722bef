// Prints the executor backend this machine supports: io_uring, or epoll and why.
#include <cstdio>
#include <string>

#include "etsmgr/executor/backend.h"

int main() {
  absl::Status probe = etsmgr::ProbeIoUring();
  absl::StatusOr<etsmgr::Backend> chosen = etsmgr::ChooseBackend(etsmgr::BackendPreference::kAuto);
  if (!chosen.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(chosen.status().message()).c_str());
    return 1;
  }
  std::printf("io_uring probe: %s\n", probe.ok() ? "ok" : std::string(probe.message()).c_str());
  std::printf("executor backend: %s\n", std::string(etsmgr::BackendName(*chosen)).c_str());
  return 0;
}
