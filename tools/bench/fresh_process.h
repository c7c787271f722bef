// Measurements that must start in a fresh process: a benchmark whose figure depends on memory the
// process never touched before (a cold heap, first-touch page faults) runs its measurement in a
// new copy of the binary, so neither an earlier benchmark nor a repetition warms it up.
//
//   // In the benchmark (parent):
//   absl::StatusOr<std::map<std::string, double>> got = bench::RunFresh(argv0, "exit_burst");
//   // In main(), before anything else:
//   if (int rc; bench::FreshChild(argc, argv, {{"exit_burst", &MeasureExitBurst}}, &rc)) return rc;
//
// The child runs the named measurement and prints "name=value" lines; the parent reads them. A
// smoke run's child runs in smoke mode too (bench::Smoke()).
#ifndef ETSMGR_TOOLS_BENCH_FRESH_PROCESS_H_
#define ETSMGR_TOOLS_BENCH_FRESH_PROCESS_H_

#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace etsmgr::bench {

using Figures = std::map<std::string, double>;
using Measurement = Figures (*)();

// Runs `role` in a fresh copy of this binary (/proc/self/exe) and yields its figures.
absl::StatusOr<Figures> RunFresh(const std::string& role);

// When argv holds --fresh_child=<role>: runs that measurement, prints its figures, sets *rc and
// returns true (main returns *rc). Otherwise false.
bool FreshChild(int argc, char** argv, const std::map<std::string, Measurement>& roles, int* rc);

}  // namespace etsmgr::bench

#endif  // ETSMGR_TOOLS_BENCH_FRESH_PROCESS_H_
