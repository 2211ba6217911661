//! Pair discovery's settings: the `[discovery]` table of the run configuration (seed 000's
//! `PAIRS_LIMIT`, `FALLBACK_PAIRS`, `DISCOVERY_REFRESH_SEC`, `PAIRS_PER_CONNECTION`). Errors
//! name the key (`discovery.pairs_limit: ...`).
//!
//! ```toml
//! [discovery]
//! enabled = false                   # true: the symbols come from Binance, not binance.symbols
//! pairs_limit = 200                 # top N TRADING symbols by 24 h quote volume
//! quote_asset = "USDT"              # only symbols quoted in this asset; "" for every asset
//! fallback_pairs = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]   # always included (when TRADING)
//! refresh_s = 3600                  # ranking refreshed this often
//! # pairs_per_connection = 50       # sets binance.symbols_per_connection (one of the two)
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// The most symbols discovery may subscribe (the feed's symbol index is a `u16`, and every
/// refresh may add new ones).
pub const PAIRS_LIMIT_MAX: usize = 1000;

/// Pair discovery's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// Whether the symbols are discovered (`binance.symbols` is then ignored).
    pub enabled: bool,
    /// How many symbols are kept, fallback pairs included (more only when the fallback pairs
    /// alone are more). 1..=[`PAIRS_LIMIT_MAX`].
    pub pairs_limit: usize,
    /// Only symbols whose quote asset is this (upper case); empty: every quote asset.
    pub quote_asset: String,
    /// Symbols always subscribed while they are TRADING; at start, what is subscribed when
    /// the first discovery fails. Upper-case symbols, no duplicates.
    pub fallback_pairs: Vec<String>,
    /// How often the ranking is fetched again. At least one second.
    pub refresh: Duration,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            enabled: false,
            pairs_limit: 200,
            quote_asset: "USDT".into(),
            fallback_pairs: vec!["BTCUSDT".into(), "ETHUSDT".into(), "SOLUSDT".into()],
            refresh: Duration::from_secs(3600),
        }
    }
}

/// `[discovery]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawDiscovery {
    enabled: Option<bool>,
    pairs_limit: Option<usize>,
    quote_asset: Option<String>,
    fallback_pairs: Option<Vec<String>>,
    refresh_s: Option<u64>,
    /// Moved to `binance.symbols_per_connection` by the caller.
    pub(crate) pairs_per_connection: Option<usize>,
}

impl RawDiscovery {
    /// The validated settings.
    pub(crate) fn into_config(self) -> Result<DiscoveryConfig, ConfigError> {
        let defaults = DiscoveryConfig::default();
        let config = DiscoveryConfig {
            enabled: self.enabled.unwrap_or(defaults.enabled),
            pairs_limit: self.pairs_limit.unwrap_or(defaults.pairs_limit),
            quote_asset: self.quote_asset.unwrap_or(defaults.quote_asset),
            fallback_pairs: self.fallback_pairs.unwrap_or(defaults.fallback_pairs),
            refresh: self.refresh_s.map_or(defaults.refresh, Duration::from_secs),
        };
        config.check()?;
        Ok(config)
    }
}

impl DiscoveryConfig {
    /// Checks every value, naming the key at fault.
    pub fn check(&self) -> Result<(), ConfigError> {
        if !(1..=PAIRS_LIMIT_MAX).contains(&self.pairs_limit) {
            return Err(ConfigError::invalid(format!(
                "discovery.pairs_limit = {}: must be within 1..={PAIRS_LIMIT_MAX}",
                self.pairs_limit
            )));
        }
        let asset_ok = self.quote_asset.len() <= 20
            && self
                .quote_asset
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if !asset_ok {
            return Err(ConfigError::invalid(format!(
                "discovery.quote_asset = {:?}: must be an upper-case asset such as USDT, or \"\"",
                self.quote_asset
            )));
        }
        if !self.fallback_pairs.is_empty() {
            super::check_symbols("discovery.fallback_pairs", &self.fallback_pairs)?;
        }
        if self.refresh < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "discovery.refresh_s: must be at least 1",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DiscoveryConfig, ConfigError> {
        let raw: RawDiscovery =
            toml::from_str(text).map_err(|e| ConfigError::invalid(e.to_string()))?;
        raw.into_config()
    }

    #[test]
    fn defaults_are_the_seeds() {
        let config = parse("").expect("defaults");
        assert_eq!(config, DiscoveryConfig::default());
        assert_eq!(config.pairs_limit, 200);
        assert_eq!(config.refresh, Duration::from_secs(3600));
        assert!(!config.enabled);
    }

    #[test]
    fn every_key_is_read_and_bad_values_name_their_key() {
        let config = parse(
            "enabled = true\npairs_limit = 3\nquote_asset = \"\"\nfallback_pairs = [\"ETHBTC\"]\nrefresh_s = 5",
        )
        .expect("valid");
        assert_eq!((config.pairs_limit, config.quote_asset.as_str()), (3, ""));
        assert_eq!(config.fallback_pairs, ["ETHBTC"]);
        assert_eq!(config.refresh, Duration::from_secs(5));
        for (text, key) in [
            ("pairs_limit = 0", "discovery.pairs_limit"),
            ("pairs_limit = 1001", "discovery.pairs_limit"),
            ("quote_asset = \"usdt\"", "discovery.quote_asset"),
            ("fallback_pairs = [\"btc\"]", "discovery.fallback_pairs"),
            (
                "fallback_pairs = [\"BTCUSDT\", \"BTCUSDT\"]",
                "discovery.fallback_pairs",
            ),
            ("refresh_s = 0", "discovery.refresh_s"),
        ] {
            let e = parse(text).expect_err(text);
            assert_eq!(e.key(), Some(key), "{text}: {e}");
        }
    }
}
