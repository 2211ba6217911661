//! Binance Spot's public market-data endpoints: their request weights and the bounds of their
//! `limit` parameters. The one table of them: the REST client budgets with it before sending,
//! and the simulator charges with it when serving (PROTOCOL.md 4.3).
//!
//! | endpoint | weight |
//! |---|---|
//! | `/api/v3/ping`, `/api/v3/time` | 1 |
//! | `/api/v3/exchangeInfo` | 20 |
//! | `/api/v3/depth` | by `limit`: 5 (1-100), 25 (101-500), 50 (501-1000), 250 (1001-5000) |
//! | `/api/v3/trades`, `/api/v3/historicalTrades` | 25 |
//! | `/api/v3/aggTrades` | 4 |
//! | `/api/v3/klines` | 2 |
//! | `/api/v3/ticker/24hr` | 2 with one `symbol`, 80 otherwise |

/// The largest `limit` of `/api/v3/depth`.
pub const DEPTH_LIMIT_MAX: u32 = 5_000;
/// The `limit` of `/api/v3/depth` when absent (and the one an unparsable limit is charged as).
pub const DEPTH_LIMIT_DEFAULT: u32 = 100;
/// The largest `limit` of the trade lists, `aggTrades` and `klines`.
pub const LIST_LIMIT_MAX: u32 = 1_000;
/// The `limit` of the trade lists, `aggTrades` and `klines` when absent.
pub const LIST_LIMIT_DEFAULT: u32 = 500;

/// `/api/v3/depth` weight by limit: (largest limit, weight), ascending.
const DEPTH_WEIGHTS: [(u32, u32); 4] = [(100, 5), (500, 25), (1_000, 50), (5_000, 250)];
const _: () = assert!(DEPTH_WEIGHTS[DEPTH_WEIGHTS.len() - 1].0 == DEPTH_LIMIT_MAX);
const _: () =
    assert!(DEPTH_LIMIT_DEFAULT <= DEPTH_LIMIT_MAX && LIST_LIMIT_DEFAULT <= LIST_LIMIT_MAX);

/// A Binance market-data endpoint, with what its weight depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/api/v3/ping`: 1.
    Ping,
    /// `/api/v3/time`: 1.
    Time,
    /// `/api/v3/exchangeInfo`: 20.
    ExchangeInfo,
    /// `/api/v3/depth`: by `limit`, see [`depth_weight`].
    Depth {
        /// The `limit` asked for.
        limit: u32,
    },
    /// `/api/v3/trades`: 25.
    Trades,
    /// `/api/v3/historicalTrades`: 25.
    HistoricalTrades,
    /// `/api/v3/aggTrades`: 4.
    AggTrades,
    /// `/api/v3/klines`: 2.
    Klines,
    /// `/api/v3/ticker/24hr`: 2 for one `symbol`, 80 otherwise (the most a `symbols` list
    /// costs, and every symbol).
    Ticker24hr {
        /// Whether one `symbol` was given.
        one_symbol: bool,
    },
}

impl Endpoint {
    /// Binance's request weight.
    pub fn weight(self) -> u32 {
        match self {
            Endpoint::Ping | Endpoint::Time => 1,
            Endpoint::ExchangeInfo => 20,
            Endpoint::Depth { limit } => depth_weight(limit),
            Endpoint::Trades | Endpoint::HistoricalTrades => 25,
            Endpoint::AggTrades => 4,
            Endpoint::Klines => 2,
            Endpoint::Ticker24hr { one_symbol: true } => 2,
            Endpoint::Ticker24hr { one_symbol: false } => 80,
        }
    }

    /// The endpoint of a request target such as `/api/v3/depth?symbol=BTCUSDT&limit=500`;
    /// `None` for paths whose weight is not known here.
    pub fn parse(path_and_query: &str) -> Option<Endpoint> {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let param = |name: &str| {
            query
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v)
                .filter(|v| !v.is_empty())
        };
        Some(match path {
            "/api/v3/ping" => Endpoint::Ping,
            "/api/v3/time" => Endpoint::Time,
            "/api/v3/exchangeInfo" => Endpoint::ExchangeInfo,
            "/api/v3/depth" => Endpoint::Depth {
                limit: charged_depth_limit(param("limit").and_then(|v| v.parse::<u64>().ok())),
            },
            "/api/v3/trades" => Endpoint::Trades,
            "/api/v3/historicalTrades" => Endpoint::HistoricalTrades,
            "/api/v3/aggTrades" => Endpoint::AggTrades,
            "/api/v3/klines" => Endpoint::Klines,
            "/api/v3/ticker/24hr" => Endpoint::Ticker24hr {
                one_symbol: param("symbol").is_some(),
            },
            _ => return None,
        })
    }
}

/// The `limit` a depth request is charged as: Binance charges an absent or unparsable limit as
/// the default, and clamps a larger one to the maximum.
pub fn charged_depth_limit(limit: Option<u64>) -> u32 {
    limit.map_or(DEPTH_LIMIT_DEFAULT, |l| {
        u32::try_from(l.min(u64::from(DEPTH_LIMIT_MAX))).unwrap_or(DEPTH_LIMIT_MAX)
    })
}

/// The weight of `/api/v3/depth` at `limit`: 5 for 1-100, 25 for 101-500, 50 for 501-1000,
/// 250 above (Binance serves at most 5000 levels).
pub fn depth_weight(limit: u32) -> u32 {
    DEPTH_WEIGHTS
        .iter()
        .find(|(max, _)| limit <= *max)
        .map_or(DEPTH_WEIGHTS[DEPTH_WEIGHTS.len() - 1].1, |&(_, w)| w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_weights_follow_the_limit() {
        let cases = [
            (0, 5),
            (1, 5),
            (100, 5),
            (101, 25),
            (500, 25),
            (501, 50),
            (1_000, 50),
            (1_001, 250),
            (5_000, 250),
            (9_999, 250),
        ];
        for (limit, weight) in cases {
            assert_eq!(depth_weight(limit), weight, "limit {limit}");
        }
        assert_eq!(charged_depth_limit(None), DEPTH_LIMIT_DEFAULT);
        assert_eq!(charged_depth_limit(Some(u64::MAX)), DEPTH_LIMIT_MAX);
        assert_eq!(charged_depth_limit(Some(700)), 700);
    }

    #[test]
    fn targets_parse_to_binances_weights() {
        let parsed = [
            ("/api/v3/ping", Some(1)),
            ("/api/v3/time", Some(1)),
            ("/api/v3/exchangeInfo?symbol=BTCUSDT", Some(20)),
            ("/api/v3/depth?symbol=BTCUSDT", Some(5)),
            ("/api/v3/depth?symbol=BTCUSDT&limit=500", Some(25)),
            ("/api/v3/depth?limit=1000&symbol=BTCUSDT", Some(50)),
            ("/api/v3/depth?symbol=BTCUSDT&limit=99999999999", Some(250)),
            ("/api/v3/depth?symbol=BTCUSDT&limit=x", Some(5)),
            ("/api/v3/trades?symbol=BTCUSDT", Some(25)),
            ("/api/v3/historicalTrades?symbol=BTCUSDT&fromId=3", Some(25)),
            ("/api/v3/aggTrades?symbol=BTCUSDT", Some(4)),
            ("/api/v3/klines?symbol=BTCUSDT&interval=1m", Some(2)),
            ("/api/v3/ticker/24hr?symbol=BTCUSDT", Some(2)),
            ("/api/v3/ticker/24hr?symbol=", Some(80)),
            ("/api/v3/ticker/24hr", Some(80)),
            ("/api/v3/order", None),
            ("/admin/book", None),
        ];
        for (target, weight) in parsed {
            assert_eq!(
                Endpoint::parse(target).map(Endpoint::weight),
                weight,
                "{target}"
            );
        }
    }
}
