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

# --compare: an earlier run whose OTP gen_server calls were twice as fast (ratio 1.00x, now 2.00x:
# +100%); every other ratio is the same.
earlier="${TEST_TMPDIR:-$(mktemp -d)}/earlier"
mkdir -p "${earlier}"
cp -r "${fixture}/raw" "${earlier}/raw"
sed -i 's/^figure=gen_server_call counter=items_per_second value=\([0-9.]*\)e6/figure=gen_server_call counter=items_per_second value=\1e6x/' \
  "${earlier}"/raw/otp-process-*.txt
sed -i 's/value=0.9e6x/value=1.8e6/; s/value=1.0e6x/value=2.0e6/; s/value=1.1e6x/value=2.2e6/' \
  "${earlier}"/raw/otp-process-*.txt
/usr/bin/python3 "${here}/bench_report.py" "${out}" --no-plots --compare="${earlier}" >"${out}/stdout"
expect "**4 of 5 ratios within 10% of the earlier run.**"
expect "| etsmgr/OTP: gen_server call round trip | 1.00x | 2.00x | +100.0% | **no** |"
expect "| etsmgr/OTP: ping-pong round trips, one scheduler | 8.00x | 8.00x | +0.0% | yes |"
expect "| to target: recovery p50 [manager_benchmark] | 0.50x | 0.50x | +0.0% | yes |"
grep -qE "^bench: [0-9]+ of [0-9]+ ratios within 10% of the earlier run" "${out}/stdout" || {
  echo "the generator did not print the comparison's summary"
  failed=1
}
if /usr/bin/python3 "${here}/bench_report.py" "${out}" --no-plots --compare=/nonexistent \
  2>/dev/null; then
  echo "--compare with no earlier report was accepted"
  failed=1
fi

if ((failed)); then
  echo "--- report:"
  cat "${report}"
  exit 1
fi
echo "PASS"
