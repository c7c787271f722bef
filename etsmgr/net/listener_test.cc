// The supervised listener on both backends: connections served by their own processes, the
// descriptor closed whatever ends the connection, an acceptor restarted on the same socket,
// the connection cap, and a stop that closes everything.
#include "etsmgr/net/listener.h"

#include <dirent.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "etsmgr/executor/testing/test_backends.h"
#include "etsmgr/executor/testing/test_sockets.h"
#include "etsmgr/process/io.h"
#include "etsmgr/process/testing/test_util.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

using ::etsmgr::test_sockets::Dial;
using ::etsmgr::test_sockets::OpenFds;

std::string RecvSome(int fd) {
  char buf[256];
  ssize_t n;
  // EINTR: a blocking call with a timeout is interrupted by any pending notification, io_uring's
  // task work included (rings torn down by earlier tests): retry.
  do {
    n = ::recv(fd, buf, sizeof buf, 0);
  } while (n < 0 && errno == EINTR);
  return n > 0 ? std::string(buf, n) : std::string();
}

std::string Exchange(int fd, const std::string& text) {
  ssize_t sent;
  do {
    sent = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  EXPECT_EQ(sent, static_cast<ssize_t>(text.size()));
  std::string got;
  while (got.size() < text.size()) {
    std::string part = RecvSome(fd);
    if (part.empty()) break;
    got += part;
  }
  return got;
}

Task<void> Echo(Process& self, int fd) {
  char buf[256];
  while (true) {
    absl::StatusOr<size_t> n = co_await Recv(self, fd, buf);
    if (!n.ok() || *n == 0) co_return;
    if (!(co_await SendAll(self, fd, std::string_view(buf, *n))).ok()) co_return;
  }
}

class ListenerTest : public BackendTest {
 protected:
  void SetUp() override {
    BackendTest::SetUp();
    if (IsSkipped()) return;
    fds_before_ = OpenFds();
    RuntimeOptions options;
    options.schedulers = 2;
    options.backend = backend();
    node_ = std::move(*Node::Create(options));
  }

  Pid Start(ListenerOptions options, ConnectionBody body = Echo) {
    absl::StatusOr<Listener> l = MakeListener("listener", std::move(options), std::move(body));
    EXPECT_TRUE(l.ok()) << l.status();
    address_ = l->address;
    stats_ = l->stats;
    absl::StatusOr<Pid> sup =
        StartSupervisor(*node_, {RestartStrategy::kOneForOne, 5, absl::Seconds(5)}, {l->spec});
    EXPECT_TRUE(sup.ok()) << sup.status();
    return *sup;
  }

  Pid Child(const Pid& sup, const std::string& id) {
    absl::StatusOr<Pid> pid =
        node_->Run<absl::StatusOr<Pid>>([sup, id](Process& self) -> Task<absl::StatusOr<Pid>> {
          absl::StatusOr<std::vector<ChildInfo>> children = co_await WhichChildren(self, sup);
          if (!children.ok()) co_return children.status();
          for (const ChildInfo& c : *children) {
            if (c.id == id) co_return c.pid;
          }
          co_return absl::NotFoundError(id);
        });
    EXPECT_TRUE(pid.ok()) << pid.status();
    return pid.value_or(Pid());
  }

  // Waits (30 s at most) until `n` connections are live: each change is announced.
  bool Live(int n) {
    return stats_->changed.WaitUntil([&] { return stats_->live.load() == n; },
                                     absl::Now() + absl::Seconds(30));
  }

  std::unique_ptr<Node> node_;
  SocketAddress address_;
  std::shared_ptr<const ListenerStats> stats_;
  int fds_before_ = 0;
};

TEST_P(ListenerTest, ServesEachConnectionInItsOwnProcessAndClosesIt) {
  Start({});
  std::vector<int> clients;
  for (int i = 0; i < 20; ++i) clients.push_back(Dial(address_));
  for (int i = 0; i < 20; ++i) {
    std::string text = "hello " + std::to_string(i);
    EXPECT_EQ(Exchange(clients[i], text), text);
  }
  EXPECT_TRUE(Live(20));
  for (int fd : clients) ::close(fd);
  // Each connection's process ends at end of stream; its descriptor goes with it.
  EXPECT_TRUE(Live(0));
  EXPECT_EQ(stats_->accepted.load(), 20u);
}

TEST_P(ListenerTest, AKilledConnectionIsClosedAndOthersGoOn) {
  std::atomic<int> started{0};
  Notifier started_changed;
  std::mutex mu;
  std::vector<Pid> pids;
  Start({}, [&](Process& self, int fd) -> Task<void> {
    {
      std::lock_guard<std::mutex> lock(mu);
      pids.push_back(self.self());
    }
    ++started;
    started_changed.Notify();
    co_await Echo(self, fd);
  });
  int a = Dial(address_);
  int b = Dial(address_);
  ASSERT_TRUE(started_changed.WaitUntil([&] { return started.load() == 2; },
                                        absl::Now() + absl::Seconds(30)));
  {
    std::lock_guard<std::mutex> lock(mu);
    SendExit(pids[0], ExitReason::Kill());
  }
  // One of the two sees the end of its stream; the other still echoes.
  char c;
  pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
  int ready;
  do {
    ready = ::poll(p, 2, 30'000);
  } while (ready < 0 && errno == EINTR);
  ASSERT_EQ(ready, 1);
  int dead = (p[0].revents & POLLIN) ? a : b;
  int alive = dead == a ? b : a;
  ssize_t eof;
  do {
    eof = ::recv(dead, &c, 1, 0);
  } while (eof < 0 && errno == EINTR);
  EXPECT_EQ(eof, 0);
  EXPECT_EQ(Exchange(alive, "still here"), "still here");
  ::close(a);
  ::close(b);
  EXPECT_TRUE(Live(0));
}

TEST_P(ListenerTest, ACrashedAcceptorIsRestartedOnTheSameSocket) {
  Pid sup = Start({});
  Pid listener = Child(sup, "listener");
  Pid acceptor = Child(listener, "acceptor");
  ASSERT_TRUE(acceptor.valid());
  int before = Dial(address_);
  EXPECT_EQ(Exchange(before, "one"), "one");
  SendExit(acceptor, ExitReason::Kill());
  AwaitDeath(*node_, acceptor);
  // Connections made while it restarts wait in the backlog of the same socket.
  int after = Dial(address_);
  EXPECT_EQ(Exchange(after, "two"), "two");
  EXPECT_EQ(Exchange(before, "three"), "three");  // rest_for_one: connections were not touched.
  ::close(before);
  ::close(after);
  EXPECT_TRUE(Live(0));
}

// The listening socket shut down behind the listener's back (accept fails with EINVAL for good):
// the acceptor crashes and supervision gives up, instead of the acceptor retrying (and logging)
// every 10 ms for ever.
TEST_P(ListenerTest, ABrokenListeningSocketCrashesToSupervision) {
  Pid sup = Start({});
  int listening = -1;
  for (int fd = 0; fd < 4096 && listening < 0; ++fd) {
    int accepting = 0;
    socklen_t len = sizeof accepting;
    absl::StatusOr<SocketAddress> local = LocalAddress(fd);
    if (local.ok() && local->port() == address_.port() &&
        ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) == 0 && accepting) {
      listening = fd;
    }
  }
  ASSERT_GE(listening, 0) << "the listening socket was not found";
  ASSERT_EQ(::shutdown(listening, SHUT_RDWR), 0) << strerror(errno);
  AwaitDeath(*node_, sup);  // Within RunInProcess's limit: the restarts exceed the intensity.
}

// At most `max` connections; the ones beyond are told so.
ListenerOptions Capped(int max) {
  ListenerOptions options;
  options.max_connections = max;
  options.reject_message = "-ERR max number of clients reached\r\n";
  return options;
}

TEST_P(ListenerTest, BeyondTheCapANewConnectionIsRefused) {
  Start(Capped(2));
  int a = Dial(address_);
  int b = Dial(address_);
  EXPECT_EQ(Exchange(a, "a"), "a");
  EXPECT_EQ(Exchange(b, "b"), "b");
  int c = Dial(address_);
  EXPECT_EQ(RecvSome(c), "-ERR max number of clients reached\r\n");
  EXPECT_EQ(RecvSome(c), "");  // Closed.
  ::close(c);
  EXPECT_EQ(stats_->rejected.load(), 1u);
  ::close(a);
  ASSERT_TRUE(Live(1));
  int d = Dial(address_);
  EXPECT_EQ(Exchange(d, "d"), "d");
  ::close(b);
  ::close(d);
  EXPECT_TRUE(Live(0));
}

// A client that sent its request right after connecting still reads why it was refused (its
// unread request makes the close a reset, which Linux delivers after the data sent before it).
TEST_P(ListenerTest, ARefusedClientThatAlreadySentReadsTheReason) {
  Start(Capped(1));
  int a = Dial(address_);
  EXPECT_EQ(Exchange(a, "a"), "a");
  for (int i = 0; i < 20; ++i) {
    int c = Dial(address_);
    const std::string request = "*1\r\n$4\r\nPING\r\n";
    ASSERT_EQ(::send(c, request.data(), request.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(request.size()));
    EXPECT_EQ(RecvSome(c), "-ERR max number of clients reached\r\n") << "client " << i;
    ::close(c);
  }
  EXPECT_EQ(stats_->rejected.load(), 20u);
  ::close(a);
  EXPECT_TRUE(Live(0));
}

// Out of descriptors, clients waiting in the backlog are refused (the acceptor's spare descriptor
// takes them one by one) instead of waiting there until a connection ends.
TEST_P(ListenerTest, OutOfDescriptorsWaitingClientsAreRefusedNotLeftWaiting) {
  ListenerOptions options;
  options.reject_message = "-ERR out of descriptors\r\n";
  Start(options);
  // The clients' sockets first: connecting them needs no descriptor of this process.
  constexpr int kClients = 12;
  std::vector<int> clients;
  for (int i = 0; i < kClients; ++i) {
    int fd = ::socket(address_.storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    clients.push_back(fd);
  }
  // Room for 5 more descriptors: the limit is the 4th free descriptor number, plus one, and the
  // directory's own descriptor, counted as used below, is free again after.
  std::vector<bool> used;
  {
    DIR* dir = ::opendir("/proc/self/fd");
    while (dirent* e = ::readdir(dir)) {
      if (e->d_name[0] == '.') continue;
      const size_t n = std::stoul(e->d_name);
      if (n >= used.size()) used.resize(n + 1, false);
      used[n] = true;
    }
    ::closedir(dir);
  }
  rlim_t limit = 0;
  for (int free = 0; free < 4; ++limit) {
    if (limit >= used.size() || !used[limit]) ++free;
  }
  // The limit is restored however the test ends (the binary's later tests need descriptors).
  struct RestoreLimit {
    rlimit saved{};
    ~RestoreLimit() { ::setrlimit(RLIMIT_NOFILE, &saved); }
  } restore;
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &restore.saved), 0);
  rlimit low = restore.saved;
  low.rlim_cur = limit;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0) << strerror(errno);
  int served = 0, refused = 0, waiting = 0;
  for (int i = 0; i < kClients; ++i) {
    int rc;
    do {
      rc = ::connect(clients[i], reinterpret_cast<const sockaddr*>(&address_.storage),
                     address_.length);
    } while (rc < 0 && errno == EINTR);
    ASSERT_EQ(rc, 0) << strerror(errno);
    ASSERT_EQ(::send(clients[i], "hi", 2, MSG_NOSIGNAL), 2);
    char buf[64];
    ssize_t n;
    do {
      n = ::recv(clients[i], buf, sizeof buf, 0);
    } while (n < 0 && errno == EINTR);
    if (n == 2 && std::string(buf, 2) == "hi") {
      ++served;
    } else if (n >= 0 || errno == ECONNRESET) {
      ++refused;  // The message, or the end of the stream (a reset loses the message).
    } else {
      ++waiting;  // Nothing for 5 s.
    }
  }
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &restore.saved), 0);
  EXPECT_EQ(waiting, 0) << served << " served, " << refused << " refused";
  EXPECT_GE(refused, 1) << "the limit left room for every client";
  EXPECT_GE(stats_->rejected.load(), static_cast<uint64_t>(refused));
  for (int fd : clients) ::close(fd);
  EXPECT_TRUE(Live(0));
}

TEST_P(ListenerTest, StoppingTheListenerClosesEverything) {
  Pid sup = Start({});
  int a = Dial(address_);
  EXPECT_EQ(Exchange(a, "x"), "x");
  absl::Status stopped = node_->Run<absl::Status>(
      [sup](Process& self) -> Task<absl::Status> { co_return co_await StopSupervisor(self, sup); });
  EXPECT_TRUE(stopped.ok()) << stopped;
  EXPECT_EQ(RecvSome(a), "");  // The connection was stopped and closed.
  ::close(a);
  EXPECT_EQ(stats_->live.load(), 0);
  node_.reset();
  stats_.reset();
  EXPECT_EQ(OpenFds(), fds_before_);  // The listening socket too.
}

TEST_P(ListenerTest, BadOptionsAreRejected) {
  ListenerOptions options;
  options.max_connections = 0;
  EXPECT_EQ(MakeListener("l", options, Echo).status().code(), absl::StatusCode::kInvalidArgument);
  options = {};
  options.listen.host = "not-an-address";
  EXPECT_EQ(MakeListener("l", options, Echo).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeListener("l", {}, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  // A port already in use.
  absl::StatusOr<Listener> first = MakeListener("l", {}, Echo);
  ASSERT_TRUE(first.ok());
  options = {};
  options.listen.port = first->address.port();
  options.listen.reuse_address = false;
  absl::StatusOr<Listener> second = MakeListener("l", options, Echo);
  EXPECT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("bind 127.0.0.1:"), std::string::npos)
      << second.status();
}

ETSMGR_INSTANTIATE_ON_ALL_BACKENDS(ListenerTest);

}  // namespace
}  // namespace etsmgr
