#!/usr/bin/env bash
# Creates (once) a venv with a Python client from PyPI for the interop tests and the benchmark,
# and prints its python. Usage: python-venv.sh [ibauth|ibind]  (default ibauth)
#   ibauth → ibauth==0.1.6 in target/interop-venv (or $IBAUTH_INTEROP_VENV)
#   ibind  → ibind[oauth]==0.2.2 in target/interop-venv-ibind
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-ibauth}" in
  ibauth) venv=${IBAUTH_INTEROP_VENV:-target/interop-venv}; module=ibauth; spec='ibauth==0.1.6'; version=0.1.6 ;;
  ibind) venv=target/interop-venv-ibind; module=ibind; spec='ibind[oauth]==0.2.2'; version=0.2.2 ;;
  *) echo "usage: $0 [ibauth|ibind]" >&2; exit 2 ;;
esac
python="$venv/bin/python"
mkdir -p "$(dirname "$venv")"
# Tests call this in parallel: one creates the venv, the others wait for it.
exec 9>"$venv.lock"
flock 9
if ! "$python" -c "import $module, importlib.metadata as m; assert m.version('$module') == '$version'" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$python" -m pip install --quiet --disable-pip-version-check "$spec" >&2
fi
echo "$(cd "$(dirname "$python")" && pwd)/python"
