//! The Redis writer's per-event work on one busy symbol, without a server: one event applied to
//! the symbol's state ([`SymbolState::on_frame`]) and then the symbol's commands built into a
//! pipeline ([`SymbolState::write`]), as when every event gets a pipeline of its own (the worst
//! case: Redis answers as fast as events come). The pipeline is not sent; the trades it carries
//! are taken as acknowledged.
//!
//! The symbol trades 5,000 times a second (a trade every 200 µs), so its 5 s window holds
//! 25,000 trades and its 1 s window 5,000; its book is live and published, 1,000 levels a side,
//! 20 published (`book_levels`).
//! - `redis_state/trade`: one one-trade trades event.
//! - `redis_state/depth_top`: one depth diff changing the quantities of the 10 best levels of
//!   each side (the published top 20 changes).
//! - `redis_state/depth_deep`: one depth diff changing 10 levels of each side below the
//!   published 20 (the published top does not change).
//!
//! `cargo bench -p hotpath-benches --bench redis_state`; to compare two commits in one session:
//! `-- --save-baseline before` on the first, `-- --baseline before` on the second.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use hotpath::sbe::spot_stream::{
    BoolEnum, DepthDiffStreamEventEncoder, Message, TradesStreamEventEncoder,
};
use hotpath::sink::redis::ob::{BookSettings, DiffBudget};
use hotpath::sink::redis::state::{SentTrade, SymbolState};

/// Trades a second of the symbol.
const TRADE_EVERY_US: i64 = 200;
/// Levels a side of the book.
const BOOK_DEPTH: i64 = 1_000;
/// Levels published.
const PUBLISHED: usize = 20;
/// Price tick (mantissa at -8: 0.01).
const TICK: i64 = 1_000_000;
/// Best bid, mantissa at -8.
const BEST_BID: i64 = 9_712_345_000_000;
/// The first event time, Unix µs.
const START_US: i64 = 1_763_735_000_000_000;
/// The book's snapshot update id.
const SNAPSHOT_ID: i64 = 78_456_000_000;
/// Trades held at most (never reached: every write is taken as acknowledged).
const BUFFER_MAX: usize = 1_000_000;

/// The symbol's clock and ids.
struct Market {
    now_us: i64,
    trade_id: i64,
    update_id: i64,
    step: i64,
}

impl Market {
    fn trade(&mut self) -> Vec<u8> {
        self.now_us += TRADE_EVERY_US;
        self.trade_id += 1;
        self.step += 1;
        let mut buf = vec![0u8; 256];
        let length = {
            let mut e = TradesStreamEventEncoder::wrap(&mut buf).expect("room");
            e.event_time(self.now_us)
                .transact_time(self.now_us)
                .price_exponent(-8)
                .qty_exponent(-8);
            let mut group = e.trades(1).expect("a group");
            let maker = if self.step % 2 == 0 {
                BoolEnum::True
            } else {
                BoolEnum::False
            };
            group
                .next_entry()
                .expect("an entry")
                .id(self.trade_id)
                .price(BEST_BID + (self.step * 7 % 41 - 20) * TICK)
                .qty(1_000 + self.step % 97 * 1_000)
                .is_buyer_maker(maker);
            e.symbol(b"BTCUSDT").expect("a symbol");
            e.finish()
        };
        buf.truncate(length);
        buf
    }

    /// A diff changing the quantities of 10 levels a side from level `from` on, at the time of
    /// the last trade (the clock stands still, so the windows stay full).
    fn diff(&mut self, from: i64) -> Vec<u8> {
        self.step += 1;
        let first = self.update_id + 1;
        self.update_id += 3;
        let mut buf = vec![0u8; 512];
        let length = {
            let mut e = DepthDiffStreamEventEncoder::wrap(&mut buf).expect("room");
            e.event_time(self.now_us)
                .first_book_update_id(first)
                .last_book_update_id(self.update_id)
                .price_exponent(-8)
                .qty_exponent(-8);
            let qty = |i: i64| 1_000 + (self.step + i) % 113 * 1_000;
            let mut bids = e.bids(10).expect("a group");
            for i in from..from + 10 {
                bids.next_entry()
                    .expect("an entry")
                    .price(BEST_BID - i * TICK)
                    .qty(qty(i));
            }
            let mut asks = e.asks(10).expect("a group");
            for i in from..from + 10 {
                asks.next_entry()
                    .expect("an entry")
                    .price(BEST_BID + (i + 1) * TICK)
                    .qty(qty(i + 1));
            }
            e.symbol(b"BTCUSDT").expect("a symbol");
            e.finish()
        };
        buf.truncate(length);
        buf
    }
}

/// The state after 5 s of trades, with a live, published book.
fn busy_symbol(market: &mut Market, budget: &mut DiffBudget) -> SymbolState {
    let mut state = SymbolState::new("BTCUSDT", BookSettings::new(PUBLISHED, 5000));
    for _ in 0..(5_000_000 / TRADE_EVERY_US) {
        apply(&mut state, &market.trade(), budget);
    }
    state.pending.clear();
    // The first diff starts the sync; the snapshot makes the book live.
    market.update_id = SNAPSHOT_ID - 1;
    apply(&mut state, &market.diff(0), budget);
    market.update_id = SNAPSHOT_ID;
    let side = |bid: bool| -> Vec<(i64, i64)> {
        (0..BOOK_DEPTH)
            .map(|i| {
                let price = if bid {
                    BEST_BID - i * TICK
                } else {
                    BEST_BID + (i + 1) * TICK
                };
                (price, 1_000 + i * 1_000)
            })
            .collect()
    };
    state.ob.fetching = true;
    let live = state
        .ob
        .on_snapshot(SNAPSHOT_ID, side(true), side(false), 5000, budget);
    assert!(live.is_ok(), "the snapshot starts the book");
    let _ = state.ob.stale_write(market.now_us);
    let (attempt, _) = state
        .begin_reanchor(market.now_us)
        .expect("a live book re-anchors");
    state.ob.end_reanchor(attempt, true, 0);
    assert!(!state.ob.is_stale(), "the book is published");
    write(&mut state, market.now_us);
    state
}

fn apply(state: &mut SymbolState, frame: &[u8], budget: &mut DiffBudget) {
    let Ok(message) = hotpath::sbe::decode(frame) else {
        panic!("a frame this bench built decodes");
    };
    if let Message::TradesStreamEvent(m) = &message {
        state.on_trades(m, i64::MIN, 0, BUFFER_MAX);
    } else {
        state.on_frame(&message, 0, BUFFER_MAX, budget);
    }
}

/// Builds the symbol's pipeline and takes its trades as acknowledged; returns its length.
fn write(state: &mut SymbolState, now_us: i64) -> usize {
    let mut pipe = redis::pipe();
    let mut sent: Vec<SentTrade> = Vec::new();
    state.write(&mut pipe, (10_000, 1_000), now_us, &mut sent);
    state.pending.clear();
    pipe.len()
}

fn redis_state(c: &mut Criterion) {
    let mut group = c.benchmark_group("redis_state");
    group.throughput(Throughput::Elements(1));
    type Next = fn(&mut Market) -> Vec<u8>;
    let cases: [(&str, Next); 3] = [
        ("trade", Market::trade),
        ("depth_top", |m| m.diff(0)),
        ("depth_deep", |m| m.diff(40)),
    ];
    for (name, next) in cases {
        let mut market = Market {
            now_us: START_US,
            trade_id: 5_412_345_678,
            update_id: 0,
            step: 0,
        };
        let mut budget = DiffBudget::new(64 << 20);
        let mut state = busy_symbol(&mut market, &mut budget);
        group.bench_function(name, |b| {
            b.iter_batched(
                || (next(&mut market), market.now_us),
                |(frame, now_us)| {
                    apply(&mut state, black_box(&frame), &mut budget);
                    black_box(write(&mut state, now_us))
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, redis_state);
criterion_main!(benches);
