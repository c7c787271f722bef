# Shared helpers for the tools/*.sh scripts (sourced, not run).

# Counts Bazel's per-target result lines in a `bazel test` log and prints "N M" (passed, failed).
# A target that failed to build, timed out or had no status counts as failed.
count_bazel_results() {
  awk '/^(\/\/|@)[^ ]+ +(\(cached\) )?(PASSED|FLAKY|FAILED|TIMEOUT|NO STATUS|INCOMPLETE)/ {
         if ($0 ~ / (PASSED|FLAKY)( |$)/) p++; else f++
       }
       END { printf "%d %d\n", p, f }' "$1"
}

# Prints "Suite.Case" for each gtest case that skipped itself (GTEST_SKIP) in the test.xml files
# under the directory $1 newer than the file $2 (one run's results).
list_skipped_cases() {
  find "$1" -name test.xml -newer "$2" -exec grep -ho \
    '<testcase name="[^"]*"[^>]*result="skipped"[^>]*classname="[^"]*"' {} + |
    sed -E 's/<testcase name="([^"]*)".*classname="([^"]*)"/\2.\1/' | sort -u
}

# The repository root, whatever directory the script is called from.
etsmgr_root() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd
}
