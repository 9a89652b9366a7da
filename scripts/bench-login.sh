#!/usr/bin/env bash
# Times a cold `ibauth login` (process start → authenticated brokerage session) against the
# sandbox over HTTPS, next to the Python ibauth 0.1.6's connect() against the same sandbox.
# Usage: scripts/bench-login.sh [RUNS]   (default 30). Needs hyperfine (apt-get install hyperfine).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-30}

command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine >/dev/null; }
cargo build --release -q -p ibauth-cli
python=$(scripts/python-venv.sh)

work=$(mktemp -d)
trap 'kill "$sandbox_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
target/release/ibauth sandbox --tls --json --listen 127.0.0.1:0 --dir "$work" > "$work/sandbox.json" &
sandbox_pid=$!
for _ in $(seq 50); do [ -s "$work/sandbox.json" ] && break; sleep 0.1; done
base_url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["base_url"])' "$work/sandbox.json")
host=${base_url#https://}
cd "$work"  # the Python ibauth resolves private_key_file against the working directory

hyperfine --warmup 3 --runs "$runs" --export-markdown "$work/results.md" \
  -n "ibauth login (Rust)" "$OLDPWD/target/release/ibauth --config config.yaml -q login" \
  -n "ibauth.connect() (Python 0.1.6)" "SSL_CERT_FILE=$work/ca.pem $python $OLDPWD/scripts/python_interop.py config.yaml $host --connect-only"
cat "$work/results.md"
