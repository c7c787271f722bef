#include "tools/bench/report.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "benchmark/benchmark.h"
#include "etsmgr/base/log.h"

namespace etsmgr::bench {
namespace {

// Set in a run started by --benchmark_repetitions: where it writes its figures for the parent.
constexpr char kResultsEnv[] = "ETSMGR_BENCH_RESULTS";
constexpr char kRepetitionsFlag[] = "--benchmark_repetitions=";
constexpr char kReportJsonFlag[] = "--report_json=";
constexpr char kSamplesDirFlag[] = "--samples_dir=";

bool g_smoke = false;
std::string g_samples_dir;
std::string g_binary;  // argv[0]'s last component.

// Benchmark name -> counter -> value.
using Figures = std::map<std::string, std::map<std::string, double>>;
// Benchmark name -> counter -> its value in each run that has it.
using Runs = std::map<std::string, std::map<std::string, std::vector<double>>>;

// Forwards to the console reporter and keeps every run for the target table, and every error.
class CapturingReporter final : public benchmark::ConsoleReporter {
 public:
  // Benchmarks with repetitions must not ask for ReportAggregatesOnly: Google Benchmark would
  // then pass on only the aggregates, computed over the repetitions that did not fail, and a
  // sanity check failing in some of them would never be seen. The console shows the aggregates
  // and any failed repetition; every run is captured.
  void ReportRuns(const std::vector<Run>& runs) override {
    std::vector<Run> shown;
    for (const Run& run : runs) {
      if (run.repetitions <= 1 || run.run_type == Run::RT_Aggregate || run.error_occurred) {
        shown.push_back(run);
      }
    }
    if (!shown.empty()) ConsoleReporter::ReportRuns(shown);
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

Runs Collect(const std::vector<Figures>& runs) {
  Runs all;
  for (const Figures& run : runs) {
    for (const auto& [name, values] : run) {
      for (const auto& [counter, value] : values) all[name][counter].push_back(value);
    }
  }
  for (auto& [name, counters] : all) {
    for (auto& [counter, values] : counters) std::sort(values.begin(), values.end());
  }
  return all;
}

// The median of sorted `values` (the lower middle for an even count).
double MedianOf(const std::vector<double>& values) { return values[(values.size() - 1) / 2]; }

// Each figure's median over the runs that have it.
Figures Median(const Runs& runs) {
  Figures median;
  for (const auto& [name, counters] : runs) {
    for (const auto& [counter, values] : counters) median[name][counter] = MedianOf(values);
  }
  return median;
}

// A target's figure as measured: one per benchmark the target's pattern matches.
struct Row {
  const Target* target;
  std::string name;  // Empty: no benchmark gave the figure.
  double value = 0;
  double ratio = 0;
};

std::vector<Row> Rows(const Figures& figures, const std::vector<Target>& targets) {
  std::vector<Row> rows;
  for (const Target& t : targets) {
    bool found = false;
    for (const auto& [name, values] : figures) {
      if (!Matches(t.benchmark, name)) continue;
      auto it = values.find(t.counter);
      if (it == values.end()) continue;
      found = true;
      double value = it->second;
      double ratio = t.better == Better::kHigher ? value / t.target : t.target / value;
      rows.push_back({&t, name, value, ratio});
    }
    if (!found) rows.push_back({&t, "", 0, 0});
  }
  return rows;
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", c);
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// A finite number, or null (JSON has no inf or nan).
std::string JsonNumber(double v) {
  return std::isfinite(v) ? absl::StrFormat("%.17g", v) : std::string("null");
}

// "measured", "min", "max", "rel_stddev" and "runs" of one figure's values (sorted).
std::string JsonSpread(const std::vector<double>& values) {
  double mean = 0;
  for (double v : values) mean += v;
  mean /= static_cast<double>(values.size());
  double var = 0;
  for (double v : values) var += (v - mean) * (v - mean);
  var /= static_cast<double>(values.size());
  std::string runs;
  for (double v : values) absl::StrAppend(&runs, runs.empty() ? "" : ", ", JsonNumber(v));
  return absl::StrFormat(
      "\"measured\": %s, \"min\": %s, \"max\": %s, \"rel_stddev\": %s, \"runs\": [%s]",
      JsonNumber(MedianOf(values)), JsonNumber(values.front()), JsonNumber(values.back()),
      JsonNumber(mean != 0 ? std::sqrt(var) / std::fabs(mean) : 0), runs);
}

// The figure table (as PrintTable prints it) and every counter of every benchmark, each with the
// spread of its runs, as JSON (see report.h). False when the file cannot be written.
bool WriteJson(const std::string& path, const Runs& runs, const std::vector<Target>& targets,
               int repetitions, bool judge) {
  std::string out = absl::StrFormat(
      "{\n  \"binary\": %s,\n  \"repetitions\": %d,\n  \"smoke\": %s,\n  \"figures\": [",
      JsonString(g_binary), repetitions, g_smoke ? "true" : "false");
  bool first = true;
  for (const Row& row : Rows(Median(runs), targets)) {
    const Target& t = *row.target;
    absl::StrAppend(&out, first ? "\n" : ",\n",
                    "    {\"benchmark\": ", JsonString(row.name.empty() ? t.benchmark : row.name),
                    ", \"counter\": ", JsonString(t.counter), ", \"what\": ", JsonString(t.what),
                    ", \"unit\": ", JsonString(t.unit),
                    ", \"better\": ", JsonString(t.better == Better::kHigher ? "higher" : "lower"),
                    ", \"target\": ", JsonNumber(t.target), ", ");
    first = false;
    if (row.name.empty()) {
      absl::StrAppend(&out, "\"measured\": null, \"ratio\": null, \"met\": null}");
      continue;
    }
    absl::StrAppend(&out, JsonSpread(runs.at(row.name).at(t.counter)),
                    ", \"ratio\": ", JsonNumber(row.ratio),
                    ", \"met\": ", !judge ? "null" : (row.ratio >= 1.0 ? "true" : "false"), "}");
  }
  absl::StrAppend(&out, "\n  ],\n  \"measurements\": [");
  first = true;
  for (const auto& [name, counters] : runs) {
    for (const auto& [counter, values] : counters) {
      absl::StrAppend(&out, first ? "\n" : ",\n", "    {\"benchmark\": ", JsonString(name),
                      ", \"counter\": ", JsonString(counter), ", ", JsonSpread(values), "}");
      first = false;
    }
  }
  absl::StrAppend(&out, "\n  ]\n}\n");
  std::ofstream file(path);
  file << out;
  file.close();
  if (!file) std::printf("cannot write %s\n", path.c_str());
  return static_cast<bool>(file);
}

void PrintTable(const Figures& figures, const std::vector<Target>& targets, bool judge,
                const std::string& note) {
  std::printf("\n%-72s %14s %14s %8s  %s\n", "figure", "measured", "target", "ratio", "verdict");
  int met = 0;
  int missed = 0;
  for (const Row& row : Rows(figures, targets)) {
    const Target& t = *row.target;
    if (row.name.empty()) {
      std::printf("%-72s %14s %14s %8s  %s\n", t.what.c_str(), "-",
                  absl::StrFormat("%.4g", t.target).c_str(), "-", "NOT RUN");
      continue;
    }
    bool ok = row.ratio >= 1.0;
    if (judge) (ok ? met : missed)++;
    std::string label = absl::StrFormat("%s [%s]", t.what, row.name);
    std::printf(
        "%-72s %14s %14s %7.2fx  %s\n", label.c_str(),
        absl::StrFormat("%.4g %s", row.value, t.unit).c_str(),
        absl::StrFormat("%s %.4g", t.better == Better::kHigher ? ">=" : "<=", t.target).c_str(),
        row.ratio,
        !judge ? "-"
        : ok   ? "MET"
               : "MISSED");
  }
  if (!note.empty()) std::printf("%s\n", note.c_str());
  if (judge) std::printf("targets: %d met, %d missed\n", met, missed);
}

// --benchmark_repetitions=N: N runs of the whole binary, each in a fresh process; the median of
// each figure is judged (a smoke run's children are smoke runs and nothing is judged). Non-zero
// when a run failed.
int RunInFreshProcesses(std::vector<std::string> args, int runs, const std::vector<Target>& targets,
                        const std::string& report_json) {
  if (g_smoke) args.push_back("--smoke");
  if (!g_samples_dir.empty()) args.push_back(kSamplesDirFlag + g_samples_dir);
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
  Runs all = Collect(results);
  PrintTable(Median(all), targets, /*judge=*/!g_smoke,
             absl::StrFormat("each figure: the median of %d %sruns, each in a fresh process", runs,
                             g_smoke ? "smoke " : ""));
  if (!report_json.empty() && !WriteJson(report_json, all, targets, runs, !g_smoke)) failed = true;
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

bool WriteSamples(const std::string& name, const std::vector<int64_t>& samples) {
  if (g_samples_dir.empty()) return true;
  std::string path = absl::StrCat(g_samples_dir, "/", name, ".samples");
  std::ofstream out(path, std::ios::app);
  for (int64_t v : samples) out << v << '\n';
  out.close();
  if (!out) std::printf("cannot write %s\n", path.c_str());
  return static_cast<bool>(out);
}

int RunWithTargets(int argc, char** argv, const std::vector<Target>& targets) {
  SetMinLogLevel(LogLevel::kError);
  std::vector<std::string> args;
  int repetitions = 1;
  std::string report_json;
  if (argc > 0) g_binary = std::string(argv[0]).substr(std::string(argv[0]).rfind('/') + 1);
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (i > 0 && arg == "--smoke") {
      g_smoke = true;
    } else if (i > 0 && absl::StartsWith(arg, kReportJsonFlag)) {
      report_json = arg.substr(sizeof(kReportJsonFlag) - 1);
    } else if (i > 0 && absl::StartsWith(arg, kSamplesDirFlag)) {
      g_samples_dir = arg.substr(sizeof(kSamplesDirFlag) - 1);
    } else if (i > 0 && absl::StartsWith(arg, kRepetitionsFlag) &&
               absl::SimpleAtoi(arg.substr(sizeof(kRepetitionsFlag) - 1), &repetitions)) {
      // Taken here: see RunInFreshProcesses.
    } else {
      args.push_back(std::move(arg));
    }
  }
  const char* results = std::getenv(kResultsEnv);
  if (results == nullptr && repetitions > 1) {
    return RunInFreshProcesses(std::move(args), repetitions, targets, report_json);
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
  if (!report_json.empty() && !WriteJson(report_json, Collect({figures}), targets, 1, !g_smoke)) {
    return 1;
  }
  return sane ? 0 : 1;
}

}  // namespace etsmgr::bench
