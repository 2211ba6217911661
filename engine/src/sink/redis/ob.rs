//! The order book as the Redis writer keeps and publishes it (`ob:{S}`): synced from REST
//! depth snapshots that the sidecar fetches, kept from depth diffs by Binance's procedure
//! ([`crate::book`]), published whole, re-anchored atomically after every (re)sync, checked
//! against REST periodically, and marked stale whenever it is not known to be current. Pure:
//! events in, decisions out; the writer turns them into commands and requests.
//!
//! # The rule: the book is never wrong with `stale=0`
//! `ob:{S}` says `stale=0` only for a book that equals the exchange's book at its `update_id`
//! (top `book_levels` per side) and that hotpath keeps current. It is marked `stale=1` with a
//! reason:
//! - `starting`: at start, before anything else, on a book a previous run left;
//! - `depth gap`: diffs were missed; the book is synced again;
//! - `snapshot edge`: the top `book_levels` would show a level past the depth of the snapshot
//!   the book was built from (levels beyond it are not known: see [`crate::book`]); synced
//!   again;
//! - `consistency check`: a REST snapshot disagreed with the book at the same update id;
//!   synced again;
//! - `disconnected`: the connection carrying the symbol was lost (reconnecting); cleared by the
//!   first diff after the loss that follows the book without a gap; when the new connection is
//!   up and no such diff came first (a quiet symbol sends none), the book is synced again
//!   (`reconnected`), since changes made during the outage would otherwise go unseen;
//! - `removed`: the symbol was unsubscribed;
//! - `stopped`: hotpath stopped.
//!
//! A book synced from a snapshot is published only by the atomic re-anchor
//! ([`super::reanchor`]): the whole new state (`ob`, `tr` 1 s and 5 s, `feat`) built under
//! temporary keys and swapped in with one `MULTI`/`RENAME`/`EXEC`. Until the swap succeeds the
//! old state stays, marked stale; afterwards each batch writes `ob:{S}` in one `HSET`: every
//! field, but `bids` only when the published top bids changed since the last write Redis is
//! known to hold, `asks` only when the top asks did (and `levels` with either): an unchanged
//! side is the side at the new `update_id` too, so the hash is whole either way. After a failed
//! pipeline, a reconnect or a re-anchor both sides go again.
//!
//! # Consistency checks
//! The writer asks for a check snapshot ([`ObState::start_check`]) and from then on keeps every
//! diff it applies. The snapshot, taken after the request, is at an id `C` at or past the book's
//! id at the request; replaying the kept diffs onto it gives a shadow book, which follows the
//! diffs until it and the book are at one id, and then both tops are compared.

use std::collections::VecDeque;

use sbe_runtime::Decimal;

use crate::book::{DiffOutcome, LocalBook, SnapshotError};

/// A book level: price and quantity mantissas.
pub type Level = (i64, i64);

/// What the writer's settings say of the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BookSettings {
    /// Levels per side published (`redis.book_levels`).
    pub levels: usize,
    /// The deepest sync snapshot wanted (`redis.snapshot_limit`).
    pub snapshot_limit: u32,
    /// The `limit` of check snapshots.
    pub check_limit: u32,
}

impl BookSettings {
    /// Settings for `levels` published and sync snapshots of at most `snapshot_limit` levels;
    /// checks fetch twice the published levels, at least 100 (the cheapest weight: 5) and at
    /// most 5000.
    pub fn new(levels: usize, snapshot_limit: u32) -> BookSettings {
        let doubled = u32::try_from(levels.saturating_mul(2)).unwrap_or(u32::MAX);
        BookSettings {
            levels,
            snapshot_limit,
            check_limit: doubled.clamp(100, 5000),
        }
    }
}

/// A depth diff as the book keeps it (while syncing, or recorded for a check).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diff {
    /// First update id, `U`.
    pub first: i64,
    /// Last update id, `u`.
    pub last: i64,
    /// Binance's event time, microseconds.
    pub event_time_us: i64,
    /// Bid levels (price, qty mantissas; qty 0 removes).
    pub bids: Vec<(i64, i64)>,
    /// Ask levels.
    pub asks: Vec<(i64, i64)>,
}

impl Diff {
    /// The memory it holds, for the budget.
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Diff>() + (self.bids.len() + self.asks.len()) * 16
    }
}

/// The bytes of diffs held across every symbol (sync buffers and check recordings), bounded by
/// `redis.sync_buffer_bytes_max`.
#[derive(Debug)]
pub struct DiffBudget {
    used: usize,
    max: usize,
    /// Diffs dropped to keep within the bound.
    pub dropped: u64,
}

impl DiffBudget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> DiffBudget {
        DiffBudget {
            used: 0,
            max,
            dropped: 0,
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used
    }

    fn take(&mut self, bytes: usize) {
        self.used = self.used.saturating_add(bytes);
    }

    fn give(&mut self, bytes: usize) {
        self.used = self.used.saturating_sub(bytes);
    }

    fn over(&self) -> bool {
        self.used > self.max
    }
}

/// Where the local book is.
#[derive(Debug)]
enum Sync {
    /// No diff seen yet (or the symbol was removed).
    Idle,
    /// Waiting for a snapshot; diffs buffered meanwhile (`bytes` of them, in the budget).
    Syncing {
        buffered: VecDeque<Diff>,
        bytes: usize,
    },
    /// In step with the diffs.
    Live(LocalBook),
}

/// Where the Redis copy of the live book stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Anchor {
    /// Not published since the last sync: a re-anchor is due from `not_before_us` on.
    Due { not_before_us: i64 },
    /// Re-anchor `attempt` is in flight; `stale_marks` is the count of stale marks when it
    /// started (one made since means the state it publishes is stale again).
    InFlight { attempt: u64, stale_marks: u64 },
    /// Published: whole-book writes keep it current.
    Done,
    /// Built from a snapshot while the depth stream is silent: not published (the book stays
    /// marked stale) until a diff applies to it, which shows the stream flows again. A snapshot
    /// alone is exact only at its own update id, and a silent stream would not carry what
    /// changes after it.
    AwaitingDiff,
}

/// A consistency check in progress.
#[derive(Debug)]
enum Check {
    /// Requested: every diff applied since is kept (`bytes`, in the budget).
    Recording { history: Vec<Diff>, bytes: usize },
    /// The snapshot was ahead of the book: the shadow follows the diffs until they meet.
    Following { shadow: LocalBook },
}

/// Why the book is stale.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stale {
    reason: String,
    /// For `disconnected`: the last update id seen before the loss; the first diff past it
    /// that follows the book clears the mark.
    clears_after: Option<i64>,
}

/// What happened to the book that the writer counts or logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BookEvent {
    /// Synced again after a gap, an edge or a mismatch (not counted for the first sync).
    Resync,
    /// A consistency check agreed at this update id.
    CheckPassed(i64),
    /// A consistency check disagreed (the book is synced again).
    CheckMismatch(String),
    /// A consistency check could not conclude.
    CheckInconclusive(&'static str),
    /// Diffs buffered for a sync were dropped to keep within the byte budget.
    BufferDropped(usize),
}

/// What a sync snapshot did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotOutcome {
    /// The book is live (a re-anchor is due).
    Live,
    /// The snapshot cannot start the book (older than the first diff kept, or too shallow for
    /// the published levels): fetch another.
    Again(&'static str),
    /// The book was not waiting for one.
    Unwanted,
}

/// Whether the writer should ask for a sync snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wants {
    /// Nothing.
    Nothing,
    /// A REST depth snapshot, to (re)sync the book.
    Snapshot,
}

/// One symbol's book, its Redis copy's standing and its checks.
#[derive(Debug)]
pub struct ObState {
    settings: BookSettings,
    sync: Sync,
    anchor: Anchor,
    anchor_attempts: u64,
    check: Option<Check>,
    stale: Option<Stale>,
    stale_since_us: i64,
    stale_marks: u64,
    /// Diffs with `u` at or below this are ignored (from before a removal).
    ignore_through: Option<i64>,
    /// The connection was lost and is not known to be back: nothing is published.
    disconnected: bool,
    /// The snapshot being fetched may have been taken before the reconnect: refetch.
    discard_snapshot: bool,
    /// The depth stream was found silent and no diff has come since: a book built from a
    /// snapshot now waits for a diff before it is published ([`Anchor::AwaitingDiff`]).
    stream_silent: bool,
    event_time_us: i64,
    snapshot_update_id: i64,
    synced_at_us: i64,
    checked_update_id: i64,
    checked_at_us: i64,
    synced_once: bool,
    /// A sync snapshot request is outstanding.
    pub fetching: bool,
    /// The whole book waits to be written.
    pub book_dirty: bool,
    /// The stale mark waits to be written.
    pub stale_dirty: bool,
    /// What happened, for the writer to count (drained by it).
    pub events: Vec<BookEvent>,
    /// The live book's top `levels` a side, best first (empty when not live), and whether they
    /// match the book now ([`ObState::refresh_top`]). Kept to reuse their memory.
    top_bids: Vec<(i64, i64)>,
    top_asks: Vec<(i64, i64)>,
    top_fresh: bool,
    /// The sides Redis holds, as the writes carried them, at `published_exponents`; `None`: not
    /// known to be what Redis holds (nothing written yet, a write that may not have landed, a
    /// re-anchor). A whole write leaves out each side equal to its published one.
    published_bids: Vec<(i64, i64)>,
    published_asks: Vec<(i64, i64)>,
    published_exponents: Option<(i8, i8)>,
}

impl ObState {
    /// A book not known yet, marked stale `starting` (so a previous run's book is marked at
    /// once).
    pub fn new(settings: BookSettings) -> ObState {
        let mut ob = ObState {
            settings,
            sync: Sync::Idle,
            anchor: Anchor::Due { not_before_us: 0 },
            anchor_attempts: 0,
            check: None,
            stale: None,
            stale_since_us: 0,
            stale_marks: 0,
            ignore_through: None,
            disconnected: false,
            discard_snapshot: false,
            stream_silent: false,
            event_time_us: 0,
            snapshot_update_id: 0,
            synced_at_us: 0,
            checked_update_id: 0,
            checked_at_us: 0,
            synced_once: false,
            fetching: false,
            book_dirty: false,
            stale_dirty: false,
            events: Vec::new(),
            top_bids: Vec::new(),
            top_asks: Vec::new(),
            top_fresh: false,
            published_bids: Vec::new(),
            published_asks: Vec::new(),
            published_exponents: None,
        };
        ob.mark_stale("starting: not yet synced in this run".into(), None);
        ob
    }

    /// The settings.
    pub fn settings(&self) -> BookSettings {
        self.settings
    }

    /// The live book, if in step with the diffs.
    pub fn live(&self) -> Option<&LocalBook> {
        match &self.sync {
            Sync::Live(book) => Some(book),
            _ => None,
        }
    }

    /// Brings [`ObState::top`] up to the book (a copy of the top levels, only when the book
    /// changed since).
    pub fn refresh_top(&mut self) {
        if self.top_fresh {
            return;
        }
        self.top_fresh = true;
        match &self.sync {
            Sync::Live(book) => {
                book.top_into(self.settings.levels, &mut self.top_bids, &mut self.top_asks);
            }
            _ => {
                self.top_bids.clear();
                self.top_asks.clear();
            }
        }
    }

    /// The live book's top levels (bids, asks; best first; empty when not live) as of the last
    /// [`ObState::refresh_top`].
    pub fn top(&self) -> (&[Level], &[Level]) {
        (&self.top_bids, &self.top_asks)
    }

    /// Whether the book is marked stale.
    pub fn is_stale(&self) -> bool {
        self.stale.is_some()
    }

    /// The stale reason, if stale.
    pub fn stale_reason(&self) -> Option<&str> {
        self.stale.as_ref().map(|s| s.reason.as_str())
    }

    /// Whether a re-anchor is in flight.
    pub fn anchoring(&self) -> bool {
        matches!(self.anchor, Anchor::InFlight { .. })
    }

    /// Marks the book stale for `reason` (written at once). `clears_after`: see [`Stale`].
    pub fn mark_stale(&mut self, reason: String, clears_after: Option<i64>) {
        if self.stale.is_none() {
            self.stale_since_us = 0;
        }
        self.stale = Some(Stale {
            reason,
            clears_after,
        });
        self.stale_marks += 1;
        self.stale_dirty = true;
    }

    /// The stale mark's start time is the first write of it (`now_us`), if not set.
    fn stale_since(&mut self, now_us: i64) -> i64 {
        if self.stale_since_us == 0 {
            self.stale_since_us = now_us;
        }
        self.stale_since_us
    }

    /// Starts a sync: the live book (if any) is dropped, diffs are buffered from `first` on.
    fn resync(&mut self, first: Option<Diff>, budget: &mut DiffBudget) -> Wants {
        self.cancel_check(budget);
        self.release_buffer(budget);
        let mut buffered = VecDeque::new();
        let mut bytes = 0;
        if let Some(diff) = first {
            bytes = diff.bytes();
            budget.take(bytes);
            buffered.push_back(diff);
        }
        if self.synced_once {
            self.events.push(BookEvent::Resync);
        }
        self.sync = Sync::Syncing { buffered, bytes };
        self.top_fresh = false;
        self.anchor = Anchor::Due { not_before_us: 0 };
        self.book_dirty = false;
        if self.fetching {
            Wants::Nothing
        } else {
            Wants::Snapshot
        }
    }

    fn release_buffer(&mut self, budget: &mut DiffBudget) {
        if let Sync::Syncing { bytes, .. } = &self.sync {
            budget.give(*bytes);
        }
    }

    /// Applies one depth diff (copied only when it is kept: buffered for a sync, or recorded
    /// for a check).
    pub fn on_diff(&mut self, diff: &Diff, budget: &mut DiffBudget) -> Wants {
        self.stream_silent = false;
        if self.ignore_through.is_some_and(|id| diff.last <= id) {
            return Wants::Nothing;
        }
        self.ignore_through = None;
        let outcome = match &mut self.sync {
            Sync::Idle => return self.resync(Some(diff.clone()), budget),
            Sync::Syncing { .. } => return self.buffer(diff.clone(), budget),
            Sync::Live(book) => book.apply_diff(
                diff.first,
                diff.last,
                diff.bids.iter().copied(),
                diff.asks.iter().copied(),
            ),
        };
        match outcome {
            DiffOutcome::Applied => self.applied(diff, budget),
            DiffOutcome::Stale => Wants::Nothing,
            DiffOutcome::Gap { expected, first } => {
                let reason = format!("depth gap: expected update {expected}, got {first}");
                self.mark_stale(reason, None);
                self.resync(Some(diff.clone()), budget)
            }
        }
    }

    /// Buffers a diff while syncing, within the shared byte budget: over it, this symbol's
    /// oldest diffs go (the snapshot that comes may then be too old for what is left, and
    /// another is fetched; the book stays stale meanwhile).
    fn buffer(&mut self, diff: Diff, budget: &mut DiffBudget) -> Wants {
        let Sync::Syncing { buffered, bytes } = &mut self.sync else {
            return Wants::Nothing;
        };
        let size = diff.bytes();
        budget.take(size);
        *bytes += size;
        buffered.push_back(diff);
        let mut dropped = 0;
        while budget.over() && buffered.len() > 1 {
            if let Some(old) = buffered.pop_front() {
                let size = old.bytes();
                budget.give(size);
                *bytes -= size;
                dropped += 1;
            }
        }
        if dropped > 0 {
            budget.dropped += dropped as u64;
            self.events.push(BookEvent::BufferDropped(dropped));
        }
        if self.fetching {
            Wants::Nothing
        } else {
            Wants::Snapshot
        }
    }

    /// After a diff applied to the live book: the disconnection mark, the check, the edge.
    fn applied(&mut self, diff: &Diff, budget: &mut DiffBudget) -> Wants {
        self.event_time_us = diff.event_time_us;
        self.book_dirty = true;
        self.top_fresh = false;
        let follows_reconnect = self
            .stale
            .as_ref()
            .and_then(|s| s.clears_after)
            .is_some_and(|after| diff.first > after);
        if follows_reconnect {
            // The connection is back and nothing was missed: the book is current.
            self.disconnected = false;
            if self.anchor == Anchor::Done {
                self.stale = None;
                self.stale_dirty = false;
            }
        }
        if self.anchor == Anchor::AwaitingDiff {
            // The stream flows again and follows the book built while it was silent.
            self.anchor = Anchor::Due { not_before_us: 0 };
        }
        if let Some(wants) = self.follow_check(diff, budget) {
            return wants;
        }
        let Sync::Live(book) = &self.sync else {
            return Wants::Nothing;
        };
        let levels = self.settings.levels;
        if !book.covers_top(levels) {
            let reason = format!(
                "snapshot edge: at update {} the top {levels} levels reach past the depth of \
                 the snapshot the book was built from (update {})",
                book.update_id(),
                self.snapshot_update_id
            );
            self.mark_stale(reason, None);
            return self.resync(None, budget);
        }
        Wants::Nothing
    }

    /// Applies a sync snapshot at `last_update_id` fetched with `limit` levels per side (levels
    /// as mantissas at this symbol's exponents), then the buffered diffs.
    pub fn on_snapshot(
        &mut self,
        last_update_id: i64,
        bids: Vec<(i64, i64)>,
        asks: Vec<(i64, i64)>,
        limit: u32,
        budget: &mut DiffBudget,
    ) -> Result<SnapshotOutcome, SnapshotError> {
        self.fetching = false;
        let Sync::Syncing { buffered, .. } = &self.sync else {
            return Ok(SnapshotOutcome::Unwanted);
        };
        if std::mem::take(&mut self.discard_snapshot) {
            return Ok(SnapshotOutcome::Again(
                "the snapshot may predate the reconnect",
            ));
        }
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut book = LocalBook::from_partial_snapshot(last_update_id, bids, asks, limit)?;
        let mut event_time = self.event_time_us;
        for diff in buffered {
            match book.apply_diff(
                diff.first,
                diff.last,
                diff.bids.iter().copied(),
                diff.asks.iter().copied(),
            ) {
                DiffOutcome::Applied => event_time = diff.event_time_us,
                DiffOutcome::Stale => {}
                DiffOutcome::Gap { .. } => {
                    return Ok(SnapshotOutcome::Again(
                        "the snapshot is older than the first diff kept",
                    ));
                }
            }
        }
        if !book.covers_top(self.settings.levels) {
            return Ok(SnapshotOutcome::Again(
                "the snapshot is too shallow for the published levels",
            ));
        }
        self.release_buffer(budget);
        self.event_time_us = event_time;
        self.snapshot_update_id = last_update_id;
        self.sync = Sync::Live(book);
        self.top_fresh = false;
        self.anchor = if self.stream_silent {
            Anchor::AwaitingDiff
        } else {
            Anchor::Due { not_before_us: 0 }
        };
        self.synced_once = true;
        Ok(SnapshotOutcome::Live)
    }

    /// The symbol's streams stopped: its connection was lost after update `last_update_id`
    /// (`removed` false), or it was unsubscribed (`removed` true: the book is dropped, and
    /// diffs up to that id still in flight are ignored).
    pub fn on_stopped(&mut self, removed: bool, last_update_id: i64, budget: &mut DiffBudget) {
        if removed {
            self.mark_stale("removed: the symbol was unsubscribed".into(), None);
            self.cancel_check(budget);
            self.release_buffer(budget);
            self.sync = Sync::Idle;
            self.top_fresh = false;
            self.anchor = Anchor::Due { not_before_us: 0 };
            self.fetching = false;
            self.book_dirty = false;
            self.ignore_through = Some(last_update_id);
        } else {
            let reason = format!(
                "disconnected: the connection was lost after update {last_update_id}; \
                 reconnecting"
            );
            self.mark_stale(reason, Some(last_update_id));
            self.disconnected = true;
        }
    }

    /// A new connection carries the symbol again after a loss. Unless a diff following the
    /// book already showed that nothing was missed, the book is synced again: changes made
    /// during the outage show as a gap only on the next diff, and a quiet symbol may send none.
    pub fn on_reconnected(&mut self, budget: &mut DiffBudget) -> Wants {
        if !std::mem::take(&mut self.disconnected) {
            return Wants::Nothing;
        }
        match &self.sync {
            Sync::Idle => Wants::Nothing,
            Sync::Syncing { .. } if self.fetching => {
                self.discard_snapshot = true;
                Wants::Nothing
            }
            Sync::Syncing { .. } => Wants::Snapshot,
            Sync::Live(_) => {
                self.mark_stale(
                    "reconnected: syncing the book again after the connection was lost".into(),
                    None,
                );
                self.resync(None, budget)
            }
        }
    }

    /// The depth stream was silent while the symbol moved: diffs may be lost without a gap
    /// showing yet. A live book is marked stale and synced again; the new book is re-anchored
    /// (published) only once a diff follows it, so while the stream stays silent the book stays
    /// marked stale. A book syncing, idle, reconnecting, or already waiting for a diff is left
    /// to that, but the silence is remembered: the book its sync builds waits for a diff too.
    pub fn on_silent(&mut self, budget: &mut DiffBudget) -> Wants {
        self.stream_silent = true;
        if self.disconnected
            || !matches!(self.sync, Sync::Live(_))
            || self.anchor == Anchor::AwaitingDiff
        {
            return Wants::Nothing;
        }
        self.mark_stale(
            "silent: no depth diff while the symbol moved; syncing the book again".into(),
            None,
        );
        self.resync(None, budget)
    }

    /// Whether a re-anchor should start now: never while the connection is lost, nor before a
    /// stale mark waiting to be written has gone out (the swap must not overtake it).
    pub fn reanchor_due(&self, now_us: i64) -> bool {
        !self.disconnected
            && !self.stale_dirty
            && matches!(self.sync, Sync::Live(_))
            && matches!(self.anchor, Anchor::Due { not_before_us } if now_us >= not_before_us)
    }

    /// When a failed re-anchor of the live book is tried again (Unix µs): a time nothing else
    /// signals. `None`: no retry waits for a time.
    pub fn reanchor_retry_at(&self) -> Option<i64> {
        match self.anchor {
            Anchor::Due { not_before_us }
                if not_before_us > 0
                    && !self.disconnected
                    && matches!(self.sync, Sync::Live(_)) =>
            {
                Some(not_before_us)
            }
            _ => None,
        }
    }

    /// Starts a re-anchor: the `ob` fields of the new state (stale 0, at the book's update id)
    /// and the attempt number to report back with. `None` when the book is not live.
    pub fn begin_reanchor(
        &mut self,
        exponents: (i8, i8),
        now_us: i64,
    ) -> Option<(u64, Vec<(&'static str, String)>)> {
        let Sync::Live(_) = &self.sync else {
            return None;
        };
        self.anchor_attempts += 1;
        let attempt = self.anchor_attempts;
        self.anchor = Anchor::InFlight {
            attempt,
            stale_marks: self.stale_marks,
        };
        self.synced_at_us = now_us;
        // The swap writes the sides whole; whether it lands is known only later.
        self.published_exponents = None;
        self.refresh_top();
        let fields = self.book_fields(exponents, now_us, (true, true))?;
        Some((attempt, fields))
    }

    /// A re-anchor finished: `swapped` or not (then tried again from `retry_at_us`). Returns
    /// whether it was the book's current re-anchor (not overtaken by a resync meanwhile).
    pub fn end_reanchor(&mut self, attempt: u64, swapped: bool, retry_at_us: i64) -> bool {
        let current = matches!(self.anchor, Anchor::InFlight { attempt: a, .. } if a == attempt);
        if let (true, Anchor::InFlight { stale_marks, .. }) = (current, self.anchor) {
            if swapped {
                self.anchor = Anchor::Done;
                // Written since the swap's state was built, or stale again since: write again.
                self.book_dirty = true;
                if self.stale_marks == stale_marks {
                    self.stale = None;
                }
            } else {
                self.anchor = Anchor::Due {
                    not_before_us: retry_at_us,
                };
            }
        }
        // Whatever the swap did, a stale mark made meanwhile must land after it.
        self.stale_dirty = self.stale.is_some();
        current
    }

    /// The fields of `ob:{S}` for the live book, `stale` 0, from [`ObState::top`]: `bids` when
    /// `sides.0`, `asks` when `sides.1`, `levels` with either (Redis holds a side left out
    /// already), and every other field.
    fn book_fields(
        &self,
        (pe, qe): (i8, i8),
        now_us: i64,
        (bids, asks): (bool, bool),
    ) -> Option<Vec<(&'static str, String)>> {
        let Sync::Live(book) = &self.sync else {
            return None;
        };
        let levels = |side: &[(i64, i64)]| {
            let mut out = String::with_capacity(2 + side.len() * 40);
            out.push('[');
            for (i, (p, q)) in side.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                // Without `write!`: 80 decimals per write of a 20-level book.
                out.push_str("[\"");
                Decimal::new(*p, pe).push_to(&mut out);
                out.push_str("\",\"");
                Decimal::new(*q, qe).push_to(&mut out);
                out.push_str("\"]");
            }
            out.push(']');
            out
        };
        let mut fields = Vec::with_capacity(13);
        fields.push(("update_id", book.update_id().to_string()));
        if bids {
            fields.push(("bids", levels(&self.top_bids)));
        }
        if asks {
            fields.push(("asks", levels(&self.top_asks)));
        }
        if bids || asks {
            let depth = self.top_bids.len().max(self.top_asks.len());
            fields.push(("levels", depth.to_string()));
        }
        fields.extend([
            ("event_time_us", self.event_time_us.to_string()),
            ("snapshot_update_id", self.snapshot_update_id.to_string()),
            ("synced_at_us", self.synced_at_us.to_string()),
            ("checked_update_id", self.checked_update_id.to_string()),
            ("checked_at_us", self.checked_at_us.to_string()),
            ("written_at_us", now_us.to_string()),
            ("stale", "0".to_string()),
            ("stale_reason", String::new()),
            ("stale_since_us", String::new()),
        ]);
        Some(fields)
    }

    /// Whether something waits to be written: a stale mark, or a changed book that is
    /// published and current.
    pub fn dirty(&self) -> bool {
        self.stale_dirty || (self.book_dirty && self.stale.is_none() && self.anchor == Anchor::Done)
    }

    /// The `ob:{S}` fields to write now (in one `HSET`), if the book is published, current and
    /// changed: every field, but `bids` only when the top bids differ from what Redis is known
    /// to hold, `asks` only when the top asks do, `levels` with either. Readers see a whole
    /// state either way: an unchanged side is the side at the new `update_id` too.
    pub fn whole_write(
        &mut self,
        exponents: (i8, i8),
        now_us: i64,
    ) -> Option<Vec<(&'static str, String)>> {
        if !self.book_dirty || self.stale.is_some() || self.anchor != Anchor::Done {
            return None;
        }
        self.book_dirty = false;
        self.refresh_top();
        let sides = self.top_changed(exponents);
        if sides.0 {
            self.published_bids.clone_from(&self.top_bids);
        }
        if sides.1 {
            self.published_asks.clone_from(&self.top_asks);
        }
        self.published_exponents = Some(exponents);
        self.book_fields(exponents, now_us, sides)
    }

    /// Whether the top bids and the top asks (as of [`ObState::refresh_top`]) at `exponents`
    /// differ from what Redis is known to hold: both when that is not known (nothing written
    /// yet, a write that may not have landed, a re-anchor, other exponents).
    pub fn top_changed(&self, exponents: (i8, i8)) -> (bool, bool) {
        if self.published_exponents != Some(exponents) {
            return (true, true);
        }
        (
            self.published_bids != self.top_bids,
            self.published_asks != self.top_asks,
        )
    }

    /// The stale mark to write now (`reason`, `stale_since_us`), if one waits.
    pub fn stale_write(&mut self, now_us: i64) -> Option<(String, i64)> {
        if !self.stale_dirty {
            return None;
        }
        self.stale_dirty = false;
        let since = self.stale_since(now_us);
        self.stale.as_ref().map(|s| (s.reason.clone(), since))
    }

    /// After a failed pipeline: the book and the stale mark are written again.
    pub fn rewrite(&mut self) {
        self.book_dirty = self.anchor == Anchor::Done;
        // The last write may not have landed, or Redis lost it: the sides go again.
        self.published_exponents = None;
        self.stale_dirty = self.stale.is_some();
    }

    /// Whether a consistency check may start: a published, current book with none running.
    pub fn can_check(&self) -> bool {
        matches!(self.sync, Sync::Live(_))
            && self.anchor == Anchor::Done
            && self.stale.is_none()
            && self.check.is_none()
    }

    /// Starts a check (the writer asks the sidecar for a check snapshot): from now on every
    /// applied diff is kept. Returns whether it started.
    pub fn start_check(&mut self) -> bool {
        if !self.can_check() {
            return false;
        }
        self.check = Some(Check::Recording {
            history: Vec::new(),
            bytes: 0,
        });
        true
    }

    /// Whether a check is running.
    pub fn checking(&self) -> bool {
        self.check.is_some()
    }

    /// Drops a running check (its snapshot will not come, or the book is synced again).
    pub fn cancel_check(&mut self, budget: &mut DiffBudget) {
        if let Some(Check::Recording { bytes, .. }) = self.check.take() {
            budget.give(bytes);
        }
    }

    /// A check snapshot at `last_update_id` with `limit` levels per side.
    pub fn on_check(
        &mut self,
        last_update_id: i64,
        bids: Vec<(i64, i64)>,
        asks: Vec<(i64, i64)>,
        limit: u32,
        budget: &mut DiffBudget,
    ) -> Wants {
        let Some(Check::Recording { history, bytes }) = self.check.take() else {
            return Wants::Nothing;
        };
        budget.give(bytes);
        let Sync::Live(book) = &self.sync else {
            self.events
                .push(BookEvent::CheckInconclusive("the book is not live"));
            return Wants::Nothing;
        };
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let Ok(mut shadow) = LocalBook::from_partial_snapshot(last_update_id, bids, asks, limit)
        else {
            self.events.push(BookEvent::CheckInconclusive(
                "the snapshot's update id is out of range",
            ));
            return Wants::Nothing;
        };
        for diff in &history {
            let outcome = shadow.apply_diff(
                diff.first,
                diff.last,
                diff.bids.iter().copied(),
                diff.asks.iter().copied(),
            );
            if let DiffOutcome::Gap { .. } = outcome {
                self.events.push(BookEvent::CheckInconclusive(
                    "the snapshot is older than the diffs kept",
                ));
                return Wants::Nothing;
            }
        }
        match shadow.update_id().cmp(&book.update_id()) {
            std::cmp::Ordering::Equal => self.compare(&shadow, budget),
            std::cmp::Ordering::Greater => {
                self.check = Some(Check::Following { shadow });
                Wants::Nothing
            }
            std::cmp::Ordering::Less => {
                self.events.push(BookEvent::CheckInconclusive(
                    "the snapshot is older than the book",
                ));
                Wants::Nothing
            }
        }
    }

    /// Keeps a running check in step with an applied diff; `Some` when it concluded with a
    /// resync.
    fn follow_check(&mut self, diff: &Diff, budget: &mut DiffBudget) -> Option<Wants> {
        match self.check.as_mut()? {
            Check::Recording { history, bytes } => {
                let size = diff.bytes();
                budget.take(size);
                *bytes += size;
                history.push(diff.clone());
                if budget.over() {
                    self.cancel_check(budget);
                    self.events
                        .push(BookEvent::CheckInconclusive("the diff budget is full"));
                }
                None
            }
            Check::Following { shadow } => {
                let outcome = shadow.apply_diff(
                    diff.first,
                    diff.last,
                    diff.bids.iter().copied(),
                    diff.asks.iter().copied(),
                );
                if let DiffOutcome::Gap { .. } = outcome {
                    self.check = None;
                    self.events.push(BookEvent::CheckInconclusive(
                        "the shadow book missed a diff",
                    ));
                    return None;
                }
                let (shadow_id, book_id) = (
                    shadow.update_id(),
                    self.live().map_or(0, LocalBook::update_id),
                );
                if shadow_id != book_id {
                    return None;
                }
                let Some(Check::Following { shadow }) = self.check.take() else {
                    return None;
                };
                match self.compare(&shadow, budget) {
                    Wants::Nothing => None,
                    wants => Some(wants),
                }
            }
        }
    }

    /// Compares the top levels of the shadow and the book, both at one update id.
    fn compare(&mut self, shadow: &LocalBook, budget: &mut DiffBudget) -> Wants {
        let Sync::Live(book) = &self.sync else {
            return Wants::Nothing;
        };
        let levels = self.settings.levels;
        if !shadow.covers_top(levels) {
            self.events.push(BookEvent::CheckInconclusive(
                "the check snapshot is too shallow",
            ));
            return Wants::Nothing;
        }
        let id = book.update_id();
        let side = match (
            shadow.bids(levels) == book.bids(levels),
            shadow.asks(levels) == book.asks(levels),
        ) {
            (true, true) => {
                self.checked_update_id = id;
                self.events.push(BookEvent::CheckPassed(id));
                return Wants::Nothing;
            }
            (false, true) => "bids",
            (true, false) => "asks",
            (false, false) => "bids and asks",
        };
        let reason = format!(
            "consistency check: at update {id} the top {levels} {side} differ from the REST \
             snapshot's"
        );
        self.events.push(BookEvent::CheckMismatch(reason.clone()));
        self.mark_stale(reason, None);
        self.resync(None, budget)
    }

    /// A passed check's time (the writer's clock), written with the next whole book.
    pub fn checked_at(&mut self, now_us: i64) {
        self.checked_at_us = now_us;
        self.book_dirty = true;
    }
}

/// Marks an existing `ob:{S}` stale, and only an existing one (a mark never creates a book
/// without levels): `stale` 1, `stale_reason`, `stale_since_us`.
const STALE_MARK_SCRIPT: &str = "if redis.call('exists', KEYS[1]) == 1 then return redis.call('hset', KEYS[1], 'stale', '1', 'stale_reason', ARGV[1], 'stale_since_us', ARGV[2]) else return 0 end";

/// The command marking `ob_key` stale for `reason` since `since_us`.
pub fn stale_mark(ob_key: &str, reason: &str, since_us: i64) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(STALE_MARK_SCRIPT)
        .arg(1)
        .arg(ob_key)
        .arg(reason)
        .arg(since_us);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEVELS: usize = 2;

    fn ob() -> (ObState, DiffBudget) {
        (
            ObState::new(BookSettings::new(LEVELS, 5000)),
            DiffBudget::new(1 << 20),
        )
    }

    fn diff(first: i64, last: i64, bids: &[(i64, i64)], asks: &[(i64, i64)]) -> Diff {
        Diff {
            first,
            last,
            event_time_us: last * 1000,
            bids: bids.to_vec(),
            asks: asks.to_vec(),
        }
    }

    /// Bids 10, 9, 8 and asks 11, 12, 13 at update 100, whole (limit 5000), live, published.
    fn published() -> (ObState, DiffBudget) {
        let (mut ob, mut budget) = ob();
        assert_eq!(
            ob.on_diff(&diff(99, 100, &[], &[]), &mut budget),
            Wants::Snapshot
        );
        ob.fetching = true;
        let bids = vec![(10, 1), (9, 1), (8, 1)];
        let asks = vec![(11, 1), (12, 1), (13, 1)];
        let live = ob.on_snapshot(100, bids, asks, 5000, &mut budget);
        assert_eq!(live, Ok(SnapshotOutcome::Live));
        anchor(&mut ob, true);
        assert!(!ob.is_stale());
        (ob, budget)
    }

    /// Runs one re-anchor to its end (a failed one is retried from time 1000), after the stale
    /// mark waiting is written.
    fn anchor(ob: &mut ObState, swapped: bool) {
        ob.stale_write(1);
        assert!(ob.reanchor_due(1_000));
        let (attempt, fields) = ob.begin_reanchor((0, 0), 5).expect("a live book");
        assert!(fields.contains(&("stale", "0".to_string())));
        assert!(ob.anchoring());
        ob.end_reanchor(attempt, swapped, 1_000);
    }

    fn field<'a>(fields: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
        fields
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The sides of `ob:{S}` go only when the published top changed (or Redis may not hold
    /// what was last sent); the other fields, `update_id` first, go with every write.
    #[test]
    fn the_sides_are_written_only_when_the_published_top_changed() {
        let (mut ob, mut budget) = published();
        let first = ob.whole_write((0, 0), 10).expect("a write after the swap");
        assert_eq!(field(&first, "bids"), Some(r#"[["10","1"],["9","1"]]"#));
        assert_eq!(field(&first, "asks"), Some(r#"[["11","1"],["12","1"]]"#));
        assert_eq!(field(&first, "levels"), Some("2"));
        // Below the published two levels: the ids and times go, the sides do not.
        ob.on_diff(&diff(101, 101, &[(8, 5)], &[(13, 5)]), &mut budget);
        let w = ob.whole_write((0, 0), 11).expect("a write");
        assert_eq!(field(&w, "update_id"), Some("101"));
        assert_eq!(field(&w, "written_at_us"), Some("11"));
        assert_eq!(field(&w, "stale"), Some("0"));
        for side in ["bids", "asks", "levels"] {
            assert_eq!(field(&w, side), None, "{side} unchanged");
        }
        // A published bid level changes: the bids go, the asks (unchanged) do not.
        ob.on_diff(&diff(102, 102, &[(9, 2)], &[]), &mut budget);
        let w = ob.whole_write((0, 0), 12).expect("a write");
        assert_eq!(field(&w, "bids"), Some(r#"[["10","1"],["9","2"]]"#));
        assert_eq!(field(&w, "asks"), None);
        assert_eq!(field(&w, "levels"), Some("2"));
        // A change undone before the next write: the top is what Redis holds.
        ob.on_diff(&diff(103, 103, &[(10, 7)], &[]), &mut budget);
        ob.on_diff(&diff(104, 104, &[(10, 1)], &[]), &mut budget);
        let w = ob.whole_write((0, 0), 13).expect("a write");
        assert_eq!(
            (field(&w, "update_id"), field(&w, "bids")),
            (Some("104"), None)
        );
        // A level leaving the top shifts it: the asks go, the bids do not.
        ob.on_diff(&diff(105, 105, &[], &[(11, 0)]), &mut budget);
        let w = ob.whole_write((0, 0), 14).expect("a write");
        assert_eq!(field(&w, "asks"), Some(r#"[["12","1"],["13","5"]]"#));
        assert_eq!(field(&w, "bids"), None);
        // A pipeline that failed (or a reconnect): the sides go again, unchanged as they are.
        ob.rewrite();
        let w = ob.whole_write((0, 0), 15).expect("a write");
        assert!(field(&w, "bids").is_some() && field(&w, "asks").is_some());
        // Other exponents print other text: the sides go again.
        ob.book_dirty = true;
        let w = ob.whole_write((-1, 0), 16).expect("a write");
        assert_eq!(field(&w, "bids"), Some(r#"[["1.0","1"],["0.9","2"]]"#));
        // A re-anchor's swap: the next write carries the sides, unchanged as they are.
        ob.on_diff(&diff(200, 200, &[], &[]), &mut budget);
        assert!(ob.is_stale(), "a gap");
        ob.fetching = true;
        let snapshot = ob.on_snapshot(
            200,
            vec![(10, 1), (9, 2)],
            vec![(12, 1), (13, 1)],
            5000,
            &mut budget,
        );
        assert_eq!(snapshot, Ok(SnapshotOutcome::Live));
        anchor(&mut ob, true);
        let w = ob.whole_write((-1, 0), 17).expect("a write");
        assert!(field(&w, "bids").is_some() && field(&w, "asks").is_some());
        // Nothing is written while stale, and the stale mark never carries sides.
        ob.mark_stale("disconnected: test".into(), Some(200));
        ob.book_dirty = true;
        assert_eq!(ob.whole_write((-1, 0), 18), None);
    }

    /// Issue 11: a change of one side's top writes that side alone, and what Redis is known to
    /// hold of each side is kept apart; after a failed pipeline both go again.
    #[test]
    fn each_side_is_written_only_when_its_own_top_changed() {
        let (mut ob, mut budget) = published();
        assert!(ob.whole_write((0, 0), 10).is_some(), "the first write");
        // The best bid's quantity changes.
        ob.on_diff(&diff(101, 101, &[(10, 3)], &[]), &mut budget);
        let w = ob.whole_write((0, 0), 11).expect("a write");
        assert_eq!(field(&w, "update_id"), Some("101"));
        assert_eq!(field(&w, "bids"), Some(r#"[["10","3"],["9","1"]]"#));
        assert_eq!(field(&w, "asks"), None, "the asks are unchanged");
        // Then the best ask: the bids Redis holds are current, only the asks go.
        ob.on_diff(&diff(102, 102, &[], &[(11, 4)]), &mut budget);
        let w = ob.whole_write((0, 0), 12).expect("a write");
        assert_eq!(field(&w, "bids"), None);
        assert_eq!(field(&w, "asks"), Some(r#"[["11","4"],["12","1"]]"#));
        // Both sides in one batch: both go, in the one write.
        ob.on_diff(&diff(103, 103, &[(9, 5)], &[(12, 6)]), &mut budget);
        let w = ob.whole_write((0, 0), 13).expect("a write");
        assert!(field(&w, "bids").is_some() && field(&w, "asks").is_some());
        // A failed pipeline: Redis may hold neither side of the last writes, both go again.
        ob.on_diff(&diff(104, 104, &[(10, 1)], &[]), &mut budget);
        ob.rewrite();
        let w = ob.whole_write((0, 0), 14).expect("a write");
        assert_eq!(field(&w, "bids"), Some(r#"[["10","1"],["9","5"]]"#));
        assert_eq!(field(&w, "asks"), Some(r#"[["11","4"],["12","6"]]"#));
        assert_eq!(field(&w, "update_id"), Some("104"));
    }

    #[test]
    fn a_new_book_is_marked_stale_before_anything_else() {
        let (mut ob, _) = ob();
        assert!(ob.stale_dirty);
        let (reason, since) = ob.stale_write(7).expect("a stale mark");
        assert!(reason.starts_with("starting"), "{reason}");
        assert_eq!(since, 7);
        assert_eq!(ob.whole_write((0, 0), 7), None, "nothing to publish yet");
    }

    /// Regression of the old writer's rule, kept: a snapshot older than the first buffered
    /// diff cannot start the book, a hostile one is refused, and a gap re-syncs.
    #[test]
    fn a_snapshot_older_than_the_buffered_diffs_is_refused() {
        let (mut ob, mut budget) = ob();
        assert_eq!(
            ob.on_diff(&diff(10, 12, &[(100, 1)], &[]), &mut budget),
            Wants::Snapshot
        );
        ob.fetching = true;
        assert_eq!(
            ob.on_diff(&diff(13, 15, &[(100, 2)], &[]), &mut budget),
            Wants::Nothing
        );
        assert!(budget.used() > 0);
        assert_eq!(
            ob.on_snapshot(5, vec![], vec![], 5000, &mut budget),
            Ok(SnapshotOutcome::Again(
                "the snapshot is older than the first diff kept"
            )),
            "5 + 1 < 10: diffs missing"
        );
        let live = ob.on_snapshot(11, vec![(99, 2)], vec![(101, 3)], 5000, &mut budget);
        assert_eq!(live, Ok(SnapshotOutcome::Live));
        assert_eq!(budget.used(), 0, "the buffer is released");
        assert_eq!(ob.live().map(LocalBook::update_id), Some(15));
        assert!(ob.is_stale(), "stale until the re-anchor swapped it in");
        assert_eq!(
            ob.whole_write((0, 0), 1),
            None,
            "never published by a plain write"
        );
        anchor(&mut ob, true);
        assert!(!ob.is_stale());
        let fields = ob.whole_write((0, 0), 2).expect("written whole");
        assert!(fields.contains(&("update_id", "15".to_string())));
        assert!(fields.contains(&("snapshot_update_id", "11".to_string())));
        // A gap marks the book stale and asks for a new snapshot.
        assert_eq!(
            ob.on_diff(&diff(17, 18, &[], &[]), &mut budget),
            Wants::Snapshot
        );
        assert!(
            ob.stale_reason()
                .is_some_and(|r| r.starts_with("depth gap"))
        );
        assert!(ob.live().is_none());
        ob.fetching = true;
        assert_eq!(
            ob.on_snapshot(i64::MAX, vec![], vec![], 5000, &mut budget),
            Err(SnapshotError {
                last_update_id: i64::MAX
            }),
            "a hostile snapshot is refused"
        );
        assert!(ob.live().is_none(), "still syncing");
        let live = ob.on_snapshot(17, vec![(1, 1)], vec![(2, 1)], 5000, &mut budget);
        assert_eq!(live, Ok(SnapshotOutcome::Live));
        assert_eq!(ob.live().map(LocalBook::update_id), Some(18));
        assert_eq!(ob.events, [BookEvent::Resync]);
    }

    #[test]
    fn a_failed_reanchor_keeps_the_book_stale_until_one_succeeds() {
        let (mut ob, mut budget) = ob();
        ob.on_diff(&diff(1, 1, &[], &[]), &mut budget);
        let live = ob.on_snapshot(1, vec![(1, 1)], vec![(2, 1)], 5000, &mut budget);
        assert_eq!(live, Ok(SnapshotOutcome::Live));
        anchor(&mut ob, false);
        assert!(ob.is_stale());
        assert!(
            ob.stale_dirty,
            "the stale mark is written again after the attempt (the swap may have happened)"
        );
        assert!(!ob.reanchor_due(1_000), "not before the mark went out");
        ob.stale_write(2);
        assert!(!ob.reanchor_due(999), "retried after its delay");
        assert_eq!(
            ob.reanchor_retry_at(),
            Some(1_000),
            "a time the writer wakes for"
        );
        assert!(ob.reanchor_due(1_000));
        anchor(&mut ob, true);
        assert!(!ob.is_stale() && !ob.stale_dirty);
        assert_eq!(ob.reanchor_retry_at(), None, "published");
    }

    #[test]
    fn a_stale_mark_during_a_reanchor_outlives_it() {
        let (mut ob, mut budget) = published();
        // A gap re-syncs, the new book goes live, and its re-anchor starts.
        ob.on_diff(&diff(105, 105, &[], &[]), &mut budget);
        let live = ob.on_snapshot(105, vec![(1, 1)], vec![(2, 1)], 5000, &mut budget);
        assert_eq!(live, Ok(SnapshotOutcome::Live));
        let (attempt, _) = ob.begin_reanchor((0, 0), 0).expect("live");
        // The connection is lost meanwhile.
        ob.on_stopped(false, 105, &mut budget);
        ob.end_reanchor(attempt, true, 0);
        assert!(
            ob.stale_reason()
                .is_some_and(|r| r.starts_with("disconnected"))
        );
        assert!(ob.stale_dirty, "the mark goes out after the swap");
        assert_eq!(ob.whole_write((0, 0), 0), None);
        // A re-anchor that ended after a re-sync started another lineage changes nothing.
        ob.on_diff(&diff(106, 106, &[(1, 0)], &[]), &mut budget);
        assert!(
            !ob.is_stale(),
            "the first diff after the reconnect follows the book"
        );
        ob.on_diff(&diff(108, 108, &[], &[]), &mut budget);
        ob.end_reanchor(attempt, true, 0);
        assert!(ob.is_stale(), "{:?}", ob.stale_reason());
        assert!(!ob.reanchor_due(0), "syncing: nothing to publish");
    }

    /// A silent depth stream: the book is marked stale and synced again, and the book built
    /// from the new snapshot is not published while the stream stays silent (it would not
    /// follow the market); the first diff that applies to it lets the re-anchor go.
    #[test]
    fn a_book_synced_for_a_silent_stream_waits_for_a_diff_before_it_is_published() {
        let (mut ob, mut budget) = published();
        assert_eq!(ob.on_silent(&mut budget), Wants::Snapshot);
        assert!(ob.stale_reason().is_some_and(|r| r.starts_with("silent")));
        ob.fetching = true;
        let live = ob.on_snapshot(110, vec![(10, 1)], vec![(11, 1)], 5000, &mut budget);
        assert_eq!(live, Ok(SnapshotOutcome::Live));
        ob.stale_write(1);
        assert!(!ob.reanchor_due(1_000), "no diff has followed the snapshot");
        assert!(ob.stale_reason().is_some_and(|r| r.starts_with("silent")));
        // Still silent: nothing more is fetched, the book stays as it is, stale.
        assert_eq!(ob.on_silent(&mut budget), Wants::Nothing);
        assert_eq!(ob.whole_write((0, 0), 2), None);
        // A diff older than the snapshot shows the stream but does not follow the book yet.
        ob.on_diff(&diff(105, 108, &[], &[]), &mut budget);
        assert!(!ob.reanchor_due(1_000));
        // The first diff that applies: the re-anchor publishes the book.
        ob.on_diff(&diff(111, 111, &[(10, 2)], &[]), &mut budget);
        anchor(&mut ob, true);
        assert!(!ob.is_stale());
        // A silence after diffs have flowed syncs again as before.
        assert_eq!(ob.on_silent(&mut budget), Wants::Snapshot);
        // Diffs coming while the sync runs show the stream flows: published as usual.
        ob.fetching = true;
        ob.on_diff(&diff(112, 112, &[(10, 3)], &[]), &mut budget);
        let live = ob.on_snapshot(111, vec![(10, 2)], vec![(11, 1)], 5000, &mut budget);
        assert_eq!(live, Ok(SnapshotOutcome::Live));
        ob.stale_write(3);
        assert!(ob.reanchor_due(1_000));
    }

    /// Review 11: a silence found while the book is syncing (after a gap) or while its
    /// connection is lost was ignored, so the book built next was published as current while
    /// the depth stream stayed silent (until the silence was flagged again, up to 16 bounds
    /// later). The silence is remembered: that book too waits for a diff.
    #[test]
    fn a_silence_found_while_syncing_or_disconnected_still_holds_the_next_book() {
        // Syncing after a gap when the stream falls silent.
        let (mut ob, mut budget) = published();
        assert_eq!(
            ob.on_diff(&diff(105, 105, &[], &[]), &mut budget),
            Wants::Snapshot
        );
        ob.fetching = true;
        assert_eq!(
            ob.on_silent(&mut budget),
            Wants::Nothing,
            "a sync is underway"
        );
        let live = ob.on_snapshot(105, vec![(10, 1)], vec![(11, 1)], 5000, &mut budget);
        assert_eq!(live, Ok(SnapshotOutcome::Live));
        ob.stale_write(1);
        assert!(!ob.reanchor_due(1_000), "no diff has followed the snapshot");
        ob.on_diff(&diff(106, 106, &[(10, 2)], &[]), &mut budget);
        anchor(&mut ob, true);
        assert!(!ob.is_stale());
        // Silent while the connection is lost; the reconnect syncs again.
        let (mut ob, mut budget) = published();
        ob.on_stopped(false, 100, &mut budget);
        assert_eq!(ob.on_silent(&mut budget), Wants::Nothing, "reconnecting");
        assert_eq!(ob.on_reconnected(&mut budget), Wants::Snapshot);
        ob.fetching = true;
        let live = ob.on_snapshot(110, vec![(10, 1)], vec![(11, 1)], 5000, &mut budget);
        assert_eq!(live, Ok(SnapshotOutcome::Live));
        ob.stale_write(1);
        assert!(!ob.reanchor_due(1_000), "no diff has followed the snapshot");
        ob.on_diff(&diff(111, 111, &[(10, 2)], &[]), &mut budget);
        anchor(&mut ob, true);
        assert!(!ob.is_stale());
    }

    #[test]
    fn a_disconnection_is_cleared_by_the_first_diff_after_it_only() {
        let (mut ob, mut budget) = published();
        assert_eq!(
            ob.on_diff(&diff(101, 102, &[(10, 2)], &[]), &mut budget),
            Wants::Nothing
        );
        ob.on_stopped(false, 103, &mut budget);
        assert_eq!(
            ob.stale_write(9)
                .map(|(r, _)| r.starts_with("disconnected")),
            Some(true)
        );
        // A diff from before the loss, still in the ring, does not clear it.
        ob.on_diff(&diff(103, 103, &[(10, 3)], &[]), &mut budget);
        assert!(ob.is_stale());
        assert_eq!(ob.whole_write((0, 0), 9), None);
        ob.on_diff(&diff(104, 104, &[(10, 4)], &[]), &mut budget);
        assert!(!ob.is_stale());
        let fields = ob.whole_write((0, 0), 10).expect("written whole again");
        assert!(fields.contains(&("update_id", "104".to_string())));
        assert!(fields.contains(&("stale", "0".to_string())));
    }

    /// A quiet symbol sends no diff after a reconnect: changes made during the outage would go
    /// unseen, so the book is synced again once the new connection is up; a snapshot fetched
    /// during the outage is not trusted.
    #[test]
    fn a_reconnect_without_a_following_diff_resyncs_the_book() {
        let (mut ob, mut budget) = published();
        ob.on_stopped(false, 100, &mut budget);
        assert_eq!(ob.on_reconnected(&mut budget), Wants::Snapshot);
        assert!(
            ob.stale_reason()
                .is_some_and(|r| r.starts_with("reconnected"))
        );
        assert!(ob.live().is_none());
        // A diff following the book first: nothing to do on the reconnect notice.
        let (mut ob, mut budget) = published();
        ob.on_stopped(false, 100, &mut budget);
        ob.on_diff(&diff(101, 101, &[], &[]), &mut budget);
        assert!(!ob.is_stale());
        assert_eq!(ob.on_reconnected(&mut budget), Wants::Nothing);
        // Lost while syncing, the snapshot in flight: it may predate the reconnect.
        let (mut ob, mut budget) = self::ob();
        ob.on_diff(&diff(5, 5, &[], &[]), &mut budget);
        ob.fetching = true;
        ob.on_stopped(false, 5, &mut budget);
        assert_eq!(ob.on_reconnected(&mut budget), Wants::Nothing);
        let again = ob.on_snapshot(9, vec![(1, 1)], vec![(2, 1)], 5000, &mut budget);
        assert_eq!(
            again,
            Ok(SnapshotOutcome::Again(
                "the snapshot may predate the reconnect"
            ))
        );
        let live = ob.on_snapshot(9, vec![(1, 1)], vec![(2, 1)], 5000, &mut budget);
        assert_eq!(live, Ok(SnapshotOutcome::Live));
        ob.stale_write(0);
        assert!(ob.reanchor_due(0));
    }

    #[test]
    fn nothing_is_published_while_the_connection_is_lost() {
        let (mut ob, mut budget) = self::ob();
        ob.on_diff(&diff(5, 5, &[], &[]), &mut budget);
        ob.on_stopped(false, 5, &mut budget);
        let live = ob.on_snapshot(9, vec![(1, 1)], vec![(2, 1)], 5000, &mut budget);
        assert_eq!(live, Ok(SnapshotOutcome::Live));
        assert!(
            !ob.reanchor_due(0),
            "exact, but not kept current: not published"
        );
        assert_eq!(ob.on_reconnected(&mut budget), Wants::Snapshot);
    }

    #[test]
    fn a_removed_symbol_is_stale_and_ignores_diffs_from_before() {
        let (mut ob, mut budget) = published();
        ob.on_stopped(true, 100, &mut budget);
        assert!(ob.stale_reason().is_some_and(|r| r.starts_with("removed")));
        assert!(ob.live().is_none());
        assert_eq!(
            ob.on_diff(&diff(100, 100, &[], &[]), &mut budget),
            Wants::Nothing
        );
        // Subscribed again: a new sync starts.
        assert_eq!(
            ob.on_diff(&diff(500, 501, &[], &[]), &mut budget),
            Wants::Snapshot
        );
    }

    #[test]
    fn the_top_reaching_past_the_snapshots_edge_marks_stale_and_resyncs() {
        let (mut ob, mut budget) = ob();
        ob.on_diff(&diff(100, 100, &[], &[]), &mut budget);
        // Three levels a side, fetched with limit 3: edges at bid 8 and ask 13.
        let live = ob.on_snapshot(
            100,
            vec![(10, 1), (9, 1), (8, 1)],
            vec![(11, 1), (12, 1), (13, 1)],
            3,
            &mut budget,
        );
        assert_eq!(live, Ok(SnapshotOutcome::Live));
        anchor(&mut ob, true);
        assert_eq!(
            ob.on_diff(&diff(101, 101, &[(10, 0)], &[]), &mut budget),
            Wants::Nothing
        );
        assert!(!ob.is_stale(), "9 and 8 are the top 2, inside the edge");
        assert!(ob.whole_write((0, 0), 1).is_some());
        // Bid 9 goes too: the top 2 would show a bid below 8, past the edge.
        assert_eq!(
            ob.on_diff(&diff(102, 102, &[(9, 0), (7, 1)], &[]), &mut budget),
            Wants::Snapshot
        );
        assert!(
            ob.stale_reason()
                .is_some_and(|r| r.starts_with("snapshot edge"))
        );
        assert_eq!(
            ob.whole_write((0, 0), 2),
            None,
            "the uncovered book is never written"
        );
        assert!(ob.live().is_none(), "syncing again");
        // A snapshot too shallow for the published levels cannot start the book.
        ob.fetching = true;
        ob.on_diff(&diff(103, 103, &[], &[]), &mut budget);
        let again = ob.on_snapshot(103, vec![(8, 1)], vec![(11, 1), (12, 1)], 1, &mut budget);
        assert_eq!(
            again,
            Ok(SnapshotOutcome::Again(
                "the snapshot is too shallow for the published levels"
            ))
        );
        assert_eq!(ob.events, [BookEvent::Resync]);
    }

    #[test]
    fn buffered_diffs_stay_within_the_shared_budget() {
        let (mut a, _) = ob();
        let (mut b, _) = ob();
        let one = diff(1, 1, &[(1, 1)], &[]).bytes();
        let mut budget = DiffBudget::new(one * 3);
        a.on_diff(&diff(1, 1, &[(1, 1)], &[]), &mut budget);
        a.fetching = true;
        a.on_diff(&diff(2, 2, &[(1, 1)], &[]), &mut budget);
        b.on_diff(&diff(1, 1, &[(1, 1)], &[]), &mut budget);
        b.fetching = true;
        assert_eq!(budget.used(), one * 3);
        b.on_diff(&diff(2, 2, &[(1, 1)], &[]), &mut budget);
        assert_eq!(budget.used(), one * 3, "b's oldest went");
        assert_eq!(b.events, [BookEvent::BufferDropped(1)]);
        assert_eq!(budget.dropped, 1);
        // The snapshot b had asked for is now too old for what is left: another is fetched.
        let again = b.on_snapshot(0, vec![(1, 1)], vec![(2, 1)], 5000, &mut budget);
        assert!(matches!(again, Ok(SnapshotOutcome::Again(_))));
        assert!(b.live().is_none());
        let live = b.on_snapshot(1, vec![(1, 1)], vec![(2, 1)], 5000, &mut budget);
        assert_eq!(live, Ok(SnapshotOutcome::Live));
        assert_eq!(budget.used(), one * 2, "only a's buffer is left");
    }

    #[test]
    fn a_check_snapshot_behind_the_book_is_replayed_and_agrees() {
        let (mut ob, mut budget) = published();
        assert!(ob.start_check());
        assert!(!ob.start_check(), "one at a time");
        // Diffs after the request; the snapshot was taken at 101, mid-way.
        ob.on_diff(&diff(101, 101, &[(10, 5)], &[]), &mut budget);
        ob.on_diff(&diff(102, 103, &[], &[(11, 0)]), &mut budget);
        // Fetched with limit 3: the edges are bid 8 and ask 13, so the top 2 stay inside.
        let bids = vec![(10, 5), (9, 1), (8, 1)];
        let asks = vec![(11, 1), (12, 1), (13, 1)];
        let wants = ob.on_check(101, bids, asks, 3, &mut budget);
        assert_eq!(wants, Wants::Nothing);
        assert_eq!(ob.events, [BookEvent::CheckPassed(103)]);
        assert!(!ob.checking());
        assert_eq!(budget.used(), 0);
        ob.checked_at(77);
        let fields = ob.whole_write((0, 0), 78).expect("written");
        assert!(fields.contains(&("checked_update_id", "103".to_string())));
        assert!(fields.contains(&("checked_at_us", "77".to_string())));
    }

    #[test]
    fn a_check_snapshot_ahead_of_the_book_waits_for_it() {
        let (mut ob, mut budget) = published();
        assert!(ob.start_check());
        let wants = ob.on_check(
            102,
            vec![(10, 1), (9, 7)],
            vec![(11, 1), (12, 1)],
            5000,
            &mut budget,
        );
        assert_eq!(wants, Wants::Nothing);
        assert!(ob.checking() && ob.events.is_empty(), "following");
        // The diff straddling 102 brings both to 103.
        ob.on_diff(&diff(101, 103, &[(9, 7)], &[]), &mut budget);
        assert_eq!(ob.events, [BookEvent::CheckPassed(103)]);
    }

    #[test]
    fn a_check_that_disagrees_marks_stale_and_resyncs() {
        let (mut ob, mut budget) = published();
        assert!(ob.start_check());
        let wants = ob.on_check(
            100,
            vec![(10, 2), (9, 1)],
            vec![(11, 1), (12, 1)],
            5000,
            &mut budget,
        );
        assert_eq!(wants, Wants::Snapshot);
        assert!(
            matches!(&ob.events[..], [BookEvent::CheckMismatch(r), BookEvent::Resync] if r.contains("bids"))
        );
        assert!(
            ob.stale_reason()
                .is_some_and(|r| r.starts_with("consistency check"))
        );
        assert!(ob.live().is_none());
    }

    #[test]
    fn checks_that_cannot_conclude_say_so() {
        let (mut ob, mut budget) = published();
        // Older than the book at the request: the kept diffs do not reach back to it.
        assert!(ob.start_check());
        ob.on_diff(&diff(101, 101, &[], &[]), &mut budget);
        ob.on_check(90, vec![(10, 1)], vec![(11, 1)], 5000, &mut budget);
        // Too shallow: 1 level per side fetched with limit 1, 2 published.
        assert!(ob.start_check());
        ob.on_check(101, vec![(10, 1)], vec![(11, 1)], 1, &mut budget);
        // Not asked for.
        ob.on_check(101, vec![(10, 1)], vec![(11, 1)], 5000, &mut budget);
        assert_eq!(
            ob.events,
            [
                BookEvent::CheckInconclusive("the snapshot is older than the diffs kept"),
                BookEvent::CheckInconclusive("the check snapshot is too shallow"),
            ]
        );
        assert!(!ob.is_stale());
    }
}
