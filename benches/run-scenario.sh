#!/usr/bin/env bash
# Runs one load scenario against tickfan (1 worker pinned to core 0) and against the baseline
# server (pinned to core 0), with the load tool on core 1 (LOAD_CPUS to change). Usage:
#   benches/run-scenario.sh SCENARIO [extra `tickfan bench` flags, e.g. --duration 10 --json]
# Build first: cargo build --release. SERVER_BIN runs another build of tickfan as the server
# (an A/B of two commits with the same load tool and baseline).
# Variables: WORKERS (1), SERVER_CPUS (0), LOAD_CPUS (1), BASELINE=0 to skip the baseline,
# BASELINE_FIRST=1 to run the baseline before tickfan, SERVER_ARGS (extra server flags),
# JSON_OUT=PREFIX to write each report as JSON to PREFIXtickfan.json and PREFIXbaseline.json
# instead of printing the table (benches/run-matrix.sh uses it).
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:?scenario: light, moderate, heavy, broadcast, connect}
shift
bin=target/release/tickfan
server_bin=${SERVER_BIN:-$bin}
workers=${WORKERS:-1}
cpus=${SERVER_CPUS:-0}
load_cpus=${LOAD_CPUS:-1}
ulimit -n 20000 2>/dev/null || true
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true; }
trap cleanup EXIT

# load NAME PORT PUBLISH_PORT: runs the load tool against the server started as $pid, then stops it.
load() {
  local name=$1 port=$2 publish_port=$3
  shift 3
  sleep 0.5
  local cmd=(taskset -c "$load_cpus" "$bin" bench "$scenario" --to "127.0.0.1:$port"
    --publish-to "127.0.0.1:$publish_port" --server-pid "$pid" "$@")
  if [ -n "${JSON_OUT:-}" ]; then
    "${cmd[@]}" --json >"${JSON_OUT}$name.json"
  else
    "${cmd[@]}"
  fi
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=
}

run_tickfan() {
  echo "== tickfan ($workers worker(s) on cpu $cpus)" >&2
  taskset -c "$cpus" "$server_bin" --feed none --workers "$workers" --log-level warn \
    --listen 127.0.0.1:18080 --ingest 127.0.0.1:18081 --admin 127.0.0.1:18082 \
    --set limits.max_connections_per_ip=0 --set limits.new_connections_per_ip_per_min=0 \
    --set server.listen_backlog=4096 ${SERVER_ARGS:-} &
  pid=$!
  load tickfan 18080 18081 "$@"
}

run_baseline() {
  echo "== baseline (on cpu $cpus)" >&2
  taskset -c "$cpus" "$bin" bench-baseline --public 127.0.0.1:18090 --ingest 127.0.0.1:18091 \
    2>/dev/null &
  pid=$!
  load baseline 18090 18091 "$@"
}

if [ "${BASELINE:-1}" = 1 ] && [ "${BASELINE_FIRST:-0}" = 1 ]; then
  run_baseline "$@"
  run_tickfan "$@"
else
  run_tickfan "$@"
  [ "${BASELINE:-1}" = 1 ] && run_baseline "$@"
fi
exit 0
