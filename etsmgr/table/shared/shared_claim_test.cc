// SharedClaim: one live program per name; a dead program's claim is free at once (the kernel
// releases the lock), a live one's is AlreadyExists; bad names and planted files are refused.
#include "etsmgr/table/shared/shared_claim.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "etsmgr/table/shared/test_names.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

class SharedClaimTest : public ::testing::Test {
 protected:
  void SetUp() override {
    name_ = shared_testing::UniqueSegmentName("etsmgr-claim-test");
    const char* dir = std::getenv("TEST_TMPDIR");
    options_.directory = dir != nullptr ? dir : "/tmp";
  }
  void TearDown() override { unlink(Path().c_str()); }
  std::string Path() const { return absl::StrCat(options_.directory, "/.", name_, ".owner"); }

  // Forks a program that claims the name, reports through a pipe, and waits to be killed. With
  // `as_parent`, the lock file then says the parent's pid, as a program in another pid namespace
  // with the same pid number would write.
  pid_t ForkHolder(bool as_parent = false) {
    int fds[2];
    EXPECT_EQ(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
      close(fds[0]);
      absl::StatusOr<SharedClaim> claim = SharedClaim::Acquire(name_, options_);
      bool ok_claim = claim.ok();
      if (ok_claim && as_parent) {
        const std::string pid = absl::StrCat(getppid(), "\n");
        const int fd = open(Path().c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
        ok_claim = fd >= 0 && write(fd, pid.data(), pid.size()) == static_cast<ssize_t>(pid.size());
        if (fd >= 0) close(fd);
      }
      const char ok = ok_claim ? '1' : '0';
      if (write(fds[1], &ok, 1) != 1) _exit(2);
      pause();
      _exit(0);
    }
    close(fds[1]);
    char ok = 0;
    EXPECT_EQ(read(fds[0], &ok, 1), 1);  // Blocks until the child has claimed.
    EXPECT_EQ(ok, '1');
    close(fds[0]);
    return pid;
  }

  std::string name_;
  SharedMapOptions options_;
};

TEST_F(SharedClaimTest, OneHolderAtATimeInOneProgram) {
  absl::StatusOr<SharedClaim> first = SharedClaim::Acquire(name_, options_);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(first->held());
  absl::StatusOr<SharedClaim> second = SharedClaim::Acquire(name_, options_);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kAlreadyExists) << second.status();
  EXPECT_NE(second.status().message().find("this program"), std::string::npos) << second.status();
  first->Release();
  EXPECT_FALSE(first->held());
  EXPECT_TRUE(SharedClaim::Acquire(name_, options_).ok());
}

TEST_F(SharedClaimTest, ALiveProgramHoldsItAKilledOneLetsGo) {
  EXPECT_FALSE(SharedClaim::HeldByAnyone(name_, options_).value());  // No lock file yet...
  struct stat st;
  EXPECT_NE(stat(Path().c_str(), &st), 0);  // ... and the probe made none.
  pid_t holder = ForkHolder();
  EXPECT_TRUE(SharedClaim::HeldByAnyone(name_, options_).value());
  absl::StatusOr<SharedClaim> taken = SharedClaim::Acquire(name_, options_);
  EXPECT_EQ(taken.status().code(), absl::StatusCode::kAlreadyExists) << taken.status();
  EXPECT_NE(taken.status().message().find(absl::StrCat("pid ", holder)), std::string::npos)
      << taken.status();
  ASSERT_EQ(kill(holder, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(holder, &status, 0), holder);
  ASSERT_TRUE(WIFSIGNALED(status));
  // The kernel released the dead program's lock: no pid is consulted, so a reused pid is
  // harmless.
  EXPECT_FALSE(SharedClaim::HeldByAnyone(name_, options_).value());
  absl::StatusOr<SharedClaim> mine = SharedClaim::Acquire(name_, options_);
  EXPECT_TRUE(mine.ok()) << mine.status();
  EXPECT_TRUE(SharedClaim::HeldByAnyone(name_, options_).value());  // This program, too.
  EXPECT_TRUE(mine->held());  // The probe did not take it away.
}

// "This program" in a refusal comes from the claims this program holds, not from the pid in the
// lock file: a program in another pid namespace (a container, a sandboxed test) can have our pid.
TEST_F(SharedClaimTest, AnotherProgramWithOurPidIsNotThisProgram) {
  pid_t holder = ForkHolder(/*as_parent=*/true);
  absl::StatusOr<SharedClaim> taken = SharedClaim::Acquire(name_, options_);
  EXPECT_EQ(taken.status().code(), absl::StatusCode::kAlreadyExists) << taken.status();
  EXPECT_NE(taken.status().message().find(absl::StrCat("pid ", getpid())), std::string::npos)
      << "the file says our pid: " << taken.status();
  EXPECT_EQ(taken.status().message().find("this program"), std::string::npos) << taken.status();
  ASSERT_EQ(kill(holder, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(holder, &status, 0), holder);
}

TEST_F(SharedClaimTest, RemoveUnlinksTheLockFile) {
  absl::StatusOr<SharedClaim> claim = SharedClaim::Acquire(name_, options_);
  ASSERT_TRUE(claim.ok());
  struct stat st;
  ASSERT_EQ(stat(Path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  claim->Remove();
  EXPECT_NE(stat(Path().c_str(), &st), 0);
  EXPECT_FALSE(claim->held());
  ASSERT_TRUE(SharedClaim::Acquire(name_, options_).ok());  // Made again, released at once.
  ASSERT_EQ(stat(Path().c_str(), &st), 0);
  EXPECT_TRUE(SharedClaim::RemoveFile(name_, options_).ok());
  EXPECT_NE(stat(Path().c_str(), &st), 0);
  EXPECT_EQ(SharedClaim::RemoveFile(name_, options_).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(SharedClaim::RemoveFile("../x", options_).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SharedClaimTest, BadNamesAndPlantedFilesAreRefused) {
  for (const char* bad : {"", "../x", "a/b", ".hidden", "sp ace"}) {
    EXPECT_EQ(SharedClaim::Acquire(bad, options_).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
  ASSERT_EQ(symlink("/etc/passwd", Path().c_str()), 0);
  absl::StatusOr<SharedClaim> link = SharedClaim::Acquire(name_, options_);
  EXPECT_EQ(link.status().code(), absl::StatusCode::kFailedPrecondition) << link.status();
  ASSERT_EQ(unlink(Path().c_str()), 0);
  ASSERT_EQ(mkdir(Path().c_str(), 0700), 0);
  absl::StatusOr<SharedClaim> dir = SharedClaim::Acquire(name_, options_);
  EXPECT_FALSE(dir.ok());
  ASSERT_EQ(rmdir(Path().c_str()), 0);
  // Readable by others: somebody else made it, or widened it.
  FILE* f = fopen(Path().c_str(), "w");
  ASSERT_NE(f, nullptr);
  fclose(f);
  ASSERT_EQ(chmod(Path().c_str(), 0644), 0);
  absl::StatusOr<SharedClaim> wide = SharedClaim::Acquire(name_, options_);
  EXPECT_EQ(wide.status().code(), absl::StatusCode::kFailedPrecondition) << wide.status();
}

// A probe (HeldByAnyone, what the manager's info() asks of every shared table) never makes a
// concurrent claim fail: it used to take the lock for a moment (flock), and an Acquire landing
// then answered AlreadyExists though no program held the name.
TEST_F(SharedClaimTest, AProbeNeverMakesAClaimFail) {
  std::atomic<bool> done{false};
  std::atomic<uint64_t> probes{0};
  std::thread prober([&] {
    while (!done.load()) {
      absl::StatusOr<bool> held = SharedClaim::HeldByAnyone(name_, options_);
      EXPECT_TRUE(held.ok()) << held.status();
      probes.fetch_add(1);
    }
  });
  int refused = 0;
  int overlapped = 0;  // claims during which the prober probed at least once
  for (int i = 0; i < 20000 && overlapped < 2000; ++i) {
    const uint64_t before = probes.load();
    absl::StatusOr<SharedClaim> claim = SharedClaim::Acquire(name_, options_);
    if (!claim.ok()) ++refused;
    if (probes.load() != before) ++overlapped;
  }
  done.store(true);
  prober.join();
  EXPECT_EQ(refused, 0) << "claims refused while nobody held the name";
  EXPECT_GT(overlapped, 0) << "the probes never ran during a claim: the race was not exercised";
}

}  // namespace
}  // namespace etsmgr
