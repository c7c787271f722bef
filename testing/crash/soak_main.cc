// `bazel run -c opt //testing/crash:soak -- --seeds=10000 [--threads=2] [--first_seed=N]
// [--seed=N] [--clients=3] [--faults=16]`: runs the no-loss soak (soak.h) seed after seed with a
// progress line, ends with a summary, and prints how to replay a failing seed. Exit status 0 when
// every seed held every invariant.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>
#include <thread>

#include "etsmgr/base/log.h"
#include "testing/crash/soak.h"

namespace {

constexpr int64_t kSeedLimitMs = 120'000;

class NullSink final : public etsmgr::LogSink {
 public:
  void Write(const etsmgr::LogRecord&) override {}
};

bool ParseFlag(std::string_view arg, std::string_view name, int64_t* value) {
  std::string prefix = "--" + std::string(name) + "=";
  if (arg.substr(0, prefix.size()) != prefix) return false;
  std::string text(arg.substr(prefix.size()));
  char* end = nullptr;
  long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || v < 0) {
    std::fprintf(stderr, "soak: --%s wants a non-negative integer, got \"%s\"\n",
                 std::string(name).c_str(), text.c_str());
    std::exit(2);
  }
  *value = v;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t seeds = 100, first_seed = 0, one_seed = -1, threads = 0, clients = 3, faults = 16;
  for (int a = 1; a < argc; ++a) {
    std::string_view arg = argv[a];
    if (ParseFlag(arg, "seeds", &seeds) || ParseFlag(arg, "first_seed", &first_seed) ||
        ParseFlag(arg, "seed", &one_seed) || ParseFlag(arg, "threads", &threads) ||
        ParseFlag(arg, "clients", &clients) || ParseFlag(arg, "faults", &faults)) {
      continue;
    }
    std::fprintf(stderr,
                 "soak: unknown argument \"%s\"\nusage: soak [--seeds=N] [--first_seed=N] "
                 "[--seed=N] [--threads=N] [--clients=N] [--faults=N]\n",
                 argv[a]);
    return 2;
  }
  if (clients < 1 || clients > 64) {
    std::fprintf(stderr, "soak: --clients must be 1..64\n");
    return 2;
  }
  if (one_seed >= 0) {
    first_seed = one_seed;
    seeds = 1;
  }
  // Thousands of restarts: the log is for replaying one seed (--seed), not for the soak.
  NullSink null_sink;
  if (one_seed >= 0) {
    etsmgr::SetMinLogLevel(etsmgr::LogLevel::kNotice);
  } else {
    etsmgr::SetLogSink(&null_sink);
  }
  etsmgr::testing::SoakOptions options;
  options.threads = static_cast<int>(threads);
  options.clients = static_cast<int>(clients);
  options.faults = static_cast<int>(faults);
  std::printf("soak: %lld seed(s) from %lld, %s, %lld clients, %lld faults per seed\n",
              static_cast<long long>(seeds), static_cast<long long>(first_seed),
              threads == 0 ? "deterministic" : (std::to_string(threads) + " schedulers").c_str(),
              static_cast<long long>(clients), static_cast<long long>(faults));
  std::map<std::string, int64_t> hits;
  int64_t acks = 0, tables = 0, failed = 0;
  uint64_t lost = 0;
  auto start = std::chrono::steady_clock::now();
  auto last_progress = start;
  // Nothing may hang: a seed that runs longer than this is a failure, with its replay command.
  std::atomic<int64_t> current_seed{-1};
  std::atomic<int64_t> seed_started_ms{0};
  std::thread watchdog([&] {
    while (true) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      int64_t seed = current_seed.load();
      if (seed == -2) return;
      int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::steady_clock::now() - start)
                           .count();
      if (seed >= 0 && now_ms - seed_started_ms.load() > kSeedLimitMs) {
        std::printf(
            "\nseed %lld HUNG (over %lld s)\n  replay: bazel run -c opt "
            "//testing/crash:soak -- --seed=%lld --threads=%lld --clients=%lld "
            "--faults=%lld\n",
            static_cast<long long>(seed), static_cast<long long>(kSeedLimitMs / 1000),
            static_cast<long long>(seed), static_cast<long long>(threads),
            static_cast<long long>(clients), static_cast<long long>(faults));
        std::fflush(stdout);
        std::_Exit(1);
      }
    }
  });
  for (int64_t k = 0; k < seeds; ++k) {
    uint64_t seed = static_cast<uint64_t>(first_seed + k);
    seed_started_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::steady_clock::now() - start)
                          .count();
    current_seed = static_cast<int64_t>(seed);
    etsmgr::testing::SeedResult r = etsmgr::testing::RunSeed(seed, options);
    for (const auto& [kind, n] : r.faults) hits[kind] += n;
    acks += r.acks;
    tables += r.tables;
    lost += r.lost;
    if (!r.error.empty()) {
      ++failed;
      std::printf(
          "\nseed %llu FAILED: %s\n  replay: bazel run -c opt //testing/crash:soak -- "
          "--seed=%llu --threads=%lld --clients=%lld --faults=%lld\n",
          static_cast<unsigned long long>(seed), r.error.c_str(),
          static_cast<unsigned long long>(seed), static_cast<long long>(threads),
          static_cast<long long>(clients), static_cast<long long>(faults));
    }
    auto now = std::chrono::steady_clock::now();
    if (now - last_progress > std::chrono::seconds(1) || k + 1 == seeds) {
      last_progress = now;
      std::printf("\rseed %lld/%lld  failed %lld  acks %lld  tables %lld  %.1f s",
                  static_cast<long long>(k + 1), static_cast<long long>(seeds),
                  static_cast<long long>(failed), static_cast<long long>(acks),
                  static_cast<long long>(tables),
                  std::chrono::duration<double>(now - start).count());
      std::fflush(stdout);
    }
  }
  current_seed = -2;
  watchdog.join();
  std::printf("\n== summary: %lld seed(s), %lld failed\n", static_cast<long long>(seeds),
              static_cast<long long>(failed));
  std::printf("faults that hit a live target:");
  for (const auto& [kind, n] : hits)
    std::printf(" %s=%lld", kind.c_str(), static_cast<long long>(n));
  std::printf(
      "\nacknowledged writes checked: %lld\nmanaged tables checked: %lld\ntables lost: %llu\n",
      static_cast<long long>(acks), static_cast<long long>(tables),
      static_cast<unsigned long long>(lost));
  // A soak that never hit a kind of process proves nothing about it.
  bool all_hit = true;
  for (const char* kind : {"client", "etsmgr_srv", "etsmgr_vault", "etsmgr_sup", "app_sup"}) {
    if (seeds >= 50 && hits[kind] == 0) {
      std::printf("no fault ever hit %s\n", kind);
      all_hit = false;
    }
  }
  return failed == 0 && lost == 0 && all_hit ? 0 : 1;
}
