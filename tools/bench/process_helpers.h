// Helpers for benchmarks that run processes: a node of N schedulers, and running a process body
// to its end from the benchmark's thread.
#ifndef ETSMGR_TOOLS_BENCH_PROCESS_HELPERS_H_
#define ETSMGR_TOOLS_BENCH_PROCESS_HELPERS_H_

#include <functional>
#include <future>
#include <memory>
#include <utility>

#include "etsmgr/process/node.h"

namespace etsmgr::bench {

inline std::unique_ptr<Node> MakeNode(int schedulers) {
  RuntimeOptions options;
  options.schedulers = schedulers;
  return Node::Create(options).value();
}

// Runs `body` as a process and waits until it returns. The body's captures (references to the
// caller's locals included) stay valid: the caller waits.
inline void RunInProcess(Node& node, std::function<Task<void>(Process&)> body,
                         SpawnOptions options = {}) {
  auto done = std::make_shared<std::promise<void>>();
  std::future<void> finished = done->get_future();
  node.Spawn(
          [body = std::move(body), done](Process& self) -> Task<void> {
            co_await body(self);
            done->set_value();
          },
          std::move(options))
      .value();
  finished.wait();
}

}  // namespace etsmgr::bench

#endif  // ETSMGR_TOOLS_BENCH_PROCESS_HELPERS_H_
