// Process-side I/O on both backends: waits that exit signals interrupt, cancellation without
// leaks, completions that find a migrated process, deadlines.
#include "etsmgr/process/io.h"

#include <dirent.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "etsmgr/executor/testing/test_backends.h"
#include "etsmgr/executor/testing/test_sockets.h"
#include "etsmgr/process/node.h"
#include "etsmgr/process/testing/test_util.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

using ::etsmgr::test_sockets::OpenFds;

// A connected loopback pair, made synchronously (blocking connect to a listening socket).
struct Pair {
  int a = -1;
  int b = -1;
};
Pair MakePair() {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
  return Pair{fds[0], fds[1]};
}

constexpr int kRounds = 200;

class ProcessIoTest : public BackendTest {
 protected:
  std::unique_ptr<Node> MakeNode(int schedulers = 2) {
    RuntimeOptions options;
    options.schedulers = schedulers;
    options.backend = backend();
    absl::StatusOr<std::unique_ptr<Node>> node = Node::Create(options);
    EXPECT_TRUE(node.ok()) << node.status();
    return std::move(*node);
  }
};

TEST_P(ProcessIoTest, EchoServerAndClientProcesses) {
  auto node = MakeNode();
  absl::StatusOr<int> listener = ListenTcp({});
  ASSERT_TRUE(listener.ok()) << listener.status();
  uint16_t port = LocalAddress(*listener)->port();
  // Server: accepts one connection at a time and echoes it.
  ASSERT_TRUE(node->Spawn([fd = *listener](Process& self) -> Task<void> {
                    while (true) {
                      absl::StatusOr<int> c = co_await Accept(self, fd);
                      if (!c.ok()) co_return;
                      char buf[256];
                      while (true) {
                        absl::StatusOr<size_t> n = co_await Recv(self, *c, buf);
                        if (!n.ok() || *n == 0) break;
                        absl::Status sent = co_await SendAll(self, *c, std::string_view(buf, *n));
                        if (!sent.ok()) break;
                      }
                      (void)co_await Close(self, *c);
                    }
                  })
                  .ok());
  for (int client = 0; client < 20; ++client) {
    absl::Status result =
        node->Run<absl::Status>([port, client](Process& self) -> Task<absl::Status> {
          absl::StatusOr<int> fd =
              co_await ConnectTcp(self, "127.0.0.1", port, Deadline(absl::Seconds(30)));
          if (!fd.ok()) co_return fd.status();
          std::string text = "message " + std::to_string(client);
          std::vector<std::string_view> pieces = {"[", text, "]"};
          absl::Status sent = co_await SendAllV(self, *fd, pieces);
          if (!sent.ok()) co_return sent;
          std::string got;
          char buf[64];
          while (got.size() < text.size() + 2) {
            absl::StatusOr<size_t> n = co_await Recv(self, *fd, buf, Deadline(absl::Seconds(30)));
            if (!n.ok()) co_return n.status();
            if (*n == 0) break;
            got.append(buf, *n);
          }
          (void)co_await Close(self, *fd);
          if (got != "[" + text + "]") co_return absl::InternalError("echo was: " + got);
          co_return absl::OkStatus();
        });
    EXPECT_TRUE(result.ok()) << result;
  }
  node.reset();
  ::close(*listener);
}

// The heart of it: a process killed while it waits on a receive dies at once; its receive is
// cancelled without touching its frame, and consumes nothing: the next reader of the socket
// gets every byte.
TEST_P(ProcessIoTest, KilledWhileReceivingDiesAndTakesNoData) {
  auto node = MakeNode();
  int fds_before = OpenFds();
  for (int round = 0; round < kRounds; ++round) {
    Pair pair = MakePair();
    std::atomic<bool> waiting{false};
    std::atomic<bool> took{false};
    absl::StatusOr<Pid> reader =
        node->Spawn([fd = pair.a, &waiting, &took](Process& self) -> Task<void> {
          char buf[64];
          waiting.store(true);
          absl::StatusOr<size_t> n = co_await Recv(self, fd, buf);
          if (n.ok() && *n > 0) took.store(true);
        });
    ASSERT_TRUE(reader.ok());
    while (!waiting.load()) std::this_thread::yield();
    // Even rounds: the data comes after the death is seen, so it must stay in the socket.
    // Odd rounds: the kill races the data (the reader may take it before it dies).
    if (round % 2 == 0) {
      SendExit(*reader, ExitReason::Kill());
      AwaitDeath(*node, *reader);
      ASSERT_EQ(::send(pair.b, "data", 4, MSG_NOSIGNAL), 4);
      EXPECT_FALSE(took.load()) << "round " << round;
    } else {
      ASSERT_EQ(::send(pair.b, "data", 4, MSG_NOSIGNAL), 4);
      SendExit(*reader, ExitReason::Kill());
      AwaitDeath(*node, *reader);
    }
    // In odd rounds the receive may also have completed in the kernel just before the kill
    // acted: the data then died with the process that had it (as a message in a dead Erlang
    // process's mailbox). In even rounds nobody had it: it is all there for the next reader.
    if (round % 2 == 0) {
      absl::StatusOr<std::string> got = node->Run<absl::StatusOr<std::string>>(
          [fd = pair.a](Process& self) -> Task<absl::StatusOr<std::string>> {
            char buf[64];
            absl::StatusOr<size_t> n = co_await Recv(self, fd, buf, Deadline(absl::Seconds(10)));
            if (!n.ok()) co_return n.status();
            co_return std::string(buf, *n);
          });
      ASSERT_TRUE(got.ok()) << "round " << round << ": " << got.status();
      EXPECT_EQ(*got, "data");
    }
    ::close(pair.a);
    ::close(pair.b);
  }
  EXPECT_EQ(OpenFds(), fds_before);
}

// An exit signal from a linked process acts on a process waiting on I/O (it does not trap);
// a trapping one gets the signal as a message and keeps waiting.
TEST_P(ProcessIoTest, ExitSignalsActWhileWaiting) {
  auto node = MakeNode();
  Pair pair = MakePair();
  std::atomic<int> stage{0};
  absl::StatusOr<Pid> waiter = node->Spawn([fd = pair.a, &stage](Process& self) -> Task<void> {
    char buf[8];
    stage.store(1);
    (void)co_await Recv(self, fd, buf);
    stage.store(99);
  });
  ASSERT_TRUE(waiter.ok());
  while (stage.load() < 1) std::this_thread::yield();
  // A linked process crashes: the waiter does not trap, so it dies with the same reason.
  ASSERT_TRUE(node->Spawn([pid = *waiter](Process& self) -> Task<void> {
                    self.Link(pid);
                    co_await self.Exit(ExitReason::Custom("boom"));
                  })
                  .ok());
  AwaitDeath(*node, *waiter);
  EXPECT_EQ(stage.load(), 1);

  // Trapping: the signal is a message; the receive still completes.
  absl::StatusOr<std::string> trapped = node->Run<absl::StatusOr<std::string>>(
      [fd = pair.a, fdb = pair.b](Process& self) -> Task<absl::StatusOr<std::string>> {
        self.set_trap_exit(true);
        absl::StatusOr<Pid> crasher = self.SpawnLink(
            [](Process& p) -> Task<void> { co_await p.Exit(ExitReason::Custom("boom")); });
        if (!crasher.ok()) co_return crasher.status();
        ::send(fdb, "ok", 2, MSG_NOSIGNAL);
        char buf[8];
        absl::StatusOr<size_t> n = co_await Recv(self, fd, buf, Deadline(absl::Seconds(30)));
        if (!n.ok()) co_return n.status();
        ExitSignal signal = co_await self.Receive<ExitSignal>();
        co_return std::string(buf, *n) + " " + signal.reason.ToString();
      });
  ASSERT_TRUE(trapped.ok()) << trapped.status();
  EXPECT_EQ(trapped->substr(0, 3), "ok ");
  ::close(pair.a);
  ::close(pair.b);
}

// Accepts abandoned by killed processes: a connection that arrives meanwhile is either taken by
// the next acceptor or closed; no descriptor leaks.
TEST_P(ProcessIoTest, KilledAcceptorsLeakNoDescriptors) {
  auto node = MakeNode();
  absl::StatusOr<int> listener = ListenTcp({});
  ASSERT_TRUE(listener.ok());
  SocketAddress address = *LocalAddress(*listener);
  int fds_before = OpenFds();
  for (int round = 0; round < kRounds; ++round) {
    std::atomic<bool> waiting{false};
    absl::StatusOr<Pid> acceptor =
        node->Spawn([fd = *listener, &waiting](Process& self) -> Task<void> {
          waiting.store(true);
          absl::StatusOr<int> c = co_await Accept(self, fd);
          if (c.ok()) ::close(*c);
        });
    ASSERT_TRUE(acceptor.ok());
    while (!waiting.load()) std::this_thread::yield();
    int client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (round % 2 == 0) SendExit(*acceptor, ExitReason::Kill());
    ASSERT_EQ(
        ::connect(client, reinterpret_cast<const sockaddr*>(&address.storage), address.length), 0);
    if (round % 2 == 1) SendExit(*acceptor, ExitReason::Kill());
    AwaitDeath(*node, *acceptor);
    ::close(client);
  }
  // Connections still in the backlog are drained by one last acceptor.
  absl::Status drained =
      node->Run<absl::Status>([fd = *listener](Process& self) -> Task<absl::Status> {
        while (true) {
          absl::StatusOr<int> c = co_await Accept(self, fd, Deadline(absl::Milliseconds(100)));
          if (!c.ok()) co_return absl::OkStatus();
          ::close(*c);
        }
      });
  EXPECT_TRUE(drained.ok());
  EXPECT_EQ(OpenFds(), fds_before);
  node.reset();
  ::close(*listener);
}

TEST_P(ProcessIoTest, DeadlineLeavesTheSocketUsable) {
  auto node = MakeNode();
  Pair pair = MakePair();
  absl::StatusOr<std::string> got = node->Run<absl::StatusOr<std::string>>(
      [fd = pair.a, peer = pair.b](Process& self) -> Task<absl::StatusOr<std::string>> {
        char buf[16];
        absl::StatusOr<size_t> n = co_await Recv(self, fd, buf, Deadline(absl::Milliseconds(20)));
        if (n.status().code() != absl::StatusCode::kDeadlineExceeded) {
          co_return absl::InternalError("expected the deadline, got " + n.status().ToString());
        }
        ::send(peer, "after", 5, MSG_NOSIGNAL);
        n = co_await Recv(self, fd, buf, Deadline(absl::Seconds(30)));
        if (!n.ok()) co_return n.status();
        co_return std::string(buf, *n);
      });
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "after");
  ::close(pair.a);
  ::close(pair.b);
}

// A reader that always finds data ready (its receives complete at once) still yields when its
// slice is used up: a neighbour on its scheduler runs before the reader has drained the socket.
// (Without the charge it never suspends until the data runs out.)
TEST_P(ProcessIoTest, AReaderWithDataAlwaysReadyLetsItsNeighbourRun) {
  auto node = MakeNode(1);
  Pair pair = MakePair();
  // Fill the socket: tens of thousands of 8-byte receives, each ready at once.
  size_t filled = 0;
  std::string chunk(4096, 'x');
  while (true) {
    ssize_t n = ::send(pair.b, chunk.data(), chunk.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n <= 0) break;
    filled += static_cast<size_t>(n);
  }
  ASSERT_GT(filled, size_t{64} << 10);
  auto reader_done = std::make_shared<std::promise<uint64_t>>();
  auto neighbour_saw = std::make_shared<std::promise<uint64_t>>();
  auto reads = std::make_shared<std::atomic<uint64_t>>(0);
  ASSERT_TRUE(node->Spawn([fd = pair.a, filled, reads, reader_done](Process& self) -> Task<void> {
                    char buf[8];
                    size_t got = 0;
                    while (got < filled) {
                      absl::StatusOr<size_t> n = co_await Recv(self, fd, buf);
                      if (!n.ok() || *n == 0) break;
                      got += *n;
                      reads->fetch_add(1);
                    }
                    reader_done->set_value(reads->load());
                  })
                  .ok());
  ASSERT_TRUE(node->Spawn([reads, neighbour_saw](Process&) -> Task<void> {
                    co_await Sleep(absl::Milliseconds(1));
                    neighbour_saw->set_value(reads->load());
                  })
                  .ok());
  auto saw = neighbour_saw->get_future();
  auto done = reader_done->get_future();
  ASSERT_EQ(saw.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  ASSERT_EQ(done.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  const uint64_t at_neighbour = saw.get(), total = done.get();
  EXPECT_LT(at_neighbour, total) << "the neighbour ran only once the reader had drained " << filled
                                 << " bytes in " << total << " receives";
  node.reset();
  ::close(pair.a);
  ::close(pair.b);
}

// Many processes doing I/O on two schedulers with stealing on: every completion reaches its
// process wherever it runs now.
TEST_P(ProcessIoTest, CompletionsFindMigratedProcesses) {
  auto node = MakeNode(2);
  constexpr int kPairs = 64;
  constexpr int kMessages = 50;
  std::vector<Pair> pairs;
  for (int i = 0; i < kPairs; ++i) pairs.push_back(MakePair());
  std::atomic<int> finished{0};
  std::atomic<int> failures{0};
  for (int i = 0; i < kPairs; ++i) {
    // A ping-pong pair of processes per socket pair.
    for (int side = 0; side < 2; ++side) {
      int fd = side == 0 ? pairs[i].a : pairs[i].b;
      ASSERT_TRUE(node->Spawn([fd, side, &finished, &failures](Process& self) -> Task<void> {
                        char buf[8];
                        for (int m = 0; m < kMessages; ++m) {
                          if (side == 0) {
                            if (!(co_await SendAll(self, fd, "p")).ok()) ++failures;
                          }
                          absl::StatusOr<size_t> n = co_await Recv(
                              self, fd, std::span<char>(buf, 1), Deadline(absl::Seconds(60)));
                          if (!n.ok() || *n != 1) ++failures;
                          if (side == 1) {
                            if (!(co_await SendAll(self, fd, "q")).ok()) ++failures;
                          }
                        }
                        ++finished;
                      })
                      .ok());
    }
  }
  RunInProcess(
      *node,
      [&finished](Process& self) -> Task<void> {
        while (finished.load() < 2 * kPairs) co_await self.Sleep(absl::Milliseconds(1));
      },
      {}, absl::Seconds(120));
  EXPECT_EQ(failures.load(), 0);
  node.reset();
  for (Pair p : pairs) {
    ::close(p.a);
    ::close(p.b);
  }
}

ETSMGR_INSTANTIATE_ON_ALL_BACKENDS(ProcessIoTest);

}  // namespace
}  // namespace etsmgr
