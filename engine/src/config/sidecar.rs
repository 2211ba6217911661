//! The reliability sidecar's settings: the `[sidecar]` table of the run configuration. The
//! sidecar repairs trade gaps whenever a sink runs, unless `enabled = false`; then gaps are
//! counted and passed over, never repaired. With Redis it runs in any case, for the books'
//! depth snapshots (`[redis]` has their settings). Errors name the key
//! (`sidecar.hold_max_ms: ...`).
//!
//! ```toml
//! [sidecar]
//! enabled = true                  # repair trade gaps from REST (default whenever a sink runs)
//! # rest_endpoint = "https://api.binance.com"   # default: derived from binance.endpoint
//! give_up_after_ms = 30000        # a gap REST has not filled this long after it opened: given up
//! hold_max_ms = 45000             # a sink waits this long for missing ids (> give_up_after_ms)
//! idle = "backoff"                # when idle: "backoff", "blocking" or "busy_spin"
//! stream_silence_ms = 30000       # a stream silent this long while its symbol moves: repaired; 0: off
//! kline_check = "1m"              # kline interval compared with what the sinks got: "1m", "1s", "off"
//! kline_lateness_ms = 10000       # an interval is checked this long after it closed
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use crate::idle::IdleStrategy;

/// The sidecar's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarConfig {
    /// Repair trade gaps when a sink runs. (With Redis the sidecar runs anyway, for the
    /// books' depth snapshots.)
    pub enabled: bool,
    /// REST base URL (`http://` or `https://`, no trailing `/`); `None` derives it from the
    /// feed's endpoint (see [`rest_base`]).
    pub rest_endpoint: Option<String>,
    /// A backfill request not served this long after the gap opened is given up (the sinks
    /// are told and count its ids as unrepaired). Above zero.
    pub give_up_after: Duration,
    /// How long a sink holds a symbol's later trades while ids before them are missing; then
    /// it gives up on them and delivers what it holds. Longer than `give_up_after`, so the
    /// sink normally learns of a give-up from the sidecar rather than by its own clock.
    pub hold_max: Duration,
    /// What the sidecar thread does when it has nothing to do.
    pub idle: IdleStrategy,
    /// A watched stream (`@trade`, `@depth`) silent this long while its symbol moves is
    /// repaired (trades backfilled, the book re-synced); `None`: not watched.
    pub stream_silence: Option<Duration>,
    /// The kline interval the periodic check compares with what the sinks delivered, ms
    /// (60 000 for `"1m"`, 1 000 for `"1s"`); `None`: no kline check. The check runs every
    /// `redis.consistency_check_s`.
    pub kline_interval_ms: Option<i64>,
    /// How long after an interval closed it is checked (trades still on their way or being
    /// repaired have arrived by then). At most four intervals.
    pub kline_lateness: Duration,
}

impl Default for SidecarConfig {
    fn default() -> Self {
        SidecarConfig {
            enabled: true,
            rest_endpoint: None,
            give_up_after: Duration::from_millis(30_000),
            hold_max: Duration::from_millis(45_000),
            idle: IdleStrategy::Backoff,
            stream_silence: Some(Duration::from_millis(30_000)),
            kline_interval_ms: Some(60_000),
            kline_lateness: Duration::from_millis(10_000),
        }
    }
}

/// `[sidecar]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawSidecar {
    enabled: Option<bool>,
    rest_endpoint: Option<String>,
    give_up_after_ms: Option<u64>,
    hold_max_ms: Option<u64>,
    idle: Option<String>,
    stream_silence_ms: Option<u64>,
    kline_check: Option<String>,
    kline_lateness_ms: Option<u64>,
}

impl RawSidecar {
    /// The validated settings.
    pub(crate) fn into_config(self) -> Result<SidecarConfig, ConfigError> {
        let defaults = SidecarConfig::default();
        let config = SidecarConfig {
            enabled: self.enabled.unwrap_or(defaults.enabled),
            rest_endpoint: self.rest_endpoint,
            give_up_after: self
                .give_up_after_ms
                .map_or(defaults.give_up_after, Duration::from_millis),
            hold_max: self
                .hold_max_ms
                .map_or(defaults.hold_max, Duration::from_millis),
            idle: super::idle("sidecar.idle", self.idle)?.unwrap_or(defaults.idle),
            stream_silence: match self.stream_silence_ms {
                Some(0) => None,
                Some(ms) => Some(Duration::from_millis(ms)),
                None => defaults.stream_silence,
            },
            kline_interval_ms: match self.kline_check.as_deref() {
                None => defaults.kline_interval_ms,
                Some("off") => None,
                Some(name) => Some(kline_interval_ms(name).ok_or_else(|| {
                    ConfigError::invalid(format!(
                        "sidecar.kline_check = {name:?}: must be \"1m\", \"1s\" or \"off\""
                    ))
                })?),
            },
            kline_lateness: self
                .kline_lateness_ms
                .map_or(defaults.kline_lateness, Duration::from_millis),
        };
        config.check()?;
        Ok(config)
    }
}

impl SidecarConfig {
    /// Checks every value, naming the key at fault.
    pub fn check(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.rest_endpoint
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::invalid(format!(
                "sidecar.rest_endpoint = {url:?}: must start with http:// or https://"
            )));
        }
        if self.give_up_after.is_zero() {
            return Err(ConfigError::invalid(
                "sidecar.give_up_after_ms: must be above 0",
            ));
        }
        if self.hold_max <= self.give_up_after {
            return Err(ConfigError::invalid(format!(
                "sidecar.hold_max_ms = {}: must be above sidecar.give_up_after_ms = {} (a sink \
                 must not give up on ids the sidecar may still bring)",
                self.hold_max.as_millis(),
                self.give_up_after.as_millis()
            )));
        }
        if let Some(interval) = self.kline_interval_ms
            && self.kline_lateness.as_millis() > 4 * interval.unsigned_abs() as u128
        {
            return Err(ConfigError::invalid(format!(
                "sidecar.kline_lateness_ms = {}: at most four kline intervals ({} ms): the sinks' \
                 tallies keep no more",
                self.kline_lateness.as_millis(),
                4 * interval
            )));
        }
        Ok(())
    }

    /// The REST base URL of the trade backfill. Binance serves `historicalTrades` on
    /// `api.binance.com`, not on `data-api.binance.vision`.
    pub fn rest_base(&self, feed_endpoint: &str) -> String {
        rest_base(self.rest_endpoint.as_deref(), feed_endpoint)
    }
}

/// The length of a `kline_check` interval, ms: Binance's one-minute kline, or its one-second
/// kline (for tests and very liquid symbols).
pub fn kline_interval_ms(name: &str) -> Option<i64> {
    match name {
        "1m" => Some(60_000),
        "1s" => Some(1_000),
        _ => None,
    }
}

/// A REST base URL: `configured` (trailing `/` removed), or the feed's endpoint with `ws` ->
/// `http` and without its path (`wss://stream-sbe.binance.com:9443` becomes
/// `https://api.binance.com`; the simulator serves REST on its WebSocket port, and its JSON
/// streams under `/json`, so `ws://host:port/json` gives `http://host:port`).
pub fn rest_base(configured: Option<&str>, feed_endpoint: &str) -> String {
    if let Some(url) = configured {
        return url.trim_end_matches('/').to_string();
    }
    let scheme_end = feed_endpoint.find("://").map_or(0, |at| at + 3);
    let feed_endpoint = match feed_endpoint[scheme_end..].find('/') {
        Some(path) => &feed_endpoint[..scheme_end + path],
        None => feed_endpoint,
    };
    if feed_endpoint.contains("stream-sbe.binance.com")
        || feed_endpoint.contains("stream.binance.com")
    {
        return "https://api.binance.com".into();
    }
    match feed_endpoint.strip_prefix("wss://") {
        Some(rest) => format!("https://{rest}"),
        None => format!(
            "http://{}",
            feed_endpoint.strip_prefix("ws://").unwrap_or(feed_endpoint)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SidecarConfig, ConfigError> {
        let raw: RawSidecar = toml::from_str(text).expect("valid TOML");
        raw.into_config()
    }

    #[test]
    fn defaults_hold_longer_than_the_sidecar_waits() {
        let c = parse("").expect("defaults");
        assert_eq!(c, SidecarConfig::default());
        assert!(c.enabled && c.hold_max > c.give_up_after);
        let c =
            parse("enabled = false\ngive_up_after_ms = 100\nhold_max_ms = 101\n").expect("valid");
        assert!(!c.enabled);
        assert_eq!(c.give_up_after, Duration::from_millis(100));
        let c = parse("stream_silence_ms = 0\nkline_check = \"off\"\n").expect("valid");
        assert_eq!((c.stream_silence, c.kline_interval_ms), (None, None));
        let c = parse("kline_check = \"1s\"\nkline_lateness_ms = 2000\n").expect("valid");
        assert_eq!(c.kline_interval_ms, Some(1_000));
        assert_eq!(c.kline_lateness, Duration::from_millis(2_000));
    }

    #[test]
    fn each_error_names_its_key() {
        for (text, key) in [
            ("rest_endpoint = \"ftp://x\"", "sidecar.rest_endpoint"),
            ("give_up_after_ms = 0", "sidecar.give_up_after_ms"),
            ("hold_max_ms = 30000", "sidecar.hold_max_ms"),
            (
                "give_up_after_ms = 60000\nhold_max_ms = 50000",
                "sidecar.hold_max_ms",
            ),
            ("kline_check = \"5m\"", "sidecar.kline_check"),
            (
                "kline_check = \"1s\"\nkline_lateness_ms = 4001",
                "sidecar.kline_lateness_ms",
            ),
        ] {
            let e = parse(text).expect_err(text);
            assert_eq!(e.key(), Some(key), "{e}");
        }
    }

    #[test]
    fn the_rest_base_follows_the_feed_unless_configured() {
        let c = SidecarConfig::default();
        assert_eq!(c.rest_base("ws://127.0.0.1:9443"), "http://127.0.0.1:9443");
        assert_eq!(
            c.rest_base("wss://stream-sbe.binance.com:9443"),
            "https://api.binance.com"
        );
        let c = SidecarConfig {
            rest_endpoint: Some("https://api1.binance.com/".into()),
            ..SidecarConfig::default()
        };
        assert_eq!(
            c.rest_base("wss://stream-sbe.binance.com:9443"),
            "https://api1.binance.com"
        );
    }
}
