#!/usr/bin/env bash
# The bench report generator on a fixture (testdata/raw: two binaries' --report_json output, three
# OTP runs, recovery samples): the main table pairs the figures and gives the right ratios.
set -euo pipefail

here=$(dirname "$0")  # tools/bench, in the runfiles or the source tree
fixture="${here}/testdata"
out="${TEST_TMPDIR:-$(mktemp -d)}/report"
mkdir -p "${out}"
cp -r "${fixture}/raw" "${out}/raw"
/usr/bin/python3 "${here}/bench_report.py" "${out}" --no-plots >"${out}/stdout"
report="${out}/README.md"

failed=0
expect() {  # a line the report must hold (fixed string)
  if ! grep -qF -- "$1" "${report}"; then
    echo "missing from the report: $1"
    failed=1
  fi
}
# Higher is better: 2M/s (median of 1.9, 2.0, 2.2M; spread 0.3 / 2.0) over OTP's 1M/s.
expect "| gen_server call round trip | 2M/s | 15% | 1M/s | 20% | 2.00x |"
# Lower is better: OTP's 10 us over etsmgr's 2 us.
expect "| recovery of a killed owner, p50 | 2 us | 0% | 10 us | 20% | 5.00x |"
expect "| ping-pong round trips, one scheduler | 12M/s | 17% | 1.5M/s | 0% | 8.00x |"
# No figure on either side: no ratio.
expect "| set insert, 1M random keys | - | - | - | - | - |"
expect "| process_benchmark | idle process memory \`BM_IdleProcessMemory*\` | - | - | <= 512 B | - | NOT RUN |"
expect "| manager_benchmark | recovery p50 \`BM_RecoveryAfterOwnerKill/iterations:1\` | 2 us | 0% | <= 1 us | 0.50x | MISSED |"
expect "Not run (or failed before writing figures): executor_benchmark, table_benchmark."
expect "| load average before / after | 0.10 0.05 0.01 / 1.00 0.50 0.10 |"
expect "| Erlang/OTP | 25 (erts 13.1.5, 2 schedulers) |"
grep -qF "bench: report written to ${report}" "${out}/stdout" || {
  echo "the generator did not say where it wrote the report"
  failed=1
}
if ((failed)); then
  echo "--- report:"
  cat "${report}"
  exit 1
fi
echo "PASS"
