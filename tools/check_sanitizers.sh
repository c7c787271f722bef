#!/usr/bin/env bash
# Proves the sanitizer configs really report: builds the deliberate bugs in //testing/sanitizers
# under each config, runs them, and checks that each run fails with the expected report.
# Prints one result line per check and a final "N passed, N failed".
set -uo pipefail
source "$(dirname "$0")/lib.sh"
cd "$(etsmgr_root)"

passed=0
failed=0
expect_report() {  # config target pattern
  local config=$1 target=$2 pattern=$3 out
  out=$(bazel run --config="${config}" "${target}" 2>&1)
  local rc=$?
  if [[ ${rc} -ne 0 ]] && grep -q "${pattern}" <<<"${out}"; then
    printf '%-44s PASSED (reported: %s)\n' "${target} --config=${config}" "${pattern}"
    passed=$((passed + 1))
  else
    printf '%-44s FAILED (rc=%d, no "%s" in output)\n' "${target} --config=${config}" "${rc}" "${pattern}"
    tail -20 <<<"${out}"
    failed=$((failed + 1))
  fi
}

expect_report tsan //testing/sanitizers:data_race "WARNING: ThreadSanitizer: data race"
expect_report asan //testing/sanitizers:use_after_free "ERROR: AddressSanitizer: heap-use-after-free"
expect_report asan //testing/sanitizers:leak "ERROR: LeakSanitizer: detected memory leaks"
expect_report asan //testing/sanitizers:signed_overflow "runtime error: signed integer overflow"
echo "sanitizers: ${passed} passed, ${failed} failed"
[[ ${failed} -eq 0 ]]
