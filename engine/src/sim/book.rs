//! A price-time priority limit order book, the matching core of the simulated exchange.
//!
//! Prices and quantities are mantissas at the symbol's exponents (Binance uses -8 and -8).
//! Every change of a level's total quantity is reported as a [`LevelChange`] so the market can
//! number it with a book update id, publish it in a depth diff, and keep it in the ground-truth
//! journal.

use std::collections::{BTreeMap, HashMap, VecDeque};

/// A side of the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// Buy orders.
    Bid,
    /// Sell orders.
    Ask,
}

impl Side {
    /// The other side.
    pub fn opposite(self) -> Side {
        match self {
            Side::Bid => Side::Ask,
            Side::Ask => Side::Bid,
        }
    }
}

/// One price level: its total and its resting orders, oldest first.
#[derive(Clone, Debug, Default)]
struct Level {
    /// Sum of `orders`' quantities; invariant: > 0 while the level exists.
    total: i64,
    orders: VecDeque<(u64, i64)>,
}

/// A level whose total changed: `new_qty` 0 means it is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelChange {
    /// The side.
    pub side: Side,
    /// The level's price.
    pub price: i64,
    /// Its total before.
    pub old_qty: i64,
    /// Its total after.
    pub new_qty: i64,
}

/// One fill of a taker against a resting order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fill {
    /// The resting order's price.
    pub price: i64,
    /// The quantity traded.
    pub qty: i64,
    /// Whether the buyer was the resting (maker) order, i.e. the taker sold.
    pub buyer_maker: bool,
}

/// The order book of one symbol.
#[derive(Clone, Debug, Default)]
pub struct Book {
    bids: BTreeMap<i64, Level>,
    asks: BTreeMap<i64, Level>,
    /// Where each resting order is, for cancels: order id -> (side, price, slot in `live`).
    index: HashMap<u64, (Side, i64, usize)>,
    /// Resting order ids in a stable order, so picking the nth is deterministic and O(1).
    live: Vec<u64>,
}

impl Book {
    fn side(&self, side: Side) -> &BTreeMap<i64, Level> {
        match side {
            Side::Bid => &self.bids,
            Side::Ask => &self.asks,
        }
    }

    fn side_mut(&mut self, side: Side) -> &mut BTreeMap<i64, Level> {
        match side {
            Side::Bid => &mut self.bids,
            Side::Ask => &mut self.asks,
        }
    }

    /// The best price and total of `side`.
    pub fn best(&self, side: Side) -> Option<(i64, i64)> {
        let level = match side {
            Side::Bid => self.bids.iter().next_back(),
            Side::Ask => self.asks.iter().next(),
        };
        level.map(|(&price, l)| (price, l.total))
    }

    /// The number of levels on `side`.
    pub fn depth(&self, side: Side) -> usize {
        self.side(side).len()
    }

    /// Up to `limit` levels of `side`, best first, as (price, total).
    pub fn levels(&self, side: Side, limit: usize) -> Vec<(i64, i64)> {
        let map = self.side(side);
        let iter: Box<dyn Iterator<Item = (&i64, &Level)>> = match side {
            Side::Bid => Box::new(map.iter().rev()),
            Side::Ask => Box::new(map.iter()),
        };
        iter.take(limit).map(|(&p, l)| (p, l.total)).collect()
    }

    /// The number of resting orders.
    pub fn order_count(&self) -> usize {
        self.index.len()
    }

    /// The `nth` resting order id (in a deterministic order), for picking one to cancel.
    pub fn order_at(&self, nth: usize) -> Option<u64> {
        self.live.get(nth).copied()
    }

    fn forget(&mut self, id: u64) -> Option<(Side, i64)> {
        let (side, price, slot) = self.index.remove(&id)?;
        self.live.swap_remove(slot);
        if let Some(&moved) = self.live.get(slot)
            && let Some(entry) = self.index.get_mut(&moved)
        {
            entry.2 = slot;
        }
        Some((side, price))
    }

    /// Rests a new order at `price` and reports the level change.
    pub fn rest(&mut self, side: Side, id: u64, price: i64, qty: i64) -> LevelChange {
        debug_assert!(qty > 0);
        let level = self.side_mut(side).entry(price).or_default();
        let old_qty = level.total;
        level.total += qty;
        level.orders.push_back((id, qty));
        let new_qty = level.total;
        self.index.insert(id, (side, price, self.live.len()));
        self.live.push(id);
        LevelChange {
            side,
            price,
            old_qty,
            new_qty,
        }
    }

    /// Cancels resting order `id`; `None` if it is not in the book.
    pub fn cancel(&mut self, id: u64) -> Option<LevelChange> {
        let (side, price) = self.forget(id)?;
        let map = self.side_mut(side);
        let level = map.get_mut(&price)?;
        let at = level.orders.iter().position(|&(o, _)| o == id)?;
        let (_, qty) = level.orders.remove(at)?;
        let old_qty = level.total;
        level.total -= qty;
        let new_qty = level.total;
        if new_qty == 0 {
            map.remove(&price);
        }
        Some(LevelChange {
            side,
            price,
            old_qty,
            new_qty,
        })
    }

    /// Matches a taker on `side` for `qty`, at prices no worse than `limit` (any price if
    /// `None`), against the opposite side in price-time priority. Appends fills and level
    /// changes (one per level touched) and returns the quantity left unfilled.
    pub fn take(
        &mut self,
        side: Side,
        mut qty: i64,
        limit: Option<i64>,
        fills: &mut Vec<Fill>,
        changes: &mut Vec<LevelChange>,
    ) -> i64 {
        let maker = side.opposite();
        while qty > 0 {
            let Some((price, _)) = self.best(maker) else {
                break;
            };
            let acceptable = match (side, limit) {
                (_, None) => true,
                (Side::Bid, Some(l)) => price <= l,
                (Side::Ask, Some(l)) => price >= l,
            };
            if !acceptable {
                break;
            }
            qty = self.take_level(side, price, qty, fills, changes);
        }
        qty
    }

    fn take_level(
        &mut self,
        side: Side,
        price: i64,
        mut qty: i64,
        fills: &mut Vec<Fill>,
        changes: &mut Vec<LevelChange>,
    ) -> i64 {
        let maker = side.opposite();
        let mut filled_ids = Vec::new();
        let map = self.side_mut(maker);
        let Some(level) = map.get_mut(&price) else {
            return qty;
        };
        let old_qty = level.total;
        while qty > 0 {
            let Some(front) = level.orders.front_mut() else {
                break;
            };
            let traded = qty.min(front.1);
            front.1 -= traded;
            qty -= traded;
            level.total -= traded;
            fills.push(Fill {
                price,
                qty: traded,
                buyer_maker: side == Side::Ask,
            });
            if front.1 == 0 {
                filled_ids.push(front.0);
                level.orders.pop_front();
            }
        }
        let new_qty = level.total;
        if new_qty == 0 {
            map.remove(&price);
        }
        for id in filled_ids {
            self.forget(id);
        }
        changes.push(LevelChange {
            side: maker,
            price,
            old_qty,
            new_qty,
        });
        qty
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_follows_price_time_priority() {
        let mut book = Book::default();
        book.rest(Side::Ask, 1, 101, 5);
        book.rest(Side::Ask, 2, 100, 3);
        book.rest(Side::Ask, 3, 100, 4);
        book.rest(Side::Bid, 4, 99, 10);
        let (mut fills, mut changes) = (Vec::new(), Vec::new());
        let left = book.take(Side::Bid, 9, Some(101), &mut fills, &mut changes);
        assert_eq!(left, 0);
        let traded: Vec<(i64, i64)> = fills.iter().map(|f| (f.price, f.qty)).collect();
        assert_eq!(traded, [(100, 3), (100, 4), (101, 2)]);
        assert!(fills.iter().all(|f| !f.buyer_maker), "the taker bought");
        assert_eq!(
            changes,
            [
                LevelChange {
                    side: Side::Ask,
                    price: 100,
                    old_qty: 7,
                    new_qty: 0
                },
                LevelChange {
                    side: Side::Ask,
                    price: 101,
                    old_qty: 5,
                    new_qty: 3
                },
            ]
        );
        assert_eq!(book.best(Side::Ask), Some((101, 3)));
        assert_eq!(book.order_count(), 2);
    }

    #[test]
    fn a_limit_stops_matching_and_cancels_update_levels() {
        let mut book = Book::default();
        book.rest(Side::Bid, 1, 99, 5);
        book.rest(Side::Bid, 2, 98, 5);
        let (mut fills, mut changes) = (Vec::new(), Vec::new());
        assert_eq!(
            book.take(Side::Ask, 20, Some(99), &mut fills, &mut changes),
            15
        );
        assert_eq!(fills.len(), 1);
        assert!(fills[0].buyer_maker);
        assert_eq!(book.best(Side::Bid), Some((98, 5)));
        assert_eq!(
            book.cancel(2),
            Some(LevelChange {
                side: Side::Bid,
                price: 98,
                old_qty: 5,
                new_qty: 0
            })
        );
        assert_eq!(book.cancel(2), None);
        assert_eq!(book.depth(Side::Bid), 0);
    }
}
