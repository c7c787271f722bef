#!/usr/bin/env bash
# README command 2: installs what is missing, then runs every check the project has.
#
#   1. lint (buildifier, clang-format)
#   2. bazel test //...                     (default config)
#   3. bazel test //... --config=asan
#   4. bazel test //... --config=tsan
#   5. the sanitizer self-check (deliberate bugs must be reported)
#   6. bazel coverage of one test gives a real lcov report (the offline lcov merger works)
#   7. the consumer workspace (etsmgr used as a Bazel dependency) builds and runs
#
# Prints an "N passed, N failed" line per step and a final total line, counted from Bazel's
# per-target results; exits non-zero when anything failed. Extra arguments go to every
# `bazel test` (e.g. --test_filter=...).
set -uo pipefail
source "$(dirname "$0")/lib.sh"
root=$(etsmgr_root)
cd "${root}"

"${root}/tools/setup.sh" || exit 1

logdir=$(mktemp -d "${TMPDIR:-/tmp}/etsmgr-test.XXXXXX")
total_passed=0
total_failed=0
summary=()
record() {  # label passed failed
  summary+=("$(printf '%-12s %d passed, %d failed' "$1:" "$2" "$3")")
  echo "${summary[-1]}"
  total_passed=$((total_passed + $2))
  total_failed=$((total_failed + $3))
}

echo "== lint"
if "${root}/tools/lint.sh"; then record lint 1 0; else record lint 0 1; fi

for config in default asan tsan; do
  echo "== bazel test //... (${config})"
  flags=()
  [[ ${config} != default ]] && flags=(--config="${config}")
  log="${logdir}/bazel-test-${config}.log"
  bazel test -k "${flags[@]}" //... "$@" 2>&1 | tee "${log}"
  rc=${PIPESTATUS[0]}
  read -r passed failed < <(count_bazel_results "${log}")
  # A build failure leaves no per-target lines for what did not build: never report it as green.
  if [[ ${rc} -ne 0 && ${failed} -eq 0 ]]; then failed=1; fi
  record "${config}" "${passed}" "${failed}"
done

echo "== sanitizer self-check"
log="${logdir}/sanitizers.log"
"${root}/tools/check_sanitizers.sh" 2>&1 | tee "${log}"
rc=${PIPESTATUS[0]}
passed=$(grep -c ' PASSED ' "${log}")
failed=$(grep -c ' FAILED ' "${log}")
if [[ ${rc} -ne 0 && ${failed} -eq 0 ]]; then failed=1; fi
record sanitizers "${passed}" "${failed}"

echo "== coverage (offline lcov merger)"
log="${logdir}/coverage.log"
bazel coverage //etsmgr/base:log_test 2>&1 | tee "${log}"
rc=${PIPESTATUS[0]}
report="$(bazel info bazel-testlogs 2>/dev/null)/etsmgr/base/log_test/coverage.dat"
if [[ ${rc} -eq 0 ]] && grep -q '^SF:etsmgr/base/log.cc$' "${report}" &&
  grep -q '^DA:' "${report}"; then
  record coverage 1 0
else
  record coverage 0 1
fi

echo "== consumer workspace (testing/consumer)"
log="${logdir}/consumer.log"
(cd "${root}/testing/consumer" && bazel run //app && bazel shutdown) 2>&1 | tee "${log}"
rc=${PIPESTATUS[0]}
if [[ ${rc} -eq 0 ]] && grep -q '^consumer ok$' "${log}"; then
  record consumer 1 0
else
  record consumer 0 1
fi

echo
echo "== summary (logs in ${logdir})"
printf '%s\n' "${summary[@]}"
echo "total: ${total_passed} passed, ${total_failed} failed"
[[ ${total_failed} -eq 0 ]]
