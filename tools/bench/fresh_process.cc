#include "tools/bench/fresh_process.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tools/bench/report.h"

extern char** environ;

namespace etsmgr::bench {

absl::StatusOr<Figures> RunFresh(const std::string& role) {
  int out[2];
  if (pipe(out) != 0) return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  std::string flag = "--fresh_child=" + role;
  std::string smoke = "--smoke";
  char exe[] = "/proc/self/exe";
  char* child_argv[] = {exe, flag.data(), Smoke() ? smoke.data() : nullptr, nullptr};
  pid_t pid;
  int err = posix_spawn(&pid, exe, &actions, nullptr, child_argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  if (err != 0) {
    close(out[0]);
    return absl::InternalError(absl::StrCat("posix_spawn: ", std::strerror(err)));
  }
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = read(out[0], buf, sizeof(buf))) > 0) text.append(buf, static_cast<size_t>(n));
  close(out[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat("fresh child \"", role, "\" failed: ", text));
  }
  Figures figures;
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(at, end - at);
    at = end + 1;
    size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    figures[line.substr(0, eq)] = std::strtod(line.c_str() + eq + 1, nullptr);
  }
  return figures;
}

bool FreshChild(int argc, char** argv, const std::map<std::string, Measurement>& roles, int* rc) {
  constexpr std::string_view kFlag = "--fresh_child=";
  for (int a = 1; a < argc; ++a) {
    if (std::string_view(argv[a]) == "--smoke") EnableSmoke();
  }
  for (int a = 1; a < argc; ++a) {
    std::string_view arg = argv[a];
    if (arg.substr(0, kFlag.size()) != kFlag) continue;
    auto it = roles.find(std::string(arg.substr(kFlag.size())));
    if (it == roles.end()) {
      std::fprintf(stderr, "unknown --fresh_child role \"%s\"\n", argv[a]);
      *rc = 2;
      return true;
    }
    Figures figures = it->second();
    for (const auto& [name, value] : figures) std::printf("%s=%.17g\n", name.c_str(), value);
    std::fflush(stdout);
    *rc = 0;
    return true;
  }
  return false;
}

}  // namespace etsmgr::bench
