//! Announcements of trades a consumer lost before it saw any of the symbol's: a sink's trade
//! order starts at the first trades event it sees of a symbol ([`crate::sink::order`]), so if
//! the events before it were lost at the sink's full ring, the sink would take the sidecar's
//! repair of them for ids it had delivered already. The reader therefore tells the sink, in
//! the ring itself and ahead of any later event of the symbol: an **announcement** is a trades
//! [`FeedEvent`] with an empty frame whose `first_id..=last_id` are the ids lost. The sink's
//! order then starts at the first lost id and holds the later events until the repair comes.
//!
//! Only losses before a consumer's first trades event of a symbol are announced (later ones the
//! sink sees itself as a gap before the next event). An announcement that does not fit the
//! ring is owed: later trades events of that symbol to that consumer are lost too (their ids
//! join the announcement) until it fits, so the announcement always precedes them.
//!
//! No allocation per frame: the tables are sized at start and grow only when a symbol is added
//! (cold), and an empty frame is a static `Bytes`.

use bytes::Bytes;

use super::event::FeedEvent;
use crate::stream::StreamKind;

/// The announcement of trade ids `from..=to` of `symbol`, lost before the consumer's first
/// trades event of it.
pub fn announcement(symbol: u16, from: i64, to: i64, recv_time_ns: u64) -> FeedEvent {
    FeedEvent {
        recv_time_ns,
        symbol,
        kind: StreamKind::Trade,
        first_id: from,
        last_id: to,
        first_new_id: from,
        event_time_us: 0,
        frame: Bytes::new(),
    }
}

/// Per consumer and symbol: whether a trades event reached the consumer, and the ids owed.
#[derive(Debug, Default)]
pub struct Announcements {
    /// `[consumer][symbol]`: a trades event of the symbol reached the consumer's ring.
    reached: Vec<Vec<bool>>,
    /// `[consumer][symbol]`: ids lost before any reached it, not yet announced.
    owed: Vec<Vec<Option<(i64, i64)>>>,
    /// Per consumer: how many symbols owe an announcement.
    owing: Vec<u32>,
}

impl Announcements {
    /// Tables for `consumers` consumers and `symbols` symbols.
    pub fn new(consumers: usize, symbols: usize) -> Announcements {
        Announcements {
            reached: vec![vec![false; symbols]; consumers],
            owed: vec![vec![None; symbols]; consumers],
            owing: vec![0; consumers],
        }
    }

    /// Room for `symbols` symbols (a symbol added at run time).
    pub fn grow(&mut self, symbols: usize) {
        for table in self.reached.iter_mut() {
            if table.len() < symbols {
                table.resize(symbols, false);
            }
        }
        for table in self.owed.iter_mut() {
            if table.len() < symbols {
                table.resize(symbols, None);
            }
        }
    }

    /// The symbol starts afresh (removed, or added again): as if nothing reached anyone. What
    /// it still owed is dropped: the sinks forget its order too.
    pub fn forget(&mut self, symbol: u16) {
        let at = usize::from(symbol);
        for consumer in 0..self.reached.len() {
            if let Some(reached) = self.reached[consumer].get_mut(at) {
                *reached = false;
            }
            if let Some(owed) = self.owed[consumer].get_mut(at)
                && owed.take().is_some()
            {
                self.owing[consumer] = self.owing[consumer].saturating_sub(1);
            }
        }
    }

    /// Whether `consumer` is owed an announcement of any symbol.
    #[inline]
    pub fn owing(&self, consumer: usize) -> bool {
        self.owing.get(consumer).is_some_and(|&n| n > 0)
    }

    /// Whether `consumer` is owed the announcement of `symbol` (its trades events must wait).
    #[inline]
    pub fn owes(&self, consumer: usize, symbol: u16) -> bool {
        self.owed
            .get(consumer)
            .and_then(|t| t.get(usize::from(symbol)))
            .is_some_and(Option::is_some)
    }

    /// A trades event of `symbol` reached `consumer`.
    #[inline]
    pub fn reached(&mut self, consumer: usize, symbol: u16) {
        if let Some(reached) = self
            .reached
            .get_mut(consumer)
            .and_then(|t| t.get_mut(usize::from(symbol)))
        {
            *reached = true;
        }
    }

    /// Trade ids `from..=to` of `symbol` were lost for `consumer`: owed an announcement when
    /// no trades event of the symbol reached it yet.
    #[cold]
    pub fn lost(&mut self, consumer: usize, symbol: u16, from: i64, to: i64) {
        let at = usize::from(symbol);
        let reached = self
            .reached
            .get(consumer)
            .and_then(|t| t.get(at))
            .copied()
            .unwrap_or(true);
        if reached || from > to {
            return;
        }
        let Some(owed) = self.owed.get_mut(consumer).and_then(|t| t.get_mut(at)) else {
            return;
        };
        match owed {
            Some((first, last)) => {
                *first = (*first).min(from);
                *last = (*last).max(to);
            }
            None => {
                *owed = Some((from, to));
                self.owing[consumer] += 1;
            }
        }
    }

    /// Pushes what `consumer` is owed through `push` (false: the ring is full, stop), oldest
    /// symbol index first; a symbol announced counts as reached.
    #[cold]
    pub fn pay(&mut self, consumer: usize, now_ns: u64, mut push: impl FnMut(FeedEvent) -> bool) {
        let Some(table) = self.owed.get_mut(consumer) else {
            return;
        };
        for (at, owed) in table.iter_mut().enumerate() {
            let Some((from, to)) = *owed else { continue };
            let Ok(symbol) = u16::try_from(at) else {
                continue;
            };
            if !push(announcement(symbol, from, to, now_ns)) {
                return;
            }
            *owed = None;
            self.owing[consumer] = self.owing[consumer].saturating_sub(1);
            self.reached[consumer][at] = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_losses_before_the_first_event_are_announced_and_they_merge() {
        let mut a = Announcements::new(2, 2);
        a.reached(0, 1);
        a.lost(0, 1, 10, 12);
        assert!(
            !a.owing(0),
            "symbol 1 reached consumer 0: its own gap check sees it"
        );
        a.lost(0, 0, 5, 6);
        a.lost(0, 0, 7, 9);
        assert!(a.owing(0) && a.owes(0, 0) && !a.owes(1, 0));
        let mut pushed = Vec::new();
        a.pay(0, 1, |e| {
            pushed.push(e);
            false
        });
        assert!(a.owes(0, 0), "a full ring: still owed");
        pushed.clear();
        a.pay(0, 1, |e| {
            pushed.push(e);
            true
        });
        assert_eq!(pushed.len(), 1);
        let e = &pushed[0];
        assert!(e.is_announcement());
        assert_eq!((e.symbol, e.first_id, e.last_id), (0, 5, 9));
        assert!(!a.owing(0));
        a.lost(0, 0, 20, 21);
        assert!(!a.owing(0), "announced counts as reached");
    }

    #[test]
    fn a_forgotten_symbol_is_announced_afresh() {
        let mut a = Announcements::new(1, 1);
        a.lost(0, 0, 1, 2);
        a.forget(0);
        assert!(!a.owing(0));
        a.grow(3);
        a.lost(0, 2, 3, 3);
        assert!(a.owes(0, 2));
    }
}
