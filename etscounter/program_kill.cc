// RunProgramKill (shell.h): the whole etscounter program killed with SIGKILL and started again.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "etscounter/shell.h"
#include "etsmgr/base/errno_status.h"
#include "etsmgr/table/shared/shared_claim.h"
#include "etsmgr/table/shared/shared_map.h"

extern char** environ;

namespace etscounter {
namespace {

// A child etscounter program: commands on its stdin, its stdout and stderr read line by line.
class ChildProgram {
 public:
  ChildProgram(StreamLogSink& out, std::string label) : out_(out), label_(std::move(label)) {}
  ~ChildProgram() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (in_ >= 0) close(in_);
    if (from_ >= 0) close(from_);
  }

  absl::Status Start(const std::string& program, const std::vector<std::string>& args) {
    int to_child[2], from_child[2];
    if (pipe2(to_child, O_CLOEXEC) != 0 || pipe2(from_child, O_CLOEXEC) != 0) {
      return etsmgr::ErrnoToStatus(errno, "etscounter: pipe");
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, to_child[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, from_child[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, from_child[1], STDERR_FILENO);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(program.c_str()));
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const int rc = posix_spawn(&pid_, program.c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(to_child[0]);
    close(from_child[1]);
    in_ = to_child[1];
    from_ = from_child[0];
    if (rc != 0) {
      pid_ = -1;
      return etsmgr::ErrnoToStatus(rc, absl::StrCat("etscounter: start ", program));
    }
    return absl::OkStatus();
  }

  absl::Status Send(const std::string& command) {
    const std::string line = command + "\n";
    if (write(in_, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
      return etsmgr::ErrnoToStatus(errno, absl::StrCat("etscounter: send \"", command, "\""));
    }
    return absl::OkStatus();
  }

  // Echoes the child's lines until one contains `needle` (returned); DeadlineExceeded at
  // `deadline`, Unavailable if the child's output ends first.
  absl::StatusOr<std::string> AwaitLine(const std::string& needle, absl::Time deadline) {
    while (true) {
      for (size_t nl; (nl = pending_.find('\n')) != std::string::npos;) {
        std::string line = pending_.substr(0, nl);
        pending_.erase(0, nl + 1);
        out_.Print(absl::StrCat("  ", label_, " | ", line));
        if (line.find(needle) != std::string::npos) return line;
      }
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) {
        return absl::DeadlineExceededError(
            absl::StrCat("etscounter: ", label_, " printed no \"", needle, "\" in time"));
      }
      pollfd p{from_, POLLIN, 0};
      const int ready = poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
      if (ready < 0 && errno != EINTR) return etsmgr::ErrnoToStatus(errno, "etscounter: poll");
      if (ready <= 0) continue;
      char buf[4096];
      const ssize_t n = read(from_, buf, sizeof(buf));
      if (n <= 0) {
        return absl::UnavailableError(
            absl::StrCat("etscounter: ", label_, " ended before printing \"", needle, "\""));
      }
      pending_.append(buf, static_cast<size_t>(n));
    }
  }

  absl::Status KillNine() {
    if (kill(pid_, SIGKILL) != 0) return etsmgr::ErrnoToStatus(errno, "etscounter: kill");
    int status = 0;
    if (waitpid(pid_, &status, 0) != pid_) return etsmgr::ErrnoToStatus(errno, "waitpid");
    pid_ = -1;
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
      return absl::InternalError(absl::StrCat("etscounter: ", label_,
                                              " was not killed by "
                                              "SIGKILL (status ",
                                              status, ")"));
    }
    return absl::OkStatus();
  }

  // Ends the child's input (a clean shutdown) and waits for it.
  absl::Status Quit() {
    close(in_);
    in_ = -1;
    int status = 0;
    if (waitpid(pid_, &status, 0) != pid_) return etsmgr::ErrnoToStatus(errno, "waitpid");
    pid_ = -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      return absl::InternalError(absl::StrCat("etscounter: ", label_, " exited with ", status));
    }
    return absl::OkStatus();
  }

  pid_t pid() const { return pid_; }

 private:
  StreamLogSink& out_;
  const std::string label_;
  pid_t pid_ = -1;
  int in_ = -1;
  int from_ = -1;
  std::string pending_;
};

// The count in a check line ("... Data [{count,3}].").
absl::StatusOr<int64_t> CountIn(const std::string& line) {
  const std::string marker = "[{count,";
  const size_t at = line.find(marker);
  const size_t end = at == std::string::npos ? at : line.find('}', at);
  int64_t v;
  if (end == std::string::npos ||
      !absl::SimpleAtoi(line.substr(at + marker.size(), end - at - marker.size()), &v)) {
    return absl::InternalError(absl::StrCat("etscounter: no count in \"", line, "\""));
  }
  return v;
}

}  // namespace

absl::StatusOr<ProgramKillResult> RunProgramKill(StreamLogSink& out, const std::string& program,
                                                 const std::string& segment, int counts,
                                                 absl::Duration timeout) {
  ProgramKillResult result;
  // The children's manager instance is named after the segment: its directory of shared tables
  // (/dev/shm/etsmgr-directory-<segment>) goes at the end with the segment.
  const std::vector<std::string> args = {"--shell", "--shared=" + segment, "--instance=" + segment};
  {
    ChildProgram first(out, "program 1");
    if (absl::Status st = first.Start(program, args); !st.ok()) return st;
    out.Print(absl::StrCat("    started program 1 (pid ", first.pid(), ") in shared mode, segment ",
                           segment));
    for (int i = 0; i < counts; ++i) {
      if (absl::Status st = first.Send("count"); !st.ok()) return st;
      absl::StatusOr<std::string> line =
          first.AwaitLine(absl::StrCat("Counter ", i + 1, "."), absl::Now() + timeout);
      if (!line.ok()) return line.status();
    }
    result.before = counts;
    out.Print(absl::StrCat("    kill -9 ", first.pid(),
                           ": the whole program (runtime, manager, "
                           "counter) dies at once"));
    const absl::Time killed = absl::Now();
    if (absl::Status st = first.KillNine(); !st.ok()) return st;

    ChildProgram second(out, "program 2");
    if (absl::Status st = second.Start(program, args); !st.ok()) return st;
    out.Print(absl::StrCat("    started program 2 (pid ", second.pid(), "); check:"));
    if (absl::Status st = second.Send("check"); !st.ok()) return st;
    absl::StatusOr<std::string> line = second.AwaitLine("Data [", absl::Now() + timeout);
    if (!line.ok()) return line.status();
    result.kill_to_check = absl::Now() - killed;
    absl::StatusOr<int64_t> after = CountIn(*line);
    if (!after.ok()) return after.status();
    result.after = *after;
    if (absl::Status st = second.Quit(); !st.ok()) return st;
  }
  // The demo's segment goes (a user's would stay: that is the point).
  etsmgr::SharedMapOptions where;
  (void)etsmgr::SharedMap<CounterKey, int64_t>::Remove(segment, where);
  (void)etsmgr::SharedClaim::RemoveFile(segment, where);
  (void)etsmgr::shared_internal::MapCore::Remove("etsmgr-directory-" + segment, where);
  if (result.after != result.before) {
    return absl::DataLossError(absl::StrCat("etscounter: the count was ", result.before,
                                            " before the kill and ", result.after, " after"));
  }
  return result;
}

}  // namespace etscounter
