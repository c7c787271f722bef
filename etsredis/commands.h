// etsredis's commands: what a request does to the keyspace, and its RESP2 reply.
//
// Supported (Redis's semantics and error wording unless said): PING [msg], ECHO msg, GET key,
// SET key value [NX|XX] [GET], DEL key..., EXISTS key..., INCR key, INCRBY key n, DECR key,
// DECRBY key n, MGET key..., MSET key value..., DBSIZE, FLUSHALL [ASYNC|SYNC], SELECT 0,
// QUIT, and for clients' start-up: CONFIG GET pattern (save, appendonly, maxclients, timeout,
// proto-max-bulk-len, databases...), CONFIG RESETSTAT, INFO [section], COMMAND [COUNT|DOCS|INFO]
// (empty answers), CLIENT SETNAME/GETNAME/ID.
// Not supported: key expiry (SET's EX/PX/EXAT/PXAT/KEEPTTL are refused with an error rather than
// ignored), other databases than 0, other data types. MSET sets every key, each atomically, but
// not all at once: a concurrent reader may see some keys set before the others (Redis's MSET is
// atomic); likewise MGET, DEL and EXISTS take each key atomically, not all at one moment, and a
// DEL that fails part-way says in its error how many keys it had deleted. A reply larger than
// ServerConfig::max_reply_bytes is refused with an error. An unknown command gets Redis's "ERR
// unknown command 'x', with args beginning with:".
#ifndef ETSREDIS_COMMANDS_H_
#define ETSREDIS_COMMANDS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "etsmgr/base/notifier.h"

namespace etsredis {

// Where keys live. Each call is atomic on its key. Errors other than the documented ones are
// replied as "-ERR <message>" (say, a shard's table that could not be reached).
class Keyspace {
 public:
  virtual ~Keyspace() = default;
  virtual absl::StatusOr<std::optional<std::string>> Get(const std::string& key) = 0;
  virtual absl::Status Set(const std::string& key, std::string value) = 0;
  // Sets only if absent; whether it did.
  virtual absl::StatusOr<bool> SetNew(const std::string& key, std::string value) = 0;
  // Runs `fn` on the key's value under the key's lock (an atomic read-modify-write): false when
  // the key is absent and `if_absent` is unset; with `if_absent` an absent key is first created
  // with that value.
  virtual absl::StatusOr<bool> Modify(const std::string& key,
                                      const std::function<void(std::string&)>& fn,
                                      std::optional<std::string> if_absent) = 0;
  virtual absl::StatusOr<bool> Erase(const std::string& key) = 0;
  virtual absl::StatusOr<bool> Exists(const std::string& key) = 0;
  virtual absl::StatusOr<size_t> Size() = 0;
  virtual absl::Status Clear() = 0;
  // Whether Set(key, value) could store this pair (a keyspace with bounded keys or values says
  // why not), so a multi-key write checks every pair before its first write.
  virtual absl::Status CheckWrite(const std::string& /*key*/, const std::string& /*value*/) {
    return absl::OkStatus();
  }
};

// What CONFIG GET and INFO report.
struct ServerConfig {
  std::string bind = "127.0.0.1";
  int port = 6379;
  int max_clients = 10000;
  int64_t timeout_seconds = 0;
  uint64_t proto_max_bulk_len = uint64_t{512} << 20;
  // The largest reply one request may build (MGET of many big values): beyond it the request
  // gets an error instead, so one request cannot take unbounded memory.
  uint64_t max_reply_bytes = (uint64_t{512} << 20) + (uint64_t{1} << 20);
  int shards = 1;
  std::string backend;
};
struct ServerStats {
  std::atomic<int64_t> connected_clients{0};
  std::atomic<uint64_t> total_connections{0};
  std::atomic<uint64_t> total_commands{0};
  std::atomic<uint64_t> shard_opens{0};  // Times a shard got its table (start or restart).
  // Notified after each change of connected_clients and shard_opens (to wait for a state:
  // changed.WaitUntil(condition, deadline)).
  mutable etsmgr::Notifier changed;
};

struct CommandContext {
  Keyspace* keyspace = nullptr;
  const ServerConfig* config = nullptr;
  ServerStats* stats = nullptr;
  std::string client_name;  // CLIENT SETNAME, per connection.
  int64_t client_id = 0;
  // Connections the listener refused (max clients), for INFO; unset: 0.
  std::function<uint64_t()> rejected_connections;
};

enum class AfterCommand { kContinue, kClose };

// Runs one request (args non-empty) and appends its reply to `out`.
AfterCommand Execute(const std::vector<std::string>& args, CommandContext& context,
                     std::string& out);

}  // namespace etsredis

#endif  // ETSREDIS_COMMANDS_H_
