//! The control plane: an HTTP server on its own thread and its own current-thread runtime
//! (never on a reader core; it only reads the counters the hot path already keeps) serving
//! `GET /metrics` (Prometheus text or OpenMetrics), `/health`, `/ready`, `/live`, `/stats`,
//! `/pairs`, and, when `http.allow_pair_changes`, `POST /pairs` and `DELETE /pairs/{SYMBOL}`
//! behind a bearer token from the environment.
//!
//! Pair changes go through [`crate::feed::run::Feed::add_symbol`] / `remove_symbol`, which need
//! the feed itself: the HTTP thread sends each change over a channel to whoever owns the feed
//! (`hotpath run`'s wait loop, or [`serve_until`]), which calls [`Control::apply`] and answers.
//!
//! Pair discovery ([`discovery`], `[discovery] enabled`) runs on its own thread and sends its
//! changes over the same channel; the control plane runs when either is on.
//!
//! Pieces: [`status`] (the sampler: rates and ages; the JSON of `/health`, `/ready`,
//! `/stats`), [`metrics`] (the collector and the two exposition formats), [`server`] (hyper,
//! routing, errors), [`auth`] (the bearer token, compared in constant time).

pub mod auth;
pub mod discovery;
pub mod metrics;
pub mod server;
pub mod status;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot, watch};

use crate::config::RunConfig;
use crate::feed::run::{Feed, SinkHandle};
use crate::stream::StreamKind;
use status::Sources;

/// A change of the subscribed symbols asked over HTTP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PairChange {
    /// Subscribe a symbol's streams.
    Add(String),
    /// Unsubscribe them.
    Remove(String),
    /// Unsubscribe them because trading stopped (HALT or BREAK; pair discovery only).
    Halt(String),
}

impl PairChange {
    /// The symbol it changes.
    pub fn symbol(&self) -> &str {
        match self {
            PairChange::Add(s) | PairChange::Remove(s) | PairChange::Halt(s) => s,
        }
    }
}

/// A change and where its outcome goes.
#[derive(Debug)]
pub struct PairRequest {
    /// The change.
    pub change: PairChange,
    reply: oneshot::Sender<Result<(), String>>,
}

/// The running control plane.
pub struct Control {
    addr: Option<SocketAddr>,
    thread: Option<JoinHandle<()>>,
    discovery: Option<JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
    requests: mpsc::Receiver<PairRequest>,
    pairs: Arc<RwLock<Vec<String>>>,
    /// This instance's shard: symbols of other shards are refused.
    shard: Option<crate::shard::Shard>,
}

/// Starts the control plane of a run (`None` when `http.listen = "0"` and discovery is off):
/// binds at once, so a taken port fails the run with the address named. `token` is the bearer
/// token of the mutating endpoints (see [`crate::config::HttpConfig::token_from`]).
pub fn start(
    config: &RunConfig,
    feed: &Feed,
    sinks: &[SinkHandle],
    token: Option<String>,
) -> Result<Option<Control>, String> {
    if config.http.listen.is_none() && !config.discovery.enabled {
        return Ok(None);
    }
    let pairs = Arc::new(RwLock::new(config.symbols.clone()));
    let discovery_stats = config
        .discovery
        .enabled
        .then(|| Arc::new(discovery::DiscoveryStats::default()));
    let sources = Sources {
        service: "hotpath".into(),
        readers: feed.stats.clone(),
        sinks: sinks.iter().map(|s| (s.name, s.stats.clone())).collect(),
        sidecar: feed.sidecar.clone(),
        pairs: pairs.clone(),
        books_kept: config.redis.is_some() && config.streams.contains(&StreamKind::Depth),
        stale_after: config.http.stale_after,
        discovery: discovery_stats.clone(),
        registry: feed.registry(),
        consumers: if sinks.is_empty() {
            vec!["counter"]
        } else {
            sinks.iter().map(|s| s.name).collect()
        },
        streams: config.streams.clone(),
        connections: feed.connection_stats.clone(),
    };
    let (shutdown, stop) = watch::channel(false);
    let (sender, requests) = mpsc::channel(16);
    let discovery = match discovery_stats {
        Some(stats) => Some(discovery::spawn(
            config,
            pairs.clone(),
            sender.clone(),
            stats,
            stop.clone(),
        )?),
        None => None,
    };
    let (addr, thread) = match config.http.listen {
        Some(listen) => {
            let app = server::App::new(sources, token, config.http.allow_pair_changes, sender);
            let core = config.core_plan().control;
            let (addr, thread) = serve(listen, app, stop, core)?;
            (Some(addr), Some(thread))
        }
        None => (None, None),
    };
    Ok(Some(Control {
        addr,
        thread,
        discovery,
        shutdown,
        requests,
        pairs,
        shard: config.shard,
    }))
}

/// Binds `listen` and starts the HTTP thread.
fn serve(
    listen: SocketAddr,
    app: server::App,
    stop: watch::Receiver<bool>,
    core: Option<usize>,
) -> Result<(SocketAddr, JoinHandle<()>), String> {
    let listener = std::net::TcpListener::bind(listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| format!("http.listen: cannot listen on {listen}: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("http.listen: {e}"))?;
    let thread = std::thread::Builder::new()
        .name("hotpath-control".into())
        .spawn(move || {
            crate::cores::pin(core);
            server::run(listener, app, stop)
        })
        .map_err(|e| format!("cannot start the control thread: {e}"))?;
    tracing::info!(%addr, "control plane listening");
    Ok((addr, thread))
}

impl Control {
    /// Where the HTTP server listens (`None`: `http.listen = "0"`, discovery alone).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// The next pair change asked over HTTP (pending forever once the server is gone).
    pub async fn next_request(&mut self) -> PairRequest {
        match self.requests.recv().await {
            Some(request) => request,
            None => std::future::pending().await,
        }
    }

    /// Carries out `request` on `feed` and answers the HTTP request that asked it.
    pub fn apply(&mut self, request: PairRequest, feed: &mut Feed) {
        let outcome = match &request.change {
            PairChange::Add(symbol) => match self.refusal(symbol) {
                Some(why) => Err(why),
                None => feed.add_symbol(symbol).map(|()| {
                    crate::sync::write(&self.pairs).push(symbol.clone());
                }),
            },
            PairChange::Remove(symbol) => feed.remove_symbol(symbol).map(|()| {
                crate::sync::write(&self.pairs).retain(|s| s != symbol);
            }),
            PairChange::Halt(symbol) => feed.halt_symbol(symbol).map(|()| {
                crate::sync::write(&self.pairs).retain(|s| s != symbol);
            }),
        };
        match &outcome {
            Ok(()) => tracing::info!(change = ?request.change, "pairs changed"),
            Err(e) => tracing::warn!(change = ?request.change, error = %e, "pair change refused"),
        }
        let _ = request.reply.send(outcome);
    }

    /// Why this instance refuses to add `symbol`: another shard owns it (`run.shard`).
    fn refusal(&self, symbol: &str) -> Option<String> {
        self.shard.and_then(|shard| shard.refusal(symbol))
    }

    /// Stops the server and waits for its thread.
    pub fn stop(mut self) {
        let _ = self.shutdown.send(true);
        for thread in [self.thread.take(), self.discovery.take()]
            .into_iter()
            .flatten()
        {
            let _ = thread.join();
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Serves pair changes on `feed` until `end` completes (the caller's runtime; the HTTP
/// server itself runs on its own thread). Without a control plane it just awaits `end`.
pub async fn serve_until(control: Option<&mut Control>, feed: &mut Feed, end: impl Future) {
    let Some(control) = control else {
        end.await;
        return;
    };
    tokio::pin!(end);
    loop {
        tokio::select! {
            _ = &mut end => return,
            request = control.next_request() => control.apply(request, feed),
        }
    }
}
