#!/usr/bin/env bash
# CPU per message of `hotpath run` (utime + stime of the process over the run, divided by the
# frames it received), against the local simulator with the Redis sink, at several simulator
# rates, plus the CPU of an idle engine (connected, no traffic). Give one or more hotpath
# binaries to compare them in the same run (each scenario runs every binary in turn, so a busy
# machine hurts them alike: compare ratios within one run, not figures across runs).
#
#   scripts/cpu_per_message.sh BIN [BIN...]
#   DURATION=20 RATES="2000 20000" scripts/cpu_per_message.sh target/release/hotpath /tmp/old
#
# Needs redis-server (scripts/servers.sh installs it). One symbol (BTCUSDT), every stream; the
# simulator's rate is its order-flow actions per second. Prints one line per binary and scenario:
# scenario, binary, frames, CPU seconds, microseconds of CPU per frame, CPU % of one core.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/servers.sh
ensure_redis

DURATION="${DURATION:-20}"
RATES="${RATES:-2000 20000}"
[ "$#" -ge 1 ] || { echo "usage: $0 HOTPATH_BINARY [HOTPATH_BINARY...]" >&2; exit 2; }
source scripts/bench_common.sh

# No control plane: a run must not depend on its port being free.
printf '[http]\nlisten = "0"\n' >"$WORK/run.toml"
bench_start_redis

# Runs BIN against a simulator at RATE actions/s on STREAMS; prints the measurement line.
measure() {
  local scenario="$1" bin="$2" rate="$3" streams="$4"
  bench_start_sim "$SIM_BIN" "$rate" BTCUSDT
  # The subshell's `times` reports its children's user and system CPU: the hotpath run alone.
  local cpu
  cpu="$( (BINANCE_API_KEY=sim RUST_LOG=warn "$bin" run --config "$WORK/run.toml" --endpoint "ws://127.0.0.1:$SIM_PORT" \
      --symbols BTCUSDT --streams "$streams" --duration "$DURATION" \
      --redis "redis://127.0.0.1:$REDIS_PORT/0" >"$WORK/summary.json" 2>"$WORK/run.log"
    times) | tail -1)"
  bench_stop "$SIM_PID"
  python3 - "$scenario" "$bin" "$cpu" "$WORK/summary.json" "$DURATION" <<'EOF'
import json, re, sys
scenario, binary, cpu, summary, duration = sys.argv[1:]
seconds = sum(float(m) * 60 + float(s) for m, s in re.findall(r"(\d+)m([\d.]+)s", cpu))
frames = json.load(open(summary)).get("frames", 0)
per = f"{seconds / frames * 1e6:.1f}" if frames else "-"
print(f"{scenario:>10} {binary:<28} frames={frames:<8} cpu_s={seconds:<7.2f} "
      f"us_per_frame={per:<7} core_pct={seconds / float(duration) * 100:.1f}")
EOF
}

SIM_BIN="$1"
for rate in $RATES; do
  for bin in "$@"; do
    measure "${rate}/s" "$bin" "$rate" "trade,bestBidAsk,depth,depth20"
  done
done
for bin in "$@"; do
  # Connected and subscribed, no traffic: a market with no order flow trades nothing.
  measure "idle" "$bin" 0 "trade"
done
