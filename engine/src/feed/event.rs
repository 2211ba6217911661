//! What the reader hands to consumers: a fixed-size event per accepted frame, carrying the
//! frame itself (a reference-counted `Bytes` taken over from the WebSocket layer, so handing it
//! to several consumers copies nothing and allocates nothing), and gap notices for the
//! reliability sidecar.

use std::sync::OnceLock;
use std::time::Instant;

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

/// Monotonic nanoseconds since the first call in this process: the clock of every latency
/// measurement.
#[inline]
pub fn monotonic_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}
