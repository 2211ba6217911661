#!/usr/bin/env bash
# The engine's main job end to end on the local simulator: builds hotpath, starts `hotpath sim`
# on a free loopback port, runs `hotpath run` against it for DEMO_SECONDS (default 10), prints
# the run's JSON summary, decodes a few recorded frames, and stops everything it started.
# Needs only the Rust toolchain. (The Kinesis and Redis sinks join this script when they land.)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${DEMO_SECONDS:-10}"
work="$(mktemp -d)"
sim_pid=""
cleanup() {
  if [ -n "$sim_pid" ] && kill -0 "$sim_pid" 2>/dev/null; then
    kill -TERM "$sim_pid" 2>/dev/null || true
    wait "$sim_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building hotpath (release)"
cargo build --release --locked -p hotpath
bin=target/release/hotpath

echo "== starting the simulator (BTCUSDT, ETHUSDT) on a free port"
"$bin" sim --listen 127.0.0.1:0 --symbols BTCUSDT,ETHUSDT --seed 1 --rate 5000 > "$work/sim.out" 2> "$work/sim.log" &
sim_pid=$!
for _ in $(seq 1 100); do
  [ -s "$work/sim.out" ] && break
  sleep 0.1
done
addr="$(sed -n 's/.*"listening":"\([^"]*\)".*/\1/p' "$work/sim.out")"
[ -n "$addr" ] || { echo "the simulator did not start:" >&2; cat "$work/sim.log" >&2; exit 1; }
echo "   listening on $addr"

echo "== recording 5 frames of btcusdt@trade and decoding them"
BINANCE_API_KEY=demo "$bin" record --url "ws://$addr/ws/btcusdt@trade" --out "$work/trades.rec" --max-frames 5 > /dev/null
"$bin" decode --rec-file "$work/trades.rec"

echo "== hotpath run against the simulator for ${seconds}s (all four streams)"
BINANCE_API_KEY=demo "$bin" run --endpoint "ws://$addr" --symbols BTCUSDT,ETHUSDT --duration "$seconds" 2> "$work/run.log" | tee "$work/summary.json"
grep -q '"gaps":{"count":0' "$work/summary.json" && echo "   no gap: every trade and depth update arrived" || echo "   gaps were reported (see the summary)"
echo "== done"
