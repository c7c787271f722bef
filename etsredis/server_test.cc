// etsredis with real clients: redis-cli for every command, raw sockets for malformed input and
// limits, and redis-benchmark's load while shards (and the manager) are killed, with a check that
// every INCR a client saw acknowledged is in the final values. On both executor backends.
#include "etsredis/server.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "etsmgr/executor/testing/test_backends.h"
#include "etsmgr/executor/testing/test_sockets.h"
#include "etsmgr/manager/manager.h"
#include "etsmgr/process/testing/test_util.h"
#include "etsmgr/table/shared/test_names.h"
#include "gtest/gtest.h"

namespace etsredis {
namespace {

using ::etsmgr::test_sockets::Dial;

using etsmgr::BackendTest;

// Sends until all of `text` went or a send fails (say, SO_SNDTIMEO passes): the bytes sent.
size_t SendUntilStuck(int fd, std::string_view text) {
  size_t sent = 0;
  while (sent < text.size()) {
    ssize_t n = ::send(fd, text.data() + sent, text.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  return sent;
}

void SendText(int fd, const std::string& text) { (void)SendUntilStuck(fd, text); }

// Reads until `want` bytes came, the peer closed (sets *closed) or the 30 s timeout.
std::string RecvUpTo(int fd, size_t want, bool* closed = nullptr) {
  std::string got;
  char buf[4096];
  while (got.size() < want) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // A peer that closes with bytes of ours unread resets the connection (TCP's rule).
      if (closed != nullptr) *closed = n == 0 || errno == ECONNRESET;
      break;
    }
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

// Reads one line ("...\r\n") of a reply.
std::string RecvLine(int fd) {
  std::string line;
  char c;
  while (true) {
    ssize_t n = ::recv(fd, &c, 1, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return line;
    line.push_back(c);
    if (line.size() >= 2 && line.compare(line.size() - 2, 2, "\r\n") == 0) return line;
  }
}

// Runs a command line, and yields its output (stdout and stderr) and exit status.
std::pair<std::string, int> Shell(const std::string& command) {
  std::string out;
  FILE* f = ::popen((command + " 2>&1").c_str(), "r");
  if (f == nullptr) return {"popen failed", -1};
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  int status = ::pclose(f);
  return {out, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

class EtsredisTest : public BackendTest {
 public:
  void SetUp() override {
    BackendTest::SetUp();
    if (IsSkipped()) return;
    ASSERT_EQ(::access("/usr/bin/redis-cli", X_OK), 0)
        << "redis-cli is missing: tools/setup.sh installs redis-tools";
    etsmgr::RuntimeOptions options;
    options.schedulers = 2;
    options.backend = backend();
    node_ = etsmgr::Node::Create(options).value();
    ASSERT_TRUE(etsmgr::StartManager(*node_).ok());
  }
  void TearDown() override {
    if (server_ != nullptr) {
      EXPECT_TRUE(server_->Stop().ok());
    }
    server_.reset();
    if (node_ != nullptr) etsmgr::StopManager(*node_).IgnoreError();
    if (!shared_instance_.empty()) {
      // The shared mode's instance: its tables deleted (their segments go), then its directory.
      etsmgr::StopManager(*node_, shared_instance_, {.discard_tables = true}).IgnoreError();
      ::unlink(absl::StrCat("/dev/shm/etsmgr-directory-", shared_instance_).c_str());
      ::unlink(absl::StrCat("/dev/shm/.etsmgr-directory-", shared_instance_, ".owner").c_str());
    }
  }
  // Options for the shared mode, on a manager instance of this test's own (so no other test,
  // and no real server, ever sees its directory of shared tables).
  ServerOptions SharedOptions() {
    // Unique across parallel runs: sandboxed tests repeat each other's pids.
    shared_instance_ = etsmgr::shared_testing::UniqueSegmentName(absl::StrCat(
        "etsredis-test-", backend() == etsmgr::BackendPreference::kIoUring ? "uring" : "epoll"));
    EXPECT_TRUE(etsmgr::StartManager(*node_, shared_instance_).ok());
    ServerOptions options;
    options.shared = shared_instance_;
    options.instance = shared_instance_;
    return options;
  }
  void StartServer(ServerOptions options = {}) {
    if (options.shards == 0) options.shards = 4;
    absl::StatusOr<std::unique_ptr<Server>> s = Server::Start(*node_, options);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
    port_ = server_->address().port();
  }
  std::string Cli(const std::string& args) {
    auto [out, status] = Shell(absl::StrCat("/usr/bin/redis-cli -p ", port_, " ", args));
    EXPECT_EQ(status, 0) << args << ": " << out;
    return out;
  }

  std::unique_ptr<etsmgr::Node> node_;
  std::unique_ptr<Server> server_;
  int port_ = 0;
  std::string shared_instance_;
};

TEST_P(EtsredisTest, EveryCommandThroughRedisCli) {
  StartServer();
  EXPECT_EQ(Cli("PING"), "PONG\n");
  EXPECT_EQ(Cli("PING hello"), "hello\n");
  EXPECT_EQ(Cli("ECHO 'a b'"), "a b\n");
  EXPECT_EQ(Cli("SET k v"), "OK\n");
  EXPECT_EQ(Cli("GET k"), "v\n");
  EXPECT_EQ(Cli("GET missing"), "\n");
  EXPECT_EQ(Cli("SET k w NX"), "\n");
  EXPECT_EQ(Cli("SET k w XX GET"), "v\n");
  EXPECT_EQ(Cli("INCR n"), "1\n");
  EXPECT_EQ(Cli("INCRBY n 41"), "42\n");
  EXPECT_EQ(Cli("DECR n"), "41\n");
  EXPECT_EQ(Cli("DECRBY n 40"), "1\n");
  EXPECT_EQ(Cli("INCR k"), "ERR value is not an integer or out of range\n\n");
  EXPECT_EQ(Cli("MSET a 1 b 2 c 3"), "OK\n");
  EXPECT_EQ(Cli("MGET a b nope c"), "1\n2\n\n3\n");
  EXPECT_EQ(Cli("EXISTS a b nope"), "2\n");
  EXPECT_EQ(Cli("DEL a nope"), "1\n");
  EXPECT_EQ(Cli("DBSIZE"), "4\n");
  EXPECT_EQ(Cli("FLUSHALL"), "OK\n");
  EXPECT_EQ(Cli("DBSIZE"), "0\n");
  EXPECT_EQ(Cli("CONFIG GET save"), "save\n\n");
  EXPECT_NE(Cli("INFO").find("redis_version:"), std::string::npos);
  // (redis-cli prints an error reply with a blank line after it.)
  EXPECT_EQ(Cli("FOO bar"), "ERR unknown command 'FOO', with args beginning with: 'bar' \n\n");
  EXPECT_EQ(Cli("GET"), "ERR wrong number of arguments for 'get' command\n\n");
  // Piped commands (redis-cli sends them pipelined) and a binary-safe value.
  EXPECT_EQ(
      Shell(absl::StrCat("printf 'SET x 1\\nINCR x\\nGET x\\n' | /usr/bin/redis-cli -p ", port_))
          .first,
      "OK\n2\n2\n");
  // A binary value, through redis-cli's quoting.
  EXPECT_EQ(Shell(absl::StrCat("printf 'SET bin \"a\\\\x00b\"\\nGET bin\\n' | /usr/bin/redis-cli "
                               "--no-raw -p ",
                               port_))
                .first,
            "OK\n\"a\\x00b\"\n");
}

TEST_P(EtsredisTest, MalformedInputGetsAProtocolErrorAndOnlyThatConnectionCloses) {
  StartServer();
  int bystander = Dial(server_->address());
  SendText(bystander, "PING\r\n");
  ASSERT_EQ(RecvLine(bystander), "+PONG\r\n");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"*x\r\n", "-ERR Protocol error: invalid multibulk length\r\n"},
      {"*1\r\n:1\r\n", "-ERR Protocol error: expected '$', got ':'\r\n"},
      {"*2\r\n$3\r\nGET\r\n$-5\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
      {"*1\r\n$999999999999\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
      {"ECHO \"unbalanced\r\n", "-ERR Protocol error: unbalanced quotes in request\r\n"},
      // Requests before the bad one are answered first.
      {"PING\r\n*1\r\n*1\r\n", "+PONG\r\n-ERR Protocol error: expected '$', got '*'\r\n"},
  };
  for (const auto& [input, reply] : cases) {
    SCOPED_TRACE(input);
    int fd = Dial(server_->address());
    SendText(fd, input);
    bool closed = false;
    EXPECT_EQ(RecvUpTo(fd, 1 << 20, &closed), reply);
    EXPECT_TRUE(closed);
    ::close(fd);
  }
  SendText(bystander, "*2\r\n$4\r\nECHO\r\n$2\r\nok\r\n");
  EXPECT_EQ(RecvUpTo(bystander, 8), "$2\r\nok\r\n");
  ::close(bystander);
}

// After a protocol error the server half-closes (the client reads the reply, then end of stream)
// and goes on reading what the client still sends for a while, so its close does not reset a
// client that has not read its error yet: the client's later writes do not fail.
TEST_P(EtsredisTest, AProtocolErrorEndsWithAFinNotAReset) {
  StartServer();
  int fd = Dial(server_->address());
  SendText(fd, "*x\r\n");
  bool closed = false;
  EXPECT_EQ(RecvUpTo(fd, 1 << 20, &closed), "-ERR Protocol error: invalid multibulk length\r\n");
  EXPECT_TRUE(closed);
  // Still sending after the end of stream: a server that had closed would answer with a reset,
  // and the second write would fail (EPIPE or ECONNRESET).
  const std::string more(1000, 'x');
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(::send(fd, more.data(), more.size(), MSG_NOSIGNAL), static_cast<ssize_t>(more.size()))
        << "write " << i << ": " << std::strerror(errno);
    char c;
    EXPECT_EQ(::recv(fd, &c, 1, 0), 0);  // Still the end of stream, not a reset.
  }
  ::close(fd);
}

TEST_P(EtsredisTest, LimitsOnBulksAndBuffersKeepMemoryBounded) {
  ServerOptions options;
  options.limits.max_bulk = 1 << 20;
  options.limits.max_buffer = 256 << 10;
  StartServer(options);
  // A bulk over the limit is refused from its header, before any of its bytes.
  int fd = Dial(server_->address());
  SendText(fd, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1048577\r\n");
  bool closed = false;
  EXPECT_EQ(RecvUpTo(fd, 1 << 20, &closed), "-ERR Protocol error: invalid bulk length\r\n");
  EXPECT_TRUE(closed);
  ::close(fd);
  // One within the bulk limit but over the buffer cap: refused once the cap is passed.
  fd = Dial(server_->address());
  SendText(fd, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000000\r\n");
  SendText(fd, std::string(300 << 10, 'x'));
  closed = false;
  EXPECT_EQ(RecvUpTo(fd, 1 << 20, &closed),
            "-ERR Protocol error: request buffer limit of 262144 bytes exceeded\r\n");
  EXPECT_TRUE(closed);
  ::close(fd);
  // Within both: stored.
  fd = Dial(server_->address());
  std::string value(200 << 10, 'v');
  SendText(fd, absl::StrCat("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$", value.size(), "\r\n", value,
                            "\r\n*2\r\n$6\r\nSTRLEN\r\n$1\r\nk\r\n*1\r\n$6\r\nDBSIZE\r\n"));
  EXPECT_EQ(RecvLine(fd), "+OK\r\n");
  EXPECT_EQ(RecvLine(fd).substr(0, 24), "-ERR unknown command 'ST");
  EXPECT_EQ(RecvLine(fd), ":1\r\n");
  ::close(fd);
}

// The idle timeout bounds a send that makes no progress, not a whole reply (Redis counts every
// write as interaction): a client that reads a 32 MiB reply steadily, in more time than the
// timeout in all, gets all of it. (The client paces its reads with sleeps: that is the
// behaviour under test, not a wait for an event.)
TEST_P(EtsredisTest, AClientReadingABigReplySteadilyIsNotTimedOut) {
  ServerOptions options;
  options.idle_timeout = absl::Milliseconds(300);
  StartServer(options);
  const size_t kValue = size_t{32} << 20;
  // Made before the connection: under ThreadSanitizer making 64 MiB of strings took longer than
  // the idle timeout, which then closed the connection before its first byte came.
  const std::string set = absl::StrCat("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$", kValue, "\r\n",
                                       std::string(kValue, 'v'), "\r\n");
  int fd = Dial(server_->address());
  SendText(fd, set);
  ASSERT_EQ(RecvLine(fd), "+OK\r\n");
  SendText(fd, "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
  const size_t want = absl::StrCat("$", kValue, "\r\n").size() + kValue + 2;
  size_t got = 0;
  bool closed = false;
  const auto start = std::chrono::steady_clock::now();
  while (got < want && !closed) {
    const size_t piece =
        RecvUpTo(fd, std::min<size_t>(size_t{1} << 20, want - got), &closed).size();
    if (piece == 0) break;
    got += piece;
    std::this_thread::sleep_for(std::chrono::milliseconds(40));
  }
  EXPECT_EQ(got, want);
  EXPECT_FALSE(closed);
  EXPECT_GT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(600));
  ::close(fd);
}

// A pipeline of `count` ECHOs of a 1000-byte payload, and the replies it must get.
std::pair<std::string, std::string> EchoPipeline(int count) {
  const std::string payload(1000, 'p');
  const std::string one = absl::StrCat("*2\r\n$4\r\nECHO\r\n$1000\r\n", payload, "\r\n");
  const std::string reply = absl::StrCat("$1000\r\n", payload, "\r\n");
  std::string requests;
  std::string replies;
  requests.reserve(one.size() * count);
  replies.reserve(reply.size() * count);
  for (int i = 0; i < count; ++i) {
    requests += one;
    replies += reply;
  }
  return {requests, replies};
}

// A client may write its whole pipeline before it reads a reply (redis-py's and Jedis's
// pipelines do; Redis keeps reading while the replies wait): 40 MB each way, far more than the
// sockets' buffers hold in either direction. The server stopped reading while a send of its
// replies waited: both sides then waited for ever.
TEST_P(EtsredisTest, AClientThatWritesItsWholePipelineBeforeReadingGetsEveryReply) {
  StartServer();
  int fd = Dial(server_->address());
  timeval tv{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  // (Named pieces, not a structured binding: clang 14 cannot capture one in a lambda.)
  const std::pair<std::string, std::string> pipeline = EchoPipeline(40'000);
  const std::string& requests = pipeline.first;
  const std::string& replies = pipeline.second;
  ASSERT_EQ(SendUntilStuck(fd, requests), requests.size())
      << "the server stopped reading while its replies waited";
  const std::string got = RecvUpTo(fd, replies.size());
  EXPECT_EQ(got.size(), replies.size());
  EXPECT_TRUE(got == replies) << "the replies differ from the pipeline's, or came out of order";
  ::close(fd);
}

// Past max_pending_reply_bytes of replies waiting, the client's requests stop being read (its
// writes then stop), and start again as it reads: every reply comes, in order.
TEST_P(EtsredisTest, PastThePendingReplyLimitTheClientIsPushedBackAndThenServedInOrder) {
  ServerOptions options;
  options.max_pending_reply_bytes = 64 << 10;
  StartServer(options);
  int fd = Dial(server_->address());
  timeval tv{1, 0};  // How long a write that takes nothing counts as pushed back.
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  const std::pair<std::string, std::string> pipeline = EchoPipeline(50'000);
  const std::string& requests = pipeline.first;
  const std::string& replies = pipeline.second;
  const size_t first = SendUntilStuck(fd, requests);
  EXPECT_LT(first, requests.size()) << "the server read 50 MB of requests without a reply read";
  std::thread rest([fd, first, &requests] {
    timeval forever{30, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &forever, sizeof forever);
    EXPECT_EQ(first + SendUntilStuck(fd, std::string_view(requests).substr(first)),
              requests.size());
  });
  const std::string got = RecvUpTo(fd, replies.size());
  rest.join();
  EXPECT_EQ(got.size(), replies.size());
  EXPECT_TRUE(got == replies) << "the replies differ from the pipeline's, or came out of order";
  ::close(fd);
}

TEST_P(EtsredisTest, TooManyClientsAreRefusedAndIdleOnesClosed) {
  ServerOptions options;
  options.max_clients = 2;
  options.idle_timeout = absl::Milliseconds(300);
  StartServer(options);
  int a = Dial(server_->address()), b = Dial(server_->address());
  SendText(a, "PING\r\n");
  SendText(b, "PING\r\n");
  ASSERT_EQ(RecvLine(a), "+PONG\r\n");
  ASSERT_EQ(RecvLine(b), "+PONG\r\n");
  int c = Dial(server_->address());
  bool closed = false;
  EXPECT_EQ(RecvUpTo(c, 1 << 10, &closed), "-ERR max number of clients reached\r\n");
  EXPECT_TRUE(closed);
  ::close(c);
  // Idle ones are closed (without a reply, as Redis does): both go, then a new one is served.
  closed = false;
  EXPECT_EQ(RecvUpTo(a, 1, &closed), "");
  EXPECT_TRUE(closed);
  closed = false;
  EXPECT_EQ(RecvUpTo(b, 1, &closed), "");
  EXPECT_TRUE(closed);
  ::close(a);
  ::close(b);
  // The listener's count (what max_clients is held against) drops when a connection's process
  // has gone, a little after the connection's own count.
  const etsmgr::ListenerStats& listener = server_->listener_stats();
  ASSERT_TRUE(listener.changed.WaitUntil([&] { return listener.live.load() == 0; },
                                         absl::Now() + absl::Seconds(30)));
  int d = Dial(server_->address());
  SendText(d, "PING\r\n");
  EXPECT_EQ(RecvLine(d), "+PONG\r\n");
  ::close(d);
}

// The promise under load: shards (and the manager) are killed again and again while
// redis-benchmark and counting clients run; every INCR a client saw acknowledged is in the final
// values, no reply is an error, and every connection stays usable.
// redis-benchmark load and counting clients while shards (and now and then the manager) are
// killed for `seconds`: every INCR a client saw acknowledged is in the final values.
void ShardCrashesUnderLoad(EtsredisTest& test, ServerOptions options, int seconds);

TEST_P(EtsredisTest, ShardCrashesUnderLoadLoseNoAcknowledgedWrite) {
  ShardCrashesUnderLoad(*this, ServerOptions(), /*seconds=*/4);
}

// The same with the shared-memory tables (--shared): a shard's table is a segment.
TEST_P(EtsredisTest, ShardCrashesInTheSharedModeLoseNoAcknowledgedWrite) {
  ServerOptions options = SharedOptions();
  ShardCrashesUnderLoad(*this, options, /*seconds=*/2);
  if (server_ != nullptr) {
    EXPECT_TRUE(server_->Stop().ok());
  }
  server_.reset();
  etsmgr::StopManager(*node_, options.instance, {.discard_tables = true}).IgnoreError();
  for (int i = 0; i < 4; ++i) {
    EXPECT_NE(::access(absl::StrCat("/dev/shm/", Server::SegmentName(options.shared, i, 4)).c_str(),
                       F_OK),
              0)
        << "a discarded table's segment is removed";
  }
}

// Bounded keys and values in the shared mode: a write that cannot be stored is an error with
// nothing written (MSET checks every pair first); a key too long to be stored reads as absent.
TEST_P(EtsredisTest, TheSharedModeRefusesWhatItCannotStoreWithoutWritingPartOfIt) {
  StartServer(SharedOptions());
  const std::string long_key(201, 'k');
  const std::string long_value(1021, 'v');
  EXPECT_NE(Cli("MSET a 1 b " + long_value).find("at most 1020 bytes per value"),
            std::string::npos);
  EXPECT_NE(Cli("MSET a 1 " + long_key + " 2").find("at most 200 bytes per key"),
            std::string::npos);
  EXPECT_EQ(Cli("EXISTS a"), "0\n");
  EXPECT_EQ(Cli("SET a 1"), "OK\n");
  EXPECT_NE(Cli("SET a " + long_value + " XX").find("per value"), std::string::npos);
  EXPECT_EQ(Cli("GET a"), "1\n");
  EXPECT_EQ(Cli("GET " + long_key), "\n");  // nil: it cannot be there
  EXPECT_EQ(Cli("EXISTS a " + long_key), "1\n");
  EXPECT_EQ(Cli("DEL a " + long_key), "1\n");
  EXPECT_EQ(Cli("SET '' empty"), "OK\n");  // The empty key, and a value of 1020 bytes.
  EXPECT_EQ(Cli("SET big " + std::string(1020, 'v')), "OK\n");
  EXPECT_EQ(Cli("DBSIZE"), "2\n");
}

void ShardCrashesUnderLoad(EtsredisTest& test, ServerOptions options, int seconds) {
  test.StartServer(options);
  if (::testing::Test::HasFatalFailure()) return;
  std::unique_ptr<etsmgr::Node>& node_ = test.node_;
  const std::string manager_name = etsmgr::Etsmgr(options.instance).server_name();
  std::unique_ptr<Server>& server_ = test.server_;
  const int port_ = test.port_;
  // Every shard's first open counted (Start returns once each has published, which comes just
  // before its count), so each wait below is for a restart.
  ASSERT_TRUE(server_->stats().changed.WaitUntil(
      [&] {
        return server_->stats().shard_opens.load() >= static_cast<uint64_t>(server_->shards());
      },
      absl::Now() + absl::Seconds(30)));
  std::atomic<bool> stop{false};
  // redis-benchmark in the background for the whole run.
  std::thread bench([&] {
    while (!stop.load()) {
      auto [out, status] = Shell(absl::StrCat("/usr/bin/redis-benchmark -p ", port_,
                                              " -q -t set,get,incr -n 20000 -c 10 -P 4 -r 1000"));
      EXPECT_EQ(status, 0) << out;
    }
  });
  constexpr int kClients = 3, kKeys = 32, kBatch = 8;
  std::vector<std::map<std::string, int64_t>> acked(kClients);
  std::atomic<uint64_t> acks{0};  // every client's, to tell which kills writes overlapped
  std::atomic<int> errors{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      int fd = Dial(server_->address());
      std::map<std::string, int64_t> last;
      uint64_t i = 0;
      while (!stop.load()) {
        std::string batch;
        std::vector<std::string> keys;
        for (int j = 0; j < kBatch; ++j, ++i) {
          keys.push_back(absl::StrCat("counter:", (i * 7 + c) % kKeys));
          batch += absl::StrCat("*2\r\n$4\r\nINCR\r\n$", keys.back().size(), "\r\n", keys.back(),
                                "\r\n");
        }
        SendText(fd, batch);
        for (const std::string& key : keys) {
          std::string line = RecvLine(fd);
          int64_t v = 0;
          if (line.size() < 3 || line[0] != ':' ||
              !absl::SimpleAtoi(line.substr(1, line.size() - 3), &v)) {
            ADD_FAILURE() << "INCR " << key << " got '" << line << "'";
            errors.fetch_add(1);
            stop.store(true);
            break;
          }
          // Values a client sees for a key only grow.
          EXPECT_GT(v, last[key]) << key;
          last[key] = v;
          ++acked[c][key];
          acks.fetch_add(1, std::memory_order_relaxed);
        }
      }
      ::close(fd);
    });
  }
  // A failed assertion below returns early: the threads are stopped and joined all the same.
  struct JoinAll {
    std::atomic<bool>& stop;
    std::thread& bench;
    std::vector<std::thread>& clients;
    ~JoinAll() {
      stop.store(true);
      for (std::thread& t : clients) {
        if (t.joinable()) t.join();
      }
      if (bench.joinable()) bench.join();
    }
  } join_all{stop, bench, clients};
  int kills = 0, manager_kills = 0;
  int overlapped = 0;  // kills between which and the victim's successor writes were acknowledged
  const auto start = std::chrono::steady_clock::now();
  const auto end = start + std::chrono::seconds(seconds);
  // The manager once a second from half a second in, within its instance's restart intensity
  // (10 in 10 s): by the clock, not every Nth round (a round under TSan can take 100 ms, and a
  // two-second run then never reached its 25th round).
  auto next_manager_kill = start + std::chrono::milliseconds(500);
  for (int round = 0; std::chrono::steady_clock::now() < end && !stop.load(); ++round) {
    const auto now = std::chrono::steady_clock::now();
    const bool manager_due = manager_kills < 5 && now >= next_manager_kill;
    if (manager_due) next_manager_kill = now + std::chrono::seconds(1);
    std::string name = manager_due ? manager_name : Server::ShardName(round % server_->shards());
    // Each restart below was waited for, but a kill loop this fast can exhaust the shards'
    // supervisor's intensity (1000 in 1 s), which then restarts as a whole: wait for the name.
    absl::StatusOr<std::optional<etsmgr::Pid>> found =
        node_->Run<std::optional<etsmgr::Pid>>([name](etsmgr::Process& self) {
          return self.WaitForRegistered(name, etsmgr::Deadline(absl::Seconds(30)));
        });
    ASSERT_TRUE(found.ok() && found->has_value()) << name << ": not registered again";
    etsmgr::Pid victim = **found;
    const uint64_t opens = server_->stats().shard_opens.load();
    const uint64_t acks_before = acks.load();
    etsmgr::SendExit(victim, etsmgr::ExitReason::Kill());
    (name == manager_name ? manager_kills : kills)++;
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    if (name == manager_name) {
      // Its death, then its successor (WaitForManager wakes on the registration).
      etsmgr::AwaitDeath(*node_, victim);
      const std::string instance = options.instance;
      absl::StatusOr<etsmgr::Pid> up = node_->Run<absl::StatusOr<etsmgr::Pid>>(
          [instance](etsmgr::Process& self) -> etsmgr::Task<absl::StatusOr<etsmgr::Pid>> {
            etsmgr::Etsmgr mgr(instance);
            co_return co_await mgr.WaitForManager(self, etsmgr::Deadline(absl::Seconds(30)));
          });
      ASSERT_TRUE(up.ok() && *up != victim) << up.status();
    } else {
      // A shard is killed again once its replacement has its table back (a restart cycle, not
      // a crash loop the shards' supervisor would give up on).
      ASSERT_TRUE(server_->stats().changed.WaitUntil(
          [&] { return server_->stats().shard_opens.load() > opens; }, deadline))
          << name;
    }
    if (acks.load() > acks_before) ++overlapped;
  }
  stop.store(true);
  for (std::thread& t : clients) t.join();
  bench.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_GE(kills, 5 * seconds);
  EXPECT_GE(manager_kills, seconds / 2);
  // The kills met the writes they are about (writes acknowledged while a victim was down or
  // coming back), most of them.
  EXPECT_GE(overlapped, (kills + manager_kills) / 2)
      << overlapped << " of " << kills + manager_kills << " kills overlapped acknowledged writes";
  std::printf("%d of %d kills overlapped acknowledged writes (%llu acknowledged)\n", overlapped,
              kills + manager_kills, static_cast<unsigned long long>(acks.load()));
  std::map<std::string, int64_t> total;
  for (const auto& m : acked) {
    for (const auto& [k, n] : m) total[k] += n;
  }
  ASSERT_FALSE(total.empty());
  int fd = Dial(server_->address());
  for (const auto& [key, n] : total) {
    SendText(fd, absl::StrCat("GET ", key, "\r\n"));
    std::string header = RecvLine(fd);
    std::string value = RecvLine(fd);
    EXPECT_EQ(value, absl::StrCat(n, "\r\n")) << key << " after " << kills << " shard kills";
  }
  ::close(fd);
  const std::string instance = options.instance;
  absl::StatusOr<etsmgr::ManagerInfo> info = node_->Run<absl::StatusOr<etsmgr::ManagerInfo>>(
      [instance](etsmgr::Process& self) -> etsmgr::Task<absl::StatusOr<etsmgr::ManagerInfo>> {
        etsmgr::Etsmgr mgr(instance);  // Alive until the call is done.
        co_return co_await mgr.Info(self);
      });
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->counters.tables_lost, 0u);
  EXPECT_GE(info->counters.hand_backs, static_cast<uint64_t>(kills) / 2);
}

TEST_P(EtsredisTest, StopClosesConnectionsAndKeepsTheTablesWithTheManager) {
  StartServer();
  EXPECT_EQ(Cli("SET kept 1"), "OK\n");
  int fd = Dial(server_->address());
  ASSERT_TRUE(server_->Stop().ok());
  bool closed = false;
  EXPECT_EQ(RecvUpTo(fd, 1, &closed), "");
  EXPECT_TRUE(closed);
  ::close(fd);
  server_.reset();
  // A new server on the same instance finds the data.
  StartServer();
  EXPECT_EQ(Cli("GET kept"), "1\n");
}

TEST_P(EtsredisTest, AnotherShardCountOnTheSameInstanceIsRefused) {
  StartServer();  // 4 shards.
  EXPECT_EQ(Cli("SET k 1"), "OK\n");
  ASSERT_TRUE(server_->Stop().ok());
  server_.reset();
  ServerOptions two;
  two.shards = 2;
  absl::StatusOr<std::unique_ptr<Server>> s = Server::Start(*node_, two);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition) << s.status();
  EXPECT_NE(s.status().message().find("another shard count than 2"), std::string::npos)
      << s.status();
  StartServer();  // The same count: the data is there.
  EXPECT_EQ(Cli("GET k"), "1\n");
}

TEST_P(EtsredisTest, BadOptionsAreInvalidArgument) {
  for (auto change : std::vector<std::function<void(ServerOptions&)>>{
           [](ServerOptions& o) { o.shards = -1; },
           [](ServerOptions& o) { o.shards = 5000; },
           [](ServerOptions& o) { o.max_clients = 0; },
           [](ServerOptions& o) { o.idle_timeout = absl::Seconds(-1); },
           [](ServerOptions& o) { o.limits.max_buffer = 10; },
           [](ServerOptions& o) { o.max_pending_reply_bytes = 100; },
       }) {
    ServerOptions o;
    change(o);
    absl::StatusOr<std::unique_ptr<Server>> s = Server::Start(*node_, o);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << s.status();
  }
  ServerOptions taken;
  taken.listen.port = 1;  // Privileged or taken: a clear error naming the address.
  taken.listen.host = "256.0.0.1";
  absl::StatusOr<std::unique_ptr<Server>> s = Server::Start(*node_, taken);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("256.0.0.1"), std::string::npos) << s.status();
}

ETSMGR_INSTANTIATE_ON_ALL_BACKENDS(EtsredisTest);

}  // namespace
}  // namespace etsredis
