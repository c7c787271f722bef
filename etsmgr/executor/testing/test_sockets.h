// Test helpers for socket tests (executor, process and listener I/O, etsredis): the process's
// open descriptors and a blocking client connection (states are awaited through events: see
// etsmgr/base/notifier.h).
#ifndef ETSMGR_EXECUTOR_TESTING_TEST_SOCKETS_H_
#define ETSMGR_EXECUTOR_TESTING_TEST_SOCKETS_H_

#include <dirent.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cerrno>
#include <cstring>

#include "etsmgr/executor/io.h"
#include "gtest/gtest.h"

namespace etsmgr::test_sockets {

// Descriptors the process has open now.
inline int OpenFds() {
  int n = 0;
  DIR* dir = ::opendir("/proc/self/fd");
  while (dirent* e = ::readdir(dir)) n += e->d_name[0] != '.';
  ::closedir(dir);
  return n - 1;  // The directory's own descriptor.
}

// A blocking client socket connected to `address`, with a receive timeout so a test cannot hang.
inline int Dial(const SocketAddress& address) {
  int fd = ::socket(address.storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  int rc;
  do {
    rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&address.storage), address.length);
  } while (rc < 0 && errno == EINTR);
  EXPECT_EQ(rc, 0) << strerror(errno);
  return fd;
}

}  // namespace etsmgr::test_sockets

#endif  // ETSMGR_EXECUTOR_TESTING_TEST_SOCKETS_H_
