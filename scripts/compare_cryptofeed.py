"""The Python side of scripts/compare_cryptofeed.sh: cryptofeed against the local simulator, and
the measurements both tools get alike.

Subcommands:
  cryptofeed   run cryptofeed 2.4.1 (scripts/requirements-bench.txt) against `hotpath sim`'s
               JSON streams into Redis with its TradeStream, TickerStream and BookStream
               backends, until SIGTERM; then print {"messages", "connects"} as one JSON line.
               The patches cryptofeed needs for a local simulator are applied here, at run time
               (nothing in site-packages is edited): ws:// accepted, REST and WebSocket
               endpoints pointed at the simulator, and the raw `@trade` stream read instead of
               `@aggTrade` (trade id from `t`).
  window       wait until the simulator has a client connection, let it warm up, then sample
               utime + stime (/proc/PID/stat) of the tool and of redis-server, and the frames the
               simulator sent on its live connections, at the start and the end of the window;
               print them as one JSON line.
  lost         the trade ids a tool wrote to Redis against the simulator's ground truth
               (/admin/trades): ids missing within the range it wrote, and duplicates.
  line         one row of the report from the JSON lines above.
  table        the Markdown table of the rows, with ratios to cryptofeed.
  selftest     checks of the pure functions (run by the test suite: engine/tests/it/bench_scripts.rs).

Only `cryptofeed` and `lost` import third-party packages (cryptofeed, redis-py); the others need
the standard library alone.
"""

import argparse
import json
import os
import signal
import sys
import time
import urllib.request


def http_json(url):
    """GET url and parse its JSON body."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


# ---------------------------------------------------------------- cryptofeed, patched at run time


def patch_cryptofeed(sim):
    """Returns a Binance feed class pointed at the simulator `sim` (host:port), with the patches
    a local ws:// simulator needs applied to cryptofeed's classes in memory."""
    from decimal import Decimal

    from cryptofeed import connection
    from cryptofeed.connection import RestEndpoint, Routes, WebsocketEndpoint
    from cryptofeed.defines import BUY, SELL, TRADES
    from cryptofeed.exchanges.binance import Binance
    from cryptofeed.types import Trade
    from yapic import json as yjson

    ws_init = connection.WSAsyncConn.__init__

    def init(self, address, conn_id, *args, **kwargs):
        # WSAsyncConn refuses anything but wss://; the simulator serves plain ws://.
        plain = address.startswith("ws://")
        ws_init(self, "wss://" + address[5:] if plain else address, conn_id, *args, **kwargs)
        self.address = address

    connection.WSAsyncConn.__init__ = init

    ws_open = connection.WSAsyncConn._open

    async def counting_open(self):
        # `received` counts per connection and restarts at 0 on every open: keep the total.
        STATS["messages"] += getattr(self, "received", 0) or 0
        STATS["connects"] += 1
        if self not in CONNS:
            CONNS.append(self)
        await ws_open(self)

    connection.WSAsyncConn._open = counting_open

    class SimBinance(Binance):
        websocket_endpoints = [WebsocketEndpoint(f"ws://{sim}/json")]
        rest_endpoints = [
            RestEndpoint(
                f"http://{sim}",
                routes=Routes(
                    "/api/v3/exchangeInfo",
                    l2book="/api/v3/depth?symbol={}&limit={}",
                    authentication="/api/v3/userDataStream",
                ),
            )
        ]
        # Binance's raw trade stream (one message per trade, id `t`), not aggTrade.
        websocket_channels = {**Binance.websocket_channels, TRADES: "trade"}

        async def _trade(self, msg, timestamp):
            t = Trade(
                self.id,
                self.exchange_symbol_to_std_symbol(msg["s"]),
                SELL if msg["m"] else BUY,
                Decimal(msg["q"]),
                Decimal(msg["p"]),
                self.timestamp_normalize(msg["T"]),
                id=str(msg["t"]),
                raw=msg,
            )
            await self.callback(TRADES, t, timestamp)

        async def message_handler(self, msg, conn, timestamp):
            # Binance.message_handler's public-stream dispatch, with `trade` for `aggTrade`.
            msg = yjson.loads(msg, parse_float=Decimal)
            pair, _ = msg["stream"].split("@", 1)
            msg = msg["data"]
            if msg.get("e") == "depthUpdate":
                await self._book(msg, pair.upper(), timestamp)
            elif msg.get("e") == "trade":
                await self._trade(msg, timestamp)
            elif "A" in msg:
                await self._ticker(msg, timestamp)

    return SimBinance


# Messages of closed connections (cryptofeed reconnects), connects, and the connections made.
STATS = {"messages": 0, "connects": 0}
CONNS = []


def run_cryptofeed(args):
    """Runs the feed handler until SIGTERM/SIGINT, then prints its counts."""
    from cryptofeed import FeedHandler
    from cryptofeed.backends.redis import BookStream, TickerStream, TradeStream
    from cryptofeed.defines import L2_BOOK, TICKER, TRADES

    feed_class = patch_cryptofeed(args.sim)
    host, port = args.redis.rsplit(":", 1)
    channels = [c.strip() for c in args.channels.split(",") if c.strip()]
    by_name = {
        "trades": (TRADES, TradeStream),
        "ticker": (TICKER, TickerStream),
        "book": (L2_BOOK, BookStream),
    }
    callbacks = {by_name[c][0]: by_name[c][1](host=host, port=int(port)) for c in channels}
    symbols = [f"{s[:-4]}-{s[-4:]}" for s in args.symbols.split(",")]
    handler = FeedHandler(config={"log": {"filename": args.log, "level": "WARNING"}})
    handler.add_feed(
        feed_class(
            symbols=symbols,
            channels=[by_name[c][0] for c in channels],
            callbacks=callbacks,
            max_depth=args.max_depth,
        )
    )
    handler.run()
    live = sum((getattr(c, "received", 0) or 0) for c in CONNS)
    print(json.dumps({"messages": STATS["messages"] + live, "connects": STATS["connects"]}))


# ---------------------------------------------------------------- measurement, both tools alike


def cpu_seconds(pid):
    """utime + stime of every thread of pid, in seconds (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def connections(sim):
    """The simulator's live connections: {id: frames sent so far}."""
    return {c["id"]: c["framesSent"] for c in http_json(f"http://{sim}/admin/connections")}


class FrameCounter:
    """Frames the simulator sent on every connection over a window, polled so that a
    connection replaced in the window (a reconnect) still counts: a new one from 0, a closed
    one up to its last poll (its last POLL_S at most are missed, and `replaced` says so)."""

    POLL_S = 0.2

    def __init__(self, fetch):
        self.fetch = fetch  # () -> {connection id: frames sent so far}
        self.first = fetch()
        self.last = dict(self.first)
        self.started = set(self.first)
        self.now = self.first

    def poll(self):
        self.now = self.fetch()
        for conn, sent in self.now.items():
            self.first.setdefault(conn, 0)
            self.last[conn] = sent

    def frames(self):
        return sum(self.last[c] - self.first[c] for c in self.last)

    def replaced(self):
        """Whether the connections at the last poll differ from those at the start."""
        return set(self.now) != self.started


def run_window(args):
    deadline = time.monotonic() + args.connect_timeout
    while not connections(args.sim):
        if time.monotonic() > deadline:
            sys.exit(f"no client connected to the simulator within {args.connect_timeout} s")
        time.sleep(0.1)
    time.sleep(args.warmup)
    t0, cpu0, redis0 = time.monotonic(), cpu_seconds(args.pid), cpu_seconds(args.redis_pid)
    counter = FrameCounter(lambda: connections(args.sim))
    while time.monotonic() < t0 + args.duration:
        time.sleep(FrameCounter.POLL_S)
        counter.poll()
    t1, cpu1, redis1 = time.monotonic(), cpu_seconds(args.pid), cpu_seconds(args.redis_pid)
    counter.poll()
    replaced = counter.replaced()
    print(
        json.dumps(
            {
                "seconds": round(t1 - t0, 3),
                "cpu_s": round(cpu1 - cpu0, 3),
                "redis_cpu_s": round(redis1 - redis0, 3),
                "frames": counter.frames(),
                # A connection replaced in the window: `frames` misses up to POLL_S of it.
                "same_connections": not replaced,
            }
        )
    )


def lost_ids(truth, seen):
    """Ids of `truth` (the simulator's trades) within [min(seen), max(seen)] missing from
    `seen` (what the tool wrote, possibly with duplicates); returns (missing, duplicates)."""
    if not seen:
        return [], 0
    low, high = min(seen), max(seen)
    unique = set(seen)
    missing = [i for i in truth if low <= i <= high and i not in unique]
    return missing, len(seen) - len(unique)


def redis_trade_ids(client, key, field):
    """Every `field` of the stream `key`, as ints, read in pages."""
    ids, start = [], "-"
    while True:
        page = client.xrange(key, min=start, max="+", count=10000)
        if not page:
            return ids
        ids.extend(int(fields[field.encode()]) for _, fields in page)
        start = "(" + page[-1][0].decode()


def run_lost(args):
    import redis

    client = redis.Redis(host=args.redis.rsplit(":", 1)[0], port=int(args.redis.rsplit(":", 1)[1]))
    total = {"trades_written": 0, "trades_lost": 0, "duplicates": 0, "symbols_without_trades": 0}
    for symbol in args.symbols.split(","):
        if args.tool == "hotpath":
            key, field = f"trades:{{{symbol}}}", "trade_id"
        else:
            key, field = f"trades-BINANCE-{symbol[:-4]}-{symbol[-4:]}", "id"
        seen = redis_trade_ids(client, key, field)
        if not seen:
            total["symbols_without_trades"] += 1
            continue
        low, high = min(seen), max(seen)
        url = f"http://{args.sim}/admin/trades?symbol={symbol}&fromId={low}&limit={high - low + 1}"
        truth = [t["id"] for t in http_json(url)]
        missing, duplicates = lost_ids(truth, seen)
        total["trades_written"] += len(seen)
        total["trades_lost"] += len(missing)
        total["duplicates"] += duplicates
    print(json.dumps(total))


def row(scenario, tool, window, counts, lost):
    """One report row: a dict of the figures the README table shows."""
    frames = window["frames"]
    per = window["cpu_s"] / frames * 1e6 if frames else None
    return {
        "scenario": scenario,
        "tool": tool,
        "received": counts.get("messages", counts.get("frames")),
        "window_frames": frames,
        "cpu_s": window["cpu_s"],
        "us_per_msg": round(per, 1) if per is not None else None,
        "core_pct": round(window["cpu_s"] / window["seconds"] * 100, 1),
        "redis_us_per_msg": round(window["redis_cpu_s"] / frames * 1e6, 1) if frames else None,
        "trades_lost": lost.get("trades_lost"),
        "trades_written": lost.get("trades_written"),
        "connects": counts.get("connects"),
        "same_connections": window["same_connections"],
        # hotpath's Redis writer: times it waited (parked or lingered) and woke, whole run.
        "redis_wakeups": (counts.get("sinks") or {}).get("redis", {}).get("wakeups"),
    }


def run_line(args):
    def load(path):
        with open(path) as f:
            lines = [line for line in f.read().splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines else {}

    print(json.dumps(row(args.scenario, args.tool, load(args.window), load(args.counts), load(args.lost))))


def table(rows):
    """The Markdown table of the rows, with cryptofeed's CPU per message over each hotpath
    mode's in the same scenario, and whether issue 11's 10x target is met there."""
    out = [
        "| scenario | tool | messages received | CPU s (window) | CPU µs/msg | % of a core "
        "| redis-server µs/msg | trades lost / written | cryptofeed ÷ this | 10x target |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    base = {r["scenario"]: r["us_per_msg"] for r in rows if r["tool"] == "cryptofeed"}
    for r in rows:
        theirs, ours = base.get(r["scenario"]), r["us_per_msg"]
        ratio, target = "", ""
        if r["tool"] != "cryptofeed" and theirs and ours:
            ratio = f"{theirs / ours:.1f}x"
            target = "met" if theirs / ours >= 10 else "not met"
        lost = "" if r["trades_lost"] is None else f"{r['trades_lost']} / {r['trades_written']}"
        show = lambda v: "" if v is None else str(v)
        out.append(
            f"| {r['scenario']} | {r['tool']} | {show(r['received'])} | {r['cpu_s']} "
            f"| {show(ours)} | {r['core_pct']} | {show(r['redis_us_per_msg'])} | {lost} "
            f"| {ratio} | {target} |"
        )
    return "\n".join(out)


def run_table(args):
    with open(args.rows) as f:
        rows = [json.loads(line) for line in f if line.startswith("{")]
    print(table(rows))


def run_selftest(_args):
    missing, dups = lost_ids([5, 6, 7, 8, 9, 10], [6, 7, 7, 9])
    assert missing == [8] and dups == 1, (missing, dups)
    assert lost_ids([1, 2], []) == ([], 0)
    window = {"seconds": 10.0, "cpu_s": 0.5, "redis_cpu_s": 0.1, "frames": 1000, "same_connections": True}
    r = row("2k", "hotpath-json", window, {"frames": 1200}, {"trades_lost": 0, "trades_written": 7})
    assert r["us_per_msg"] == 500.0 and r["core_pct"] == 5.0 and r["received"] == 1200, r
    idle = row("idle", "cryptofeed", dict(window, frames=0), {"messages": 3}, {})
    assert idle["us_per_msg"] is None and idle["trades_lost"] is None, idle
    polls = iter([{1: 100}, {1: 150}, {2: 30}])
    counter = FrameCounter(lambda: next(polls))
    counter.poll()
    assert counter.frames() == 50 and not counter.replaced()
    counter.poll()  # connection 1 closed after its last poll, 2 opened in the window
    assert counter.frames() == 80 and counter.replaced(), counter.frames()
    text = table([dict(r, scenario="2k", tool="cryptofeed", us_per_msg=6000.0), r])
    assert "| 2k | hotpath-json |" in text and "| 12.0x | met |" in text, text
    with open(f"/proc/{os.getpid()}/stat"):
        assert cpu_seconds(os.getpid()) >= 0
    print("selftest ok")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("cryptofeed")
    p.add_argument("--sim", required=True, help="the simulator's host:port")
    p.add_argument("--redis", required=True, help="redis host:port")
    p.add_argument("--symbols", required=True, help="BTCUSDT,ETHUSDT (quote asset USDT)")
    p.add_argument("--channels", default="trades,ticker,book")
    p.add_argument("--max-depth", type=int, default=20, help="book levels kept (REST snapshot limit)")
    p.add_argument("--log", default=os.devnull)
    p.set_defaults(run=run_cryptofeed)
    p = sub.add_parser("window")
    p.add_argument("--sim", required=True)
    p.add_argument("--pid", required=True, type=int)
    p.add_argument("--redis-pid", required=True, type=int)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--connect-timeout", type=float, default=60.0)
    p.set_defaults(run=run_window)
    p = sub.add_parser("lost")
    p.add_argument("--sim", required=True)
    p.add_argument("--redis", required=True)
    p.add_argument("--symbols", required=True)
    p.add_argument("--tool", required=True, choices=["hotpath", "cryptofeed"])
    p.set_defaults(run=run_lost)
    p = sub.add_parser("line")
    for name in ("scenario", "tool", "window", "counts", "lost"):
        p.add_argument(f"--{name}", required=True)
    p.set_defaults(run=run_line)
    p = sub.add_parser("table")
    p.add_argument("rows", help="the JSON lines of `line`")
    p.set_defaults(run=run_table)
    sub.add_parser("selftest").set_defaults(run=run_selftest)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    main()
