#!/usr/bin/env bash
# Installs what building and testing etsmgr needs, and only what is missing.
#
#   tools/setup.sh                 what the build and the test command need
#   tools/setup.sh --bench         also what tools/bench.sh needs (python3-matplotlib for plots)
#   tools/setup.sh --bench --otp   also Erlang/OTP (erlang-base: erl, erlc) for bench.sh --with-otp
#
# Idempotent: a second run installs nothing and takes about a second.
# Debian packages come from apt (Bazel 4.2.3 from bazel-bootstrap, Abseil, GoogleTest, Benchmark,
# liburing, hiredis and the Redis tools for etsredis, clang-14 for the clang/fuzz configs,
# clang-format for lint); buildifier comes from npm
# into a cache directory outside the source tree.
set -euo pipefail

DEBIAN_PACKAGES=(
  bazel-bootstrap
  g++
  libabsl-dev
  libgtest-dev
  libgmock-dev
  libbenchmark-dev
  liburing-dev
  libhiredis-dev
  redis-tools
  redis-server
  clang-14
  libclang-rt-14-dev
  clang-format
  python3
)
BENCH_PACKAGES=(python3-matplotlib)
OTP_PACKAGES=(erlang-base)
BUILDIFIER_VERSION=8.2.1
TOOLS_CACHE="${ETSMGR_TOOLS_CACHE:-${HOME}/.cache/etsmgr-tools}"

log() { printf 'setup: %s\n' "$*" >&2; }

packages=("${DEBIAN_PACKAGES[@]}")
for arg in "$@"; do
  case "${arg}" in
    --bench) packages+=("${BENCH_PACKAGES[@]}") ;;
    --otp) packages+=("${OTP_PACKAGES[@]}") ;;
    *)
      log "unknown option ${arg} (use --bench, --otp)"
      exit 2
      ;;
  esac
done

missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("${pkg}")
  fi
done

# The machine image may ship Node.js from another source than Debian's nodejs package (with npm
# inside it); only when there is no npm at all do we ask Debian for both.
if ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi

if ((${#missing[@]})); then
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
  log "installing Debian packages: ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
else
  log "Debian packages present"
fi

buildifier="${TOOLS_CACHE}/node_modules/@bazel/buildifier/buildifier-linux_amd64"
if [[ ! -x "${buildifier}" ]] || ! "${buildifier}" --version 2>/dev/null | grep -q "${BUILDIFIER_VERSION}"; then
  log "installing buildifier ${BUILDIFIER_VERSION} from npm into ${TOOLS_CACHE}"
  mkdir -p "${TOOLS_CACHE}"
  npm install --prefix "${TOOLS_CACHE}" --no-audit --no-fund --silent \
    "@bazel/buildifier@${BUILDIFIER_VERSION}" >/dev/null
else
  log "buildifier ${BUILDIFIER_VERSION} present"
fi
