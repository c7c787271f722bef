#!/usr/bin/env bash
# README command 2: installs what is missing, then runs every check the project has.
#
#   1. lint (buildifier, clang-format)
#   2. bazel test //...                     (default config)
#   3. a smoke run of every benchmark binary (default config, already built by step 2):
#      `<binary> --smoke` shrinks the workloads, runs each benchmark once and judges no target
#      (this machine is noisy), but fails on any benchmark's sanity check
#   4. bazel test //... --config=asan       (ASan and UBSan in one build; the block cache on, its
#      cached blocks poisoned; steps 4-6 build only the tests and what they run)
#   5. bazel test //... --config=asan with ETSMGR_BLOCK_CACHE=off (tests only, no rebuild: every
#      block goes through ASan's allocator and quarantine)
#   6. bazel test //... --config=tsan       (built with clang-14, libstdc++ and -Wthread-safety:
#      the one clang build of the tree, which also checks the lock annotations)
#   7. the sanitizer self-check (deliberate bugs must be reported, UBSan's under the asan config)
#   8. bazel coverage of one test gives a real lcov report (the offline lcov merger works)
#   9. the consumer workspace (etsmgr used as a Bazel dependency) builds and runs, and cannot
#      depend on an internal target
#
# Prints an "N passed, N failed" line per step and a final total line, counted from Bazel's
# per-target results (and one per benchmark binary); exits non-zero when anything failed. Extra
# arguments go to every `bazel test` (e.g. --test_filter=...).
set -uo pipefail
source "$(dirname "$0")/lib.sh"
root=$(etsmgr_root)
cd "${root}"

"${root}/tools/setup.sh" || exit 1

logdir=$(mktemp -d "${TMPDIR:-/tmp}/etsmgr-test.XXXXXX")
total_passed=0
total_failed=0
summary=()
last_record=${SECONDS}
record() {  # label passed failed; the time since the previous record (the step's) is shown
  summary+=("$(printf '%-12s %d passed, %d failed (%d s)' "$1:" "$2" "$3" $((SECONDS - last_record)))")
  last_record=${SECONDS}
  echo "${summary[-1]}"
  total_passed=$((total_passed + $2))
  total_failed=$((total_failed + $3))
}

echo "== lint"
if "${root}/tools/lint.sh"; then record lint 1 0; else record lint 0 1; fi

# label, then the flags of `bazel test`.
run_tests() {
  local label=$1
  shift
  echo "== bazel test //... (${label})"
  local log="${logdir}/bazel-test-${label}.log"
  local started="${logdir}/started-${label}"
  touch "${started}"
  bazel test -k "$@" //... "${extra[@]}" 2>&1 | tee "${log}"
  local rc=${PIPESTATUS[0]}
  local passed failed
  read -r passed failed < <(count_bazel_results "${log}")
  # A build failure leaves no per-target lines for what did not build: never report it as green.
  if [[ ${rc} -ne 0 && ${failed} -eq 0 ]]; then failed=1; fi
  record "${label}" "${passed}" "${failed}"
  # A passing target may hold cases that skipped themselves (what this machine cannot do): named
  # here, so that a check that never runs is seen.
  # (Cached results are not listed: their test.xml is older than this run.)
  local testlogs skipped=() name
  testlogs=$(bazel info "$@" "${extra[@]}" bazel-testlogs 2>/dev/null)
  if [[ -d ${testlogs} ]]; then
    mapfile -t skipped < <(list_skipped_cases "${testlogs}" "${started}")
  fi
  if [[ ${#skipped[@]} -gt 0 ]]; then
    for name in "${skipped[@]}"; do printf 'skipped (%s): %s\n' "${label}" "${name}"; done
    summary+=("$(printf '%-12s (%d test cases skipped themselves: not applicable to a type, or what this machine cannot do; listed above)' "" "${#skipped[@]}")")
    echo "${summary[-1]}"
  fi
}

# Every benchmark binary, built in the default config (step 2 built them all), run with --smoke.
run_benchmark_smoke() {
  echo "== benchmark smoke runs (default config: sanity checks, no targets judged)"
  local targets passed=0 failed=0
  mapfile -t targets < <(bazel query 'attr(name, "_benchmark$", kind("cc_binary", //...))' 2>/dev/null)
  if [[ ${#targets[@]} -eq 0 ]] || ! bazel build "${targets[@]}"; then
    record benchmarks 0 1
    return
  fi
  local bin target binary log
  bin=$(bazel info bazel-bin 2>/dev/null)
  for target in "${targets[@]}"; do
    binary="${bin}/${target#//}"
    binary="${binary/://}"
    log="${logdir}/smoke-${target##*:}.log"
    if timeout 600 "${binary}" --smoke >"${log}" 2>&1; then
      printf '%-44s PASSED\n' "${target} --smoke"
      passed=$((passed + 1))
    else
      printf '%-44s FAILED (log: %s)\n' "${target} --smoke" "${log}"
      tail -20 "${log}"
      failed=$((failed + 1))
    fi
  done
  record benchmarks "${passed}" "${failed}"
}

extra=("$@")
run_tests default
run_benchmark_smoke
# The sanitizer configs build only the tests and what they run (--build_tests_only): the
# benchmark and tool binaries, built and smoke-run above, would cost minutes more of compiling.
run_tests asan --config=asan --build_tests_only
run_tests asan-nocache --config=asan --build_tests_only --test_env=ETSMGR_BLOCK_CACHE=off
run_tests tsan --config=tsan --build_tests_only

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
(cd "${root}/testing/consumer" && bazel run //app) 2>&1 | tee "${log}"
rc=${PIPESTATUS[0]}
if [[ ${rc} -eq 0 ]] && grep -q '^consumer ok$' "${log}"; then
  record consumer 1 0
else
  record consumer 0 1
fi
# The library's internal targets are not visible to a dependant: this build must fail, and for
# that reason.
log="${logdir}/consumer-internal.log"
(cd "${root}/testing/consumer" && bazel build //app:internal_probe; bazel shutdown) >"${log}" 2>&1
if grep -q "is not visible from target '//app:internal_probe'" "${log}"; then
  record consumer-internal-hidden 1 0
else
  cat "${log}"
  record consumer-internal-hidden 0 1
fi

echo
echo "== summary (logs in ${logdir})"
printf '%s\n' "${summary[@]}"
echo "total: ${total_passed} passed, ${total_failed} failed"
[[ ${total_failed} -eq 0 ]]
