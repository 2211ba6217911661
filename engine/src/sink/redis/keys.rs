//! Every Redis key name the writer uses, made in one place for both layouts (`redis.keys`):
//!
//! | key | `hash-tag` (default) | `plain` (the old services' names) |
//! |---|---|---|
//! | trades stream | `trades:{BTCUSDT}` | `trades:BTCUSDT` |
//! | best bid/ask | `bbo:{BTCUSDT}` | `bbo:BTCUSDT` |
//! | order book | `ob:{BTCUSDT}` | `ob:BTCUSDT` |
//! | trade windows | `tr:{BTCUSDT}:1s`, `tr:{BTCUSDT}:5s` | `tr:BTCUSDT:1s`, `tr:BTCUSDT:5s` |
//! | features | `feat:{BTCUSDT}` | `feat:BTCUSDT` |
//! | candles (`[klines]`) | `kl:{BTCUSDT}:1m` | `kl:BTCUSDT:1m` |
//! | re-anchor lock | `reanchor:{BTCUSDT}` | `reanchor:BTCUSDT` |
//! | re-anchor temporaries | `ob:new:{BTCUSDT}`, `tr:new:{BTCUSDT}:1s`, `tr:new:{BTCUSDT}:5s`, `feat:new:{BTCUSDT}` | `ob:new:BTCUSDT`, `tr:new:BTCUSDT:1s`, ... |
//!
//! The plain names are exactly those of seed 000/001 (`trades:<pair>`) and seed 004 (`ob:`,
//! `tr:...:1s`, `feat:`, and its re-anchor's `reanchor:` and `...:new:` keys). With the hash
//! tag every key of a symbol lands in one Redis Cluster slot; plain keys are for a standalone
//! Redis only (the configuration refuses them with `cluster_urls`), where the re-anchor's
//! `MULTI`/`EXEC` is atomic whatever the names. A new key kind gets its name from [`name`]
//! here, so both layouts follow.

use crate::config::KeyLayout;

/// `<prefix><symbol><suffix>`, the symbol in a hash tag (`{BTCUSDT}`) unless `layout` is
/// plain: `name(HashTag, "tr:", "BTCUSDT", ":1s")` is `tr:{BTCUSDT}:1s`.
pub fn name(layout: KeyLayout, prefix: &str, symbol: &str, suffix: &str) -> String {
    match layout {
        KeyLayout::HashTag => format!("{prefix}{{{symbol}}}{suffix}"),
        KeyLayout::Plain => format!("{prefix}{symbol}{suffix}"),
    }
}

/// The key of `symbol`'s candles of `interval` (`kl:{BTCUSDT}:1m`, plain `kl:BTCUSDT:1m`).
pub fn kline(layout: KeyLayout, symbol: &str, interval: &str) -> String {
    name(layout, "kl:", symbol, &format!(":{interval}"))
}

/// The key names of one symbol.
#[derive(Clone, Debug)]
pub struct Keys {
    /// Trades stream.
    pub trades: String,
    /// Best bid/ask hash.
    pub bbo: String,
    /// Order book hash.
    pub ob: String,
    /// 1 s trade statistics.
    pub tr_1s: String,
    /// 5 s trade statistics.
    pub tr_5s: String,
    /// Features.
    pub feat: String,
}

impl Keys {
    /// The keys of `symbol`, hash-tagged (the default layout).
    pub fn of(symbol: &str) -> Keys {
        Keys::with(KeyLayout::HashTag, symbol)
    }

    /// The keys of `symbol` in `layout`.
    pub fn with(layout: KeyLayout, symbol: &str) -> Keys {
        let key = |prefix: &str, suffix: &str| name(layout, prefix, symbol, suffix);
        Keys {
            trades: key("trades:", ""),
            bbo: key("bbo:", ""),
            ob: key("ob:", ""),
            tr_1s: key("tr:", ":1s"),
            tr_5s: key("tr:", ":5s"),
            feat: key("feat:", ""),
        }
    }
}

/// The re-anchor's lock and temporary keys of one symbol, beside its live [`Keys`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TempKeys {
    /// `reanchor:{S}`.
    pub lock: String,
    /// `ob:new:{S}`.
    pub ob: String,
    /// `tr:new:{S}:1s`.
    pub tr_1s: String,
    /// `tr:new:{S}:5s`.
    pub tr_5s: String,
    /// `feat:new:{S}`.
    pub feat: String,
}

impl TempKeys {
    /// The temporary keys of `symbol`, hash-tagged (in its slot).
    pub fn of(symbol: &str) -> TempKeys {
        TempKeys::with(KeyLayout::HashTag, symbol)
    }

    /// The temporary keys of `symbol` in `layout`.
    pub fn with(layout: KeyLayout, symbol: &str) -> TempKeys {
        let key = |prefix: &str, suffix: &str| name(layout, prefix, symbol, suffix);
        TempKeys {
            lock: key("reanchor:", ""),
            ob: key("ob:new:", ""),
            tr_1s: key("tr:new:", ":1s"),
            tr_5s: key("tr:new:", ":5s"),
            feat: key("feat:new:", ""),
        }
    }

    /// The temporary keys (not the lock).
    pub fn temporaries(&self) -> [&str; 4] {
        [&self.ob, &self.tr_1s, &self.tr_5s, &self.feat]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tagged_keys_share_the_symbols_slot() {
        let k = Keys::of("BTCUSDT");
        for key in [&k.trades, &k.bbo, &k.ob, &k.tr_1s, &k.tr_5s, &k.feat] {
            assert!(key.contains("{BTCUSDT}"), "{key}");
        }
        assert_eq!(k.tr_5s, "tr:{BTCUSDT}:5s");
        let t = TempKeys::of("BTCUSDT");
        for key in [&t.lock, &t.ob, &t.tr_1s, &t.tr_5s, &t.feat] {
            assert!(key.contains("{BTCUSDT}"), "{key}");
        }
    }

    #[test]
    fn plain_keys_are_the_old_services_names() {
        let k = Keys::with(KeyLayout::Plain, "BTCUSDT");
        assert_eq!(
            [&k.trades, &k.bbo, &k.ob, &k.tr_1s, &k.tr_5s, &k.feat],
            [
                "trades:BTCUSDT",
                "bbo:BTCUSDT",
                "ob:BTCUSDT",
                "tr:BTCUSDT:1s",
                "tr:BTCUSDT:5s",
                "feat:BTCUSDT"
            ]
        );
        // Seed 004's re-anchor names its lock and temporaries so.
        let t = TempKeys::with(KeyLayout::Plain, "BTCUSDT");
        assert_eq!(
            [&t.lock, &t.ob, &t.tr_1s, &t.tr_5s, &t.feat],
            [
                "reanchor:BTCUSDT",
                "ob:new:BTCUSDT",
                "tr:new:BTCUSDT:1s",
                "tr:new:BTCUSDT:5s",
                "feat:new:BTCUSDT"
            ]
        );
    }
}
