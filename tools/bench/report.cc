#include "tools/bench/report.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>

#include "absl/strings/str_format.h"
#include "benchmark/benchmark.h"
#include "etsmgr/base/log.h"

namespace etsmgr::bench {
namespace {

// Forwards to the console reporter and keeps every run for the target table.
class CapturingReporter final : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.error_occurred) continue;
      // With repetitions, prefer the median aggregate; otherwise the single run.
      std::string name = run.run_name.str();
      if (run.run_type == Run::RT_Aggregate && run.aggregate_name != "median") continue;
      Captured& c = captured_[name];
      if (c.from_aggregate && run.run_type != Run::RT_Aggregate) continue;
      c.from_aggregate = run.run_type == Run::RT_Aggregate;
      c.values.clear();
      c.values["real_time"] = run.GetAdjustedRealTime();
      for (const auto& [key, counter] : run.counters) c.values[key] = counter.value;
    }
  }

  struct Captured {
    bool from_aggregate = false;
    std::map<std::string, double> values;
  };
  std::map<std::string, Captured> captured_;
};

bool Matches(const std::string& pattern, const std::string& name) {
  if (!pattern.empty() && pattern.back() == '*') {
    return name.compare(0, pattern.size() - 1, pattern, 0, pattern.size() - 1) == 0;
  }
  return name == pattern;
}

}  // namespace

double Percentile(std::vector<int64_t> samples, double p) {
  std::sort(samples.begin(), samples.end());
  return static_cast<double>(
      samples[static_cast<size_t>(p * static_cast<double>(samples.size() - 1))]);
}

int RunWithTargets(int argc, char** argv, const std::vector<Target>& targets) {
  SetMinLogLevel(LogLevel::kError);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  CapturingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();

  std::printf("\n%-72s %14s %14s %8s  %s\n", "figure", "measured", "target", "ratio", "verdict");
  int met = 0;
  int missed = 0;
  for (const Target& t : targets) {
    bool found = false;
    for (const auto& [name, captured] : reporter.captured_) {
      if (!Matches(t.benchmark, name)) continue;
      auto it = captured.values.find(t.counter);
      if (it == captured.values.end()) continue;
      found = true;
      double value = it->second;
      double ratio = t.better == Better::kHigher ? value / t.target : t.target / value;
      bool ok = ratio >= 1.0;
      (ok ? met : missed)++;
      std::string label = absl::StrFormat("%s [%s]", t.what, name);
      std::printf(
          "%-72s %14s %14s %7.2fx  %s\n", label.c_str(),
          absl::StrFormat("%.4g %s", value, t.unit).c_str(),
          absl::StrFormat("%s %.4g", t.better == Better::kHigher ? ">=" : "<=", t.target).c_str(),
          ratio, ok ? "MET" : "MISSED");
    }
    if (!found) {
      std::printf("%-72s %14s %14s %8s  %s\n", t.what.c_str(), "-",
                  absl::StrFormat("%.4g", t.target).c_str(), "-", "NOT RUN");
    }
  }
  std::printf("targets: %d met, %d missed\n", met, missed);
  return 0;
}

}  // namespace etsmgr::bench
