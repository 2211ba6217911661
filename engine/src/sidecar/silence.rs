//! Time-based gap detection: a stream silent for longer than a bound while its symbol trades.
//!
//! The readers stamp each accepted frame's receive time into a [`StreamClock`] (one relaxed
//! atomic store per frame, nothing else: no lock, no allocation). The sidecar reads the clock
//! now and then and asks [`SilenceWatch::scan`], pure, which streams fell silent:
//!
//! - a watched stream (`@trade`, `@depth`) whose last frame is older than `bound`,
//! - while its symbol is alive: another stream of the same symbol, or the same stream of
//!   another symbol on the same connection, had a frame within `bound` (a symbol or connection
//!   that went quiet as a whole is not a silent stream: the connection's own silence handling
//!   and the sequence check cover those).
//!
//! A stream flagged once is flagged again only after `bound` doubled per flag of the same
//! silence (capped at [`BACKOFF_MAX`] times `bound`), so a stream that is merely quiet (a
//! symbol without trades while its book moves) costs a few REST requests, not one per scan. A
//! frame ends the silence and resets the backoff. Streams never seen are not watched (nothing
//! is known of them yet).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::stream::StreamKind;

/// Stream kinds per symbol in the clock.
const KINDS: usize = StreamKind::ALL.len();

/// Repeated flags of one silence wait at most this many times the bound.
pub const BACKOFF_MAX: u64 = 16;

/// The streams the watch judges: trades (backfilled) and depth diffs (re-synced). The sampled
/// streams only show that the symbol is alive.
pub const WATCHED: [StreamKind; 2] = [StreamKind::Trade, StreamKind::Depth];

/// The last receive time of every stream of every symbol (monotonic ns, 0: none yet), written
/// by the readers, read by the sidecar. Symbols past its capacity are not tracked.
#[derive(Debug)]
pub struct StreamClock {
    last_ns: Box<[AtomicU64]>,
}

impl StreamClock {
    /// A clock for symbol indexes `0..symbols`.
    pub fn new(symbols: usize) -> StreamClock {
        StreamClock {
            last_ns: (0..symbols * KINDS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Symbols tracked.
    pub fn symbols(&self) -> usize {
        self.last_ns.len() / KINDS
    }

    /// The reader's one store per accepted frame.
    #[inline]
    pub fn stamp(&self, symbol: u16, kind: StreamKind, now_ns: u64) {
        if let Some(cell) = self
            .last_ns
            .get(usize::from(symbol) * KINDS + kind as usize)
        {
            cell.store(now_ns, Ordering::Relaxed);
        }
    }

    /// The newest stamp of any stream of `symbol` (0: none, or not tracked).
    pub fn latest(&self, symbol: u16) -> u64 {
        let row = usize::from(symbol) * KINDS;
        self.last_ns.get(row..row + KINDS).map_or(0, |r| {
            r.iter()
                .map(|c| c.load(Ordering::Relaxed))
                .max()
                .unwrap_or(0)
        })
    }

    /// Copies every stamp into `out` (`symbol * 4 + kind`), reusing its allocation.
    pub fn read(&self, out: &mut Vec<u64>) {
        out.clear();
        out.extend(self.last_ns.iter().map(|c| c.load(Ordering::Relaxed)));
    }
}

/// What the watch remembers of one stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Flagged {
    /// The stamp of the silence it flagged (a newer stamp ends it).
    stamp: u64,
    /// Flags of this silence so far.
    times: u32,
    /// Not flagged again before this.
    next_ns: u64,
}

/// The silence decisions, pure.
#[derive(Debug)]
pub struct SilenceWatch {
    bound_ns: u64,
    /// Connection of each symbol (`u32::MAX`: none known); symbols beyond it have none.
    connection: Vec<u32>,
    flagged: Vec<Flagged>,
    /// Symbols removed, and when: not watched until a frame of theirs comes after it.
    removed: Vec<(u16, u64)>,
}

impl SilenceWatch {
    /// A watch flagging streams silent for longer than `bound_ns`; `connection[s]` names the
    /// connection carrying symbol `s` (symbols sharing one are compared stream by stream).
    pub fn new(bound_ns: u64, connection: Vec<u32>) -> SilenceWatch {
        SilenceWatch {
            bound_ns: bound_ns.max(1),
            connection,
            flagged: Vec::new(),
            removed: Vec::new(),
        }
    }

    /// `symbol` was unsubscribed at `now_ns`: its streams stop for good, not silent.
    pub fn forget(&mut self, symbol: u16, now_ns: u64) {
        self.removed.retain(|&(s, _)| s != symbol);
        self.removed.push((symbol, now_ns));
    }

    /// The streams that fell silent at `now_ns`, given the clock's stamps (`symbol * 4 +
    /// kind`), appended to `out` as `(symbol, kind)`.
    pub fn scan(&mut self, stamps: &[u64], now_ns: u64, out: &mut Vec<(u16, StreamKind)>) {
        let symbols = stamps.len() / KINDS;
        if self.flagged.len() < stamps.len() {
            self.flagged.resize(stamps.len(), Flagged::default());
        }
        let alive_since = now_ns.saturating_sub(self.bound_ns);
        // A removed symbol subscribed again (a frame after its removal) is watched again.
        self.removed.retain(|&(s, at)| {
            let row = usize::from(s) * KINDS;
            stamps
                .get(row..row + KINDS)
                .is_some_and(|r| r.iter().all(|&t| t <= at))
        });
        for symbol in 0..symbols {
            if self.removed.iter().any(|&(s, _)| usize::from(s) == symbol) {
                continue;
            }
            for kind in WATCHED {
                let at = symbol * KINDS + kind as usize;
                let stamp = stamps[at];
                if stamp == 0 || stamp >= alive_since {
                    continue;
                }
                if !self.symbol_alive(stamps, symbol, kind, alive_since) {
                    continue;
                }
                let flagged = &mut self.flagged[at];
                if flagged.stamp != stamp {
                    *flagged = Flagged {
                        stamp,
                        ..Flagged::default()
                    };
                }
                if now_ns < flagged.next_ns {
                    continue;
                }
                flagged.times = flagged.times.saturating_add(1);
                let backoff = 1u64 << flagged.times.min(BACKOFF_MAX.trailing_zeros());
                flagged.next_ns = now_ns.saturating_add(self.bound_ns.saturating_mul(backoff));
                if let Ok(index) = u16::try_from(symbol) {
                    out.push((index, kind));
                }
            }
        }
    }

    /// Whether `symbol` shows life since `alive_since` on another of its streams, or on
    /// stream `kind` of another symbol of its connection.
    fn symbol_alive(&self, stamps: &[u64], symbol: usize, kind: StreamKind, since: u64) -> bool {
        let own = (0..KINDS)
            .filter(|&k| k != kind as usize)
            .any(|k| stamps[symbol * KINDS + k] >= since);
        if own {
            return true;
        }
        let Some(&connection) = self.connection.get(symbol).filter(|&&c| c != u32::MAX) else {
            return false;
        };
        (0..stamps.len() / KINDS).any(|other| {
            other != symbol
                && self.connection.get(other) == Some(&connection)
                && stamps[other * KINDS + kind as usize] >= since
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn stamps(rows: &[[u64; KINDS]]) -> Vec<u64> {
        rows.iter().flatten().copied().collect()
    }

    fn scan(watch: &mut SilenceWatch, rows: &[[u64; KINDS]], now: u64) -> Vec<(u16, StreamKind)> {
        let mut out = Vec::new();
        watch.scan(&stamps(rows), now, &mut out);
        out
    }

    // Columns: trade, bestBidAsk, depth, depth20.

    #[test]
    fn a_stream_silent_while_its_symbol_moves_is_flagged_with_backoff() {
        let mut watch = SilenceWatch::new(10 * S, vec![0]);
        // Trades silent since 1 s, the book moving.
        assert!(scan(&mut watch, &[[S, 10 * S, 10 * S, 10 * S]], 10 * S).is_empty());
        let at = |now: u64| [[S, now, now, now]];
        assert_eq!(
            scan(&mut watch, &at(12 * S), 12 * S),
            vec![(0, StreamKind::Trade)]
        );
        // Next flag of the same silence after twice the bound, then four times.
        assert!(scan(&mut watch, &at(31 * S), 31 * S).is_empty());
        assert_eq!(scan(&mut watch, &at(32 * S), 32 * S).len(), 1);
        assert!(scan(&mut watch, &at(71 * S), 71 * S).is_empty());
        assert_eq!(scan(&mut watch, &at(72 * S), 72 * S).len(), 1);
        // A trade ends the silence; the next one is flagged after the bound again.
        assert!(scan(&mut watch, &[[73 * S, 73 * S, 73 * S, 73 * S]], 73 * S).is_empty());
        assert_eq!(
            scan(&mut watch, &[[73 * S, 84 * S, 84 * S, 84 * S]], 84 * S).len(),
            1
        );
    }

    #[test]
    fn a_quiet_symbol_or_a_stream_never_seen_is_not_flagged() {
        let mut watch = SilenceWatch::new(10 * S, vec![0, 1]);
        // Symbol 0 quiet as a whole, symbol 1 never sent trades, on another connection.
        let rows = [[S, S, S, S], [0, 50 * S, 50 * S, 50 * S]];
        assert!(scan(&mut watch, &rows, 50 * S).is_empty());
    }

    #[test]
    fn the_same_stream_moving_on_another_symbol_of_the_connection_counts_as_life() {
        let mut watch = SilenceWatch::new(10 * S, vec![0, 0, 1]);
        // Symbol 0's depth silent, its other streams too; symbol 1 (same connection) has depth.
        let rows = [[S, S, S, S], [0, 0, 50 * S, 0], [S, S, S, S]];
        assert_eq!(
            scan(&mut watch, &rows, 50 * S),
            vec![(0, StreamKind::Depth)]
        );
        // Symbol 2 is on another connection: quiet, not flagged.
    }

    #[test]
    fn a_removed_symbol_is_not_silent_until_it_is_subscribed_again() {
        let mut watch = SilenceWatch::new(10 * S, vec![0, 0]);
        watch.forget(0, 2 * S);
        let rows = [[S, S, S, S], [50 * S, 50 * S, 50 * S, 50 * S]];
        assert!(scan(&mut watch, &rows, 50 * S).is_empty());
        // Subscribed again: its depth moves, its trades do not.
        let rows = [
            [S, 60 * S, 60 * S, 60 * S],
            [60 * S, 60 * S, 60 * S, 60 * S],
        ];
        assert_eq!(
            scan(&mut watch, &rows, 60 * S),
            vec![(0, StreamKind::Trade)]
        );
    }

    #[test]
    fn the_clock_stamps_and_reads_back() {
        let clock = StreamClock::new(2);
        clock.stamp(1, StreamKind::Depth, 7);
        clock.stamp(9, StreamKind::Depth, 7);
        let mut out = Vec::new();
        clock.read(&mut out);
        assert_eq!(out, vec![0, 0, 0, 0, 0, 0, 7, 0]);
        assert_eq!(clock.symbols(), 2);
    }
}
