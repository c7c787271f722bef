// etsredis beside Redis, in one run, with Redis's own load generator:
//
//   bazel run -c opt //etsredis:etsredis_benchmark              # 1,000,000 requests per test
//   bazel run -c opt //etsredis:etsredis_benchmark -- --requests=200000
//
// For each server it starts the server on a free port, runs
//   redis-benchmark -q -t ping,set,get,incr -n N -c 50 -P 16   (and -P 1)
// and prints requests/s, p50 and p99 per test, with the ratio to redis-server without
// persistence (the target: throughput >= 1.0x and p99 <= 1.0x of Redis's). Servers:
//   redis-server --save '' --appendonly no                      the reference
//   redis-server --appendonly yes --appendfsync always          Redis that survives its crash
//   etsredis (1 scheduler, epoll) / (1 scheduler, io_uring) / (2 schedulers, io_uring)
//   etsredis (1 scheduler, io_uring, --shared: the keyspace in shared memory, surviving kill -9)
//   etsredis (1 scheduler, epoll) killing a random shard every 10 ms (nothing acknowledged is
//   lost: etsredis:server_test checks that under the same kind of load)
// The load generator shares this machine's cores with the server, as on any 2-vCPU box: one
// scheduler leaves it a core. Run it on a quiet machine. --smoke: 2,000 requests, no judgement.
// --report_json=FILE also writes every figure as JSON (tools/bench.sh reads it):
//   {"binary": "etsredis_benchmark", "requests": N, "smoke": false, "results": [{"server",
//    "pipeline", "test", "rps", "p50_ms", "p99_ms", "rps_ratio", "p99_ratio"}, ...]}
// with the ratios to redis-server (no persistence) as printed.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace {

struct Figure {
  double rps = 0, p50 = 0, p99 = 0;
};
// test name ("SET", "PING_INLINE"...) -> figure.
using Results = std::map<std::string, Figure>;

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

std::string Run(const std::string& command) {
  std::string out;
  FILE* f = ::popen((command + " 2>&1").c_str(), "r");
  if (f == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  ::pclose(f);
  return out;
}

bool Ping(int port) {
  return Run(absl::StrCat("/usr/bin/redis-cli -p ", port, " PING")) == "PONG\n";
}

// Starts the server; its standard error goes to `stderr_path`.
pid_t StartServer(const std::vector<std::string>& argv, int port, const std::string& stderr_path) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int null = ::open("/dev/null", O_WRONLY);
    int err = ::open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ::dup2(null, 1);
    ::dup2(err >= 0 ? err : null, 2);
    std::vector<char*> args;
    std::vector<std::string> copy = argv;
    for (std::string& a : copy) args.push_back(a.data());
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  // Ready when it answers (a server that never does fails the run below).
  for (int i = 0; i < 500 && !Ping(port); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pid;
}

void StopServer(pid_t pid) {
  ::kill(pid, SIGTERM);
  int status;
  ::waitpid(pid, &status, 0);
}

// redis-benchmark --csv: "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",
// "p95_latency_ms","p99_latency_ms","max_latency_ms".
Results Benchmark(int port, int requests, int pipeline) {
  std::string out =
      Run(absl::StrCat("/usr/bin/redis-benchmark -p ", port,
                       " --csv -t ping,set,get,incr -c 50 -n ", requests, " -P ", pipeline));
  Results r;
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    std::vector<std::string> f = absl::StrSplit(line, ',');
    if (f.size() < 8 || f[0] == "\"test\"") continue;
    for (std::string& x : f) {
      if (x.size() >= 2 && x.front() == '"') x = x.substr(1, x.size() - 2);
    }
    Figure fig;
    if (!absl::SimpleAtod(f[1], &fig.rps) || !absl::SimpleAtod(f[4], &fig.p50) ||
        !absl::SimpleAtod(f[6], &fig.p99)) {
      continue;
    }
    r[f[0]] = fig;
  }
  if (r.empty()) std::cerr << "redis-benchmark said:\n" << out << "\n";
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  int requests = 1'000'000;
  bool smoke = false;
  std::string report_json;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--smoke") {
      smoke = true;
      requests = 2000;
    } else if (a.rfind("--report_json=", 0) == 0 && a.size() > 14) {
      report_json = a.substr(14);
    } else if (a.rfind("--requests=", 0) == 0 && absl::SimpleAtoi(a.substr(11), &requests) &&
               requests > 0) {
    } else {
      std::cerr << "usage: etsredis_benchmark [--requests=N] [--smoke] [--report_json=FILE]\n";
      return 2;
    }
  }
  for (const char* tool :
       {"/usr/bin/redis-server", "/usr/bin/redis-benchmark", "/usr/bin/redis-cli"}) {
    if (::access(tool, X_OK) != 0) {
      std::cerr << tool << " is missing: tools/setup.sh installs redis-server and redis-tools\n";
      return 1;
    }
  }
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  const std::string etsredis = self.substr(0, self.rfind('/')) + "/etsredis";
  const std::string aof_dir = std::filesystem::temp_directory_path() / "etsredis_benchmark_aof";
  std::filesystem::remove_all(aof_dir);
  std::filesystem::create_directories(aof_dir);

  // The shared mode's segments and its instance's directory, removed after the run.
  const std::string shared = absl::StrCat("etsredis-bench-", ::getpid());
  auto remove_shared = [&shared] {
    for (const auto& entry : std::filesystem::directory_iterator("/dev/shm")) {
      const std::string name = entry.path().filename().string();
      std::error_code ignored;
      for (const std::string& start : {shared + "-", "." + shared + "-"}) {
        if (name.rfind(start, 0) == 0) std::filesystem::remove(entry.path(), ignored);
      }
      for (const std::string& exact :
           {"etsmgr-directory-" + shared, ".etsmgr-directory-" + shared + ".owner"}) {
        if (name == exact) std::filesystem::remove(entry.path(), ignored);
      }
    }
  };
  struct Server {
    std::string name;
    std::vector<std::string> argv;  // "{port}" replaced.
    bool kills_shards = false;      // --kill-shard-every: the kills are counted and reported.
  };
  std::vector<Server> servers = {
      {"redis-server (no persistence)",
       {"/usr/bin/redis-server", "--port", "{port}", "--save", "", "--appendonly", "no"}},
      {"redis-server (AOF, fsync always)",
       {"/usr/bin/redis-server", "--port", "{port}", "--save", "", "--appendonly", "yes",
        "--appendfsync", "always", "--dir", aof_dir}},
      {"etsredis (1 scheduler, epoll)",
       {etsredis, "--port={port}", "--schedulers=1", "--backend=epoll", "--log=warning"}},
      {"etsredis (1 scheduler, io_uring)",
       {etsredis, "--port={port}", "--schedulers=1", "--backend=io_uring", "--log=warning"}},
      {"etsredis (2 schedulers, io_uring)",
       {etsredis, "--port={port}", "--schedulers=2", "--backend=io_uring", "--log=warning"}},
      {"etsredis (1 scheduler, io_uring, shared memory)",
       {etsredis, "--port={port}", "--schedulers=1", "--backend=io_uring", "--log=warning",
        "--shared=" + shared, "--instance=" + shared}},
      {"etsredis (1 scheduler, epoll, a shard killed every 10 ms)",
       {etsredis, "--port={port}", "--schedulers=1", "--backend=epoll", "--log=warning",
        "--kill-shard-every=10"},
       true},
  };
  std::map<int, int64_t> kills;  // pipeline -> shards the crash injection killed in that run
  const std::vector<std::string> tests = {"PING_INLINE", "PING_MBULK", "SET", "GET", "INCR"};
  std::map<std::pair<std::string, int>, Results> all;  // (server, pipeline) -> results
  int failures = 0;
  for (const Server& s : servers) {
    for (int pipeline : {16, 1}) {
      int port = FreePort();
      std::vector<std::string> argv;
      for (std::string a : s.argv) {
        size_t at = a.find("{port}");
        if (at != std::string::npos) a.replace(at, 6, std::to_string(port));
        argv.push_back(a);
      }
      const std::string stderr_path = absl::StrCat(aof_dir, ".stderr");
      pid_t pid = StartServer(argv, port, stderr_path);
      Results r = Benchmark(port, requests, pipeline);
      StopServer(pid);
      if (s.kills_shards) {
        // The figures claim shards were killed under load: the server says how many.
        std::ifstream in(stderr_path);
        std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        const std::string marker = "crash injection killed ";
        const size_t at = text.find(marker);
        int64_t n = -1;
        if (at != std::string::npos) n = std::atoll(text.c_str() + at + marker.size());
        kills[pipeline] = n;
        if (n < 0 || (!smoke && n == 0)) {
          std::cerr << s.name << " -P " << pipeline << ": no shard was killed (" << n
                    << "): the row would not measure what it names\n";
          ++failures;
        }
      }
      std::filesystem::remove(stderr_path);
      remove_shared();  // (Each run starts empty, as the others do.)
      if (r.size() != tests.size()) {
        std::cerr << s.name << " -P " << pipeline << ": redis-benchmark gave " << r.size() << " of "
                  << tests.size() << " results\n";
        ++failures;
      }
      all[{s.name, pipeline}] = r;
    }
  }
  std::filesystem::remove_all(aof_dir);

  std::cout << absl::StrFormat(
      "redis-benchmark -c 50 -n %d, one run; ratios to redis-server (no persistence): throughput "
      "(target >= 1.00x) and p99 (target <= 1.00x)\n",
      requests);
  std::string json;  // The "results" array's elements.
  for (int pipeline : {16, 1}) {
    std::cout << absl::StrFormat("\n-P %d\n%-58s %-11s %12s %8s %8s %8s %8s\n", pipeline, "server",
                                 "test", "requests/s", "p50 ms", "p99 ms", "rps x", "p99 x");
    const Results& base = all[{servers[0].name, pipeline}];
    for (const Server& s : servers) {
      const Results& r = all[{s.name, pipeline}];
      for (const std::string& t : tests) {
        auto it = r.find(t);
        if (it == r.end()) continue;
        auto b = base.find(t);
        double rx = b != base.end() && b->second.rps > 0 ? it->second.rps / b->second.rps : 0;
        double px = b != base.end() && b->second.p99 > 0 ? it->second.p99 / b->second.p99 : 0;
        std::cout << absl::StrFormat("%-58s %-11s %12.0f %8.3f %8.3f %7.2fx %7.2fx\n", s.name, t,
                                     it->second.rps, it->second.p50, it->second.p99, rx, px);
        absl::StrAppend(&json, json.empty() ? "\n" : ",\n",
                        absl::StrFormat("    {\"server\": \"%s\", \"pipeline\": %d, \"test\": "
                                        "\"%s\", \"rps\": %.6g, \"p50_ms\": %.6g, \"p99_ms\": "
                                        "%.6g, \"rps_ratio\": %.6g, \"p99_ratio\": %.6g}",
                                        s.name, pipeline, t, it->second.rps, it->second.p50,
                                        it->second.p99, rx, px));
      }
    }
  }
  for (const auto& [pipeline, n] : kills) {
    std::cout << absl::StrFormat(
        "\nshards killed during the -P %d run of the crash-injection row: %d", pipeline, n);
  }
  std::cout << "\n";
  if (smoke) std::cout << "\n(--smoke: tiny runs, figures not meaningful)\n";
  if (!report_json.empty()) {
    std::ofstream out(report_json);
    out << absl::StrFormat(
        "{\n  \"binary\": \"etsredis_benchmark\",\n  \"requests\": %d,\n  \"smoke\": %s,\n  "
        "\"results\": [%s\n  ]\n}\n",
        requests, smoke ? "true" : "false", json);
    out.close();
    if (!out) {
      std::cerr << "cannot write " << report_json << "\n";
      ++failures;
    }
  }
  return failures == 0 ? 0 : 1;
}
