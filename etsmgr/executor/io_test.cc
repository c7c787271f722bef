// Task-side asynchronous I/O on both backends: sockets, files, vectored forms, deadlines,
// cancellation by Close and by destroying the awaiting frame, errors as statuses.
#include "etsmgr/executor/io.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "etsmgr/executor/runtime.h"
#include "etsmgr/executor/testing/test_backends.h"
#include "etsmgr/executor/testing/test_sockets.h"
#include "etsmgr/executor/wait_slot.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

using ::etsmgr::test_sockets::OpenFds;

class IoTest : public BackendTest {
 protected:
  std::unique_ptr<Runtime> MakeRuntime(int schedulers = 1) {
    RuntimeOptions options;
    options.schedulers = schedulers;
    options.backend = backend();
    absl::StatusOr<std::unique_ptr<Runtime>> rt = Runtime::Create(options);
    EXPECT_TRUE(rt.ok()) << rt.status();
    return std::move(*rt);
  }
};

// A connected pair over loopback TCP, made with the awaitables themselves.
struct Pair {
  int client = -1;
  int server = -1;
};

Task<absl::StatusOr<Pair>> Connected() {
  absl::StatusOr<int> listener = ListenTcp({});
  if (!listener.ok()) co_return listener.status();
  absl::StatusOr<SocketAddress> address = LocalAddress(*listener);
  if (!address.ok()) co_return address.status();
  absl::StatusOr<int> client = TcpSocket(AF_INET);
  if (!client.ok()) co_return client.status();
  // Connect completes against the backlog, before the accept.
  absl::Status connected = co_await Connect(*client, *address, Deadline(absl::Seconds(30)));
  if (!connected.ok()) co_return connected;
  absl::StatusOr<int> server = co_await Accept(*listener, Deadline(absl::Seconds(30)));
  ::close(*listener);
  if (!server.ok()) co_return server.status();
  co_return Pair{*client, *server};
}

TEST_P(IoTest, EchoOverLoopbackAndEndOfStream) {
  auto rt = MakeRuntime();
  rt->BlockOn([]() -> Task<void> {
    absl::StatusOr<Pair> pair = co_await Connected();
    EXPECT_TRUE(pair.ok()) << pair.status();
    if (!pair.ok()) co_return;
    EXPECT_TRUE((co_await SendAll(pair->client, "hello, server")).ok());
    char buf[64];
    std::string got;
    while (got.size() < 13) {
      absl::StatusOr<size_t> n = co_await Recv(pair->server, buf, Deadline(absl::Seconds(30)));
      EXPECT_TRUE(n.ok()) << n.status();
      if (!n.ok() || *n == 0) break;
      got.append(buf, *n);
    }
    EXPECT_EQ(got, "hello, server");
    EXPECT_TRUE((co_await Close(pair->client)).ok());
    absl::StatusOr<size_t> eof = co_await Recv(pair->server, buf, Deadline(absl::Seconds(30)));
    EXPECT_TRUE(eof.ok()) << eof.status();
    EXPECT_EQ(eof.value_or(99), 0u);  // The peer closed: end of stream.
    EXPECT_TRUE((co_await Close(pair->server)).ok());
  }());
}

TEST_P(IoTest, VectoredSendAndReceive) {
  auto rt = MakeRuntime();
  rt->BlockOn([]() -> Task<void> {
    absl::StatusOr<Pair> pair = co_await Connected();
    EXPECT_TRUE(pair.ok()) << pair.status();
    if (!pair.ok()) co_return;
    std::vector<std::string_view> pieces = {"*2\r\n", "$3\r\nGET\r\n", "$1\r\nk\r\n"};
    absl::StatusOr<size_t> sent = co_await SendV(pair->client, pieces);
    EXPECT_EQ(sent.value_or(0), 20u);
    std::string got;
    char a[5], b[7], c[100];
    while (got.size() < 20) {
      std::vector<std::span<char>> into = {a, b, c};
      absl::StatusOr<size_t> n = co_await RecvV(pair->server, into, Deadline(absl::Seconds(30)));
      EXPECT_TRUE(n.ok()) << n.status();
      if (!n.ok() || *n == 0) break;
      std::string all = std::string(a, 5) + std::string(b, 7) + std::string(c, 100);
      got += all.substr(0, *n);
    }
    EXPECT_EQ(got, "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    ::close(pair->client);
    ::close(pair->server);
  }());
}

TEST_P(IoTest, FilesWithOffsetsAndVectors) {
  auto rt = MakeRuntime();
  std::string path = std::string(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp") +
                     "/io_test_file";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  rt->BlockOn([](int fd) -> Task<void> {
    EXPECT_TRUE((co_await WriteAll(fd, "0123456789", 0)).ok());
    absl::StatusOr<size_t> w = co_await Write(fd, "AB", 4);
    EXPECT_EQ(w.value_or(0), 2u);
    std::vector<std::string_view> pieces = {"xy", "z"};
    absl::StatusOr<size_t> wv = co_await WriteV(fd, pieces, 10);
    EXPECT_EQ(wv.value_or(0), 3u);
    char buf[32];
    absl::StatusOr<size_t> r = co_await Read(fd, buf, 0);
    EXPECT_EQ(std::string(buf, r.value_or(0)), "0123AB6789xyz");
    char p[3], q[4];
    std::vector<std::span<char>> into = {p, q};
    absl::StatusOr<size_t> rv = co_await ReadV(fd, into, 2);
    EXPECT_EQ(rv.value_or(0), 7u);
    EXPECT_EQ(std::string(p, 3) + std::string(q, 4), "23AB678");
    // At the end of the file a read returns 0.
    absl::StatusOr<size_t> end = co_await Read(fd, buf, 13);
    EXPECT_EQ(end.value_or(99), 0u);
  }(fd));
  ::close(fd);
  ::unlink(path.c_str());
}

// A blocking pipe (the epoll backend must wait for readiness, not block the scheduler).
TEST_P(IoTest, BlockingPipeDoesNotBlockTheScheduler) {
  auto rt = MakeRuntime();
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  std::atomic<bool> other_ran{false};
  rt->BlockOn([](int rfd, int wfd, std::atomic<bool>* other_ran) -> Task<void> {
    // The reader starts first and waits; the writer task on the same scheduler must still run.
    WaitSlot wrote;
    Scheduler::Current()->Spawn(
        [](int wfd, std::atomic<bool>* other_ran, WaitSlot* wrote) -> Task<void> {
          other_ran->store(true);
          absl::StatusOr<size_t> n = co_await Write(wfd, "ping");
          EXPECT_EQ(n.value_or(0), 4u);
          wrote->Notify();
        }(wfd, other_ran, &wrote));
    char buf[8];
    absl::StatusOr<size_t> n = co_await Read(rfd, buf, -1, Deadline(absl::Seconds(30)));
    EXPECT_EQ(std::string(buf, n.value_or(0)), "ping");
    co_await wrote.Wait(Deadline(absl::Seconds(30)));
  }(fds[0], fds[1], &other_ran));
  EXPECT_TRUE(other_ran.load());
  ::close(fds[0]);
  ::close(fds[1]);
}

// Unsticks a test whose scheduler thread is stuck in a blocking system call: unless Done() comes
// first, after `limit` it runs `rescue` (say, writes to the pipe the thread is stuck reading) and
// records that it had to, so that the hang ends as a failure instead of a test timeout.
class Watchdog {
 public:
  explicit Watchdog(std::function<void()> rescue,
                    std::chrono::seconds limit = std::chrono::seconds(20))
      : thread_([this, rescue = std::move(rescue), limit] {
          std::unique_lock<std::mutex> lock(mu_);
          if (cv_.wait_for(lock, limit, [this] { return done_; })) return;
          rescued_ = true;
          lock.unlock();
          rescue();
        }) {}
  ~Watchdog() { Done(); }
  void Done() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  bool rescued() {
    std::lock_guard<std::mutex> lock(mu_);
    return rescued_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  bool rescued_ = false;
  std::thread thread_;  // Last: starts once the members above exist.
};

// Two reads queued on one blocking pipe, then one write: one read takes the bytes, the other
// waits on (and times out) without blocking the scheduler's thread (review finding: on epoll the
// second read made the blocking call on the emptied pipe, freezing the scheduler for ever).
TEST_P(IoTest, TwoReadsOfABlockingPipeAfterOneWriteDoNotBlockTheScheduler) {
  auto rt = MakeRuntime();
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  Watchdog watchdog([&] { EXPECT_EQ(::write(fds[1], "rescue!!", 8), 8); });
  std::string got[2];
  absl::Status status[2];
  rt->BlockOn([](int rfd, int wfd, std::string* got, absl::Status* status) -> Task<void> {
    WaitSlot done[2];
    for (int i = 0; i < 2; ++i) {
      Scheduler::Current()->Spawn(
          [](int rfd, std::string* got, absl::Status* status, WaitSlot* done) -> Task<void> {
            char buf[16];
            absl::StatusOr<size_t> n = co_await Read(rfd, buf, -1, Deadline(absl::Seconds(1)));
            if (n.ok()) *got = std::string(buf, *n);
            *status = n.status();
            done->Notify();
          }(rfd, &got[i], &status[i], &done[i]));
    }
    // Runs after both reads were submitted (the scheduler runs its tasks in order).
    Scheduler::Current()->Spawn([](int wfd) -> Task<void> {
      EXPECT_EQ((co_await Write(wfd, "ping")).value_or(0), 4u);
    }(wfd));
    for (WaitSlot& d : done) co_await d.Wait(Deadline(absl::Seconds(60)));
  }(fds[0], fds[1], got, status));
  watchdog.Done();
  EXPECT_FALSE(watchdog.rescued()) << "the scheduler's thread blocked reading the emptied pipe";
  const int pinged = got[0] == "ping" ? 0 : 1;
  EXPECT_EQ(got[pinged], "ping") << status[pinged];
  EXPECT_EQ(status[1 - pinged].code(), absl::StatusCode::kDeadlineExceeded)
      << status[1 - pinged] << " (read \"" << got[1 - pinged] << "\")";
  ::close(fds[0]);
  ::close(fds[1]);
}

// A write far larger than a pipe holds, with its reader on the same scheduler: the write moves
// what the pipe takes and waits for room again (review finding: on epoll it made one blocking
// write(2) of everything, which waited for a reader that could never run).
TEST_P(IoTest, ABigWriteToABlockingPipeLetsItsReaderRun) {
  auto rt = MakeRuntime();
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  constexpr size_t kBytes = size_t{1} << 20;
  // Stuck in write(2): reading it all here lets it return; closing the write end then gives the
  // reader (which may be stuck too, on the pipe emptied here) its end of file.
  Watchdog watchdog([&] {
    char sink[65536];
    for (pollfd p{fds[0], POLLIN, 0}; ::poll(&p, 1, 2000) == 1;) {
      if (::read(fds[0], sink, sizeof sink) <= 0) break;
    }
    ::close(std::exchange(fds[1], -1));
  });
  const std::string data = [] {
    std::string d(kBytes, '\0');
    for (size_t i = 0; i < d.size(); ++i) d[i] = static_cast<char>('a' + i % 23);
    return d;
  }();
  std::string received;
  rt->BlockOn([](int rfd, int wfd, const std::string* data, std::string* received) -> Task<void> {
    WaitSlot written;
    Scheduler::Current()->Spawn(
        [](int wfd, const std::string* data, WaitSlot* written) -> Task<void> {
          absl::Status st = co_await WriteAll(wfd, *data, -1, Deadline(absl::Seconds(60)));
          EXPECT_TRUE(st.ok()) << st;
          written->Notify();
        }(wfd, data, &written));
    char buf[65536];
    while (received->size() < data->size()) {
      absl::StatusOr<size_t> n = co_await Read(rfd, buf, -1, Deadline(absl::Seconds(30)));
      if (!n.ok() || *n == 0) {
        ADD_FAILURE() << "read after " << received->size() << " bytes: " << n.status();
        break;
      }
      received->append(buf, *n);
    }
    co_await written.Wait(Deadline(absl::Seconds(60)));
  }(fds[0], fds[1], &data, &received));
  watchdog.Done();
  EXPECT_FALSE(watchdog.rescued()) << "the scheduler's thread blocked in the big write";
  EXPECT_TRUE(received == data) << "received " << received.size() << " of " << data.size()
                                << " bytes, or other bytes";
  ::close(fds[0]);
  if (fds[1] >= 0) ::close(fds[1]);
}

// A write operation copies only what one attempt can move: on epoll a write to a blocking pipe
// moves PIPE_BUF bytes at most (more would block the scheduler's thread), so its operation holds
// that much and a WriteAll copies each byte once (review finding: each operation copied up to
// 4 MiB to write 4 KiB of it, quadratic in the size written). On io_uring the kernel's worker
// takes the whole write.
TEST_P(IoTest, AWriteToABlockingPipeCopiesOnlyWhatOneAttemptMoves) {
  auto rt = MakeRuntime();
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const std::string data(size_t{1} << 20, 'x');
  const bool epoll = rt->scheduler(0).backend() == Backend::kEpoll;
  for (IoKind kind : {IoKind::kWrite, IoKind::kWriteV}) {
    IoSpec spec =
        kind == IoKind::kWrite ? WriteSpec(fds[1], data, -1) : WriteVSpec(fds[1], {data, data}, -1);
    IoOp* op = IoOp::Create(kind, fds[1]);
    ASSERT_TRUE(io_internal::Fill(spec, op, rt->scheduler(0)).ok());
    const size_t whole = kind == IoKind::kWrite ? data.size() : 2 * data.size();
    EXPECT_EQ(op->length, epoll ? size_t{PIPE_BUF} : whole) << IoKindName(kind);
    op->Unref();
  }
  // A socket's write is not capped (it never blocks: MSG_DONTWAIT).
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
  IoOp* op = IoOp::Create(IoKind::kWrite, pair[0]);
  ASSERT_TRUE(io_internal::Fill(WriteSpec(pair[0], data, -1), op, rt->scheduler(0)).ok());
  EXPECT_EQ(op->length, data.size());
  op->Unref();
  for (int fd : {fds[0], fds[1], pair[0], pair[1]}) ::close(fd);
}

TEST_P(IoTest, DeadlinePassesWithNothingToReceive) {
  auto rt = MakeRuntime();
  rt->BlockOn([]() -> Task<void> {
    absl::StatusOr<Pair> pair = co_await Connected();
    EXPECT_TRUE(pair.ok()) << pair.status();
    if (!pair.ok()) co_return;
    char buf[8];
    absl::StatusOr<size_t> n = co_await Recv(pair->server, buf, Deadline(absl::Milliseconds(20)));
    EXPECT_EQ(n.status().code(), absl::StatusCode::kDeadlineExceeded) << n.status();
    EXPECT_EQ(n.status().message(), "recv: deadline exceeded");
    // The socket is still usable after the cancelled receive: nothing was consumed.
    EXPECT_TRUE((co_await SendAll(pair->client, "late")).ok());
    absl::StatusOr<size_t> m = co_await Recv(pair->server, buf, Deadline(absl::Seconds(30)));
    EXPECT_EQ(std::string(buf, m.value_or(0)), "late");
    // A deadline already past still lets data that is there be taken, or reports the deadline:
    // never a lost byte.
    EXPECT_TRUE((co_await SendAll(pair->client, "x")).ok());
    absl::StatusOr<size_t> past = co_await Recv(pair->server, buf, Now() - absl::Seconds(1));
    if (past.ok()) {
      EXPECT_EQ(std::string(buf, *past), "x");
    } else {
      EXPECT_EQ(past.status().code(), absl::StatusCode::kDeadlineExceeded);
      absl::StatusOr<size_t> again = co_await Recv(pair->server, buf, Deadline(absl::Seconds(30)));
      EXPECT_EQ(std::string(buf, again.value_or(0)), "x");
    }
    ::close(pair->client);
    ::close(pair->server);
  }());
}

// A descriptor closed by plain close() after an operation on it was cancelled, whose number is
// then reused by a new socket: operations on the new one are woken (epoll forgets a closed
// descriptor's registration; the poller must not believe it still armed).
TEST_P(IoTest, ADescriptorNumberReusedAfterCloseIsArmedAfresh) {
  auto rt = MakeRuntime();
  rt->BlockOn([]() -> Task<void> {
    for (int round = 0; round < 20; ++round) {
      absl::StatusOr<Pair> old = co_await Connected();
      EXPECT_TRUE(old.ok()) << old.status();
      if (!old.ok()) co_return;
      char buf[8];
      absl::StatusOr<size_t> n = co_await Recv(old->server, buf, Deadline(absl::Milliseconds(1)));
      EXPECT_EQ(n.status().code(), absl::StatusCode::kDeadlineExceeded) << n.status();
      const int number = old->server;
      ::close(old->server);
      ::close(old->client);
      absl::StatusOr<Pair> fresh = co_await Connected();
      EXPECT_TRUE(fresh.ok()) << fresh.status();
      if (!fresh.ok()) co_return;
      // The lowest free numbers are reused: one of the new pair has the old server's number.
      int reused = fresh->server == number ? fresh->server : fresh->client;
      int peer = reused == fresh->server ? fresh->client : fresh->server;
      EXPECT_EQ(reused, number);
      // The sender runs once the receive below waits (nothing is there before): the receive
      // must be woken by the data.
      Scheduler::Current()->Spawn(
          [](int fd) -> Task<void> { EXPECT_TRUE((co_await SendAll(fd, "new")).ok()); }(peer));
      absl::StatusOr<size_t> got = co_await Recv(reused, buf, Deadline(absl::Seconds(5)));
      EXPECT_EQ(std::string(buf, got.value_or(0)), "new") << got.status();
      if (!got.ok()) co_return;  // Never woken: the bug this test is for.
      ::close(fresh->server);
      ::close(fresh->client);
    }
  }());
}

TEST_P(IoTest, CloseCancelsAReceiveInFlight) {
  auto rt = MakeRuntime();
  rt->BlockOn([]() -> Task<void> {
    absl::StatusOr<Pair> pair = co_await Connected();
    EXPECT_TRUE(pair.ok()) << pair.status();
    if (!pair.ok()) co_return;
    WaitSlot started;
    WaitSlot done;
    absl::Status result;
    Scheduler::Current()->Spawn(
        [](int fd, absl::Status* result, WaitSlot* started, WaitSlot* done) -> Task<void> {
          char buf[8];
          // The notified waiter resumes only after this task suspends in the receive (one thread).
          started->Notify();
          absl::StatusOr<size_t> n = co_await Recv(fd, buf);
          *result = n.status();
          done->Notify();
        }(pair->server, &result, &started, &done));
    EXPECT_TRUE(co_await started.Wait(Deadline(absl::Seconds(30))));
    EXPECT_TRUE((co_await Close(pair->server)).ok());
    EXPECT_TRUE(co_await done.Wait(Deadline(absl::Seconds(30))));
    EXPECT_EQ(result.code(), absl::StatusCode::kCancelled) << result;
    ::close(pair->client);
  }());
}

// TrySend takes what fits and never waits; Poll waits in the kernel for either direction and
// reports which is ready (a server keeps reading requests while its client is slow to read).
TEST_P(IoTest, PollWaitsForEitherDirectionAndTrySendNeverWaits) {
  auto rt = MakeRuntime();
  rt->BlockOn([]() -> Task<void> {
    absl::StatusOr<Pair> pair = co_await Connected();
    EXPECT_TRUE(pair.ok()) << pair.status();
    if (!pair.ok()) co_return;
    // Nobody reads the server's side: the client's sends fill both buffers, then take nothing.
    const std::string chunk(64 << 10, 'x');
    size_t sent = 0;
    bool full = false;
    for (int i = 0; i < 100'000 && !full; ++i) {
      absl::StatusOr<size_t> n = co_await TrySend(pair->client, chunk);
      EXPECT_TRUE(n.ok()) << n.status();
      if (!n.ok()) co_return;
      full = *n == 0;
      sent += *n;
    }
    EXPECT_TRUE(full) << "the socket never filled after " << sent << " bytes";
    absl::StatusOr<int> no_room =
        co_await Poll(pair->client, POLLOUT, Deadline(absl::Milliseconds(20)));
    EXPECT_EQ(no_room.status().code(), absl::StatusCode::kDeadlineExceeded) << no_room.status();
    EXPECT_EQ(no_room.status().message(), "poll: deadline exceeded");

    // A wait for room or input, in the kernel; input comes first.
    WaitSlot started;
    WaitSlot done;
    absl::StatusOr<int> ready = 0;
    Scheduler::Current()->Spawn(
        [](int fd, absl::StatusOr<int>* ready, WaitSlot* started, WaitSlot* done) -> Task<void> {
          started->Notify();  // The waiter resumes after this task suspends (one thread).
          *ready = co_await Poll(fd, POLLIN | POLLOUT, Deadline(absl::Seconds(30)));
          done->Notify();
        }(pair->client, &ready, &started, &done));
    EXPECT_TRUE(co_await started.Wait(Deadline(absl::Seconds(30))));
    EXPECT_TRUE((co_await SendAll(pair->server, "reply")).ok());
    EXPECT_TRUE(co_await done.Wait(Deadline(absl::Seconds(30))));
    EXPECT_TRUE(ready.ok()) << ready.status();
    EXPECT_EQ(ready.value_or(0) & (POLLIN | POLLOUT), POLLIN);

    // A wait for room alone, in the kernel: the server's reading makes it.
    WaitSlot started2;
    WaitSlot done2;
    absl::StatusOr<int> room = 0;
    Scheduler::Current()->Spawn(
        [](int fd, absl::StatusOr<int>* ready, WaitSlot* started, WaitSlot* done) -> Task<void> {
          started->Notify();
          *ready = co_await Poll(fd, POLLOUT, Deadline(absl::Seconds(30)));
          done->Notify();
        }(pair->client, &room, &started2, &done2));
    EXPECT_TRUE(co_await started2.Wait(Deadline(absl::Seconds(30))));
    std::vector<char> buf(1 << 20);
    for (size_t got = 0; got < sent;) {
      absl::StatusOr<size_t> n = co_await Recv(pair->server, buf, Deadline(absl::Seconds(30)));
      EXPECT_TRUE(n.ok() && *n > 0) << n.status();
      if (!n.ok() || *n == 0) break;
      got += *n;
    }
    EXPECT_TRUE(co_await done2.Wait(Deadline(absl::Seconds(30))));
    EXPECT_TRUE(room.ok()) << room.status();
    EXPECT_NE(room.value_or(0) & POLLOUT, 0);
    absl::StatusOr<size_t> takes = co_await TrySend(pair->client, chunk);
    EXPECT_GT(takes.value_or(0), 0u) << takes.status();

    // A peer gone: the wait ends with the hang-up or error the kernel reports.
    ::close(pair->server);
    absl::StatusOr<int> gone = co_await Poll(pair->client, POLLIN, Deadline(absl::Seconds(30)));
    EXPECT_TRUE(gone.ok()) << gone.status();
    EXPECT_NE(gone.value_or(0) & (POLLIN | POLLHUP | POLLERR), 0);
    ::close(pair->client);
  }());
}

// A wait for a hang-up (POLLRDHUP) with unread data on the socket waits: it does not spin. On
// epoll it armed EPOLLIN too, which fired again and again (level-triggered) for the unread byte.
TEST_P(IoTest, PollForAHangUpWithUnreadDataDoesNotSpin) {
  auto rt = MakeRuntime();
  rt->BlockOn([]() -> Task<void> {
    absl::StatusOr<Pair> pair = co_await Connected();
    EXPECT_TRUE(pair.ok()) << pair.status();
    if (!pair.ok()) co_return;
    EXPECT_TRUE((co_await SendAll(pair->client, "x")).ok());
    // The byte has arrived (a wait for input says so at once) and stays unread.
    absl::StatusOr<int> in = co_await Poll(pair->server, POLLIN, Deadline(absl::Seconds(30)));
    EXPECT_NE(in.value_or(0) & POLLIN, 0) << in.status();
    auto cpu = [] {
      rusage usage{};
      ::getrusage(RUSAGE_THREAD, &usage);
      return absl::DurationFromTimeval(usage.ru_utime) + absl::DurationFromTimeval(usage.ru_stime);
    };
    const absl::Duration before = cpu();
    absl::StatusOr<int> hangup =
        co_await Poll(pair->server, POLLRDHUP, Deadline(absl::Milliseconds(300)));
    const absl::Duration used = cpu() - before;
    EXPECT_EQ(hangup.status().code(), absl::StatusCode::kDeadlineExceeded) << hangup.status();
    EXPECT_LT(used, absl::Milliseconds(100)) << "the wait spun on the unread byte";
    // The hang-up itself is seen.
    ::shutdown(pair->client, SHUT_WR);
    absl::StatusOr<int> gone = co_await Poll(pair->server, POLLRDHUP, Deadline(absl::Seconds(30)));
    EXPECT_NE(gone.value_or(0) & POLLRDHUP, 0) << gone.status();
    ::close(pair->client);
    ::close(pair->server);
  }());
}

TEST_P(IoTest, PollRefusesEventsThatNameNothingToWaitFor) {
  auto rt = MakeRuntime();
  rt->BlockOn([]() -> Task<void> {
    absl::StatusOr<int> none = co_await Poll(0, 0);
    EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(none.status().message().find("nothing to wait for"), std::string::npos)
        << none.status();
    absl::StatusOr<int> odd = co_await Poll(0, POLLIN | 0x4000);
    EXPECT_EQ(odd.status().code(), absl::StatusCode::kInvalidArgument) << odd.status();
    absl::StatusOr<int> bad_fd = co_await Poll(-1, POLLIN);
    EXPECT_EQ(bad_fd.status().code(), absl::StatusCode::kInvalidArgument) << bad_fd.status();
  }());
}

TEST_P(IoTest, ErrorsAreStatusesNamingTheOperation) {
  auto rt = MakeRuntime();
  rt->BlockOn([]() -> Task<void> {
    char buf[8];
    absl::StatusOr<size_t> bad = co_await Recv(-1, buf);
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(bad.status().message(), "recv: invalid file descriptor -1");
    absl::StatusOr<size_t> empty = co_await Recv(0, std::span<char>());
    EXPECT_EQ(empty.status().message(), "recv: empty buffer");
    absl::StatusOr<size_t> offset = co_await Read(0, buf, -7);
    EXPECT_EQ(offset.status().code(), absl::StatusCode::kInvalidArgument);
    // A port nobody listens on.
    absl::StatusOr<int> probe = ListenTcp({});
    EXPECT_TRUE(probe.ok());
    uint16_t port = LocalAddress(*probe)->port();
    ::close(*probe);
    absl::StatusOr<int> refused = co_await ConnectTcp("127.0.0.1", port);
    EXPECT_FALSE(refused.ok());
    EXPECT_NE(refused.status().message().find("connect: Connection refused"), std::string::npos)
        << refused.status();
    absl::StatusOr<int> bogus = co_await ConnectTcp("example.com", 80);
    EXPECT_EQ(bogus.status().code(), absl::StatusCode::kInvalidArgument);
    // Sending to a closed peer: an error, never SIGPIPE.
    absl::StatusOr<Pair> pair = co_await Connected();
    EXPECT_TRUE(pair.ok());
    if (!pair.ok()) co_return;
    ::close(pair->server);
    absl::Status sent;
    std::string chunk(1 << 16, 'x');
    for (int i = 0; i < 1000 && sent.ok(); ++i) sent = co_await SendAll(pair->client, chunk);
    EXPECT_FALSE(sent.ok());
    EXPECT_EQ(sent.message().substr(0, 6), "send: ") << sent;
    ::close(pair->client);
    // Recv on a descriptor that is not a socket.
    int fds[2];
    EXPECT_EQ(::pipe(fds), 0);
    absl::StatusOr<size_t> notsock = co_await Recv(fds[0], buf);
    EXPECT_FALSE(notsock.ok());
    EXPECT_NE(notsock.status().message().find("ENOTSOCK"), std::string::npos) << notsock.status();
    ::close(fds[0]);
    ::close(fds[1]);
  }());
}

TEST_P(IoTest, OffTheSchedulerOrDeterministicIsAFailedPrecondition) {
  RuntimeOptions options;
  options.deterministic = true;
  auto rt = Runtime::Create(options);
  ASSERT_TRUE(rt.ok());
  absl::StatusOr<size_t> n = (*rt)->BlockOn([]() -> Task<absl::StatusOr<size_t>> {
    char buf[4];
    co_return co_await Recv(0, buf);
  }());
  EXPECT_EQ(n.status().code(), absl::StatusCode::kFailedPrecondition) << n.status();
}

// More operations in flight than the ring has entries: all complete, in any order.
TEST_P(IoTest, ManyConnectionsAtOnce) {
  auto rt = MakeRuntime(2);
  rt->BlockOn([]() -> Task<void> {
    constexpr int kPairs = 300;
    std::vector<Pair> pairs;
    for (int i = 0; i < kPairs; ++i) {
      absl::StatusOr<Pair> pair = co_await Connected();
      EXPECT_TRUE(pair.ok()) << pair.status();
      if (!pair.ok()) co_return;
      pairs.push_back(*pair);
    }
    std::atomic<int> echoed{0};
    WaitSlot all;
    for (int i = 0; i < kPairs; ++i) {
      Scheduler::Current()->Spawn(
          [](Pair p, std::atomic<int>* echoed, WaitSlot* all) -> Task<void> {
            char buf[32];
            absl::StatusOr<size_t> n = co_await Recv(p.server, buf, Deadline(absl::Seconds(60)));
            EXPECT_TRUE(n.ok()) << n.status();
            if (n.ok()) {
              absl::Status sent = co_await SendAll(p.server, std::string_view(buf, *n));
              EXPECT_TRUE(sent.ok()) << sent;
            }
            if (echoed->fetch_add(1) + 1 == kPairs) all->Notify();
          }(pairs[i], &echoed, &all));
    }
    co_await Yield();
    for (int i = 0; i < kPairs; ++i) {
      EXPECT_TRUE((co_await SendAll(pairs[i].client, std::to_string(i))).ok());
    }
    EXPECT_TRUE(co_await all.Wait(Deadline(absl::Seconds(60))));
    for (int i = 0; i < kPairs; ++i) {
      char buf[32];
      absl::StatusOr<size_t> n = co_await Recv(pairs[i].client, buf, Deadline(absl::Seconds(60)));
      EXPECT_EQ(std::string(buf, n.value_or(0)), std::to_string(i));
      ::close(pairs[i].client);
      ::close(pairs[i].server);
    }
  }());
}

// Frames destroyed with operations in flight (the runtime shuts down): no descriptor leaks, no
// completion into a freed frame (asan), and an accepted connection nobody takes is closed.
TEST_P(IoTest, ShutdownWithOperationsInFlightLeaksNothing) {
  int before = OpenFds();
  for (int round = 0; round < 50; ++round) {
    auto rt = MakeRuntime(2);
    absl::StatusOr<int> listener = ListenTcp({});
    ASSERT_TRUE(listener.ok());
    SocketAddress address = *LocalAddress(*listener);
    std::atomic<int> waiting{0};
    for (int i = 0; i < 8; ++i) {
      ASSERT_TRUE(rt->Spawn(
                        [](int fd, std::atomic<int>* waiting) -> Task<void> {
                          waiting->fetch_add(1);
                          absl::StatusOr<int> c = co_await Accept(fd);
                          if (c.ok()) ::close(*c);
                        }(*listener, &waiting),
                        i % 2)
                      .ok());
    }
    int client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    // Connections the pending accepts may or may not take before the shutdown.
    ASSERT_EQ(
        ::connect(client, reinterpret_cast<const sockaddr*>(&address.storage), address.length), 0);
    while (waiting.load() < 8) std::this_thread::yield();
    rt.reset();  // Destroys the accepting frames with their accepts in flight.
    ::close(client);
    ::close(*listener);
  }
  EXPECT_EQ(OpenFds(), before);
}

ETSMGR_INSTANTIATE_ON_ALL_BACKENDS(IoTest);

}  // namespace
}  // namespace etsmgr
