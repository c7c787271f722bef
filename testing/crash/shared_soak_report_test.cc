// The soak's report of a failing seed: exit status 1, the seed named, and the command that
// replays it (the harness pretends a write was lost: --lose_a_write_for_test).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

extern char** environ;

namespace {

struct SoakRun {
  int status = -1;
  std::string output;
};

// Runs the soak with `args`, collecting its stdout and stderr for at most 60 s.
SoakRun RunSoak(const std::vector<std::string>& args) {
  const std::string soak = absl::StrCat(
      std::getenv("TEST_SRCDIR"), "/", std::getenv("TEST_WORKSPACE"), "/testing/crash/shared_soak");
  int out[2];
  EXPECT_EQ(pipe2(out, O_CLOEXEC), 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDERR_FILENO);
  std::vector<char*> argv = {const_cast<char*>(soak.c_str())};
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  SoakRun run;
  const int rc = posix_spawn(&pid, soak.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  EXPECT_EQ(rc, 0) << soak;
  if (rc != 0) return run;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{out[0], POLLIN, 0};
    if (poll(&p, 1, 1000) <= 0) continue;
    char buf[4096];
    const ssize_t n = read(out[0], buf, sizeof(buf));
    if (n <= 0) break;  // The soak is done.
    run.output.append(buf, static_cast<size_t>(n));
  }
  close(out[0]);
  // Past the deadline the soak is stopped, so that this wait ends (its status then says killed).
  if (std::chrono::steady_clock::now() >= deadline) kill(pid, SIGKILL);
  waitpid(pid, &run.status, 0);
  return run;
}

TEST(SharedSoakReportTest, AFailingSeedIsNamedWithItsReplayCommand) {
  SoakRun run =
      RunSoak({"--first_seed=4", "--kills=2", "--kills_per_seed=2", "--lose_a_write_for_test"});
  ASSERT_TRUE(WIFEXITED(run.status)) << run.output;
  EXPECT_EQ(WEXITSTATUS(run.status), 1) << run.output;
  EXPECT_NE(run.output.find("seed 4 FAILED (1 writer): round 0, writer 0: acknowledged up to op"),
            std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("replay: bazel run -c opt //testing/crash:shared_soak -- --seed=4 "
                            "--kills_per_seed=2"),
            std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("1 seed(s) FAILED"), std::string::npos) << run.output;
}

TEST(SharedSoakReportTest, ACleanRunPassesWithASummary) {
  SoakRun run = RunSoak({"--first_seed=4", "--kills=4", "--kills_per_seed=2"});
  ASSERT_TRUE(WIFEXITED(run.status)) << run.output;
  EXPECT_EQ(WEXITSTATUS(run.status), 0) << run.output;
  EXPECT_NE(run.output.find("shared_soak summary: 2 seeds, 4 kills"), std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("lost writes                  0"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("PASS"), std::string::npos) << run.output;
}

TEST(SharedSoakReportTest, BadArgumentsAreRefused) {
  SoakRun run = RunSoak({"--kills=many"});
  ASSERT_TRUE(WIFEXITED(run.status)) << run.output;
  EXPECT_EQ(WEXITSTATUS(run.status), 2) << run.output;
  EXPECT_NE(run.output.find("--kills wants a non-negative integer"), std::string::npos)
      << run.output;
}

}  // namespace
