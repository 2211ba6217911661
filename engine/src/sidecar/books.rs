//! The sidecar's book work, the shell around [`super::depth`]: it takes the consumers' depth
//! snapshot requests from their request rings, fetches them with a small pool of REST clients
//! (one kept-alive connection each, so `concurrency` fetches run at once) as tasks on the
//! sidecar's runtime, and hands each snapshot, or the news that a check could not be served,
//! to the consumer's repair ring. It also turns the readers' stream notices (connection lost,
//! connection back, symbol removed) into [`Repair::Stream`] for the consumers that keep books.
//!
//! With the S3 archive's snapshot ring ([`BookSetup::archive`]), each snapshot fetched is also
//! handed, as it came, to the archive: a push that never waits; when the ring is full the
//! snapshot is dropped for the archive and counted (`snapshots_archive_dropped`): a snapshot
//! is not market data that is lost, the next one comes with the next resync.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::task::JoinSet;

use super::depth::{DepthPlan, Dispatch};
use crate::archive::snapshots::FetchedSnapshot;
use crate::backoff::jittered;
use crate::binance::rest::{DepthSnapshot, RestClient, RestError};
use crate::clock::unix_ms;
use crate::feed::event::{BookRequest, BookSnapshot, Cause, Notice, Purpose, Repair, StreamChange};
use crate::idle::Bell;
use crate::rng::Rng;

/// Retry delays of failed sync snapshots (full jitter between these, growing per failure).
const RETRY_INITIAL: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// What the sidecar needs for the books.
pub struct BookSetup {
    /// One request ring per consumer that keeps books: (its consumer index, the ring).
    pub requests: Vec<(usize, rtrb::Consumer<BookRequest>)>,
    /// The REST clients depth snapshots are fetched with; their number is the concurrency.
    pub clients: Vec<RestClient>,
    /// Request weight the fetches may use per minute (all clients together).
    pub weight_budget: u32,
    /// The S3 archive's snapshot ring and its writer's bell; `None`: snapshots are not
    /// archived.
    pub archive: Option<(rtrb::Producer<Box<FetchedSnapshot>>, Bell)>,
}

/// What a fetch task returns.
/// A finished fetch: the client back, what was asked, the answer and its latency (ns).
type Fetched = (
    RestClient,
    Dispatch,
    Result<DepthSnapshot, RestError>,
    u64,
    String,
);

/// The book work's state.
pub struct Books {
    requests: Vec<(usize, rtrb::Consumer<BookRequest>)>,
    idle: Vec<RestClient>,
    tasks: JoinSet<Fetched>,
    plan: DepthPlan,
    rng: Rng,
    failures_logged: u32,
    /// Snapshots handed out.
    pub fetched: u64,
    /// Fetches that failed.
    pub failed: u64,
    /// The sidecar's bell: a finished fetch wakes it.
    bell: Bell,
    /// Latencies of the fetches finished since the sidecar last took them, nanoseconds.
    pub latencies: Vec<u64>,
    /// The REST weight used in the minute, as the last answer reported it.
    pub used_weight: Option<u32>,
    archive: Option<(rtrb::Producer<Box<FetchedSnapshot>>, Bell)>,
    /// Snapshots handed to the archive.
    pub archived: u64,
    /// Snapshots the archive's full ring did not take.
    pub archive_dropped: u64,
}

impl Books {
    /// The book work for `setup`; each snapshot fetched wakes the sidecar through `bell`.
    pub fn new(setup: BookSetup, seed: u64, bell: Bell) -> Books {
        let concurrency = setup.clients.len();
        Books {
            requests: setup.requests,
            idle: setup.clients,
            tasks: JoinSet::new(),
            plan: DepthPlan::new(setup.weight_budget, concurrency),
            rng: Rng::new(seed | 1),
            failures_logged: 0,
            fetched: 0,
            failed: 0,
            bell,
            latencies: Vec::new(),
            used_weight: None,
            archive: setup.archive,
            archived: 0,
            archive_dropped: 0,
        }
    }

    /// Whether a consumer's snapshot request waits in a request ring.
    pub fn has_requests(&self) -> bool {
        self.requests.iter().any(|(_, ring)| !ring.is_empty())
    }

    /// A stream notice as the repairs it makes: `(consumer, repair)` for each consumer that
    /// keeps books; nothing for a gap notice.
    pub fn stream_repairs(&self, notice: &Notice, out: &mut Vec<(usize, Repair)>) {
        let change = match notice.cause {
            Cause::Disconnected => StreamChange::Disconnected,
            Cause::Reconnected => StreamChange::Reconnected,
            Cause::Removed => StreamChange::Removed,
            Cause::Halted => StreamChange::Halted,
            Cause::Wire | Cause::QueueFull { .. } => return,
        };
        for &(consumer, _) in &self.requests {
            let repair = Repair::Stream {
                symbol: notice.gap.symbol,
                change,
                last_update_id: notice.gap.last_good,
            };
            out.push((consumer, repair));
        }
    }

    /// A silent depth stream of `symbol`: each consumer keeping books is told to re-sync it
    /// ([`StreamChange::Silent`]). Returns whether any consumer keeps books.
    pub fn silent(&self, symbol: u16, out: &mut Vec<(usize, Repair)>) -> bool {
        for &(consumer, _) in &self.requests {
            let repair = Repair::Stream {
                symbol,
                change: StreamChange::Silent,
                last_update_id: 0,
            };
            out.push((consumer, repair));
        }
        !self.requests.is_empty()
    }

    /// One round: new requests in, fetches started, finished fetches out as `(consumer,
    /// repair)`. Returns how much was done.
    pub fn poll(
        &mut self,
        symbols: &Arc<RwLock<Vec<String>>>,
        out: &mut Vec<(usize, Repair)>,
    ) -> usize {
        let now = unix_ms();
        let mut work = 0;
        for (consumer, ring) in self.requests.iter_mut() {
            while let Ok(request) = ring.pop() {
                tracing::debug!(
                    consumer,
                    symbol = request.symbol,
                    purpose = ?request.purpose,
                    "sidecar: book request taken"
                );
                self.plan.request(*consumer, request, now);
                work += 1;
            }
        }
        if self.plan.pending() > self.plan.in_flight() && !self.idle.is_empty() {
            tracing::trace!(
                pending = self.plan.pending(),
                in_flight = self.plan.in_flight(),
                idle = self.idle.len(),
                used = self.plan.used(now),
                "sidecar: depth requests wait"
            );
        }
        while let Some(Ok(fetched)) = self.tasks.try_join_next() {
            self.on_fetched(fetched, out);
            work += 1;
        }
        while !self.idle.is_empty() {
            let Some(dispatch) = self.plan.next(now) else {
                break;
            };
            let name = crate::sync::read(symbols)
                .get(usize::from(dispatch.job.request.symbol))
                .cloned();
            let (Some(name), Some(mut client)) = (name, self.idle.pop()) else {
                self.plan.finished();
                continue;
            };
            tracing::debug!(
                symbol = dispatch.job.request.symbol,
                limit = dispatch.limit,
                used = self.plan.used(now),
                pending = self.plan.pending(),
                "sidecar: depth fetch started"
            );
            let bell = self.bell.clone();
            self.tasks.spawn(async move {
                let started = crate::clock::monotonic_ns();
                let result = client.depth(&name, dispatch.limit).await;
                let latency = crate::clock::monotonic_ns().saturating_sub(started);
                bell.wake();
                (client, dispatch, result, latency, name)
            });
            work += 1;
        }
        work
    }

    fn on_fetched(
        &mut self,
        (client, dispatch, result, latency, name): Fetched,
        out: &mut Vec<(usize, Repair)>,
    ) {
        let now = unix_ms();
        self.latencies.push(latency);
        self.used_weight = Some(client.used_weight());
        self.plan.finished();
        self.plan.observe(client.used_weight(), now);
        let (consumer, request) = (dispatch.job.consumer, dispatch.job.request);
        tracing::debug!(
            symbol = request.symbol,
            ok = result.is_ok(),
            latency_ms = latency / 1_000_000,
            used_weight = client.used_weight(),
            "sidecar: depth fetched"
        );
        self.idle.push(client);
        match result {
            Ok(snapshot) => {
                self.fetched += 1;
                self.hand_to_archive(name, &snapshot);
                let book = BookSnapshot {
                    symbol: request.symbol,
                    purpose: request.purpose,
                    limit: dispatch.limit,
                    snapshot,
                };
                out.push((consumer, Repair::Book(Box::new(book))));
            }
            Err(e) => {
                self.failed += 1;
                let wait = e.retry_after();
                if let Some(wait) = wait {
                    self.plan.hold(now.saturating_add(ms(wait)));
                }
                let delay = wait.unwrap_or_else(|| {
                    jittered(
                        &mut self.rng,
                        RETRY_INITIAL,
                        RETRY_MAX,
                        dispatch.job.failures,
                    )
                });
                if self.failures_logged < 10 {
                    self.failures_logged += 1;
                    tracing::warn!(
                        "sidecar: depth snapshot of symbol #{} failed: {e}; retrying in {delay:?}",
                        request.symbol
                    );
                }
                if !self
                    .plan
                    .failed(dispatch.job, now.saturating_add(ms(delay)))
                {
                    let purpose = Purpose::Check;
                    out.push((
                        consumer,
                        Repair::BookUnavailable {
                            symbol: request.symbol,
                            purpose,
                        },
                    ));
                }
            }
        }
    }

    /// Hands a copy of `snapshot` to the archive, never waiting: a full ring drops it (counted).
    fn hand_to_archive(&mut self, symbol: String, snapshot: &DepthSnapshot) {
        let Some((ring, bell)) = self.archive.as_mut() else {
            return;
        };
        let fetched = Box::new(FetchedSnapshot {
            symbol,
            fetch_time_us: crate::clock::unix_us(),
            snapshot: snapshot.clone(),
        });
        if ring.push(fetched).is_ok() {
            self.archived += 1;
            bell.wake();
        } else {
            self.archive_dropped += 1;
        }
    }

    /// Fetches queued or in flight.
    pub fn pending(&self) -> usize {
        self.plan.pending()
    }

    /// The run stops: nothing more is fetched (the consumers are stopping too).
    pub fn stop(&mut self) {
        self.plan.clear();
        self.tasks.abort_all();
    }
}

fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
