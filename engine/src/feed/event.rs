//! What the reader hands to consumers: a fixed-size event per accepted frame, carrying the
//! frame itself (a reference-counted `Bytes` taken over from the WebSocket layer, so handing it
//! to several consumers copies nothing and allocates nothing), and gap notices for the
//! reliability sidecar.

use bytes::Bytes;

use super::sequence::GapNotice;
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

const _: () = assert!(
    std::mem::size_of::<FeedEvent>() <= 80,
    "events stay small: rings hold them by value"
);

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
}

/// A stream needing repair: what is missing and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notice {
    /// The ids concerned.
    pub gap: GapNotice,
    /// Why.
    pub cause: Cause,
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
}
