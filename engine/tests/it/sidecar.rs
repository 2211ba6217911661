//! The sidecar thread against the simulator's REST API: a trade gap notice becomes repair
//! events carrying exactly the missing trades (ids, prices, quantities, sides, times equal to
//! the simulator's journal), for exactly the consumers that lost them; a gap REST cannot serve
//! is given up and every consumer concerned is told.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hotpath::binance::rest::RestClient;
use hotpath::feed::event::{Cause, Notice, Repair};
use hotpath::feed::sequence::GapNotice;
use hotpath::sbe::{self, spot_stream::Message};
use hotpath::sidecar::thread::{self, SidecarSetup, SidecarStats};
use hotpath::stream::StreamKind;

use crate::feed::Sim;

const PATIENCE: Duration = Duration::from_secs(30);

struct Running {
    notices: rtrb::Producer<Notice>,
    repairs: Vec<rtrb::Consumer<Repair>>,
    done: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<thread::SidecarReport>,
}

fn start(sim: &Sim, consumers: usize, give_up_after: Duration) -> Running {
    let (notices, notice_ring) = rtrb::RingBuffer::new(64);
    let mut producers = Vec::new();
    let mut repairs = Vec::new();
    for _ in 0..consumers {
        let (p, c) = rtrb::RingBuffer::new(1024);
        producers.push(p);
        repairs.push(c);
    }
    let rest = RestClient::new(&format!("http://{}", sim.handle().addr), None).expect("client");
    let done = Arc::new(AtomicBool::new(false));
    let thread = thread::spawn(SidecarSetup {
        notices: vec![notice_ring],
        repairs: producers,
        symbols: Arc::new(RwLock::new(vec!["BTCUSDT".into(), "ETHUSDT".into()])),
        rest: Some(rest),
        give_up_after,
        stats: Arc::new(SidecarStats::default()),
        done: done.clone(),
        flush_timeout: Duration::from_secs(5),
        books: None,
        // Nobody rings it here: the sidecar finds the test's notices at its park timeouts.
        idle: hotpath::idle::IdleStrategy::Backoff,
        bell: hotpath::idle::Bell::task(),
        repair_bells: vec![hotpath::idle::Bell::silent(); consumers],
        detect: Default::default(),
        core: None,
        gaps_file: None,
    })
    .expect("the sidecar starts");
    Running {
        notices,
        repairs,
        done,
        thread,
    }
}

/// Waits until the simulator has published trades up to at least `count` past its first.
fn published(sim: &Sim, symbol: &str, count: usize) -> Vec<i64> {
    let started = Instant::now();
    loop {
        let ids = sim.trades(symbol, 0, i64::MAX);
        if ids.len() >= count {
            return ids;
        }
        assert!(started.elapsed() < PATIENCE, "the simulator did not trade");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every (id, price, qty, buyer maker, time) in the repair events of `ring`, until `expected`
/// ids were seen.
fn collect(ring: &mut rtrb::Consumer<Repair>, expected: usize) -> Vec<(i64, i64, i64, bool, i64)> {
    let started = Instant::now();
    let mut out = Vec::new();
    while out.len() < expected {
        match ring.pop() {
            Ok(Repair::Event(event)) => {
                assert_eq!(event.kind, StreamKind::Trade);
                let Ok(Message::TradesStreamEvent(m)) = sbe::decode(&event.frame) else {
                    panic!("a trades frame");
                };
                assert_eq!(m.symbol(), b"BTCUSDT");
                for t in m.trades() {
                    let maker = t.is_buyer_maker() == Some(sbe::spot_stream::BoolEnum::True);
                    out.push((t.id(), t.price(), t.qty(), maker, m.transact_time()));
                }
            }
            Ok(Repair::GaveUp { from, to, .. }) => panic!("gave up on {from}..={to}"),
            Ok(other) => panic!("no book repairs without books: {other:?}"),
            Err(_) => {
                assert!(
                    started.elapsed() < PATIENCE,
                    "repairs did not come: {out:?}"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    out
}

#[test]
fn a_trade_gap_is_backfilled_from_rest_exactly_for_the_consumers_that_lost_it() {
    let sim = Sim::start(|_| {});
    let ids = published(&sim, "BTCUSDT", 40);
    let (from, to) = (ids[5], ids[30]);
    let mut running = start(&sim, 2, Duration::from_secs(20));
    // Consumer 1's ring was full for these ids; consumer 0 got them.
    running
        .notices
        .push(Notice {
            gap: GapNotice {
                symbol: 0,
                kind: StreamKind::Trade,
                last_good: from - 1,
                first_seen: to + 1,
            },
            cause: Cause::QueueFull { consumer: 1 },
        })
        .expect("room");
    let got = collect(&mut running.repairs[1], (to - from + 1) as usize);
    let truth = {
        let index = sim.handle().shared.symbol_index("BTCUSDT").expect("symbol");
        let exchange = hotpath::sim::server::lock(&sim.handle().shared.exchange);
        exchange
            .market(index)
            .trades_from(from)
            .take_while(|t| t.id <= to)
            .map(|t| (t.id, t.price, t.qty, t.buyer_maker, t.time_us))
            .collect::<Vec<_>>()
    };
    let got_range: Vec<_> = got
        .into_iter()
        .filter(|t| t.0 >= from && t.0 <= to)
        .collect();
    assert_eq!(got_range.len(), truth.len());
    for (g, t) in got_range.iter().zip(&truth) {
        assert_eq!((g.0, g.1, g.2, g.3), (t.0, t.1, t.2, t.3), "trade {}", t.0);
        // REST times are milliseconds: the repair carries the trade's millisecond.
        assert_eq!(g.4, t.4 / 1000 * 1000, "trade {} time", t.0);
    }
    assert!(running.repairs[0].is_empty(), "consumer 0 lost nothing");
    running.done.store(true, Ordering::Release);
    let report = running.thread.join().expect("the sidecar ends");
    assert_eq!(report.summary.trade_gaps, 1);
    assert_eq!(report.summary.requested_ids, (to - from + 1) as u64);
    assert_eq!(report.summary.repaired_ids, (to - from + 1) as u64);
    assert_eq!(report.summary.unrepaired_ids, 0);
    assert_eq!(report.summary.time_to_repair_ns.count, 1);
}

#[test]
fn a_gap_rest_cannot_serve_is_given_up_and_every_consumer_is_told() {
    let sim = Sim::start(|_| {});
    let ids = published(&sim, "BTCUSDT", 5);
    let mut running = start(&sim, 2, Duration::from_millis(300));
    // Ids far in the future: REST returns nothing for them.
    let future = ids[ids.len() - 1] + 1_000_000_000;
    running
        .notices
        .push(Notice {
            gap: GapNotice {
                symbol: 0,
                kind: StreamKind::Trade,
                last_good: future,
                first_seen: future + 11,
            },
            cause: Cause::Wire,
        })
        .expect("room");
    for ring in running.repairs.iter_mut() {
        let started = Instant::now();
        loop {
            match ring.pop() {
                Ok(Repair::GaveUp { symbol, from, to }) => {
                    assert_eq!((symbol, from, to), (0, future + 1, future + 10));
                    break;
                }
                Ok(other) => panic!("no trades exist there: {other:?}"),
                Err(_) => {
                    assert!(started.elapsed() < PATIENCE, "no give-up came");
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    running.done.store(true, Ordering::Release);
    let report = running.thread.join().expect("the sidecar ends");
    assert_eq!(
        report.summary.unrepaired_ids, 20,
        "10 ids for each of 2 consumers"
    );
    assert_eq!(report.summary.repaired_ids, 0);
}

/// The book part: a consumer's depth snapshot requests come back as snapshots of the
/// simulator's book (exact at their `lastUpdateId`, at the limit asked), a lost connection's
/// notice comes back as a stream repair, and the summary counts the fetches. The S3 archive's
/// snapshot ring (one slot, never drained here) gets the first snapshot as it came; the second
/// finds it full and is dropped for the archive, counted, while the consumer still gets it.
#[test]
fn depth_requests_come_back_as_snapshots_and_stopped_streams_as_stale() {
    use hotpath::feed::event::{BookRequest, Purpose, StreamChange};
    use hotpath::sidecar::books::BookSetup;
    let sim = Sim::start(|_| {});
    published(&sim, "BTCUSDT", 10);
    let (mut notices, notice_ring) = rtrb::RingBuffer::new(64);
    let (repairs_in, mut repairs) = rtrb::RingBuffer::new(64);
    let (mut requests, request_ring) = rtrb::RingBuffer::new(64);
    let (archive_in, mut archive) = rtrb::RingBuffer::new(1);
    let base = format!("http://{}", sim.handle().addr);
    let clients = (0..2)
        .map(|_| RestClient::new(&base, None).expect("client"))
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let thread = thread::spawn(SidecarSetup {
        notices: vec![notice_ring],
        repairs: vec![repairs_in],
        symbols: Arc::new(RwLock::new(vec!["BTCUSDT".into(), "ETHUSDT".into()])),
        rest: None,
        give_up_after: Duration::from_secs(5),
        stats: Arc::new(SidecarStats::default()),
        done: done.clone(),
        flush_timeout: Duration::from_secs(5),
        books: Some(BookSetup {
            requests: vec![(0, request_ring)],
            clients,
            weight_budget: 5000,
            archive: Some((archive_in, hotpath::idle::Bell::silent())),
        }),
        idle: hotpath::idle::IdleStrategy::Backoff,
        bell: hotpath::idle::Bell::task(),
        repair_bells: vec![hotpath::idle::Bell::silent()],
        detect: Default::default(),
        core: None,
        gaps_file: None,
    })
    .expect("the sidecar starts");
    for (symbol, purpose) in [(0, Purpose::Sync), (1, Purpose::Check)] {
        let request = BookRequest {
            symbol,
            purpose,
            limit: 50,
            min_limit: 20,
        };
        requests.push(request).expect("room");
    }
    notices
        .push(Notice {
            gap: GapNotice {
                symbol: 1,
                kind: StreamKind::Depth,
                last_good: 42,
                first_seen: 43,
            },
            cause: Cause::Disconnected,
        })
        .expect("room");
    let started = Instant::now();
    let (mut books, mut stale) = (Vec::new(), Vec::new());
    while books.len() < 2 || stale.is_empty() {
        match repairs.pop() {
            Ok(Repair::Book(book)) => books.push(*book),
            Ok(Repair::Stream {
                symbol,
                change,
                last_update_id,
            }) => stale.push((symbol, change, last_update_id)),
            Ok(other) => panic!("unexpected: {other:?}"),
            Err(_) => {
                assert!(started.elapsed() < PATIENCE, "repairs did not come");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    assert_eq!(stale, [(1, StreamChange::Disconnected, 42)]);
    books.sort_by_key(|b| b.symbol);
    assert_eq!(
        (books[0].purpose, books[1].purpose),
        (Purpose::Sync, Purpose::Check)
    );
    for (book, name) in books.iter().zip(["BTCUSDT", "ETHUSDT"]) {
        assert_eq!(
            book.limit, 50,
            "a request within budget gets the limit it asked"
        );
        let truth = {
            let index = sim.handle().shared.symbol_index(name).expect("symbol");
            let exchange = hotpath::sim::server::lock(&sim.handle().shared.exchange);
            exchange
                .market(index)
                .book_at(book.snapshot.last_update_id)
                .expect("in the journal")
        };
        let bids =
            hotpath::binance::decimal::mantissas(&book.snapshot.bids, -8, -8).expect("exact");
        let want: Vec<(i64, i64)> = truth.bids.iter().take(50).copied().collect();
        assert_eq!(bids, want, "{name}");
    }
    done.store(true, Ordering::Release);
    let report = thread.join().expect("the sidecar ends");
    assert_eq!(report.summary.depth_snapshots, 2);
    assert_eq!(report.summary.notices, 1);
    assert_eq!(
        (
            report.summary.snapshots_archived,
            report.summary.snapshots_archive_dropped
        ),
        (1, 1)
    );
    let archived = archive
        .pop()
        .expect("the first snapshot in the archive ring");
    let same = books
        .iter()
        .zip(["BTCUSDT", "ETHUSDT"])
        .find(|(b, _)| b.snapshot == archived.snapshot)
        .expect("one of the snapshots the consumer got");
    assert_eq!(archived.symbol, same.1);
    assert!(archived.fetch_time_us > 1_700_000_000_000_000);
    assert!(archive.pop().is_err(), "the second was dropped");
}

/// Regression: a removed symbol's backfill went on after the sinks were told to forget its
/// trade order, so its repair (or its give-up) reached them after the removal: a repair
/// started a new order at ids from before it, and the symbol, added again, waited for every
/// id traded while it was away. Now what is pending is given up, each consumer told before
/// the removal, and nothing of the symbol follows the removal.
#[test]
fn a_removed_symbols_pending_backfill_is_given_up_before_the_removal_is_told() {
    use hotpath::feed::event::StreamChange;
    let sim = Sim::start(|_| {});
    let ids = published(&sim, "BTCUSDT", 5);
    // Ids REST cannot serve yet: the request stays pending (give-up after a minute).
    let future = ids[ids.len() - 1] + 1_000_000_000;
    let mut running = start(&sim, 2, Duration::from_secs(60));
    let gap = |last_good, first_seen, kind| GapNotice {
        symbol: 0,
        kind,
        last_good,
        first_seen,
    };
    for notice in [
        Notice {
            gap: gap(future, future + 11, StreamKind::Trade),
            cause: Cause::Wire,
        },
        Notice {
            gap: gap(0, 1, StreamKind::Depth),
            cause: Cause::Removed,
        },
    ] {
        running.notices.push(notice).expect("room");
    }
    // Everything each consumer gets until the removal, then until the sidecar ends.
    let mut before: Vec<Vec<Repair>> = vec![Vec::new(), Vec::new()];
    for (consumer, ring) in running.repairs.iter_mut().enumerate() {
        let started = Instant::now();
        loop {
            match ring.pop() {
                Ok(Repair::Stream {
                    symbol: 0,
                    change: StreamChange::Removed,
                    ..
                }) => break,
                Ok(other) => before[consumer].push(other),
                Err(_) => {
                    assert!(started.elapsed() < PATIENCE, "the removal was not told");
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    running.done.store(true, Ordering::Release);
    let report = running.thread.join().expect("the sidecar ends");
    for (consumer, ring) in running.repairs.iter_mut().enumerate() {
        assert!(
            matches!(
                before[consumer].as_slice(),
                [Repair::GaveUp { symbol: 0, from, to }] if (*from, *to) == (future + 1, future + 10)
            ),
            "consumer {consumer}: the give-up comes before the removal: {:?}",
            before[consumer]
        );
        let mut after = Vec::new();
        while let Ok(repair) = ring.pop() {
            after.push(repair);
        }
        assert!(
            after.is_empty(),
            "consumer {consumer}: nothing of the removed symbol after its removal: {after:?}"
        );
    }
    assert_eq!(report.summary.unrepaired_ids, 20, "10 ids for each of 2");
}
