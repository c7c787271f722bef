// etsredis: `bazel run -c opt //etsredis -- --port=6379` starts the server (logs on stderr);
// SIGTERM or SIGINT stops it cleanly. `--help` lists the flags.
#include <signal.h>
#include <sys/resource.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <random>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "etsmgr/base/log.h"
#include "etsmgr/manager/manager.h"
#include "etsredis/server.h"

namespace {

constexpr char kUsage[] =
    "usage: etsredis [flags]\n"
    "  --bind=ADDR               address to listen on (127.0.0.1)\n"
    "  --port=N                  TCP port (6379; 0: any free port, printed at start)\n"
    "  --shards=N                shard processes, each owning a managed table (0: one per\n"
    "                            scheduler)\n"
    "  --shared=PREFIX           keep the keyspace in shared memory, /dev/shm/PREFIX-<i>-of-<n>:\n"
    "                            it survives kill -9 of the server (keys <= 200 bytes, values\n"
    "                            <= 1020 bytes)\n"
    "  --instance=NAME           the table manager's instance (etsmgr; its directory of shared\n"
    "                            tables is /dev/shm/etsmgr-directory-NAME)\n"
    "  --schedulers=N            scheduler threads (0: one per core)\n"
    "  --backend=auto|io_uring|epoll   (auto: io_uring where the kernel allows it,\n"
    "                            else epoll)\n"
    "  --maxclients=N            live connections before new ones are refused (10000)\n"
    "  --timeout=SECONDS         close a connection idle this long (0: never)\n"
    "  --proto-max-bulk-len=N    largest bulk string in a request, bytes (536870912)\n"
    "  --max-request-buffer=N    bytes buffered for one incomplete request (67108864)\n"
    "  --max-reply-bytes=N       largest reply one request may build (537919488)\n"
    "  --max-pending-replies=N   replies held for a client that has not read them before its\n"
    "                            requests stop being read (268435456)\n"
    "  --spin-us=N               how long an idle scheduler spins before it sleeps (50)\n"
    "  --kill-shard-every=MS     crash injection: kill a random shard every MS milliseconds\n"
    "                            (0: never); the count is logged at the stop\n"
    "  --log=debug|info|notice|warning|error   (notice)\n";

bool Flag(const std::string& arg, const char* name, std::string* value) {
  std::string prefix = absl::StrCat("--", name, "=");
  if (!absl::StartsWith(arg, prefix)) return false;
  *value = arg.substr(prefix.size());
  return true;
}

int Fail(const std::string& message) {
  std::cerr << "etsredis: " << message << "\n" << kUsage;
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  etsredis::ServerOptions options;
  options.listen.port = 6379;
  etsmgr::RuntimeOptions runtime;
  etsmgr::LogLevel level = etsmgr::LogLevel::kNotice;
  absl::Duration kill_every = absl::ZeroDuration();
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], v;
    uint64_t n = 0;
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    } else if (Flag(arg, "bind", &v)) {
      options.listen.host = v;
    } else if (Flag(arg, "port", &v)) {
      if (!absl::SimpleAtoi(v, &n) || n > 65535) return Fail("--port: not a port: " + v);
      options.listen.port = static_cast<uint16_t>(n);
    } else if (Flag(arg, "shared", &v)) {
      if (v.empty()) return Fail("--shared: a segment name prefix, e.g. --shared=etsredis");
      options.shared = v;
    } else if (Flag(arg, "instance", &v)) {
      if (v.empty()) return Fail("--instance: a name");
      options.instance = v;
    } else if (Flag(arg, "shards", &v)) {
      if (!absl::SimpleAtoi(v, &n) || n > 1024) return Fail("--shards: 0 to 1024, not " + v);
      options.shards = static_cast<int>(n);
    } else if (Flag(arg, "schedulers", &v)) {
      if (!absl::SimpleAtoi(v, &n) || n > 256) return Fail("--schedulers: 0 to 256, not " + v);
      runtime.schedulers = static_cast<int>(n);
    } else if (Flag(arg, "backend", &v)) {
      if (v == "auto") {
        runtime.backend = etsmgr::BackendPreference::kAuto;
      } else if (v == "io_uring") {
        runtime.backend = etsmgr::BackendPreference::kIoUring;
      } else if (v == "epoll") {
        runtime.backend = etsmgr::BackendPreference::kEpoll;
      } else {
        return Fail("--backend: auto, io_uring or epoll, not " + v);
      }
    } else if (Flag(arg, "maxclients", &v)) {
      if (!absl::SimpleAtoi(v, &n) || n < 1 || n > 1'000'000) {
        return Fail("--maxclients: 1 to 1000000, not " + v);
      }
      options.max_clients = static_cast<int>(n);
    } else if (Flag(arg, "timeout", &v)) {
      if (!absl::SimpleAtoi(v, &n) || n > 100'000'000) return Fail("--timeout: seconds, not " + v);
      options.idle_timeout = absl::Seconds(n);
    } else if (Flag(arg, "proto-max-bulk-len", &v)) {
      if (!absl::SimpleAtoi(v, &n) || n < 1) return Fail("--proto-max-bulk-len: bytes, not " + v);
      options.limits.max_bulk = n;
    } else if (Flag(arg, "max-request-buffer", &v)) {
      if (!absl::SimpleAtoi(v, &n) || n < 1024 || n > (uint64_t{1} << 30)) {
        return Fail("--max-request-buffer: 1024 to 1073741824 bytes, not " + v);
      }
      options.limits.max_buffer = n;
    } else if (Flag(arg, "max-reply-bytes", &v)) {
      if (!absl::SimpleAtoi(v, &n) || n < 1024) return Fail("--max-reply-bytes: bytes, not " + v);
      options.max_reply_bytes = n;
    } else if (Flag(arg, "max-pending-replies", &v)) {
      if (!absl::SimpleAtoi(v, &n) || n < 1024) {
        return Fail("--max-pending-replies: bytes (at least 1024), not " + v);
      }
      options.max_pending_reply_bytes = n;
    } else if (Flag(arg, "spin-us", &v)) {
      if (!absl::SimpleAtoi(v, &n) || n > 1'000'000)
        return Fail("--spin-us: 0 to 1000000, not " + v);
      runtime.spin = absl::Microseconds(n);
    } else if (Flag(arg, "kill-shard-every", &v)) {
      if (!absl::SimpleAtoi(v, &n) || n > 3'600'000) {
        return Fail("--kill-shard-every: milliseconds (0: never), not " + v);
      }
      kill_every = absl::Milliseconds(n);
    } else if (Flag(arg, "log", &v)) {
      const char* names[] = {"debug", "info", "notice", "warning", "error"};
      bool found = false;
      for (int l = 0; l < 5; ++l) {
        if (v == names[l]) {
          level = static_cast<etsmgr::LogLevel>(l);
          found = true;
        }
      }
      if (!found) return Fail("--log: debug, info, notice, warning or error, not " + v);
    } else {
      return Fail("unknown flag " + arg);
    }
  }
  etsmgr::SetMinLogLevel(level);
  // SIGTERM and SIGINT are taken by sigwait below: block them before any thread starts, so
  // every thread inherits the mask. A client that goes away must not kill the server (SIGPIPE).
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // Descriptors for every client (as Redis does): raise the soft limit to the hard one, and
  // take fewer clients than asked when even that is short. Kept for the rest: 32, plus what the
  // runtime and the shards hold (a scheduler's ring or epoll set, eventfd and timer; a shared
  // shard's segment, its holder lock and claim). Past the limit, the listener refuses waiting
  // clients through its spare descriptor rather than leave them in the backlog.
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) == 0) {
    const rlim_t schedulers = runtime.schedulers > 0
                                  ? runtime.schedulers
                                  : std::max(1u, std::thread::hardware_concurrency());
    const rlim_t shards = options.shards > 0 ? static_cast<rlim_t>(options.shards) : schedulers;
    const rlim_t reserve = 32 + 4 * schedulers + 4 * shards;
    const rlim_t want = static_cast<rlim_t>(options.max_clients) + reserve;
    if (files.rlim_cur < want) {
      files.rlim_cur = std::min(want, files.rlim_max);
      setrlimit(RLIMIT_NOFILE, &files);
      getrlimit(RLIMIT_NOFILE, &files);
    }
    if (files.rlim_cur < want) {
      const int fit =
          files.rlim_cur > 2 * reserve ? static_cast<int>(files.rlim_cur - reserve) : 32;
      etsmgr::Logf(etsmgr::LogLevel::kWarning,
                   "etsredis: only %d file descriptors: maxclients lowered from %d to %d",
                   static_cast<int>(files.rlim_cur), options.max_clients, fit);
      options.max_clients = fit;
    }
  }
  absl::StatusOr<std::unique_ptr<etsmgr::Node>> node = etsmgr::Node::Create(runtime);
  if (!node.ok()) return Fail(std::string(node.status().message()));
  if (absl::Status st = etsmgr::StartManager(**node, options.instance); !st.ok()) {
    std::cerr << "etsredis: " << st << "\n";
    return 1;
  }
  absl::StatusOr<std::unique_ptr<etsredis::Server>> server =
      etsredis::Server::Start(**node, options);
  if (!server.ok()) {
    std::cerr << "etsredis: " << server.status() << "\n";
    return 1;
  }
  // The port chosen, on stdout, for scripts that asked for port 0.
  std::cout << "etsredis listening on " << (*server)->address().ToString() << std::endl;
  // Crash injection: a thread that kills a random shard at a steady pace until the stop.
  std::mutex chaos_mu;
  std::condition_variable chaos_cv;
  bool stopping = false;
  uint64_t kills = 0;
  std::thread chaos;
  if (kill_every > absl::ZeroDuration()) {
    chaos = std::thread([&] {
      std::mt19937 rng(static_cast<uint32_t>(getpid()));
      std::unique_lock<std::mutex> lock(chaos_mu);
      while (!chaos_cv.wait_for(lock, absl::ToChronoNanoseconds(kill_every),
                                [&] { return stopping; })) {
        std::string name = etsredis::Server::ShardName(
            static_cast<int>(rng() % static_cast<uint32_t>((*server)->shards())));
        etsmgr::Pid shard = (*node)->Whereis(name);
        if (!shard.valid()) continue;  // Restarting.
        etsmgr::SendExit(shard, etsmgr::ExitReason::Kill());
        ++kills;
      }
    });
  }
  // Until SIGTERM or SIGINT; a server whose supervision tree gave up exits with status 1.
  int sig = 0;
  bool gone = false;
  while (true) {
    timespec second{1, 0};
    sig = sigtimedwait(&stop, nullptr, &second);
    if (sig > 0) break;
    if (!(*server)->running()) {
      etsmgr::Logf(etsmgr::LogLevel::kError,
                   "etsredis: the server's supervisor is gone (it gave up restarting): exiting");
      gone = true;
      break;
    }
  }
  if (chaos.joinable()) {
    {
      std::lock_guard<std::mutex> lock(chaos_mu);
      stopping = true;
    }
    chaos_cv.notify_all();
    chaos.join();
    // On stderr whatever the log level: what the crash injection did is its result (the
    // benchmark reads it).
    std::fprintf(stderr, "etsredis: crash injection killed %llu shard(s)\n",
                 static_cast<unsigned long long>(kills));
  }
  if (!gone) {
    etsmgr::Logf(etsmgr::LogLevel::kNotice, "etsredis: %s received: stopping",
                 sig == SIGTERM ? "SIGTERM" : "SIGINT");
  }
  absl::Status stopped = (*server)->Stop();
  server->reset();
  etsmgr::StopManager(**node, options.instance).IgnoreError();
  node->reset();
  return stopped.ok() && !gone ? 0 : 1;
}
