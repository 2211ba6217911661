//! Counters the reader threads bump and the summary, the consumers and the control plane's
//! Prometheus exporter read. Each counter sits on its own cache line so readers on different
//! cores never share one.

use crate::metrics::{Counter, LiveHistogram};
use crate::stream::StreamKind;

/// Counters of one reader thread.
#[derive(Debug, Default)]
pub struct ReaderStats {
    /// Binary frames received.
    pub frames: Counter,
    /// Events accepted, per [`StreamKind`] index.
    pub events: [Counter; 4],
    /// Duplicate frames dropped.
    pub duplicates: Counter,
    /// Gaps detected on the wire.
    pub gaps: Counter,
    /// Ids missing in those gaps.
    pub missing_ids: Counter,
    /// Frames that failed to decode (truncated, malformed).
    pub decode_errors: Counter,
    /// Frames with an unknown template id.
    pub unknown_templates: Counter,
    /// Frames of another schema.
    pub schema_mismatches: Counter,
    /// Frames for a symbol that is not configured.
    pub unknown_symbols: Counter,
    /// Events a consumer's full ring could not take.
    pub queue_drops: Counter,
    /// Gap notices the sidecar's full ring could not take.
    pub notice_drops: Counter,
    /// Connections opened (first and later).
    pub connects: Counter,
    /// Connections lost (closed by the server or the network) or found silent.
    pub reconnects: Counter,
    /// Make-before-break switches.
    pub switches: Counter,
    /// Text frames (JSON control and events).
    pub text_frames: Counter,
    /// SUBSCRIBE/UNSUBSCRIBE requests Binance answered with an error (retried with backoff).
    pub control_errors: Counter,
    /// SUBSCRIBE/UNSUBSCRIBE requests without a reply in time (retried with backoff).
    pub control_timeouts: Counter,
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
