//! The four Binance SBE market-data streams and their names (`<symbol>@<kind>`), shared by
//! the feed and the simulator.

/// The four stream kinds of the SBE market-data streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamKind {
    /// `<symbol>@trade`.
    Trade,
    /// `<symbol>@bestBidAsk`.
    BestBidAsk,
    /// `<symbol>@depth`.
    Depth,
    /// `<symbol>@depth20`.
    Depth20,
}

impl StreamKind {
    /// Every kind.
    pub const ALL: [StreamKind; 4] = [
        StreamKind::Trade,
        StreamKind::BestBidAsk,
        StreamKind::Depth,
        StreamKind::Depth20,
    ];

    /// The stream name's suffix after `@`.
    pub fn suffix(self) -> &'static str {
        match self {
            StreamKind::Trade => "trade",
            StreamKind::BestBidAsk => "bestBidAsk",
            StreamKind::Depth => "depth",
            StreamKind::Depth20 => "depth20",
        }
    }

    /// The kind for a stream name's suffix.
    pub fn from_suffix(suffix: &str) -> Option<StreamKind> {
        StreamKind::ALL.into_iter().find(|k| k.suffix() == suffix)
    }
}

/// The stream name `<lower-case symbol>@<suffix>`.
pub fn stream_name(symbol: &str, kind: StreamKind) -> String {
    format!("{}@{}", symbol.to_lowercase(), kind.suffix())
}

/// Splits a stream name into its symbol (upper case) and kind.
pub fn parse_stream_name(name: &str) -> Option<(String, StreamKind)> {
    let (symbol, suffix) = name.split_once('@')?;
    if symbol.is_empty() || symbol.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    Some((symbol.to_uppercase(), StreamKind::from_suffix(suffix)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in StreamKind::ALL {
            let name = stream_name("BTCUSDT", kind);
            assert_eq!(
                parse_stream_name(&name),
                Some(("BTCUSDT".to_string(), kind))
            );
        }
        assert_eq!(parse_stream_name("BTCUSDT@trade"), None);
        assert_eq!(parse_stream_name("btcusdt@aggTrade"), None);
        assert_eq!(parse_stream_name("trade"), None);
    }
}
