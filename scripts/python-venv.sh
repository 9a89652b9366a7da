#!/usr/bin/env bash
# Creates (once) a venv with the Python ibauth 0.1.6 from PyPI for the interop test and the
# benchmark, and prints its python. Venv: $IBAUTH_INTEROP_VENV, default target/interop-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${IBAUTH_INTEROP_VENV:-target/interop-venv}
python="$venv/bin/python"
mkdir -p "$(dirname "$venv")"
# Tests call this in parallel: one creates the venv, the others wait for it.
exec 9>"$venv.lock"
flock 9
if ! "$python" -c 'import ibauth, importlib.metadata as m; assert m.version("ibauth") == "0.1.6"' 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$python" -m pip install --quiet --disable-pip-version-check 'ibauth==0.1.6' >&2
fi
echo "$(cd "$(dirname "$python")" && pwd)/python"
