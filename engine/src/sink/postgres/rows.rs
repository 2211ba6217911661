//! The rows the PostgreSQL writer writes, made from feed events, pure: a `ticks` row per trade
//! (from trade id `from` on, so a trades event partly delivered before gives only its new
//! trades), and a `books` row from a depth20 snapshot (top N per side, best bid/ask, spread in
//! basis points). Also each row's text form, for the dead-letter file.

use std::sync::Arc;

use super::types::{Numeric, UnixMicros};
use crate::sbe::spot_stream::{BoolEnum, DepthSnapshotStreamEventDecoder, Message};

/// The `exchange` / `venue` column.
pub const EXCHANGE: &str = "binance";

/// One trade.
#[derive(Clone, Debug, PartialEq)]
pub struct Tick {
    /// The symbol.
    pub symbol: Arc<str>,
    /// Binance's trade id.
    pub trade_id: i64,
    /// Price, exact.
    pub price: Numeric,
    /// Quantity, exact.
    pub qty: Numeric,
    /// `buy` (the buyer took liquidity) or `sell`.
    pub side: &'static str,
    /// Trade (transaction) time.
    pub trade_time: UnixMicros,
    /// Event time.
    pub event_time: UnixMicros,
}

/// One top-N book snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct Book {
    /// The symbol.
    pub symbol: Arc<str>,
    /// The book's update id.
    pub update_id: i64,
    /// Event time (the `ts` column).
    pub event_time: UnixMicros,
    /// Bids, best first: (price, quantity).
    pub bids: Vec<(Numeric, Numeric)>,
    /// Asks, best first.
    pub asks: Vec<(Numeric, Numeric)>,
}

impl Book {
    /// `(ask - bid) / mid x 10000`, when both sides have a level.
    pub fn spread_bps(&self) -> Option<f64> {
        let (bid, ask) = (self.bids.first()?.0.to_f64(), self.asks.first()?.0.to_f64());
        let mid = (bid + ask) / 2.0;
        (mid > 0.0).then(|| (ask - bid) / mid * 10_000.0)
    }
}

/// A row for one of the two tables.
#[derive(Clone, Debug, PartialEq)]
pub enum Row {
    /// `ticks`.
    Tick(Tick),
    /// `books`.
    Book(Book),
}

impl Row {
    /// The table's name.
    pub fn table(&self) -> &'static str {
        match self {
            Row::Tick(_) => "ticks",
            Row::Book(_) => "books",
        }
    }

    /// The columns and their PostgreSQL text forms (`""` for NULL), for the dead-letter file.
    pub fn text(&self) -> Vec<(String, String)> {
        let pair = |k: &str, v: String| (k.to_string(), v);
        match self {
            Row::Tick(t) => vec![
                pair("exchange", EXCHANGE.into()),
                pair("symbol", t.symbol.to_string()),
                pair("trade_id", t.trade_id.to_string()),
                pair("price", t.price.text()),
                pair("qty", t.qty.text()),
                pair("side", t.side.into()),
                pair("ts", t.trade_time.text()),
                pair("event_time", t.event_time.text()),
            ],
            Row::Book(b) => {
                let array = |levels: &[(Numeric, Numeric)], qty: bool| {
                    let items: Vec<String> = levels
                        .iter()
                        .map(|(p, q)| if qty { q.text() } else { p.text() })
                        .collect();
                    format!("{{{}}}", items.join(","))
                };
                let best = |l: Option<&(Numeric, Numeric)>, qty: bool| {
                    l.map_or(
                        String::new(),
                        |(p, q)| if qty { q.text() } else { p.text() },
                    )
                };
                vec![
                    pair("venue", EXCHANGE.into()),
                    pair("symbol", b.symbol.to_string()),
                    pair("update_id", b.update_id.to_string()),
                    pair("ts", b.event_time.text()),
                    pair("best_bid", best(b.bids.first(), false)),
                    pair("best_bid_qty", best(b.bids.first(), true)),
                    pair("best_ask", best(b.asks.first(), false)),
                    pair("best_ask_qty", best(b.asks.first(), true)),
                    pair(
                        "spread_bps",
                        b.spread_bps().map_or(String::new(), |s| s.to_string()),
                    ),
                    pair("bid_prices", array(&b.bids, false)),
                    pair("bid_qtys", array(&b.bids, true)),
                    pair("ask_prices", array(&b.asks, false)),
                    pair("ask_qtys", array(&b.asks, true)),
                ]
            }
        }
    }
}

/// Appends a `ticks` row for each trade of `frame` (a trades event) with id `from` or later.
/// `false` when the frame is not a readable trades event.
pub fn ticks(frame: &[u8], from: i64, out: &mut Vec<Row>) -> bool {
    let Ok(Message::TradesStreamEvent(m)) = crate::sbe::decode(frame) else {
        return false;
    };
    let Ok(symbol) = std::str::from_utf8(m.symbol()) else {
        return false;
    };
    let symbol: Arc<str> = Arc::from(symbol);
    let (pe, qe) = (m.price_exponent(), m.qty_exponent());
    for t in m.trades().filter(|t| t.id() >= from) {
        out.push(Row::Tick(Tick {
            symbol: symbol.clone(),
            trade_id: t.id(),
            price: Numeric::new(t.price(), pe),
            qty: Numeric::new(t.qty(), qe),
            side: if t.is_buyer_maker() == Some(BoolEnum::True) {
                "sell"
            } else {
                "buy"
            },
            trade_time: UnixMicros(m.transact_time()),
            event_time: UnixMicros(m.event_time()),
        }));
    }
    true
}

/// The `books` row of a depth20 snapshot frame, top `levels` per side; `None` when the frame is
/// not a readable depth20 event.
pub fn book(frame: &[u8], levels: usize) -> Option<Book> {
    let Ok(Message::DepthSnapshotStreamEvent(m)) = crate::sbe::decode(frame) else {
        return None;
    };
    Some(book_of(&m, levels))
}

fn book_of(m: &DepthSnapshotStreamEventDecoder<'_>, levels: usize) -> Book {
    let (pe, qe) = (m.price_exponent(), m.qty_exponent());
    let symbol: Arc<str> = Arc::from(String::from_utf8_lossy(m.symbol()).as_ref());
    Book {
        symbol,
        update_id: m.book_update_id(),
        event_time: UnixMicros(m.event_time()),
        bids: m
            .bids()
            .take(levels)
            .map(|l| (Numeric::new(l.price(), pe), Numeric::new(l.qty(), qe)))
            .collect(),
        asks: m
            .asks()
            .take(levels)
            .map(|l| (Numeric::new(l.price(), pe), Numeric::new(l.qty(), qe)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(bids: &[(i64, i64)], asks: &[(i64, i64)]) -> Book {
        let side = |l: &[(i64, i64)]| {
            l.iter()
                .map(|&(p, q)| (Numeric::new(p, -2), Numeric::new(q, -3)))
                .collect()
        };
        Book {
            symbol: Arc::from("BTCUSDT"),
            update_id: 7,
            event_time: UnixMicros(0),
            bids: side(bids),
            asks: side(asks),
        }
    }

    #[test]
    fn spread_in_basis_points() {
        let b = book(&[(9_999, 1)], &[(10_001, 2)]);
        let s = b.spread_bps().expect("both sides");
        assert!((s - 2.0).abs() < 1e-9, "{s}");
        assert_eq!(book(&[], &[(1, 1)]).spread_bps(), None);
    }

    #[test]
    fn text_forms_are_postgres_input() {
        let row = Row::Book(book(&[(9_999, 1500), (9_998, 1)], &[]));
        let text = row.text();
        let get = |k: &str| text.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("bid_prices"), Some("{99.99,99.98}"));
        assert_eq!(get("bid_qtys"), Some("{1.500,0.001}"));
        assert_eq!(get("ask_prices"), Some("{}"));
        assert_eq!(get("best_ask"), Some(""));
        assert_eq!(get("ts"), Some("1970-01-01T00:00:00.000000Z"));
    }
}
