#!/usr/bin/env bash
# The engine's main job end to end on the local simulator, with real sinks: installs
# redis-server and the kinesalite Kinesis emulator if missing (scripts/servers.sh), starts them
# and `hotpath sim` on free loopback ports, runs `hotpath run` into Redis and Kinesis for
# DEMO_SECONDS (default 10) with a progress line per second (messages/s, sink writes, latency,
# queue depth), then shows what landed (a Redis book, stream entries, trade statistics and
# features, Kinesis record counts) and stops everything it started.
# Needs only the Rust toolchain (and apt/npm access to install the two servers).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${DEMO_SECONDS:-10}"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$work"
}
trap cleanup EXIT

# A loopback port nobody listens on.
free_port() {
  local port
  for _ in $(seq 1 100); do
    port=$((20000 + RANDOM % 30000))
    if ! (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  echo "no free port found" >&2
  return 1
}

# Waits until something accepts connections on the port (bounded).
wait_port() {
  for _ in $(seq 1 100); do
    if (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "nothing listens on port $1: $2 did not start" >&2
  return 1
}

echo "== test servers (installed if missing)"
# shellcheck source=scripts/servers.sh
source scripts/servers.sh
ensure_redis
ensure_kinesalite

echo "== building hotpath (release)"
cargo build --release --locked -p hotpath
bin="${CARGO_TARGET_DIR:-target}/release/hotpath"

redis_port="$(free_port)"
"$HOTPATH_REDIS_SERVER" --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
wait_port "$redis_port" redis-server
echo "== redis-server on 127.0.0.1:$redis_port"

kinesis_port="$(free_port)"
node "$HOTPATH_KINESALITE" --port "$kinesis_port" >"$work/kinesalite.log" 2>&1 &
pids+=($!)
wait_port "$kinesis_port" kinesalite
echo "== kinesalite (Kinesis emulator) on 127.0.0.1:$kinesis_port"

"$bin" sim --listen 127.0.0.1:0 --symbols BTCUSDT,ETHUSDT --seed 1 --rate 5000 >"$work/sim.out" 2>"$work/sim.log" &
pids+=($!)
for _ in $(seq 1 100); do
  [ -s "$work/sim.out" ] && break
  sleep 0.1
done
addr="$(sed -n 's/.*"listening":"\([^"]*\)".*/\1/p' "$work/sim.out")"
[ -n "$addr" ] || { echo "the simulator did not start:" >&2; cat "$work/sim.log" >&2; exit 1; }
echo "== simulator (BTCUSDT, ETHUSDT) on $addr"

cat >"$work/run.toml" <<EOF
[binance]
endpoint = "ws://$addr"
symbols = ["BTCUSDT", "ETHUSDT"]
[kinesis]
enabled = true
endpoint_url = "http://127.0.0.1:$kinesis_port"
region = "us-east-1"
create_streams = true
heartbeat_interval_s = 2
dead_letter_path = "$work/dead-letters.jsonl"
[redis]
enabled = true
url = "redis://127.0.0.1:$redis_port/0"
EOF

# The emulator takes any credentials; the AWS chain reads them from the environment.
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_REGION=us-east-1
echo "== hotpath run -> Redis + Kinesis for ${seconds}s (progress every second)"
BINANCE_API_KEY=demo "$bin" run --config "$work/run.toml" --duration "$seconds" --progress 1 \
  2> >(grep --line-buffered '^{' >&2) | tee "$work/summary.json"

echo "== what landed in Redis"
cli() { redis-cli -p "$redis_port" "$@"; }
if command -v redis-cli >/dev/null 2>&1; then
  echo "-- keys of BTCUSDT:"; cli --scan --pattern '*{BTCUSDT}*' | sort
  echo "-- XLEN trades:{BTCUSDT} = $(cli XLEN 'trades:{BTCUSDT}')"
  echo "-- the newest trade:"; cli XREVRANGE 'trades:{BTCUSDT}' + - COUNT 1
  echo "-- ob:{BTCUSDT} (top levels):"
  echo "   update_id=$(cli HGET 'ob:{BTCUSDT}' update_id) stale=$(cli HGET 'ob:{BTCUSDT}' stale)"
  echo "   bids=$(cli HGET 'ob:{BTCUSDT}' bids | cut -c1-120)..."
  echo "   asks=$(cli HGET 'ob:{BTCUSDT}' asks | cut -c1-120)..."
  echo "-- tr:{BTCUSDT}:1s:"; cli HGETALL 'tr:{BTCUSDT}:1s' | paste - -
  echo "-- feat:{BTCUSDT}:"; cli HGETALL 'feat:{BTCUSDT}' | paste - -
fi

echo "== what landed in Kinesis"
"$bin" kinesis count --kinesis-endpoint "http://127.0.0.1:$kinesis_port" --region us-east-1 \
  market-sbe-trade market-sbe-bestbidask market-sbe-depth hotpath-heartbeat

if grep -q '"gaps":{"count":0' "$work/summary.json"; then
  echo "   no gap: every trade and depth update arrived"
else
  echo "   gaps were reported (see the summary)"
fi
echo "== done (stopping redis-server, kinesalite and the simulator)"
