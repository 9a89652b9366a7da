#!/usr/bin/env bash
# The README's test command: installs what the tests need when it is missing, then runs every
# test of the workspace (`cargo test --workspace`, extra arguments passed on).
#
# The tests drive real programs, not stand-ins: a headless Chromium through chromedriver (the
# OAuth 1.0a browser flow), Python's venv (the interop tests build their own venvs with
# scripts/python-venv.sh) and curl (the gateway's tests). redis-server, PostgreSQL's server
# programs (the coordinator tests start throw-away clusters), iproute2 (`ip netns`: the fleet
# tests put each process on an address of its own; they need root), wrk and hyperfine are
# installed too, so tests and benchmarks can rely on them. A test never skips because one of
# these is missing — it fails — so this script is what makes a fresh Debian machine pass.
#
# Runs with no standard input (CI) and never prompts; when everything is present it installs
# nothing and costs no more than a few `command -v`. Only bash builtins are used besides the
# tools it checks, apt-get and cargo (the script's own test runs it with a PATH of stand-ins).
set -euo pipefail
here=${BASH_SOURCE[0]}
[[ $here == */* ]] || here=./$here
cd "${here%/*}/.."

# Debian package → the command that shows it is installed.
needed=(
  "chromium chromium"
  "chromium-driver chromedriver"
  "redis-server redis-server"
  "postgresql initdb"
  "wrk wrk"
  "hyperfine hyperfine"
  "curl curl"
  "iproute2 ip"
)

# Debian's postgresql package keeps initdb off PATH, in /usr/lib/postgresql/<major>/bin
# (IBAUTH_PG_LIB stands for that folder in the script's own test; IBAUTH_PG_BIN names the
# programs' folder, as for the tests).
present() {
  local command=$1 candidate
  command -v "$command" >/dev/null 2>&1 && return 0
  if [[ $command == initdb ]]; then
    [[ -n ${IBAUTH_PG_BIN:-} && -x $IBAUTH_PG_BIN/initdb ]] && return 0
    for candidate in "${IBAUTH_PG_LIB:-/usr/lib/postgresql}"/*/bin/initdb; do
      [[ -x $candidate ]] && return 0
    done
  fi
  return 1
}

missing_packages() {
  local entry package command
  for entry in "${needed[@]}"; do
    read -r package command <<<"$entry"
    present "$command" || echo "$package"
  done
  if ! command -v python3 >/dev/null 2>&1; then
    echo python3
    echo python3-venv
  elif ! python3 -m venv --help >/dev/null 2>&1; then
    # Debian splits venv out of the interpreter package.
    echo python3-venv
  fi
}

mapfile -t missing < <(missing_packages)
if ((${#missing[@]} > 0)); then
  echo "== installing ${missing[*]} (apt-get)"
  as_root=()
  if ((EUID != 0)); then
    if command -v sudo >/dev/null 2>&1; then
      # -n: fail instead of asking for a password nobody can type (no standard input in CI).
      as_root=(sudo -n --preserve-env=DEBIAN_FRONTEND)
    else
      echo "error: the tests need ${missing[*]}; run this script as root, or install them: apt-get install ${missing[*]}" >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! "${as_root[@]}" apt-get update -qq </dev/null >/dev/null ||
    ! "${as_root[@]}" apt-get install -y -qq "${missing[@]}" </dev/null >/dev/null; then
    echo "error: apt-get could not install ${missing[*]}; install them by hand (apt-get install ${missing[*]}) and run scripts/test.sh again" >&2
    exit 1
  fi
  mapfile -t still < <(missing_packages)
  if ((${#still[@]} > 0)); then
    echo "error: ${still[*]} installed but still not usable (not on PATH?); the tests need them" >&2
    exit 1
  fi
fi

echo "== cargo test --workspace $*"
exec cargo test --workspace "$@"
