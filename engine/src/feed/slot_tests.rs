//! Tests of the connection slot without sockets: each decision on its own (replacement due,
//! `serverShutdown`, overlap end, silence, control pacing, replies, timeouts, backoff, budget),
//! and property tests that drive the slot and a real [`FramePath`] through random interleavings
//! of two connections delivering the same trades and depth diffs.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::backoff::AttemptBudget;
use crate::feed::event::{FeedEvent, Notice};
use crate::feed::frame_path::tests::{diff, trades};
use crate::feed::frame_path::{FramePath, Held};
use crate::stream::StreamKind;

const SILENT: Duration = Duration::from_secs(10);
const LIFETIME: Duration = Duration::from_secs(100);
const REPLACE_BEFORE: Duration = Duration::from_secs(10);
const OVERLAP: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

fn settings() -> ReaderSettings {
    ReaderSettings {
        silent_timeout: SILENT,
        lifetime: LIFETIME,
        replace_before: REPLACE_BEFORE,
        overlap_max: OVERLAP,
        backoff_initial: Duration::from_millis(100),
        backoff_max: BACKOFF_MAX,
        ..ReaderSettings::default()
    }
}

fn streams() -> Vec<String> {
    vec!["btcusdt@trade".into(), "btcusdt@depth".into()]
}

/// A slot, a budget and a clock the test moves.
struct Harness {
    slot: Slot,
    budget: AttemptBudget,
    start: Instant,
    now: Instant,
    stats: Arc<ReaderStats>,
}

impl Harness {
    fn new() -> Harness {
        Harness::with_budget(AttemptBudget::new(1000, Duration::from_secs(300)))
    }

    fn with_budget(budget: AttemptBudget) -> Harness {
        let start = Instant::now();
        let stats = Arc::new(ReaderStats::default());
        Harness {
            slot: Slot::new(&settings(), streams(), 7, stats.clone(), start),
            budget,
            start,
            now: start,
            stats,
        }
    }

    fn ms(&self) -> u128 {
        self.now.duration_since(self.start).as_millis()
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.slot.poll_action()).collect()
    }

    fn input(&mut self, input: Input<'_>) -> Vec<Action> {
        self.slot.handle(input, self.now);
        self.actions()
    }

    /// Moves the clock to `now + by`, firing every deadline on the way (at its time).
    fn advance(&mut self, by: Duration) -> Vec<Action> {
        let until = self.now + by;
        let mut actions = Vec::new();
        while let Some(deadline) = self.slot.deadline().filter(|d| *d <= until) {
            self.now = self.now.max(deadline);
            self.slot.handle_timeout(self.now, &mut self.budget);
            actions.extend(self.actions());
        }
        self.now = until;
        actions
    }

    fn data(&mut self, conn: ConnId) -> Route {
        self.slot.on_data(conn, self.now)
    }

    /// Fires what is due now and expects one connection to be opened; returns its id.
    fn expect_open(&mut self) -> ConnId {
        let actions = self.advance(Duration::ZERO);
        opened(&actions).unwrap_or_else(|| panic!("an Open at {} ms: {actions:?}", self.ms()))
    }

    /// The first connection, open and delivering.
    fn live(&mut self) -> ConnId {
        let conn = self.expect_open();
        assert!(self.input(Input::Opened(conn)).is_empty());
        assert_eq!(self.data(conn), Route::Direct);
        assert_eq!(self.slot.steady(), Some(conn));
        conn
    }
}

fn opened(actions: &[Action]) -> Option<ConnId> {
    actions.iter().find_map(|a| match a {
        Action::Open { conn, .. } => Some(*conn),
        _ => None,
    })
}

fn closes(actions: &[Action], conn: ConnId) -> bool {
    actions.contains(&Action::Close { conn })
}

fn sent(actions: &[Action]) -> Vec<(ConnId, Value)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { conn, text } => Some((*conn, serde_json::from_str(text).expect("JSON"))),
            _ => None,
        })
        .collect()
}

fn ack(id: &Value) -> String {
    format!(r#"{{"result":null,"id":{id}}}"#)
}

const SHUTDOWN: &str = r#"{"e":"serverShutdown","E":1770123456789}"#;

#[test]
fn the_first_connection_opens_at_once_with_the_wanted_streams_and_takes_an_attempt() {
    let mut h = Harness::new();
    assert_eq!(h.slot.deadline(), Some(h.start));
    let actions = h.advance(Duration::ZERO);
    assert_eq!(
        actions,
        [Action::Open {
            conn: ConnId(0),
            streams: vec!["btcusdt@depth".into(), "btcusdt@trade".into()]
        }]
    );
    assert_eq!(h.stats.connects.get(), 1);
    assert_eq!(h.slot.steady(), None, "not delivering yet");
    assert!(h.input(Input::Opened(ConnId(0))).is_empty());
    assert_eq!(h.data(ConnId(0)), Route::Direct);
    assert_eq!(h.slot.steady(), Some(ConnId(0)));
}

#[test]
fn the_steady_state_routes_every_frame_directly_and_tracks_silence() {
    let mut h = Harness::new();
    let conn = h.live();
    for _ in 0..100 {
        h.now += Duration::from_millis(50);
        assert_eq!(h.data(conn), Route::Direct);
    }
    let silent_at = h.now + SILENT;
    assert_eq!(
        h.slot.deadline(),
        Some(silent_at),
        "silence is the next deadline"
    );
    assert_eq!(
        h.data(ConnId(99)),
        Route::Drop,
        "an unknown connection's frame"
    );
}

#[test]
fn a_replacement_opens_replace_before_ahead_of_the_lifetime_end() {
    let mut h = Harness::new();
    let conn = h.live();
    let due = h.start + LIFETIME - REPLACE_BEFORE;
    // Keep the connection busy so that silence never comes first.
    while h.now + Duration::from_secs(1) < due {
        h.now += Duration::from_secs(1);
        h.data(conn);
    }
    assert_eq!(h.slot.deadline(), Some(due));
    let actions = h.advance(due - h.now);
    assert_eq!(opened(&actions), Some(ConnId(1)));
    assert_eq!(h.ms(), (LIFETIME - REPLACE_BEFORE).as_millis());
    assert_eq!(
        h.stats.reconnects.get(),
        0,
        "a planned replacement is no reconnect"
    );
}

/// The switch: the replacement's first frame makes it current; the old one is read (and its
/// frames release held ones) until the overlap ends, then closed, held frames released.
#[test]
fn the_replacement_switches_in_on_its_first_frame_and_the_old_one_is_read_until_the_overlap_ends() {
    let mut h = Harness::new();
    let old = h.live();
    h.input(Input::Text(old, SHUTDOWN));
    let new = h.expect_open();
    h.input(Input::Opened(new));
    assert_eq!(
        h.data(old),
        Route::Direct,
        "before the switch the old one is the feed"
    );
    h.now += Duration::from_millis(5);
    assert_eq!(h.data(new), Route::Hold, "its first frame may run ahead");
    assert_eq!(h.stats.switches.get(), 1);
    assert_eq!(h.data(new), Route::Hold);
    assert_eq!(h.data(old), Route::DirectThenRelease);
    assert_eq!(h.slot.steady(), None);
    assert_eq!(h.slot.deadline(), Some(h.now + OVERLAP));
    let actions = h.advance(OVERLAP);
    assert_eq!(actions, [Action::Close { conn: old }, Action::ReleaseHeld]);
    assert_eq!(h.data(new), Route::Direct);
    assert_eq!(h.slot.steady(), Some(new));
    assert_eq!(h.data(old), Route::Drop, "a closed connection's late frame");
}

#[test]
fn server_shutdown_starts_one_replacement_at_once_and_is_understood_in_both_forms() {
    for text in [
        SHUTDOWN,
        r#"{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}"#,
    ] {
        let mut h = Harness::new();
        let conn = h.live();
        assert!(h.input(Input::Text(conn, text)).is_empty());
        assert_eq!(h.stats.text_frames.get(), 1);
        let next = h.expect_open();
        assert_eq!(h.ms(), 0, "no delay after a connection that delivered");
        h.input(Input::Text(conn, text));
        assert!(
            opened(&h.advance(Duration::from_secs(1))).is_none(),
            "only one"
        );
        h.input(Input::Opened(next));
        assert_eq!(h.data(next), Route::Hold);
        assert_eq!(h.stats.switches.get(), 1);
    }
}

/// Dual mode's probe of SBE asks for a replacement (`Input::Replace`). Asked while a
/// replacement is already on its way (its wire chosen before the request), that one is
/// replaced in turn once it is in: the request is never dropped (it would leave the slot on
/// JSON until the connection's lifetime ends).
#[test]
fn a_replace_asked_while_a_replacement_opens_replaces_that_one_in_turn() {
    let mut h = Harness::new();
    let conn = h.live();
    h.input(Input::Text(conn, SHUTDOWN));
    let next = h.expect_open();
    h.now += Duration::from_millis(1);
    assert!(opened(&h.input(Input::Replace)).is_none(), "one at a time");
    h.input(Input::Opened(next));
    assert_eq!(h.data(next), Route::Hold);
    let actions = h.advance(OVERLAP + Duration::from_millis(1));
    assert!(closes(&actions, conn));
    let asked = opened(&actions).expect("the asked replacement opens after the overlap");
    assert_ne!(asked, next);
}

/// The same while the slot reconnects: the connection on its way is replaced once it is in.
#[test]
fn a_replace_asked_while_reconnecting_replaces_the_connection_that_comes() {
    let mut h = Harness::new();
    let conn = h.live();
    h.input(Input::Closed(conn));
    let next = h.expect_open();
    h.input(Input::Replace);
    h.input(Input::Opened(next));
    assert_eq!(h.data(next), Route::Direct);
    let asked = opened(&h.advance(Duration::from_secs(1))).expect("the asked replacement");
    assert_ne!(asked, next);
}

#[test]
fn server_shutdown_of_a_connection_that_never_delivered_waits_a_backoff_delay() {
    let mut h = Harness::new();
    let conn = h.expect_open();
    h.input(Input::Opened(conn));
    h.now += Duration::from_millis(1);
    h.input(Input::Text(conn, SHUTDOWN));
    let due = h.slot.deadline().expect("a replacement is scheduled");
    assert!(due >= h.now && due <= h.now + Duration::from_millis(100));
}

/// Issue 9: a silent connection is replaced make-before-break: the replacement opens while the
/// silent one is still read, and its frames are held behind the silent one's late ones.
#[test]
fn a_silent_connection_is_replaced_make_before_break() {
    let mut h = Harness::new();
    let silent = h.live();
    let actions = h.advance(SILENT);
    let next = opened(&actions).expect("a replacement opens");
    assert!(!closes(&actions, silent), "the silent one stays open");
    assert_eq!(h.stats.reconnects.get(), 1, "silence is counted");
    h.input(Input::Opened(next));
    h.now += Duration::from_millis(20);
    assert_eq!(h.data(next), Route::Hold, "held behind the silent one");
    // The silent one was only stalled: its late frames arrive and release the held ones.
    assert_eq!(h.data(silent), Route::DirectThenRelease);
    let actions = h.advance(OVERLAP);
    assert_eq!(
        actions,
        [Action::Close { conn: silent }, Action::ReleaseHeld]
    );
    assert_eq!(h.slot.steady(), Some(next));
}

#[test]
fn a_replacement_that_delivers_nothing_while_the_current_one_recovers_is_dropped() {
    let mut h = Harness::new();
    let current = h.live();
    let next = opened(&h.advance(SILENT)).expect("a replacement");
    h.input(Input::Opened(next));
    // The current connection recovers; the replacement stays quiet.
    for _ in 0..20 {
        h.now += Duration::from_millis(500);
        h.data(current);
    }
    let actions = h.advance(Duration::from_millis(1));
    assert!(closes(&actions, next), "{actions:?}");
    assert!(
        opened(&actions).is_none(),
        "nothing wants a replacement now"
    );
    assert_eq!(h.slot.steady(), Some(current));
}

#[test]
fn when_both_are_silent_the_newer_connection_is_kept() {
    let mut h = Harness::new();
    let first = h.live();
    let second = opened(&h.advance(SILENT)).expect("a replacement");
    h.input(Input::Opened(second));
    let actions = h.advance(SILENT);
    assert!(closes(&actions, first), "{actions:?}");
    assert!(!closes(&actions, second));
    // The kept one never delivered: the next replacement waits a backoff delay.
    assert_eq!(h.stats.reconnects.get(), 2);
    let third = opened(&h.advance(BACKOFF_MAX)).expect("another replacement");
    h.input(Input::Opened(third));
    assert_eq!(h.data(third), Route::Hold);
    assert_eq!(h.data(second), Route::DirectThenRelease);
}

#[test]
fn a_replacement_wanted_during_an_overlap_opens_when_it_ends() {
    let mut h = Harness::new();
    let old = h.live();
    h.input(Input::Text(old, SHUTDOWN));
    let current = h.expect_open();
    h.input(Input::Opened(current));
    h.data(current);
    // The new connection is told to go too, inside the overlap.
    h.input(Input::Text(current, SHUTDOWN));
    let overlap_end = h.now + OVERLAP;
    assert_eq!(h.slot.deadline(), Some(overlap_end));
    let actions = h.advance(OVERLAP);
    assert_eq!(
        actions[..2],
        [Action::Close { conn: old }, Action::ReleaseHeld],
        "the overlap ends first"
    );
    assert_eq!(opened(&actions), Some(ConnId(2)));
}

#[test]
fn the_current_connection_closing_during_the_overlap_hands_over_to_the_old_one() {
    let mut h = Harness::new();
    let old = h.live();
    h.input(Input::Text(old, SHUTDOWN));
    let current = h.expect_open();
    h.input(Input::Opened(current));
    h.data(current);
    let actions = h.input(Input::Closed(current));
    assert_eq!(actions, [Action::ReleaseHeld]);
    assert_eq!(h.stats.reconnects.get(), 1);
    assert_eq!(h.data(old), Route::Direct);
    // The slot's own figures (published per connection): every data frame, the one loss.
    let figures = h.slot.figures();
    assert_eq!((figures.frames, figures.reconnects), (3, 1));
    assert!(figures.delivering && figures.carrying);
    // The old one had been told to go: it is replaced at once.
    assert!(opened(&h.advance(Duration::ZERO)).is_some());
}

#[test]
fn the_old_connection_closing_during_the_overlap_releases_what_it_held_back() {
    let mut h = Harness::new();
    let old = h.live();
    h.input(Input::Text(old, SHUTDOWN));
    let current = h.expect_open();
    h.input(Input::Opened(current));
    h.data(current);
    assert_eq!(h.input(Input::Closed(old)), [Action::ReleaseHeld]);
    assert_eq!(h.stats.reconnects.get(), 0, "an expected end");
    assert_eq!(h.slot.steady(), Some(current));
    assert!(h.advance(OVERLAP).is_empty(), "no overlap left to end");
}

#[test]
fn a_lost_connection_that_delivered_is_reopened_at_once_one_that_did_not_after_backoff() {
    let mut h = Harness::new();
    let conn = h.live();
    h.input(Input::Closed(conn));
    assert_eq!(h.stats.reconnects.get(), 1);
    let conn = h.expect_open();
    assert_eq!(h.ms(), 0);
    h.input(Input::Opened(conn));
    h.now += Duration::from_millis(10);
    h.input(Input::Closed(conn));
    let due = h.slot.deadline().expect("scheduled");
    assert!(
        due <= h.now + Duration::from_millis(100),
        "the first delay's cap"
    );
}

/// A current connection lost with nothing to take over: the streams are lost (said once, for
/// the sidecar, whose consumers keep books from them) until a new connection opens; a switch
/// to a replacement is no loss.
#[test]
fn losing_the_only_connection_says_the_streams_are_lost_until_one_opens() {
    let mut h = Harness::new();
    let conn = h.live();
    // The slot's streams, sorted.
    let carried = || {
        let mut s = streams();
        s.sort();
        s
    };
    let lost = Action::StreamsLost { streams: carried() };
    assert_eq!(h.input(Input::Closed(conn)), std::slice::from_ref(&lost));
    let next = h.expect_open();
    // The new connection fails: still lost, not said again.
    assert!(!h.input(Input::Failed(next)).contains(&lost));
    let actions = h.advance(Duration::from_secs(1));
    let next = opened(&actions).expect("a retry after the backoff delay");
    assert_eq!(
        h.input(Input::Opened(next)),
        [Action::StreamsBack { streams: carried() }]
    );
    // A make-before-break switch loses nothing.
    assert_eq!(h.data(next), Route::Direct);
    h.input(Input::Text(next, SHUTDOWN));
    let replacement = h.expect_open();
    h.input(Input::Opened(replacement));
    h.data(replacement);
    let actions = h.input(Input::Closed(next));
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::StreamsLost { .. } | Action::StreamsBack { .. })),
        "{actions:?}"
    );
}

/// Connections that never deliver are followed by growing delays (full jitter under a cap
/// that doubles up to `backoff_max`), and one that delivers resets them.
#[test]
fn backoff_grows_while_connections_deliver_nothing_and_resets_on_data() {
    let mut h = Harness::new();
    let mut delays = Vec::new();
    for _ in 0..12 {
        let conn = h.expect_open();
        let opened_at = h.now;
        h.input(Input::Failed(conn));
        let due = h.slot.deadline().expect("a retry");
        delays.push(due - opened_at);
        h.now = due;
    }
    for (attempt, delay) in delays.iter().enumerate() {
        let cap = Duration::from_millis(100)
            .saturating_mul(1 << attempt)
            .min(BACKOFF_MAX);
        assert!(*delay <= cap, "attempt {attempt}: {delay:?}");
    }
    assert!(
        delays[8..].iter().any(|d| *d > Duration::from_millis(400)),
        "later delays spread up to the larger cap: {delays:?}"
    );
    let conn = h.expect_open();
    h.input(Input::Opened(conn));
    h.data(conn);
    h.input(Input::Closed(conn));
    assert_eq!(h.slot.deadline(), Some(h.now), "reset: at once");
}

/// Binance's per-IP attempt budget is shared: when it is used up the slot waits until the
/// oldest attempt leaves the window.
#[test]
fn the_attempt_budget_holds_back_an_attempt_until_the_window_frees_one() {
    let mut h = Harness::with_budget(AttemptBudget::new(2, Duration::from_secs(60)));
    for _ in 0..2 {
        let conn = h.expect_open();
        h.input(Input::Opened(conn));
        h.data(conn);
        h.input(Input::Closed(conn));
    }
    let actions = h.advance(Duration::ZERO);
    assert!(opened(&actions).is_none(), "budget used up: {actions:?}");
    assert_eq!(h.slot.deadline(), Some(h.start + Duration::from_secs(60)));
    assert!(opened(&h.advance(Duration::from_secs(59))).is_none());
    assert!(opened(&h.advance(Duration::from_secs(1))).is_some());
    assert_eq!(h.stats.connects.get(), 3);
}

#[test]
fn pings_are_answered_and_stop_closes_everything_and_releases_held_frames() {
    let mut h = Harness::new();
    let old = h.live();
    assert_eq!(h.input(Input::Ping(old)), [Action::Pong { conn: old }]);
    h.input(Input::Text(old, SHUTDOWN));
    let current = h.expect_open();
    h.input(Input::Opened(current));
    h.data(current);
    let actions = h.input(Input::Stop);
    assert_eq!(
        actions,
        [
            Action::Close { conn: old },
            Action::Close { conn: current },
            Action::ReleaseHeld
        ]
    );
    assert!(h.slot.is_stopped());
    assert_eq!(h.slot.deadline(), None);
    assert!(h.input(Input::Ping(current)).is_empty());
    assert!(h.advance(LIFETIME).is_empty());
}

#[test]
fn an_opening_nobody_waits_for_is_closed() {
    let mut h = Harness::new();
    let conn = h.live();
    assert_eq!(
        h.input(Input::Opened(ConnId(42))),
        [Action::Close { conn: ConnId(42) }]
    );
    assert_eq!(h.slot.steady(), Some(conn));
}

fn subscribe(symbol: &str, index: u16) -> Input<'static> {
    let lower = symbol.to_lowercase();
    Input::Command(Command::Subscribe {
        symbol: symbol.into(),
        index,
        streams: vec![format!("{lower}@trade"), format!("{lower}@depth")],
    })
}

fn unsubscribe(symbol: &str, index: u16) -> Input<'static> {
    let lower = symbol.to_lowercase();
    Input::Command(Command::Unsubscribe {
        index,
        streams: vec![format!("{lower}@trade"), format!("{lower}@depth")],
        halted: false,
    })
}

fn request(value: &Value) -> (String, Vec<String>) {
    let method = value["method"].as_str().expect("a method").to_string();
    let params = value["params"]
        .as_array()
        .expect("params")
        .iter()
        .map(|p| p.as_str().expect("a name").to_string())
        .collect();
    (method, params)
}

/// One request in flight per connection, at most one per CONTROL_INTERVAL; a stream counts as
/// carried on the reply, not on the request.
#[test]
fn control_requests_are_paced_and_count_only_when_acknowledged() {
    let mut h = Harness::new();
    let conn = h.live();
    let actions = h.input(subscribe("ETHUSDT", 1));
    assert_eq!(
        actions,
        [Action::Accept {
            symbol: "ETHUSDT".into(),
            index: 1
        }]
    );
    let sends = sent(&h.advance(Duration::ZERO));
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].0, conn);
    assert_eq!(
        request(&sends[0].1),
        (
            "SUBSCRIBE".to_string(),
            vec!["ethusdt@depth".to_string(), "ethusdt@trade".to_string()]
        )
    );
    // A second change while the first is unanswered waits for the reply.
    assert_eq!(
        h.input(unsubscribe("BTCUSDT", 0)),
        [Action::Forget {
            index: 0,
            halted: false
        }]
    );
    assert!(sent(&h.advance(Duration::from_secs(1))).is_empty());
    h.input(Input::Text(conn, &ack(&sends[0].1["id"])));
    // Answered after the interval: the UNSUBSCRIBE goes at once, then nothing more.
    let sends = sent(&h.advance(Duration::ZERO));
    assert_eq!(
        request(&sends[0].1),
        (
            "UNSUBSCRIBE".to_string(),
            vec!["btcusdt@depth".to_string(), "btcusdt@trade".to_string()]
        )
    );
    h.input(Input::Text(conn, &ack(&sends[0].1["id"])));
    assert!(sent(&h.advance(Duration::from_secs(10))).is_empty());
    assert_eq!(
        h.stats.control_errors.get() + h.stats.control_timeouts.get(),
        0
    );
}

#[test]
fn a_quick_reply_still_leaves_the_pacing_interval_between_requests() {
    let mut h = Harness::new();
    let conn = h.live();
    h.input(subscribe("ETHUSDT", 1));
    let first = sent(&h.advance(Duration::ZERO));
    h.input(Input::Text(conn, &ack(&first[0].1["id"])));
    h.input(subscribe("BNBUSDT", 2));
    let sent_at = h.now;
    let actions = h.advance(CONTROL_INTERVAL);
    assert_eq!(sent(&actions).len(), 1);
    assert_eq!(h.now - sent_at, CONTROL_INTERVAL);
    assert_eq!(
        h.slot
            .deadline()
            .map(|d| d > h.now + Duration::from_secs(1)),
        Some(true),
        "nothing due but the reply timeout"
    );
}

/// Issue 9: an error reply is counted, logged and retried with backoff; the failing stream is
/// retried alone so that it does not hold back other subscriptions.
#[test]
fn an_error_reply_is_counted_and_retried_alone_with_growing_delays() {
    let mut h = Harness::new();
    let conn = h.live();
    h.input(Input::Command(Command::Subscribe {
        symbol: "NOPEUSDT".into(),
        index: 1,
        streams: vec!["nopeusdt@trade".into()],
    }));
    let sends = sent(&h.advance(Duration::ZERO));
    let error = |id: &Value| {
        format!(
            r#"{{"code":2,"msg":"Invalid request: invalid stream name nopeusdt@trade","id":{id}}}"#
        )
    };
    h.input(Input::Text(conn, &error(&sends[0].1["id"])));
    let failed_at = h.now;
    assert_eq!(h.stats.control_errors.get(), 1);
    // Another symbol meanwhile: subscribed without the failing stream.
    h.input(subscribe("ETHUSDT", 2));
    assert!(sent(&h.advance(Duration::ZERO)).is_empty(), "pacing");
    let sends = sent(&h.advance(CONTROL_INTERVAL));
    assert_eq!(
        request(&sends[0].1).1,
        ["ethusdt@depth", "ethusdt@trade"],
        "the new symbol goes on its own"
    );
    h.input(Input::Text(conn, &ack(&sends[0].1["id"])));
    // The failed one comes back alone, 2 x CONTROL_INTERVAL after the failure, and every
    // further failure doubles its delay, up to CONTROL_RETRY_MAX.
    let mut failed_at = failed_at;
    let mut gaps = Vec::new();
    for _ in 0..10 {
        let mut retry = Vec::new();
        while retry.is_empty() {
            retry = sent(&h.advance(Duration::from_millis(50)));
        }
        assert_eq!(request(&retry[0].1).1, ["nopeusdt@trade"]);
        gaps.push(h.now - failed_at);
        h.input(Input::Text(conn, &error(&retry[0].1["id"])));
        failed_at = h.now;
    }
    for (i, gap) in gaps.iter().enumerate() {
        let delay = retry_delay(i as u32 + 1);
        assert!(
            *gap >= delay && *gap <= delay + Duration::from_millis(50),
            "retry {i}: {gap:?}, delay {delay:?}"
        );
    }
    assert_eq!(gaps[0], CONTROL_INTERVAL * 2);
    assert!(gaps[9] >= CONTROL_RETRY_MAX);
    assert_eq!(h.stats.control_errors.get(), 11);
}

#[test]
fn no_reply_within_the_timeout_counts_and_retries() {
    let mut h = Harness::new();
    let conn = h.live();
    h.input(subscribe("ETHUSDT", 1));
    let first = sent(&h.advance(Duration::ZERO));
    assert_eq!(
        h.slot.deadline(),
        Some(h.now + CONTROL_REPLY_TIMEOUT),
        "the reply timeout is armed"
    );
    let actions = h.advance(CONTROL_REPLY_TIMEOUT);
    assert_eq!(h.stats.control_timeouts.get(), 1);
    assert!(sent(&actions).is_empty(), "retried after a delay");
    let retry = sent(&h.advance(CONTROL_INTERVAL * 2));
    assert_eq!(retry.len(), 1);
    assert_ne!(retry[0].1["id"], first[0].1["id"]);
    // The late reply to the first request is ignored; the retry's reply counts.
    h.input(Input::Text(conn, &ack(&first[0].1["id"])));
    assert!(
        h.slot
            .deadline()
            .is_some_and(|d| d > h.now + Duration::from_secs(1))
    );
    h.input(Input::Text(conn, &ack(&retry[0].1["id"])));
    let later = sent(&h.advance(Duration::from_secs(2)));
    assert_eq!(later.len(), 1, "the other stream, alone");
    h.input(Input::Text(conn, &ack(&later[0].1["id"])));
    assert!(sent(&h.advance(Duration::from_secs(30))).is_empty());
}

#[test]
fn a_stream_that_failed_is_left_out_of_a_new_connections_url() {
    let mut h = Harness::new();
    let conn = h.live();
    h.input(subscribe("NOPEUSDT", 1));
    let sends = sent(&h.advance(Duration::ZERO));
    h.input(Input::Text(
        conn,
        &format!(r#"{{"code":2,"msg":"no","id":{}}}"#, sends[0].1["id"]),
    ));
    h.input(Input::Closed(conn));
    let actions = h.advance(Duration::ZERO);
    let Some(Action::Open { conn, streams }) = actions.first() else {
        panic!("{actions:?}")
    };
    assert_eq!(streams, &["btcusdt@depth", "btcusdt@trade"]);
    h.input(Input::Opened(*conn));
    h.data(*conn);
    let retry = sent(&h.advance(Duration::from_secs(1)));
    assert_eq!(
        request(&retry[0].1).1.len(),
        1,
        "retried alone on the new connection"
    );
}

#[test]
fn a_replacement_is_brought_to_the_wanted_streams_too() {
    let mut h = Harness::new();
    let conn = h.live();
    h.input(Input::Text(conn, SHUTDOWN));
    let next = h.expect_open();
    // Subscribed while the replacement opens with the old list in its URL.
    h.input(subscribe("ETHUSDT", 1));
    h.input(Input::Opened(next));
    let sends = sent(&h.advance(Duration::ZERO));
    let on: BTreeSet<ConnId> = sends.iter().map(|(c, _)| *c).collect();
    assert_eq!(on, BTreeSet::from([conn, next]));
}

#[test]
fn text_frames_are_parsed_as_binance_sends_them() {
    assert_eq!(
        parse_text(r#"{"result":null,"id":7}"#),
        Text::Reply { id: 7, error: None }
    );
    assert_eq!(
        parse_text(r#"{"code":2,"msg":"Invalid request","id":8}"#),
        Text::Reply {
            id: 8,
            error: Some((2, "Invalid request".into()))
        }
    );
    assert_eq!(parse_text(SHUTDOWN), Text::ServerShutdown);
    assert_eq!(
        parse_text(r#"{"stream":"!serverShutdown","data":{"e":"serverShutdown"}}"#),
        Text::ServerShutdown
    );
    for other in [
        "",
        "serverShutdown",
        "{",
        r#"{"code":3,"msg":"Invalid JSON"}"#,
        r#"{"result":["btcusdt@trade"]}"#,
        r#"{"id":"abc","result":null}"#,
        "[1,2]",
    ] {
        assert_eq!(parse_text(other), Text::Other, "{other}");
    }
}

#[test]
fn retry_delays_double_up_to_the_cap_without_overflow() {
    assert_eq!(retry_delay(1), CONTROL_INTERVAL * 2);
    assert_eq!(retry_delay(2), CONTROL_INTERVAL * 4);
    assert_eq!(retry_delay(40), CONTROL_RETRY_MAX);
    assert_eq!(retry_delay(u32::MAX), CONTROL_RETRY_MAX);
}

// ---- properties: two connections delivering the same events ----

/// One published event: a trades frame or a depth diff, with its id range.
#[derive(Clone, Copy, Debug)]
struct Published {
    kind: StreamKind,
    first: i64,
    last: i64,
}

impl Published {
    fn frame(&self) -> bytes::Bytes {
        match self.kind {
            StreamKind::Trade => trades(self.first..=self.last),
            _ => diff(self.first, self.last),
        }
    }
}

/// Contiguous trades (ids from 1) and diffs (U/u from 1000), in publication order; the first
/// two are one of each, so the old connection has delivered both streams before any switch.
fn published(shape: &[(bool, u8)]) -> Vec<Published> {
    let (mut trade, mut depth) = (1i64, 1000i64);
    let mut out = Vec::new();
    let forced = [(true, 1u8), (false, 1u8)];
    for &(is_trade, width) in forced.iter().chain(shape) {
        let width = i64::from(width.clamp(1, 4));
        let next = if is_trade { &mut trade } else { &mut depth };
        out.push(Published {
            kind: if is_trade {
                StreamKind::Trade
            } else {
                StreamKind::Depth
            },
            first: *next,
            last: *next + width - 1,
        });
        *next += width;
    }
    out
}

/// How the replacement is asked for.
#[derive(Clone, Copy, Debug)]
enum Trigger {
    Shutdown,
    Lifetime,
    Silence,
}

/// How the old connection goes, at some step of the interleaving.
#[derive(Clone, Copy, Debug)]
enum Gone {
    /// The server closes it.
    Closed,
    /// The overlap time passes (the slot closes it if it switched by then).
    OverlapTime,
    /// It stays until the feed stops.
    Never,
}

#[derive(Clone, Debug)]
struct Scenario {
    events: Vec<Published>,
    /// Events the old connection delivered before the replacement is asked for (>= 2).
    before: usize,
    /// The old connection delivers events `..old_end` at most (its tail may be lost).
    old_end: usize,
    /// The new connection delivers events `new_start..`.
    new_start: usize,
    trigger: Trigger,
    gone: Gone,
    gone_at: usize,
    /// Which connection delivers next, while both have something.
    choices: Vec<bool>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        proptest::collection::vec((any::<bool>(), 1u8..=4), 2..40),
        any::<proptest::sample::Index>(),
        any::<proptest::sample::Index>(),
        any::<proptest::sample::Index>(),
        prop_oneof![
            Just(Trigger::Shutdown),
            Just(Trigger::Lifetime),
            Just(Trigger::Silence)
        ],
        prop_oneof![
            Just(Gone::Closed),
            Just(Gone::OverlapTime),
            Just(Gone::Never)
        ],
        0usize..120,
        proptest::collection::vec(any::<bool>(), 120),
    )
        .prop_map(
            |(shape, before, old_end, new_start, trigger, gone, gone_at, choices)| {
                let events = published(&shape);
                let n = events.len();
                let before = 2 + before.index(n - 1);
                let old_end = before + old_end.index(n - before + 1);
                let new_start = new_start.index(n + 1);
                Scenario {
                    events,
                    before,
                    old_end,
                    new_start,
                    trigger,
                    gone,
                    gone_at,
                    choices,
                }
            },
        )
}

/// A slot and the frame path it routes into, with the shell's duties done by hand.
struct World {
    h: Harness,
    path: FramePath,
    held: Held,
    events: rtrb::Consumer<FeedEvent>,
    notices: rtrb::Consumer<Notice>,
    /// Connections the slot closed (their frames are no longer read).
    closed: BTreeSet<ConnId>,
}

impl World {
    fn new() -> World {
        let h = Harness::new();
        let (producer, events) = rtrb::RingBuffer::new(4096);
        let (notices_in, notices) = rtrb::RingBuffer::new(4096);
        let path = FramePath::with(
            &["BTCUSDT".to_string()],
            65_535,
            vec![producer],
            notices_in,
            h.stats.clone(),
        );
        World {
            h,
            path,
            held: Held::default(),
            events,
            notices,
            closed: BTreeSet::new(),
        }
    }

    fn carry_out(&mut self, actions: Vec<Action>) -> Option<ConnId> {
        let mut opened = None;
        for action in actions {
            match action {
                Action::ReleaseHeld => self.path.release(&mut self.held, true),
                Action::Close { conn } => {
                    self.closed.insert(conn);
                }
                Action::Open { conn, .. } => opened = Some(conn),
                Action::Send { .. } | Action::Pong { .. } => panic!("no control here"),
                Action::Accept { .. }
                | Action::Forget { .. }
                | Action::StreamsLost { .. }
                | Action::StreamsBack { .. } => {}
            }
        }
        opened
    }

    fn deliver(&mut self, conn: ConnId, event: &Published) {
        if self.closed.contains(&conn) {
            return;
        }
        self.h.now += Duration::from_millis(1);
        let route = self.h.data(conn);
        let frame = event.frame();
        match route {
            Route::Direct => self.path.on_frame(frame, 0),
            Route::DirectThenRelease => {
                self.path.on_frame(frame, 0);
                self.path.release(&mut self.held, false);
            }
            Route::Hold => self.path.on_frame_holding(frame, 0, &mut self.held),
            Route::Drop => {}
        }
    }
}

/// Ids per kind: `(kind as u8, id)`.
type Ids = BTreeSet<(u8, i64)>;

/// Runs a scenario; returns the ids each connection delivered while read, the accepted events
/// `(kind as u8, first, last)`, and the ids reported missing.
fn run(s: &Scenario) -> (Ids, Vec<(u8, i64, i64)>, Ids) {
    let mut w = World::new();
    let first = w.h.live();
    let mut delivered = BTreeSet::new();
    let mut note = |w: &World, conn: ConnId, e: &Published| {
        if !w.closed.contains(&conn) {
            for id in e.first..=e.last {
                delivered.insert((e.kind as u8, id));
            }
        }
    };
    // The first event was delivered by `live`; deliver it for real, then the rest before.
    for e in &s.events[..s.before] {
        note(&w, first, e);
        w.deliver(first, e);
    }
    let actions = match s.trigger {
        Trigger::Shutdown => w.h.input(Input::Text(first, SHUTDOWN)),
        Trigger::Lifetime => {
            let due = w.h.start + LIFETIME - REPLACE_BEFORE;
            let by = due.saturating_duration_since(w.h.now);
            w.h.advance(by)
        }
        Trigger::Silence => w.h.advance(SILENT),
    };
    let mut opened = w.carry_out(actions);
    if opened.is_none() {
        let actions = w.h.advance(Duration::ZERO);
        opened = w.carry_out(actions);
    }
    let second = opened.expect("a replacement opens");
    let actions = w.h.input(Input::Opened(second));
    w.carry_out(actions);
    let (mut old_at, mut new_at) = (s.before, s.new_start);
    let mut step = 0;
    while old_at < s.old_end || new_at < s.events.len() {
        if step == s.gone_at {
            let actions = match s.gone {
                Gone::Closed if !w.closed.contains(&first) => w.h.input(Input::Closed(first)),
                Gone::OverlapTime => w.h.advance(OVERLAP),
                _ => Vec::new(),
            };
            w.carry_out(actions);
            if matches!(s.gone, Gone::Closed) {
                w.closed.insert(first);
            }
        }
        let old_turn =
            new_at >= s.events.len() || (old_at < s.old_end && s.choices[step % s.choices.len()]);
        if old_turn {
            let e = s.events[old_at];
            note(&w, first, &e);
            w.deliver(first, &e);
            old_at += 1;
        } else {
            let e = s.events[new_at];
            note(&w, second, &e);
            w.deliver(second, &e);
            new_at += 1;
        }
        step += 1;
    }
    let actions = w.h.input(Input::Stop);
    w.carry_out(actions);
    assert!(w.held.is_empty(), "nothing left held after the stop");
    let accepted = std::iter::from_fn(|| w.events.pop().ok())
        .map(|e| (e.kind as u8, e.first_new_id, e.last_id))
        .collect();
    let mut missing = BTreeSet::new();
    while let Ok(notice) = w.notices.pop() {
        for id in notice.gap.missing_range() {
            missing.insert((notice.gap.kind as u8, id));
        }
    }
    (delivered, accepted, missing)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the interleaving, whichever way the replacement was asked for and however the
    /// old connection goes (its tail lost or not): every id either connection delivered
    /// reaches the ring exactly once and in order, and only ids neither delivered are reported
    /// missing, all of them.
    #[test]
    fn two_connections_never_lose_duplicate_or_falsely_report_an_id(s in scenario()) {
        let (delivered, accepted, missing) = run(&s);
        let mut seen = BTreeSet::new();
        for kind in [StreamKind::Trade as u8, StreamKind::Depth as u8] {
            let mut last = i64::MIN;
            for &(k, first, end) in accepted.iter().filter(|e| e.0 == kind) {
                prop_assert!(first > last, "kind {k}: {first}..={end} after {last}: a duplicate or disorder");
                last = end;
                for id in first..=end {
                    seen.insert((k, id));
                }
            }
        }
        prop_assert_eq!(&seen, &delivered, "accepted ids = delivered ids");
        for id in &missing {
            prop_assert!(!delivered.contains(id), "false gap at {:?}", id);
        }
        for kind in [StreamKind::Trade as u8, StreamKind::Depth as u8] {
            let ids: Vec<i64> = delivered.iter().filter(|d| d.0 == kind).map(|d| d.1).collect();
            if let (Some(lo), Some(hi)) = (ids.first(), ids.last()) {
                for id in *lo..=*hi {
                    let key = (kind, id);
                    prop_assert!(delivered.contains(&key) || missing.contains(&key), "unreported gap at {:?}", key);
                }
            }
        }
    }
}
