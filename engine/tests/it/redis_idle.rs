//! The Redis writer's idling against a real redis-server, the writer driven directly through its
//! rings (no feed): what it waits for while a pipeline is in flight (the reply), and what
//! `redis.linger_us` holds (only frames taken while nothing is in flight).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hotpath::config::RedisConfig;
use hotpath::feed::event::FeedEvent;
use hotpath::idle::{Bell, IdleStrategy};
use hotpath::sbe::spot_stream::{BoolEnum, TradesStreamEventEncoder};
use hotpath::sink::redis::writer::{RedisSink, spawn};
use hotpath::sink::{SinkError, SinkStats, SinkSummary};
use hotpath::stream::StreamKind;

use crate::servers::{RedisServer, TempDir};
use crate::sinks::{redis_connection, redis_settings, redis_trades, wait_for};

/// A Redis writer thread of one symbol, `BTCUSDT`, fed through one ring by the test.
struct Writer {
    ring: rtrb::Producer<FeedEvent>,
    stats: Arc<SinkStats>,
    stop: Arc<AtomicBool>,
    bell: Bell,
    thread: JoinHandle<Result<SinkSummary, SinkError>>,
    _dir: TempDir,
}

impl Writer {
    fn start(config: RedisConfig) -> Writer {
        let dir = TempDir::new("redis-idle");
        let (ring, consumer) = rtrb::RingBuffer::new(1024);
        let stats = Arc::new(SinkStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let bell = Bell::task();
        let thread = spawn(RedisSink {
            config: RedisConfig {
                dead_letter_path: dir.path().join("dead-letters.jsonl"),
                ..config
            },
            symbols: vec!["BTCUSDT".into()],
            rings: vec![consumer],
            repairs: None,
            hold_max: Duration::ZERO,
            book_requests: None,
            stats: Arc::clone(&stats),
            stop: Arc::clone(&stop),
            core: None,
            flush_timeout: Duration::from_secs(30),
            bell: bell.clone(),
            sidecar_bell: Bell::silent(),
            klines: Default::default(),
        })
        .expect("the writer thread starts");
        Writer {
            ring,
            stats,
            stop,
            bell,
            thread,
            _dir: dir,
        }
    }

    /// Pushes trade `id` received now, and rings the writer's bell (as a reader does).
    fn push_trade(&mut self, id: i64) {
        self.ring
            .push(trade(id))
            .unwrap_or_else(|_| panic!("room in the ring"));
        self.bell.ring();
    }

    /// Stops the writer (as the run does: the flag, then a wake) and returns its summary.
    fn stop(self) -> SinkSummary {
        self.stop.store(true, Ordering::Release);
        self.bell.wake();
        self.thread
            .join()
            .expect("the writer thread does not panic")
            .expect("the writer ends without error")
    }
}

/// An event of trade `id` of `BTCUSDT`, received now.
fn trade(id: i64) -> FeedEvent {
    let mut out = vec![0u8; 1024];
    let length = {
        let mut encoder = TradesStreamEventEncoder::wrap(&mut out).expect("room");
        encoder
            .event_time(1_763_700_000_000_000)
            .transact_time(1_763_700_000_000_000)
            .price_exponent(-8)
            .qty_exponent(-8);
        let mut group = encoder.trades(1).expect("a group");
        group
            .next_entry()
            .expect("an entry")
            .id(id)
            .price(6_976_988_000_000)
            .qty(100_000)
            .is_buyer_maker(BoolEnum::False);
        encoder.symbol(b"BTCUSDT").expect("a symbol");
        encoder.finish()
    };
    out.truncate(length);
    FeedEvent {
        recv_time_ns: hotpath::clock::monotonic_ns(),
        symbol: 0,
        kind: StreamKind::Trade,
        first_id: id,
        last_id: id,
        first_new_id: id,
        event_time_us: 1_763_700_000_000_000,
        frame: Bytes::from(out),
    }
}

/// Redis carries out no write command of any client for `pause` (`CLIENT PAUSE .. WRITE`):
/// a pipeline sent meanwhile stays in flight until it ends.
fn pause_writes(url: &str, pause: Duration) {
    let ok: String = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(pause.as_millis() as u64)
        .arg("WRITE")
        .query(&mut redis_connection(url))
        .expect("CLIENT PAUSE");
    assert_eq!(ok, "OK");
}

/// Regression (review13): `redis.linger_us` holds only the frames taken while nothing is in
/// flight. A frame taken while a pipeline is in flight goes as soon as that reply lands (group
/// commit); it was held after the reply until it was `linger` old.
#[test]
fn a_trade_taken_while_a_pipeline_is_in_flight_goes_with_the_reply_despite_a_linger() {
    let redis = RedisServer::start();
    // Within the writer's response timeout (3 s), so the paused pipeline is answered, not
    // failed.
    let pause = Duration::from_millis(2_000);
    let paused_at = Instant::now();
    pause_writes(&redis.url(), pause);
    // Longer than this test waits for anything: a hold of the trade shows as a time-out.
    let linger = Duration::from_secs(120);
    let mut writer = Writer::start(RedisConfig {
        linger,
        ..redis_settings(redis.url())
    });
    // The start's stale marks: a pipeline that waits for the pause to end.
    wait_for("the first pipeline to be in flight", || {
        writer.stats.requests.get() >= 1
    });
    writer.push_trade(7);
    wait_for("the writer to take the trade", || {
        writer.stats.received.get() >= 1
    });
    assert!(
        paused_at.elapsed() < pause,
        "the trade was to be taken while the first pipeline was in flight (the pause ended \
         first: the machine was too slow for this test)"
    );
    let deadline = paused_at + pause + Duration::from_secs(20);
    while writer.stats.written.get() < 1 {
        assert!(
            Instant::now() < deadline,
            "the trade taken while a pipeline was in flight was held by the linger after the \
             reply landed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(redis_trades(&redis.url(), "BTCUSDT"), vec![7]);
    let summary = writer.stop();
    assert!(summary.flushed, "{summary:?}");
    assert_eq!(
        (summary.written, summary.dead_lettered),
        (1, 0),
        "{summary:?}"
    );
}

/// The stop comes while the writer awaits a reply (every connection's pipeline in flight, Redis
/// pausing writes), with each idle strategy and two connections: the stop wakes it, the trade
/// taken meanwhile is written once the reply lands, and the writer ends flushed (every trade
/// written, the stop's stale marks included: nothing dirty).
#[test]
fn a_stop_while_awaiting_a_reply_flushes_everything_with_each_idle_strategy() {
    for idle in [
        IdleStrategy::Backoff,
        IdleStrategy::Blocking,
        IdleStrategy::BusySpin,
    ] {
        let redis = RedisServer::start();
        let pause = Duration::from_millis(1_500);
        pause_writes(&redis.url(), pause);
        let mut writer = Writer::start(RedisConfig {
            idle,
            connections: 2,
            ..redis_settings(redis.url())
        });
        wait_for("the first pipeline to be in flight", || {
            writer.stats.requests.get() >= 1
        });
        writer.push_trade(11);
        wait_for("the writer to take the trade", || {
            writer.stats.received.get() >= 1
        });
        let summary = writer.stop();
        assert!(summary.flushed, "{idle:?}: {summary:?}");
        assert_eq!(
            (summary.written, summary.dead_lettered, summary.dropped),
            (1, 0, 0),
            "{idle:?}: {summary:?}"
        );
        assert_eq!(redis_trades(&redis.url(), "BTCUSDT"), vec![11], "{idle:?}");
    }
}
