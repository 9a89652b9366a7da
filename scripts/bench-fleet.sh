#!/usr/bin/env bash
# The multi-session runner at scale: FLEET_SESSIONS (default 10 000) third-party sessions over
# 3 `ibauth fleet run` processes (release build, 2 workers each), against the sandbox (in the
# test process, 768-bit DH group) and a throw-away PostgreSQL with pg_stat_statements, a tickle
# per session every FLEET_TICKLE_SECS (default 20) s, claims held FLEET_HOLD_SECS (default 10) s.
# Measured over FLEET_MEASURE_SECS (default 60) s of steady state: runner CPU per tickle (from
# /proc), statements per tickle (pg_stat_statements), runner RSS, store bytes per session; then
# one runner is frozen while it holds claims and killed, and the time until each of its
# sessions is tickled again is the takeover time. Prints the figures (docs/benchmarks.md).
# FLEET_BATCH (200) and FLEET_CONCURRENCY (32) set each worker's batch and requests at once.
# Usage: scripts/bench-fleet.sh   (FLEET_* variables to change the run)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
cargo test --release -p ibauth-cli --test fleet -- --ignored --nocapture \
  ten_thousand_sessions_over_three_runner_processes
