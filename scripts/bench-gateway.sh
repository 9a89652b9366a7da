#!/usr/bin/env bash
# Throughput, latency and memory of `ibauth gateway` (release build) in front of the sandbox,
# against the sandbox answering directly, with wrk (Debian's; scripts/test.sh installs it).
#
# What is compared: `GET /v1/api/iserver/accounts`, an authenticated endpoint the sandbox serves
# and IBKR does not pace per endpoint (so the gateway streams it rather than sharing one answer
# between identical requests).
#   - direct: wrk sends the session's own `Authorization: Bearer …` (from `ibauth token`, the
#     same token file the gateway uses) to the sandbox;
#   - through the gateway: wrk sends no credentials, over plain HTTP (`--plain`) and HTTPS (its
#     self-signed certificate; wrk does not verify), and the gateway adds the session's.
# The sandbox enforces no pacing (its default). The gateway runs with IBAUTH_PACING=off: under
# IBKR's limits it would send at most 50 requests a second, and the point here is its own cost.
#
# Two loads each: saturation (wrk -t2 -c16, as the Client Portal Gateway was measured in
# /work/shared/spec/cp-gateway.md) for requests per second, and one connection at a time
# (-t1 -c1) for the latency a request pays, where the added p99 is not queueing. Everything
# shares this machine's cores (wrk, gateway, sandbox), as it would on one small host.
# Memory: VmRSS after /readyz (idle) and at the end, VmHWM (peak), from /proc/PID/status.
#
# Two upstreams, one after the other:
#   - plain: the sandbox over plain HTTP/1.1 (the gateway keeps a pooled connection per
#     concurrent request towards it);
#   - tls: the sandbox over HTTPS (`ibauth sandbox --tls`: its own CA, named as ca_file in its
#     config.yaml, so the gateway verifies it as it verifies IBKR), where the gateway negotiates
#     HTTP/2 by ALPN and multiplexes its clients' requests on one connection, as towards IBKR
#     (api.ibkr.com offers h2). Direct is then wrk to the sandbox over HTTPS (HTTP/1.1, one TLS
#     connection per wrk connection). This is the production-like one. The script prints the
#     HTTP version the sandbox offers and the gateway's connection count to it under load.
#
# Usage: scripts/bench-gateway.sh [--quick] [--upstream plain|tls|both]
#   --quick: 3 s runs instead of 15 s; --upstream: which of the two (default both).
#   IBAUTH_BIN=path: measure that binary instead of building this tree's release build.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=15
upstreams=both
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) secs=3 ;;
    --upstream) upstreams=${2:-}; shift ;;
    *) echo "usage: $0 [--quick] [--upstream plain|tls|both]" >&2; exit 2 ;;
  esac
  shift
done
case "$upstreams" in plain|tls|both) ;; *) echo "error: --upstream plain, tls or both" >&2; exit 2 ;; esac
command -v wrk >/dev/null || { echo "error: wrk is missing (apt-get install wrk, or scripts/test.sh)" >&2; exit 1; }
command -v curl >/dev/null || { echo "error: curl is missing" >&2; exit 1; }

if [ -n "${IBAUTH_BIN:-}" ]; then
  bin=$IBAUTH_BIN
else
  cargo build --release -q -p ibauth-cli
  bin=$PWD/target/release/ibauth
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

json_field() { python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())[sys.argv[1]])' "$1"; }
now_ms() { date +%s%3N; }
kb() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$2/status"; }
mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Starts a gateway with extra flags; sets gw_pid, gw_url, health and ready_ms: from the
# process's start to the first /readyz 200 (the login against the local sandbox included),
# polled as fast as curl starts. The ports are picked beforehand so nothing else is timed.
start_gateway() {
  local port health_port started
  port=$(free_port)
  health_port=$(free_port)
  health=http://127.0.0.1:$health_port
  started=$(now_ms)
  # Logging as by default (info: an access-log line a request) into a pipe that a reader
  # empties, as a container runtime or journald reads a service's stderr.
  rm -f "$work/log.fifo"; mkfifo "$work/log.fifo"
  cat "$work/log.fifo" > /dev/null &
  log_pid=$!
  pids+=("$log_pid")
  IBAUTH_PACING=off "$bin" --config "$config" --json gateway \
    --listen "127.0.0.1:$port" --health "127.0.0.1:$health_port" --state-dir "$work/state" "$@" \
    > "$work/gateway.json" 2> "$work/log.fifo" &
  gw_pid=$!
  pids+=("$gw_pid")
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "$health/readyz")" = 200 ]; do
    kill -0 "$gw_pid" 2>/dev/null || { echo "error: the gateway stopped" >&2; exit 1; }
  done
  ready_ms=$(($(now_ms) - started))
  gw_url=$(python3 -c 'import json, sys; print(json.loads(sys.stdin.readline())["gateway"][0])' < "$work/gateway.json")
}

stop_gateway() {
  kill -TERM "$gw_pid"
  wait "$gw_pid" || { echo "error: the gateway did not exit 0" >&2; exit 1; }
}

# CPU time (user + system) of a process so far, in clock ticks.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# For: threads connections url [header]: wrk's requests/s, p50 and p99 (ms), then the CPU time
# each process spent per request (µs): the gateway (0 when it is not in the path), the sandbox,
# wrk. Throughput on shared cores moves with whatever else runs; CPU per request much less.
run_wrk() {
  local threads=$1 conns=$2 url=$3; shift 3
  local out g0 s0 l0 g1 s1 l1 wrk_cpu
  g0=$(ticks "$gw_pid"); s0=$(ticks "$sandbox_pid"); l0=$(ticks "$log_pid")
  TIMEFORMAT='%U %S'
  { time wrk -t"$threads" -c"$conns" -d"${secs}s" --latency "$@" "$url" > "$work/wrk.txt"; } 2> "$work/wrk-time.txt"
  g1=$(ticks "$gw_pid"); s1=$(ticks "$sandbox_pid"); l1=$(ticks "$log_pid")
  out=$(cat "$work/wrk.txt")
  if grep -q "Non-2xx" <<<"$out"; then echo "error: non-2xx answers:" >&2; echo "$out" >&2; exit 1; fi
  wrk_cpu=$(awk '{print $1 + $2}' "$work/wrk-time.txt")
  local n rps p50 p99
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  echo "$rps $(to_ms "$p50") $(to_ms "$p99") $(awk -v n="$n" -v g=$((g1 - g0)) -v l=$((l1 - l0)) -v s=$((s1 - s0)) -v w="$wrk_cpu" -v hz="$hz" \
    'BEGIN {printf "%.1f %.1f %.1f %.1f", g / hz / n * 1e6, l / hz / n * 1e6, s / hz / n * 1e6, w / n * 1e6}')"
}
to_ms() { # wrk prints 812.00us, 1.23ms, 1.02s
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else print v }'
}

load() { awk '{print $1 ", " $2 ", " $3}' /proc/loadavg; }
echo "load average before: $(load) (1, 5, 15 min; other work on these cores shows in the rates)"
echo "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(awk '/MemTotal/ {printf "%.0f GB", $2/1048576}' /proc/meminfo) RAM, Linux $(uname -r); wrk $(wrk -v 2>&1 | awk 'NR==1 {print $2}'), ${secs} s per run"

pct() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.0f %%", 100 * a / b}'; }
added() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%+.3f", a - b}'; }

# The gateway's TCP connections to the sandbox (established, counted from the gateway's side).
upstream_conns() {
  ss -Htnp state established "( dport = :${sandbox##*:} )" 2>/dev/null | grep -c "pid=$gw_pid," || true
}

# One upstream: starts the sandbox (plain HTTP, or HTTPS with --tls: its own CA, which its
# config.yaml names as ca_file, so the gateway verifies it and negotiates HTTP/2 by ALPN),
# measures direct and through the gateway (HTTP and HTTPS towards wrk), prints the rows.
bench_upstream() {
  local label=$1; shift
  local dir=$work/sandbox-$label
  "$bin" sandbox --json --listen 127.0.0.1:0 --dir "$dir" "$@" > "$work/sandbox.json" 2>/dev/null &
  sandbox_pid=$!
  pids+=("$sandbox_pid")
  for _ in $(seq 100); do [ -s "$work/sandbox.json" ] && break; sleep 0.05; done
  sandbox=$(json_field base_url < "$work/sandbox.json")
  config=$dir/config.yaml
  local curl_ca=()
  [ -f "$dir/ca.pem" ] && curl_ca=(--cacert "$dir/ca.pem")
  local proto_note=""
  if [ "${sandbox%%:*}" = https ]; then
    proto_note="sandbox offers $(curl -s "${curl_ca[@]}" --http2 -o /dev/null -w 'HTTP/%{http_version}' "$sandbox/v1/api/iserver/accounts") by ALPN"
  fi

  start_gateway --plain
  local idle_kb=$(kb VmRSS "$gw_pid") http_ready=$ready_ms
  local bearer
  bearer=$("$bin" --config "$config" -q token)
  # A warm-up, so no run pays for connection pools filling.
  wrk -t1 -c4 -d1s "$gw_url/v1/api/iserver/accounts" > /dev/null
  local direct_rps direct_p50 direct_p99 direct_sb direct_wrk http_rps http_p50 http_p99 http_gw http_log http_sb http_wrk
  local direct1_rps direct1_p50 direct1_p99 direct1_sb direct1_wrk http1_rps http1_p50 http1_p99 http1_gw http1_log http1_sb http1_wrk
  read -r direct_rps direct_p50 direct_p99 _ _ direct_sb direct_wrk < <(run_wrk 2 16 "$sandbox/v1/api/iserver/accounts" -H "Authorization: $bearer")
  read -r http_rps http_p50 http_p99 http_gw http_log http_sb http_wrk < <(run_wrk 2 16 "$gw_url/v1/api/iserver/accounts")
  local conns16
  conns16=$(upstream_conns)
  read -r direct1_rps direct1_p50 direct1_p99 _ _ direct1_sb direct1_wrk < <(run_wrk 1 1 "$sandbox/v1/api/iserver/accounts" -H "Authorization: $bearer")
  read -r http1_rps http1_p50 http1_p99 http1_gw http1_log http1_sb http1_wrk < <(run_wrk 1 1 "$gw_url/v1/api/iserver/accounts")
  local http_rss_kb=$(kb VmRSS "$gw_pid") http_hwm_kb=$(kb VmHWM "$gw_pid")
  stop_gateway

  start_gateway
  local https_ready=$ready_ms https_idle_kb=$(kb VmRSS "$gw_pid")
  wrk -t1 -c4 -d1s "$gw_url/v1/api/iserver/accounts" > /dev/null
  local https_rps https_p50 https_p99 https_gw https_log https_sb https_wrk https1_rps https1_p50 https1_p99 https1_gw https1_log https1_sb https1_wrk
  read -r https_rps https_p50 https_p99 https_gw https_log https_sb https_wrk < <(run_wrk 2 16 "$gw_url/v1/api/iserver/accounts")
  read -r https1_rps https1_p50 https1_p99 https1_gw https1_log https1_sb https1_wrk < <(run_wrk 1 1 "$gw_url/v1/api/iserver/accounts")
  local https_rss_kb=$(kb VmRSS "$gw_pid") https_hwm_kb=$(kb VmHWM "$gw_pid")
  stop_gateway
  kill "$sandbox_pid"; wait "$sandbox_pid" 2>/dev/null || true

  local up=${sandbox%%:*}
  echo
  echo "### Upstream: the sandbox over $up ($label)${proto_note:+; $proto_note}; the gateway's connections to it after 16 client connections: $conns16"
  echo
  echo "| load | path | req/s | vs direct | p50 ms | p99 ms | added p99 ms | CPU µs/request: gateway, its log's reader, sandbox, wrk |"
  echo "|---|---|---:|---:|---:|---:|---:|---|"
  echo "| 2 threads, 16 connections | direct to the sandbox ($up, bearer) | $direct_rps | 100 % | $direct_p50 | $direct_p99 | | –, –, $direct_sb, $direct_wrk |"
  echo "| 2 threads, 16 connections | gateway, HTTP | $http_rps | $(pct "$http_rps" "$direct_rps") | $http_p50 | $http_p99 | $(added "$http_p99" "$direct_p99") | $http_gw, $http_log, $http_sb, $http_wrk |"
  echo "| 2 threads, 16 connections | gateway, HTTPS | $https_rps | $(pct "$https_rps" "$direct_rps") | $https_p50 | $https_p99 | $(added "$https_p99" "$direct_p99") | $https_gw, $https_log, $https_sb, $https_wrk |"
  echo "| 1 connection | direct to the sandbox ($up, bearer) | $direct1_rps | 100 % | $direct1_p50 | $direct1_p99 | | –, –, $direct1_sb, $direct1_wrk |"
  echo "| 1 connection | gateway, HTTP | $http1_rps | $(pct "$http1_rps" "$direct1_rps") | $http1_p50 | $http1_p99 | $(added "$http1_p99" "$direct1_p99") | $http1_gw, $http1_log, $http1_sb, $http1_wrk |"
  echo "| 1 connection | gateway, HTTPS | $https1_rps | $(pct "$https1_rps" "$direct1_rps") | $https1_p50 | $https1_p99 | $(added "$https1_p99" "$direct1_p99") | $https1_gw, $https1_log, $https1_sb, $https1_wrk |"
  echo
  echo "| gateway | start to /readyz 200 | RSS idle | RSS after the load | peak RSS (VmHWM) |"
  echo "|---|---:|---:|---:|---:|"
  echo "| HTTP | $http_ready ms | $(mb "$idle_kb") MB | $(mb "$http_rss_kb") MB | $(mb "$http_hwm_kb") MB |"
  echo "| HTTPS (makes its self-signed certificate) | $https_ready ms | $(mb "$https_idle_kb") MB | $(mb "$https_rss_kb") MB | $(mb "$https_hwm_kb") MB |"
}

case "$upstreams" in
  plain) bench_upstream plain ;;
  tls) bench_upstream tls --tls ;;
  *) bench_upstream plain; bench_upstream tls --tls ;;
esac
echo
echo "load average after: $(load)"
