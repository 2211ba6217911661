//! What the reader hands to consumers: a fixed-size event per accepted frame, carrying the
//! frame itself (a reference-counted `Bytes` taken over from the WebSocket layer, so handing it
//! to several consumers copies nothing and allocates nothing), and gap notices for the
//! reliability sidecar. Also what the sidecar and the consumers say to each other: repairs
//! (sidecar to consumer) and book requests (consumer to sidecar).

use bytes::Bytes;

use super::sequence::GapNotice;
use crate::binance::rest::DepthSnapshot;
#[cfg(doc)]
use crate::gaps::GapLog;
use crate::gaps::GapRange;
use crate::stream::StreamKind;

/// One accepted frame.
#[derive(Clone, Debug)]
pub struct FeedEvent {
    /// When the frame was received, monotonic nanoseconds ([`monotonic_ns`]).
    pub recv_time_ns: u64,
    /// Index of the symbol in the configured symbol list.
    pub symbol: u16,
    /// Which stream.
    pub kind: StreamKind,
    /// First id of the event: trade id, `U`, or the book update id.
    pub first_id: i64,
    /// Last id of the event: trade id, `u`, or the book update id.
    pub last_id: i64,
    /// The event's first id not delivered before: `first_id`, or above it when the event
    /// partly overlaps ids an earlier event carried ([`super::sequence::Verdict::Overlap`]).
    /// A consumer that forwards events must skip the ids before it.
    pub first_new_id: i64,
    /// Binance's event time, microseconds.
    pub event_time_us: i64,
    /// The whole SBE frame, header included.
    pub frame: Bytes,
}

impl FeedEvent {
    /// Whether this is an announcement of trade ids lost before the consumer saw any of the
    /// symbol's ([`super::announce`]): a trades event without a frame.
    #[inline]
    pub fn is_announcement(&self) -> bool {
        self.kind == StreamKind::Trade && self.frame.is_empty()
    }

    /// The exchange's time of this event, Unix ms, for clocks that must not run ahead of the
    /// exchange (candles closing on a quiet symbol): trades and depth diffs carry Binance's own
    /// event time on both wires. JSON's bookTicker and depth20 carry none, so their
    /// `event_time_us` is the local receive time, ahead of the exchange's by however far the
    /// reader lags: those give `None`.
    #[inline]
    pub fn exchange_time_ms(&self) -> Option<i64> {
        matches!(self.kind, StreamKind::Trade | StreamKind::Depth)
            .then(|| self.event_time_us.div_euclid(1000))
    }
}

const _: () = assert!(
    std::mem::size_of::<FeedEvent>() <= 80,
    "events stay small: rings hold them by value"
);

/// A closed kline from Binance's kline stream (JSON mode with `[klines] intervals`), for the
/// sidecar's stream kline check: what the exchange says the interval held, to compare with
/// what each sink delivered ([`crate::tally`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamKline {
    /// Index of the symbol in the configured symbol list.
    pub symbol: u16,
    /// The interval's length, ms.
    pub interval_ms: i64,
    /// Open time, Unix ms.
    pub open_ms: i64,
    /// First trade id (`f`).
    pub first_id: i64,
    /// Last trade id (`L`).
    pub last_id: i64,
    /// Number of trades (`n`).
    pub trades: u64,
    /// Base volume (`v`), mantissa at [`crate::tally::VOLUME_EXPONENT`].
    pub volume: i128,
}

impl StreamKline {
    /// The interval's last millisecond.
    pub fn close_ms(&self) -> i64 {
        self.open_ms.saturating_add(self.interval_ms - 1)
    }
}

/// Why a stream needs repair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// Ids are missing on the wire (lost on a reconnect, or never sent).
    Wire,
    /// The event was accepted but consumer `consumer`'s ring was full: that consumer lost it.
    QueueFull {
        /// The consumer's index.
        consumer: usize,
    },
    /// The connection carrying the symbol's streams was lost and none other carries them:
    /// nothing arrives until a new connection delivers (what was missed then shows as a `Wire`
    /// gap). Nothing is known to be missing yet: `gap.first_seen == gap.last_good + 1`, and
    /// `gap.kind` is the depth stream (the book is what goes out of date).
    Disconnected,
    /// A new connection carries the symbol's streams again after `Disconnected` (opened and
    /// subscribed; what was missed meanwhile shows as a `Wire` gap on its first event, but a
    /// quiet symbol may send none). `gap` as for `Disconnected`.
    Reconnected,
    /// The symbol was unsubscribed at run time: its streams stop. `gap` as for `Disconnected`.
    Removed,
    /// The symbol was unsubscribed because its trading stopped (exchangeInfo status HALT or
    /// BREAK, seen by pair discovery). `gap` as for `Disconnected`.
    Halted,
}

impl Cause {
    /// Whether ids are missing (`Wire`, `QueueFull`), as opposed to a stream that stopped.
    pub fn is_gap(self) -> bool {
        matches!(self, Cause::Wire | Cause::QueueFull { .. })
    }

    /// Whether the symbol was unsubscribed (`Removed`, or `Halted`: removed because its
    /// trading stopped).
    pub fn is_removal(self) -> bool {
        matches!(self, Cause::Removed | Cause::Halted)
    }
}

/// A stream needing repair: what is missing and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notice {
    /// The ids concerned.
    pub gap: GapNotice,
    /// Why.
    pub cause: Cause,
}

impl Notice {
    /// The range a gap notice (`Wire`, `QueueFull`) names, for the run's [`GapLog`]; `None`
    /// for a stream that stopped or came back (nothing missing).
    pub fn range(&self, symbol: String) -> Option<GapRange> {
        let cause = match self.cause {
            Cause::Wire => "wire",
            Cause::QueueFull { .. } => "queue_full",
            _ => return None,
        };
        let range = self.gap.missing_range();
        Some(GapRange {
            symbol,
            stream: self.gap.kind.suffix(),
            from: *range.start(),
            to: *range.end(),
            cause,
        })
    }
}

/// What the sidecar hands a consumer through its repair ring.
#[derive(Clone, Debug)]
pub enum Repair {
    /// Trades fetched from REST, as an event like a live one (an SBE trades frame). The
    /// consumer delivers each id once, whichever of the live event and this one came first.
    Event(FeedEvent),
    /// Trade ids `from..=to` of `symbol` will not come (REST could not serve them in time): stop
    /// waiting for them; they are counted as unrepaired.
    GaveUp {
        /// Symbol index.
        symbol: u16,
        /// First id given up on.
        from: i64,
        /// Last id given up on.
        to: i64,
    },
    /// A REST depth snapshot for the consumer's [`BookRequest`] (boxed: repairs stay small).
    Book(Box<BookSnapshot>),
    /// A [`BookRequest`] that could not be served (a check is not retried: the next one will
    /// come).
    BookUnavailable {
        /// Symbol index.
        symbol: u16,
        /// What it was for.
        purpose: Purpose,
    },
    /// The symbol's streams stopped or came back (a lost connection, a new one, a removal):
    /// a book kept from them is not known to be current.
    Stream {
        /// Symbol index.
        symbol: u16,
        /// What happened.
        change: StreamChange,
        /// The last depth update id the reader saw before the change (0 if none).
        last_update_id: i64,
    },
}

impl Repair {
    /// Whether it tells of the symbol's removal (a removed or halted symbol). A consumer takes
    /// its event rings again before applying it: the symbol's last live events were pushed
    /// before the reader's notice that led to this repair, so they are in the rings by now,
    /// and applied after the removal they would start a stale order.
    pub fn is_removal(&self) -> bool {
        matches!(self, Repair::Stream { change, .. } if change.is_removal())
    }
}

/// What happened to a symbol's streams, as the sidecar tells the consumers keeping books.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamChange {
    /// The connection carrying the symbol was lost (reconnecting, with backoff).
    Disconnected,
    /// A new connection carries it again.
    Reconnected,
    /// The symbol was unsubscribed.
    Removed,
    /// The symbol was unsubscribed because its trading stopped (HALT or BREAK).
    Halted,
    /// The depth stream was silent for longer than `sidecar.stream_silence_ms` while the
    /// symbol moved: diffs may have been lost without a sequence gap showing yet; the book is
    /// re-synced.
    Silent,
}

impl StreamChange {
    /// Whether the symbol was unsubscribed (`Removed` or `Halted`).
    pub fn is_removal(self) -> bool {
        matches!(self, StreamChange::Removed | StreamChange::Halted)
    }
}

/// What a depth snapshot is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// To (re)sync the book (Binance's procedure: the snapshot, then the buffered diffs).
    Sync,
    /// The periodic consistency check: compared with the local book at the snapshot's id.
    Check,
}

/// A consumer's request to the sidecar: a depth snapshot of one symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BookRequest {
    /// Symbol index.
    pub symbol: u16,
    /// What for.
    pub purpose: Purpose,
    /// The deepest `limit` wanted (1..=5000): the sidecar asks for less when its weight budget
    /// is short (many symbols syncing at once), never less than `min_limit`.
    pub limit: u32,
    /// The shallowest `limit` that is of use (the levels the consumer publishes).
    pub min_limit: u32,
}

/// A depth snapshot as the sidecar hands it to a consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BookSnapshot {
    /// Symbol index.
    pub symbol: u16,
    /// What it was asked for.
    pub purpose: Purpose,
    /// The `limit` it was fetched with: a side with this many levels may go on beyond them
    /// (see [`crate::book`], the snapshot's edge).
    pub limit: u32,
    /// The snapshot.
    pub snapshot: DepthSnapshot,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_removed_or_halted_stream_is_a_removal() {
        let stream = |change| Repair::Stream {
            symbol: 0,
            change,
            last_update_id: 0,
        };
        assert!(stream(StreamChange::Removed).is_removal());
        assert!(stream(StreamChange::Halted).is_removal());
        for change in [
            StreamChange::Disconnected,
            StreamChange::Reconnected,
            StreamChange::Silent,
        ] {
            assert!(!stream(change).is_removal(), "{change:?}");
        }
        let gave_up = Repair::GaveUp {
            symbol: 0,
            from: 1,
            to: 2,
        };
        assert!(!gave_up.is_removal());
    }
}
