#!/usr/bin/env bash
# Formatting and BUILD-file lint: buildifier (lint=warn) on Starlark files, clang-format (Google
# style, .clang-format at the root) on C++ files. Exits non-zero on any violation.
#   tools/lint.sh          check only
#   tools/lint.sh --fix    rewrite files in place
set -uo pipefail
source "$(dirname "$0")/lib.sh"
cd "$(etsmgr_root)"

TOOLS_CACHE="${ETSMGR_TOOLS_CACHE:-${HOME}/.cache/etsmgr-tools}"
buildifier="${TOOLS_CACHE}/node_modules/@bazel/buildifier/buildifier-linux_amd64"
[[ -x "${buildifier}" ]] || { echo "lint: buildifier missing, run tools/setup.sh" >&2; exit 1; }

mapfile -t starlark < <(git ls-files --cached --others --exclude-standard \
  'WORKSPACE' '*BUILD' '*.bzl' '*/WORKSPACE' | sort -u)
mapfile -t cpp < <(git ls-files --cached --others --exclude-standard '*.h' '*.cc' | sort -u)

status=0
if [[ ${1:-} == --fix ]]; then
  "${buildifier}" -lint=fix "${starlark[@]}" || status=1
  clang-format -i "${cpp[@]}" || status=1
else
  "${buildifier}" -mode=check -lint=warn "${starlark[@]}" || status=1
  clang-format --dry-run --Werror "${cpp[@]}" || status=1
fi
if [[ ${status} -eq 0 ]]; then echo "lint: clean (${#starlark[@]} Starlark, ${#cpp[@]} C++ files)"; fi
exit "${status}"
