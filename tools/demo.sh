#!/usr/bin/env bash
# README command 1: installs what is missing, then runs the main job.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
root=$(etsmgr_root)
cd "${root}"
"${root}/tools/setup.sh"
bazel run //etscounter:demo -- "$@"
