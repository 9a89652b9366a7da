#!/usr/bin/env bash
# Resident memory and CPU of a keep-alive over a run of SECS seconds (default 60), tickling
# every second, against the sandbox over HTTPS (OAuth 1.0a for both):
#   - `ibauth keepalive --oauth1a`
#   - ibind 0.2.2 `IbkrClient(use_oauth=True)` with its tickler (IBIND_TICKLER_INTERVAL=1)
# Figures from /usr/bin/time -v. Usage: scripts/bench-keepalive.sh [SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
cargo build --release -q -p ibauth-cli
python=$(scripts/python-venv.sh ibind)
bin=$PWD/target/release/ibauth

work=$(mktemp -d)
trap 'kill "$sandbox_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
"$bin" sandbox --tls --json --listen 127.0.0.1:0 --dir "$work" > "$work/sandbox.json" &
sandbox_pid=$!
for _ in $(seq 50); do [ -s "$work/sandbox.json" ] && break; sleep 0.1; done
base=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["base_url"])' "$work/sandbox.json")
value() { grep "  $1:" "$work/config.yaml" | cut -d'"' -f2; }

measure() { # name, command...
  local name=$1; shift
  /usr/bin/time -v "$@" > /dev/null 2> "$work/time.txt" &
  local pid=$!
  sleep "$secs"
  pkill -INT -P "$pid" || true
  wait "$pid" || true
  local rss cpu_user cpu_sys
  rss=$(awk -F': ' '/Maximum resident/ {print $2}' "$work/time.txt")
  cpu_user=$(awk -F': ' '/User time/ {print $2}' "$work/time.txt")
  cpu_sys=$(awk -F': ' '/System time/ {print $2}' "$work/time.txt")
  printf '| %s | %d s | %.1f MB | %s s | %s s |\n' "$name" "$secs" "$(echo "$rss/1024" | bc -l)" "$cpu_user" "$cpu_sys"
}

echo "| process | run | max RSS | user CPU | system CPU |"
echo "|---|---:|---:|---:|---:|"
measure "ibauth keepalive (Rust)" "$bin" --config "$work/config.yaml" --oauth1a -q keepalive --interval 1
cat > "$work/ibind_keepalive.py" <<'PY'
import signal, threading
from ibind import IbkrClient
client = IbkrClient(use_oauth=True)
stop = threading.Event()
signal.signal(signal.SIGINT, lambda *_: stop.set())
stop.wait()
client.oauth_shutdown()
PY
measure "ibind IbkrClient + tickler (Python)" env \
  IBIND_USE_OAUTH=True IBIND_OAUTH1A_CONSUMER_KEY=SANDBOXCK \
  IBIND_OAUTH1A_ACCESS_TOKEN="$(value access_token)" \
  IBIND_OAUTH1A_ACCESS_TOKEN_SECRET="$(value access_token_secret)" \
  IBIND_OAUTH1A_DH_PRIME="$(grep -o 'RFC3526_PRIME_2048: &str = "[0-9a-f]*' crates/ibauth/src/oauth1a/lst.rs | cut -d'"' -f2)" \
  IBIND_OAUTH1A_ENCRYPTION_KEY_FP="$work/encryption_key.pem" IBIND_OAUTH1A_SIGNATURE_KEY_FP="$work/signature_key.pem" \
  IBIND_OAUTH1A_REST_URL="$base/v1/api/" REQUESTS_CA_BUNDLE="$work/ca.pem" \
  IBIND_TICKLER_INTERVAL=1 IBIND_LOG_TO_FILE=False IBIND_LOG_TO_CONSOLE=False \
  "$python" "$work/ibind_keepalive.py"
