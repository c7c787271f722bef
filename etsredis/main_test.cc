// The etsredis binary as an operator runs it: flags, the port on stdout, logs on stderr, serving
// redis-cli, and a clean stop on SIGTERM (exit 0); bad flags exit 2 with the usage.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "etsmgr/table/shared/test_names.h"
#include "gtest/gtest.h"

namespace {

std::string Binary() {
  const char* dir = std::getenv("TEST_SRCDIR");
  return absl::StrCat(dir != nullptr ? dir : ".", "/etsmgr/etsredis/etsredis");
}

struct Child {
  pid_t pid = -1;
  int out = -1;  // stdout
  int err = -1;  // stderr
};

Child Start(const std::vector<std::string>& args) {
  int out[2], err[2];
  EXPECT_EQ(::pipe2(out, O_CLOEXEC), 0);
  EXPECT_EQ(::pipe2(err, O_CLOEXEC), 0);
  Child c;
  c.pid = ::fork();
  if (c.pid < 0) {  // (Never go on with -1: a kill(-1, ...) would signal every process.)
    std::perror("fork");
    std::abort();
  }
  if (c.pid == 0) {
    ::dup2(out[1], 1);
    ::dup2(err[1], 2);
    std::vector<char*> argv;
    std::string bin = Binary();
    argv.push_back(bin.data());
    std::vector<std::string> copy = args;
    for (std::string& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(bin.c_str(), argv.data());
    ::_exit(127);
  }
  ::close(out[1]);
  ::close(err[1]);
  c.out = out[0];
  c.err = err[0];
  return c;
}

// Reads from `fd` until `want` appears in what was read, EOF, or 30 s.
std::string ReadUntil(int fd, const std::string& want) {
  std::string got;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (got.find(want) == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 1000) <= 0) continue;
    char buf[4096];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

// waitpid with a 30 s deadline, woken by the child's exit (a pidfd turns readable); the exit
// status, or -1 (then the child is killed).
int Wait(pid_t pid) {
  if (pid <= 0) {
    ADD_FAILURE() << "no child to wait for (fork failed)";
    return -1;
  }
  int status = 0;
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    // No pidfd here (an old kernel or a sandbox): check the child's state between short naps.
    for (int i = 0; i < 3000; ++i) {
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      pollfd none{-1, 0, 0};
      ::poll(&none, 0, 10);
    }
  }
  if (pidfd >= 0) {
    pollfd p{pidfd, POLLIN, 0};
    int ready;
    do {
      ready = ::poll(&p, 1, 30'000);
    } while (ready < 0 && errno == EINTR);
    ::close(pidfd);
    if (ready == 1 && ::waitpid(pid, &status, 0) == pid) {
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  return -1;
}

std::string Cli(int port, const std::string& args) {
  FILE* f = ::popen(absl::StrCat("/usr/bin/redis-cli -p ", port, " ", args, " 2>&1").c_str(), "r");
  std::string out;
  char buf[512];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  ::pclose(f);
  return out;
}

TEST(EtsredisMainTest, ServesAndStopsCleanlyOnSigterm) {
  for (const char* backend : {"io_uring", "epoll"}) {
    SCOPED_TRACE(backend);
    Child c = Start({"--port=0", absl::StrCat("--backend=", backend), "--shards=3"});
    std::string out = ReadUntil(c.out, "\n");
    const std::string prefix = "etsredis listening on 127.0.0.1:";
    size_t at = out.find(prefix);
    if (at == std::string::npos && std::string(backend) == "io_uring") {
      // io_uring may be blocked here (seccomp); the epoll run still counts.
      ::kill(c.pid, SIGKILL);
      Wait(c.pid);
      continue;
    }
    ASSERT_NE(at, std::string::npos) << out << ReadUntil(c.err, "\x01");
    int port = std::stoi(out.substr(at + prefix.size()));
    EXPECT_EQ(Cli(port, "SET k 1"), "OK\n");
    EXPECT_EQ(Cli(port, "INCR k"), "2\n");
    EXPECT_NE(Cli(port, "INFO server").find("etsredis_shards:3"), std::string::npos);
    ASSERT_EQ(::kill(c.pid, SIGTERM), 0);
    EXPECT_EQ(Wait(c.pid), 0);
    std::string err = ReadUntil(c.err, "stopped (OK)");
    EXPECT_NE(err.find("ready to accept connections"), std::string::npos) << err;
    EXPECT_NE(err.find("SIGTERM received: stopping"), std::string::npos) << err;
    EXPECT_NE(err.find("stopped (OK)"), std::string::npos) << err;
    ::close(c.out);
    ::close(c.err);
  }
}

// Starts etsredis with `args` and --port=0; the port it listens on, or -1.
int StartListening(Child& c, const std::vector<std::string>& args) {
  std::vector<std::string> all = args;
  all.push_back("--port=0");
  c = Start(all);
  std::string out = ReadUntil(c.out, "\n");
  const std::string prefix = "etsredis listening on 127.0.0.1:";
  size_t at = out.find(prefix);
  if (at == std::string::npos) return -1;
  return std::stoi(out.substr(at + prefix.size()));
}

// A client that pipelines "INCR hits" 16 at a time until the connection ends, counting what it
// sent and the replies it read; `Acked` waits (with a deadline) until `n` replies came.
class Incrementer {
 public:
  explicit Incrementer(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    thread_ = std::thread([this] { Run(); });
  }
  ~Incrementer() {
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  bool Acked(int64_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(30), [&] { return acked_ >= n || done_; }) &&
           acked_ >= n;
  }
  // Once the connection ended (the server was killed).
  std::pair<int64_t, int64_t> AckedAndSent() {
    thread_.join();
    thread_ = std::thread([] {});
    std::lock_guard<std::mutex> lock(mu_);
    return {acked_, sent_};
  }

 private:
  void Run() {
    std::string batch;
    for (int i = 0; i < 16; ++i) batch += "INCR hits\r\n";
    std::string in;
    while (connected_) {
      if (::send(fd_, batch.data(), batch.size(), MSG_NOSIGNAL) !=
          static_cast<ssize_t>(batch.size())) {
        break;
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        sent_ += 16;
      }
      int replies = 0;
      while (replies < 16) {
        char buf[512];
        ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
        if (n <= 0) break;
        in.append(buf, static_cast<size_t>(n));
        for (size_t at; (at = in.find("\r\n")) != std::string::npos; in.erase(0, at + 2)) {
          if (in[0] != ':') continue;
          ++replies;
          std::lock_guard<std::mutex> lock(mu_);
          ++acked_;
          cv_.notify_all();
        }
      }
      if (replies < 16) break;
    }
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    cv_.notify_all();
  }

  int fd_ = -1;
  bool connected_ = false;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t acked_ = 0;
  int64_t sent_ = 0;
  bool done_ = false;
};

// --shared: the keyspace lives in shared-memory segments, so a kill -9 of the whole server loses
// nothing acknowledged; the restarted server (same prefix, shard count, instance) has it all.
TEST(EtsredisMainTest, TheSharedModeSurvivesAKillNineOfTheServer) {
  // Unique across parallel runs: sandboxed tests repeat each other's pids.
  const std::string name = etsmgr::shared_testing::UniqueSegmentName("etsredis-test");
  // Whatever happens, the test leaves nothing in /dev/shm.
  struct RemoveSegments {
    std::string name;
    ~RemoveSegments() {
      for (int i = 0; i < 2; ++i) {
        const std::string segment = absl::StrCat(name, "-", i, "-of-2");
        ::unlink(absl::StrCat("/dev/shm/", segment).c_str());
        ::unlink(absl::StrCat("/dev/shm/.", segment, ".owner").c_str());
      }
      ::unlink(absl::StrCat("/dev/shm/etsmgr-directory-", name).c_str());
      ::unlink(absl::StrCat("/dev/shm/.etsmgr-directory-", name, ".owner").c_str());
    }
  } remove_segments{name};
  const std::vector<std::string> args = {"--shared=" + name, "--instance=" + name, "--shards=2",
                                         "--log=warning"};
  Child c;
  int port = StartListening(c, args);
  ASSERT_GT(port, 0) << ReadUntil(c.err, "\x01");
  EXPECT_EQ(Cli(port, "SET greeting hello"), "OK\n");
  for (int i = 1; i <= 3; ++i) EXPECT_EQ(Cli(port, "INCR hits"), absl::StrCat(i, "\n"));
  // Bounded keys and values: a clear error, nothing stored.
  EXPECT_NE(Cli(port, "SET " + std::string(201, 'k') + " v").find("at most 200 bytes per key"),
            std::string::npos);
  EXPECT_NE(Cli(port, "SET k " + std::string(1021, 'v')).find("at most 1020 bytes per value"),
            std::string::npos);
  EXPECT_EQ(Cli(port, "DBSIZE"), "2\n");
  // The kill comes while a client's INCRs are in flight.
  Incrementer load(port);
  ASSERT_TRUE(load.Acked(2000));
  ASSERT_EQ(::kill(c.pid, SIGKILL), 0);
  EXPECT_EQ(Wait(c.pid), 128 + SIGKILL);
  ::close(c.out);
  ::close(c.err);
  auto [acked, sent] = load.AckedAndSent();

  Child again;
  port = StartListening(again, args);
  ASSERT_GT(port, 0) << ReadUntil(again.err, "\x01");
  EXPECT_EQ(Cli(port, "GET greeting"), "hello\n");
  // Every acknowledged INCR is there (3 + acked), and none that was never sent.
  const int64_t hits = std::stoll(Cli(port, "GET hits"));
  EXPECT_GE(hits, 3 + acked);
  EXPECT_LE(hits, 3 + sent);
  EXPECT_EQ(Cli(port, "DBSIZE"), "2\n");
  // A server with another prefix on this instance is refused: it would serve a keyspace without
  // these tables.
  Child moved =
      Start({"--shared=" + name + "-moved", "--instance=" + name, "--shards=2", "--port=0"});
  EXPECT_NE(Wait(moved.pid), 0);
  EXPECT_NE(ReadUntil(moved.err, "prefix").find("with another prefix"), std::string::npos);
  ::close(moved.out);
  ::close(moved.err);
  // A server with another shard count on those tables is refused (its keys would be misplaced).
  Child other = Start({"--shared=" + name, "--instance=" + name, "--shards=3", "--port=0"});
  EXPECT_NE(Wait(other.pid), 0);
  EXPECT_NE(ReadUntil(other.err, "shard count").find("another shard count"), std::string::npos);
  ::close(other.out);
  ::close(other.err);
  // A clean stop (the segments stay for the next start; the guard removes them).
  ASSERT_EQ(::kill(again.pid, SIGTERM), 0);
  EXPECT_EQ(Wait(again.pid), 0);
  ::close(again.out);
  ::close(again.err);
}

TEST(EtsredisMainTest, BadFlagsExitWithTheUsage) {
  for (const char* flag : {"--port=70000", "--shards=x", "--backend=kqueue", "--nope",
                           "--shared=", "--max-request-buffer=10", "--log=loud"}) {
    SCOPED_TRACE(flag);
    Child c = Start({flag});
    EXPECT_EQ(Wait(c.pid), 2);
    std::string err = ReadUntil(c.err, "usage:");
    EXPECT_NE(err.find("usage: etsredis"), std::string::npos) << err;
    ::close(c.out);
    ::close(c.err);
  }
}

}  // namespace
