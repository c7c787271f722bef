// etsredis: a Redis-protocol (RESP2) key-value server on managed tables.
//
//   std::unique_ptr<Node> node = Node::Create({}).value();
//   StartManager(*node);                                  // the table manager's instance
//   auto server = etsredis::Server::Start(*node, {.listen = {.port = 6379}}).value();
//   ... redis-cli -p 6379 set k v ...
//   server->Stop();
//
// Shape (one supervision tree, registered "etsredis_sup", one_for_one):
//   - "shards": a supervisor of `shards` processes "etsredis_shard_<i>". Each owns one managed
//     table "etsredis/<i>-of-<shards>" (a public set of string -> string, the instance its heir)
//     for the keys that hash to it. Start refuses (FailedPrecondition) an instance holding the
//     tables of another shard count. A shard that crashes is restarted and gets its table back from
//     the manager, with every write that was acknowledged; a manager restart is ridden out
//     (ManagedTable::Handle).
//   - the listener (etsmgr/net/listener.h): an acceptor and one process per connection.
// With ServerOptions::shared the shards' tables keep their data in shared-memory segments
// (bounded keys and values: SharedKey, SharedValue), and the keyspace survives a kill -9 of the
// whole server process.
// A connection parses requests (resp.h), routes each key to its shard's table and runs the
// command on that table itself: the table is public, and table calls run in the calling process,
// as ETS services do. So a request never waits for a shard process, and a shard's crash does not
// interrupt one: the table is not touched by the crash (the instance holds it until the shard is
// back), so every reply is the table's truth, and no request fails because of it. Should a
// table be unreachable (say, deleted from outside), the request gets "-ERR" with the reason,
// never a wrong value, and the connection stays usable.
//
// Limits: `max_clients` live connections (the next gets "-ERR max number of clients reached"
// and is closed); an idle connection is closed after `idle_timeout` (0: never, as Redis's
// `timeout 0`); request limits in ParserLimits (a protocol error is replied, then the
// connection closed, as Redis does: with a FIN after the reply, the client's further input read
// and dropped for up to 2 s, so the close never resets a client that has not read its error).
// Replies are sent as the socket takes them, and requests keep being read and run while replies
// wait (a client may write its whole pipeline before it reads a reply, as Redis allows), until
// `max_pending_reply_bytes` wait: then the client stops being read until it reads (TCP pushes
// back), so a connection's memory stays bounded: by about four times (limit + one reply) at
// worst, since the reply buffer keeps what it sent until half of it went and grows by doubling.
#ifndef ETSREDIS_SERVER_H_
#define ETSREDIS_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "etsmgr/executor/io.h"
#include "etsmgr/net/listener.h"
#include "etsmgr/process/node.h"
#include "etsmgr/table/shared/shared_string.h"
#include "etsredis/commands.h"
#include "etsredis/resp.h"

namespace etsredis {

struct ServerOptions {
  etsmgr::ListenOptions listen;     // 127.0.0.1 by default; port 0: any free port.
  int shards = 0;                   // 0: one per scheduler.
  std::string instance = "etsmgr";  // The manager instance that keeps the shards' tables.
  int max_clients = 10'000;
  absl::Duration idle_timeout = absl::ZeroDuration();
  ParserLimits limits;
  uint64_t max_reply_bytes = (uint64_t{512} << 20) + (uint64_t{1} << 20);  // See commands.h.
  // Replies a connection holds for a client that has not read them before it stops reading the
  // client's requests (TCP then pushes back on the client). Below it, requests keep being read
  // and run while replies wait: a client may write a whole pipeline before it reads.
  uint64_t max_pending_reply_bytes = uint64_t{256} << 20;
  absl::Duration start_timeout = absl::Seconds(10);  // For every shard to have its table.
  // Non-empty: the shared mode. Each shard's table keeps its data in the shared-memory segment
  // /dev/shm/<shared>-<i>-of-<shards> (TableOptions::shared), so the keyspace survives a kill -9
  // of the whole server: the next server started with the same prefix, shard count and manager
  // instance gets it back. Keys and values are then bounded (SharedKey, SharedValue): a longer
  // one is refused with an error reply.
  std::string shared;
};

// The shared mode's key and value types.
using SharedKey = etsmgr::SharedString<200>;
using SharedValue = etsmgr::SharedString<1020>;

struct ServerState;

class Server {
 public:
  // Starts the shards and the listener on `node`, whose manager instance `options.instance`
  // should be running (the shards wait for it up to start_timeout). From a plain thread.
  static absl::StatusOr<std::unique_ptr<Server>> Start(etsmgr::Node& node, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Stops accepting, closes every connection and stops the shards (their tables stay with the
  // manager's instance). Idempotent. From a plain thread.
  absl::Status Stop();

  // False once the server's supervision tree is gone (stopped, or it gave up restarting).
  bool running() const { return supervisor_.alive(); }
  const etsmgr::SocketAddress& address() const;
  const ServerStats& stats() const;
  // The listener's counts (live connections: what max_clients is held against).
  const etsmgr::ListenerStats& listener_stats() const;
  // The shard's registered process name, and its managed table's name (which carries the shard
  // count: a server started with another count on the same instance is refused, as its keys
  // would be looked for in the wrong shards).
  static std::string ShardName(int shard);
  static std::string TableName(int shard, int shards);
  // The shared mode's segment of a shard.
  static std::string SegmentName(const std::string& prefix, int shard, int shards);
  int shards() const;

 private:
  explicit Server(etsmgr::Node& node, std::shared_ptr<ServerState> state);
  etsmgr::Node& node_;
  std::shared_ptr<ServerState> state_;
  etsmgr::Pid supervisor_;
};

}  // namespace etsredis

#endif  // ETSREDIS_SERVER_H_
