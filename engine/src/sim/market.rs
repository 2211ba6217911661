//! One simulated symbol: a seeded order flow against a [`Book`], producing trades with
//! consecutive ids and book changes with consecutive update ids, and a journal of both that
//! answers ground-truth questions ("which trades were published", "what was the book at update
//! id X").
//!
//! Pure: it takes the time as an argument and never touches clocks, sockets or threads.

use std::collections::{BTreeMap, VecDeque};

use super::book::{Book, Fill, LevelChange, Side};
use super::rng::Rng;

/// The exponent of every price mantissa (Binance uses -8 for BTCUSDT, whatever the tick).
pub const PRICE_EXPONENT: i8 = -8;
/// The exponent of every quantity mantissa.
pub const QTY_EXPONENT: i8 = -8;

/// Levels per side the initial book holds, and below which the flow replenishes a side.
const INITIAL_LEVELS: i64 = 60;
const LEVELS_MIN: usize = 20;

/// A symbol's trading rules, in mantissas at [`PRICE_EXPONENT`] / [`QTY_EXPONENT`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolSpec {
    /// Upper-case symbol, as it appears in SBE frames (`BTCUSDT`).
    pub symbol: String,
    /// Price tick.
    pub tick: i64,
    /// Quantity step.
    pub lot: i64,
    /// Mid price the book starts around.
    pub start_price: i64,
}

impl SymbolSpec {
    /// Rules for a known symbol (BTC, ETH, BNB, SOL pairs), or generic ones derived from its name.
    pub fn for_symbol(symbol: &str) -> SymbolSpec {
        let (tick, lot, start_price) = match symbol {
            "BTCUSDT" => (1_000_000, 1_000, 6_976_988_000_000),
            "ETHUSDT" => (1_000_000, 10_000, 250_000_000_000),
            "BNBUSDT" => (1_000_000, 100_000, 60_000_000_000),
            "SOLUSDT" => (1_000_000, 100_000, 15_000_000_000),
            other => {
                let spread = other
                    .bytes()
                    .fold(0i64, |h, b| (h * 31 + i64::from(b)) % 1000);
                (10_000, 100_000, 100_000_000 + spread * 1_000_000)
            }
        };
        SymbolSpec {
            symbol: symbol.to_string(),
            tick,
            lot,
            start_price,
        }
    }
}

/// A published trade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trade {
    /// Trade id, consecutive per symbol.
    pub id: i64,
    /// Price mantissa.
    pub price: i64,
    /// Quantity mantissa.
    pub qty: i64,
    /// Whether the buyer was the maker.
    pub buyer_maker: bool,
    /// Matching time, microseconds.
    pub time_us: i64,
}

/// A level change numbered with its book update id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BookChange {
    /// The book update id this change created.
    pub update_id: i64,
    /// The change.
    pub change: LevelChange,
}

/// What one order-flow action did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Trades filled by one matching-engine event (one `TradesStreamEvent`), oldest first.
    pub trades: Vec<Trade>,
    /// Book changes, in update-id order.
    pub changes: Vec<BookChange>,
}

/// A full book at one update id: levels best first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BookState {
    /// The update id the state is at.
    pub update_id: i64,
    /// Bids, highest price first.
    pub bids: Vec<(i64, i64)>,
    /// Asks, lowest price first.
    pub asks: Vec<(i64, i64)>,
}

/// One simulated symbol.
#[derive(Clone, Debug)]
pub struct Market {
    spec: SymbolSpec,
    rng: Rng,
    book: Book,
    next_order_id: u64,
    next_trade_id: i64,
    /// The last book update id assigned.
    update_id: i64,
    journal: VecDeque<BookChange>,
    trades: VecDeque<Trade>,
    journal_max: usize,
}

impl Market {
    /// A market for `spec` whose whole history is determined by `seed`. The journal keeps the
    /// last `journal_max` trades and book changes for ground-truth queries.
    pub fn new(spec: SymbolSpec, seed: u64, journal_max: usize) -> Market {
        let name_hash = spec
            .symbol
            .bytes()
            .fold(seed, |h, b| h.rotate_left(5) ^ u64::from(b));
        let mut market = Market {
            rng: Rng::new(name_hash),
            book: Book::default(),
            next_order_id: 1,
            next_trade_id: 1_000_000_000 + (name_hash % 1_000_000) as i64,
            update_id: 70_000_000_000 + (name_hash % 1_000_000_000) as i64,
            journal: VecDeque::new(),
            trades: VecDeque::new(),
            journal_max: journal_max.max(1),
            spec,
        };
        let mut step = Step::default();
        for distance in 0..INITIAL_LEVELS {
            for side in [Side::Bid, Side::Ask] {
                let price = market.price_away(side, market.spec.start_price, distance + 1);
                let qty = market.random_qty(100);
                market.rest(side, price, qty, &mut step);
            }
        }
        market
    }

    /// The symbol's rules.
    pub fn spec(&self) -> &SymbolSpec {
        &self.spec
    }

    /// The order book now.
    pub fn book(&self) -> &Book {
        &self.book
    }

    /// The last book update id.
    pub fn update_id(&self) -> i64 {
        self.update_id
    }

    /// The id the next trade will get.
    pub fn next_trade_id(&self) -> i64 {
        self.next_trade_id
    }

    /// Runs one order-flow action at time `now_us`: a passive limit order, a cancel, a market
    /// order, or an aggressive limit order, chosen by the seeded generator.
    pub fn step(&mut self, now_us: i64) -> Step {
        let mut step = Step::default();
        let roll = self.rng.below(100);
        let side = if self.rng.chance(50) {
            Side::Bid
        } else {
            Side::Ask
        };
        match roll {
            0..45 => self.passive(side, &mut step),
            45..75 => self.cancel_random(&mut step),
            75..92 => {
                let qty = self.random_qty(40);
                self.take(side, qty, None, now_us, &mut step);
            }
            _ => {
                let reference = self.reference_price();
                let ticks = self.rng.below(4) as i64;
                let limit = self.price_away(side.opposite(), reference, ticks);
                let qty = self.random_qty(60);
                let left = self.take(side, qty, Some(limit), now_us, &mut step);
                if left > 0 {
                    self.rest(side, limit, left, &mut step);
                }
            }
        }
        for side in [Side::Bid, Side::Ask] {
            while self.book.depth(side) < LEVELS_MIN {
                let far = self.far_price(side);
                let qty = self.random_qty(100);
                self.rest(side, far, qty, &mut step);
            }
        }
        step
    }

    /// Every journaled trade with `id >= from_id`, oldest first.
    pub fn trades_from(&self, from_id: i64) -> impl Iterator<Item = &Trade> {
        // Journaled trade ids are consecutive, so the first wanted one is found by arithmetic.
        let first = self.trades.front().map_or(0, |t| t.id);
        let skip = usize::try_from(from_id.saturating_sub(first)).unwrap_or(0);
        self.trades.iter().skip(skip)
    }

    /// The oldest book update id the journal can rebuild the book at.
    pub fn oldest_update_id(&self) -> i64 {
        self.journal
            .front()
            .map_or(self.update_id, |c| c.update_id - 1)
    }

    /// The exact book at `update_id`, rebuilt by undoing journaled changes; `None` when the id
    /// is in the future or older than the journal.
    pub fn book_at(&self, update_id: i64) -> Option<BookState> {
        if update_id > self.update_id || update_id < self.oldest_update_id() {
            return None;
        }
        let mut sides = [BTreeMap::new(), BTreeMap::new()];
        for (i, side) in [Side::Bid, Side::Ask].into_iter().enumerate() {
            sides[i].extend(self.book.levels(side, usize::MAX));
        }
        for c in self
            .journal
            .iter()
            .rev()
            .take_while(|c| c.update_id > update_id)
        {
            let map = &mut sides[usize::from(c.change.side == Side::Ask)];
            if c.change.old_qty == 0 {
                map.remove(&c.change.price);
            } else {
                map.insert(c.change.price, c.change.old_qty);
            }
        }
        let [bids, asks] = sides;
        Some(BookState {
            update_id,
            bids: bids.into_iter().rev().collect(),
            asks: asks.into_iter().collect(),
        })
    }

    fn random_qty(&mut self, lots_max: u64) -> i64 {
        self.spec.lot * (1 + self.rng.below(lots_max) as i64)
    }

    /// The price `ticks` ticks away from `from` on `side`'s far side (lower for bids).
    fn price_away(&self, side: Side, from: i64, ticks: i64) -> i64 {
        let tick = self.spec.tick;
        let aligned = from - from.rem_euclid(tick);
        match side {
            Side::Bid => (aligned - ticks * tick).max(tick),
            Side::Ask => aligned + ticks * tick + if aligned < from { tick } else { 0 },
        }
    }

    /// The mid, or the start price on an empty book.
    fn reference_price(&self) -> i64 {
        match (self.book.best(Side::Bid), self.book.best(Side::Ask)) {
            (Some((bid, _)), Some((ask, _))) => (bid + ask) / 2,
            (Some((bid, _)), None) => bid,
            (None, Some((ask, _))) => ask,
            (None, None) => self.spec.start_price,
        }
    }

    fn far_price(&self, side: Side) -> i64 {
        let levels = self.book.levels(side, usize::MAX);
        match levels.last() {
            Some(&(price, _)) => self.price_away(side, price, 1),
            None => self.price_away(side, self.reference_price(), 1),
        }
    }

    fn passive(&mut self, side: Side, step: &mut Step) {
        let (own, other) = (self.book.best(side), self.book.best(side.opposite()));
        let price = match (own, other) {
            // Improve inside a wide spread now and then.
            (Some((own, _)), Some((other, _)))
                if (other - own).abs() > self.spec.tick && self.rng.chance(30) =>
            {
                self.price_away(side.opposite(), own, 1)
            }
            (Some((own, _)), _) => {
                let ticks = self.rng.below(15) as i64;
                self.price_away(side, own, ticks)
            }
            (None, _) => self.price_away(side, self.reference_price(), 1),
        };
        let qty = self.random_qty(100);
        self.rest(side, price, qty, step);
    }

    fn cancel_random(&mut self, step: &mut Step) {
        let count = self.book.order_count();
        if count == 0 {
            return;
        }
        let nth = self.rng.below(count as u64) as usize;
        if let Some(id) = self.book.order_at(nth)
            && let Some(change) = self.book.cancel(id)
        {
            self.record(change, step);
        }
    }

    fn rest(&mut self, side: Side, price: i64, qty: i64, step: &mut Step) {
        let id = self.next_order_id;
        self.next_order_id += 1;
        let change = self.book.rest(side, id, price, qty);
        self.record(change, step);
    }

    fn take(
        &mut self,
        side: Side,
        qty: i64,
        limit: Option<i64>,
        now_us: i64,
        step: &mut Step,
    ) -> i64 {
        let mut fills: Vec<Fill> = Vec::new();
        let mut changes = Vec::new();
        let left = self.book.take(side, qty, limit, &mut fills, &mut changes);
        for fill in fills {
            let trade = Trade {
                id: self.next_trade_id,
                price: fill.price,
                qty: fill.qty,
                buyer_maker: fill.buyer_maker,
                time_us: now_us,
            };
            self.next_trade_id += 1;
            step.trades.push(trade);
            push_bounded(&mut self.trades, trade, self.journal_max);
        }
        for change in changes {
            self.record(change, step);
        }
        left
    }

    fn record(&mut self, change: LevelChange, step: &mut Step) {
        self.update_id += 1;
        let numbered = BookChange {
            update_id: self.update_id,
            change,
        };
        step.changes.push(numbered);
        push_bounded(&mut self.journal, numbered, self.journal_max);
    }
}

fn push_bounded<T>(queue: &mut VecDeque<T>, item: T, max: usize) {
    if queue.len() == max {
        queue.pop_front();
    }
    queue.push_back(item);
}

/// Accumulates book changes into one depth diff: the first and last update ids (Binance's `U`
/// and `u`) and each changed level's final quantity (0 = removed).
#[derive(Clone, Debug, Default)]
pub struct DiffBuilder {
    first_update_id: Option<i64>,
    last_update_id: i64,
    bids: BTreeMap<i64, i64>,
    asks: BTreeMap<i64, i64>,
}

/// A depth diff ready to encode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diff {
    /// `U`: the first update id in the diff.
    pub first_update_id: i64,
    /// `u`: the last update id in the diff.
    pub last_update_id: i64,
    /// Changed bids, highest first, final quantities.
    pub bids: Vec<(i64, i64)>,
    /// Changed asks, lowest first, final quantities.
    pub asks: Vec<(i64, i64)>,
}

impl DiffBuilder {
    /// Adds changes (in update-id order).
    pub fn add(&mut self, changes: &[BookChange]) {
        for c in changes {
            self.first_update_id.get_or_insert(c.update_id);
            self.last_update_id = c.update_id;
            let side = match c.change.side {
                Side::Bid => &mut self.bids,
                Side::Ask => &mut self.asks,
            };
            side.insert(c.change.price, c.change.new_qty);
        }
    }

    /// The diff of everything added since the last take, or `None` if nothing changed.
    pub fn take(&mut self) -> Option<Diff> {
        let first_update_id = self.first_update_id.take()?;
        Some(Diff {
            first_update_id,
            last_update_id: self.last_update_id,
            bids: std::mem::take(&mut self.bids).into_iter().rev().collect(),
            asks: std::mem::take(&mut self.asks).into_iter().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn market(seed: u64) -> Market {
        Market::new(SymbolSpec::for_symbol("BTCUSDT"), seed, 1_000_000)
    }

    #[test]
    fn same_seed_same_market() {
        let (mut a, mut b, mut c) = (market(7), market(7), market(8));
        let run = |m: &mut Market| (0..2000).map(|i| m.step(i)).collect::<Vec<_>>();
        let (ra, rb, rc) = (run(&mut a), run(&mut b), run(&mut c));
        assert_eq!(ra, rb);
        assert_ne!(ra, rc);
    }

    #[test]
    fn ids_are_consecutive_and_the_book_never_crosses() {
        let mut m = market(1);
        let (mut trade_id, mut update_id) = (m.next_trade_id(), m.update_id());
        let mut trades = 0;
        for now in 0..20_000 {
            let step = m.step(now);
            for t in &step.trades {
                assert_eq!(t.id, trade_id);
                assert!(t.qty > 0 && t.price > 0);
                trade_id += 1;
                trades += 1;
            }
            for c in &step.changes {
                assert_eq!(c.update_id, update_id + 1);
                update_id = c.update_id;
            }
            if let (Some((bid, _)), Some((ask, _))) =
                (m.book().best(Side::Bid), m.book().best(Side::Ask))
            {
                assert!(bid < ask, "crossed book at step {now}: {bid} >= {ask}");
            }
        }
        assert!(trades > 1000, "the flow trades: {trades}");
        assert_eq!(m.trades_from(0).count(), trades);
    }

    #[test]
    fn book_at_rebuilds_past_books_exactly() {
        let mut m = market(3);
        let mut snapshots = Vec::new();
        for now in 0..3000 {
            m.step(now);
            if now % 500 == 0 {
                let state = BookState {
                    update_id: m.update_id(),
                    bids: m.book().levels(Side::Bid, usize::MAX),
                    asks: m.book().levels(Side::Ask, usize::MAX),
                };
                snapshots.push(state);
            }
        }
        for snapshot in snapshots {
            assert_eq!(m.book_at(snapshot.update_id).as_ref(), Some(&snapshot));
        }
        assert_eq!(m.book_at(m.update_id() + 1), None);
    }

    #[test]
    fn diffs_carry_first_and_last_ids_and_final_quantities() {
        let mut m = market(5);
        let mut builder = DiffBuilder::default();
        assert_eq!(builder.take(), None);
        let before = m.update_id();
        let mut changes = Vec::new();
        for now in 0..50 {
            changes.extend(m.step(now).changes);
        }
        builder.add(&changes);
        let diff = builder.take().expect("something changed");
        assert_eq!(diff.first_update_id, before + 1);
        assert_eq!(diff.last_update_id, m.update_id());
        let state = m.book_at(m.update_id()).expect("current");
        for (price, qty) in &diff.bids {
            let now = state.bids.iter().find(|l| l.0 == *price).map_or(0, |l| l.1);
            assert_eq!(now, *qty);
        }
        assert!(diff.bids.windows(2).all(|w| w[0].0 > w[1].0));
        assert!(diff.asks.windows(2).all(|w| w[0].0 < w[1].0));
    }
}

/// Binance's local order book procedure (PROTOCOL.md 4.4), applied to the simulator's own diff
/// stream and a REST-style snapshot, yields exactly the ground-truth book.
#[cfg(test)]
mod local_book_procedure {
    use super::*;
    use crate::book::{DiffOutcome, LocalBook};

    #[test]
    fn snapshot_plus_buffered_diffs_equals_ground_truth() {
        let mut m = Market::new(SymbolSpec::for_symbol("ETHUSDT"), 11, 1_000_000);
        let mut builder = DiffBuilder::default();
        let mut diffs = Vec::new();
        let mut now = 0;
        let publish = |m: &mut Market,
                       builder: &mut DiffBuilder,
                       diffs: &mut Vec<Diff>,
                       steps: i64,
                       now: &mut i64| {
            for _ in 0..steps {
                *now += 1;
                builder.add(&m.step(*now).changes);
                if *now % 7 == 0 {
                    diffs.extend(builder.take());
                }
            }
        };
        // 1-2: connect and buffer diffs.
        publish(&mut m, &mut builder, &mut diffs, 300, &mut now);
        // 3: a snapshot, taken while diffs keep flowing (it lands mid-stream).
        let snapshot = m.book_at(m.update_id()).expect("current book");
        publish(&mut m, &mut builder, &mut diffs, 300, &mut now);
        // 4: the snapshot is not older than the first buffered diff.
        assert!(snapshot.update_id >= diffs[0].first_update_id);
        // 5-7: discard diffs at or before the snapshot, apply the rest.
        let mut book = LocalBook::from_snapshot(
            snapshot.update_id,
            snapshot.bids.clone(),
            snapshot.asks.clone(),
        )
        .expect("a valid snapshot");
        let pending: Vec<&Diff> = diffs
            .iter()
            .filter(|d| d.last_update_id > snapshot.update_id)
            .collect();
        let straddles = pending[0].first_update_id <= snapshot.update_id + 1
            && snapshot.update_id < pending[0].last_update_id;
        assert!(straddles || pending[0].first_update_id == snapshot.update_id + 1);
        for d in pending {
            let outcome = book.apply_diff(
                d.first_update_id,
                d.last_update_id,
                d.bids.clone(),
                d.asks.clone(),
            );
            assert_eq!(outcome, DiffOutcome::Applied);
        }
        let truth = m.book_at(book.update_id()).expect("journaled");
        assert_eq!(book.bids(usize::MAX), truth.bids);
        assert_eq!(book.asks(usize::MAX), truth.asks);
    }

    #[test]
    fn a_dropped_diff_is_detected_as_a_gap() {
        let mut m = Market::new(SymbolSpec::for_symbol("BTCUSDT"), 12, 100_000);
        let snapshot = m.book_at(m.update_id()).expect("current book");
        let mut book = LocalBook::from_snapshot(snapshot.update_id, snapshot.bids, snapshot.asks)
            .expect("a valid snapshot");
        let mut builder = DiffBuilder::default();
        let mut outcomes = Vec::new();
        for i in 0..30 {
            for now in 0..5 {
                builder.add(&m.step(i * 5 + now).changes);
            }
            let Some(d) = builder.take() else { continue };
            if i == 10 {
                continue; // dropped on the wire
            }
            outcomes.push(book.apply_diff(d.first_update_id, d.last_update_id, d.bids, d.asks));
        }
        assert!(
            matches!(outcomes[10], DiffOutcome::Gap { .. }),
            "{outcomes:?}"
        );
        assert!(outcomes[..10].iter().all(|o| *o == DiffOutcome::Applied));
    }
}
