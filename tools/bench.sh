#!/usr/bin/env bash
# The bench command: every benchmark binary (and, with --with-otp, the Erlang/OTP reference suite
# in bench/otp/, each OTP group just before the binary it pairs with), then a Markdown report with
# plots.
#
#   tools/bench.sh [--repetitions=N] [--quick] [--with-otp] [--redis-requests=N] [--out=DIR]
#                  [--compare=EARLIER_DIR]
#
#   --repetitions=N  each figure is the median of N runs, each in a fresh process (default 3)
#   --quick          smoke-sized workloads (the binaries' --smoke, OTP's `quick`): tests the
#                    plumbing in a few minutes; its figures mean nothing
#   --with-otp       also run the OTP suite (installs erlang-base) and pair its figures
#   --redis-requests=N  requests per redis-benchmark test in etsredis_benchmark (1000000, the
#                    issue's figure; each run is 7 servers x 2 pipelines x 5 tests)
#   --out=DIR        where the report goes (default bench-report/, replaced on each run)
#   --compare=EARLIER_DIR  also compare every ratio with an earlier run's report (its --out): the
#                    report's "Against an earlier run" table and a summary line, "N of M ratios
#                    within 10% of the earlier run" (the reproducibility check; before/after)
#
# Installs what is missing first (tools/setup.sh --bench [--otp]: python3-matplotlib, and
# erlang-base for --with-otp). Builds with -c opt. The binaries are the cc_binary targets named
# *_benchmark; those built on tools/bench/report.h write their figure table as JSON
# (--report_json) and the recovery latencies (--samples_dir); etsredis_benchmark runs N times
# and writes one JSON per run. DIR/raw/ keeps every log, JSON and sample file;
# tools/bench/bench_report.py turns them into DIR/README.md and DIR/*.png. Exits non-zero when a
# binary or the OTP suite failed (the report is written anyway, with what ran).
set -uo pipefail
source "$(dirname "$0")/lib.sh"
root=$(etsmgr_root)
cd "${root}"

repetitions=3
quick=0
with_otp=0
out="${root}/bench-report"
redis_requests=1000000
compare=()
for arg in "$@"; do
  case "${arg}" in
    --repetitions=*) repetitions=${arg#--repetitions=} ;;
    --quick) quick=1 ;;
    --with-otp) with_otp=1 ;;
    --redis-requests=*) redis_requests=${arg#--redis-requests=} ;;
    --out=*) out=${arg#--out=} ;;
    --compare=*)
      earlier=${arg#--compare=}
      if [[ ! -d ${earlier}/raw ]]; then
        echo "bench: --compare=${earlier} is not an earlier report (no raw/ in it)" >&2
        exit 2
      fi
      compare=(--compare="$(cd "${earlier}" && pwd)")
      ;;
    *)
      echo "usage: tools/bench.sh [--repetitions=N] [--quick] [--with-otp] [--redis-requests=N]" \
        "[--out=DIR] [--compare=EARLIER_DIR]" >&2
      exit 2
      ;;
  esac
done
if ! [[ ${redis_requests} =~ ^[1-9][0-9]*$ ]]; then
  echo "bench: --redis-requests wants a positive number, not '${redis_requests}'" >&2
  exit 2
fi
if ! [[ ${repetitions} =~ ^[1-9][0-9]*$ ]]; then
  echo "bench: --repetitions wants a positive number, not '${repetitions}'" >&2
  exit 2
fi
log() { printf 'bench: %s\n' "$*" >&2; }

setup_flags=(--bench)
if ((with_otp)); then setup_flags+=(--otp); fi
"${root}/tools/setup.sh" "${setup_flags[@]}" || exit 1

# Debian's interpreter, where python3-matplotlib is (a python3 earlier on PATH may lack it).
python=/usr/bin/python3

out=$(mkdir -p "${out}" && cd "${out}" && pwd)
if [[ ${#compare[@]} -gt 0 && ${compare[0]#--compare=} == "${out}" ]]; then
  echo "bench: --compare names the report this run replaces; give this run another --out" >&2
  exit 2
fi
raw="${out}/raw"
rm -rf "${raw}" "${out}"/*.png "${out}/README.md"
mkdir -p "${raw}/samples"

# The machine and how busy it was before the run (the report states both).
{
  echo "started=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "commit=$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD 2>/dev/null || echo '+changes')"
  echo "repetitions=${repetitions}"
  echo "quick=${quick}"
  echo "with_otp=${with_otp}"
} >"${raw}/machine.txt"

mapfile -t targets < <(bazel query 'attr(name, "_benchmark$", kind("cc_binary", //...))' 2>/dev/null)
if [[ ${#targets[@]} -eq 0 ]]; then
  log "no *_benchmark targets found"
  exit 1
fi
log "building with -c opt: ${targets[*]}"
bazel build -c opt "${targets[@]}" || exit 1
bin=$(bazel info -c opt bazel-bin 2>/dev/null)

failures=0
otp_ebin=""
if ((with_otp)); then
  otp_ebin=$(mktemp -d "${TMPDIR:-/tmp}/etsmgr-otp.XXXXXX")
  trap 'rm -rf "${otp_ebin}"' EXIT
  erlc -o "${otp_ebin}" bench/otp/*.erl || exit 1
fi

# The OTP group paired with binary $1 (see bench/otp/otp_bench.erl), N times in a fresh VM.
run_otp_group() {
  local group=$1 mode=full i
  if ((quick)); then mode=quick; fi
  for ((i = 1; i <= repetitions; i++)); do
    log "OTP ${group} (${mode}), run ${i} of ${repetitions}"
    if ! erl -noshell +S 2 -pa "${otp_ebin}" -run otp_bench main "${mode}" "${group}" \
      "${raw}/samples" >"${raw}/otp-${group}-${i}.txt" 2>&1; then
      log "OTP ${group} failed: ${raw}/otp-${group}-${i}.txt"
      tail -5 "${raw}/otp-${group}-${i}.txt" >&2
      failures=$((failures + 1))
    fi
  done
}

for target in "${targets[@]}"; do
  name=${target##*:}
  binary="${bin}/${target#//}"
  binary="${binary/://}"
  stem=${name%_benchmark}
  if ((with_otp)) && [[ ${stem} =~ ^(process|table|manager|executor)$ ]]; then
    run_otp_group "${stem}"
  fi
  smoke=()
  if ((quick)); then smoke=(--smoke); fi
  if [[ ${name} == etsredis_benchmark ]]; then
    # Its own driver (redis-benchmark against each server): one JSON per run.
    for ((i = 1; i <= repetitions; i++)); do
      log "${target}, run ${i} of ${repetitions}"
      requests=(--requests="${redis_requests}")
      if ((quick)); then requests=(); fi
      if ! "${binary}" "${smoke[@]}" "${requests[@]}" --report_json="${raw}/${name}-${i}.json" \
        >>"${raw}/${name}.log" 2>&1; then
        log "${target} failed: ${raw}/${name}.log"
        failures=$((failures + 1))
      fi
    done
    continue
  fi
  log "${target} (${repetitions} runs, each in a fresh process)"
  if ! "${binary}" "${smoke[@]}" --benchmark_repetitions="${repetitions}" \
    --report_json="${raw}/${name}.json" --samples_dir="${raw}/samples" >"${raw}/${name}.log" 2>&1; then
    log "${target} failed: ${raw}/${name}.log"
    tail -5 "${raw}/${name}.log" >&2
    failures=$((failures + 1))
  fi
done
echo "loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"${raw}/machine.txt"

"${python}" "${root}/tools/bench/bench_report.py" "${out}" "${compare[@]}" || exit 1
if ((failures)); then
  log "${failures} run(s) failed; the report shows what ran"
  exit 1
fi
