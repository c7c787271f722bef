#include "etsredis/commands.h"

#include <fnmatch.h>
#include <unistd.h>

#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "etsredis/resp.h"

namespace etsredis {
namespace {

using Args = std::vector<std::string>;

constexpr char kNotInteger[] = "ERR value is not an integer or out of range";
constexpr char kOverflow[] = "ERR increment or decrement would overflow";
constexpr char kSyntax[] = "ERR syntax error";

// A keyspace failure (not the client's fault): its message, as an error reply.
void AppendFailure(std::string& out, const absl::Status& st) {
  AppendError(out, absl::StrCat("ERR ", st.message()));
}

void WrongArity(std::string& out, const std::string& name) {
  AppendError(out, absl::StrCat("ERR wrong number of arguments for '", name, "' command"));
}

void Ping(const Args& a, CommandContext&, std::string& out) {
  if (a.size() == 1) return AppendSimple(out, "PONG");
  AppendBulk(out, a[1]);
}

void Echo(const Args& a, CommandContext&, std::string& out) { AppendBulk(out, a[1]); }

void Get(const Args& a, CommandContext& c, std::string& out) {
  absl::StatusOr<std::optional<std::string>> v = c.keyspace->Get(a[1]);
  if (!v.ok()) return AppendFailure(out, v.status());
  if (!v->has_value()) return AppendNil(out);
  AppendBulk(out, **v);
}

void Set(const Args& a, CommandContext& c, std::string& out) {
  bool nx = false, xx = false, get = false;
  for (size_t i = 3; i < a.size(); ++i) {
    std::string opt = absl::AsciiStrToLower(a[i]);
    if (opt == "nx" && !xx) {
      nx = true;
    } else if (opt == "xx" && !nx) {
      xx = true;
    } else if (opt == "get") {
      get = true;
    } else if (opt == "ex" || opt == "px" || opt == "exat" || opt == "pxat" || opt == "keepttl") {
      return AppendError(out, absl::StrCat("ERR SET ", absl::AsciiStrToUpper(a[i]),
                                           " is not supported: etsredis keys do not expire"));
    } else {
      return AppendError(out, kSyntax);
    }
  }
  if (!nx && !xx && !get) {
    absl::Status st = c.keyspace->Set(a[1], a[2]);
    if (!st.ok()) return AppendFailure(out, st);
    return AppendSimple(out, "OK");
  }
  if (nx) {
    if (get) {  // SET NX GET: the old value (nil when it was set).
      while (true) {
        std::optional<std::string> old;
        absl::StatusOr<bool> present = c.keyspace->Modify(
            a[1], [&](std::string& v) { old = v; }, std::nullopt);
        if (!present.ok()) return AppendFailure(out, present.status());
        if (*present) return AppendBulk(out, *old);
        absl::StatusOr<bool> added = c.keyspace->SetNew(a[1], a[2]);
        if (!added.ok()) return AppendFailure(out, added.status());
        if (*added) return AppendNil(out);
      }
    }
    absl::StatusOr<bool> added = c.keyspace->SetNew(a[1], a[2]);
    if (!added.ok()) return AppendFailure(out, added.status());
    if (*added) return AppendSimple(out, "OK");
    return AppendNil(out);
  }
  // XX and/or GET: replace in place when present (and keep the old value for GET).
  while (true) {
    std::optional<std::string> old;
    absl::StatusOr<bool> present = c.keyspace->Modify(
        a[1],
        [&](std::string& v) {
          if (get) old = std::move(v);
          v = a[2];
        },
        std::nullopt);
    if (!present.ok()) return AppendFailure(out, present.status());
    if (*present) return get ? AppendBulk(out, *old) : AppendSimple(out, "OK");
    if (xx) return AppendNil(out);
    // GET of an absent key: set it unless someone else just did, then try again.
    absl::StatusOr<bool> added = c.keyspace->SetNew(a[1], a[2]);
    if (!added.ok()) return AppendFailure(out, added.status());
    if (*added) return AppendNil(out);
  }
}

void IncrBy(const std::string& key, int64_t delta, CommandContext& c, std::string& out) {
  const char* error = nullptr;
  int64_t result = 0;
  absl::StatusOr<bool> done = c.keyspace->Modify(
      key,
      [&](std::string& v) {
        int64_t n = 0;
        if (!ParseInt64(v, &n)) {
          error = kNotInteger;
          return;
        }
        if ((delta > 0 && n > INT64_MAX - delta) || (delta < 0 && n < INT64_MIN - delta)) {
          error = kOverflow;
          return;
        }
        result = n + delta;
        v = absl::StrCat(result);
      },
      std::string("0"));
  if (!done.ok()) return AppendFailure(out, done.status());
  if (error != nullptr) return AppendError(out, error);
  AppendInteger(out, result);
}

void Incr(const Args& a, CommandContext& c, std::string& out) { IncrBy(a[1], 1, c, out); }
void Decr(const Args& a, CommandContext& c, std::string& out) { IncrBy(a[1], -1, c, out); }
void IncrByCommand(const Args& a, CommandContext& c, std::string& out) {
  int64_t delta = 0;
  if (!ParseInt64(a[2], &delta)) return AppendError(out, kNotInteger);
  IncrBy(a[1], delta, c, out);
}
void DecrByCommand(const Args& a, CommandContext& c, std::string& out) {
  int64_t delta = 0;
  if (!ParseInt64(a[2], &delta)) return AppendError(out, kNotInteger);
  if (delta == INT64_MIN) return AppendError(out, "ERR decrement would overflow");
  IncrBy(a[1], -delta, c, out);
}

void Del(const Args& a, CommandContext& c, std::string& out) {
  int64_t n = 0;
  for (size_t i = 1; i < a.size(); ++i) {
    absl::StatusOr<bool> gone = c.keyspace->Erase(a[i]);
    if (!gone.ok() && n > 0) {
      // Not all or nothing (each key is erased on its own): the error says what was done.
      return AppendFailure(
          out,
          absl::Status(gone.status().code(),
                       absl::StrCat("deleted ", n, " key(s), then: ", gone.status().message())));
    }
    if (!gone.ok()) return AppendFailure(out, gone.status());
    n += *gone ? 1 : 0;
  }
  AppendInteger(out, n);
}

void Exists(const Args& a, CommandContext& c, std::string& out) {
  int64_t n = 0;
  for (size_t i = 1; i < a.size(); ++i) {
    absl::StatusOr<bool> there = c.keyspace->Exists(a[i]);
    if (!there.ok()) return AppendFailure(out, there.status());
    n += *there ? 1 : 0;
  }
  AppendInteger(out, n);
}

void MGet(const Args& a, CommandContext& c, std::string& out) {
  // Read every key first: a failure is one error reply, not half an array.
  std::vector<std::optional<std::string>> values;
  values.reserve(a.size() - 1);
  uint64_t reply_bytes = 16;
  for (size_t i = 1; i < a.size(); ++i) {
    absl::StatusOr<std::optional<std::string>> v = c.keyspace->Get(a[i]);
    if (!v.ok()) return AppendFailure(out, v.status());
    reply_bytes += 16 + (v->has_value() ? (*v)->size() : 0);
    if (reply_bytes > c.config->max_reply_bytes) {
      return AppendError(out, absl::StrCat("ERR the reply would exceed max-reply-bytes (",
                                           c.config->max_reply_bytes, " bytes)"));
    }
    values.push_back(*std::move(v));
  }
  AppendArrayHeader(out, values.size());
  for (const std::optional<std::string>& v : values) {
    if (v.has_value()) {
      AppendBulk(out, *v);
    } else {
      AppendNil(out);
    }
  }
}

void MSet(const Args& a, CommandContext& c, std::string& out) {
  if (a.size() % 2 != 1) return WrongArity(out, "mset");
  // Every pair first: a pair the keyspace cannot hold is an error with nothing written.
  for (size_t i = 1; i + 1 < a.size(); i += 2) {
    absl::Status st = c.keyspace->CheckWrite(a[i], a[i + 1]);
    if (!st.ok()) return AppendFailure(out, st);
  }
  for (size_t i = 1; i + 1 < a.size(); i += 2) {
    absl::Status st = c.keyspace->Set(a[i], a[i + 1]);
    if (!st.ok()) return AppendFailure(out, st);
  }
  AppendSimple(out, "OK");
}

void DbSize(const Args&, CommandContext& c, std::string& out) {
  absl::StatusOr<size_t> n = c.keyspace->Size();
  if (!n.ok()) return AppendFailure(out, n.status());
  AppendInteger(out, static_cast<int64_t>(*n));
}

void FlushAll(const Args& a, CommandContext& c, std::string& out) {
  if (a.size() > 2) return AppendError(out, kSyntax);
  if (a.size() == 2) {
    std::string mode = absl::AsciiStrToLower(a[1]);
    if (mode != "async" && mode != "sync") return AppendError(out, kSyntax);
  }
  absl::Status st = c.keyspace->Clear();
  if (!st.ok()) return AppendFailure(out, st);
  AppendSimple(out, "OK");
}

void Select(const Args& a, CommandContext&, std::string& out) {
  int64_t db = 0;
  if (!ParseInt64(a[1], &db)) return AppendError(out, kNotInteger);
  if (db != 0) return AppendError(out, "ERR DB index is out of range");
  AppendSimple(out, "OK");
}

std::vector<std::pair<std::string, std::string>> ConfigValues(const ServerConfig& cfg) {
  return {
      {"appendonly", "no"},
      {"bind", cfg.bind},
      {"databases", "1"},
      {"maxclients", absl::StrCat(cfg.max_clients)},
      {"port", absl::StrCat(cfg.port)},
      {"proto-max-bulk-len", absl::StrCat(cfg.proto_max_bulk_len)},
      {"save", ""},
      {"timeout", absl::StrCat(cfg.timeout_seconds)},
  };
}

void Config(const Args& a, CommandContext& c, std::string& out) {
  std::string sub = absl::AsciiStrToLower(a[1]);
  if (sub == "get") {
    if (a.size() < 3) return WrongArity(out, "config|get");
    std::vector<std::pair<std::string, std::string>> found;
    for (const auto& [name, value] : ConfigValues(*c.config)) {
      for (size_t i = 2; i < a.size(); ++i) {
        if (fnmatch(absl::AsciiStrToLower(a[i]).c_str(), name.c_str(), 0) == 0) {
          found.emplace_back(name, value);
          break;
        }
      }
    }
    AppendArrayHeader(out, found.size() * 2);
    for (const auto& [name, value] : found) {
      AppendBulk(out, name);
      AppendBulk(out, value);
    }
    return;
  }
  if (sub == "resetstat") {
    c.stats->total_commands = 0;
    c.stats->total_connections = 0;
    return AppendSimple(out, "OK");
  }
  if (sub == "set") return AppendError(out, "ERR CONFIG SET is not supported by etsredis");
  AppendError(out, absl::StrCat("ERR unknown subcommand '", a[1], "'. Try CONFIG HELP."));
}

void Info(const Args& a, CommandContext& c, std::string& out) {
  std::string section = a.size() > 1 ? absl::AsciiStrToLower(a[1]) : "default";
  auto want = [&](const char* s) {
    return section == "default" || section == "all" || section == "everything" || section == s;
  };
  std::string info;
  if (want("server")) {
    absl::StrAppend(&info, "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n",
                    "server:etsredis\r\nmultiplexing_api:", c.config->backend,
                    "\r\nprocess_id:", getpid(), "\r\ntcp_port:", c.config->port,
                    "\r\netsredis_shards:", c.config->shards, "\r\n\r\n");
  }
  if (want("clients")) {
    absl::StrAppend(&info, "# Clients\r\nconnected_clients:", c.stats->connected_clients.load(),
                    "\r\nmaxclients:", c.config->max_clients, "\r\n\r\n");
  }
  if (want("persistence")) {
    absl::StrAppend(&info,
                    "# Persistence\r\naof_enabled:0\r\nrdb_changes_since_last_save:0\r\n\r\n");
  }
  if (want("stats")) {
    absl::StrAppend(
        &info, "# Stats\r\ntotal_connections_received:", c.stats->total_connections.load(),
        "\r\ntotal_commands_processed:", c.stats->total_commands.load(),
        "\r\nrejected_connections:", c.rejected_connections ? c.rejected_connections() : 0,
        "\r\netsredis_shard_opens:", c.stats->shard_opens.load(), "\r\n\r\n");
  }
  if (want("keyspace")) {
    absl::StatusOr<size_t> n = c.keyspace->Size();
    info += "# Keyspace\r\n";
    if (n.ok() && *n > 0) absl::StrAppend(&info, "db0:keys=", *n, ",expires=0,avg_ttl=0\r\n");
  }
  AppendBulk(out, info);
}

void Command(const Args& a, CommandContext&, std::string& out) {
  if (a.size() > 1 && absl::AsciiStrToLower(a[1]) == "count") return AppendInteger(out, 0);
  AppendArrayHeader(out, 0);  // COMMAND, COMMAND DOCS, COMMAND INFO: nothing to describe.
}

void Client(const Args& a, CommandContext& c, std::string& out) {
  std::string sub = absl::AsciiStrToLower(a[1]);
  if (sub == "setname" && a.size() == 3) {
    c.client_name = a[2];
    return AppendSimple(out, "OK");
  }
  if (sub == "getname" && a.size() == 2) {
    if (c.client_name.empty()) return AppendNil(out);
    return AppendBulk(out, c.client_name);
  }
  if (sub == "id" && a.size() == 2) return AppendInteger(out, c.client_id);
  AppendError(out, absl::StrCat("ERR unknown subcommand or wrong number of arguments for '", a[1],
                                "'. Try CLIENT HELP."));
}

struct CommandSpec {
  void (*run)(const Args&, CommandContext&, std::string&);
  int arity;         // Redis's convention: n exactly, -n at least n.
  int max_args = 0;  // 0: no upper bound.
};

const absl::flat_hash_map<std::string, CommandSpec>& Commands() {
  static const auto* table = new absl::flat_hash_map<std::string, CommandSpec>{
      {"ping", {&Ping, -1, 2}},  {"echo", {&Echo, 2}},
      {"get", {&Get, 2}},        {"set", {&Set, -3}},
      {"del", {&Del, -2}},       {"exists", {&Exists, -2}},
      {"incr", {&Incr, 2}},      {"incrby", {&IncrByCommand, 3}},
      {"decr", {&Decr, 2}},      {"decrby", {&DecrByCommand, 3}},
      {"mget", {&MGet, -2}},     {"mset", {&MSet, -3}},
      {"dbsize", {&DbSize, 1}},  {"flushall", {&FlushAll, -1}},
      {"select", {&Select, 2}},  {"config", {&Config, -2}},
      {"info", {&Info, -1, 2}},  {"command", {&Command, -1}},
      {"client", {&Client, -2}},
  };
  return *table;
}

}  // namespace

AfterCommand Execute(const std::vector<std::string>& args, CommandContext& context,
                     std::string& out) {
  if (context.stats != nullptr)
    context.stats->total_commands.fetch_add(1, std::memory_order_relaxed);
  std::string name = absl::AsciiStrToLower(args[0]);
  if (name == "quit") {
    AppendSimple(out, "OK");
    return AfterCommand::kClose;
  }
  const auto& commands = Commands();
  auto it = commands.find(name);
  if (it == commands.end()) {
    // Redis's wording: the name and the first arguments, each quoted, up to 128 characters.
    std::string rest;
    for (size_t i = 1; i < args.size() && rest.size() < 128; ++i) {
      absl::StrAppend(&rest, "'", args[i].substr(0, 128 - rest.size()), "' ");
    }
    AppendError(out, absl::StrCat("ERR unknown command '", args[0].substr(0, 128),
                                  "', with args beginning with: ", rest));
    return AfterCommand::kContinue;
  }
  const CommandSpec& spec = it->second;
  const int n = static_cast<int>(std::min<size_t>(args.size(), 1 << 30));
  if ((spec.arity > 0 && n != spec.arity) || (spec.arity < 0 && n < -spec.arity) ||
      (spec.max_args > 0 && n > spec.max_args)) {
    WrongArity(out, name);
    return AfterCommand::kContinue;
  }
  spec.run(args, context, out);
  return AfterCommand::kContinue;
}

}  // namespace etsredis
