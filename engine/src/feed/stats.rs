//! Counters the reader threads bump and the summary, the consumers and the control plane's
//! Prometheus exporter read. Each counter sits on its own cache line so readers on different
//! cores never share one.
//!
//! Every counter here has one writer: its reader thread (the frame path and the connection
//! slots run on that thread's single-threaded runtime). So they are [`OwnedCounter`]s, bumped
//! with a relaxed load and store instead of a locked `fetch_add`.

use crate::metrics::{LiveHistogram, OwnedCounter};
use crate::stream::StreamKind;

/// Counters of one reader thread.
#[derive(Debug, Default)]
pub struct ReaderStats {
    /// Binary frames received.
    pub frames: OwnedCounter,
    /// Events accepted, per [`StreamKind`] index.
    pub events: [OwnedCounter; 4],
    /// Duplicate frames dropped.
    pub duplicates: OwnedCounter,
    /// Gaps detected on the wire.
    pub gaps: OwnedCounter,
    /// Ids missing in those gaps.
    pub missing_ids: OwnedCounter,
    /// Frames that failed to decode (truncated, malformed).
    pub decode_errors: OwnedCounter,
    /// Frames with an unknown template id.
    pub unknown_templates: OwnedCounter,
    /// Frames of another schema.
    pub schema_mismatches: OwnedCounter,
    /// Frames for a symbol that is not configured.
    pub unknown_symbols: OwnedCounter,
    /// Events a consumer's full ring could not take.
    pub queue_drops: OwnedCounter,
    /// Gap notices the sidecar's full ring could not take.
    pub notice_drops: OwnedCounter,
    /// Connections opened (first and later).
    pub connects: OwnedCounter,
    /// Connections lost (closed by the server or the network) or found silent.
    pub reconnects: OwnedCounter,
    /// Make-before-break switches.
    pub switches: OwnedCounter,
    /// Text frames (JSON control and events).
    pub text_frames: OwnedCounter,
    /// SUBSCRIBE/UNSUBSCRIBE requests Binance answered with an error (retried with backoff).
    pub control_errors: OwnedCounter,
    /// SUBSCRIBE/UNSUBSCRIBE requests without a reply in time (retried with backoff).
    pub control_timeouts: OwnedCounter,
    /// Receive-to-enqueue latency, a copy of the reader's own histogram published once a
    /// second (never per frame) for the control plane.
    pub wire_to_queue: LiveHistogram,
}

impl ReaderStats {
    /// Events accepted of `kind`.
    pub fn events_of(&self, kind: StreamKind) -> u64 {
        self.events[kind as usize].get()
    }
}
