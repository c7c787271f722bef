// `bazel run -c opt //testing/crash:shared_soak -- [--kills=1000] [--seed=N] [--first_seed=N]
// [--kills_per_seed=50] [--directory=DIR]`: the kill soak of shared maps
// (etsmgr/table/shared/crash_harness.h). Seed after seed, writer processes (one on even seeds,
// two at once on odd ones) write to a fresh segment and are SIGKILLed at seeded random moments;
// after each kill the segment is re-opened, Check()ed and every acknowledged write verified.
// Prints a progress line, a summary (kills, acknowledged writes checked, Check() failures, lost
// writes, repairs by kind), and the command that replays a failing seed. Exit status 0 when no
// seed lost a write or failed Check().
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "etsmgr/table/shared/crash_harness.h"

namespace {

bool ParseFlag(std::string_view arg, std::string_view name, int64_t* value) {
  std::string prefix = "--" + std::string(name) + "=";
  if (arg.substr(0, prefix.size()) != prefix) return false;
  std::string text(arg.substr(prefix.size()));
  char* end = nullptr;
  long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || v < 0) {
    std::fprintf(stderr, "shared_soak: --%s wants a non-negative integer, got \"%s\"\n",
                 std::string(name).c_str(), text.c_str());
    std::exit(2);
  }
  *value = v;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t kills = 1000, first_seed = 0, one_seed = -1, per_seed = 50;
  std::string directory;
  bool lose_a_write = false;
  for (int a = 1; a < argc; ++a) {
    std::string_view arg = argv[a];
    if (ParseFlag(arg, "kills", &kills) || ParseFlag(arg, "first_seed", &first_seed) ||
        ParseFlag(arg, "seed", &one_seed) || ParseFlag(arg, "kills_per_seed", &per_seed)) {
      continue;
    }
    if (arg == "--lose_a_write_for_test") {  // Tests of the failure report only.
      lose_a_write = true;
      continue;
    }
    if (arg.substr(0, 12) == "--directory=") {
      directory = std::string(arg.substr(12));
      continue;
    }
    std::fprintf(stderr,
                 "shared_soak: unknown argument \"%s\"\nusage: shared_soak [--kills=N] "
                 "[--seed=N] [--first_seed=N] [--kills_per_seed=N] [--directory=DIR]\n",
                 argv[a]);
    return 2;
  }
  if (per_seed < 1) per_seed = 1;
  int64_t seeds = (kills + per_seed - 1) / per_seed;
  if (one_seed >= 0) {
    first_seed = one_seed;
    seeds = 1;
    kills = per_seed;
  }
  std::printf("shared_soak: %lld kills, %lld per seed, seeds %lld..%lld, segments in %s\n",
              static_cast<long long>(kills), static_cast<long long>(per_seed),
              static_cast<long long>(first_seed), static_cast<long long>(first_seed + seeds - 1),
              directory.empty() ? "/dev/shm" : directory.c_str());
  std::fflush(stdout);

  const auto start = std::chrono::steady_clock::now();
  int64_t total_kills = 0, checked = 0, check_failures = 0, lost = 0, harness = 0;
  int64_t slot = 0, resize_back = 0, resize_fwd = 0, clears = 0, logs = 0, reclaimed = 0;
  int64_t failed_seeds = 0;
  for (int64_t i = 0; i < seeds; ++i) {
    const int64_t seed = first_seed + i;
    etsmgr::shared_testing::KillRunOptions o;
    o.seed = static_cast<uint64_t>(seed);
    o.writers = seed % 2 == 0 ? 1 : 2;
    o.kills = static_cast<int>(std::min<int64_t>(per_seed, kills - total_kills));
    o.directory = directory;
    o.lose_a_write_for_test = lose_a_write;
    etsmgr::shared_testing::KillRunResult r = etsmgr::shared_testing::RunKills(o);
    total_kills += r.kills;
    checked += r.writes_checked;
    check_failures += r.check_failures;
    lost += r.lost_writes;
    harness += r.harness_failures;
    slot += static_cast<int64_t>(r.info.slot_rollbacks);
    resize_back += static_cast<int64_t>(r.info.resize_rollbacks);
    resize_fwd += static_cast<int64_t>(r.info.resize_completions);
    clears += static_cast<int64_t>(r.info.clears_completed);
    logs += static_cast<int64_t>(r.info.log_rollbacks);
    reclaimed += static_cast<int64_t>(r.info.regions_reclaimed);
    if (!r.ok()) {
      ++failed_seeds;
      std::printf(
          "\nshared_soak: seed %lld FAILED (%d writer%s): %s\n  replay: bazel run -c opt "
          "//testing/crash:shared_soak -- --seed=%lld --kills_per_seed=%lld%s%s\n",
          static_cast<long long>(seed), o.writers, o.writers == 1 ? "" : "s",
          r.first_failure.c_str(), static_cast<long long>(seed), static_cast<long long>(per_seed),
          directory.empty() ? "" : " --directory=", directory.c_str());
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf(
        "\rshared_soak: seed %lld, kills %lld/%lld, writes checked %lld, lost %lld, "
        "check failures %lld, %.0f s   ",
        static_cast<long long>(seed), static_cast<long long>(total_kills),
        static_cast<long long>(kills), static_cast<long long>(checked),
        static_cast<long long>(lost), static_cast<long long>(check_failures), secs);
    std::fflush(stdout);
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "\n\nshared_soak summary: %lld seeds, %lld kills in %.1f s\n"
      "  acknowledged writes checked  %lld\n"
      "  Check() failures             %lld\n"
      "  lost writes                  %lld\n"
      "  harness failures             %lld\n"
      "  repairs: slot rollbacks %lld, resize rollbacks %lld, resize completions %lld, clears "
      "finished %lld, allocator log rollbacks %lld, regions reclaimed %lld\n"
      "%s\n",
      static_cast<long long>(seeds), static_cast<long long>(total_kills), secs,
      static_cast<long long>(checked), static_cast<long long>(check_failures),
      static_cast<long long>(lost), static_cast<long long>(harness), static_cast<long long>(slot),
      static_cast<long long>(resize_back), static_cast<long long>(resize_fwd),
      static_cast<long long>(clears), static_cast<long long>(logs),
      static_cast<long long>(reclaimed),
      failed_seeds == 0 ? "PASS" : (std::to_string(failed_seeds) + " seed(s) FAILED").c_str());
  return failed_seeds == 0 ? 0 : 1;
}
