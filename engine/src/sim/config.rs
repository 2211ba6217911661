//! The simulator's settings: a TOML file (every key optional, unknown keys rejected by name)
//! plus command-line overrides, validated into [`SimConfig`].
//!
//! ```toml
//! listen = "127.0.0.1:9443"
//! [exchange]
//! symbols = ["BTCUSDT", "ETHUSDT"]
//! seed = 1
//! actions_per_second = 2000.0
//! depth_interval_ms = 20
//! snapshot_interval_ms = 50
//! [websocket]
//! ping_interval_ms = 20000      # Binance: a ping every 20 s
//! pong_timeout_ms = 60000       # Binance: closed without a pong within a minute
//! max_lifetime_ms = 86400000    # Binance: 24 h per connection
//! shutdown_notice_ms = 1000     # serverShutdown this long before the lifetime ends
//! max_incoming_per_second = 5   # Binance: 5 incoming messages per second
//! max_streams = 1024            # Binance: 1024 streams per connection
//! [tls]
//! enabled = false               # a self-signed certificate made at start
//! cert_out = "sim-cert.pem"     # where to write it, for clients to trust
//! [rest]
//! weight_per_minute = 6000
//! sbe = "on"                    # SBE answers (Accept: application/sbe); "off": HTTP 406,
//!                               # "deprecated": SBE marked X-MBX-SBE-DEPRECATED
//! [faults]                      # for every connection; per connection: GET /admin/faults
//! drop_trades_pct = 0.0
//! mute_stream = ""              # e.g. "btcusdt@trade": that stream is never sent
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::exchange::ExchangeConfig;
use super::rest::SbeMode;

/// Faults the simulator injects, deterministically from the seed and the connection id.
/// Percentages are of frames (or REST requests) of the kind named.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Trade frames not sent (true gaps in trade ids).
    pub drop_trades_pct: f64,
    /// Depth diff frames not sent (true gaps in update ids).
    pub drop_depth_pct: f64,
    /// Frames sent twice.
    pub duplicate_pct: f64,
    /// Binary frames sent with bytes flipped (JSON: the closing brace replaced).
    pub corrupt_pct: f64,
    /// Frames sent cut short (binary or JSON text).
    pub truncate_pct: f64,
    /// Stall: stop sending for this long once `stall_after_frames` frames went out.
    pub stall_ms: u64,
    /// When the stall starts (0: no stall).
    pub stall_after_frames: u64,
    /// Drop the TCP connection without a close frame after this many frames (0: never).
    pub close_after_frames: u64,
    /// REST requests answered 500.
    pub rest_error_pct: f64,
    /// REST requests answered 429 regardless of weight.
    pub rest_throttle_pct: f64,
    /// Delay before every REST answer.
    pub rest_delay_ms: u64,
    /// One stream not sent at all (`"btcusdt@trade"`; empty: none): a stream silent while
    /// the rest of its symbol moves.
    pub mute_stream: String,
}

impl Faults {
    /// Checks every percentage is within 0..=100, naming the key that is not.
    pub fn validate(&self) -> Result<(), String> {
        for (key, value) in [
            ("drop_trades_pct", self.drop_trades_pct),
            ("drop_depth_pct", self.drop_depth_pct),
            ("duplicate_pct", self.duplicate_pct),
            ("corrupt_pct", self.corrupt_pct),
            ("truncate_pct", self.truncate_pct),
            ("rest_error_pct", self.rest_error_pct),
            ("rest_throttle_pct", self.rest_throttle_pct),
        ] {
            if !(0.0..=100.0).contains(&value) {
                return Err(format!("faults.{key} = {value}: must be between 0 and 100"));
            }
        }
        Ok(())
    }
}

/// WebSocket protocol limits and timers.
#[derive(Clone, Debug, PartialEq)]
pub struct WsLimits {
    /// Interval between server pings.
    pub ping_interval_ms: u64,
    /// A connection without a pong for this long is closed.
    pub pong_timeout_ms: u64,
    /// A connection is closed this long after it opened.
    pub max_lifetime_ms: u64,
    /// `serverShutdown` is sent this long before the lifetime ends.
    pub shutdown_notice_ms: u64,
    /// Incoming messages (text, ping, pong) allowed per second; one more closes the connection.
    pub max_incoming_per_second: u32,
    /// Streams one connection may hold.
    pub max_streams: usize,
}

impl Default for WsLimits {
    fn default() -> Self {
        WsLimits {
            ping_interval_ms: 20_000,
            pong_timeout_ms: 60_000,
            max_lifetime_ms: 24 * 3600 * 1000,
            shutdown_notice_ms: 1_000,
            max_incoming_per_second: 5,
            max_streams: 1024,
        }
    }
}

/// The validated simulator configuration.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Where to listen (WebSocket and REST on one port).
    pub listen: SocketAddr,
    /// The market.
    pub exchange: ExchangeConfig,
    /// WebSocket limits.
    pub websocket: WsLimits,
    /// Serve TLS with a self-signed certificate made at start.
    pub tls: bool,
    /// Where to write that certificate (PEM).
    pub cert_out: Option<PathBuf>,
    /// REST request weight allowed per minute per client address.
    pub rest_weight_per_minute: u32,
    /// Whether REST answers SBE when asked (`[rest] sbe`).
    pub rest_sbe: SbeMode,
    /// Faults for every connection.
    pub faults: Faults,
    /// How often the market advances.
    pub tick_ms: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            exchange: ExchangeConfig::default(),
            websocket: WsLimits::default(),
            tls: false,
            cert_out: None,
            rest_weight_per_minute: 6000,
            rest_sbe: SbeMode::Serve,
            faults: Faults::default(),
            tick_ms: 1,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    listen: Option<String>,
    exchange: RawExchange,
    websocket: RawWebsocket,
    tls: RawTls,
    rest: RawRest,
    faults: Faults,
    tick_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawExchange {
    symbols: Option<Vec<String>>,
    seed: Option<u64>,
    actions_per_second: Option<f64>,
    depth_interval_ms: Option<u64>,
    snapshot_interval_ms: Option<u64>,
    journal_max: Option<usize>,
    history_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawWebsocket {
    ping_interval_ms: Option<u64>,
    pong_timeout_ms: Option<u64>,
    max_lifetime_ms: Option<u64>,
    shutdown_notice_ms: Option<u64>,
    max_incoming_per_second: Option<u32>,
    max_streams: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTls {
    enabled: Option<bool>,
    cert_out: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRest {
    weight_per_minute: Option<u32>,
    sbe: Option<String>,
}

impl SimConfig {
    /// Parses a TOML configuration; errors name the offending key.
    pub fn from_toml(text: &str) -> Result<SimConfig, String> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| format!("invalid simulator config: {e}"))?;
        let mut config = SimConfig::default();
        if let Some(listen) = raw.listen {
            config.listen = listen
                .parse()
                .map_err(|e| format!("listen = {listen:?}: not an address:port ({e})"))?;
        }
        let e = &mut config.exchange;
        set(&mut e.symbols, raw.exchange.symbols);
        set(&mut e.seed, raw.exchange.seed);
        set(&mut e.actions_per_second, raw.exchange.actions_per_second);
        set(&mut e.journal_max, raw.exchange.journal_max);
        set(&mut e.history_s, raw.exchange.history_s);
        if let Some(ms) = raw.exchange.depth_interval_ms {
            e.depth_interval_us = ms as i64 * 1000;
        }
        if let Some(ms) = raw.exchange.snapshot_interval_ms {
            e.snapshot_interval_us = ms as i64 * 1000;
        }
        let w = &mut config.websocket;
        set(&mut w.ping_interval_ms, raw.websocket.ping_interval_ms);
        set(&mut w.pong_timeout_ms, raw.websocket.pong_timeout_ms);
        set(&mut w.max_lifetime_ms, raw.websocket.max_lifetime_ms);
        set(&mut w.shutdown_notice_ms, raw.websocket.shutdown_notice_ms);
        set(
            &mut w.max_incoming_per_second,
            raw.websocket.max_incoming_per_second,
        );
        set(&mut w.max_streams, raw.websocket.max_streams);
        set(&mut config.tls, raw.tls.enabled);
        config.cert_out = raw.tls.cert_out;
        set(
            &mut config.rest_weight_per_minute,
            raw.rest.weight_per_minute,
        );
        if let Some(mode) = raw.rest.sbe {
            config.rest_sbe = SbeMode::parse(&mode).ok_or_else(|| {
                format!("rest.sbe = {mode:?}: must be \"on\", \"off\" or \"deprecated\"")
            })?;
        }
        set(&mut config.tick_ms, raw.tick_ms);
        config.faults = raw.faults;
        config.validate()?;
        Ok(config)
    }

    /// Checks relations between values, naming the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        let e = &self.exchange;
        if e.symbols.is_empty() {
            return Err("exchange.symbols: at least one symbol is needed".into());
        }
        if let Some(bad) = e.symbols.iter().find(|s| {
            s.is_empty()
                || s.len() > 20
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        }) {
            return Err(format!(
                "exchange.symbols: {bad:?} is not an upper-case symbol such as BTCUSDT"
            ));
        }
        if !(0.0..=10_000_000.0).contains(&e.actions_per_second) {
            return Err(format!(
                "exchange.actions_per_second = {}: must be between 0 and 10000000",
                e.actions_per_second
            ));
        }
        if e.history_s > 7 * 86_400 {
            return Err(format!(
                "exchange.history_s = {}: at most 604800 (a week)",
                e.history_s
            ));
        }
        if e.depth_interval_us <= 0 || e.snapshot_interval_us <= 0 {
            return Err(
                "exchange.depth_interval_ms and exchange.snapshot_interval_ms must be above 0"
                    .into(),
            );
        }
        let w = &self.websocket;
        if w.ping_interval_ms == 0 || w.pong_timeout_ms == 0 || w.max_lifetime_ms == 0 {
            return Err(
                "websocket.ping_interval_ms, pong_timeout_ms and max_lifetime_ms must be above 0"
                    .into(),
            );
        }
        if w.shutdown_notice_ms >= w.max_lifetime_ms {
            return Err(
                "websocket.shutdown_notice_ms must be below websocket.max_lifetime_ms".into(),
            );
        }
        if self.tick_ms == 0 {
            return Err("tick_ms must be above 0".into());
        }
        self.faults.validate()
    }
}

fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *target = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_sbe_is_on_off_or_deprecated() {
        use super::super::rest::SbeMode;
        assert_eq!(SimConfig::default().rest_sbe, SbeMode::Serve);
        for (text, mode) in [
            ("on", SbeMode::Serve),
            ("off", SbeMode::Refuse),
            ("deprecated", SbeMode::Deprecated),
        ] {
            let config =
                SimConfig::from_toml(&format!("[rest]\nsbe = \"{text}\"\n")).expect("valid");
            assert_eq!(config.rest_sbe, mode);
        }
        let error = SimConfig::from_toml("[rest]\nsbe = \"yes\"\n").expect_err("bad");
        assert!(error.contains("rest.sbe"), "{error}");
    }

    #[test]
    fn a_full_file_parses_and_bad_keys_are_named() {
        let config = SimConfig::from_toml(
            "listen = \"127.0.0.1:9000\"\n[exchange]\nsymbols = [\"ETHUSDT\"]\nseed = 9\ndepth_interval_ms = 10\n[websocket]\nmax_lifetime_ms = 5000\n[faults]\ndrop_depth_pct = 5.0\n",
        )
        .expect("valid");
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.exchange.symbols, ["ETHUSDT"]);
        assert_eq!(config.exchange.depth_interval_us, 10_000);
        assert_eq!(config.websocket.max_lifetime_ms, 5000);
        assert_eq!(config.faults.drop_depth_pct, 5.0);

        let unknown =
            SimConfig::from_toml("[exchange]\nsymbol = [\"X\"]\n").expect_err("unknown key");
        assert!(unknown.contains("symbol"), "{unknown}");
        let range =
            SimConfig::from_toml("[faults]\ncorrupt_pct = 150.0\n").expect_err("out of range");
        assert!(range.contains("faults.corrupt_pct"), "{range}");
        let symbol =
            SimConfig::from_toml("[exchange]\nsymbols = [\"btcusdt\"]\n").expect_err("lower case");
        assert!(symbol.contains("exchange.symbols"), "{symbol}");
    }
}

#[cfg(test)]
mod example {
    /// `config/sim.toml`, the documented example, is a valid configuration.
    #[test]
    fn the_documented_example_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/sim.toml");
        let text = std::fs::read_to_string(path).expect("config/sim.toml exists");
        let config = super::SimConfig::from_toml(&text).expect("valid");
        assert_eq!(config.listen.port(), 9443);
        assert_eq!(config.websocket.max_streams, 1024);
    }
}
