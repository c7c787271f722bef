// Helpers for benchmarks that run processes: a node of N schedulers, and running a process body
// to its end from the benchmark's thread.
#ifndef ETSMGR_TOOLS_BENCH_PROCESS_HELPERS_H_
#define ETSMGR_TOOLS_BENCH_PROCESS_HELPERS_H_

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "etsmgr/process/node.h"

namespace etsmgr::bench {

inline std::unique_ptr<Node> MakeNode(int schedulers) {
  RuntimeOptions options;
  options.schedulers = schedulers;
  return Node::Create(options).value();
}

// Runs `body` as a process and waits until it returns (Node::Run). The body's captures
// (references to the caller's locals included) stay valid: the caller waits. Aborts the
// benchmark if the body could not run to its end.
inline void RunInProcess(Node& node, std::function<Task<void>(Process&)> body,
                         SpawnOptions options = {}) {
  absl::Status done = node.Run(std::move(body), std::move(options));
  if (!done.ok()) {
    std::fprintf(stderr, "RunInProcess: %s\n", done.ToString().c_str());
    std::abort();
  }
}

}  // namespace etsmgr::bench

#endif  // ETSMGR_TOOLS_BENCH_PROCESS_HELPERS_H_
