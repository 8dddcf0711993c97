#!/usr/bin/env bash
# Runs every load scenario ROUNDS times (default 3) beside the baseline, alternating which of
# the two goes first, then prints each run and the medians against issue 7's targets
# (benches/summarize-matrix.py). One command for the whole results table of docs/benchmarks.md:
#   cargo build --release && benches/run-matrix.sh [ROUNDS]
# Reports stay in target/bench-matrix/DATE-COMMIT/ (one JSON file per run, meta.txt).
# Variables: LIGHT_S (20), RUN_S (10: moderate, heavy, broadcast), HEAVY_RATES (msg/s tried
# for the highest zero-loss heavy rate, default "5000 10000 20000"; empty to skip), SCENARIOS
# (default "light moderate heavy broadcast connect").
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
light_s=${LIGHT_S:-20}
run_s=${RUN_S:-10}
heavy_rates=${HEAVY_RATES-5000 10000 20000}
scenarios=${SCENARIOS:-light moderate heavy broadcast connect}
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dir=target/bench-matrix/$(date -u +%Y%m%dT%H%M%SZ)-$commit
mkdir -p "$dir"
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit: $commit$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "kernel: $(uname -r)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x $(nproc)"
  echo "rounds: $rounds"
} >"$dir/meta.txt"
echo "reports in $dir" >&2

scenario() { # NAME ROUND [env...] -- [bench flags]
  local name=$1 round=$2
  shift 2
  local envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  echo "-- $name, round $round" >&2
  env "${envs[@]}" JSON_OUT="$dir/$name-$round-" benches/run-scenario.sh "$name" "$@" 2>/dev/null
}

for round in $(seq 1 "$rounds"); do
  first=$((round % 2 == 0))
  for s in $scenarios; do
    case $s in
      light) scenario light "$round" BASELINE_FIRST=$first -- --duration "$light_s" ;;
      moderate | heavy) scenario "$s" "$round" BASELINE_FIRST=$first -- --duration "$run_s" ;;
      broadcast)
        scenario broadcast "$round" WORKERS=2 SERVER_CPUS=0-1 BASELINE=0 -- --duration "$run_s" ;;
      connect) scenario connect "$round" BASELINE=0 -- ;;
      *) echo "unknown scenario $s" >&2; exit 2 ;;
    esac
  done
done
for rate in $heavy_rates; do
  scenario heavy "rate$rate" BASELINE=0 -- --duration "$run_s" --rate "$rate"
done

python3 benches/summarize-matrix.py "$dir"
