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
# Rates on shared cores swing by several points from one run to the next (the direct rate
# here by up to a third), so each gateway run is paired with a direct run next to it, in
# rounds that swap which of the two goes first; the table gives the median over rounds of
# those paired ratios, with their range, rather than one run against one run.
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
# A reference, with --nginx (plain upstream only): nginx (Debian's, not installed by anything
# here) as the proxy instead, one worker, keep-alive connections to the sandbox, the bearer
# added to each request, an access log line a request (buffered): what a mature C reverse
# proxy costs on the same cores, in the same rounds.
#
# Usage: scripts/bench-gateway.sh [--quick] [--upstream plain|tls|both] [--nginx]
#   5 s runs, 6 rounds at saturation and 3 at one connection (about 4 minutes an upstream);
#   --quick: 2 s runs, 2 rounds and 1; --upstream: which of the two (default both).
#   IBAUTH_BIN=path: measure that binary instead of building this tree's release build.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=5
rounds=6
rounds1=3
upstreams=both
nginx=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) secs=2; rounds=2; rounds1=1 ;;
    --upstream) upstreams=${2:-}; shift ;;
    --nginx) nginx=1 ;;
    *) echo "usage: $0 [--quick] [--upstream plain|tls|both] [--nginx]" >&2; exit 2 ;;
  esac
  shift
done
case "$upstreams" in plain|tls|both) ;; *) echo "error: --upstream plain, tls or both" >&2; exit 2 ;; esac
command -v wrk >/dev/null || { echo "error: wrk is missing (apt-get install wrk, or scripts/test.sh)" >&2; exit 1; }
command -v curl >/dev/null || { echo "error: curl is missing" >&2; exit 1; }
PATH=$PATH:/usr/sbin
[ -z "$nginx" ] || command -v nginx >/dev/null || { echo "error: --nginx needs nginx (apt-get install nginx-light)" >&2; exit 1; }

if [ -n "${IBAUTH_BIN:-}" ]; then
  bin=$IBAUTH_BIN
else
  cargo build --release -q -p ibauth-cli
  bin=$PWD/target/release/ibauth
fi
work=$(mktemp -d)
pids=()
cleanup() {
  if [ -f "$work/nginx.pid" ]; then kill "$(cat "$work/nginx.pid")" 2>/dev/null || true; fi
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

# One wrk run: threads connections url [header]. Appends a line to $work/rows/$name:
# requests/s, p50 and p99 (ms), requests, then the CPU ticks the gateway (0 when it is not
# running), its log's reader, the sandbox and wrk (seconds × hz) spent during it.
run_wrk() {
  local name=$1 threads=$2 conns=$3 url=$4; shift 4
  local out g0=0 g1=0 l0=0 l1=0 s0 s1
  [ -n "${gw_pid:-}" ] && { g0=$(ticks "$gw_pid"); l0=$(ticks "$log_pid"); }
  s0=$(ticks "$sandbox_pid")
  TIMEFORMAT='%U %S'
  { time wrk -t"$threads" -c"$conns" -d"${secs}s" --latency "$@" "$url" > "$work/wrk.txt"; } 2> "$work/wrk-time.txt"
  [ -n "${gw_pid:-}" ] && { g1=$(ticks "$gw_pid"); l1=$(ticks "$log_pid"); }
  s1=$(ticks "$sandbox_pid")
  out=$(cat "$work/wrk.txt")
  if grep -q "Non-2xx" <<<"$out"; then echo "error: non-2xx answers:" >&2; echo "$out" >&2; exit 1; fi
  local n rps p50 p99
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  echo "$rps $(to_ms "$p50") $(to_ms "$p99") $n $((g1 - g0)) $((l1 - l0)) $((s1 - s0)) $(awk -v hz="$hz" '{print ($1 + $2) * hz}' "$work/wrk-time.txt")" >> "$work/rows/$name"
}
to_ms() { # wrk prints 812.00us, 1.23ms, 1.02s
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else print v }'
}

# The median of the numbers on stdin (one a line).
median() { sort -g | awk '{v[NR] = $1} END {if (NR % 2) m = v[(NR + 1) / 2]; else m = (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.3f\n", m}'; }
# Column $2 of rows file $1.
column() { awk -v c="$2" '{print $c}' "$work/rows/$1"; }
# Per round, gateway rows $1 column $3 against direct rows $2 column $3: ratios (or differences
# with "diff"), one a line — each gateway run against the direct run next to it.
paired() { paste -d' ' <(column "$1" "$3") <(column "$2" "$3") | awk -v op="${4:-ratio}" '{if (op == "diff") printf "%.3f\n", $1 - $2; else printf "%.4f\n", $1 / $2}'; }
# A row's cells: median req/s, median p50, median p99, then CPU µs a request over all its runs
# (gateway, log reader, sandbox, wrk; "–" for the gateway's two when it was not in the path).
cells() {
  local f=$work/rows/$1
  echo "$(column "$1" 1 | median | awk '{printf "%.0f", $1}') $(column "$1" 2 | median) $(column "$1" 3 | median) $(awk -v hz="$hz" '{n += $4; g += $5; l += $6; s += $7; w += $8}
    END {printf "%s %s %.1f %.1f", (g ? sprintf("%.1f", g / hz / n * 1e6) : "–"), (g ? sprintf("%.1f", l / hz / n * 1e6) : "–"), s / hz / n * 1e6, w / hz / n * 1e6}' "$f")"
}
pct() { awk '{printf "%.0f %%", 100 * $1}'; }
spread() { sort -g | awk '{v[NR] = $1} END {printf "%.0f–%.0f %%", 100 * v[1], 100 * v[NR]}'; }

load() { awk '{print $1 ", " $2 ", " $3}' /proc/loadavg; }
echo "load average before: $(load) (1, 5, 15 min; other work on these cores shows in the rates)"
echo "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(awk '/MemTotal/ {printf "%.0f GB", $2/1048576}' /proc/meminfo) RAM, Linux $(uname -r); wrk $(wrk -v 2>&1 | awk 'NR==1 {print $2}'), ${secs} s per run, $rounds rounds at saturation and $rounds1 at one connection"

# The gateway's TCP connections to the sandbox (established, counted from the gateway's side).
upstream_conns() {
  ss -Htnp state established "( dport = :${sandbox##*:} )" 2>/dev/null | grep -c "pid=$gw_pid," || true
}

# Rounds of: the sandbox directly, then through the gateway (the order swapped every other
# round, so neither always runs first). Rows go to $work/rows/${front}{16,1} and
# $work/rows/direct{16,1}-$front.
interleaved() {
  local front=$1 url=$gw_url/v1/api/iserver/accounts direct=$sandbox/v1/api/iserver/accounts r
  local keep_gw=$gw_pid
  for r in $(seq "$rounds"); do
    if [ $((r % 2)) = 1 ]; then
      gw_pid="" run_wrk "direct16-$front" 2 16 "$direct" -H "Authorization: $bearer"; gw_pid=$keep_gw
      run_wrk "${front}16" 2 16 "$url"
    else
      run_wrk "${front}16" 2 16 "$url"
      gw_pid="" run_wrk "direct16-$front" 2 16 "$direct" -H "Authorization: $bearer"; gw_pid=$keep_gw
    fi
  done
  conns16=$(upstream_conns)
  for r in $(seq "$rounds1"); do
    gw_pid="" run_wrk "direct1-$front" 1 1 "$direct" -H "Authorization: $bearer"; gw_pid=$keep_gw
    run_wrk "${front}1" 1 1 "$url"
  done
}

# nginx in the gateway's place (see --nginx), measured as a front is: rows "nginx…".
bench_nginx() {
  local keep_gw=$gw_pid keep_log=$log_pid keep_url=$gw_url port
  port=$(free_port)
  cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log $work/nginx-access.log combined buffer=64k flush=1s;
  upstream sandbox { server ${sandbox#http://}; keepalive 32; }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://sandbox;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "$bearer";
      proxy_buffering off;
    }
  }
}
CONF
  nginx -c "$work/nginx.conf"
  for _ in $(seq 100); do [ -s "$work/nginx.pid" ] && break; sleep 0.05; done
  log_pid=$(cat "$work/nginx.pid")
  gw_pid=$(pgrep -P "$log_pid" | head -n1)
  gw_url=http://127.0.0.1:$port
  wrk -t1 -c4 -d1s "$gw_url/v1/api/iserver/accounts" > /dev/null
  interleaved nginx
  kill "$log_pid"; rm -f "$work/nginx.pid"
  gw_pid=$keep_gw log_pid=$keep_log gw_url=$keep_url
}

# One upstream: starts the sandbox (plain HTTP, or HTTPS with --tls: its own CA, which its
# config.yaml names as ca_file, so the gateway verifies it and negotiates HTTP/2 by ALPN),
# measures direct and through the gateway (HTTP and HTTPS towards wrk), prints the rows.
bench_upstream() {
  local label=$1; shift
  local dir=$work/sandbox-$label
  rm -rf "$work/rows"; mkdir -p "$work/rows"
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

  # The bearer for direct runs is the session's current token, read after each gateway's
  # login (the same token file the gateway uses).
  start_gateway --plain
  bearer=$("$bin" --config "$config" -q token)
  local idle_kb=$(kb VmRSS "$gw_pid") http_ready=$ready_ms
  # A warm-up, so no run pays for connection pools filling.
  wrk -t1 -c4 -d1s "$gw_url/v1/api/iserver/accounts" > /dev/null
  interleaved http
  local http_conns=$conns16 http_rss_kb=$(kb VmRSS "$gw_pid") http_hwm_kb=$(kb VmHWM "$gw_pid")
  stop_gateway

  start_gateway
  bearer=$("$bin" --config "$config" -q token)
  local https_ready=$ready_ms https_idle_kb=$(kb VmRSS "$gw_pid")
  wrk -t1 -c4 -d1s "$gw_url/v1/api/iserver/accounts" > /dev/null
  interleaved https
  local https_rss_kb=$(kb VmRSS "$gw_pid") https_hwm_kb=$(kb VmHWM "$gw_pid")
  # While a gateway holds the session (its logout at the end would end the bearer's).
  local fronts="http https"
  if [ -n "$nginx" ] && [ "$label" = plain ]; then
    bench_nginx
    fronts="http https nginx"
  fi
  stop_gateway
  kill "$sandbox_pid"; wait "$sandbox_pid" 2>/dev/null || true

  local up=${sandbox%%:*}
  cat "$work"/rows/direct16-* > "$work/rows/direct16"
  cat "$work"/rows/direct1-* > "$work/rows/direct1"
  echo
  echo "### Upstream: the sandbox over $up ($label)${proto_note:+; $proto_note}; the gateway's connections to it after 16 client connections: $http_conns"
  echo
  echo "req/s, p50 and p99: medians over the runs; vs direct and added p99: the median (and range) over rounds of each gateway run against the direct run next to it; CPU: over all runs."
  echo
  echo "| load | path | req/s | vs direct (range) | p50 ms | p99 ms | added p99 ms | CPU µs/request: gateway, its log's reader, sandbox, wrk |"
  echo "|---|---|---:|---:|---:|---:|---:|---|"
  local row
  for row in "16 2 threads, 16 connections" "1 1 connection"; do
    local c=${row%% *} load=${row#* } rps p50 p99 g l s w
    read -r rps p50 p99 g l s w < <(cells "direct$c")
    echo "| $load | direct to the sandbox ($up, bearer) | $rps | 100 % | $p50 | $p99 | | –, –, $s, $w |"
    local front name
    for front in $fronts; do
      case $front in
        http) name="gateway, HTTP" ;;
        https) name="gateway, HTTPS" ;;
        *) name="nginx, HTTP (reference: its worker and master in the gateway's columns)" ;;
      esac
      read -r rps p50 p99 g l s w < <(cells "$front$c")
      echo "| $load | $name | $rps | $(paired "$front$c" "direct$c-$front" 1 | median | pct) ($(paired "$front$c" "direct$c-$front" 1 | spread)) | $p50 | $p99 | $(paired "$front$c" "direct$c-$front" 3 diff | median | awk '{printf "%+.3f", $1}') | $g, $l, $s, $w |"
    done
  done
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
