#!/usr/bin/env bash
# Runs one load scenario against tickfan (1 worker pinned to core 0) and against the baseline
# server (pinned to core 0), with the load tool on core 1 (LOAD_CPUS to change). Usage:
#   benches/run-scenario.sh SCENARIO [extra `tickfan bench` flags, e.g. --duration 10 --json]
# Build first: cargo build --release. SERVER_BIN runs another build of tickfan as the server
# (an A/B of two commits with the same load tool and baseline).
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

echo "== tickfan ($workers worker(s) on cpu $cpus)"
taskset -c "$cpus" "$server_bin" --feed none --workers "$workers" --log-level warn \
  --listen 127.0.0.1:18080 --ingest 127.0.0.1:18081 --admin 127.0.0.1:18082 \
  --set limits.max_connections_per_ip=0 --set limits.new_connections_per_ip_per_min=0 \
  --set server.listen_backlog=4096 ${SERVER_ARGS:-} &
pid=$!
sleep 0.5
taskset -c "$load_cpus" "$bin" bench "$scenario" --to 127.0.0.1:18080 --publish-to 127.0.0.1:18081 --server-pid "$pid" "$@"
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=

if [ "${BASELINE:-1}" = 1 ]; then
  echo "== baseline (on cpu $cpus)"
  taskset -c "$cpus" "$bin" bench-baseline --public 127.0.0.1:18090 --ingest 127.0.0.1:18091 2>/dev/null &
  pid=$!
  sleep 0.5
  taskset -c "$load_cpus" "$bin" bench "$scenario" --to 127.0.0.1:18090 --publish-to 127.0.0.1:18091 --server-pid "$pid" "$@"
fi
