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
//
// Flags besides Google Benchmark's:
//   --benchmark_repetitions=N  (N > 1) runs the whole binary N times, each in a fresh process
//       (a benchmark that builds 100k tables or measures memory would otherwise measure a warm
//       heap from the second run on), and judges the median of the N runs of each figure.
//   --smoke  a quick check that every benchmark still runs and its sanity checks hold: workloads
//       shrink (Scaled), each benchmark runs one iteration, and no target is judged. With
//       --benchmark_repetitions=N it makes N such runs, each in a fresh process.
//   --report_json=FILE  also writes the table as JSON (tools/bench.sh reads it):
//         {"binary": "table_benchmark", "repetitions": 3, "smoke": false,
//          "figures": [{"benchmark", "counter", "what", "unit", "better": "higher"|"lower",
//                       "target", "measured", "min", "max", "rel_stddev", "runs": [...],
//                       "ratio", "met"}, ...],
//          "measurements": [{"benchmark", "counter", "measured", "min", "max", "rel_stddev",
//                            "runs": [...]}, ...]}
//       "figures" are the targets' rows as printed; "measurements" every counter of every
//       benchmark (those without a target too). "measured" is the median of the runs, "runs" each
//       run's value (sorted), "rel_stddev" their standard deviation over their mean. A target no
//       benchmark gave has null "measured", "ratio" and "met"; "met" is null when nothing is
//       judged (--smoke). Numbers that are not finite are null.
//   --samples_dir=DIR  benchmarks that keep latency samples append them to DIR (WriteSamples);
//       with repetitions, every run appends to the same files.
//
// Sanity checks: a benchmark reports a broken result with state.SkipWithError (or aborts); the
// exit code is then non-zero. A missed target never changes the exit code: benchmarks report,
// tests decide.
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

// Whether this is a --smoke run; `full` in a measuring run, `smoke` in a smoke run (benchmark
// bodies size their workloads with it: it is set before any benchmark runs).
bool Smoke();
int64_t Scaled(int64_t full, int64_t smoke);
// Turns smoke mode on without RunWithTargets (a fresh child process of a smoke run).
void EnableSmoke();

// With --samples_dir=DIR, appends `samples` to DIR/<name>.samples, one per line; otherwise does
// nothing. False when the file cannot be written. Call from the benchmark's thread after timing.
bool WriteSamples(const std::string& name, const std::vector<int64_t>& samples);

int RunWithTargets(int argc, char** argv, const std::vector<Target>& targets);

}  // namespace etsmgr::bench

#endif  // ETSMGR_TOOLS_BENCH_REPORT_H_
