//! The control plane's HTTP/1.1 server on hyper (as the simulator's): its thread and runtime,
//! the routes, and the JSON errors. Every answer is JSON except `/metrics`; every error is a
//! 4xx or 5xx with `{"error": "..."}`.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

use super::auth::{self, Denied};
use super::metrics;
use super::status::{self, Sampler, Sources};
use super::{PairChange, PairRequest};

type Body = Full<Bytes>;

/// A request body larger than this is refused (413).
const BODY_BYTES_MAX: usize = 4096;
/// How long a pair change may wait for the feed's owner to carry it out.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle keep-alive connections are closed after this long without a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What every request handler shares.
pub struct App {
    sources: Sources,
    sampler: Arc<Mutex<Sampler>>,
    registry: Registry,
    token: Option<String>,
    allow_changes: bool,
    changes: mpsc::Sender<PairRequest>,
}

impl App {
    /// The server's state over `sources`.
    pub fn new(
        sources: Sources,
        token: Option<String>,
        allow_changes: bool,
        changes: mpsc::Sender<PairRequest>,
    ) -> App {
        let sampler = Arc::new(Mutex::new(Sampler::new(Instant::now())));
        let registry = metrics::registry(sources.clone(), sampler.clone());
        App {
            sources,
            sampler,
            registry,
            token,
            allow_changes,
            changes,
        }
    }
}

/// The control thread: a current-thread runtime serving `listener` and sampling the counters
/// until `stop`.
pub fn run(listener: std::net::TcpListener, app: App, mut stop: watch::Receiver<bool>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "control plane: cannot build its runtime");
            return;
        }
    };
    let app = Arc::new(app);
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, "control plane: cannot use its listener");
                return;
            }
        };
        let mut tick = tokio::time::interval(status::sample_every());
        let connections = stop.clone();
        loop {
            tokio::select! {
                _ = stop.wait_for(|&s| s) => return,
                _ = tick.tick() => {
                    crate::sync::lock(&app.sampler).sample(&app.sources, Instant::now());
                }
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        tokio::spawn(serve(stream, app.clone(), connections.clone()));
                    }
                }
            }
        }
    });
}

/// One connection, until it closes or the server stops.
async fn serve(stream: tokio::net::TcpStream, app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let service = service_fn(move |request| handle(request, app.clone()));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = stop.wait_for(|&s| s) => connection.as_mut().graceful_shutdown(),
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json_response(status, &json!({ "error": message.into() }))
}

async fn handle(request: Request<Incoming>, app: Arc<App>) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    let response = match (path.as_str(), &method) {
        ("/metrics", &Method::GET) => metrics_response(&request, &app),
        ("/health", &Method::GET) => {
            let sampler = crate::sync::lock(&app.sampler);
            let (ok, body) = status::health(&app.sources, &sampler, Instant::now());
            json_response(up(ok), &body)
        }
        ("/ready", &Method::GET) => {
            let (ok, body) = status::ready(&app.sources);
            json_response(up(ok), &body)
        }
        ("/live", &Method::GET) => json_response(StatusCode::OK, &json!({"status": "alive"})),
        ("/stats", &Method::GET) => {
            let sampler = crate::sync::lock(&app.sampler);
            json_response(
                StatusCode::OK,
                &status::stats(&app.sources, &sampler, Instant::now()),
            )
        }
        ("/pairs", &Method::GET) => json_response(StatusCode::OK, &pairs_json(&app)),
        ("/pairs", &Method::POST) => change(request, &app, None).await,
        (p, &Method::DELETE) if p.starts_with("/pairs/") => {
            let symbol = p["/pairs/".len()..].to_string();
            change(request, &app, Some(symbol)).await
        }
        ("/metrics" | "/health" | "/ready" | "/live" | "/stats", _) => not_allowed(&method, "GET"),
        ("/pairs", _) => not_allowed(&method, "GET, POST"),
        (p, _) if p.starts_with("/pairs/") => not_allowed(&method, "DELETE"),
        _ => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
    };
    Ok(response)
}

fn up(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

fn not_allowed(method: &Method, allow: &'static str) -> Response<Body> {
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not served here (allowed: {allow})"),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    response
}

fn metrics_response(request: &Request<Incoming>, app: &App) -> Response<Body> {
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok());
    match metrics::encode(&app.registry, metrics::wants_open_metrics(accept)) {
        Ok((body, content_type)) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(content_type),
            );
            response
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

fn pairs_json(app: &App) -> Value {
    let pairs = crate::sync::read(&app.sources.pairs).clone();
    json!({ "count": pairs.len(), "pairs": pairs })
}

/// A symbol as Binance spells it: 1 to 20 upper-case letters and digits.
fn valid_symbol(symbol: &str) -> bool {
    !symbol.is_empty()
        && symbol.len() <= 20
        && symbol
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// `POST /pairs` (`remove` is `None`; the body is `{"symbol": "BNBUSDT"}`) or
/// `DELETE /pairs/{SYMBOL}`.
async fn change(request: Request<Incoming>, app: &App, remove: Option<String>) -> Response<Body> {
    if let Err(response) = authorize(&request, app) {
        return *response;
    }
    let change = match remove {
        Some(symbol) => PairChange::Remove(symbol),
        None => match symbol_of(request).await {
            Ok(symbol) => PairChange::Add(symbol),
            Err(response) => return response,
        },
    };
    let (PairChange::Add(symbol) | PairChange::Remove(symbol)) = &change;
    if !valid_symbol(symbol) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{symbol:?} is not an upper-case symbol such as BTCUSDT"),
        );
    }
    let subscribed = crate::sync::read(&app.sources.pairs).contains(symbol);
    match (&change, subscribed) {
        (PairChange::Add(s), true) => {
            return error(StatusCode::CONFLICT, format!("{s} is already subscribed"));
        }
        (PairChange::Remove(s), false) => {
            return error(StatusCode::NOT_FOUND, format!("{s} is not subscribed"));
        }
        _ => {}
    }
    let (reply, outcome) = oneshot::channel();
    if app
        .changes
        .send(PairRequest { change, reply })
        .await
        .is_err()
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the run is stopping");
    }
    match tokio::time::timeout(CHANGE_TIMEOUT, outcome).await {
        Ok(Ok(Ok(()))) => json_response(StatusCode::OK, &pairs_json(app)),
        Ok(Ok(Err(e))) if e.contains("no connection has room") => {
            error(StatusCode::SERVICE_UNAVAILABLE, e)
        }
        Ok(Ok(Err(e))) => error(StatusCode::CONFLICT, e),
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the feed did not carry out the change in time",
        ),
    }
}

/// Pair changes allowed and the bearer token right, or the error response.
fn authorize(request: &Request<Incoming>, app: &App) -> Result<(), Box<Response<Body>>> {
    let token = match (&app.token, app.allow_changes) {
        (Some(token), true) => token,
        _ => {
            return Err(Box::new(error(
                StatusCode::FORBIDDEN,
                "pair changes are off (http.allow_pair_changes = false)",
            )));
        }
    };
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|h| h.as_bytes());
    match auth::check(header, token) {
        Ok(()) => Ok(()),
        Err(denied) => {
            let message = match denied {
                Denied::Missing => "an Authorization: Bearer token is required",
                Denied::Wrong => "the bearer token is not accepted",
            };
            let mut response = error(StatusCode::UNAUTHORIZED, message);
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            Err(Box::new(response))
        }
    }
}

/// The `symbol` of a `{"symbol": "..."}` body, or the 4xx response.
async fn symbol_of(request: Request<Incoming>) -> Result<String, Response<Body>> {
    let body = Limited::new(request.into_body(), BODY_BYTES_MAX)
        .collect()
        .await
        .map_err(|_| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body must be at most {BODY_BYTES_MAX} bytes"),
            )
        })?
        .to_bytes();
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("the body is not JSON such as {{\"symbol\":\"BNBUSDT\"}}: {e}"),
        )
    })?;
    value["symbol"].as_str().map(str::to_string).ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            "the body has no \"symbol\" string, e.g. {\"symbol\":\"BNBUSDT\"}",
        )
    })
}
