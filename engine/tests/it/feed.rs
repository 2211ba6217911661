//! The feed (reader threads, connections, sequence checks, rings) against the simulator over
//! real WebSocket traffic: exact gap reports, make-before-break through compressed lifetimes
//! and `serverShutdown` with nothing missing, survival of disconnects, stalls, duplicates and
//! corrupt frames, the TLS path, and core pinning.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hotpath::config::RunConfig;
use hotpath::feed::event::{Cause, FeedEvent, Notice};
use hotpath::feed::run;
use hotpath::feed::stats::ReaderStats;
use hotpath::sbe::{self, spot_stream::Message as Sbe};
use hotpath::sim::config::SimConfig;
use hotpath::sim::server::{self, SimHandle};
use hotpath::stream::StreamKind;

/// Every wait is bounded: a hang fails loudly.
const PATIENCE: Duration = Duration::from_secs(30);

/// A simulator on its own runtime thread, so the test thread can block on the feed (shared
/// with the sink tests).
pub struct Sim {
    handle: Option<SimHandle>,
    runtime: tokio::runtime::Runtime,
}

impl Sim {
    pub fn start(tweak: impl FnOnce(&mut SimConfig)) -> Sim {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let mut config = SimConfig::default();
        config.exchange.symbols = vec!["BTCUSDT".into(), "ETHUSDT".into()];
        config.exchange.seed = 7;
        config.exchange.actions_per_second = 2_000.0;
        tweak(&mut config);
        let handle = runtime
            .block_on(server::start(config))
            .expect("the simulator starts");
        Sim {
            handle: Some(handle),
            runtime,
        }
    }

    pub fn handle(&self) -> &SimHandle {
        self.handle.as_ref().expect("running")
    }

    pub fn endpoint(&self) -> String {
        format!("ws://{}", self.handle().addr)
    }

    /// Published trades of `symbol` with ids in `from..=to`, from the simulator's journal.
    pub fn trades(&self, symbol: &str, from: i64, to: i64) -> Vec<i64> {
        let index = self.handle().shared.symbol_index(symbol).expect("a symbol");
        let exchange = hotpath::sim::server::lock(&self.handle().shared.exchange);
        exchange
            .market(index)
            .trades_from(from)
            .map(|t| t.id)
            .take_while(|&id| id <= to)
            .collect()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
            let _guard = self.runtime.enter();
            drop(handle);
        }
    }
}

pub fn config(endpoint: String, tweak: impl FnOnce(&mut RunConfig)) -> RunConfig {
    let mut config = RunConfig {
        endpoint,
        symbols: vec!["BTCUSDT".into(), "ETHUSDT".into()],
        ..RunConfig::default()
    };
    config.readers.cores = vec![0];
    config.readers.silent_timeout = Duration::from_secs(5);
    config.readers.backoff_initial = Duration::from_millis(20);
    config.readers.backoff_max = Duration::from_millis(200);
    tweak(&mut config);
    config.validate_with_cpus(2).expect("a valid test config");
    config
}

pub fn key(config: &RunConfig) -> hotpath::config::ApiKey {
    config
        .api_key_from(|_| Some("feed-test-key".to_string()))
        .expect("a key")
}

/// Waits until `condition` on the readers' counters holds (bounded).
fn until(stats: &[Arc<ReaderStats>], condition: impl Fn(&[Arc<ReaderStats>]) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition(stats) {
        assert!(
            Instant::now() < deadline,
            "the feed did not reach the expected state in time"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn trade_events(stats: &[Arc<ReaderStats>]) -> u64 {
    stats.iter().map(|s| s.events_of(StreamKind::Trade)).sum()
}

/// Runs the feed with a collecting consumer until `condition`, then returns every event and
/// notice, in ring order.
fn collect(
    config: &RunConfig,
    condition: impl Fn(&[Arc<ReaderStats>]) -> bool,
) -> (Vec<FeedEvent>, Vec<Notice>, Vec<Arc<ReaderStats>>) {
    let (feed, mut rings) = run::start(config, key(config), 1).expect("the feed starts");
    let stats = feed.stats.clone();
    let mut events = Vec::new();
    let mut notices = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    let drain = |rings: &mut run::Rings, events: &mut Vec<FeedEvent>, notices: &mut Vec<Notice>| {
        for ring in rings.events[0].iter_mut() {
            while let Ok(e) = ring.pop() {
                events.push(e);
            }
        }
        for ring in rings.notices.iter_mut() {
            while let Ok(n) = ring.pop() {
                notices.push(n);
            }
        }
    };
    while !condition(&stats) {
        assert!(
            Instant::now() < deadline,
            "the feed did not reach the expected state in time"
        );
        drain(&mut rings, &mut events, &mut notices);
        std::thread::sleep(Duration::from_millis(2));
    }
    let _reports = feed.stop();
    drain(&mut rings, &mut events, &mut notices);
    (events, notices, stats)
}

/// Trade ids of accepted trade events of `symbol` (index), in order.
fn trade_ids(events: &[FeedEvent], symbol: u16) -> Vec<i64> {
    let mut ids = Vec::new();
    for e in events
        .iter()
        .filter(|e| e.kind == StreamKind::Trade && e.symbol == symbol)
    {
        let Ok(Sbe::TradesStreamEvent(m)) = sbe::decode(&e.frame) else {
            panic!("a trades frame")
        };
        ids.extend(m.trades().map(|t| t.id()));
    }
    ids
}

#[test]
fn every_trade_arrives_at_most_once_and_every_missing_one_is_reported_exactly() {
    let sim = Sim::start(|c| c.faults.drop_trades_pct = 15.0);
    let config = config(sim.endpoint(), |c| c.streams = vec![StreamKind::Trade]);
    let (events, notices, _) = collect(&config, |s| trade_events(s) >= 400);
    for symbol in 0..2u16 {
        let received = trade_ids(&events, symbol);
        let unique: BTreeSet<i64> = received.iter().copied().collect();
        assert_eq!(unique.len(), received.len(), "no trade twice");
        let (first, last) = (received[0], *received.last().expect("trades"));
        let mut reported = BTreeSet::new();
        for n in notices
            .iter()
            .filter(|n| n.gap.symbol == symbol && n.cause == Cause::Wire)
        {
            assert_eq!(n.gap.kind, StreamKind::Trade);
            reported.extend(n.gap.last_good + 1..n.gap.first_seen);
        }
        assert!(
            !reported.is_empty(),
            "15% of trade frames were dropped: gaps are reported"
        );
        let published = sim.trades(config.symbols[symbol as usize].as_str(), first, last);
        for id in published {
            assert!(
                unique.contains(&id) != reported.contains(&id),
                "trade {id}: received xor reported missing"
            );
        }
    }
}

/// Through lifetimes compressed to a second and a half, connections are replaced
/// make-before-break: not one trade or depth update is missing.
#[test]
fn make_before_break_through_compressed_lifetimes_loses_nothing() {
    let sim = Sim::start(|c| {
        c.websocket.max_lifetime_ms = 1500;
        c.websocket.shutdown_notice_ms = 100;
    });
    let config = config(sim.endpoint(), |c| {
        c.readers.lifetime = Duration::from_millis(1500);
        c.readers.replace_before = Duration::from_millis(600);
        c.readers.overlap_max = Duration::from_millis(300);
        c.streams = vec![StreamKind::Trade, StreamKind::Depth];
    });
    let (events, notices, stats) = collect(&config, |s| {
        s.iter().map(|r| r.switches.get()).sum::<u64>() >= 3
    });
    assert!(notices.is_empty(), "no gap at all: {notices:?}");
    assert!(
        stats.iter().map(|s| s.duplicates.get()).sum::<u64>() > 0,
        "the overlaps carried duplicates, dropped"
    );
    for symbol in 0..2u16 {
        let ids = trade_ids(&events, symbol);
        assert!(
            ids.windows(2).all(|w| w[1] == w[0] + 1),
            "consecutive trades for symbol {symbol}"
        );
        let published = sim.trades(
            &config.symbols[symbol as usize],
            ids[0],
            *ids.last().expect("trades"),
        );
        assert_eq!(published, ids);
        let diffs: Vec<(i64, i64)> = events
            .iter()
            .filter(|e| e.kind == StreamKind::Depth && e.symbol == symbol)
            .map(|e| (e.first_id, e.last_id))
            .collect();
        assert!(
            diffs.windows(2).all(|w| w[1].0 == w[0].1 + 1),
            "contiguous diffs for symbol {symbol}"
        );
    }
}

/// The same through `serverShutdown` alone (the feed's own lifetime is Binance's 24 h).
#[test]
fn server_shutdown_triggers_a_replacement_that_loses_nothing() {
    let sim = Sim::start(|c| {
        c.websocket.max_lifetime_ms = 1200;
        c.websocket.shutdown_notice_ms = 700;
    });
    let config = config(sim.endpoint(), |c| {
        c.readers.overlap_max = Duration::from_millis(300);
        c.streams = vec![StreamKind::Trade, StreamKind::Depth];
    });
    let (events, notices, _) = collect(&config, |s| {
        s.iter().map(|r| r.switches.get()).sum::<u64>() >= 2
    });
    assert!(notices.is_empty(), "no gap at all: {notices:?}");
    for symbol in 0..2u16 {
        let ids = trade_ids(&events, symbol);
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1));
    }
}

#[test]
fn disconnects_stalls_duplicates_and_corrupt_frames_are_survived_and_counted() {
    let sim = Sim::start(|c| {
        c.faults.duplicate_pct = 10.0;
        c.faults.corrupt_pct = 5.0;
        c.faults.close_after_frames = 400;
    });
    let settings = config(sim.endpoint(), |c| {
        c.readers.silent_timeout = Duration::from_millis(400)
    });
    let (events, _, stats) = collect(&settings, |s| {
        let sum = |f: &dyn Fn(&ReaderStats) -> u64| s.iter().map(|r| f(r)).sum::<u64>();
        sum(&|r| r.reconnects.get()) >= 2
            && sum(&|r| {
                r.decode_errors.get() + r.unknown_templates.get() + r.schema_mismatches.get()
            }) > 0
            && sum(&|r| r.duplicates.get()) > 0
    });
    let after_reconnects = events
        .iter()
        .filter(|e| e.kind == StreamKind::Trade)
        .count();
    assert!(after_reconnects > 0);
    // A stalled connection is detected as silent and replaced.
    drop(stats);
    let stalled = Sim::start(|c| {
        c.faults.stall_after_frames = 50;
        c.faults.stall_ms = 3000;
    });
    let config = config(stalled.endpoint(), |c| {
        c.readers.silent_timeout = Duration::from_millis(300)
    });
    let (_, _, stats) = collect(&config, |s| {
        s.iter().map(|r| r.reconnects.get()).sum::<u64>() >= 1 && trade_events(s) > 100
    });
    assert!(stats[0].connects.get() >= 2);
}

#[test]
fn the_tls_path_works_with_the_simulator_certificate_trusted() {
    let dir = std::env::temp_dir().join(format!("hotpath-feed-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cert: PathBuf = dir.join("sim.pem");
    let path = cert.clone();
    let sim = Sim::start(move |c| {
        c.tls = true;
        c.cert_out = Some(path);
    });
    let endpoint = format!("wss://localhost:{}", sim.handle().addr.port());
    let config = config(endpoint, |c| c.trust_cert = Some(cert.clone()));
    let summary = run::run(&config, key(&config), |s, _| {
        until(&s.stats, |s| trade_events(s) >= 20)
    })
    .expect("runs");
    std::fs::remove_dir_all(&dir).expect("cleaned up");
    assert!(summary.events["trade"] >= 20);
    assert_eq!(summary.gaps.count, 0);
}

#[test]
fn readers_run_on_the_configured_cores() {
    let sim = Sim::start(|_| {});
    let cores = core_affinity::get_core_ids().map_or(1, |c| c.len());
    let core = cores - 1;
    let config = config(sim.endpoint(), |c| c.readers.cores = vec![core]);
    let summary = run::run(&config, key(&config), |s, _| {
        until(&s.stats, |s| trade_events(s) >= 10)
    })
    .expect("runs");
    assert_eq!(summary.readers.len(), 1);
    assert!(summary.readers[0].pinned);
    assert_eq!(summary.readers[0].cpus_allowed, core.to_string());
    assert!(summary.latency_ns["wire_to_queue"].count > 0);
}

#[test]
fn a_missing_api_key_is_a_clear_error_and_never_printed() {
    let config = RunConfig::default();
    let error = config.api_key_from(|_| None).expect_err("no key");
    assert!(error.to_string().contains("BINANCE_API_KEY"), "{error}");
    let key = config
        .api_key_from(|_| Some("secret-ed25519-key".into()))
        .expect("a key");
    assert!(!format!("{key:?} {config:?}").contains("secret-ed25519-key"));
}

/// Symbols added and removed at run time go through SUBSCRIBE/UNSUBSCRIBE on the live
/// connection: no reconnect, and the simulator sees the connection's streams change.
#[test]
fn symbols_are_added_and_removed_on_the_live_connection() {
    let sim = Sim::start(|c| {
        c.exchange.symbols = vec!["BTCUSDT".into(), "ETHUSDT".into(), "BNBUSDT".into()]
    });
    let config = config(sim.endpoint(), |c| {
        c.symbols = vec!["BTCUSDT".into()];
        c.streams = vec![StreamKind::Trade, StreamKind::BestBidAsk];
    });
    let addr = sim.handle().addr;
    let streams_seen = move || connection_streams(addr);
    let events_of = |stats: &[Arc<ReaderStats>]| {
        trade_events(stats)
            + stats
                .iter()
                .map(|s| s.events_of(StreamKind::BestBidAsk))
                .sum::<u64>()
    };
    let mut final_streams = Vec::new();
    let summary = run::run(&config, key(&config), |feed, _| {
        until(&feed.stats, |s| events_of(s) >= 20);
        feed.add_symbol("ETHUSDT").expect("added");
        feed.add_symbol("BNBUSDT").expect("added");
        assert!(feed.add_symbol("ETHUSDT").is_err(), "already subscribed");
        until(&feed.stats, |_| streams_seen().len() == 6);
        feed.remove_symbol("BTCUSDT").expect("removed");
        until(&feed.stats, |_| streams_seen().len() == 4);
        final_streams = streams_seen();
        let before = events_of(&feed.stats);
        until(&feed.stats, |s| events_of(s) >= before + 50);
    })
    .expect("runs");
    final_streams.sort();
    assert_eq!(
        final_streams,
        [
            "bnbusdt@bestBidAsk",
            "bnbusdt@trade",
            "ethusdt@bestBidAsk",
            "ethusdt@trade"
        ]
    );
    assert_eq!(summary.reconnects, 0, "changed on the live connection");
    // Frames of a removed symbol still in flight before the UNSUBSCRIBE took effect are
    // counted as unknown symbols and dropped; added symbols' frames are all recognised.
    assert!(summary.events["trade"] > 0 && summary.events["bestBidAsk"] > 0);
    assert_eq!(summary.gaps.count, 0);
}

/// In JSON mode with klines, a symbol added or removed at run time gets or loses its kline
/// streams with its trade stream (SUBSCRIBE/UNSUBSCRIBE on the live connection), and closed
/// stream klines arrive.
#[test]
fn json_kline_streams_follow_the_symbols_added_and_removed() {
    let sim = Sim::start(|c| {
        c.exchange.symbols = vec!["BTCUSDT".into(), "ETHUSDT".into()];
    });
    let config = config(sim.endpoint(), |c| {
        c.endpoint = format!("{}/json", sim.endpoint());
        c.format = hotpath::config::FeedFormat::Json;
        c.symbols = vec!["BTCUSDT".into()];
        c.streams = vec![StreamKind::Trade];
        c.klines.intervals = vec![hotpath::kline::Interval::of("1s").expect("1s")];
    });
    let addr = sim.handle().addr;
    let streams_seen = move || {
        let mut streams = connection_streams(addr);
        streams.sort();
        streams
    };
    let klines =
        |stats: &[Arc<ReaderStats>]| stats.iter().map(|s| s.stream_klines.get()).sum::<u64>();
    let summary = run::run(
        &config,
        config.api_key().expect("none needed"),
        |feed, _| {
            until(&feed.stats, |_| {
                streams_seen() == ["btcusdt@kline_1s", "btcusdt@trade"]
            });
            feed.add_symbol("ETHUSDT").expect("added");
            until(&feed.stats, |_| streams_seen().len() == 4);
            feed.remove_symbol("BTCUSDT").expect("removed");
            until(&feed.stats, |_| {
                streams_seen() == ["ethusdt@kline_1s", "ethusdt@trade"]
            });
            let before = klines(&feed.stats);
            until(&feed.stats, |s| klines(s) >= before + 2);
        },
    )
    .expect("runs");
    assert_eq!(summary.reconnects, 0, "changed on the live connection");
    assert_eq!(summary.json_malformed, 0, "{summary:?}");
    assert!(summary.stream_klines >= 2, "{summary:?}");
}

/// The simulator's pings are answered with pongs: the simulator counts them on the one
/// connection, which is never closed for a missing pong. (Pings every 250 ms: pongs count
/// against the 5 incoming messages per second. The pong deadline only bounds the wait: a
/// deadline near the ping interval would also measure how promptly a loaded machine schedules
/// both sides.)
#[test]
fn pings_are_answered() {
    let sim = Sim::start(|c| {
        c.websocket.ping_interval_ms = 250;
        c.websocket.pong_timeout_ms = 30_000;
    });
    let config = config(sim.endpoint(), |c| c.streams = vec![StreamKind::Depth]);
    let addr = sim.handle().addr;
    let summary = run::run(&config, key(&config), |_, _| {
        let deadline = Instant::now() + PATIENCE;
        while connection_pongs(addr) < 4 {
            assert!(
                Instant::now() < deadline,
                "no pongs: {:?}",
                connections(addr)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .expect("runs");
    assert_eq!(summary.reconnects, 0, "never closed for a missing pong");
    assert_eq!(summary.connects, 1);
}

/// The simulator's live connections, as `/admin/connections` lists them.
fn connections(addr: std::net::SocketAddr) -> serde_json::Value {
    let (status, body) = sim_get(addr, "/admin/connections");
    assert_eq!(status, 200);
    serde_json::from_str(&body).expect("JSON")
}

/// The frames the simulator sent on its live connections.
pub(crate) fn frames_sent(addr: std::net::SocketAddr) -> u64 {
    let list = connections(addr);
    let list = list.as_array().map(Vec::as_slice).unwrap_or_default();
    list.iter().filter_map(|c| c["framesSent"].as_u64()).sum()
}

/// The pongs the simulator received on its first live connection.
fn connection_pongs(addr: std::net::SocketAddr) -> u64 {
    connections(addr)[0]["pongsReceived"].as_u64().unwrap_or(0)
}

/// The streams of the simulator's first live connection, as `/admin/connections` lists them.
fn connection_streams(addr: std::net::SocketAddr) -> Vec<String> {
    connections(addr)[0]["streams"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A GET against the simulator's admin API, in-process.
pub(crate) fn sim_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut tcp = std::net::TcpStream::connect(addr).expect("connects");
    use std::io::{Read, Write};
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("sent");
    let mut text = String::new();
    tcp.read_to_string(&mut text).expect("read");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status");
    (status, body.to_string())
}

/// Regression (review): a second subscription change within the pacing interval waited for an
/// unrelated wake-up. On a quiet market, both changes land within a second, with no reconnect.
#[test]
fn subscription_changes_are_paced_by_a_timer_even_on_a_quiet_market() {
    let sim = Sim::start(|c| c.exchange.actions_per_second = 0.0);
    let addr = sim.handle().addr;
    let config = config(sim.endpoint(), |c| {
        c.symbols = vec!["BTCUSDT".into()];
        c.streams = vec![StreamKind::Trade];
    });
    let streams_seen = move || connection_streams(addr);
    let summary = run::run(&config, key(&config), |feed, _| {
        until(&feed.stats, |_| streams_seen() == ["btcusdt@trade"]);
        let asked = Instant::now();
        feed.add_symbol("ETHUSDT").expect("added");
        feed.remove_symbol("BTCUSDT").expect("removed");
        until(&feed.stats, |_| streams_seen() == ["ethusdt@trade"]);
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "took {:?}",
            asked.elapsed()
        );
    })
    .expect("runs");
    assert_eq!(summary.reconnects, 0);
}

/// Regression (review): a server that accepts and drops connections without data was
/// reconnected to at once, burning Binance's 300-attempts budget in about a second.
#[test]
fn a_server_that_drops_every_connection_is_retried_with_backoff() {
    let sim = Sim::start(|c| {
        c.exchange.actions_per_second = 0.0;
        c.websocket.max_lifetime_ms = 30;
        c.websocket.shutdown_notice_ms = 10;
    });
    let config = config(sim.endpoint(), |c| {
        c.streams = vec![StreamKind::Trade];
        c.readers.backoff_initial = Duration::from_millis(50);
        c.readers.backoff_max = Duration::from_millis(400);
    });
    let started = Instant::now();
    let summary = run::run(&config, key(&config), |feed, _| {
        until(&feed.stats, |_| {
            started.elapsed() > Duration::from_millis(1500)
        });
    })
    .expect("runs");
    assert!(summary.connects >= 2, "it does reconnect");
    assert!(
        summary.connects <= 40,
        "{} connection attempts in 1.5 s",
        summary.connects
    );
}

/// Issue 9: a connection that stalls past `silent_timeout` is replaced make-before-break, not
/// by a plain reconnect: the replacement opens while the stalled one is still read, its frames
/// wait for the stalled one's late frames, and not one trade or diff is missing.
#[test]
fn a_silent_connection_is_replaced_make_before_break_without_a_gap() {
    let sim = Sim::start(|_| {});
    // Only the first connection stalls: 1.5 s of silence after its 200th frame.
    let (status, body) = sim_get(
        sim.handle().addr,
        "/admin/faults?conn=next&stall_after_frames=200&stall_ms=1500",
    );
    assert_eq!(status, 200, "{body}");
    let config = config(sim.endpoint(), |c| {
        c.readers.silent_timeout = Duration::from_millis(300);
        c.readers.overlap_max = Duration::from_secs(4);
        c.streams = vec![StreamKind::Trade, StreamKind::Depth];
    });
    let caught_up_at = std::cell::Cell::new(None);
    let (events, notices, stats) = collect(&config, |s| {
        let sum = |f: &dyn Fn(&ReaderStats) -> u64| s.iter().map(|r| f(r)).sum::<u64>();
        // The stalled connection's late frames duplicate what the replacement delivered: it
        // has caught up. Then some more trades, well after.
        if caught_up_at.get().is_none() && sum(&|r| r.duplicates.get()) > 0 {
            caught_up_at.set(Some(trade_events(s)));
        }
        sum(&|r| r.switches.get()) >= 1
            && caught_up_at
                .get()
                .is_some_and(|at| trade_events(s) >= at + 200)
    });
    let sum = |f: &dyn Fn(&ReaderStats) -> u64| stats.iter().map(|r| f(r)).sum::<u64>();
    assert!(
        sum(&|r| r.reconnects.get()) >= 1,
        "the silence was detected"
    );
    assert_eq!(sum(&|r| r.connects.get()), 2, "one replacement");
    assert!(notices.is_empty(), "no gap at all: {notices:?}");
    for symbol in 0..2u16 {
        let ids = trade_ids(&events, symbol);
        let published = sim.trades(
            &config.symbols[symbol as usize],
            ids[0],
            *ids.last().expect("trades"),
        );
        assert_eq!(
            published, ids,
            "every trade of symbol {symbol}, once, in order"
        );
        let diffs: Vec<(i64, i64)> = events
            .iter()
            .filter(|e| e.kind == StreamKind::Depth && e.symbol == symbol)
            .map(|e| (e.first_id, e.last_id))
            .collect();
        assert!(
            diffs.windows(2).all(|w| w[1].0 == w[0].1 + 1),
            "contiguous diffs for symbol {symbol}"
        );
    }
}

/// Issue 9: a SUBSCRIBE the server refuses (here an unknown symbol: the simulator answers
/// `{"code":2,"msg":"Invalid request: invalid stream name ...","id":N}`) is counted in the
/// summary and retried with backoff, alone, so other subscriptions still go through.
#[test]
fn a_refused_subscribe_is_counted_retried_and_holds_nothing_back() {
    let sim = Sim::start(|_| {});
    let addr = sim.handle().addr;
    let config = config(sim.endpoint(), |c| {
        c.symbols = vec!["BTCUSDT".into()];
        c.streams = vec![StreamKind::Trade];
    });
    let streams_seen = move || connection_streams(addr);
    let errors = |s: &[Arc<ReaderStats>]| s.iter().map(|r| r.control_errors.get()).sum::<u64>();
    let mut streams = Vec::new();
    let summary = run::run(&config, key(&config), |feed, _| {
        until(&feed.stats, |_| streams_seen() == ["btcusdt@trade"]);
        feed.add_symbol("NOPEUSDT").expect("accepted by the feed");
        until(&feed.stats, |s| errors(s) >= 1);
        feed.add_symbol("ETHUSDT").expect("added");
        until(&feed.stats, |_| streams_seen().len() == 2);
        // Retried with backoff: refused again, still counted.
        until(&feed.stats, |s| errors(s) >= 3);
        streams = streams_seen();
    })
    .expect("runs");
    streams.sort();
    assert_eq!(streams, ["btcusdt@trade", "ethusdt@trade"]);
    assert!(summary.control_errors >= 3, "{}", summary.control_errors);
    assert_eq!(summary.control_timeouts, 0);
    assert_eq!(summary.reconnects, 0, "refusals do not cost the connection");
    assert_eq!(summary.gaps.count, 0);
}

/// A consumer parked for an hour gets the reader's events and notices through real WebSocket
/// traffic: the reader rings its bells once per read batch when it has announced it is parked.
/// Without the wake the consumer would sleep past the test's patience.
#[test]
fn a_parked_consumer_wakes_when_its_ring_gets_data() {
    use hotpath::idle::{Bell, IdleStrategy, ThreadIdle};
    let sim = Sim::start(|c| {
        c.exchange.actions_per_second = 200.0;
        c.faults.drop_trades_pct = 20.0;
    });
    let config = config(sim.endpoint(), |_| {});
    let (bell, parker) = Bell::thread();
    let bells = run::Bells {
        events: vec![bell.clone()],
        notices: bell.clone(),
    };
    let (feed, rings) = run::start_with(&config, key(&config), bells).expect("the feed starts");
    let run::Rings {
        mut events,
        mut notices,
        ..
    } = rings;
    let mut events = events.remove(0);
    let (seen, counts) = std::sync::mpsc::channel();
    let consumer = std::thread::spawn(move || {
        let idle = ThreadIdle::new(IdleStrategy::Blocking, bell, parker);
        let (mut got_events, mut got_notices) = (0u64, 0u64);
        while got_events < 200 || got_notices < 1 {
            for ring in events.iter_mut() {
                while ring.pop().is_ok() {
                    got_events += 1;
                }
            }
            for ring in notices.iter_mut() {
                while ring.pop().is_ok() {
                    got_notices += 1;
                }
            }
            let waiting = |events: &[rtrb::Consumer<FeedEvent>],
                           notices: &[rtrb::Consumer<Notice>]| {
                events.iter().any(|r| !r.is_empty()) || notices.iter().any(|r| !r.is_empty())
            };
            if got_events < 200 || got_notices < 1 {
                idle.park(Duration::from_secs(3600), || waiting(&events, &notices));
            }
        }
        let _ = seen.send((got_events, got_notices));
    });
    let outcome = counts.recv_timeout(PATIENCE * 2);
    let _reports = feed.stop();
    let (got_events, got_notices) =
        outcome.expect("the parked consumer did not wake for the reader's events and notices");
    assert!(got_events >= 200 && got_notices >= 1);
    consumer.join().expect("the consumer ends");
}

/// A frame far larger than one socket read (the reader reads 16 KiB at a time,
/// `WS_READ_BUFFER_BYTES`) arrives whole and decodes: a depth diff of 3,000 levels a side
/// (about 96 KB), between two small ones, from a plain WebSocket server.
#[test]
fn a_frame_larger_than_a_socket_read_arrives_whole() {
    use futures_util::SinkExt;
    use hotpath::sim::exchange::{Event, Payload, StreamKey};
    use hotpath::sim::market::Diff;
    use tokio_tungstenite::tungstenite::Message;

    let levels = 3_000;
    let diff = |first: i64, size: i64| {
        let side = |sign: i64| (0..size).map(|i| (1_000_000 + sign * i, 5)).collect();
        Event {
            key: StreamKey {
                symbol: 0,
                kind: StreamKind::Depth,
            },
            event_time_us: 1_700_000_000_000_000 + first,
            payload: Payload::DepthDiff(Diff {
                first_update_id: first,
                last_update_id: first,
                bids: side(-1),
                asks: side(1),
            }),
        }
    };
    let frames: Vec<Vec<u8>> = [diff(100, 2), diff(101, levels), diff(102, 2)]
        .iter()
        .map(|e| {
            let mut out = Vec::new();
            hotpath::sim::encode::encode_sbe("BTCUSDT", e, &mut out);
            out
        })
        .collect();
    assert!(frames[1].len() > 4 * hotpath::constants::WS_READ_BUFFER_BYTES);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sent = frames.clone();
    runtime.spawn(async move {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        for frame in sent {
            if ws.send(Message::binary(frame)).await.is_err() {
                return;
            }
        }
        // Keep the connection open while the test reads.
        std::future::pending::<()>().await;
    });
    let config = config(format!("ws://{addr}"), |c| {
        c.symbols = vec!["BTCUSDT".into()];
        c.streams = vec![StreamKind::Depth];
    });
    let (events, _notices, stats) = collect(&config, |s| {
        s.iter()
            .map(|s| s.events_of(StreamKind::Depth))
            .sum::<u64>()
            >= 3
    });
    let depth: Vec<&FeedEvent> = events
        .iter()
        .filter(|e| e.kind == StreamKind::Depth)
        .collect();
    assert_eq!(depth.len(), 3, "every diff arrived once");
    let sizes: Vec<usize> = depth.iter().map(|e| e.frame.len()).collect();
    assert_eq!(sizes, frames.iter().map(Vec::len).collect::<Vec<_>>());
    let Ok(Sbe::DepthDiffStreamEvent(big)) = sbe::decode(&depth[1].frame) else {
        panic!("the large frame decodes as a depth diff");
    };
    assert_eq!(big.bids().count(), levels as usize);
    assert_eq!(big.asks().count(), levels as usize);
    assert_eq!(stats[0].decode_errors.get(), 0);
}
