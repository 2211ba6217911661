#!/usr/bin/env bash
# hotpath against cryptofeed (the Python collector the old services' users would otherwise run),
# on the same simulated market into the same Redis: CPU per message and trades lost, per tool
# and rate (issue 13 "Against the old services' peers", issue 11's CPU target).
#
#   scripts/compare_cryptofeed.sh [HOTPATH_BINARY]       # default: target/release/hotpath
#   DURATION=20 WARMUP=5 RATES="2000 10000 20000" WIDE=1 scripts/compare_cryptofeed.sh
#
# For each scenario (one symbol at each of RATES actions/s; with WIDE=1 also 200 symbols at 50
# actions/s each, about 20k messages/s in all; then an idle market) and each tool in PEERS
# (default "cryptofeed hotpath-json hotpath-sbe"): a fresh `hotpath sim`, Redis emptied, the tool
# started on the trade, top-of-book and depth-diff streams (`@trade`, `@bookTicker` /
# `@bestBidAsk`, `@depth`) with its Redis writers, WARMUP seconds to connect and sync its books,
# then a DURATION-second window in which scripts/compare_cryptofeed.py samples utime + stime of
# the tool and of redis-server (/proc/PID/stat) and the frames the simulator sent it; then the
# tool is stopped (SIGTERM) and the trade ids it wrote to Redis are checked against the
# simulator's ground truth (/admin/trades): ids missing within the range it wrote.
# cryptofeed 2.4.1 runs in its own venv (scripts/requirements-bench.txt), patched at run time
# for the local simulator (see the driver's doc). One JSON line per tool and scenario, then a
# Markdown table. Compare within one run: the machine may be shared.
# A hotpath peer may name its own binary after an `@` (`hotpath-sbe@/tmp/hotpath-before`), so
# two builds (or a wrapper script setting `HOTPATH_REDIS__LINGER_US`) run back to back in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/servers.sh
ensure_redis
ensure_bench_venv

BIN="${1:-${CARGO_TARGET_DIR:-target}/release/hotpath}"
[ -x "$BIN" ] || { echo "no hotpath binary at $BIN: cargo build --release -p hotpath --bin hotpath" >&2; exit 2; }
DURATION="${DURATION:-20}"
WARMUP="${WARMUP:-5}"
RATES="${RATES:-2000 10000 20000}"
WIDE="${WIDE:-1}"
PEERS="${PEERS:-cryptofeed hotpath-json hotpath-sbe}"
PY="$HOTPATH_BENCH_PYTHON"
DRIVER=scripts/compare_cryptofeed.py
source scripts/bench_common.sh
bench_start_redis
REDIS="127.0.0.1:$REDIS_PORT"
ROWS="$WORK/rows.jsonl"

# hotpath's settings for the bench: no control plane, the whole run's trades kept in the stream
# (the lost-trade check reads them all; `enabled = true`, or `--redis` would take the defaults
# instead of this section), and book snapshots of 100 levels (REST weight 5, as
# cryptofeed's 20; the default 5000 costs 250 each and 200 symbols would sync for minutes).
printf '[http]\nlisten = "0"\n[redis]\nenabled = true\ntrades_maxlen = 100000000\nsnapshot_limit = 100\n' \
  >"$WORK/run.toml"

# Starts TOOL against the simulator on SYMBOLS with CHANNELS (trades[,ticker,book]); sets TOOL_PID.
start_tool() {
  local tool="$1" symbols="$2" channels="$3" streams bin="$BIN"
  if [[ "$tool" == *@* ]]; then bin="${tool#*@}"; tool="${tool%%@*}"; fi
  streams="$(sed -e 's/trades/trade/; s/ticker/bestBidAsk/; s/book/depth/' <<<"$channels")"
  case "$tool" in
    cryptofeed)
      "$PY" "$DRIVER" cryptofeed --sim "127.0.0.1:$SIM_PORT" --redis "$REDIS" \
        --symbols "$symbols" --channels "$channels" --log "$WORK/cryptofeed.log" \
        >"$WORK/counts.json" 2>"$WORK/tool.log" &
      ;;
    hotpath-json)
      RUST_LOG=warn "$bin" run --config "$WORK/run.toml" --format json \
        --endpoint "ws://127.0.0.1:$SIM_PORT/json" --symbols "$symbols" --streams "$streams" \
        --redis "redis://$REDIS/0" >"$WORK/counts.json" 2>"$WORK/tool.log" &
      ;;
    hotpath-sbe)
      BINANCE_API_KEY=sim RUST_LOG=warn "$bin" run --config "$WORK/run.toml" \
        --endpoint "ws://127.0.0.1:$SIM_PORT" --symbols "$symbols" --streams "$streams" \
        --redis "redis://$REDIS/0" >"$WORK/counts.json" 2>"$WORK/tool.log" &
      ;;
    *) echo "unknown tool $tool" >&2; return 2 ;;
  esac
  TOOL_PID=$!
  PIDS+=("$TOOL_PID")
}

# One tool in one scenario: appends its row to ROWS and prints it.
measure() {
  local scenario="$1" tool="$2" rate="$3" symbols="$4" channels="$5" warmup="$6"
  bench_start_sim "$BIN" "$rate" "$symbols"
  redis-cli -p "$REDIS_PORT" flushall >/dev/null
  start_tool "$tool" "$symbols" "$channels"
  if ! "$PY" "$DRIVER" window --sim "127.0.0.1:$SIM_PORT" --pid "$TOOL_PID" \
    --redis-pid "$REDIS_PID" --warmup "$warmup" --duration "$DURATION" >"$WORK/window.json"; then
    echo "$scenario $tool: the window failed; the tool's log:" >&2
    tail -20 "$WORK/tool.log" >&2
    bench_stop "$TOOL_PID"
    bench_stop "$SIM_PID"
    return 0
  fi
  bench_stop "$TOOL_PID"
  local kind=cryptofeed
  [ "$tool" = cryptofeed ] || kind=hotpath
  "$PY" "$DRIVER" lost --sim "127.0.0.1:$SIM_PORT" --redis "$REDIS" --symbols "$symbols" \
    --tool "$kind" >"$WORK/lost.json"
  bench_stop "$SIM_PID"
  "$PY" "$DRIVER" line --scenario "$scenario" --tool "$tool" --window "$WORK/window.json" \
    --counts "$WORK/counts.json" --lost "$WORK/lost.json" | tee -a "$ROWS"
}

uptime
for rate in $RATES; do
  for tool in $PEERS; do
    measure "1 symbol, ${rate}/s" "$tool" "$rate" BTCUSDT trades,ticker,book "$WARMUP"
  done
done
if [ "$WIDE" = 1 ]; then
  WIDE_SYMBOLS="$(python3 -c 'print(",".join(f"S{i:03}USDT" for i in range(200)))')"
  for tool in $PEERS; do
    # 200 books to sync first: a longer warm-up.
    measure "200 symbols, 50/s each" "$tool" 50 "$WIDE_SYMBOLS" trades,ticker,book \
      "$((WARMUP * 4))"
  done
fi
for tool in $PEERS; do
  # Connected and subscribed, no traffic: a market with no order flow trades nothing.
  measure "idle" "$tool" 0 BTCUSDT trades "$WARMUP"
done
uptime
"$PY" "$DRIVER" table "$ROWS"
