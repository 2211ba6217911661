//! The Redis order book end to end, against the simulator and a real redis-server: the book is
//! never wrong with `stale=0` (sampled during runs with dropped diffs and lost connections,
//! each fresh sample compared with the simulator's ground truth at its update id), every
//! write to `ob:{S}` in order as Redis' `MONITOR` saw it (stale first at start, last at stop,
//! a re-synced book published only by the atomic swap, never deleted), no temporary key or
//! lock left, consistency checks that agree, and the snapshot edge: a book built from a
//! shallow snapshot is marked stale and re-synced when the market moves past it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hotpath::config::RunConfig;
use hotpath::feed::run::Summary;
use hotpath::sink::BookSummary;

use crate::feed::Sim;
use crate::servers::RedisServer;
use crate::sinks::{
    PATIENCE, book_exact, hash, redis_connection, redis_settings, run, run_config, wait_for,
};

/// Every command Redis executes, as `MONITOR` prints them, read by a thread until stopped.
struct Monitor {
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Monitor {
    fn start(port: u16) -> Monitor {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect for MONITOR");
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("a read timeout");
        stream.write_all(b"MONITOR\r\n").expect("MONITOR");
        let mut reader = BufReader::new(stream);
        let mut ok = String::new();
        reader.read_line(&mut ok).expect("MONITOR's reply");
        assert_eq!(ok.trim_end(), "+OK");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (out, done) = (lines.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut line = String::new();
            while !done.load(Ordering::Acquire) {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) => break,
                    Ok(_) => out.lock().expect("lines").push(line.trim_end().to_string()),
                    Err(_) => {} // a read timeout: look at the stop flag
                }
            }
        });
        Monitor {
            lines,
            stop,
            thread,
        }
    }

    /// Stops reading (after what Redis executed so far has arrived) and returns every line.
    fn finish(self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(300));
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("the monitor thread");
        std::mem::take(&mut *self.lines.lock().expect("lines"))
    }
}

/// A write to `ob:{S}` as MONITOR showed it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ObWrite {
    /// The stale mark (script), with its reason.
    Stale(String),
    /// The whole book by `HSET`, `stale` 0.
    Whole,
    /// The re-anchor's `RENAME ob:new:{S} ob:{S}`.
    Swap,
    /// Anything else (a `DEL` would be one: it must never happen).
    Other(String),
}

/// The quoted arguments of a MONITOR line.
fn arguments(line: &str) -> Vec<String> {
    let Some(start) = line.find("] ") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut rest = &line[start + 2..];
    while let Some(open) = rest.find('"') {
        let mut value = String::new();
        let mut chars = rest[open + 1..].char_indices();
        let mut end = rest.len();
        while let Some((at, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '"' => {
                    end = open + 1 + at + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push(value);
        rest = &rest[end.min(rest.len())..];
    }
    out
}

/// The writes to `ob:{symbol}` in the order Redis executed them (commands a script ran are
/// left out: the script's own line stands for them).
fn ob_writes(lines: &[String], symbol: &str) -> Vec<ObWrite> {
    let key = format!("ob:{{{symbol}}}");
    let temp = format!("ob:new:{{{symbol}}}");
    lines
        .iter()
        .filter(|l| !l.contains(" lua]"))
        .filter_map(|line| {
            let args = arguments(line);
            let command = args.first()?.to_ascii_uppercase();
            match command.as_str() {
                "EVAL" if args.get(3) == Some(&key) => {
                    Some(ObWrite::Stale(args.get(4).cloned().unwrap_or_default()))
                }
                "HSET" | "HMSET" if args.get(1) == Some(&key) => Some(ObWrite::Whole),
                "RENAME" if args.get(1) == Some(&temp) && args.get(2) == Some(&key) => {
                    Some(ObWrite::Swap)
                }
                "HGETALL" | "HGET" | "EXISTS" | "MONITOR" => None,
                _ if args.iter().skip(1).any(|a| *a == key) => Some(ObWrite::Other(command)),
                _ => None,
            }
        })
        .collect()
}

/// Checks the order of the writes to one symbol's book: marked stale first and last, a book
/// (re)synced from a snapshot published by a swap and never by a plain write, never deleted.
fn assert_ob_history(writes: &[ObWrite], symbol: &str) {
    let first = writes.first().expect("writes to the book");
    assert!(
        matches!(first, ObWrite::Stale(r) if r.starts_with("starting")),
        "{symbol}: the first write marks the book stale: {first:?}"
    );
    let last = writes.last().expect("writes to the book");
    assert!(
        matches!(last, ObWrite::Stale(r) if r.starts_with("stopped")),
        "{symbol}: the last write marks the book stale: {last:?}"
    );
    assert!(
        !writes.iter().any(|w| matches!(w, ObWrite::Other(_))),
        "{symbol}: nothing but stale marks, whole writes and swaps: {writes:?}"
    );
    // After a mark that drops the book (anything but a lost connection or the stop), the next
    // book written is a swap: a re-synced book is published atomically.
    let mut needs_swap = false;
    for write in writes {
        match write {
            ObWrite::Stale(reason) if !reason.starts_with("disconnected") => needs_swap = true,
            ObWrite::Whole => assert!(
                !needs_swap,
                "{symbol}: a re-synced book was written before it was swapped in: {writes:?}"
            ),
            ObWrite::Swap => needs_swap = false,
            _ => {}
        }
    }
}

/// What sampling `ob:{S}` during a run saw.
#[derive(Debug, Default)]
struct Samples {
    fresh: usize,
    stale: usize,
    reasons: Vec<String>,
}

/// Samples every symbol's `ob:{S}` until `until` holds: every sample saying `stale=0` must
/// equal the simulator's book at its update id.
fn sample(
    sim: &Sim,
    url: &str,
    symbols: &[&str],
    levels: usize,
    mut until: impl FnMut(&Samples) -> bool,
) -> Samples {
    let mut samples = Samples::default();
    let mut con = redis_connection(url);
    wait_for("the sampled condition", || {
        for symbol in symbols {
            let ob: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(format!("ob:{{{symbol}}}"))
                .query(&mut con)
                .expect("HGETALL");
            match ob.get("stale").map(String::as_str) {
                Some("0") => {
                    if let Err(e) = book_exact(sim, &ob, symbol, levels) {
                        panic!("a book said stale=0 and was wrong: {e}; {ob:?}");
                    }
                    samples.fresh += 1;
                }
                Some(_) => {
                    samples.stale += 1;
                    let reason = ob.get("stale_reason").cloned().unwrap_or_default();
                    let kind = reason.split(':').next().unwrap_or("").to_string();
                    if !samples.reasons.contains(&kind) {
                        samples.reasons.push(kind);
                    }
                }
                None => {}
            }
        }
        until(&samples)
    });
    samples
}

/// No temporary key or re-anchor lock is left in Redis.
fn assert_nothing_left(url: &str) {
    let mut con = redis_connection(url);
    for pattern in ["*:new:*", "reanchor:*"] {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut con)
            .expect("KEYS");
        assert!(keys.is_empty(), "left behind: {keys:?}");
    }
}

fn book_summary(summary: &Summary) -> BookSummary {
    summary.sinks["redis"]
        .book
        .clone()
        .expect("the Redis writer's book counters")
}

/// Diffs dropped on the wire (gaps: re-syncs), REST answering slowly (long stale windows), a
/// book left by a previous run, consistency checks every second: every fresh sample is exact,
/// and the history of writes keeps the rules.
#[test]
fn the_book_is_never_wrong_with_stale_0() {
    let sim = Sim::start(|c| {
        c.exchange.actions_per_second = 3_000.0;
        c.faults.drop_depth_pct = 2.0;
        c.faults.rest_delay_ms = 200;
    });
    let redis = RedisServer::start();
    // A previous run's book, fresh by its own account.
    redis::pipe()
        .hset_multiple(
            "ob:{BTCUSDT}",
            &[
                ("update_id", "1"),
                ("bids", "[]"),
                ("asks", "[]"),
                ("stale", "0"),
            ],
        )
        .query::<()>(&mut redis_connection(&redis.url()))
        .expect("a previous run's book");
    let monitor = Monitor::start(redis.port);
    let config = run_config(&sim, |c: &mut RunConfig| {
        let mut r = redis_settings(redis.url());
        r.consistency_check = Some(Duration::from_secs(1));
        c.redis = Some(r);
    });
    let mut at_start = None;
    let summary = run(&config, None, |_| {
        // Until the writer reaches Redis, nothing can mark the old book; its first write does
        // (MONITOR proves it was the first below), well before a snapshot (REST is slow here).
        wait_for("the start's stale mark", || {
            let ob = hash(&redis.url(), "ob:{BTCUSDT}");
            let marked = ob.get("stale").is_some_and(|s| s == "1");
            if marked {
                at_start = Some(ob);
            }
            marked
        });
        let samples = sample(&sim, &redis.url(), &["BTCUSDT", "ETHUSDT"], 20, |s| {
            s.fresh >= 300 && s.reasons.iter().any(|r| r == "depth gap")
        });
        assert!(samples.stale > 0, "{samples:?}");
    });
    let at_start = at_start.expect("sampled");
    assert_eq!(
        at_start["stale"], "1",
        "the previous run's book is stale at once: {at_start:?}"
    );
    assert!(
        at_start["stale_reason"].starts_with("starting"),
        "{at_start:?}"
    );
    let lines = monitor.finish();
    for symbol in ["BTCUSDT", "ETHUSDT"] {
        let writes = ob_writes(&lines, symbol);
        assert_ob_history(&writes, symbol);
        assert!(
            writes.iter().filter(|w| **w == ObWrite::Swap).count() >= 2,
            "{symbol}"
        );
        let ob = hash(&redis.url(), &format!("ob:{{{symbol}}}"));
        assert_eq!(ob["stale"], "1", "stale after the stop: {ob:?}");
        assert!(ob["stale_reason"].starts_with("stopped"), "{ob:?}");
        book_exact(&sim, &ob, symbol, 20).expect("the last book is exact at its id");
        for field in [
            "synced_at_us",
            "snapshot_update_id",
            "written_at_us",
            "checked_update_id",
        ] {
            assert!(ob.contains_key(field), "{field}: {ob:?}");
        }
    }
    assert_nothing_left(&redis.url());
    let book = book_summary(&summary);
    assert!(book.reanchors >= 4 && book.resyncs > 0, "{book:?}");
    assert!(book.consistency_checks > 0, "{book:?}");
    assert_eq!(book.consistency_mismatches, 0, "{book:?}");
}

/// Connections closed abruptly every few thousand frames: the book is marked stale
/// `disconnected` until the first diff after the reconnect that follows it, and is never wrong
/// with `stale=0` meanwhile.
#[test]
fn a_lost_connection_marks_the_book_stale() {
    let sim = Sim::start(|c| {
        c.exchange.actions_per_second = 3_000.0;
        c.faults.close_after_frames = 3_000;
    });
    let redis = RedisServer::start();
    let monitor = Monitor::start(redis.port);
    let config = run_config(&sim, |c: &mut RunConfig| {
        c.redis = Some(redis_settings(redis.url()));
    });
    let summary = run(&config, None, |_| {
        let lines = monitor.lines.clone();
        let samples = sample(&sim, &redis.url(), &["BTCUSDT", "ETHUSDT"], 20, |s| {
            let marked = lines
                .lock()
                .expect("lines")
                .iter()
                .any(|l| l.contains("\"disconnected: "));
            s.fresh >= 100 && marked
        });
        assert!(samples.fresh >= 100, "{samples:?}");
        // And the books come back.
        let fresh = |s: &str| hash(&redis.url(), &format!("ob:{{{s}}}"))["stale"] == "0";
        wait_for("both books fresh again", || {
            fresh("BTCUSDT") && fresh("ETHUSDT")
        });
    });
    assert!(summary.reconnects > 0, "{summary:?}");
    let lines = monitor.finish();
    for symbol in ["BTCUSDT", "ETHUSDT"] {
        let writes = ob_writes(&lines, symbol);
        assert_ob_history(&writes, symbol);
    }
    let disconnected = ob_writes(&lines, "BTCUSDT")
        .into_iter()
        .chain(ob_writes(&lines, "ETHUSDT"))
        .filter(|w| matches!(w, ObWrite::Stale(r) if r.starts_with("disconnected")))
        .count();
    assert!(disconnected > 0, "a lost connection marked a book stale");
    assert_nothing_left(&redis.url());
}

/// A snapshot of 12 levels for a book published 10 deep: as the market moves, the top 10
/// reaches past the snapshot's edge, and the book is marked stale and synced again (never
/// showing a level the snapshot could not vouch for).
#[test]
fn the_top_reaching_past_the_snapshots_edge_resyncs_the_book() {
    let sim = Sim::start(|c| c.exchange.actions_per_second = 3_000.0);
    let redis = RedisServer::start();
    let monitor = Monitor::start(redis.port);
    let config = run_config(&sim, |c: &mut RunConfig| {
        c.streams = vec![hotpath::stream::StreamKind::Depth];
        let mut r = redis_settings(redis.url());
        r.book_levels = 10;
        r.snapshot_limit = 12;
        c.redis = Some(r);
    });
    let summary = run(&config, None, |_| {
        let samples = sample(&sim, &redis.url(), &["BTCUSDT", "ETHUSDT"], 10, |s| {
            s.fresh >= 200 && s.reasons.iter().any(|r| r == "snapshot edge")
        });
        assert!(samples.stale > 0, "{samples:?}");
    });
    let lines = monitor.finish();
    for symbol in ["BTCUSDT", "ETHUSDT"] {
        assert_ob_history(&ob_writes(&lines, symbol), symbol);
    }
    let book = book_summary(&summary);
    assert!(book.resyncs > 0 && book.reanchors > 2, "{book:?}");
    assert_nothing_left(&redis.url());
}

/// Sixty symbols start at once: at 5000 levels (weight 250) their snapshots would take three
/// minutes of Binance's weight budget; the sidecar serves them shallower instead, and every
/// book is published within seconds (about 0.2 s on the 2-core test machine), each exact.
#[test]
fn sixty_symbols_are_synced_within_seconds() {
    log_from_env();
    let names: Vec<String> = (0..60).map(|i| format!("S{i:02}USDT")).collect();
    let sim = Sim::start(|c| {
        c.exchange.symbols = names.clone();
        c.exchange.actions_per_second = 1_200.0;
    });
    let redis = RedisServer::start();
    let config = run_config(&sim, |c: &mut RunConfig| {
        c.symbols = names.clone();
        c.streams = vec![hotpath::stream::StreamKind::Depth];
        c.redis = Some(redis_settings(redis.url()));
    });
    assert_eq!(
        config.redis.as_ref().map(|r| r.connections),
        Some(2),
        "the default: symbols sharded over two connections"
    );
    let mut took = Duration::ZERO;
    let summary = run(&config, None, |_| {
        let started = std::time::Instant::now();
        let mut con = redis_connection(&redis.url());
        let mut stale = Vec::new();
        while started.elapsed() < PATIENCE {
            stale = stale_books(&mut con, &names);
            if stale.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Which books were left stale, and why, tells a stalled writer (books synced in
        // memory, never published) from a starved simulator (books re-syncing after lost
        // connections: `RUST_LOG=hotpath=debug` shows the simulator's `Lagged` closes).
        assert!(stale.is_empty(), "books still stale: {stale:?}");
        took = started.elapsed();
        for s in &names {
            book_exact(&sim, &hash(&redis.url(), &format!("ob:{{{s}}}")), s, 20)
                .expect("an exact book");
        }
    });
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let book = book_summary(&summary);
    assert!(book.reanchors >= 60, "{book:?}");
}

/// The books of `names` not published fresh, each with its stale reason.
fn stale_books(con: &mut redis::Connection, names: &[String]) -> Vec<(String, String)> {
    names
        .iter()
        .filter_map(|s| {
            let (stale, reason): (Option<String>, Option<String>) = redis::cmd("HMGET")
                .arg(format!("ob:{{{s}}}"))
                .arg("stale")
                .arg("stale_reason")
                .query(con)
                .expect("HMGET");
            (stale.as_deref() != Some("0")).then(|| (s.clone(), reason.unwrap_or_default()))
        })
        .collect()
}

/// Logs to the test's output as `RUST_LOG` says, when it is set (a failing run's writer,
/// sidecar and simulator at `debug`).
fn log_from_env() {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_ansi(false)
            .try_init();
    }
}

/// A symbol unsubscribed at run time: its book is marked stale `removed` at once, while the
/// other symbol's stays fresh.
#[test]
fn a_removed_symbol_is_marked_stale() {
    let sim = Sim::start(|c| c.exchange.actions_per_second = 3_000.0);
    let redis = RedisServer::start();
    let config = run_config(&sim, |c: &mut RunConfig| {
        c.streams = vec![hotpath::stream::StreamKind::Depth];
        c.redis = Some(redis_settings(redis.url()));
    });
    let fresh = |symbol: &str| {
        hash(&redis.url(), &format!("ob:{{{symbol}}}"))
            .get("stale")
            .is_some_and(|s| s == "0")
    };
    hotpath::feed::run::run_with(
        &config,
        crate::feed::key(&config),
        hotpath::feed::run::RunOptions::default(),
        |feed, _| {
            wait_for("both books fresh", || fresh("BTCUSDT") && fresh("ETHUSDT"));
            feed.remove_symbol("ETHUSDT").expect("removed");
            wait_for("ETHUSDT marked removed", || {
                let ob = hash(&redis.url(), "ob:{ETHUSDT}");
                ob["stale"] == "1" && ob["stale_reason"].starts_with("removed")
            });
            assert!(fresh("BTCUSDT"), "the other book is untouched");
        },
    )
    .expect("the run succeeds");
    let ob = hash(&redis.url(), "ob:{ETHUSDT}");
    book_exact(&sim, &ob, "ETHUSDT", 20).expect("the removed book is still exact at its id");
}
