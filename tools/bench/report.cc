#include "tools/bench/report.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "benchmark/benchmark.h"
#include "etsmgr/base/log.h"

namespace etsmgr::bench {
namespace {

// Set in a run started by --benchmark_repetitions: where it writes its figures for the parent.
constexpr char kResultsEnv[] = "ETSMGR_BENCH_RESULTS";
constexpr char kRepetitionsFlag[] = "--benchmark_repetitions=";

bool g_smoke = false;

// Benchmark name -> counter -> value.
using Figures = std::map<std::string, std::map<std::string, double>>;

// Forwards to the console reporter and keeps every run for the target table, and every error.
class CapturingReporter final : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      std::string name = run.run_name.str();
      if (run.error_occurred) {
        errors_.push_back(absl::StrFormat("%s: %s", name, run.error_message));
        continue;
      }
      // With repetitions, prefer the median aggregate; otherwise the single run.
      if (run.run_type == Run::RT_Aggregate && run.aggregate_name != "median") continue;
      bool from_aggregate = run.run_type == Run::RT_Aggregate;
      if (from_aggregate_[name] && !from_aggregate) continue;
      from_aggregate_[name] = from_aggregate;
      std::map<std::string, double>& values = figures_[name];
      values.clear();
      values["real_time"] = run.GetAdjustedRealTime();
      for (const auto& [key, counter] : run.counters) values[key] = counter.value;
    }
  }

  const Figures& figures() const { return figures_; }
  const std::vector<std::string>& errors() const { return errors_; }

 private:
  std::map<std::string, bool> from_aggregate_;
  Figures figures_;
  std::vector<std::string> errors_;
};

bool Matches(const std::string& pattern, const std::string& name) {
  if (!pattern.empty() && pattern.back() == '*') {
    return name.compare(0, pattern.size() - 1, pattern, 0, pattern.size() - 1) == 0;
  }
  return name == pattern;
}

// Runs the benchmarks in this process; false when a sanity check failed (or the flags were bad).
bool RunHere(std::vector<std::string> args, Figures* figures) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int argc = static_cast<int>(args.size());
  benchmark::Initialize(&argc, argv.data());
  if (benchmark::ReportUnrecognizedArguments(argc, argv.data())) return false;
  CapturingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  *figures = reporter.figures();
  for (const std::string& e : reporter.errors())
    std::printf("sanity check failed: %s\n", e.c_str());
  return reporter.errors().empty();
}

bool WriteFigures(const char* path, const Figures& figures) {
  std::ofstream out(path);
  for (const auto& [name, values] : figures) {
    for (const auto& [counter, value] : values) {
      out << name << '\t' << counter << '\t' << absl::StrFormat("%.17g", value) << '\n';
    }
  }
  return static_cast<bool>(out);
}

Figures ReadFigures(const std::string& path) {
  Figures figures;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> parts = absl::StrSplit(line, '\t');
    double value = 0;
    if (parts.size() == 3 && absl::SimpleAtod(parts[2], &value)) {
      figures[parts[0]][parts[1]] = value;
    }
  }
  return figures;
}

// Each figure's median over the runs that have it (the lower middle for an even count).
Figures Median(const std::vector<Figures>& runs) {
  std::map<std::string, std::map<std::string, std::vector<double>>> all;
  for (const Figures& run : runs) {
    for (const auto& [name, values] : run) {
      for (const auto& [counter, value] : values) all[name][counter].push_back(value);
    }
  }
  Figures median;
  for (auto& [name, counters] : all) {
    for (auto& [counter, values] : counters) {
      std::sort(values.begin(), values.end());
      median[name][counter] = values[(values.size() - 1) / 2];
    }
  }
  return median;
}

void PrintTable(const Figures& figures, const std::vector<Target>& targets, bool judge,
                const std::string& note) {
  std::printf("\n%-72s %14s %14s %8s  %s\n", "figure", "measured", "target", "ratio", "verdict");
  int met = 0;
  int missed = 0;
  for (const Target& t : targets) {
    bool found = false;
    for (const auto& [name, values] : figures) {
      if (!Matches(t.benchmark, name)) continue;
      auto it = values.find(t.counter);
      if (it == values.end()) continue;
      found = true;
      double value = it->second;
      double ratio = t.better == Better::kHigher ? value / t.target : t.target / value;
      bool ok = ratio >= 1.0;
      if (judge) (ok ? met : missed)++;
      std::string label = absl::StrFormat("%s [%s]", t.what, name);
      std::printf(
          "%-72s %14s %14s %7.2fx  %s\n", label.c_str(),
          absl::StrFormat("%.4g %s", value, t.unit).c_str(),
          absl::StrFormat("%s %.4g", t.better == Better::kHigher ? ">=" : "<=", t.target).c_str(),
          ratio,
          !judge ? "-"
          : ok   ? "MET"
                 : "MISSED");
    }
    if (!found) {
      std::printf("%-72s %14s %14s %8s  %s\n", t.what.c_str(), "-",
                  absl::StrFormat("%.4g", t.target).c_str(), "-", "NOT RUN");
    }
  }
  if (!note.empty()) std::printf("%s\n", note.c_str());
  if (judge) std::printf("targets: %d met, %d missed\n", met, missed);
}

// --benchmark_repetitions=N: N runs of the whole binary, each in a fresh process; the median of
// each figure is judged. Non-zero when a run failed.
int RunInFreshProcesses(const std::vector<std::string>& args, int runs,
                        const std::vector<Target>& targets) {
  std::vector<Figures> results;
  bool failed = false;
  const char* tmp = std::getenv("TMPDIR");
  for (int r = 1; r <= runs; ++r) {
    std::printf("== run %d of %d (a fresh process)\n", r, runs);
    std::fflush(stdout);
    std::string path = absl::StrFormat("%s/etsmgr-bench.XXXXXX", tmp != nullptr ? tmp : "/tmp");
    int fd = mkstemp(path.data());
    if (fd < 0) {
      std::printf("cannot create %s: %s\n", path.c_str(), std::strerror(errno));
      return 1;
    }
    close(fd);
    pid_t pid = fork();
    if (pid == 0) {
      setenv(kResultsEnv, path.c_str(), 1);
      std::vector<char*> argv;
      for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execv("/proc/self/exe", argv.data());
      std::_Exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0) {
      std::printf("run %d of %d failed (wait status %d)\n", r, runs, status);
      failed = true;
    }
    results.push_back(ReadFigures(path));
    unlink(path.c_str());
  }
  PrintTable(Median(results), targets, /*judge=*/true,
             absl::StrFormat("each figure: the median of %d runs, each in a fresh process", runs));
  return failed ? 1 : 0;
}

}  // namespace

double Percentile(std::vector<int64_t> samples, double p) {
  std::sort(samples.begin(), samples.end());
  return static_cast<double>(
      samples[static_cast<size_t>(p * static_cast<double>(samples.size() - 1))]);
}

bool Smoke() { return g_smoke; }
void EnableSmoke() { g_smoke = true; }

int64_t Scaled(int64_t full, int64_t smoke) { return g_smoke ? smoke : full; }

int RunWithTargets(int argc, char** argv, const std::vector<Target>& targets) {
  SetMinLogLevel(LogLevel::kError);
  std::vector<std::string> args;
  int repetitions = 1;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (i > 0 && arg == "--smoke") {
      g_smoke = true;
    } else if (i > 0 && absl::StartsWith(arg, kRepetitionsFlag) &&
               absl::SimpleAtoi(arg.substr(sizeof(kRepetitionsFlag) - 1), &repetitions)) {
      // Taken here: see RunInFreshProcesses.
    } else {
      args.push_back(std::move(arg));
    }
  }
  const char* results = std::getenv(kResultsEnv);
  if (results == nullptr && !g_smoke && repetitions > 1) {
    return RunInFreshProcesses(args, repetitions, targets);
  }
  if (g_smoke) args.push_back("--benchmark_min_time=0");  // One iteration each.
  Figures figures;
  bool sane = RunHere(args, &figures);
  if (results != nullptr) return WriteFigures(results, figures) && sane ? 0 : 1;
  PrintTable(figures, targets, /*judge=*/!g_smoke,
             g_smoke
                 ? "smoke run: one iteration each, workloads shrunk where a benchmark sizes them "
                   "with Scaled(), targets not judged"
                 : "");
  return sane ? 0 : 1;
}

}  // namespace etsmgr::bench
