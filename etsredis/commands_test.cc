#include "etsredis/commands.h"

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "etsredis/map_keyspace.h"
#include "gtest/gtest.h"

namespace etsredis {
namespace {

class CommandsTest : public ::testing::Test {
 protected:
  CommandsTest() {
    context_.keyspace = &keyspace_;
    context_.config = &config_;
    context_.stats = &stats_;
  }
  // The reply to one command, as sent.
  std::string Run(std::vector<std::string> args) {
    std::string out;
    last_ = Execute(args, context_, out);
    return out;
  }
  MapKeyspace keyspace_;
  ServerConfig config_;
  ServerStats stats_;
  CommandContext context_;
  AfterCommand last_ = AfterCommand::kContinue;
};

// A keyspace whose Erase of "unreachable" fails (a shard's table that could not be reached).
class EraseFailsKeyspace final : public Keyspace {
 public:
  absl::StatusOr<std::optional<std::string>> Get(const std::string& k) override {
    return map.Get(k);
  }
  absl::Status Set(const std::string& k, std::string v) override {
    return map.Set(k, std::move(v));
  }
  absl::StatusOr<bool> SetNew(const std::string& k, std::string v) override {
    return map.SetNew(k, std::move(v));
  }
  absl::StatusOr<bool> Modify(const std::string& k, const std::function<void(std::string&)>& fn,
                              std::optional<std::string> if_absent) override {
    return map.Modify(k, fn, std::move(if_absent));
  }
  absl::StatusOr<bool> Erase(const std::string& k) override {
    if (k == "unreachable") return absl::UnavailableError("shard 3 is restarting");
    return map.Erase(k);
  }
  absl::StatusOr<bool> Exists(const std::string& k) override { return map.Exists(k); }
  absl::StatusOr<size_t> Size() override { return map.Size(); }
  absl::Status Clear() override { return map.Clear(); }
  MapKeyspace map;
};

// DEL is not all or nothing (each key on its own): one that fails after deleting some keys says
// so in its error, instead of an error that reads as "nothing happened".
TEST_F(CommandsTest, ADelThatFailsPartWaySaysWhatItDeleted) {
  EraseFailsKeyspace keyspace;
  context_.keyspace = &keyspace;
  EXPECT_EQ(Run({"MSET", "a", "1", "b", "2"}), "+OK\r\n");
  EXPECT_EQ(Run({"DEL", "unreachable", "a"}), "-ERR shard 3 is restarting\r\n");
  EXPECT_EQ(Run({"EXISTS", "a"}), ":1\r\n");
  EXPECT_EQ(Run({"DEL", "a", "b", "unreachable"}),
            "-ERR deleted 2 key(s), then: shard 3 is restarting\r\n");
  EXPECT_EQ(Run({"EXISTS", "a", "b"}), ":0\r\n");
  context_.keyspace = &keyspace_;
}

TEST_F(CommandsTest, PingEchoAndCaseInsensitiveNames) {
  EXPECT_EQ(Run({"PING"}), "+PONG\r\n");
  EXPECT_EQ(Run({"ping", "hi"}), "$2\r\nhi\r\n");
  EXPECT_EQ(Run({"PiNg", "a", "b"}), "-ERR wrong number of arguments for 'ping' command\r\n");
  EXPECT_EQ(Run({"echo", "x y"}), "$3\r\nx y\r\n");
  EXPECT_EQ(Run({"ECHO"}), "-ERR wrong number of arguments for 'echo' command\r\n");
}

TEST_F(CommandsTest, GetSetDelExists) {
  EXPECT_EQ(Run({"GET", "k"}), "$-1\r\n");
  EXPECT_EQ(Run({"SET", "k", "v"}), "+OK\r\n");
  EXPECT_EQ(Run({"GET", "k"}), "$1\r\nv\r\n");
  EXPECT_EQ(Run({"SET", "k", "w", "NX"}), "$-1\r\n");
  EXPECT_EQ(Run({"SET", "n", "1", "nx"}), "+OK\r\n");
  EXPECT_EQ(Run({"SET", "absent", "1", "XX"}), "$-1\r\n");
  EXPECT_EQ(Run({"SET", "k", "w", "XX"}), "+OK\r\n");
  EXPECT_EQ(Run({"SET", "k", "z", "GET"}), "$1\r\nw\r\n");
  EXPECT_EQ(Run({"SET", "new", "1", "GET"}), "$-1\r\n");
  EXPECT_EQ(Run({"SET", "new", "2", "NX", "GET"}), "$1\r\n1\r\n");
  EXPECT_EQ(Run({"SET", "k", "v", "NX", "XX"}), "-ERR syntax error\r\n");
  EXPECT_EQ(Run({"SET", "k", "v", "BOGUS"}), "-ERR syntax error\r\n");
  EXPECT_EQ(Run({"SET", "k", "v", "EX", "10"}),
            "-ERR SET EX is not supported: etsredis keys do not expire\r\n");
  EXPECT_EQ(Run({"GET", "k"}), "$1\r\nz\r\n");
  EXPECT_EQ(Run({"EXISTS", "k", "k", "nope"}), ":2\r\n");
  EXPECT_EQ(Run({"DEL", "k", "nope", "n"}), ":2\r\n");
  EXPECT_EQ(Run({"EXISTS", "k"}), ":0\r\n");
  EXPECT_EQ(Run({"GET"}), "-ERR wrong number of arguments for 'get' command\r\n");
  EXPECT_EQ(Run({"GET", "a", "b"}), "-ERR wrong number of arguments for 'get' command\r\n");
}

TEST_F(CommandsTest, Counters) {
  EXPECT_EQ(Run({"INCR", "c"}), ":1\r\n");
  EXPECT_EQ(Run({"INCRBY", "c", "41"}), ":42\r\n");
  EXPECT_EQ(Run({"DECR", "c"}), ":41\r\n");
  EXPECT_EQ(Run({"DECRBY", "c", "-9"}), ":50\r\n");
  EXPECT_EQ(Run({"GET", "c"}), "$2\r\n50\r\n");
  EXPECT_EQ(Run({"SET", "s", "abc"}), "+OK\r\n");
  EXPECT_EQ(Run({"INCR", "s"}), "-ERR value is not an integer or out of range\r\n");
  EXPECT_EQ(Run({"GET", "s"}), "$3\r\nabc\r\n");  // Unchanged.
  EXPECT_EQ(Run({"SET", "z", " 1"}), "+OK\r\n");
  EXPECT_EQ(Run({"INCR", "z"}), "-ERR value is not an integer or out of range\r\n");
  EXPECT_EQ(Run({"INCRBY", "c", "x"}), "-ERR value is not an integer or out of range\r\n");
  EXPECT_EQ(Run({"SET", "max", "9223372036854775807"}), "+OK\r\n");
  EXPECT_EQ(Run({"INCR", "max"}), "-ERR increment or decrement would overflow\r\n");
  EXPECT_EQ(Run({"SET", "min", "-9223372036854775808"}), "+OK\r\n");
  EXPECT_EQ(Run({"DECR", "min"}), "-ERR increment or decrement would overflow\r\n");
  EXPECT_EQ(Run({"DECRBY", "c", "-9223372036854775808"}), "-ERR decrement would overflow\r\n");
}

TEST_F(CommandsTest, MultiKeyAndKeyspace) {
  EXPECT_EQ(Run({"MSET", "a", "1", "b", "2"}), "+OK\r\n");
  EXPECT_EQ(Run({"MSET", "a", "1", "b"}), "-ERR wrong number of arguments for 'mset' command\r\n");
  EXPECT_EQ(Run({"MGET", "a", "x", "b"}), "*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n");
  EXPECT_EQ(Run({"DBSIZE"}), ":2\r\n");
  // A reply past max_reply_bytes is refused, not built.
  config_.max_reply_bytes = 1000;
  EXPECT_EQ(Run({"SET", "big", std::string(600, 'x')}), "+OK\r\n");
  EXPECT_EQ(Run({"MGET", "big"}).size(), 600u + 12);
  EXPECT_EQ(Run({"MGET", "big", "a", "big"}),
            "-ERR the reply would exceed max-reply-bytes (1000 bytes)\r\n");
  ASSERT_EQ(Run({"DEL", "big"}), ":1\r\n");
  EXPECT_EQ(Run({"FLUSHALL", "bogus"}), "-ERR syntax error\r\n");
  EXPECT_EQ(Run({"FLUSHALL", "ASYNC"}), "+OK\r\n");
  EXPECT_EQ(Run({"DBSIZE"}), ":0\r\n");
  EXPECT_EQ(Run({"SELECT", "0"}), "+OK\r\n");
  EXPECT_EQ(Run({"SELECT", "1"}), "-ERR DB index is out of range\r\n");
}

TEST_F(CommandsTest, WhatClientsAskAtStartUp) {
  EXPECT_EQ(Run({"CONFIG", "GET", "save"}), "*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
  EXPECT_EQ(Run({"config", "get", "appendonly"}), "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n");
  EXPECT_EQ(Run({"CONFIG", "GET", "nothing"}), "*0\r\n");
  EXPECT_EQ(Run({"CONFIG", "GET", "max*"}), "*2\r\n$10\r\nmaxclients\r\n$5\r\n10000\r\n");
  EXPECT_EQ(Run({"CONFIG", "SET", "x", "y"}), "-ERR CONFIG SET is not supported by etsredis\r\n");
  EXPECT_EQ(Run({"COMMAND", "DOCS"}), "*0\r\n");
  EXPECT_EQ(Run({"COMMAND", "COUNT"}), ":0\r\n");
  std::string info = Run({"INFO"});
  EXPECT_NE(info.find("redis_version:"), std::string::npos) << info;
  EXPECT_NE(info.find("# Keyspace"), std::string::npos) << info;
  EXPECT_EQ(Run({"INFO", "clients"}).find("# Server"), std::string::npos);
  EXPECT_EQ(Run({"CLIENT", "SETNAME", "me"}), "+OK\r\n");
  EXPECT_EQ(Run({"CLIENT", "GETNAME"}), "$2\r\nme\r\n");
}

TEST_F(CommandsTest, UnknownCommandAsRedisWordsIt) {
  EXPECT_EQ(Run({"FOO", "a", "b"}),
            "-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n");
  EXPECT_EQ(Run({"nope"}), "-ERR unknown command 'nope', with args beginning with: \r\n");
  // No line break can get into the reply; long names are cut.
  std::string reply = Run({"x\r\ny", std::string(300, 'a')});
  EXPECT_EQ(reply.find("\r\n"), reply.size() - 2);
  EXPECT_LT(reply.size(), 400u);
  EXPECT_EQ(last_, AfterCommand::kContinue);
}

TEST_F(CommandsTest, QuitCloses) {
  EXPECT_EQ(Run({"QUIT"}), "+OK\r\n");
  EXPECT_EQ(last_, AfterCommand::kClose);
}

}  // namespace
}  // namespace etsredis
