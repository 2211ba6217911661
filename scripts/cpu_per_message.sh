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
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 did not open" >&2
  return 1
}

# No control plane: a run must not depend on its port being free.
printf '[http]\nlisten = "0"\n' >"$WORK/run.toml"
REDIS_PORT="$(free_port)"
"$HOTPATH_REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
wait_port "$REDIS_PORT"

# Runs BIN against a simulator at RATE actions/s on STREAMS; prints the measurement line.
measure() {
  local scenario="$1" bin="$2" rate="$3" streams="$4"
  local port sim
  port="$(free_port)"
  "$SIM_BIN" sim --listen "127.0.0.1:$port" --symbols BTCUSDT --rate "$rate" \
    >"$WORK/sim.log" 2>&1 &
  sim=$!
  PIDS+=("$sim")
  wait_port "$port"
  # The subshell's `times` reports its children's user and system CPU: the hotpath run alone.
  local cpu
  cpu="$( (BINANCE_API_KEY=sim RUST_LOG=warn "$bin" run --config "$WORK/run.toml" --endpoint "ws://127.0.0.1:$port" \
      --symbols BTCUSDT --streams "$streams" --duration "$DURATION" \
      --redis "redis://127.0.0.1:$REDIS_PORT/0" >"$WORK/summary.json" 2>"$WORK/run.log"
    times) | tail -1)"
  kill "$sim" 2>/dev/null || true
  wait "$sim" 2>/dev/null || true
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
