//! Candles: the `[klines]` table of the run configuration. The Redis and Kinesis writers build
//! klines from the trades they deliver (`crate::kline`), in SBE and JSON mode alike, and
//! publish them: Redis `kl:{SYMBOL}:<interval>` (the last closed and the open candle),
//! Kinesis `kinesis.stream_kline` (each closed candle). Errors name the key.
//!
//! ```toml
//! [klines]
//! intervals = ["1m"]              # kline intervals built ("1s", "1m", "3m", ... "1w"); [] = off (default)
//! close_after_ms = 2000           # a quiet interval closes this long after its end
//! ```

use serde::Deserialize;

use super::ConfigError;
use crate::kline::Interval;

/// Most intervals configured at once.
pub const INTERVALS_MAX: usize = 8;

/// The klines settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KlinesConfig {
    /// The intervals built, no duplicates, at most [`INTERVALS_MAX`]; empty: no klines.
    pub intervals: Vec<Interval>,
    /// An interval without a later trade closes when the symbol's clock (the exchange time
    /// of its frames) is this long past its end, ms; at most 60 000.
    pub close_after_ms: i64,
}

impl Default for KlinesConfig {
    /// Off: turning klines on needs the Kinesis stream `kinesis.stream_kline` (or
    /// `create_streams`), so an existing deployment does not fail at start after an upgrade.
    fn default() -> Self {
        KlinesConfig {
            intervals: Vec::new(),
            close_after_ms: 2_000,
        }
    }
}

impl KlinesConfig {
    /// Whether any kline is built.
    pub fn enabled(&self) -> bool {
        !self.intervals.is_empty()
    }
}

/// `[klines]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawKlines {
    intervals: Option<Vec<String>>,
    close_after_ms: Option<u64>,
}

impl RawKlines {
    /// Checks every value, naming the key at fault.
    pub fn into_config(self) -> Result<KlinesConfig, ConfigError> {
        let mut config = KlinesConfig::default();
        if let Some(names) = self.intervals {
            let mut intervals: Vec<Interval> = Vec::new();
            for name in &names {
                let interval = Interval::of(name).ok_or_else(|| {
                    ConfigError::invalid(format!(
                        "klines.intervals: {name:?} is not a kline interval (1s, 1m, 3m, 5m, \
                         15m, 30m, 1h, 2h, 4h, 6h, 8h, 12h, 1d, 3d, 1w)"
                    ))
                })?;
                if intervals.contains(&interval) {
                    return Err(ConfigError::invalid(format!(
                        "klines.intervals: {name:?} is listed twice"
                    )));
                }
                intervals.push(interval);
            }
            if intervals.len() > INTERVALS_MAX {
                return Err(ConfigError::invalid(format!(
                    "klines.intervals: at most {INTERVALS_MAX} intervals"
                )));
            }
            config.intervals = intervals;
        }
        if let Some(ms) = self.close_after_ms {
            if ms > 60_000 {
                return Err(ConfigError::invalid(format!(
                    "klines.close_after_ms = {ms}: at most 60000"
                )));
            }
            config.close_after_ms = ms as i64;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<KlinesConfig, ConfigError> {
        toml::from_str::<RawKlines>(text)
            .map_err(|e| ConfigError::invalid(e.to_string()))?
            .into_config()
    }

    #[test]
    fn defaults_and_values() {
        let off = parse("").expect("valid");
        assert!(!off.enabled());
        let c = parse("intervals = [\"1m\", \"1s\"]\nclose_after_ms = 500").expect("valid");
        let names: Vec<_> = c.intervals.iter().map(|i| i.name).collect();
        assert_eq!((names, c.close_after_ms), (vec!["1m", "1s"], 500));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("intervals = [\"1M\"]", "klines.intervals"),
            ("intervals = [\"1m\", \"1m\"]", "klines.intervals"),
            ("close_after_ms = 60001", "klines.close_after_ms"),
        ] {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }
}
