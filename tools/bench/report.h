// Runs a binary's Google Benchmarks and prints each figure against its target.
//
//   int main(int argc, char** argv) {
//     return etsmgr::bench::RunWithTargets(argc, argv, {
//         {"BM_Switch", "ns_per_switch", 10, etsmgr::bench::Better::kLower, "ns",
//          "same-thread coroutine switch"},
//     });
//   }
//
// A target names a benchmark (exact name, or a prefix ending in '*'), the counter to read
// ("real_time" is the adjusted real time per iteration in the benchmark's time unit,
// "items_per_second" and any user counter by name), the target value and which direction is
// better. After the normal console output a table prints figure, target, ratio (>= 1 means the
// target is met) and MET / MISSED. Logging is set to errors only so benchmarks stay quiet.
// The exit code is 0 even when a target is missed: benchmarks report, tests decide.
#ifndef ETSMGR_TOOLS_BENCH_REPORT_H_
#define ETSMGR_TOOLS_BENCH_REPORT_H_

#include <cstdint>
#include <string>
#include <vector>

namespace etsmgr::bench {

enum class Better { kLower, kHigher };

struct Target {
  std::string benchmark;
  std::string counter;
  double target;
  Better better;
  std::string unit;
  std::string what;
};

// The p-quantile (0..1) of `samples` (nearest rank). `samples` must not be empty.
double Percentile(std::vector<int64_t> samples, double p);

int RunWithTargets(int argc, char** argv, const std::vector<Target>& targets);

}  // namespace etsmgr::bench

#endif  // ETSMGR_TOOLS_BENCH_REPORT_H_
