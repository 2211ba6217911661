//! The frame path: everything a reader does with one binary frame, pure of sockets and clocks
//! apart from the latency it records. [`FramePath::on_frame`] decodes in place, checks the
//! sequence, drops duplicates and pushes one [`FeedEvent`] into each consumer's lock-free SPSC
//! ring; a full ring never blocks it (the event is counted as dropped for that consumer and a
//! repair notice goes to the sidecar's ring). [`Held`] and [`FramePath::on_frame_holding`] hold
//! back the frames of a connection running ahead of the one it replaces, so a make-before-break
//! switch reports no false gap and loses no id.
//!
//! Architecture invariant: nothing here logs per frame or allocates per frame (an accepted
//! frame is copied into the reader's [`FramePool`], a chunk allocated per few hundred frames at
//! most, or with `readers.copy_frames = false` its `Bytes` from the WebSocket layer is queued
//! as it is; a frame built in the pool already (JSON transcoded, [`Origin::Pooled`]) is never
//! copied again; each is shared with consumers by reference count; the held queue keeps its
//! capacity). `engine/tests/it/alloc.rs` holds this with a counting
//! allocator.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use hdrhistogram::Histogram;

use super::announce::Announcements;
use super::event::{Cause, FeedEvent, Notice, StreamKline};
use super::json::KlineEvent;
use super::pending::PendingNotices;
use super::pool::FramePool;
use super::sequence::{GapNotice, Sequencer, Verdict};
use super::stats::{ReaderStats, SymbolCount};
use crate::clock::monotonic_ns;
use crate::constants::HELD_FRAMES_MAX;
use crate::idle::Bell;
use crate::metrics::{latency_histogram, record_latency};
use crate::sbe::{self, DecodeError, Limits, spot_stream::Message as Sbe};
use crate::sidecar::silence::StreamClock;
use crate::stream::StreamKind;

/// The frame path: everything a reader does with one binary frame (decode, sequence check,
/// enqueue to every consumer, notices), owned by the reader thread. Public so tests and benches
/// can drive it without sockets.
pub struct FramePath {
    producers: Vec<rtrb::Producer<FeedEvent>>,
    notices: rtrb::Producer<Notice>,
    sequencer: Sequencer,
    /// Configured symbols (bytes) and their indexes, sorted for binary search.
    symbols: Vec<(Box<[u8]>, u16)>,
    stats: Arc<ReaderStats>,
    histogram: Histogram<u64>,
    limits: Limits,
    reported_unknown: bool,
    /// Each consumer's bell (by producer index), then the notice ring's consumer's bell.
    bells: Vec<Bell>,
    /// Which bells to ring at the end of this batch: bit `i` for `bells[i]`.
    to_ring: u64,
    /// Each stream's last receive time, for the sidecar's silence check.
    clock: Option<Arc<StreamClock>>,
    /// Trades lost at a consumer's full ring before it saw any of the symbol's.
    announcements: Announcements,
    /// The reader's frame pool: where accepted wire frames are copied before they are queued
    /// (when `copy`), and where frames built in place are written ([`FramePath::pool`]).
    pool: Option<FramePool>,
    /// Whether accepted [`Origin::Wire`] frames are copied into `pool` (`readers.copy_frames`);
    /// otherwise they are queued as they came (slices of the WebSocket receive buffer).
    copy: bool,
    /// Notices that found the notice ring full, in order: none is dropped; they go out ahead
    /// of any later notice, so the sidecar sees them in the order they happened; a gap notice
    /// is merged into a waiting one of its stream ([`PendingNotices`]).
    pending: PendingNotices,
    /// Closed stream klines for the sidecar (JSON mode with klines); `None`: not consumed.
    klines: Option<rtrb::Producer<StreamKline>>,
}

/// Where a frame's bytes are, which decides whether an accepted frame is copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The WebSocket layer's receive buffer: copied into the pool when accepted, if
    /// `readers.copy_frames`.
    Wire,
    /// Written in the path's own pool ([`FramePath::pool`]): queued as it is.
    Pooled,
}

/// The bit of the notice ring's consumer in [`FramePath`]'s `to_ring`.
const NOTICE_BIT: u64 = 1 << 63;

impl FramePath {
    /// A frame path for `symbols`, filling `producers` (one per consumer) and `notices`.
    pub fn with(
        symbols: &[String],
        group_count_max: u32,
        producers: Vec<rtrb::Producer<FeedEvent>>,
        notices: rtrb::Producer<Notice>,
        stats: Arc<ReaderStats>,
    ) -> Self {
        for index in 0..symbols.len().min(usize::from(u16::MAX) + 1) {
            stats.symbols.ensure(index as u16, producers.len());
        }
        let consumers = producers.len();
        FramePath {
            announcements: Announcements::new(producers.len(), symbols.len()),
            producers,
            notices,
            sequencer: Sequencer::new(symbols.len()),
            symbols: {
                let mut symbols: Vec<(Box<[u8]>, u16)> = symbols
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.as_bytes().to_vec().into_boxed_slice(), i as u16))
                    .collect();
                symbols.sort();
                symbols
            },
            stats,
            histogram: latency_histogram(),
            limits: Limits { group_count_max },
            reported_unknown: false,
            bells: Vec::new(),
            to_ring: 0,
            clock: None,
            pool: None,
            copy: false,
            pending: PendingNotices::new(consumers),
            klines: None,
        }
    }

    /// Hands the closed klines of the kline streams to the sidecar through `klines`.
    pub fn with_klines(mut self, klines: Option<rtrb::Producer<StreamKline>>) -> Self {
        self.klines = klines;
        self
    }

    /// A kline event of a kline stream (JSON mode): a closed one of a known symbol goes to the
    /// sidecar's kline ring (and wakes it with the batch); open updates are not needed. Cold:
    /// once per interval and symbol.
    #[cold]
    pub fn on_kline(&mut self, kline: &KlineEvent) {
        if !kline.closed {
            return;
        }
        let Some(symbol) = self.symbol_index(kline.symbol()) else {
            self.stats.unknown_symbols.bump();
            return;
        };
        self.stats.stream_klines.bump();
        let candle = &kline.candle;
        let closed = StreamKline {
            symbol,
            interval_ms: kline.interval.ms,
            open_ms: candle.open_ms,
            first_id: candle.first_id,
            last_id: candle.last_id,
            trades: candle.trades,
            volume: candle.volume,
        };
        match self.klines.as_mut().map(|ring| ring.push(closed)) {
            Some(Ok(())) => self.to_ring |= NOTICE_BIT,
            _ => self.stats.stream_klines_dropped.bump(),
        }
    }

    /// Copies each accepted frame into `pool` before queueing it (`readers.copy_frames`), so
    /// a queued frame pins only a small chunk, not the receive buffer it came in.
    pub fn with_pool(mut self, pool: Option<FramePool>) -> Self {
        self.copy = pool.is_some();
        self.pool = pool;
        self
    }

    /// The reader's frame pool, for a producer that builds frames in place (the JSON
    /// transcoder): its frames go to [`FramePath::on_frame_from`] as [`Origin::Pooled`] and are
    /// queued without another copy. Made on first use when frames are not copied; that does
    /// not make wire frames copied.
    pub fn pool(&mut self) -> &mut FramePool {
        self.pool.get_or_insert_with(FramePool::default)
    }

    /// What the frame pool has done, if frames are copied.
    pub fn pool_counts(&self) -> Option<super::pool::PoolCounts> {
        self.pool.as_ref().map(FramePool::counts)
    }

    /// Stamps each accepted frame's receive time into `clock` (one relaxed store per frame).
    pub fn with_clock(mut self, clock: Option<Arc<StreamClock>>) -> Self {
        self.clock = clock;
        self
    }

    /// Rings `events[i]` after a batch pushed into consumer `i`'s ring and `notices` after one
    /// pushed a notice (see [`FramePath::wake_consumers`]). Without bells nobody is woken (the
    /// consumers poll).
    pub fn with_bells(mut self, events: Vec<Bell>, notices: Bell) -> Self {
        debug_assert_eq!(events.len(), self.producers.len());
        assert!(
            events.len() < 63,
            "one bit per consumer and one for notices"
        );
        self.bells = events;
        self.bells.push(notices);
        self
    }

    /// Once per socket read batch: wakes each consumer whose ring got something since the last
    /// call, if it announced it is parked. One fence and a load per consumer concerned; a
    /// system call only for a parked one.
    #[inline]
    pub fn wake_consumers(&mut self) {
        if !self.pending.is_empty() {
            self.flush_pending();
        }
        if self.to_ring == 0 || self.bells.is_empty() {
            return;
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let notices = self.bells.len() - 1;
        for (i, bell) in self.bells.iter().enumerate() {
            let bit = if i == notices { NOTICE_BIT } else { 1 << i };
            if self.to_ring & bit != 0 {
                bell.ring_fenced();
            }
        }
        self.to_ring = 0;
    }

    /// Starts accepting frames of `symbol` as index `index` (a symbol added at run time).
    pub fn add_symbol(&mut self, symbol: &str, index: u16) {
        if self.symbol_index(symbol.as_bytes()).is_none() {
            let at = self
                .symbols
                .partition_point(|(s, _)| **s < *symbol.as_bytes());
            self.symbols
                .insert(at, (symbol.as_bytes().to_vec().into_boxed_slice(), index));
        }
        self.sequencer.grow(index as usize + 1);
        self.announcements.grow(index as usize + 1);
        self.stats.symbols.ensure(index, self.producers.len());
        // A symbol subscribed again starts afresh: its absence is not a gap.
        for kind in StreamKind::ALL {
            self.sequencer.reset(index, kind);
        }
        self.announcements.forget(index);
    }

    /// Stops accepting frames of symbol `index` (frames still in flight before the
    /// UNSUBSCRIBE takes effect are counted as unknown symbols and dropped), and tells the
    /// sidecar (`cause`: [`Cause::Removed`], or [`Cause::Halted`] when its trading stopped).
    pub fn forget_symbol(&mut self, index: u16, cause: Cause) {
        self.notify_stream(index, cause);
        self.symbols.retain(|&(_, i)| i != index);
        for kind in StreamKind::ALL {
            self.sequencer.reset(index, kind);
        }
        self.announcements.forget(index);
    }

    /// Tells the sidecar that the symbols of `streams` stopped arriving (their connection was
    /// lost: [`Cause::Disconnected`]) or arrive again (a new connection carries them after a
    /// loss: [`Cause::Reconnected`]). Cold: once per lost or regained connection.
    pub fn connection_changed(&mut self, streams: &[String], cause: Cause) {
        let mut told: Vec<u16> = Vec::new();
        for stream in streams {
            let Some((symbol, _)) = crate::stream::parse_stream_name(stream) else {
                continue;
            };
            let Some(index) = self.symbol_index(symbol.as_bytes()) else {
                continue;
            };
            if !told.contains(&index) {
                told.push(index);
                self.notify_stream(index, cause);
            }
        }
    }

    /// A notice that `symbol`'s streams stopped or came back (nothing missing yet), named by
    /// its depth stream and the last depth update id seen.
    fn notify_stream(&mut self, symbol: u16, cause: Cause) {
        let last_good = self.sequencer.last(symbol, StreamKind::Depth).unwrap_or(0);
        let gap = GapNotice {
            symbol,
            kind: StreamKind::Depth,
            last_good,
            first_seen: last_good.saturating_add(1),
        };
        self.notify(Notice { gap, cause });
    }

    /// This reader's counters.
    pub fn stats(&self) -> &Arc<ReaderStats> {
        &self.stats
    }

    /// Receive-to-enqueue latency of every accepted event so far.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.histogram
    }

    /// The latency histogram, when the reader ends.
    pub fn into_histogram(self) -> Histogram<u64> {
        self.histogram
    }

    /// The index of a configured symbol.
    #[inline]
    fn symbol_index(&self, symbol: &[u8]) -> Option<u16> {
        self.symbols
            .binary_search_by(|(s, _)| (**s).cmp(symbol))
            .ok()
            .map(|at| self.symbols[at].1)
    }

    /// The hot path: one binary frame from the wire, received at `recv_time_ns`
    /// ([`monotonic_ns`]).
    #[inline]
    pub fn on_frame(&mut self, frame: Bytes, recv_time_ns: u64) {
        self.on_frame_from(frame, recv_time_ns, Origin::Wire);
    }

    /// [`FramePath::on_frame`] for a frame whose bytes are where `origin` says.
    #[inline]
    pub fn on_frame_from(&mut self, frame: Bytes, recv_time_ns: u64, origin: Origin) {
        self.stats.frames.bump();
        let message = match sbe::spot_stream::decode_with(&frame, &self.limits) {
            Ok(message) => message,
            Err(e) => return self.on_decode_error(e),
        };
        let Some((symbol_bytes, kind, first_id, last_id, event_time_us)) = summarize(&message)
        else {
            return;
        };
        let Some(symbol) = self.symbol_index(symbol_bytes) else {
            self.stats.unknown_symbols.bump();
            return;
        };
        let counts = &self.stats.symbols;
        counts.add(symbol, kind, SymbolCount::Frames, 1);
        let mut first_new_id = first_id;
        match self.sequencer.check(symbol, kind, first_id, last_id) {
            Verdict::Duplicate => {
                self.stats.duplicates.bump();
                let ids = last_id.saturating_sub(first_id).saturating_add(1).max(0) as u64;
                counts.add(symbol, kind, SymbolCount::DuplicateIds, ids);
                return;
            }
            Verdict::Overlap { first_new } => {
                first_new_id = first_new;
                let ids = first_new.saturating_sub(first_id).max(0) as u64;
                counts.add(symbol, kind, SymbolCount::DuplicateIds, ids);
            }
            Verdict::Gap(gap) => {
                let missing = gap.missing().max(0) as u64;
                self.stats.gaps.bump();
                self.stats.missing_ids.add(missing);
                counts.add(symbol, kind, SymbolCount::Gaps, 1);
                counts.add(symbol, kind, SymbolCount::MissingIds, missing);
                self.notify(Notice {
                    gap,
                    cause: Cause::Wire,
                });
            }
            Verdict::Accept => {}
        }
        if let Some(clock) = &self.clock {
            clock.stamp(symbol, kind, recv_time_ns);
        }
        let frame = match (&mut self.pool, origin) {
            (Some(pool), Origin::Wire) if self.copy => pool.copy(&frame),
            _ => frame,
        };
        let event = FeedEvent {
            recv_time_ns,
            symbol,
            kind,
            first_id,
            last_id,
            first_new_id,
            event_time_us,
            frame,
        };
        self.enqueue(event);
    }

    fn enqueue(&mut self, event: FeedEvent) {
        // The ids a full ring loses: those not delivered before.
        let (symbol, kind, first_id, last_id, recv) = (
            event.symbol,
            event.kind,
            event.first_new_id,
            event.last_id,
            event.recv_time_ns,
        );
        let last = self.producers.len().saturating_sub(1);
        let mut event = Some(event);
        for consumer in 0..self.producers.len() {
            let item = if consumer == last {
                event.take()
            } else {
                event.clone()
            };
            let Some(item) = item else { break };
            let trade = kind == StreamKind::Trade;
            if self.announcements.owing(consumer) {
                self.pay_announcements(consumer, recv);
            }
            // A trades event waits behind its symbol's announcement: lost too while it is owed.
            let pushed = !(trade && self.announcements.owes(consumer, symbol))
                && self.producers[consumer].push(item).is_ok();
            if pushed {
                self.to_ring |= 1 << consumer;
                if trade {
                    self.announcements.reached(consumer, symbol);
                }
            } else {
                if trade {
                    self.announcements.lost(consumer, symbol, first_id, last_id);
                }
                self.stats.queue_drops.bump();
                self.stats.symbols.dropped(symbol, kind, consumer);
                let gap = GapNotice {
                    symbol,
                    kind,
                    last_good: first_id.saturating_sub(1),
                    first_seen: last_id.saturating_add(1),
                };
                self.notify(Notice {
                    gap,
                    cause: Cause::QueueFull { consumer },
                });
            }
        }
        self.stats.events[kind as usize].bump();
        record_latency(&mut self.histogram, monotonic_ns().saturating_sub(recv));
    }

    /// Pushes the announcements `consumer` is owed, as far as its ring has room. A full ring
    /// returns at once: the owed table (one entry per symbol) is scanned only when at least
    /// one announcement goes out, not on every frame while the consumer lags.
    #[cold]
    fn pay_announcements(&mut self, consumer: usize, now_ns: u64) {
        let producer = &mut self.producers[consumer];
        if producer.is_full() {
            return;
        }
        self.announcements
            .pay(consumer, now_ns, |event| producer.push(event).is_ok());
        // Whatever was pushed wakes the consumer with the batch (a spurious ring is harmless).
        self.to_ring |= 1 << consumer;
    }

    /// A notice for the sidecar. One that finds the ring full (or notices already waiting)
    /// waits in `pending` and goes out in order, at the next notice, batch or
    /// [`FramePath::flush_pending`]; a gap notice may be merged there into a waiting one of its
    /// stream (counted in `notice_drops`: the notices not sent as themselves, their ids
    /// repaired through the merged one).
    fn notify(&mut self, notice: Notice) {
        if !self.pending.is_empty() {
            self.flush_pending();
        }
        if self.pending.is_empty() && self.notices.push(notice).is_ok() {
            self.to_ring |= NOTICE_BIT;
        } else if self.pending.push(notice) {
            self.stats.notice_drops.bump();
        }
    }

    /// Pushes the notices waiting for room in the notice ring, oldest first, as far as it has
    /// room; returns how many still wait. The reader calls it once per read batch and once
    /// per [`crate::constants::LIVE_HISTOGRAM_PUBLISH`], so a waiting notice goes out soon
    /// after the sidecar made room even when no frame arrives.
    #[cold]
    pub fn flush_pending(&mut self) -> usize {
        let notices = &mut self.notices;
        let mut sent = false;
        let waiting = self.pending.flush(|notice| {
            let pushed = notices.push(notice).is_ok();
            sent |= pushed;
            pushed
        });
        if sent {
            self.to_ring |= NOTICE_BIT;
        }
        waiting
    }

    #[cold]
    fn on_decode_error(&mut self, error: DecodeError) {
        let counter = match error {
            DecodeError::UnknownTemplate(_) => &self.stats.unknown_templates,
            DecodeError::WrongSchema { .. } => &self.stats.schema_mismatches,
            _ => &self.stats.decode_errors,
        };
        counter.bump();
        if !self.reported_unknown
            && matches!(
                error,
                DecodeError::UnknownTemplate(_) | DecodeError::WrongSchema { .. }
            )
        {
            self.reported_unknown = true;
            tracing::warn!(%error, "a frame of an unknown message or schema (counted; further ones are counted silently)");
        }
    }
}

/// Frames of a connection running ahead of the one it replaces, held back while that one has
/// not yet delivered the ids just before them. Without this, a new connection that runs ahead
/// would make the sequencer report a gap, and the old connection's late copies of the missing
/// ids would then be dropped as duplicates: data lost although it arrived.
///
/// Allocation-free once warm: the queue keeps its capacity between overlaps and releasing
/// rotates it in place.
#[derive(Default)]
pub struct Held {
    /// Held frames in arrival order; at most [`HELD_FRAMES_MAX`].
    frames: VecDeque<HeldFrame>,
    /// The streams with held frames (one entry each), and what each waits for.
    streams: Vec<HeldStream>,
}

struct HeldFrame {
    frame: Bytes,
    origin: Origin,
    recv_time_ns: u64,
    symbol: u16,
    kind: StreamKind,
}

struct HeldStream {
    symbol: u16,
    kind: StreamKind,
    /// The id the sequencer must have seen before the stream's first held frame.
    need: i64,
    /// Set while releasing: the stream caught up (or the release is forced).
    ready: bool,
}

impl Held {
    /// Frames held now.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    fn stream(&self, symbol: u16, kind: StreamKind) -> Option<&HeldStream> {
        self.streams
            .iter()
            .find(|s| s.symbol == symbol && s.kind == kind)
    }
}

impl FramePath {
    /// A frame of a connection that may run ahead of the one it replaces: held if its stream's
    /// previous ids have not arrived yet (or earlier frames of its stream are held), processed
    /// otherwise. Only `@trade` and `@depth` are held: the sampled streams have no contiguity
    /// to wait for.
    pub fn on_frame_holding(&mut self, frame: Bytes, recv_time_ns: u64, held: &mut Held) {
        self.on_frame_holding_from(frame, recv_time_ns, Origin::Wire, held);
    }

    /// [`FramePath::on_frame_holding`] for a frame whose bytes are where `origin` says.
    pub fn on_frame_holding_from(
        &mut self,
        frame: Bytes,
        recv_time_ns: u64,
        origin: Origin,
        held: &mut Held,
    ) {
        if let Ok(message) = sbe::spot_stream::decode_with(&frame, &self.limits)
            && let Some((symbol_bytes, kind, first_id, _, _)) = summarize(&message)
            && matches!(kind, StreamKind::Trade | StreamKind::Depth)
            && let Some(symbol) = self.symbol_index(symbol_bytes)
        {
            let need = first_id.saturating_sub(1);
            let behind = self
                .sequencer
                .last(symbol, kind)
                .is_some_and(|last| last < need);
            let holds = held.stream(symbol, kind).is_some();
            if held.frames.len() >= HELD_FRAMES_MAX {
                self.release(held, true);
            } else if holds || behind {
                if !holds {
                    held.streams.push(HeldStream {
                        symbol,
                        kind,
                        need,
                        ready: false,
                    });
                }
                held.frames.push_back(HeldFrame {
                    frame,
                    origin,
                    recv_time_ns,
                    symbol,
                    kind,
                });
                return;
            }
        }
        self.on_frame_from(frame, recv_time_ns, origin);
    }

    /// Processes the held frames of every stream that has caught up, in arrival order (of all
    /// streams when `force`d: the connection they waited for is gone, so what is still missing
    /// is a real gap).
    pub fn release(&mut self, held: &mut Held, force: bool) {
        if held.frames.is_empty() {
            return;
        }
        let mut any = false;
        for stream in held.streams.iter_mut() {
            stream.ready = force
                || self
                    .sequencer
                    .last(stream.symbol, stream.kind)
                    .is_none_or(|last| last >= stream.need);
            any |= stream.ready;
        }
        if !any {
            return;
        }
        // Rotate once through the queue: ready frames go on, the others back to the end in
        // their order. Popping before pushing keeps the capacity: no allocation.
        for _ in 0..held.frames.len() {
            let Some(frame) = held.frames.pop_front() else {
                break;
            };
            if held
                .stream(frame.symbol, frame.kind)
                .is_some_and(|s| s.ready)
            {
                self.on_frame_from(frame.frame, frame.recv_time_ns, frame.origin);
            } else {
                held.frames.push_back(frame);
            }
        }
        held.streams.retain(|s| !s.ready);
    }
}

/// Symbol, stream, first and last id and event time of a decoded message.
#[inline]
fn summarize<'a>(message: &Sbe<'a>) -> Option<(&'a [u8], StreamKind, i64, i64, i64)> {
    Some(match message {
        Sbe::TradesStreamEvent(m) => {
            let mut trades = m.trades();
            let first = trades.next()?.id();
            let last = trades.last().map_or(first, |t| t.id());
            (m.symbol(), StreamKind::Trade, first, last, m.event_time())
        }
        Sbe::BestBidAskStreamEvent(m) => (
            m.symbol(),
            StreamKind::BestBidAsk,
            m.book_update_id(),
            m.book_update_id(),
            m.event_time(),
        ),
        Sbe::DepthSnapshotStreamEvent(m) => (
            m.symbol(),
            StreamKind::Depth20,
            m.book_update_id(),
            m.book_update_id(),
            m.event_time(),
        ),
        Sbe::DepthDiffStreamEvent(m) => (
            m.symbol(),
            StreamKind::Depth,
            m.first_book_update_id(),
            m.last_book_update_id(),
            m.event_time(),
        ),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sbe::spot_stream::{BoolEnum, TradesStreamEventEncoder};

    /// A trades frame of BTCUSDT with `ids`.
    pub(crate) fn trades(ids: std::ops::RangeInclusive<i64>) -> Bytes {
        let mut buf = vec![0u8; 4096];
        let mut m = TradesStreamEventEncoder::wrap(&mut buf).expect("fits");
        m.event_time(1)
            .transact_time(1)
            .price_exponent(-8)
            .qty_exponent(-8);
        let count = (ids.end() - ids.start() + 1) as u32;
        let mut group = m.trades(count).expect("fits");
        for id in ids {
            group
                .next_entry()
                .expect("fits")
                .id(id)
                .price(1)
                .qty(1)
                .is_buyer_maker(BoolEnum::False);
        }
        m.symbol(b"BTCUSDT").expect("fits");
        let len = m.finish();
        buf.truncate(len);
        buf.into()
    }

    fn state() -> (FramePath, rtrb::Consumer<FeedEvent>, rtrb::Consumer<Notice>) {
        let (producer, events) = rtrb::RingBuffer::new(64);
        let (notices_in, notices) = rtrb::RingBuffer::new(64);
        (
            FramePath::with(
                &["BTCUSDT".to_string()],
                65_535,
                vec![producer],
                notices_in,
                Arc::new(ReaderStats::default()),
            ),
            events,
            notices,
        )
    }

    fn accepted(events: &mut rtrb::Consumer<FeedEvent>) -> Vec<(i64, i64)> {
        std::iter::from_fn(|| events.pop().ok())
            .map(|e| (e.first_id, e.last_id))
            .collect()
    }

    /// With `readers.copy_frames` the queued events hold copies: the WebSocket layer's receive
    /// buffer is free for reuse as soon as the reader is done with its frames, however long a
    /// consumer keeps them. Without, the queued slices pin it.
    #[test]
    fn queued_copies_leave_the_receive_buffer_free_for_reuse() {
        for copy in [false, true] {
            let (path, mut events, _notices) = state();
            let mut path = path.with_pool(copy.then(FramePool::default));
            let (a, b) = (trades(1..=5), trades(6..=7));
            let mut received = bytes::BytesMut::with_capacity(1 << 17);
            received.extend_from_slice(&a);
            received.extend_from_slice(&b);
            let first = received.split_to(a.len()).freeze();
            let second = received.split().freeze();
            path.on_frame(first, 1);
            path.on_frame(second, 2);
            assert_eq!(
                received.try_reclaim(1 << 17),
                copy,
                "receive buffer reusable (copy_frames = {copy})"
            );
            let queued: Vec<Bytes> = std::iter::from_fn(|| events.pop().ok())
                .map(|e| e.frame)
                .collect();
            assert_eq!(queued, vec![a.clone(), b.clone()], "the frames, unchanged");
            assert_eq!(path.pool_counts().is_some(), copy);
        }
    }

    /// A lost connection, a new one after it and a removed symbol are told to the sidecar (the
    /// books kept from the streams need to know): once per symbol, named by the depth stream,
    /// nothing missing yet.
    #[test]
    fn a_lost_connection_and_a_removed_symbol_are_noticed() {
        let (mut state, _events, mut notices) = state();
        let streams = [
            "btcusdt@trade".to_string(),
            "btcusdt@depth".to_string(),
            "ethusdt@depth".to_string(),
        ];
        state.connection_changed(&streams, Cause::Disconnected);
        let notice = notices.pop().expect("a notice");
        assert_eq!(notice.cause, Cause::Disconnected);
        assert_eq!((notice.gap.symbol, notice.gap.kind), (0, StreamKind::Depth));
        assert_eq!(notice.gap.missing(), 0);
        assert!(
            notices.pop().is_err(),
            "once per symbol; ETHUSDT is not configured here"
        );
        state.connection_changed(&streams, Cause::Reconnected);
        assert_eq!(notices.pop().map(|n| n.cause), Ok(Cause::Reconnected));
        state.forget_symbol(0, Cause::Removed);
        let notice = notices.pop().expect("a notice");
        assert_eq!((notice.cause, notice.gap.symbol), (Cause::Removed, 0));
        assert!(!notice.cause.is_gap());
    }

    /// Regression (issue 11): a storm of queue drops filled the notice ring, and the `Removed`
    /// notice that followed was dropped with them, so the symbol's `ob:` stayed `stale=0`.
    /// Control notices now wait beside the ring and go out first, in order.
    /// Regression (found in review): the gap notices of the storm that did not fit were dropped,
    /// so the trades the consumer lost were never repaired (its trade order waited, then gave
    /// up). They now wait too, merged per stream: one notice names every id lost.
    #[test]
    fn a_queue_drop_storm_never_loses_a_notice() {
        let (full, _full_ring) = rtrb::RingBuffer::new(1);
        let (notices_in, mut notices) = rtrb::RingBuffer::new(8);
        let stats = Arc::new(ReaderStats::default());
        let mut path = FramePath::with(
            &["BTCUSDT".to_string()],
            65_535,
            vec![full],
            notices_in,
            stats.clone(),
        );
        for id in 1..=100 {
            path.on_frame(trades(id..=id), id as u64);
        }
        assert_eq!(stats.queue_drops.get(), 99, "one event fitted");
        assert_eq!(
            stats.notice_drops.get(),
            99 - 8 - 1,
            "the ring holds 8, one waits, the others merged into it"
        );
        let streams = ["btcusdt@depth".to_string()];
        path.connection_changed(&streams, Cause::Disconnected);
        path.connection_changed(&streams, Cause::Reconnected);
        path.forget_symbol(0, Cause::Halted);
        assert_eq!(path.flush_pending(), 4, "no room yet: all four wait");
        // More drops while they wait: behind them, never ahead.
        path.add_symbol("BTCUSDT", 0);
        path.on_frame(trades(101..=101), 101);
        assert_eq!(path.flush_pending(), 5);
        // The sidecar drains the ring; the next batch sends what waited, in order.
        let storm: Vec<_> = std::iter::from_fn(|| notices.pop().ok()).collect();
        assert_eq!(storm.len(), 8);
        assert!(
            storm
                .iter()
                .all(|n| n.cause == Cause::QueueFull { consumer: 0 })
        );
        path.wake_consumers();
        let waited: Vec<_> = std::iter::from_fn(|| notices.pop().ok()).collect();
        let causes: Vec<Cause> = waited.iter().map(|n| n.cause).collect();
        let lost = Cause::QueueFull { consumer: 0 };
        assert_eq!(
            causes,
            [
                lost,
                Cause::Disconnected,
                Cause::Reconnected,
                Cause::Halted,
                lost
            ]
        );
        // Every id lost is named: 2..=9 in the ring, 10..=100 merged, then 101.
        let mut named: Vec<i64> = storm
            .iter()
            .chain([&waited[0], &waited[4]])
            .flat_map(|n| n.gap.missing_range())
            .collect();
        named.sort_unstable();
        assert_eq!(named, (2..=101).collect::<Vec<_>>());
        assert_eq!(path.flush_pending(), 0);
        // And with room again, gap notices flow as before.
        path.on_frame(trades(102..=102), 102);
        assert_eq!(notices.pop().map(|n| n.cause), Ok(lost));
    }

    /// Regression (found in review): a replacement connection running ahead of the old one made
    /// the sequencer report a false gap and drop the old connection's late ids as duplicates.
    #[test]
    fn a_replacement_running_ahead_is_held_until_the_old_connection_catches_up() {
        let (mut state, mut events, mut notices) = state();
        let mut held = Held::default();
        state.on_frame(trades(1..=5), 1);
        // The new connection delivers 8..=9 and 10 before the old one delivered 6..=7.
        state.on_frame_holding(trades(8..=9), 2, &mut held);
        state.on_frame_holding(trades(10..=10), 3, &mut held);
        state.release(&mut held, false);
        assert_eq!(accepted(&mut events), [(1, 5)], "held, not yet accepted");
        // The old connection catches up; its copy of 8..=9 is then a duplicate.
        state.on_frame(trades(6..=7), 4);
        state.release(&mut held, false);
        state.on_frame(trades(8..=9), 5);
        assert_eq!(accepted(&mut events), [(6, 7), (8, 9), (10, 10)]);
        assert!(notices.pop().is_err(), "no gap reported");
        assert_eq!(state.stats.duplicates.get(), 1);
    }

    /// Regression (found in review): a trades event partly overlapping what was delivered went
    /// on without saying so, and the Kinesis writer forwarded the already-seen ids again. The
    /// event now carries its first new id (and a full ring reports only the new ids lost).
    #[test]
    fn a_partly_overlapping_event_carries_its_first_new_id() {
        let (mut state, mut events, _notices) = state();
        state.on_frame(trades(1..=5), 1);
        state.on_frame(trades(4..=8), 2);
        state.on_frame(trades(9..=9), 3);
        let got: Vec<(i64, i64, i64)> = std::iter::from_fn(|| events.pop().ok())
            .map(|e| (e.first_id, e.first_new_id, e.last_id))
            .collect();
        assert_eq!(got, [(1, 1, 5), (4, 6, 8), (9, 9, 9)]);
    }

    /// Held frames are released per stream as soon as that stream catches up.
    #[test]
    fn held_streams_are_released_one_by_one() {
        let (mut state, mut events, _notices) = state();
        let mut held = Held::default();
        state.on_frame(trades(1..=5), 1);
        state.on_frame(diff(10, 20), 2);
        state.on_frame_holding(trades(8..=8), 3, &mut held);
        state.on_frame_holding(diff(25, 30), 4, &mut held);
        assert_eq!(accepted(&mut events), [(1, 5), (10, 20)]);
        // The depth stream catches up; the trades stream does not yet.
        state.on_frame(diff(21, 24), 5);
        state.release(&mut held, false);
        assert_eq!(accepted(&mut events), [(21, 24), (25, 30)]);
        state.on_frame(trades(6..=7), 6);
        state.release(&mut held, false);
        assert_eq!(accepted(&mut events), [(6, 7), (8, 8)]);
        assert!(held.frames.is_empty() && held.streams.is_empty());
    }

    /// A depth diff frame of BTCUSDT with `U = first`, `u = last`.
    pub(crate) fn diff(first: i64, last: i64) -> Bytes {
        use crate::sbe::spot_stream::DepthDiffStreamEventEncoder;
        let mut buf = vec![0u8; 256];
        let mut m = DepthDiffStreamEventEncoder::wrap(&mut buf).expect("fits");
        m.event_time(1)
            .first_book_update_id(first)
            .last_book_update_id(last)
            .price_exponent(-8)
            .qty_exponent(-8);
        m.bids(0).expect("fits");
        m.asks(0).expect("fits");
        m.symbol(b"BTCUSDT").expect("fits");
        let len = m.finish();
        buf.truncate(len);
        buf.into()
    }

    /// A full consumer ring never blocks the reader: the event is counted as dropped for that
    /// consumer, a repair notice names the ids, and the other consumer still gets it.
    #[test]
    fn a_full_ring_drops_for_that_consumer_only_and_asks_for_repair() {
        let (full, _full_ring) = rtrb::RingBuffer::new(1);
        let (roomy, mut roomy_ring) = rtrb::RingBuffer::new(16);
        let (notices_in, mut notices) = rtrb::RingBuffer::new(16);
        let stats = Arc::new(ReaderStats::default());
        let mut path = FramePath::with(
            &["BTCUSDT".to_string()],
            65_535,
            vec![full, roomy],
            notices_in,
            stats.clone(),
        );
        for (i, ids) in [1..=2, 3..=3, 4..=6].into_iter().enumerate() {
            path.on_frame(trades(ids), i as u64);
        }
        assert_eq!(accepted(&mut roomy_ring), [(1, 2), (3, 3), (4, 6)]);
        assert_eq!(stats.queue_drops.get(), 2);
        assert_eq!(
            stats.symbols.drops(0, StreamKind::Trade, 0),
            2,
            "per consumer"
        );
        assert_eq!(stats.symbols.drops(0, StreamKind::Trade, 1), 0);
        let dropped: Vec<_> = std::iter::from_fn(|| notices.pop().ok()).collect();
        assert_eq!(dropped.len(), 2);
        assert!(
            dropped
                .iter()
                .all(|n| n.cause == Cause::QueueFull { consumer: 0 })
        );
        assert_eq!(
            (dropped[1].gap.last_good, dropped[1].gap.first_seen),
            (3, 7),
            "ids 4..=6 need repair"
        );
    }

    /// Regression: trades lost at a consumer's full ring before any trade of the symbol
    /// reached it were repaired into the sink's order as duplicates (its order started at the
    /// first event it saw). The consumer is now told, in its ring and ahead of any later trade
    /// of the symbol, and its order waits for the repair and delivers it, in order.
    #[test]
    fn trades_lost_before_the_first_one_reached_a_consumer_are_announced_ahead() {
        let (producer, mut ring) = rtrb::RingBuffer::new(1);
        let (notices_in, mut notices) = rtrb::RingBuffer::new(16);
        let mut path = FramePath::with(
            &["BTCUSDT".to_string()],
            65_535,
            vec![producer],
            notices_in,
            Arc::new(ReaderStats::default()),
        );
        path.on_frame(diff(1, 2), 1); // fills the ring
        path.on_frame(trades(10..=12), 2); // lost: the first trades of BTCUSDT
        path.on_frame(trades(13..=13), 3); // lost too (the announcement does not fit yet)
        assert_eq!(notices.pop().map(|n| n.gap.missing_range()), Ok(10..=12));
        assert_eq!(notices.pop().map(|n| n.gap.missing_range()), Ok(13..=13));
        let diff_event = ring.pop().expect("the diff");
        assert!(!diff_event.is_announcement());
        path.on_frame(trades(14..=15), 4); // the announcement takes the free slot: lost too
        let announced = ring.pop().expect("the announcement");
        assert!(announced.is_announcement());
        assert_eq!((announced.first_id, announced.last_id), (10, 13));
        assert_eq!(notices.pop().map(|n| n.gap.missing_range()), Ok(14..=15));
        path.on_frame(trades(16..=16), 5);
        let live = ring.pop().expect("a live event after the announcement");
        assert_eq!((live.first_id, live.last_id), (16, 16));
        // The sink's order: the announcement first, the live event waits for the repair.
        let mut orders = crate::sink::order::TradeOrders::new(u64::MAX, 16);
        let mut out = Vec::new();
        orders.announce(announced.symbol, announced.first_id, announced.last_id);
        orders.offer(0, 16, 16, (16, 16), 0, &mut out);
        assert!(out.is_empty(), "held until the repair");
        // The sidecar's repairs of 10..=13 and 14..=15 (the notices' ids).
        orders.offer(0, 10, 13, (10, 13), 1, &mut out);
        orders.offer(0, 14, 15, (14, 15), 1, &mut out);
        let delivered: Vec<i64> = out
            .iter()
            .flat_map(|((_, last), from)| *from..=*last)
            .collect();
        assert_eq!(delivered, (10..=16).collect::<Vec<_>>());
        assert_eq!(orders.counts().duplicates, 0);
    }

    /// The per-symbol counters: frames, wire gaps and their ids, duplicate ids (whole and
    /// overlapping), for the symbols given at start and one added at run time (a new chunk).
    #[test]
    fn per_symbol_counters_follow_frames_gaps_and_duplicates() {
        let (mut state, _events, _notices) = state();
        let stats = state.stats.clone();
        let count = |kind, what| stats.symbols.get(0, kind, what);
        state.on_frame(trades(1..=5), 1);
        state.on_frame(trades(4..=6), 2); // overlap: 4 and 5 dropped
        state.on_frame(trades(3..=3), 3); // duplicate
        state.on_frame(trades(10..=10), 4); // gap: 7..=9
        state.on_frame(diff(1, 2), 5);
        assert_eq!(count(StreamKind::Trade, SymbolCount::Frames), 4);
        assert_eq!(count(StreamKind::Trade, SymbolCount::DuplicateIds), 3);
        assert_eq!(count(StreamKind::Trade, SymbolCount::Gaps), 1);
        assert_eq!(count(StreamKind::Trade, SymbolCount::MissingIds), 3);
        assert_eq!(count(StreamKind::Depth, SymbolCount::Frames), 1);
        assert_eq!(count(StreamKind::Depth, SymbolCount::Gaps), 0);
        // BTCUSDT removed and added again as index 100: counted there from then on.
        state.forget_symbol(0, Cause::Removed);
        state.on_frame(trades(11..=11), 6);
        assert_eq!(
            count(StreamKind::Trade, SymbolCount::Frames),
            4,
            "unknown now"
        );
        state.add_symbol("BTCUSDT", 100);
        state.on_frame(trades(12..=12), 7);
        let added = stats
            .symbols
            .get(100, StreamKind::Trade, SymbolCount::Frames);
        assert_eq!(added, 1);
    }

    #[test]
    fn a_real_gap_is_reported_when_the_old_connection_ends_without_the_ids() {
        let (mut state, mut events, mut notices) = state();
        let mut held = Held::default();
        state.on_frame(trades(1..=5), 1);
        state.on_frame_holding(trades(9..=9), 2, &mut held);
        state.release(&mut held, true);
        assert_eq!(accepted(&mut events), [(1, 5), (9, 9)]);
        let notice = notices.pop().expect("a gap");
        assert_eq!((notice.gap.last_good, notice.gap.first_seen), (5, 9));
        assert_eq!(notice.cause, Cause::Wire);
    }
}
