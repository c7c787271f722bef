#include "etsredis/server.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <functional>
#include <mutex>
#include <span>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "etsmgr/base/error_atom.h"
#include "etsmgr/base/log.h"
#include "etsmgr/base/mutex.h"
#include "etsmgr/executor/backend.h"
#include "etsmgr/manager/managed_table.h"
#include "etsmgr/net/listener.h"
#include "etsmgr/process/io.h"
#include "etsmgr/process/supervisor.h"
#include "etsmgr/table/shared/internal/map_core.h"

namespace etsredis {

using etsmgr::AnyTable;
using etsmgr::Logf;
using etsmgr::LogLevel;
using etsmgr::Message;
using etsmgr::Pid;
using etsmgr::Process;
using etsmgr::Task;

namespace {

// How a shard's table stores keys and values: std::string on the heap, or (--shared) bounded
// strings in a shared-memory segment, converted at the table's edge.
struct HeapCodec {
  using K = std::string;
  using V = std::string;
  static constexpr bool kShared = false;
  static constexpr size_t kMaxValue = ~size_t{0};
  static bool Fits(const std::string&) { return true; }
  // The key as the table takes it: the request's own string, not a copy.
  static absl::StatusOr<std::reference_wrapper<const K>> Key(const std::string& key) {
    return std::cref(key);
  }
  static absl::StatusOr<V> Value(std::string value) { return value; }
  static std::string Str(const V& v) { return v; }
  static bool Assign(V& v, std::string s) {
    v = std::move(s);
    return true;
  }
};
struct SharedCodec {
  using K = SharedKey;
  using V = SharedValue;
  static constexpr bool kShared = true;
  static constexpr size_t kMaxValue = V::kCapacity;
  static bool Fits(const std::string& key) { return key.size() <= K::kCapacity; }
  static absl::StatusOr<K> Key(const std::string& key) {
    if (key.size() > K::kCapacity) return TooLong("key", key.size(), K::kCapacity);
    return K::Make(key);
  }
  static absl::StatusOr<V> Value(const std::string& value) {
    if (value.size() > V::kCapacity) return TooLong("value", value.size(), V::kCapacity);
    return V::Make(value);
  }
  static std::string Str(const V& v) { return v.str(); }
  static bool Assign(V& v, const std::string& s) { return v.Assign(s); }
  static absl::Status TooLong(const char* what, size_t size, size_t limit) {
    return absl::InvalidArgumentError(absl::StrCat(what, " of ", size, " bytes: the shared mode ",
                                                   "keeps at most ", limit, " bytes per ", what));
  }
};

constexpr char kSupervisorName[] = "etsredis_sup";
constexpr size_t kReadSize = 16 << 10;
constexpr size_t kFlushAt = 64 << 10;
// A connection closed by the server (a protocol error, QUIT) reads and drops the client's input
// for at most this long and this much (see ConnectionBody).
constexpr absl::Duration kLingerTime = absl::Seconds(2);
constexpr size_t kLingerBytes = 4 << 20;

// Which shard a key belongs to: a fixed function of the key (64-bit FNV-1a, the same in every
// build and program: the shared mode's keys outlive the binary that placed them).
size_t ShardOf(const std::string& key, size_t shards) {
  uint64_t h = 0xcbf29ce484222325;
  for (unsigned char c : key) h = (h ^ c) * 0x100000001b3;
  return static_cast<size_t>(h % shards);
}

}  // namespace

// The shards' current tables. A shard publishes its table when it has it; a connection keeps
// handles and looks again only when a shard published anew (one atomic load per key).
class ShardSet {
 public:
  explicit ShardSet(int n) {
    for (int i = 0; i < n; ++i) slots_.push_back(std::make_unique<Slot>());
  }
  size_t size() const { return slots_.size(); }

  void Publish(int shard, AnyTable table) {
    Slot& s = *slots_[shard];
    {
      std::lock_guard<etsmgr::AdaptiveMutex> lock(s.mu);
      s.table = std::move(table);
    }
    s.generation.fetch_add(1, std::memory_order_release);
    std::lock_guard<std::mutex> lock(ready_mu_);
    ready_cv_.notify_all();
  }
  uint64_t generation(size_t shard) const {
    return slots_[shard]->generation.load(std::memory_order_acquire);
  }
  AnyTable Current(size_t shard) const {
    Slot& s = *slots_[shard];
    std::lock_guard<etsmgr::AdaptiveMutex> lock(s.mu);
    return s.table;
  }
  // True once every shard has published (from a plain thread).
  bool WaitAllPublished(absl::Duration limit) {
    std::unique_lock<std::mutex> lock(ready_mu_);
    return ready_cv_.wait_for(lock, absl::ToChronoNanoseconds(limit), [&] {
      for (const auto& s : slots_) {
        if (s->generation.load(std::memory_order_acquire) == 0) return false;
      }
      return true;
    });
  }

 private:
  struct Slot {
    mutable etsmgr::AdaptiveMutex mu;
    AnyTable table;
    std::atomic<uint64_t> generation{0};
  };
  std::vector<std::unique_ptr<Slot>> slots_;
  std::mutex ready_mu_;
  std::condition_variable ready_cv_;
};

struct ServerState {
  ServerOptions options;
  ServerConfig config;
  ServerStats stats;
  ShardSet shards;
  etsmgr::SocketAddress address;
  std::shared_ptr<const etsmgr::ListenerStats> listener_stats;
  std::atomic<int64_t> next_client_id{1};
  std::atomic<bool> stopped{false};
  std::mutex stop_mu;

  ServerState(ServerOptions o, int n) : options(std::move(o)), shards(n) {}
};

namespace {

const absl::Status& StatusOf(const absl::Status& st) { return st; }
template <typename T>
const absl::Status& StatusOf(const absl::StatusOr<T>& st) {
  return st.status();
}

// One connection's view of the keyspace: a handle per shard, refreshed when the shard
// publishes a table again.
template <typename Codec>
class ConnectionKeyspace final : public Keyspace {
 public:
  using K = typename Codec::K;
  using V = typename Codec::V;
  using ShardTable = etsmgr::Table<K, V>;

  explicit ConnectionKeyspace(ShardSet& shards)
      : shards_(shards), tables_(shards.size()), seen_(shards.size(), 0) {}

  absl::StatusOr<std::optional<std::string>> Get(const std::string& key) override {
    if (!Codec::Fits(key)) return std::optional<std::string>();  // It cannot be there.
    return RunKey(key,
                  [&](ShardTable& t, const K& k) -> absl::StatusOr<std::optional<std::string>> {
                    absl::StatusOr<std::optional<V>> v = t.Get(k);
                    if (!v.ok()) return v.status();
                    if (!v->has_value()) return std::optional<std::string>();
                    return std::optional<std::string>(Codec::Str(**v));
                  });
  }
  absl::Status Set(const std::string& key, std::string value) override {
    absl::StatusOr<V> v = Codec::Value(std::move(value));
    if (!v.ok()) return v.status();
    return RunKey(key, [&](ShardTable& t, const K& k) { return t.Insert(k, *v); });
  }
  absl::StatusOr<bool> SetNew(const std::string& key, std::string value) override {
    absl::StatusOr<V> v = Codec::Value(std::move(value));
    if (!v.ok()) return v.status();
    return RunKey(key, [&](ShardTable& t, const K& k) { return t.InsertNew(k, *v); });
  }
  absl::StatusOr<bool> Modify(const std::string& key, const std::function<void(std::string&)>& fn,
                              std::optional<std::string> if_absent) override {
    std::optional<V> initial;
    if (if_absent.has_value()) {
      absl::StatusOr<V> v = Codec::Value(*std::move(if_absent));
      if (!v.ok()) return v.status();
      initial = *std::move(v);
    }
    bool too_long = false;
    auto update = [&](V& v) {
      if constexpr (Codec::kShared) {
        std::string s = Codec::Str(v);
        fn(s);
        too_long = !Codec::Assign(v, s);  // (Then the value stays as it was.)
      } else {
        fn(v);
      }
    };
    absl::StatusOr<bool> done = RunKey(key, [&](ShardTable& t, const K& k) -> absl::StatusOr<bool> {
      if (initial.has_value()) return t.Update(k, update, *initial);
      return t.Update(k, update);
    });
    if constexpr (Codec::kShared) {
      if (done.ok() && too_long) {
        return absl::InvalidArgumentError(
            absl::StrCat("the new value does not fit: the shared mode keeps at most ", V::kCapacity,
                         " bytes per value"));
      }
    }
    return done;
  }
  absl::StatusOr<bool> Erase(const std::string& key) override {
    if (!Codec::Fits(key)) return false;  // It cannot be there.
    return RunKey(key, [&](ShardTable& t, const K& k) -> absl::StatusOr<bool> {
      absl::StatusOr<size_t> n = t.Erase(k);
      if (!n.ok()) return n.status();
      return *n > 0;
    });
  }
  absl::StatusOr<bool> Exists(const std::string& key) override {
    if (!Codec::Fits(key)) return false;  // It cannot be there.
    return RunKey(key, [&](ShardTable& t, const K& k) { return t.Member(k); });
  }
  absl::StatusOr<size_t> Size() override {
    size_t total = 0;
    for (size_t i = 0; i < shards_.size(); ++i) {
      absl::StatusOr<size_t> n = RunOn(i, [](ShardTable& t) { return t.Size(); });
      if (!n.ok()) return n.status();
      total += *n;
    }
    return total;
  }
  absl::Status Clear() override {
    for (size_t i = 0; i < shards_.size(); ++i) {
      absl::Status st = RunOn(i, [](ShardTable& t) { return t.Clear(); });
      if (!st.ok()) return st;
    }
    return absl::OkStatus();
  }
  absl::Status CheckWrite(const std::string& key, const std::string& value) override {
    if (auto k = Codec::Key(key); !k.ok()) return k.status();
    if (value.size() > Codec::kMaxValue) return Codec::Value(value).status();
    return absl::OkStatus();
  }

 private:
  // Runs op(table, key in the table's type) on the key's shard. A key the table cannot hold
  // (too long for the shared mode) is an error reply; no shard is touched.
  template <typename F>
  auto RunKey(const std::string& key, F&& op)
      -> decltype(op(std::declval<ShardTable&>(), std::declval<const K&>())) {
    auto k = Codec::Key(key);
    if (!k.ok()) return k.status();
    const K& table_key = *k;
    return RunOn(ShardOf(key, shards_.size()), [&](ShardTable& t) { return op(t, table_key); });
  }
  // Runs `op` on the shard's table; on a failure, once more if the shard has published another
  // table meanwhile. A failure names the shard.
  template <typename F>
  auto RunOn(size_t shard, F&& op) -> decltype(op(std::declval<ShardTable&>())) {
    for (int attempt = 0;; ++attempt) {
      ShardTable* t = Table(shard);
      if (t == nullptr) {
        return absl::UnavailableError(absl::StrCat("shard ", shard, " has no table yet"));
      }
      auto result = op(*t);
      if (result.ok() || attempt > 0 || shards_.generation(shard) == seen_[shard]) {
        if (!result.ok()) {
          const absl::Status& st = StatusOf(result);
          return etsmgr::WithMessage(st, absl::StrCat("shard ", shard, ": ", st.message()));
        }
        return result;
      }
    }
  }
  ShardTable* Table(size_t shard) {
    uint64_t g = shards_.generation(shard);
    if (g != seen_[shard]) {
      seen_[shard] = g;
      absl::StatusOr<ShardTable> t = ShardTable::Attach(shards_.Current(shard));
      tables_[shard] = t.ok() ? std::optional<ShardTable>(*std::move(t)) : std::nullopt;
    }
    return tables_[shard].has_value() ? &*tables_[shard] : nullptr;
  }

  ShardSet& shards_;
  std::vector<std::optional<ShardTable>> tables_;
  std::vector<uint64_t> seen_;
};

// A shard: owns its managed table (the instance is its heir) and rides out manager restarts.
template <typename Codec>
Task<void> ShardBody(Process& self, std::shared_ptr<ServerState> st, int shard) {
  using K = typename Codec::K;
  using V = typename Codec::V;
  const int shards = static_cast<int>(st->shards.size());
  etsmgr::TableOptions options;
  options.access = etsmgr::Access::kPublic;
  if constexpr (Codec::kShared) {
    options.shared = etsmgr::SharedStorage();
    options.shared->segment = Server::SegmentName(st->options.shared, shard, shards);
  }
  absl::StatusOr<etsmgr::ManagedTable<K, V>> opened = co_await etsmgr::ManagedTable<K, V>::Open(
      self, etsmgr::Etsmgr(st->options.instance), Server::TableName(shard, shards), options,
      [](etsmgr::Table<K, V>&) { return absl::OkStatus(); }, st->options.start_timeout);
  if (!opened.ok()) {
    Logf(LogLevel::kError, "etsredis: %s has no table: %s", Server::ShardName(shard),
         opened.status().ToString());
    co_await self.Exit(etsmgr::ExitReason::Custom(std::string(opened.status().message())));
  }
  absl::StatusOr<size_t> size = opened->table().Size();
  Logf(LogLevel::kInfo, "etsredis: %s %s its table (%d keys)", Server::ShardName(shard),
       opened->created() ? "created" : "got back", size.ok() ? *size : 0);
  st->shards.Publish(shard, opened->table().any());
  st->stats.shard_opens.fetch_add(1, std::memory_order_relaxed);
  st->stats.changed.Notify();
  while (true) {
    Message m = co_await self.Receive();
    absl::StatusOr<bool> handled = co_await opened->Handle(self, m);
    if (!handled.ok()) {
      // The manager did not come back in time: crash, and let the supervisor retry.
      co_await self.Exit(etsmgr::ExitReason::Custom(std::string(handled.status().message())));
    }
    if (*handled) continue;
    if (const auto* x = m.As<etsmgr::ExitSignal>()) {
      // The supervisor's shutdown (nothing else is linked to a shard).
      etsmgr::ExitReason reason = x->reason;
      co_await self.Exit(std::move(reason));
    }
  }
}

Task<void> ConnectionBody(Process& self, int fd, std::shared_ptr<ServerState> st) {
  struct Counted {
    ServerStats& stats;
    explicit Counted(ServerStats& s) : stats(s) {
      stats.connected_clients.fetch_add(1, std::memory_order_relaxed);
      stats.changed.Notify();
      stats.total_connections.fetch_add(1, std::memory_order_relaxed);
    }
    ~Counted() {
      stats.connected_clients.fetch_sub(1, std::memory_order_relaxed);
      stats.changed.Notify();
    }
  } counted(st->stats);
  RequestParser parser(st->options.limits);
  std::unique_ptr<Keyspace> keyspace;
  if (st->options.shared.empty()) {
    keyspace = std::make_unique<ConnectionKeyspace<HeapCodec>>(st->shards);
  } else {
    keyspace = std::make_unique<ConnectionKeyspace<SharedCodec>>(st->shards);
  }
  CommandContext context;
  context.keyspace = keyspace.get();
  context.config = &st->config;
  context.stats = &st->stats;
  context.client_id = st->next_client_id.fetch_add(1, std::memory_order_relaxed);
  context.rejected_connections = [st] {
    return st->listener_stats == nullptr ? 0 : st->listener_stats->rejected.load();
  };
  const absl::Duration idle = st->options.idle_timeout;
  const size_t limit = st->options.max_pending_reply_bytes;
  auto idle_deadline = [idle] {
    return idle > absl::ZeroDuration() ? etsmgr::Deadline(idle) : absl::InfiniteFuture();
  };
  std::vector<char> buffer(kReadSize);
  // Replies not yet taken by the socket: out[sent..]. The connection keeps reading requests while
  // they wait (a client may write a whole pipeline before it reads a reply, as Redis allows),
  // until `limit` bytes wait: then TCP pushes back until the client reads.
  std::string out;
  size_t sent = 0;
  auto pending = [&] { return out.size() - sent; };
  bool input_open = true;  // The client has not ended its side.
  bool close = false;      // A protocol error or QUIT: no more requests run.
  bool held_back = false;  // The parser holds requests not run yet (replies waiting to go).
  size_t dropped = 0;      // Input read and dropped after `close`.
  // Runs the requests the parser holds; stops to send every kFlushAt bytes of replies, and at the
  // limit.
  auto execute = [&] {
    held_back = false;
    const size_t before = pending();
    while (!close) {
      if (pending() - before >= kFlushAt || pending() >= limit) {
        held_back = true;
        return;
      }
      RequestParser::Result r = parser.Next();
      if (r == RequestParser::Result::kNeedMore) return;
      if (r == RequestParser::Result::kError) {
        AppendError(out, absl::StrCat("ERR ", parser.error()));
        Logf(LogLevel::kInfo, "etsredis: client %d: %s: closed", context.client_id, parser.error());
        close = true;
        return;
      }
      close = Execute(parser.args(), context, out) == AfterCommand::kClose;
    }
  };
  // Takes what a receive brought: requests, or (closing) input to drop. False: stop.
  auto take = [&](const absl::StatusOr<size_t>& got) {
    if (!got.ok()) {
      if (got.status().code() == absl::StatusCode::kDeadlineExceeded) {
        Logf(LogLevel::kDebug, "etsredis: client %d idle for %s: closed", context.client_id,
             absl::FormatDuration(idle));
      }
      return false;
    }
    if (*got == 0) {
      input_open = false;  // What waits is still sent: a client may end its side, then read.
      return true;
    }
    if (close) {
      dropped += *got;
      return dropped <= kLingerBytes;
    }
    parser.Feed(std::string_view(buffer.data(), *got));
    execute();
    return true;
  };
  while (true) {
    if (pending() > 0) {
      absl::StatusOr<size_t> n =
          co_await etsmgr::TrySend(self, fd, std::string_view(out).substr(sent));
      if (!n.ok()) co_return;
      sent += *n;
      if (sent == out.size()) {
        out.clear();
        sent = 0;
        if (out.capacity() > (size_t{1} << 20)) out.shrink_to_fit();
      } else if (sent >= (size_t{1} << 20) && sent >= out.size() / 2) {
        out.erase(0, sent);
        sent = 0;
      }
    }
    if (held_back && pending() < limit) {
      execute();
      continue;
    }
    if (pending() == 0) {
      if (close) break;
      if (!input_open) co_return;  // Everything asked for was answered.
      // Nothing waits to go: wait for requests (one receive, the usual case).
      if (!take(co_await etsmgr::Recv(self, fd, std::span<char>(buffer), idle_deadline()))) {
        co_return;
      }
      continue;
    }
    // Replies wait and the socket is full: wait for room, and for more requests (or the input
    // of a closing client, dropped) while under the limit.
    short want = POLLOUT;
    if (input_open && !held_back && (close || pending() < limit)) want |= POLLIN;
    absl::StatusOr<short> ready = co_await etsmgr::Poll(self, fd, want, idle_deadline());
    if (!ready.ok()) {
      (void)take(ready.status());
      co_return;
    }
    if ((want & POLLIN) != 0 && (*ready & (POLLIN | POLLHUP | POLLERR)) != 0) {
      if (!take(co_await etsmgr::Recv(self, fd, std::span<char>(buffer), idle_deadline()))) {
        co_return;
      }
    }
  }
  // A lingering close: our side ends with a FIN after the last reply, then what the client still
  // sends is read and dropped (for a while, up to a cap) before the descriptor closes. Closing
  // with unread input would send a reset, which can make the client's kernel drop the error reply
  // it has not read yet.
  ::shutdown(fd, SHUT_WR);
  const absl::Time until = etsmgr::Deadline(kLingerTime);
  while (input_open && dropped < kLingerBytes) {
    absl::StatusOr<size_t> more = co_await etsmgr::Recv(self, fd, std::span<char>(buffer), until);
    if (!more.ok() || *more == 0) break;
    dropped += *more;
  }
}

}  // namespace

std::string Server::ShardName(int shard) { return absl::StrCat("etsredis_shard_", shard); }
std::string Server::TableName(int shard, int shards) {
  return absl::StrCat("etsredis/", shard, "-of-", shards);
}
std::string Server::SegmentName(const std::string& prefix, int shard, int shards) {
  return absl::StrCat(prefix, "-", shard, "-of-", shards);
}

namespace {
// FailedPrecondition when the instance holds the tables of a server with another shard count
// (its keys were placed by that count: read with this one, they would look missing).
absl::Status CheckShardCount(etsmgr::Node& node, const ServerOptions& options, int shards) {
  absl::StatusOr<etsmgr::ManagerInfo> info = node.Run<absl::StatusOr<etsmgr::ManagerInfo>>(
      [&options](Process& self) -> Task<absl::StatusOr<etsmgr::ManagerInfo>> {
        etsmgr::Etsmgr mgr(options.instance);
        absl::StatusOr<Pid> up =
            co_await mgr.WaitForManager(self, etsmgr::Deadline(options.start_timeout));
        if (!up.ok()) co_return up.status();
        co_return co_await mgr.Info(self);
      });
  if (!info.ok()) {
    return etsmgr::WithMessage(info.status(),
                               absl::StrCat("etsredis: the manager instance '", options.instance,
                                            "': ", info.status().message()));
  }
  const std::string suffix = absl::StrCat("-of-", shards);
  std::vector<std::string> names;
  for (const etsmgr::ManagedTableInfo& t : info->tables) {
    if (t.alive) names.push_back(t.name);
  }
  // Shared-memory tables of a --shared server (this program's, or a dead program's that the
  // instance's directory lists): a server must use their prefix, or it would serve a keyspace
  // without them (and leave them unlisted).
  constexpr std::string_view kTablePrefix = "etsredis/";
  for (const etsmgr::SharedTableRecord& r : info->shared_tables) {
    if (!r.exists || r.name.rfind(kTablePrefix, 0) != 0) continue;
    const std::string expected =
        absl::StrCat(options.shared, "-", r.name.substr(kTablePrefix.size()));
    if (options.shared.empty() || r.segment != expected) {
      return absl::FailedPreconditionError(absl::StrCat(
          "etsredis: the manager instance '", options.instance,
          "' holds the shared-memory table \"", r.name, "\" (segment ", r.segment,
          ") of a --shared server", options.shared.empty() ? "" : " with another prefix",
          ": start with that segment's prefix, or delete its tables"));
    }
    names.push_back(r.name);
  }
  for (const std::string& name : names) {
    const etsmgr::ManagedTableInfo t{.name = name};
    if (t.name.rfind("etsredis/", 0) == 0 &&
        (t.name.size() < suffix.size() ||
         t.name.compare(t.name.size() - suffix.size(), suffix.size(), suffix) != 0)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "etsredis: the manager instance '", options.instance, "' holds the table \"", t.name,
          "\" of a server with another shard count than ", shards,
          " (keys are placed by the shard count: start with that count, or delete its tables)"));
    }
  }
  return absl::OkStatus();
}
}  // namespace

Server::Server(etsmgr::Node& node, std::shared_ptr<ServerState> state)
    : node_(node), state_(std::move(state)) {}

Server::~Server() { Stop().IgnoreError(); }

const etsmgr::SocketAddress& Server::address() const { return state_->address; }
const ServerStats& Server::stats() const { return state_->stats; }
const etsmgr::ListenerStats& Server::listener_stats() const { return *state_->listener_stats; }
int Server::shards() const { return static_cast<int>(state_->shards.size()); }

absl::StatusOr<std::unique_ptr<Server>> Server::Start(etsmgr::Node& node, ServerOptions options) {
  int n = options.shards > 0 ? options.shards : node.runtime().size();
  if (options.shards < 0 || options.shards > 1024) {
    return absl::InvalidArgumentError(absl::StrCat(
        "etsredis: shards must be 0 (one per scheduler) to 1024, not ", options.shards));
  }
  if (options.max_clients < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("etsredis: max_clients must be at least 1, not ", options.max_clients));
  }
  if (options.idle_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("etsredis: idle_timeout must not be negative");
  }
  if (!options.shared.empty()) {
    // Every shard's segment name must be valid (the longest is the last shard's).
    absl::Status valid =
        etsmgr::shared_internal::MapCore::ValidateName(SegmentName(options.shared, n - 1, n));
    if (!valid.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("etsredis: shared segment prefix \"",
                                                     options.shared, "\": ", valid.message()));
    }
  }
  if (options.limits.max_bulk == 0 || options.limits.max_buffer < 1024 ||
      options.limits.max_inline < 16 || options.limits.max_args == 0) {
    return absl::InvalidArgumentError(
        "etsredis: request limits too small (max_bulk > 0, max_buffer >= 1024, max_inline >= 16, "
        "max_args > 0)");
  }
  if (options.max_pending_reply_bytes < 1024) {
    return absl::InvalidArgumentError(absl::StrCat(
        "etsredis: max_pending_reply_bytes ", options.max_pending_reply_bytes, " (at least 1024)"));
  }
  if (absl::Status same = CheckShardCount(node, options, n); !same.ok()) return same;
  auto st = std::make_shared<ServerState>(options, n);
  st->config.bind = options.listen.host;
  st->config.max_clients = options.max_clients;
  st->config.timeout_seconds = absl::ToInt64Seconds(options.idle_timeout);
  // The longest argument a request can carry: a bulk must also fit the request buffer.
  st->config.proto_max_bulk_len = RequestParser::LargestArgument(options.limits);
  st->config.max_reply_bytes = options.max_reply_bytes;
  st->config.shards = n;
  st->config.backend = std::string(etsmgr::BackendName(node.runtime().backend()));

  std::vector<etsmgr::ChildSpec> shard_children;
  for (int i = 0; i < n; ++i) {
    shard_children.push_back(etsmgr::ChildSpec{
        .id = ShardName(i), .start = [st, i](Process& sup) -> Task<absl::StatusOr<Pid>> {
          etsmgr::SpawnOptions spawn;
          spawn.name = ShardName(i);
          co_return sup.SpawnLink(
              [st, i](Process& self) -> Task<void> {
                if (st->options.shared.empty()) return ShardBody<HeapCodec>(self, st, i);
                return ShardBody<SharedCodec>(self, st, i);
              },
              spawn);
        }});
  }
  etsmgr::ListenerOptions lo;
  lo.listen = options.listen;
  lo.max_connections = options.max_clients;
  lo.reject_message = "-ERR max number of clients reached\r\n";
  absl::StatusOr<etsmgr::Listener> listener = etsmgr::MakeListener(
      "listener", lo,
      [st](Process& self, int fd) -> Task<void> { return ConnectionBody(self, fd, st); });
  if (!listener.ok()) return listener.status();
  st->address = listener->address;
  st->listener_stats = listener->stats;
  st->config.port = listener->address.port();

  // Shards crash and come back often under chaos: a high intensity keeps their supervisor up
  // (their tables are safe either way).
  std::vector<etsmgr::ChildSpec> top;
  top.push_back(etsmgr::SupervisorChild(
      "shards", {etsmgr::RestartStrategy::kOneForOne, 1000, absl::Seconds(1)},
      std::move(shard_children)));
  top.push_back(listener->spec);
  etsmgr::SpawnOptions spawn;
  spawn.name = kSupervisorName;
  // one_for_one: connections do not depend on the shards' processes (they use the tables), so
  // the shards' supervisor giving up and restarting does not close any connection.
  absl::StatusOr<Pid> sup = etsmgr::StartSupervisor(
      node, {etsmgr::RestartStrategy::kOneForOne, 10, absl::Seconds(10)}, std::move(top), spawn);
  if (!sup.ok()) return sup.status();
  std::unique_ptr<Server> server(new Server(node, st));
  server->supervisor_ = *sup;
  if (!st->shards.WaitAllPublished(options.start_timeout)) {
    server->Stop().IgnoreError();
    return absl::DeadlineExceededError(
        absl::StrCat("etsredis: the shards did not get their tables within ",
                     absl::FormatDuration(options.start_timeout), " (is the manager instance '",
                     options.instance, "' running?)"));
  }
  Logf(LogLevel::kNotice, "etsredis: ready to accept connections on %s (%d shards, %s)",
       st->address.ToString(), n, st->config.backend);
  return server;
}

absl::Status Server::Stop() {
  std::lock_guard<std::mutex> lock(state_->stop_mu);
  if (state_->stopped.exchange(true)) return absl::OkStatus();
  Pid sup = supervisor_;
  if (!sup.alive()) return absl::OkStatus();
  absl::Status stopped = node_.Run<absl::Status>([sup](Process& self) -> Task<absl::Status> {
    co_return co_await etsmgr::StopSupervisor(self, sup);
  });
  Logf(LogLevel::kNotice, "etsredis: stopped (%s)", stopped.ToString());
  return stopped;
}

}  // namespace etsredis
