// A consumer of @etsmgr//etsmgr: picks the executor backend and logs through the sink.
#include <cstdio>
#include <string>

#include "etsmgr/base/log.h"
#include "etsmgr/executor/backend.h"

int main() {
  absl::StatusOr<etsmgr::Backend> backend = etsmgr::ChooseBackend(etsmgr::BackendPreference::kAuto);
  if (!backend.ok()) {
    std::fprintf(stderr, "%s\n", std::string(backend.status().message()).c_str());
    return 1;
  }
  etsmgr::Logf(etsmgr::LogLevel::kNotice, "consumer: etsmgr linked, executor backend %s",
               std::string(etsmgr::BackendName(*backend)));
  std::printf("consumer ok\n");
  return 0;
}
