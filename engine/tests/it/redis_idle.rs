//! The Redis writer's idling against a real redis-server, the writer driven directly through its
//! rings (no feed): what it waits for while a pipeline is in flight (the reply), and what
//! `redis.linger_us` holds (only frames taken while nothing is in flight).

use std::net::{SocketAddr, TcpListener, TcpStream};
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

/// The symbols of these tests' writers, in index order (symbol `i` over connection
/// `i % connections`).
const SYMBOLS: [&str; 2] = ["BTCUSDT", "ETHUSDT"];

/// A Redis writer thread of [`SYMBOLS`], fed through one ring by the test.
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
            symbols: SYMBOLS.iter().map(|s| s.to_string()).collect(),
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

    /// Pushes trade `id` of `BTCUSDT` received now, and rings the writer's bell (as a reader
    /// does).
    fn push_trade(&mut self, id: i64) {
        self.push_trade_of(0, id);
    }

    /// Pushes trade `id` of symbol `symbol` (of [`SYMBOLS`]) received now, and rings the
    /// writer's bell.
    fn push_trade_of(&mut self, symbol: u16, id: i64) {
        self.ring
            .push(trade(symbol, id))
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

/// An event of trade `id` of symbol `symbol` (of [`SYMBOLS`]), received now.
fn trade(symbol: u16, id: i64) -> FeedEvent {
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
        encoder
            .symbol(SYMBOLS[usize::from(symbol)].as_bytes())
            .expect("a symbol");
        encoder.finish()
    };
    out.truncate(length);
    FeedEvent {
        recv_time_ns: hotpath::clock::monotonic_ns(),
        symbol,
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

/// A TCP proxy in front of a redis-server: it forwards the first connection it accepts and,
/// while closed, closes every later one at once (a connection that cannot get through); opened,
/// it forwards those too.
struct Gate {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Gate {
    fn start(upstream: u16) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the gate");
        let addr = listener.local_addr().expect("the gate's address");
        let open = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let (is_open, is_done) = (Arc::clone(&open), Arc::clone(&done));
        let thread = std::thread::spawn(move || {
            let mut first = true;
            for client in listener.incoming() {
                if is_done.load(Ordering::Acquire) {
                    break;
                }
                let Ok(client) = client else { continue };
                if !first && !is_open.load(Ordering::Acquire) {
                    continue;
                }
                first = false;
                if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) {
                    forward(client, server);
                }
            }
        });
        Gate {
            addr,
            open,
            done,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    fn open(&self) {
        self.open.store(true, Ordering::Release);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
        // Wakes the accept loop so that it sees `done`.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Copies bytes both ways between `a` and `b` until either side closes.
fn forward(a: TcpStream, b: TcpStream) {
    let (Ok(mut a_in), Ok(mut b_in)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let (mut a_out, mut b_out) = (a, b);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut a_in, &mut b_out);
        let _ = b_out.shutdown(std::net::Shutdown::Both);
    });
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut b_in, &mut a_out);
        let _ = a_out.shutdown(std::net::Shutdown::Both);
    });
}

/// Two connections, one of which cannot get through (it fails and reconnects with backoff):
/// with each idle strategy, the writer keeps writing the other connection's symbol (waiting
/// for its replies, the failing connection not counted as free), retries the failing one, and
/// writes its symbol once it gets through; everything flushed at the stop.
#[test]
fn one_connection_failing_holds_up_only_its_own_symbols_with_each_idle_strategy() {
    for idle in [
        IdleStrategy::Backoff,
        IdleStrategy::Blocking,
        IdleStrategy::BusySpin,
    ] {
        let redis = RedisServer::start();
        let gate = Gate::start(redis.port);
        let mut writer = Writer::start(RedisConfig {
            idle,
            connections: 2,
            ..redis_settings(gate.url())
        });
        writer.push_trade_of(0, 1);
        writer.push_trade_of(1, 1);
        wait_for("one connection's trade in Redis", || {
            writer.stats.written.get() >= 1
        });
        let failed = writer.stats.failed_requests.get();
        wait_for("the other connection to fail again", || {
            writer.stats.failed_requests.get() > failed
        });
        let (live, down) = if redis_trades(&redis.url(), SYMBOLS[0]).is_empty() {
            (1, 0)
        } else {
            (0, 1)
        };
        assert!(
            redis_trades(&redis.url(), SYMBOLS[down]).is_empty(),
            "{idle:?}"
        );
        writer.push_trade_of(live, 2);
        wait_for("the live connection's next trade", || {
            writer.stats.written.get() >= 2
        });
        gate.open();
        wait_for("the other connection's trade once it gets through", || {
            writer.stats.written.get() >= 3
        });
        let summary = writer.stop();
        assert!(summary.flushed, "{idle:?}: {summary:?}");
        assert_eq!((summary.written, summary.dropped), (3, 0), "{idle:?}");
        let live_name = SYMBOLS[usize::from(live)];
        assert_eq!(
            redis_trades(&redis.url(), live_name),
            vec![1, 2],
            "{idle:?}"
        );
        assert_eq!(
            redis_trades(&redis.url(), SYMBOLS[down]),
            vec![1],
            "{idle:?}"
        );
    }
}
