// The etscounter shell: commands from a stream (a terminal or a pipe), log lines with timestamps
// and levels as in Erlang's logger, and the scripted demo of the seed's example run.
//
// Commands: count, check, die, kill, kill-manager, info, help, quit. An unknown command prints a
// one-line error and the shell goes on; end of input (or quit) shuts down cleanly.
#ifndef ETSCOUNTER_SHELL_H_
#define ETSCOUNTER_SHELL_H_

#include <istream>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "etscounter/counter.h"
#include "etsmgr/base/log.h"
#include "etsmgr/process/node.h"

namespace etscounter {

// Writes log records as "2019-06-24T19:06:33.189959+01:00 notice: message" to a stream shared
// with the shell's own output (one lock for both, so lines never interleave).
class StreamLogSink : public etsmgr::LogSink {
 public:
  explicit StreamLogSink(std::ostream& out) : out_(out) {}
  void Write(const etsmgr::LogRecord& record) override;
  // Prints a line of the shell's own output under the same lock.
  void Print(const std::string& line);
  // Prints `prompt` without a newline.
  void Prompt(const std::string& prompt);

 private:
  std::mutex mu_;
  std::ostream& out_;
};

// A node running the manager (standalone, default instance) and the counter, with a log sink
// writing to `out`. The sink is installed for the node's lifetime. `storage`: where the counter's
// table lives (counter.h).
class App {
 public:
  static absl::StatusOr<std::unique_ptr<App>> Start(std::ostream& out,
                                                    const StorageOptions& storage = {});
  ~App();

  CounterClient& client() { return *client_; }
  StreamLogSink& sink() { return sink_; }
  etsmgr::Node& node() { return *node_; }

 private:
  explicit App(std::ostream& out) : sink_(out) {}
  StreamLogSink sink_;
  etsmgr::LogSink* previous_sink_ = nullptr;
  std::unique_ptr<etsmgr::Node> node_;
  std::unique_ptr<CounterClient> client_;
};

// Runs commands from `in` until end of input or quit; 0 on a clean shutdown. `interactive` prints
// a prompt before each command.
int RunShell(App& app, std::istream& in, bool interactive);

// The seed's example run as a script; prints each step, what crashed and what recovered, and a
// final summary line. Returns the final count, or an error naming the step that went wrong.
absl::StatusOr<int64_t> RunDemo(App& app);

// The demo's last step, the crash of the whole program: runs `program` (this etscounter binary)
// as a child in shared mode on `segment`, counts `counts` times, kills it with SIGKILL, starts it
// again and asks `check`, which must show the count it had. Prints each step to `out` (the child's
// lines prefixed with "  | "). Each wait is bounded by `timeout`. Removes the segment at the end.
struct ProgramKillResult {
  int64_t before = -1;           // the count the killed program had acknowledged
  int64_t after = -1;            // what `check` showed after the restart
  absl::Duration kill_to_check;  // from the SIGKILL to the restarted program's check answer
};
absl::StatusOr<ProgramKillResult> RunProgramKill(StreamLogSink& out, const std::string& program,
                                                 const std::string& segment, int counts,
                                                 absl::Duration timeout = absl::Seconds(20));

}  // namespace etscounter

#endif  // ETSCOUNTER_SHELL_H_
