//! The control plane end to end: `hotpath run` (the library's `run_with`, as `main` wires it)
//! against the simulator with the Redis writer on a real `redis-server`, its `/metrics`
//! scraped by a real Prometheus (asserted through Prometheus's query API) and checked by
//! `promtool check metrics`; `/ready` only once the books are synced; `/health` going 503 when
//! the simulator stops and 200 when it is back; the pairs endpoints with the token off, missing,
//! wrong and right, bad requests answered with a JSON 4xx, and changes reaching Redis.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hotpath::config::RunConfig;
use hotpath::control;
use hotpath::feed::run::{self, RunOptions};
use serde_json::Value;

use crate::feed::{Sim, key};
use crate::servers::{RedisServer, TempDir, free_port};
use crate::sinks::{FLUSH_PATIENCE, redis_connection, redis_settings, run_config, runtime};

/// Every wait is bounded: a hang fails loudly.
pub(crate) const PATIENCE: Duration = Duration::from_secs(90);
pub(crate) const TOKEN: &str = "control-test-token";

/// One HTTP/1.1 request (`Connection: close`): status, head, body.
pub(crate) fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &str,
    body: &str,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

pub(crate) fn get_json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, _, body) = http(addr, "GET", path, "", "");
    let value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
    (status, value)
}

/// Polls `condition` until it holds (bounded).
pub(crate) fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A real Prometheus scraping `target` every 200 ms; killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 200ms\n  scrape_timeout: 150ms\nscrape_configs:\n  - job_name: hotpath\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write the scrape config");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new(prometheus_binary())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts (apt-get install prometheus; scripts/servers.sh ensure_prometheus)");
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    /// The values of the instant vector `query`.
    fn query(&self, query: &str) -> Vec<f64> {
        let encoded: String = query
            .bytes()
            .map(|b| match b.is_ascii_alphanumeric() || b == b'_' {
                true => (b as char).to_string(),
                false => format!("%{b:02X}"),
            })
            .collect();
        let path = format!("/api/v1/query?query={encoded}");
        let Ok(mut stream) = TcpStream::connect(self.addr) else {
            return Vec::new();
        };
        drop(stream.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        ));
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let Ok(value) = serde_json::from_str::<Value>(body) else {
            return Vec::new();
        };
        value["data"]["result"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|s| s["value"][1].as_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn prometheus_binary() -> String {
    std::env::var("HOTPATH_PROMETHEUS").unwrap_or_else(|_| "prometheus".into())
}

fn promtool_check(exposition: &str) {
    let promtool = std::env::var("HOTPATH_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (apt-get install prometheus)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool finishes");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the simulator with three symbols on `listen` (retrying while the port is released).
fn sim_on(listen: Option<SocketAddr>) -> Sim {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let started = std::panic::catch_unwind(|| {
            Sim::start(|c| {
                c.exchange.actions_per_second = 1_000.0;
                c.exchange.symbols = vec!["BTCUSDT".into(), "ETHUSDT".into(), "BNBUSDT".into()];
                if let Some(listen) = listen {
                    c.listen = listen;
                }
            })
        });
        match started {
            Ok(sim) => return sim,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => std::panic::resume_unwind(e),
        }
    }
}

/// Runs `hotpath run` on `config` with its control plane, `check` on another thread with the
/// server's address; the run ends when `check` returns.
pub(crate) fn with_control<T: Send + 'static>(
    config: &RunConfig,
    token: Option<String>,
    check: impl FnOnce(SocketAddr) -> T + Send + 'static,
) -> T {
    let mut outcome = None;
    run::run_with(
        config,
        key(config),
        RunOptions {
            kinesis_client: None,
            sink_flush_timeout: Some(FLUSH_PATIENCE),
        },
        |feed, sinks| {
            let mut control = control::start(config, feed, sinks, token)
                .expect("the control plane starts")
                .expect("it is enabled");
            let addr = control.addr().expect("http is on");
            let checker = std::thread::spawn(move || check(addr));
            let (done, finished) = tokio::sync::oneshot::channel();
            let waiter = std::thread::spawn(move || {
                let result = checker.join();
                let _ = done.send(());
                result
            });
            runtime().block_on(control::serve_until(Some(&mut control), feed, finished));
            control.stop();
            outcome = Some(waiter.join().expect("the waiter"));
        },
    )
    .expect("the run succeeds");
    match outcome.expect("the run waited") {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

pub(crate) fn hget(url: &str, key: &str, field: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query(&mut redis_connection(url))
        .ok()
        .flatten()
}

pub(crate) fn xlen(url: &str, key: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(key)
        .query(&mut redis_connection(url))
        .unwrap_or(0)
}

fn control_config(sim: &Sim, redis: &RedisServer, allow: bool) -> RunConfig {
    run_config(sim, |c| {
        c.redis = Some(redis_settings(redis.url()));
        c.http.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        c.http.allow_pair_changes = allow;
        c.http.stale_after = Duration::from_secs(2);
    })
}

#[test]
fn prometheus_scrapes_the_run_and_health_ready_and_pairs_follow_it() {
    let redis = RedisServer::start();
    let sim = sim_on(None);
    let sim_addr = sim.handle().addr;
    let config = control_config(&sim, &redis, true);
    let url = redis.url();
    with_control(&config, Some(TOKEN.into()), move |addr| {
        // Not ready before the books are synced; ready after, with the books fresh in Redis.
        let (status, body) = get_json(addr, "/ready");
        assert_eq!(status, 503, "{body}");
        until("/ready 200", || get_json(addr, "/ready").0 == 200);
        for symbol in ["BTCUSDT", "ETHUSDT"] {
            assert_eq!(
                hget(&url, &format!("ob:{{{symbol}}}"), "stale").as_deref(),
                Some("0")
            );
        }
        assert_eq!(
            get_json(addr, "/live"),
            (200, serde_json::json!({"status": "alive"}))
        );
        scraped_by_prometheus(addr);
        pairs_change_and_reach_redis(addr, &url);
        health_follows_the_simulator(addr, sim, sim_addr);
    });
}

fn scraped_by_prometheus(addr: SocketAddr) {
    let (status, head, text) = http(addr, "GET", "/metrics", "", "");
    assert_eq!(status, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    promtool_check(&text);
    let (_, head, open) = http(
        addr,
        "GET",
        "/metrics",
        "Accept: application/openmetrics-text; version=1.0.0\r\n",
        "",
    );
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(open.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    let prometheus = Prometheus::start(addr);
    let messages = "sum(ingestor_sbe_messages_total)";
    until("Prometheus has scraped hotpath", || {
        !prometheus.query(messages).is_empty()
    });
    let first = prometheus.query(messages)[0];
    until("the message count moves in Prometheus", || {
        prometheus
            .query(messages)
            .first()
            .is_some_and(|&v| v > first)
    });
    for series in [
        "ingestor_sbe_decode_duration_seconds_count",
        "hotpath_sink_ack_latency_seconds_bucket{sink=\"redis\",le=\"+Inf\"}",
        "hotpath_sink_written_total{sink=\"redis\"}",
        "ingestor_sbe_connection_status",
        "hotpath_book_stale{symbol=\"BTCUSDT\"}",
        "ingestor_rest_api_calls_total{endpoint=\"depth\",outcome=\"ok\"}",
        "ingestor_rest_api_latency_seconds_count",
    ] {
        until(series, || {
            prometheus.query(series).iter().any(|&v| v > 0.0)
                || series.contains("stale") && !prometheus.query(series).is_empty()
        });
    }
}

fn pairs_change_and_reach_redis(addr: SocketAddr, url: &str) {
    assert_eq!(
        get_json(addr, "/pairs"),
        (
            200,
            serde_json::json!({"count": 2, "pairs": ["BTCUSDT", "ETHUSDT"]})
        )
    );
    let bnb = r#"{"symbol":"BNBUSDT"}"#;
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    for (extra, want) in [("", 401), ("Authorization: Bearer nope\r\n", 401)] {
        let (status, head, body) = http(addr, "POST", "/pairs", extra, bnb);
        assert_eq!(status, want, "{body}");
        assert!(
            head.contains("www-authenticate: Bearer") || head.contains("WWW-Authenticate"),
            "{head}"
        );
        assert!(serde_json::from_str::<Value>(&body).expect("JSON")["error"].is_string());
    }
    for (body, want) in [
        (r#"{"symbol":"btc-usdt"}"#, 400),
        ("not json", 400),
        ("{}", 400),
        (r#"{"symbol":"BTCUSDT"}"#, 409),
    ] {
        let (status, _, answer) = http(addr, "POST", "/pairs", &auth, body);
        assert_eq!(status, want, "{body}: {answer}");
        assert!(serde_json::from_str::<Value>(&answer).expect("JSON")["error"].is_string());
    }
    let (status, _, answer) = http(addr, "POST", "/pairs", &auth, bnb);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        serde_json::from_str::<Value>(&answer).expect("JSON")["count"],
        3
    );
    until("BNBUSDT trades in Redis", || {
        xlen(url, "trades:{BNBUSDT}") > 0
    });
    let (status, _, answer) = http(addr, "DELETE", "/pairs/ETHUSDT", &auth, "");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        get_json(addr, "/pairs"),
        (
            200,
            serde_json::json!({"count": 2, "pairs": ["BTCUSDT", "BNBUSDT"]})
        )
    );
    until("ETHUSDT's book marked stale", || {
        hget(url, "ob:{ETHUSDT}", "stale").as_deref() == Some("1")
    });
    // Per-symbol series follow the subscribed symbols: BNBUSDT's came, ETHUSDT's left.
    let text = http(addr, "GET", "/metrics", "", "").2;
    let symbol_lines = |symbol: &str| {
        text.lines()
            .filter(|l| l.starts_with("hotpath_symbol_") && l.contains(symbol))
            .count()
    };
    assert_eq!(symbol_lines("symbol=\"ETHUSDT\""), 0, "{text}");
    assert!(symbol_lines("symbol=\"BNBUSDT\"") > 0, "{text}");
    assert_eq!(http(addr, "DELETE", "/pairs/ETHUSDT", &auth, "").0, 404);
    assert_eq!(http(addr, "DELETE", "/pairs/eth", &auth, "").0, 400);
    assert_eq!(http(addr, "GET", "/nope", "", "").0, 404);
    assert_eq!(http(addr, "PUT", "/pairs", &auth, "").0, 405);
}

fn health_follows_the_simulator(addr: SocketAddr, sim: Sim, sim_addr: SocketAddr) {
    until("/health 200", || get_json(addr, "/health").0 == 200);
    let (_, body) = get_json(addr, "/health");
    assert_eq!(body["service"], "hotpath");
    assert_eq!(body["components"]["sbe_websocket_0"]["status"], "connected");
    assert!(
        body["components"]["redis_producer"]["success_rate"]
            .as_f64()
            .is_some()
    );
    assert!(body["components"]["sbe_decoder"]["messages_decoded"].as_u64() > Some(0));
    drop(sim);
    until("/health 503 with the simulator gone", || {
        get_json(addr, "/health").0 == 503
    });
    let (_, body) = get_json(addr, "/health");
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["components"]["sbe_websocket_0"]["status"], "stale");
    let _back = sim_on(Some(sim_addr));
    until("/health 200 with the simulator back", || {
        get_json(addr, "/health").0 == 200
    });
    let (status, stats) = get_json(addr, "/stats");
    assert_eq!(status, 200);
    assert!(
        stats["frames"].as_u64() > Some(0) && stats["reconnects"].as_u64() > Some(0),
        "{stats}"
    );
}

/// The value of `series` (name and labels, as exposed) in a Prometheus text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `series` summed over every line of `text` that starts with `name{` and has every label of
/// `labels`.
fn sum_of(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Per-symbol series from a real run: trades dropped on the wire by the simulator show as gaps
/// (and missing ids, then repaired ids) of their symbol's trade stream, a symbol's frames grow,
/// and events lost at a tiny ring show as queue drops labelled by the consumer. With one symbol
/// per connection, `/health`, `/ready` and the connection series are per connection.
#[test]
fn per_symbol_series_follow_frames_gaps_and_queue_drops_per_consumer() {
    let redis = RedisServer::start();
    let sim = Sim::start(|c| {
        c.exchange.actions_per_second = 1_000.0;
        c.exchange.symbols = vec!["BTCUSDT".into(), "ETHUSDT".into()];
        c.faults.drop_trades_pct = 5.0;
    });
    let mut config = control_config(&sim, &redis, false);
    // Far below what validation allows (as in repairs.rs): bursts overflow the Redis ring.
    config.readers.ring_capacity = 2;
    config.symbols_per_connection = 1;
    let streams = config.streams.len();
    with_control(&config, None, move |addr| {
        let scrape = || http(addr, "GET", "/metrics", "", "").2;
        let frames = "hotpath_symbol_frames_total{symbol=\"BTCUSDT\",stream=\"trade\"}";
        until("BTCUSDT trade frames", || {
            sample(&scrape(), frames).is_some_and(|v| v > 0.0)
        });
        let first = sample(&scrape(), frames).unwrap_or(0.0);
        until("BTCUSDT trade frames grow", || {
            sample(&scrape(), frames).is_some_and(|v| v > first)
        });
        for series in [
            "hotpath_symbol_gaps_total{symbol=\"BTCUSDT\",stream=\"trade\"}",
            "hotpath_symbol_missing_ids_total{symbol=\"BTCUSDT\",stream=\"trade\"}",
            "hotpath_symbol_repaired_ids_total{symbol=\"BTCUSDT\",stream=\"trade\"}",
            "hotpath_symbol_frames_total{symbol=\"ETHUSDT\",stream=\"depth\"}",
        ] {
            until(series, || {
                sample(&scrape(), series).is_some_and(|v| v > 0.0)
            });
        }
        until("queue drops labelled by the Redis consumer", || {
            let text = scrape();
            sum_of(
                &text,
                "hotpath_symbol_queue_drops_total",
                &["consumer=\"redis\""],
            ) > 0.0
        });
        let text = scrape();
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("hotpath_symbol_frames_total{"))
                .count(),
            2 * streams,
            "one series per symbol and stream"
        );
        promtool_check(&text);
        per_connection(addr);
    });
}

/// Two connections (one symbol each): each is its own `/health` component with a rate, and
/// its own series; `/ready` names none without frames.
fn per_connection(addr: SocketAddr) {
    until("/ready 200", || get_json(addr, "/ready").0 == 200);
    assert_eq!(
        get_json(addr, "/ready").1["connections_without_frames"],
        serde_json::json!([])
    );
    until("both connections deliver, each at its own rate", || {
        let (status, body) = get_json(addr, "/health");
        status == 200
            && (0..2).all(|i| {
                let c = &body["components"][format!("sbe_websocket_{i}")];
                c["status"] == "connected" && c["messages_per_second"].as_f64() > Some(0.0)
            })
    });
    let (_, body) = get_json(addr, "/health");
    assert!(
        body["components"]["sbe_websocket_2"].is_null(),
        "two connections: {body}"
    );
    let text = http(addr, "GET", "/metrics", "", "").2;
    for i in 0..2 {
        let status = format!("ingestor_sbe_connection_status{{connection=\"{i}\",reader=\"0\"}}");
        assert_eq!(sample(&text, &status), Some(1.0), "{status} in\n{text}");
        let frames = format!("hotpath_connection_frames_total{{connection=\"{i}\",reader=\"0\"}}");
        assert!(sample(&text, &frames).is_some_and(|v| v > 0.0), "{frames}");
    }
}

#[test]
fn pair_changes_are_refused_when_off_and_the_server_can_be_disabled() {
    let redis = RedisServer::start();
    let sim = sim_on(None);
    let config = control_config(&sim, &redis, false);
    let disabled = {
        let mut c = config.clone();
        c.http.listen = None;
        c
    };
    run::run(&disabled, key(&disabled), |feed, sinks| {
        assert!(
            control::start(&disabled, feed, sinks, None)
                .expect("ok")
                .is_none()
        );
    })
    .expect("the run succeeds");
    with_control(&config, None, |addr| {
        let (status, _, body) = http(
            addr,
            "POST",
            "/pairs",
            "Authorization: Bearer x\r\n",
            r#"{"symbol":"BNBUSDT"}"#,
        );
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("allow_pair_changes"), "{body}");
        assert_eq!(http(addr, "DELETE", "/pairs/BTCUSDT", "", "").0, 403);
        assert_eq!(get_json(addr, "/pairs").1["count"], 2);
    });
}
