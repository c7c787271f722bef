// An I/O operation whose buffer cannot be allocated answers ResourceExhausted, from a process
// (RunIo) and from a plain task (IoAwaiter), on both backends; it used to crash the program (the
// never-submitted operation was cancelled through its null scheduler) or terminate it (the
// awaiter's noexcept suspension threw). Memory runs out through io_internal::g_fill_fault, which
// throws std::bad_alloc where Fill allocates, on a thread that asked for it. (An operator new
// that fails did the same, but TSan's runtime defines operator new itself.)
#include <sys/socket.h>
#include <unistd.h>

#include <new>
#include <string>
#include <vector>

#include "etsmgr/executor/io.h"
#include "etsmgr/executor/runtime.h"
#include "etsmgr/executor/testing/test_backends.h"
#include "etsmgr/process/io.h"
#include "etsmgr/process/node.h"
#include "etsmgr/process/testing/test_util.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

thread_local bool t_out_of_memory = false;
void FailIfOutOfMemory() {
  if (t_out_of_memory) throw std::bad_alloc();
}

// An operation's buffer cannot be allocated on this thread while it lives.
struct OutOfMemory {
  OutOfMemory() {
    io_internal::g_fill_fault.store(&FailIfOutOfMemory);
    t_out_of_memory = true;
  }
  ~OutOfMemory() {
    t_out_of_memory = false;
    io_internal::g_fill_fault.store(nullptr);
  }
};

class IoOutOfMemoryTest : public BackendTest {
 protected:
  RuntimeOptions Options() {
    RuntimeOptions options;
    options.schedulers = 1;
    options.backend = backend();
    return options;
  }
};

TEST_P(IoOutOfMemoryTest, AProcessGetsResourceExhaustedAndGoesOn) {
  auto node = Node::Create(Options()).value();
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
  ASSERT_EQ(::write(fds[1], "x", 1), 1);
  RunInProcess(*node, [&](Process& self) -> Task<void> {
    std::vector<char> big(kMaxIoBytes);
    absl::StatusOr<size_t> n;
    {
      OutOfMemory out;
      n = co_await Recv(self, fds[0], big);
    }
    EXPECT_EQ(n.status().code(), absl::StatusCode::kResourceExhausted) << n.status();
    EXPECT_NE(n.status().message().find("recv"), std::string::npos) << n.status();
    // Nothing was taken from the socket, and the next receive works.
    n = co_await Recv(self, fds[0], big);
    EXPECT_EQ(n.value_or(0), 1u) << n.status();
  });
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST_P(IoOutOfMemoryTest, ATaskGetsResourceExhaustedAndGoesOn) {
  auto rt = Runtime::Create(Options()).value();
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
  ASSERT_EQ(::write(fds[1], "x", 1), 1);
  rt->BlockOn([](int fd) -> Task<void> {
    std::vector<char> big(kMaxIoBytes);
    absl::StatusOr<size_t> n;
    {
      OutOfMemory out;
      n = co_await Recv(fd, big);
    }
    EXPECT_EQ(n.status().code(), absl::StatusCode::kResourceExhausted) << n.status();
    n = co_await Recv(fd, big);
    EXPECT_EQ(n.value_or(0), 1u) << n.status();
  }(fds[0]));
  ::close(fds[0]);
  ::close(fds[1]);
}

ETSMGR_INSTANTIATE_ON_ALL_BACKENDS(IoOutOfMemoryTest);

}  // namespace
}  // namespace etsmgr
