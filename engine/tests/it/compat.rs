//! The old services' Redis formats (issue 13), end to end: hotpath writes the simulator's feed
//! into a real `redis-server` with `redis.keys = "plain"` (seed 000/001/004's key names) or the
//! default hash tags, and `redis.raw_json = true`; then the README's Python consumer examples
//! (`examples/python/*.py`, redis-py in the venv `ensure_venv` makes, found by
//! `HOTPATH_PYTHON`) read what it wrote: XREAD and a consumer group over `trades:`, and `ob:`,
//! `tr:` and `feat:` in one transaction. Their output is checked against the simulator's
//! ground truth: every trade once with its exact price, quantity and side, `raw_json` byte for
//! byte as Binance's `<s>@trade` event, the book equal to the exchange's at its update id, the
//! trade windows' counts and volumes, and the mid of the book's top. The README's `redis-cli`
//! lines run too, and its Python blocks must be in the example files.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use hotpath::binance::decimal::parse_decimal;
use hotpath::config::{FeedFormat, KeyLayout, RunConfig};
use hotpath::sim::encode::encode_json_each;
use hotpath::sim::exchange::{Event, Payload, StreamKey};
use hotpath::sim::market::{PRICE_EXPONENT, QTY_EXPONENT, Trade};
use hotpath::stream::StreamKind;
use sbe_runtime::Decimal;

use crate::feed::Sim;
use crate::servers::RedisServer;
use crate::sinks::{
    SYMBOLS, assert_exactly_once, book_exact, redis_connection, redis_settings, run, run_config,
    sim, wait_for, written,
};

/// The interpreter of the venv `scripts/servers.sh`'s `ensure_venv` makes. Unset or missing
/// fails the test: the examples are part of what is tested, never skipped.
fn python() -> PathBuf {
    let python = std::env::var_os("HOTPATH_PYTHON").unwrap_or_else(|| {
        panic!(
            "HOTPATH_PYTHON is not set: run `source scripts/servers.sh && ensure_venv` first \
             (scripts/test.sh does)"
        )
    });
    let python = PathBuf::from(python);
    assert!(
        python.exists(),
        "HOTPATH_PYTHON = {} does not exist: run ensure_venv",
        python.display()
    );
    python
}

/// Runs `examples/python/<script>` with `args` and returns its standard output.
fn example(script: &str, args: &[&str]) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/python")
        .join(script);
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The simulator's journal of `symbol`'s trades, by id.
fn journal(sim: &Sim, symbol: &str) -> HashMap<i64, Trade> {
    let shared = &sim.handle().shared;
    let index = shared.symbol_index(symbol).expect("a symbol");
    let exchange = hotpath::sim::server::lock(&shared.exchange);
    exchange
        .market(index)
        .trades_from(0)
        .map(|t| (t.id, *t))
        .collect()
}

/// Binance's `<s>@trade` JSON event of `t`, with event time `event_ms`.
fn binance_trade_json(symbol: &str, t: &Trade, event_ms: i64) -> String {
    format!(
        r#"{{"e":"trade","E":{event_ms},"s":"{symbol}","t":{},"p":"{}","q":"{}","T":{},"m":{},"M":true}}"#,
        t.id,
        Decimal::new(t.price, PRICE_EXPONENT),
        Decimal::new(t.qty, QTY_EXPONENT),
        t.time_us.div_euclid(1000),
        t.buyer_maker
    )
}

/// The simulator's own JSON message of trade `t` (what it sends on `<s>@trade`), its event
/// stamped at `event_us`.
fn sim_trade_json(sim: &Sim, symbol: &str, t: &Trade, event_us: i64) -> String {
    let event = Event {
        key: StreamKey {
            symbol: sim.handle().shared.symbol_index(symbol).expect("a symbol"),
            kind: StreamKind::Trade,
        },
        event_time_us: event_us,
        payload: Payload::Trades {
            transact_time_us: event_us,
            trades: vec![*t],
        },
    };
    let mut out = Vec::new();
    encode_json_each(symbol, &event, |message| out.push(message.to_string()));
    assert_eq!(out.len(), 1, "one message per trade");
    out.remove(0)
}

/// Checks a trades example's output (one JSON object of entry fields per line) against the
/// simulator: every trade exactly once, each field exact, `raw_json` (when `raw`) as Binance
/// sends it. Returns the first and last trade ids.
fn check_trades(sim: &Sim, symbol: &str, output: &str, raw: bool, what: &str) -> (i64, i64) {
    let entries: Vec<HashMap<String, String>> = output
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: {e}: {line}")))
        .collect();
    let ids: Vec<i64> = entries
        .iter()
        .map(|f| f["trade_id"].parse().expect("an id"))
        .collect();
    assert_exactly_once(sim, symbol, &ids, what);
    let truth = journal(sim, symbol);
    for (id, fields) in ids.iter().zip(&entries) {
        let t = &truth[id];
        assert_eq!(fields["exchange"], "binance");
        assert_eq!(fields["pair"], symbol);
        assert_eq!(
            parse_decimal(&fields["price"], PRICE_EXPONENT),
            Some(t.price),
            "{what} {id}"
        );
        assert_eq!(
            parse_decimal(&fields["qty"], QTY_EXPONENT),
            Some(t.qty),
            "{what} {id}"
        );
        let side = if t.buyer_maker { "sell" } else { "buy" };
        assert_eq!(fields["side"], side, "{what} {id}");
        match (raw, fields.get("raw_json")) {
            (true, Some(json)) => {
                let event: serde_json::Value = serde_json::from_str(json).expect("JSON");
                let event_ms = event["E"].as_i64().expect("an event time");
                // The simulator stamps a trades event with its trades' time: `E` is `T`.
                assert_eq!(event_ms, t.time_us.div_euclid(1000), "{json}");
                assert_eq!(
                    json,
                    &binance_trade_json(symbol, t, event_ms),
                    "{what} {id}"
                );
                // Byte for byte what the simulator sends for this trade on `<s>@trade`.
                assert_eq!(
                    json,
                    &sim_trade_json(sim, symbol, t, t.time_us),
                    "{what} {id}"
                );
            }
            (false, None) => {}
            (_, other) => panic!("{what} {id}: raw_json {other:?} with redis.raw_json = {raw}"),
        }
    }
    (ids[0], *ids.last().expect("trades"))
}

/// Checks `state.py`'s output against the simulator: the book at its update id, the windows'
/// count, volume and last price over the journal's trades `ids` (those hotpath took: from its
/// first to its last), and the mid of the book's top at the features' update id (the run has
/// no bestBidAsk stream). `format` says the times hotpath saw: JSON's are whole milliseconds.
fn check_state(sim: &Sim, symbol: &str, output: &str, ids: (i64, i64), format: FeedFormat) {
    let state: serde_json::Value = serde_json::from_str(output).expect("one JSON object");
    let hash = |name: &str| -> HashMap<String, String> {
        serde_json::from_value(state[name].clone()).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let ob = hash("ob");
    book_exact(sim, &ob, symbol, 20).unwrap_or_else(|e| panic!("state.py's ob: {e}"));
    let bids: Vec<(String, String)> = serde_json::from_value(state["bids"].clone()).expect("bids");
    assert_eq!(bids.len(), 20, "{symbol}: the parsed side");
    let mut trades: Vec<Trade> = journal(sim, symbol)
        .into_values()
        .filter(|t| (ids.0..=ids.1).contains(&t.id))
        .collect();
    trades.sort_by_key(|t| t.id);
    let seen = |t: &Trade| match format {
        FeedFormat::Sbe | FeedFormat::Dual => t.time_us,
        FeedFormat::Json => t.time_us.div_euclid(1000) * 1000,
    };
    for (name, span_us) in [("tr_1s", 1_000_000), ("tr_5s", 5_000_000)] {
        let tr = hash(name);
        assert_eq!(tr["trades_complete"], "1", "{symbol} {name}: {tr:?}");
        let as_of: i64 = tr["as_of_us"].parse().expect("as_of_us");
        let window: Vec<&Trade> = trades
            .iter()
            .filter(|t| seen(t) > as_of - span_us && seen(t) <= as_of)
            .collect();
        assert_eq!(
            tr["count"],
            window.len().to_string(),
            "{symbol} {name}: {tr:?}"
        );
        let volume: i64 = window.iter().map(|t| t.qty).sum();
        assert_eq!(
            parse_decimal(&tr["volume"], QTY_EXPONENT),
            Some(volume),
            "{name}"
        );
        if let Some(last) = window.last() {
            assert_eq!(
                parse_decimal(&tr["last"], PRICE_EXPONENT),
                Some(last.price),
                "{name}"
            );
        }
    }
    let feat = hash("feat");
    let update_id: i64 = feat["book_update_id"]
        .parse()
        .unwrap_or_else(|_| panic!("{symbol}: feat without a book update id: {feat:?}"));
    let book = {
        let shared = &sim.handle().shared;
        let index = shared.symbol_index(symbol).expect("a symbol");
        let exchange = hotpath::sim::server::lock(&shared.exchange);
        exchange
            .market(index)
            .book_at(update_id)
            .expect("in the journal")
    };
    let (bid, ask) = (book.bids[0].0, book.asks[0].0);
    // The mid has one decimal more than the price: (bid + ask) / 2 at 10^-9 is (bid + ask) x 5.
    assert_eq!(
        parse_decimal(&feat["mid"], PRICE_EXPONENT - 1),
        Some((bid + ask) * 5),
        "{symbol}: {feat:?} against bid {bid} ask {ask}"
    );
}

/// Runs the simulator's trades and depth into `redis` in `layout` with `raw_json` on, in
/// `format`, until 1500 trades are written, and returns how many books were swapped in.
fn write_from_sim(sim: &Sim, redis: &RedisServer, layout: KeyLayout, format: FeedFormat) -> u64 {
    let config: RunConfig = run_config(sim, |c| {
        c.streams = vec![StreamKind::Trade, StreamKind::Depth];
        if format == FeedFormat::Json {
            c.endpoint = format!("{}/json", sim.endpoint());
            c.format = FeedFormat::Json;
        }
        let mut r = redis_settings(redis.url());
        r.keys = layout;
        r.raw_json = true;
        c.redis = Some(r);
    });
    let summary = run(&config, None, |sinks| {
        wait_for("trades written", || written(sinks, "redis") >= 1500);
    });
    assert_eq!(summary.gaps.count, 0, "{summary:?}");
    assert!(summary.sinks["redis"].flushed, "{summary:?}");
    summary.sinks["redis"]
        .book
        .clone()
        .expect("book counters")
        .reanchors
}

fn keys(url: &str, pattern: &str) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(pattern)
        .query(&mut redis_connection(url))
        .expect("KEYS")
}

#[test]
fn plain_keys_serve_the_old_services_consumers_unchanged() {
    let sim = sim();
    let redis = RedisServer::start();
    let reanchors = write_from_sim(&sim, &redis, KeyLayout::Plain, FeedFormat::Sbe);
    assert!(
        reanchors >= 2,
        "books swapped in under plain keys: {reanchors}"
    );
    let url = redis.url();
    let mut all = keys(&url, "*");
    all.sort();
    assert!(!all.iter().any(|k| k.contains('{')), "no hash tag: {all:?}");
    assert!(keys(&url, "*new*").is_empty(), "no temporary key left");
    assert!(keys(&url, "reanchor:*").is_empty(), "no lock left");
    for symbol in SYMBOLS {
        for key in [
            format!("trades:{symbol}"),
            format!("ob:{symbol}"),
            format!("tr:{symbol}:1s"),
            format!("tr:{symbol}:5s"),
            format!("feat:{symbol}"),
        ] {
            assert!(all.contains(&key), "{key} in {all:?}");
        }
        let read = example("trades_xread.py", &[&url, symbol]);
        let ids = check_trades(&sim, symbol, &read, true, "trades_xread.py");
        let group = example("trades_group.py", &[&url, symbol]);
        assert_eq!(group, read, "the consumer group reads the same entries");
        let pending: Vec<redis::Value> = redis::cmd("XPENDING")
            .arg(format!("trades:{symbol}"))
            .arg("signals")
            .query(&mut redis_connection(&url))
            .expect("XPENDING");
        assert_eq!(
            pending.first(),
            Some(&redis::Value::Int(0)),
            "all acknowledged"
        );
        assert!(
            example("trades_group.py", &[&url, symbol]).is_empty(),
            "the group's position is kept: nothing is read twice"
        );
        let state = example("state.py", &[&url, symbol]);
        check_state(&sim, symbol, &state, ids, FeedFormat::Sbe);
        if symbol == "BTCUSDT" {
            check_readme_redis_cli(&url, KeyLayout::Plain, ids, &state);
        }
    }
}

#[test]
fn hash_tagged_keys_from_json_streams_give_the_same_consumers_the_same_truth() {
    let sim = sim();
    let redis = RedisServer::start();
    write_from_sim(&sim, &redis, KeyLayout::HashTag, FeedFormat::Json);
    let url = redis.url();
    for symbol in SYMBOLS {
        assert!(keys(&url, &format!("trades:{symbol}")).is_empty());
        let read = example("trades_xread.py", &[&url, symbol, "hash-tag"]);
        // In JSON mode raw_json is the payload as received: the simulator's event, exactly.
        let ids = check_trades(&sim, symbol, &read, true, "trades_xread.py (JSON)");
        let group = example("trades_group.py", &[&url, symbol, "hash-tag"]);
        assert_eq!(group, read);
        let state = example("state.py", &[&url, symbol, "hash-tag"]);
        check_state(&sim, symbol, &state, ids, FeedFormat::Json);
        if symbol == "BTCUSDT" {
            check_readme_redis_cli(&url, KeyLayout::HashTag, ids, &state);
        }
    }
}

/// The README's Python consumer examples are the files this test module runs: every ```python
/// block of its "old services' formats" section appears, line for line, in one of
/// `examples/python/*.py`.
#[test]
fn the_readme_python_examples_are_the_tested_files() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let section = readme_section();
    let files: Vec<String> = ["trades_xread.py", "trades_group.py", "state.py"]
        .iter()
        .map(|f| std::fs::read_to_string(root.join("examples/python").join(f)).expect("an example"))
        .collect();
    let blocks = code_blocks(&section, "python");
    assert_eq!(blocks.len(), 3, "three Python examples in the README");
    for block in blocks {
        assert!(
            files.iter().any(|file| file.contains(block)),
            "a README Python block is in no examples/python file:\n{block}"
        );
    }
}

/// The README's section on the old services' formats.
fn readme_section() -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let start = readme
        .find("#### The old services' formats")
        .expect("the README section");
    let rest = &readme[start + 4..];
    let end = ["\n## ", "\n### ", "\n#### "]
        .iter()
        .filter_map(|heading| rest.find(heading))
        .min()
        .map_or(readme.len(), |at| start + 4 + at);
    readme[start..end].to_string()
}

/// The bodies of the ```<language> blocks of `text`.
fn code_blocks<'t>(text: &'t str, language: &str) -> Vec<&'t str> {
    text.split(&format!("```{language}\n"))
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap_or_default())
        .collect()
}

/// `redis-cli` beside `HOTPATH_REDIS_SERVER` (redis-server's package brings it), else PATH's.
fn redis_cli() -> PathBuf {
    std::env::var_os("HOTPATH_REDIS_SERVER")
        .map(|server| PathBuf::from(server).with_file_name("redis-cli"))
        .filter(|cli| cli.exists())
        .unwrap_or_else(|| PathBuf::from("redis-cli"))
}

/// Runs each `redis-cli` line of the README's bash block against `url` (the key names turned
/// hash-tagged for `KeyLayout::HashTag`; quotes and comments taken off as a shell would) and
/// returns each line's output.
fn readme_redis_cli(url: &str, layout: KeyLayout) -> Vec<String> {
    let section = readme_section();
    let blocks = code_blocks(&section, "bash");
    assert_eq!(blocks.len(), 1, "one redis-cli block");
    let mut outputs = Vec::new();
    for line in blocks[0].lines().filter(|l| !l.trim().is_empty()) {
        let command = line.split(" #").next().unwrap_or_default();
        let mut words = command.split_whitespace();
        assert_eq!(words.next(), Some("redis-cli"), "{line}");
        let args: Vec<String> = words
            .map(|w| w.trim_matches('\''))
            .map(|w| match layout {
                KeyLayout::Plain => w.to_string(),
                KeyLayout::HashTag if w.contains(':') => w.replace("BTCUSDT", "{BTCUSDT}"),
                KeyLayout::HashTag => w.to_string(),
            })
            .collect();
        let out = Command::new(redis_cli())
            .arg("-u")
            .arg(url)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("redis-cli: {e}"));
        assert!(out.status.success(), "{line}: {out:?}");
        outputs.push(String::from_utf8(out.stdout).expect("UTF-8"));
    }
    outputs
}

/// The `trade_id` values in a `redis-cli` stream reply (one element per line).
fn cli_trade_ids(output: &str) -> Vec<i64> {
    let lines: Vec<&str> = output.lines().collect();
    lines
        .windows(2)
        .filter(|pair| pair[0] == "trade_id")
        .map(|pair| pair[1].parse().expect("an id"))
        .collect()
}

/// The README's redis-cli lines, run against what hotpath wrote of BTCUSDT (trades `ids`,
/// checked before against the simulator), answer with those trades, and the book and
/// features `state.py` read (checked against the simulator too).
fn check_readme_redis_cli(url: &str, layout: KeyLayout, ids: (i64, i64), state: &str) {
    let out = readme_redis_cli(url, layout);
    assert_eq!(out.len(), 7, "{out:?}");
    let last: Vec<i64> = (ids.1 - 9..=ids.1).rev().collect();
    let first: Vec<i64> = (ids.0..ids.0 + 10).collect();
    assert_eq!(
        cli_trade_ids(&out[0]),
        last,
        "XREVRANGE: the last 10, newest first"
    );
    assert_eq!(cli_trade_ids(&out[1]), first, "XREAD from 0: the first 10");
    assert_eq!(out[2].trim(), "OK", "XGROUP CREATE");
    assert_eq!(cli_trade_ids(&out[3]), first, "XREADGROUP: the first 10");
    let state: serde_json::Value = serde_json::from_str(state).expect("state.py's JSON");
    assert_eq!(
        Some(out[4].trim()),
        state["ob"]["bids"].as_str(),
        "HGET ob bids"
    );
    let tr: Vec<&str> = out[5].lines().collect();
    let count = tr.windows(2).find(|p| p[0] == "count").map(|p| p[1]);
    assert_eq!(count, state["tr_1s"]["count"].as_str(), "HGETALL tr 1s");
    let feat: Vec<&str> = out[6].lines().collect();
    let want: Vec<&str> = ["mid", "spread_bps", "microprice", "imbalance"]
        .iter()
        .map(|f| state["feat"][f].as_str().unwrap_or_default())
        .collect();
    assert_eq!(feat, want, "HMGET feat");
}
