# Shared helpers for the tools/*.sh scripts (sourced, not run).

# Counts Bazel's per-target result lines in a `bazel test` log and prints "N M" (passed, failed).
# A target that failed to build, timed out or had no status counts as failed.
count_bazel_results() {
  awk '/^(\/\/|@)[^ ]+ +(\(cached\) )?(PASSED|FLAKY|FAILED|TIMEOUT|NO STATUS|INCOMPLETE)/ {
         if ($0 ~ / (PASSED|FLAKY)( |$)/) p++; else f++
       }
       END { printf "%d %d\n", p, f }' "$1"
}

# The repository root, whatever directory the script is called from.
etsmgr_root() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd
}
