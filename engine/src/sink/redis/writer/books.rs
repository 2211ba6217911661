//! The Redis writer's order-book work beside its drain loop: snapshot requests to the sidecar
//! and the snapshots it sends back, stream notices (lost, back, removed), the periodic consistency checks, and the
//! atomic re-anchors (one task per symbol, [`crate::sink::redis::reanchor`]'s procedure) that
//! publish a book after every (re)sync. The decisions are [`ObState`]'s; this is the shell.

use std::time::Instant;

/// The stale reason of a book whose symbol stopped trading (pair discovery saw exchangeInfo
/// status HALT or BREAK and unsubscribed it).
pub(crate) const HALTED_REASON: &str = "halted: trading stopped (exchangeInfo status HALT or BREAK); unsubscribed until it trades again";

/// The stale reason of the other keys of a symbol unsubscribed at run time (as its book's).
pub(crate) const REMOVED_REASON: &str = "removed: the symbol was unsubscribed";

use redis::Value;

use super::{Conn, Io, Now, Reanchoring, Writer};
use crate::backoff::jittered;
use crate::binance::decimal::mantissas;
use crate::constants::CONTROL_SAMPLE_INTERVAL;
use crate::feed::event::{BookRequest, BookSnapshot, Purpose, Repair, StreamChange};
use crate::sink::BookState;
use crate::sink::redis::ob::{BookEvent, SnapshotOutcome, Wants};
use crate::sink::redis::reanchor::{self, NewState, TempKeys};
use crate::sink::redis::state::Keys;

/// Re-anchors in flight at most (each is two round trips).
const REANCHORS_IN_FLIGHT_MAX: usize = 16;

/// The writer's wall clock, Unix microseconds.
pub(super) use crate::clock::unix_us as now_us;

impl Writer {
    /// What the sidecar sent: fetched trades (ordered like live ones), ids it gave up on,
    /// depth snapshots, stream notices.
    pub(super) fn repair(&mut self, repair: Repair) {
        match repair {
            Repair::Event(event) => {
                self.stats.repaired.add(1);
                self.route(event);
            }
            Repair::GaveUp { symbol, from, to } => {
                let mut released = std::mem::take(&mut self.released);
                self.orders.unfetchable(symbol, from, to, &mut released);
                self.deliver(released);
            }
            Repair::Book(snapshot) => self.on_book(*snapshot),
            Repair::BookUnavailable { symbol, purpose } => {
                let index = usize::from(symbol);
                let Some(state) = self.states.get_mut(index).and_then(Option::as_mut) else {
                    return;
                };
                match purpose {
                    Purpose::Check => state.ob.cancel_check(&mut self.diffs),
                    Purpose::Sync => {
                        state.ob.fetching = false;
                        self.after_book(index, Wants::Snapshot);
                    }
                }
            }
            Repair::Stream {
                symbol,
                change,
                last_update_id,
            } => {
                if change.is_removal() {
                    // Added again, the symbol's trades start a new order (no wait for the ids
                    // traded while it was away).
                    let mut released = std::mem::take(&mut self.released);
                    self.orders.forget(symbol, &mut released);
                    self.deliver(released);
                    self.stats.tally.forget(symbol);
                }
                self.on_stream(usize::from(symbol), change, last_update_id);
            }
        }
    }

    /// A symbol's streams were lost, came back, or were removed.
    fn on_stream(&mut self, index: usize, change: StreamChange, last_update_id: i64) {
        let Some(state) = self.states.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        state.klines_connection(change);
        let wants = match change {
            StreamChange::Disconnected | StreamChange::Removed | StreamChange::Halted => {
                let removed = change != StreamChange::Disconnected;
                state
                    .ob
                    .on_stopped(removed, last_update_id, &mut self.diffs);
                if change == StreamChange::Halted {
                    state.ob.mark_stale(HALTED_REASON.into(), None);
                    state.stop(HALTED_REASON);
                } else if removed {
                    state.stop(REMOVED_REASON);
                }
                Wants::Nothing
            }
            StreamChange::Reconnected => state.ob.on_reconnected(&mut self.diffs),
            StreamChange::Silent => state.ob.on_silent(&mut self.diffs),
        };
        self.after_book(index, wants);
    }

    /// A snapshot the sidecar fetched for this writer.
    fn on_book(&mut self, book: BookSnapshot) {
        let index = usize::from(book.symbol);
        let Some(state) = self.states.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let (pe, qe) = state.exponents();
        let snapshot = &book.snapshot;
        let levels = mantissas(&snapshot.bids, pe, qe)
            .and_then(|b| Ok((b, mantissas(&snapshot.asks, pe, qe)?)));
        let (bids, asks) = match levels {
            Ok(levels) => levels,
            Err(e) => {
                tracing::warn!(symbol = %state.name, "redis: depth snapshot unusable: {e}");
                match book.purpose {
                    Purpose::Sync => state.ob.fetching = false,
                    Purpose::Check => state.ob.cancel_check(&mut self.diffs),
                }
                return self.after_book(index, Wants::Snapshot);
            }
        };
        let id = snapshot.last_update_id;
        tracing::debug!(
            symbol = index,
            purpose = ?book.purpose,
            id,
            limit = book.limit,
            "redis: snapshot received"
        );
        let wants = match book.purpose {
            Purpose::Check => state
                .ob
                .on_check(id, bids, asks, book.limit, &mut self.diffs),
            Purpose::Sync => match state
                .ob
                .on_snapshot(id, bids, asks, book.limit, &mut self.diffs)
            {
                Ok(SnapshotOutcome::Live | SnapshotOutcome::Unwanted) => Wants::Nothing,
                Ok(SnapshotOutcome::Again(why)) => {
                    tracing::debug!(symbol = %state.name, "redis: snapshot at {id}: {why}");
                    Wants::Snapshot
                }
                Err(e) => {
                    tracing::warn!(symbol = %state.name, "redis: depth snapshot refused: {e}");
                    Wants::Snapshot
                }
            },
        };
        self.after_book(index, wants);
    }

    /// After the book of `index` was given something: counts what happened and asks for a
    /// sync snapshot when it wants one and none is outstanding.
    pub(super) fn after_book(&mut self, index: usize, wants: Wants) {
        let Some(state) = self.states.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let book = &self.stats.book;
        for event in std::mem::take(&mut state.ob.events) {
            match event {
                BookEvent::Resync => book.resyncs.add(1),
                BookEvent::CheckPassed(_) => {
                    book.consistency_checks.add(1);
                    state.ob.checked_at(now_us());
                }
                BookEvent::CheckMismatch(reason) => {
                    book.consistency_checks.add(1);
                    book.consistency_mismatches.add(1);
                    tracing::warn!(symbol = %state.name, "redis: {reason}; re-syncing the book");
                }
                BookEvent::CheckInconclusive(why) => {
                    book.consistency_inconclusive.add(1);
                    tracing::debug!(symbol = %state.name, "redis: consistency check: {why}");
                }
                BookEvent::BufferDropped(count) => book.sync_buffer_drops.add(count as u64),
            }
        }
        if wants == Wants::Snapshot && !state.ob.fetching && self.requests.is_some() {
            state.ob.fetching = true;
            self.request(index, Purpose::Sync);
        }
    }

    /// Sends a snapshot request to the sidecar (kept in order when its ring is full).
    fn request(&mut self, index: usize, purpose: Purpose) {
        let Ok(symbol) = u16::try_from(index) else {
            return;
        };
        let settings = self.book;
        let limit = match purpose {
            Purpose::Sync => settings.snapshot_limit,
            Purpose::Check => settings.check_limit,
        };
        let min_limit = u32::try_from(settings.levels)
            .unwrap_or(u32::MAX)
            .min(limit);
        tracing::debug!(symbol, ?purpose, "redis: snapshot requested");
        self.request_outbox.push_back(BookRequest {
            symbol,
            purpose,
            limit,
            min_limit,
        });
        self.flush_requests();
    }

    fn flush_requests(&mut self) -> usize {
        let Some(ring) = self.requests.as_mut() else {
            self.request_outbox.clear();
            return 0;
        };
        let mut sent = 0;
        while let Some(request) = self.request_outbox.pop_front() {
            if let Err(rtrb::PushError::Full(request)) = ring.push(request) {
                self.request_outbox.push_front(request);
                break;
            }
            sent += 1;
        }
        self.requests_pushed |= sent > 0;
        sent
    }

    /// The book work of one round: queued requests, a consistency check when due, finished
    /// re-anchors, and new ones when `due` (the round did work, or its timers are due) or a
    /// re-anchor finished. Nothing new starts once stopping.
    pub(super) async fn book_work(
        &mut self,
        io: &Io,
        stopping: bool,
        now: Now,
        due: bool,
    ) -> usize {
        self.publish_books(now.instant);
        let mut work = self.flush_requests();
        work += self.finish_reanchors().await;
        if stopping {
            return work;
        }
        work += self.schedule_check(now.instant);
        if due || work > 0 {
            work += self.start_reanchors(io, now.unix_us);
        }
        work
    }

    /// Publishes each book's standing for the control plane, at most every
    /// [`CONTROL_SAMPLE_INTERVAL`].
    fn publish_books(&mut self, now: Instant) {
        if now < self.next_book_publish {
            return;
        }
        self.next_book_publish = now + CONTROL_SAMPLE_INTERVAL;
        // The wall-clock anchor the rounds' Unix time is derived from.
        self.wall = (now, now_us());
        let mut books = crate::sync::lock(&self.stats.book.books);
        books.clear();
        books.extend(self.states.iter().flatten().map(|s| BookState {
            symbol: s.name.clone(),
            stale: s.ob.stale_reason().is_some(),
        }));
    }

    /// Starts the consistency check of the next symbol in turn when one is due: every
    /// `redis.consistency_check_s`, each live book once, spread evenly.
    fn schedule_check(&mut self, now: Instant) -> usize {
        let (Some(due), Some(every)) = (self.next_check, self.config.consistency_check) else {
            return 0;
        };
        if now < due || self.requests.is_none() {
            return 0;
        }
        let count = self.states.len();
        let live = self
            .states
            .iter()
            .flatten()
            .filter(|s| s.ob.can_check())
            .count();
        self.next_check = Some(now + every / u32::try_from(live.max(1)).unwrap_or(u32::MAX));
        for step in 0..count {
            let index = (self.check_cursor + step) % count;
            let started = self.states[index]
                .as_mut()
                .is_some_and(|s| s.ob.start_check());
            if started {
                self.check_cursor = index + 1;
                self.request(index, Purpose::Check);
                return 1;
            }
        }
        0
    }

    /// Starts a re-anchor for every book that waits for one (within the in-flight bound), on
    /// its symbol's connection (after the writes before it), once the start's stale marks of
    /// that connection's symbols are in Redis; `now`: the round's Unix time, µs.
    fn start_reanchors(&mut self, io: &Io, now: i64) -> usize {
        let mut started = 0;
        for index in 0..self.states.len() {
            if self.reanchoring.len() >= REANCHORS_IN_FLIGHT_MAX {
                break;
            }
            let held = u16::try_from(index).is_ok_and(|s| self.orders.holds(s));
            let Some(state) = self.states[index].as_mut() else {
                continue;
            };
            let Some(conn) = io.publishing(index) else {
                continue;
            };
            if !state.ob.reanchor_due(now) {
                continue;
            }
            state.trades_held = held;
            let Some((attempt, new_state)) = state.begin_reanchor(now) else {
                continue;
            };
            let token = format!("{}-{}-{attempt}", std::process::id(), state.name);
            let reanchor = reanchor_task(
                conn.clone(),
                state.keys.clone(),
                TempKeys::with(self.config.keys, &state.name),
                new_state,
                token,
            );
            tracing::debug!(symbol = index, attempt, "redis: re-anchor started");
            let task = crate::idle::spawn_ringing(&self.bell, reanchor);
            self.reanchoring.push(Reanchoring {
                symbol: index,
                attempt,
                task,
            });
            started += 1;
        }
        started
    }

    /// Takes the outcome of every finished re-anchor.
    pub(super) async fn finish_reanchors(&mut self) -> usize {
        let mut finished = 0;
        while let Some(at) = self.reanchoring.iter().position(|r| r.task.is_finished()) {
            let done = self.reanchoring.swap_remove(at);
            let outcome = done.task.await.unwrap_or_else(|e| Err(e.to_string()));
            let swapped = outcome.as_ref().is_ok_and(|s| *s);
            tracing::debug!(symbol = done.symbol, ?outcome, "redis: re-anchor finished");
            let retry_at = if swapped {
                self.reanchor_failures = 0;
                self.stats.book.reanchors.add(1);
                0
            } else {
                self.stats.book.reanchor_failures.add(1);
                let delay = jittered(
                    &mut self.rng,
                    self.config.reconnect_initial,
                    self.config.reconnect_max,
                    self.reanchor_failures,
                );
                self.reanchor_failures = self.reanchor_failures.saturating_add(1);
                if let Err(e) = &outcome {
                    self.log_error(&format!("re-anchor failed: {e}"));
                }
                let at =
                    now_us().saturating_add(i64::try_from(delay.as_micros()).unwrap_or(i64::MAX));
                // Nothing rings the writer when the delay ends: its park ends by then.
                self.reanchor_retry_us = Some(self.reanchor_retry_us.map_or(at, |t| t.min(at)));
                at
            };
            if let Some(state) = self.states.get_mut(done.symbol).and_then(Option::as_mut) {
                state.end_reanchor(done.attempt, swapped, retry_at);
            }
            finished += 1;
        }
        finished
    }

    /// In a housekeeping round (after its re-anchors started): the earliest retry of a failed
    /// re-anchor still to come, for [`Writer::timers_due_in`]. Looks at the books only while
    /// one may wait.
    pub(super) fn note_reanchor_retries(&mut self, now_us: i64) {
        if self.reanchor_retry_us.is_some() {
            self.reanchor_retry_us = self
                .states
                .iter()
                .flatten()
                .filter_map(|s| s.ob.reanchor_retry_at())
                .filter(|&at| at > now_us)
                .min();
        }
    }

    /// At stop, once everything known is written: every book is marked stale `stopped`.
    pub(super) fn mark_stopped(&mut self) {
        self.stop_marked = true;
        for state in self.states.iter_mut().flatten() {
            state
                .ob
                .mark_stale("stopped: hotpath is not running".into(), None);
        }
    }
}

/// One re-anchor: lock, build and swap, unlock; on failure the temporary keys are deleted and
/// the lock released. `Ok(true)`: swapped in; `Ok(false)`: the lock is held by another, or the
/// transaction was refused; `Err`: Redis did not answer (the swap may or may not have
/// happened; either way the live keys are whole, and the book stays stale until a later
/// re-anchor).
async fn reanchor_task(
    conn: Conn,
    live: Keys,
    temp: TempKeys,
    state: NewState,
    token: String,
) -> Result<bool, String> {
    let granted: Option<String> = query_cmd(&conn, &reanchor::lock(&temp, &token)).await?;
    if granted.is_none() {
        return Ok(false);
    }
    let swap = reanchor::build_and_swap(&live, &temp, &state, &token);
    let replies: Result<Vec<Value>, String> = query_pipe(&conn, &swap).await;
    if replies.as_deref().is_ok_and(reanchor::swapped) {
        return Ok(true);
    }
    let cleaned: Result<Vec<Value>, String> =
        query_pipe(&conn, &reanchor::cleanup(&temp, &token)).await;
    match (replies, cleaned) {
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(format!("the swap was refused and its cleanup failed: {e}")),
        (Ok(_), Ok(_)) => Ok(false),
    }
}

async fn query_cmd<T: redis::FromRedisValue>(conn: &Conn, cmd: &redis::Cmd) -> Result<T, String> {
    match conn.clone() {
        Conn::Single(mut c) => cmd.query_async(&mut c).await,
        Conn::Cluster(mut c) => cmd.query_async(&mut c).await,
    }
    .map_err(|e| e.to_string())
}

async fn query_pipe<T: redis::FromRedisValue>(
    conn: &Conn,
    pipe: &redis::Pipeline,
) -> Result<T, String> {
    match conn.clone() {
        Conn::Single(mut c) => pipe.query_async(&mut c).await,
        Conn::Cluster(mut c) => pipe.query_async(&mut c).await,
    }
    .map_err(|e| e.to_string())
}
