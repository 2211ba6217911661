//! A connection slot as a pure state machine (quinn-proto's shape): every decision about the
//! WebSocket connections that carry one slot's streams, with no socket, no clock and no task.
//! The reader's shell ([`super::reader`]) feeds it what happened ([`Input`], the data frames
//! through [`Slot::on_data`], timer expiries through [`Slot::handle_timeout`]) with the time,
//! and carries out the [`Action`]s it queues; [`Slot::deadline`] says when to call back.
//!
//! What the slot decides:
//!
//! - **Make-before-break replacement.** A connection is replaced `replace_before` ahead of its
//!   `lifetime`, on `serverShutdown`, and when it is silent for `silent_timeout`: the
//!   replacement (`next`) is opened first; its first data frame switches it in (`current`) and
//!   the replaced one (`old`) is read on until the overlap ends (`overlap_max`) or it closes.
//!   While two connections carry data, the newer one's frames are [`Route::Hold`]: the frame
//!   path holds those that run ahead of the older one, so the switch reports no false gap and
//!   loses no id. A silent connection may simply be stalled: its late frames still fill the
//!   gap before the replacement's first ones.
//! - **One replacement at a time.** At most two connections carry data (`current` and `next`,
//!   or `old` and `current`); a replacement wanted during an overlap opens when it ends. A
//!   replacement that delivers nothing for `silent_timeout` is dropped and another tried after
//!   a backoff delay, unless the connection it replaces is silent too: then the newer one stays.
//! - **Backoff and budget.** A connection that never delivered is followed after a full-jitter
//!   backoff delay ([`Backoff`], reset by the first data frame); every attempt takes one from
//!   Binance's per-IP [`AttemptBudget`] and waits when there is none.
//! - **Control.** The streams the slot should carry change by [`Command`]. Each connection is
//!   brought to them by SUBSCRIBE/UNSUBSCRIBE, at most one request in flight and one per
//!   [`CONTROL_INTERVAL`] per connection (Binance allows five incoming messages per second). A
//!   stream counts as carried when Binance answers `{"result":null,"id":N}` for that request;
//!   an error reply (`{"code":..,"msg":..,"id":N}`) or no reply within
//!   [`CONTROL_REPLY_TIMEOUT`] is counted (`control_errors`, `control_timeouts`), logged, and
//!   retried with a delay doubling per failure up to [`CONTROL_RETRY_MAX`]; a stream that
//!   failed is retried alone, so it cannot hold others back, and is left out of new
//!   connections' URLs, where it would fail the whole handshake.
//!
//! The hot path is [`Slot::on_data`]: in the steady state (one delivering connection) it is a
//! comparison and a store. Everything else is cold.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::stats::ReaderStats;
use crate::backoff::{AttemptBudget, Backoff};
use crate::config::ReaderSettings;
use crate::constants::{
    CONTROL_INTERVAL, CONTROL_REPLY_TIMEOUT, CONTROL_RETRY_MAX, QUIET_CONNECTION_TIMEOUT,
};

/// A change of a slot's streams at run time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Add a symbol's streams.
    Subscribe {
        /// Upper-case symbol.
        symbol: String,
        /// Its index in the feed's symbol registry.
        index: u16,
        /// Its stream names.
        streams: Vec<String>,
    },
    /// Remove a symbol's streams.
    Unsubscribe {
        /// Its index in the feed's symbol registry.
        index: u16,
        /// Its stream names.
        streams: Vec<String>,
        /// Removed because its trading stopped (exchangeInfo status HALT or BREAK), not on
        /// request: the consumers mark it so.
        halted: bool,
    },
}

/// A connection of one slot, numbered from 0 in the order the slot asked for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

/// An id no connection has: the hot path's "no fast path" marker.
const NO_CONN: u64 = u64::MAX;

/// What happened, as the shell tells the slot. Binary frames go through [`Slot::on_data`].
#[derive(Debug)]
pub enum Input<'a> {
    /// The connection asked for by [`Action::Open`] is open (handshake done).
    Opened(ConnId),
    /// The connection asked for by [`Action::Open`] could not be opened.
    Failed(ConnId),
    /// A text frame (JSON: a control reply, `serverShutdown`).
    Text(ConnId, &'a str),
    /// A ping (the WebSocket layer has queued the pong).
    Ping(ConnId),
    /// The connection ended: a close frame, an error, or the end of the stream.
    Closed(ConnId),
    /// A change of the slot's streams.
    Command(Command),
    /// Replace the current connection, make-before-break (dual mode's probe of SBE).
    Replace,
    /// The feed stops.
    Stop,
}

/// Where a data frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Straight to the frame path (`FramePath::on_frame`).
    Direct,
    /// Straight to the frame path, then release held frames that have caught up (the frame
    /// came from the connection the held ones wait for).
    DirectThenRelease,
    /// Through the hold (`FramePath::on_frame_holding`): an older connection still delivers.
    Hold,
    /// Nowhere: a connection the slot no longer reads.
    Drop,
}

/// What the slot asks the shell to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Open connection `conn` carrying `streams` (in its URL), then report
    /// [`Input::Opened`] or [`Input::Failed`].
    Open {
        /// The new connection.
        conn: ConnId,
        /// The streams to put in its URL.
        streams: Vec<String>,
    },
    /// Send a text frame (a SUBSCRIBE or UNSUBSCRIBE request).
    Send {
        /// On which connection.
        conn: ConnId,
        /// The JSON request.
        text: String,
    },
    /// Send the pong the WebSocket layer queued for a ping (flush the connection).
    Pong {
        /// On which connection.
        conn: ConnId,
    },
    /// Close the connection (or abandon its opening) and forget it.
    Close {
        /// Which.
        conn: ConnId,
    },
    /// Release every held frame now (`FramePath::release` forced): the connection they
    /// waited for is gone, so what is still missing before them is a real gap.
    ReleaseHeld,
    /// Start accepting frames of `symbol` as index `index`.
    Accept {
        /// Upper-case symbol.
        symbol: String,
        /// Its index in the feed's symbol registry.
        index: u16,
    },
    /// Stop accepting frames of symbol `index`.
    Forget {
        /// Its index in the feed's symbol registry.
        index: u16,
        /// As [`Command::Unsubscribe`]'s.
        halted: bool,
    },
    /// The connection carrying `streams` was lost and none other carries them: tell the
    /// sidecar (`Cause::Disconnected`), whose consumers keep books from them.
    StreamsLost {
        /// The streams the slot carries.
        streams: Vec<String>,
    },
    /// After [`Action::StreamsLost`], a connection carrying `streams` is open again: tell the
    /// sidecar (`Cause::Reconnected`).
    StreamsBack {
        /// The streams the slot carries.
        streams: Vec<String>,
    },
}

/// A SUBSCRIBE or UNSUBSCRIBE awaiting its reply.
#[derive(Debug)]
struct Request {
    id: u64,
    subscribe: bool,
    streams: Vec<String>,
    sent: Instant,
}

/// A stream whose SUBSCRIBE or UNSUBSCRIBE failed, and when it may be tried again.
#[derive(Debug)]
struct Failure {
    stream: String,
    /// Consecutive failures, at least 1.
    count: u32,
    retry_at: Instant,
}

/// One connection as the slot sees it.
#[derive(Debug)]
struct Conn {
    id: ConnId,
    /// When the handshake completed; `None` while opening.
    opened: Option<Instant>,
    /// When the last data frame arrived (the opening time before the first).
    last_data: Instant,
    /// Whether any data frame arrived.
    delivered: bool,
    /// Whether the server announced it will close this connection.
    shutdown_announced: bool,
    /// The streams the server confirmed (the URL's, then acknowledged requests), sorted.
    streams: Vec<String>,
    /// The control request in flight.
    pending: Option<Request>,
    /// No control request before this (pacing).
    control_at: Instant,
    /// When the next control request is due; `None` when in step or awaiting a reply.
    control_due: Option<Instant>,
}

impl Conn {
    fn opening(id: ConnId, streams: Vec<String>, now: Instant) -> Conn {
        Conn {
            id,
            opened: None,
            last_data: now,
            delivered: false,
            shutdown_announced: false,
            streams,
            pending: None,
            control_at: now,
            control_due: None,
        }
    }
}

/// The state machine of one connection slot. See the module documentation.
pub struct Slot {
    settings: ReaderSettings,
    stats: Arc<ReaderStats>,
    /// The streams this slot should carry, sorted, no duplicates.
    wanted: Vec<String>,
    /// Streams whose last control request failed.
    failures: Vec<Failure>,
    /// The connection whose frames are the feed (once it delivered).
    current: Option<Conn>,
    /// A replacement, opening or open, that has not delivered yet.
    next: Option<Conn>,
    /// The replaced connection, read until `overlap_until`. Never together with `next`.
    old: Option<Conn>,
    overlap_until: Option<Instant>,
    /// When to open a connection (a replacement, or the first after a loss).
    open_at: Option<Instant>,
    backoff: Backoff,
    conns_opened: u64,
    requests_sent: u64,
    actions: VecDeque<Action>,
    stopped: bool,
    /// The current connection was lost and none carries the streams since.
    lost: bool,
    /// `current`'s id while it is the only connection and has delivered (the hot path's
    /// test), else [`NO_CONN`].
    fast: u64,
    /// Data frames received on this slot's connections (plain: the slot is the reader's).
    frames: u64,
    /// Connections of this slot lost or found silent.
    reconnects: u64,
}

impl Slot {
    /// A slot that should carry `streams`, its first connection due at `now`. `seed` seeds the
    /// backoff jitter.
    pub fn new(
        settings: &ReaderSettings,
        streams: Vec<String>,
        seed: u64,
        stats: Arc<ReaderStats>,
        now: Instant,
    ) -> Slot {
        let mut wanted = streams;
        wanted.sort();
        wanted.dedup();
        Slot {
            backoff: Backoff::new(settings.backoff_initial, settings.backoff_max, seed),
            settings: settings.clone(),
            stats,
            wanted,
            failures: Vec::new(),
            current: None,
            next: None,
            old: None,
            overlap_until: None,
            open_at: Some(now),
            conns_opened: 0,
            requests_sent: 0,
            actions: VecDeque::new(),
            stopped: false,
            lost: false,
            fast: NO_CONN,
            frames: 0,
            reconnects: 0,
        }
    }

    /// This slot's figures for the control plane, published once per read batch
    /// ([`super::stats::ConnectionStats::publish`]).
    pub fn figures(&self) -> super::stats::SlotFigures {
        super::stats::SlotFigures {
            frames: self.frames,
            reconnects: self.reconnects,
            delivering: self.current.is_some(),
            carrying: !self.wanted.is_empty(),
        }
    }

    /// The hot path: a data frame arrived on `conn` at `now`; says where it goes. In the steady
    /// state this is one comparison and one store.
    #[inline]
    pub fn on_data(&mut self, conn: ConnId, now: Instant) -> Route {
        self.frames += 1;
        if conn.0 == self.fast
            && let Some(current) = self.current.as_mut()
        {
            current.last_data = now;
            return Route::Direct;
        }
        self.on_data_cold(conn, now)
    }

    /// The connection whose frames all go [`Route::Direct`] with no other connection to
    /// watch, if the slot is in that steady state: the shell may drain it without selecting.
    #[inline]
    pub fn steady(&self) -> Option<ConnId> {
        (self.fast != NO_CONN).then_some(ConnId(self.fast))
    }

    /// The next action to carry out, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether the slot has stopped (after [`Input::Stop`]): nothing more will happen.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// The streams the slot should carry, sorted.
    pub fn wanted(&self) -> &[String] {
        &self.wanted
    }

    /// When [`Slot::handle_timeout`] is due next, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        if self.stopped {
            return None;
        }
        let mut earliest: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                earliest = Some(earliest.map_or(t, |e| e.min(t)));
            }
        };
        consider(
            self.open_at
                .map(|at| self.overlap_until.map_or(at, |o| at.max(o))),
        );
        consider(self.overlap_until);
        if !self.pursuing()
            && let Some(current) = &self.current
        {
            consider(self.silent_at(current));
            consider(self.replace_due(current));
            // Announced while it was the replacement: replace it at once.
            consider(current.shutdown_announced.then_some(current.last_data));
        }
        if let Some(next) = &self.next
            && !next.delivered
        {
            consider(next.opened.map(|at| at + self.silent_timeout()));
        }
        for conn in [&self.current, &self.next].into_iter().flatten() {
            match &conn.pending {
                Some(request) => consider(Some(request.sent + CONTROL_REPLY_TIMEOUT)),
                None => consider(conn.control_due),
            }
        }
        earliest
    }

    /// Handles one input at `now`.
    pub fn handle(&mut self, input: Input<'_>, now: Instant) {
        if self.stopped {
            return;
        }
        match input {
            Input::Opened(conn) => self.on_opened(conn, now),
            Input::Failed(conn) => self.on_failed(conn, now),
            Input::Text(conn, text) => self.on_text(conn, text, now),
            Input::Ping(conn) => self.actions.push_back(Action::Pong { conn }),
            Input::Closed(conn) => self.on_closed(conn, now),
            Input::Command(command) => self.on_command(command, now),
            Input::Replace => self.on_replace_asked(now),
            Input::Stop => self.stop(),
        }
        self.refresh();
    }

    /// Does whatever is due at `now`: overlap end, reply timeouts, silence, lifetime, opening
    /// (taking an attempt from `budget`), control requests.
    pub fn handle_timeout(&mut self, now: Instant, budget: &mut AttemptBudget) {
        if self.stopped {
            return;
        }
        if self.overlap_until.is_some_and(|until| now >= until) {
            self.end_overlap();
        }
        self.check_replies(now);
        self.check_next(now);
        self.check_current(now);
        self.check_open(now, budget);
        self.send_control(now);
        self.refresh();
    }

    // ---- data ----

    #[cold]
    fn on_data_cold(&mut self, conn: ConnId, now: Instant) -> Route {
        let route = if let Some(current) = self.current.as_mut().filter(|c| c.id == conn) {
            current.last_data = now;
            if !current.delivered {
                current.delivered = true;
                self.backoff.reset();
            }
            if self.old.is_some() {
                Route::Hold
            } else {
                Route::Direct
            }
        } else if self.next.as_ref().is_some_and(|n| n.id == conn) {
            self.switch(now);
            if self.old.is_some() {
                Route::Hold
            } else {
                Route::Direct
            }
        } else if let Some(old) = self.old.as_mut().filter(|o| o.id == conn) {
            old.last_data = now;
            Route::DirectThenRelease
        } else {
            Route::Drop
        };
        self.refresh();
        route
    }

    /// `next` delivered: it becomes `current`, and the connection it replaces is read on until
    /// the overlap ends.
    fn switch(&mut self, now: Instant) {
        let Some(mut next) = self.next.take() else {
            return;
        };
        next.delivered = true;
        next.last_data = now;
        self.backoff.reset();
        if self.old.is_some() {
            // Not reached: a replacement opens only after an overlap ended. Kept total.
            self.end_overlap();
        }
        if let Some(replaced) = self.current.replace(next) {
            self.old = Some(replaced);
            self.overlap_until = Some(now + self.settings.overlap_max);
            self.stats.switches.bump();
        }
    }

    fn end_overlap(&mut self) {
        if let Some(old) = self.old.take() {
            self.actions.push_back(Action::Close { conn: old.id });
        }
        self.overlap_until = None;
        self.actions.push_back(Action::ReleaseHeld);
    }

    /// The hot path's flag: `current` alone and delivering.
    fn refresh(&mut self) {
        self.fast = match (&self.current, &self.next, &self.old) {
            (Some(current), None, None) if current.delivered && !self.stopped => current.id.0,
            _ => NO_CONN,
        };
    }

    // ---- connections ----

    fn on_opened(&mut self, conn: ConnId, now: Instant) {
        let Some(next) = self
            .next
            .as_mut()
            .filter(|n| n.id == conn && n.opened.is_none())
        else {
            self.actions.push_back(Action::Close { conn });
            return;
        };
        next.opened = Some(now);
        next.last_data = now;
        next.control_at = now;
        if self.current.is_none() {
            // Nothing to make before: it is the feed at once.
            self.current = self.next.take();
            if std::mem::take(&mut self.lost) {
                let streams = self.wanted.clone();
                self.actions.push_back(Action::StreamsBack { streams });
            }
        }
        self.plan_control(now);
    }

    fn on_failed(&mut self, conn: ConnId, now: Instant) {
        if self.next.as_ref().is_some_and(|n| n.id == conn) {
            self.next = None;
            self.retry_after_failure(now);
        }
    }

    /// After a replacement failed or closed without delivering: try again after a backoff
    /// delay, if a connection is still wanted.
    fn retry_after_failure(&mut self, now: Instant) {
        if self.current.is_none() || self.replacement_wanted(now) {
            let delay = self.backoff.next_delay();
            tracing::warn!(retry_in = ?delay, "connection failed or delivered nothing; retrying");
            self.schedule_open(now + delay);
        }
    }

    fn on_closed(&mut self, conn: ConnId, now: Instant) {
        if self.current.as_ref().is_some_and(|c| c.id == conn) {
            self.on_current_lost(now);
        } else if self.next.as_ref().is_some_and(|n| n.id == conn) {
            self.next = None;
            self.retry_after_failure(now);
        } else if self.old.as_ref().is_some_and(|o| o.id == conn) {
            self.old = None;
            self.overlap_until = None;
            self.actions.push_back(Action::ReleaseHeld);
        }
    }

    /// The current connection ended: the replaced one still being read takes over, else a
    /// replacement on its way, else a new connection opens (at once after one that delivered,
    /// after a backoff delay otherwise: a server that accepts and drops us must not burn the
    /// attempt budget). Until one does, the streams are lost ([`Action::StreamsLost`], once;
    /// [`Action::StreamsBack`] when a connection opens).
    fn on_current_lost(&mut self, now: Instant) {
        let Some(lost) = self.current.take() else {
            return;
        };
        self.stats.reconnects.bump();
        self.reconnects += 1;
        tracing::warn!(conn = lost.id.0, "connection lost");
        if let Some(old) = self.old.take() {
            self.overlap_until = None;
            self.actions.push_back(Action::ReleaseHeld);
            self.current = Some(old);
        } else if self.next.as_ref().is_some_and(|n| n.opened.is_some()) {
            self.current = self.next.take();
        } else {
            // Nothing carries the streams until a new connection opens.
            if !std::mem::replace(&mut self.lost, true) {
                let streams = self.wanted.clone();
                self.actions.push_back(Action::StreamsLost { streams });
            }
            if self.next.is_none() {
                let delay = if lost.delivered {
                    Duration::ZERO
                } else {
                    self.backoff.next_delay()
                };
                self.schedule_open(now + delay);
            }
        }
    }

    fn schedule_open(&mut self, at: Instant) {
        self.open_at = Some(self.open_at.map_or(at, |t| t.min(at)));
    }

    /// Whether a replacement is being opened or is scheduled.
    fn pursuing(&self) -> bool {
        self.next.is_some() || self.open_at.is_some()
    }

    fn silent_timeout(&self) -> Duration {
        if self.wanted.is_empty() {
            QUIET_CONNECTION_TIMEOUT
        } else {
            self.settings.silent_timeout
        }
    }

    fn silent_at(&self, conn: &Conn) -> Option<Instant> {
        conn.opened.map(|_| conn.last_data + self.silent_timeout())
    }

    fn replace_due(&self, conn: &Conn) -> Option<Instant> {
        let left = self
            .settings
            .lifetime
            .saturating_sub(self.settings.replace_before);
        conn.opened.map(|opened| opened + left)
    }

    /// Whether the current connection should be replaced: announced shutdown, lifetime ending,
    /// or silence.
    fn replacement_wanted(&self, now: Instant) -> bool {
        self.current.as_ref().is_some_and(|c| {
            c.shutdown_announced
                || self.replace_due(c).is_some_and(|at| now >= at)
                || self.silent_at(c).is_some_and(|at| now >= at)
        })
    }

    /// No delay to replace a connection that delivered; a backoff delay for one that did not
    /// (a server that announces shutdowns at once must not be hammered).
    fn pause(&mut self, delivered: bool) -> Duration {
        if delivered {
            Duration::ZERO
        } else {
            self.backoff.next_delay()
        }
    }

    /// A replacement that delivered nothing for `silent_timeout` is dropped and another tried,
    /// unless the current connection is silent too: then the newer one is kept.
    fn check_next(&mut self, now: Instant) {
        let Some(opened) = self.next.as_ref().and_then(|n| n.opened) else {
            return;
        };
        if now < opened + self.silent_timeout() {
            return;
        }
        let current_silent = self
            .current
            .as_ref()
            .is_none_or(|c| self.silent_at(c).is_none_or(|at| now >= at));
        if current_silent {
            if let Some(current) = self.current.take() {
                self.actions.push_back(Action::Close { conn: current.id });
            }
            self.current = self.next.take();
        } else if let Some(next) = self.next.take() {
            self.actions.push_back(Action::Close { conn: next.id });
            self.retry_after_failure(now);
        }
    }

    /// Starts a replacement when the current connection's lifetime ends or it is silent.
    fn check_current(&mut self, now: Instant) {
        if self.pursuing() {
            return;
        }
        let Some(current) = &self.current else {
            self.schedule_open(now);
            return;
        };
        let delivered = current.delivered;
        if current.shutdown_announced {
            // Announced while it was still the replacement.
            tracing::info!(
                conn = current.id.0,
                "serverShutdown announced; replacing the connection"
            );
            let delay = self.pause(delivered);
            self.schedule_open(now + delay);
        } else if self.replace_due(current).is_some_and(|at| now >= at) {
            tracing::info!(
                conn = current.id.0,
                "connection lifetime ending; replacing it"
            );
            self.schedule_open(now);
        } else if self.silent_at(current).is_some_and(|at| now >= at) {
            tracing::warn!(conn = current.id.0, silent_for = ?self.silent_timeout(), "connection silent; replacing it make-before-break");
            self.stats.reconnects.bump();
            self.reconnects += 1;
            let delay = self.pause(delivered);
            self.schedule_open(now + delay);
        }
    }

    /// Opens the scheduled connection when due, outside an overlap, within the budget.
    fn check_open(&mut self, now: Instant, budget: &mut AttemptBudget) {
        let Some(at) = self.open_at else {
            return;
        };
        if now < at || self.old.is_some() || self.next.is_some() {
            return;
        }
        if let Err(wait) = budget.try_acquire(now) {
            tracing::warn!(?wait, "connection attempt budget used up; waiting");
            self.open_at = Some(now + wait);
            return;
        }
        self.open_at = None;
        let conn = ConnId(self.conns_opened);
        self.conns_opened += 1;
        // A stream that failed to subscribe would fail the whole handshake: it is retried by
        // SUBSCRIBE once the connection is open.
        let streams: Vec<String> = self
            .wanted
            .iter()
            .filter(|s| !self.failures.iter().any(|f| f.stream == **s))
            .cloned()
            .collect();
        self.stats.connects.bump();
        self.next = Some(Conn::opening(conn, streams.clone(), now));
        self.actions.push_back(Action::Open { conn, streams });
    }

    // ---- text frames and commands ----

    fn on_text(&mut self, conn: ConnId, text: &str, now: Instant) {
        self.stats.text_frames.bump();
        match parse_text(text) {
            Text::ServerShutdown => self.on_shutdown(conn, now),
            Text::Reply { id, error } => self.on_reply(conn, id, error, now),
            Text::Other => {}
        }
    }

    fn on_shutdown(&mut self, conn: ConnId, now: Instant) {
        let pursuing = self.pursuing();
        let Some(target) = [&mut self.current, &mut self.next]
            .into_iter()
            .flatten()
            .find(|c| c.id == conn)
        else {
            return;
        };
        target.shutdown_announced = true;
        let delivered = target.delivered;
        if self.current.as_ref().is_some_and(|c| c.id == conn) && !pursuing {
            tracing::info!(
                conn = conn.0,
                "serverShutdown received; replacing the connection"
            );
            let delay = self.pause(delivered);
            self.schedule_open(now + delay);
        }
    }

    /// The shell asks for the current connection to be replaced: as if its server announced
    /// a shutdown (a replacement opens now, the switch is make-before-break).
    fn on_replace_asked(&mut self, now: Instant) {
        if let Some(current) = self.current.as_ref().map(|c| c.id) {
            tracing::info!(conn = current.0, "replacing the connection on request");
            self.on_shutdown(current, now);
        }
    }

    fn on_reply(&mut self, conn: ConnId, id: u64, error: Option<(i64, String)>, now: Instant) {
        let Some(target) = [&mut self.current, &mut self.next, &mut self.old]
            .into_iter()
            .flatten()
            .find(|c| c.id == conn && c.pending.as_ref().is_some_and(|p| p.id == id))
        else {
            return;
        };
        let Some(request) = target.pending.take() else {
            return;
        };
        match error {
            None => {
                if request.subscribe {
                    for stream in &request.streams {
                        insert_sorted(&mut target.streams, stream);
                    }
                } else {
                    target.streams.retain(|s| !request.streams.contains(s));
                }
                self.failures
                    .retain(|f| !request.streams.contains(&f.stream));
                tracing::info!(
                    conn = conn.0,
                    method = method(request.subscribe),
                    streams = request.streams.len(),
                    "subscription changed"
                );
            }
            Some((code, msg)) => {
                self.stats.control_errors.bump();
                tracing::warn!(conn = conn.0, method = method(request.subscribe), streams = ?request.streams, code, %msg, "control request refused; retrying with backoff");
                self.fail(&request.streams, now);
            }
        }
        self.plan_control(now);
    }

    fn on_command(&mut self, command: Command, now: Instant) {
        match command {
            Command::Subscribe {
                symbol,
                index,
                streams,
            } => {
                for stream in &streams {
                    insert_sorted(&mut self.wanted, stream);
                }
                self.failures.retain(|f| !streams.contains(&f.stream));
                self.actions.push_back(Action::Accept { symbol, index });
            }
            Command::Unsubscribe {
                index,
                streams,
                halted,
            } => {
                self.wanted.retain(|s| !streams.contains(s));
                let carried = |s: &String| {
                    [&self.current, &self.next]
                        .into_iter()
                        .flatten()
                        .any(|c| c.streams.contains(s))
                };
                let failures = std::mem::take(&mut self.failures);
                self.failures = failures
                    .into_iter()
                    .filter(|f| self.wanted.contains(&f.stream) || carried(&f.stream))
                    .collect();
                self.actions.push_back(Action::Forget { index, halted });
            }
        }
        self.plan_control(now);
    }

    fn stop(&mut self) {
        for conn in [self.old.take(), self.current.take(), self.next.take()]
            .into_iter()
            .flatten()
        {
            self.actions.push_back(Action::Close { conn: conn.id });
        }
        self.actions.push_back(Action::ReleaseHeld);
        self.open_at = None;
        self.overlap_until = None;
        self.stopped = true;
    }

    // ---- control requests ----

    /// Requests whose reply did not come in time count as failed.
    fn check_replies(&mut self, now: Instant) {
        let mut timed_out: Vec<Request> = Vec::new();
        for conn in [&mut self.current, &mut self.next].into_iter().flatten() {
            if conn
                .pending
                .as_ref()
                .is_some_and(|p| now >= p.sent + CONTROL_REPLY_TIMEOUT)
                && let Some(request) = conn.pending.take()
            {
                tracing::warn!(conn = conn.id.0, method = method(request.subscribe), streams = ?request.streams, "no reply to a control request; retrying with backoff");
                timed_out.push(request);
            }
        }
        if timed_out.is_empty() {
            return;
        }
        for request in &timed_out {
            self.stats.control_timeouts.bump();
            self.fail(&request.streams, now);
        }
        self.plan_control(now);
    }

    /// Counts a failure of each stream and sets when it may be tried again: the delay doubles
    /// from [`CONTROL_INTERVAL`] per consecutive failure, up to [`CONTROL_RETRY_MAX`].
    fn fail(&mut self, streams: &[String], now: Instant) {
        for stream in streams {
            let at = match self.failures.iter().position(|f| f.stream == *stream) {
                Some(at) => at,
                None => {
                    self.failures.push(Failure {
                        stream: stream.clone(),
                        count: 0,
                        retry_at: now,
                    });
                    self.failures.len() - 1
                }
            };
            let failure = &mut self.failures[at];
            failure.count = failure.count.saturating_add(1);
            failure.retry_at = now + retry_delay(failure.count);
        }
    }

    fn retry_at(&self, stream: &str) -> Option<Instant> {
        self.failures
            .iter()
            .find(|f| f.stream == stream)
            .map(|f| f.retry_at)
    }

    /// Recomputes when each connection's next control request is due.
    fn plan_control(&mut self, now: Instant) {
        let due =
            [&self.current, &self.next].map(|c| c.as_ref().and_then(|c| self.control_due(c, now)));
        for (conn, due) in [&mut self.current, &mut self.next].into_iter().zip(due) {
            if let Some(conn) = conn {
                conn.control_due = due;
            }
        }
    }

    /// When `conn` may send its next request: `None` if it carries what is wanted or awaits a
    /// reply, else the earliest time one of its differences may be retried, but not before its
    /// pacing allows.
    fn control_due(&self, conn: &Conn, now: Instant) -> Option<Instant> {
        if conn.opened.is_none() || conn.pending.is_some() {
            return None;
        }
        let missing = minus(&self.wanted, &conn.streams);
        let extra = minus(&conn.streams, &self.wanted);
        missing
            .chain(extra)
            .map(|s| self.retry_at(s).map_or(now, |at| at.max(now)))
            .min()
            .map(|at| at.max(conn.control_at))
    }

    /// The request that brings `conn` closer to the wanted streams: every missing stream that
    /// never failed in one SUBSCRIBE, else one that failed and may be retried, alone; then the
    /// same for extra streams with UNSUBSCRIBE.
    fn next_request(&self, conn: &Conn, now: Instant) -> Option<(bool, Vec<String>)> {
        for (subscribe, from, to) in [
            (true, &self.wanted, &conn.streams),
            (false, &conn.streams, &self.wanted),
        ] {
            let never_failed: Vec<String> = minus(from, to)
                .filter(|s| self.retry_at(s).is_none())
                .cloned()
                .collect();
            if !never_failed.is_empty() {
                return Some((subscribe, never_failed));
            }
            if let Some(retry) =
                minus(from, to).find(|s| self.retry_at(s).is_some_and(|at| at <= now))
            {
                return Some((subscribe, vec![retry.clone()]));
            }
        }
        None
    }

    /// Sends the control requests that are due, one per connection.
    fn send_control(&mut self, now: Instant) {
        for which in [Which::Current, Which::Next] {
            let Some(conn) = self.conn(which) else {
                continue;
            };
            if conn.pending.is_some() || conn.control_due.is_none_or(|due| now < due) {
                continue;
            }
            let request = self.next_request(conn, now);
            let id = conn.id;
            let Some((subscribe, streams)) = request else {
                if let Some(conn) = self.conn_mut(which) {
                    conn.control_due = None;
                }
                continue;
            };
            self.requests_sent += 1;
            let request_id = self.requests_sent;
            let text = serde_json::json!({
                "method": method(subscribe),
                "params": streams,
                "id": request_id,
            })
            .to_string();
            self.actions.push_back(Action::Send { conn: id, text });
            if let Some(conn) = self.conn_mut(which) {
                conn.pending = Some(Request {
                    id: request_id,
                    subscribe,
                    streams,
                    sent: now,
                });
                conn.control_at = now + CONTROL_INTERVAL;
                conn.control_due = None;
            }
        }
    }

    fn conn(&self, which: Which) -> Option<&Conn> {
        match which {
            Which::Current => self.current.as_ref(),
            Which::Next => self.next.as_ref(),
        }
    }

    fn conn_mut(&mut self, which: Which) -> Option<&mut Conn> {
        match which {
            Which::Current => self.current.as_mut(),
            Which::Next => self.next.as_mut(),
        }
    }
}

/// The connections that take control requests.
#[derive(Clone, Copy)]
enum Which {
    Current,
    Next,
}

fn method(subscribe: bool) -> &'static str {
    if subscribe {
        "SUBSCRIBE"
    } else {
        "UNSUBSCRIBE"
    }
}

/// The delay before a stream that failed `count` times is tried again.
fn retry_delay(count: u32) -> Duration {
    let factor = 1u32.checked_shl(count.min(31)).unwrap_or(u32::MAX);
    CONTROL_INTERVAL
        .checked_mul(factor)
        .map_or(CONTROL_RETRY_MAX, |d| d.min(CONTROL_RETRY_MAX))
}

/// The elements of sorted `a` that sorted `b` lacks.
fn minus<'a>(a: &'a [String], b: &'a [String]) -> impl Iterator<Item = &'a String> {
    a.iter().filter(move |s| b.binary_search(s).is_err())
}

fn insert_sorted(list: &mut Vec<String>, item: &str) {
    if let Err(at) = list.binary_search_by(|s| s.as_str().cmp(item)) {
        list.insert(at, item.to_string());
    }
}

/// What a text frame says.
#[derive(Debug, PartialEq, Eq)]
enum Text {
    /// `{"e":"serverShutdown",..}`, raw or in a combined-stream envelope.
    ServerShutdown,
    /// A reply to request `id`: `{"result":..,"id":N}`, or an error `{"code":..,"msg":..,"id":N}`.
    Reply {
        id: u64,
        error: Option<(i64, String)>,
    },
    /// Anything else (ignored).
    Other,
}

fn parse_text(text: &str) -> Text {
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return Text::Other;
    };
    let event = |v: &Value| v.get("e").and_then(Value::as_str) == Some("serverShutdown");
    if event(&value)
        || value.get("stream").and_then(Value::as_str) == Some("!serverShutdown")
        || value.get("data").is_some_and(event)
    {
        return Text::ServerShutdown;
    }
    let Some(id) = value.get("id").and_then(Value::as_u64) else {
        return Text::Other;
    };
    if let Some(code) = value.get("code") {
        let msg = value.get("msg").and_then(Value::as_str).unwrap_or_default();
        return Text::Reply {
            id,
            error: Some((code.as_i64().unwrap_or(i64::MIN), msg.to_string())),
        };
    }
    if value.get("result").is_some() {
        return Text::Reply { id, error: None };
    }
    Text::Other
}

#[cfg(test)]
#[path = "slot_tests.rs"]
mod tests;
