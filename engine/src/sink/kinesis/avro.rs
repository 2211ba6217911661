//! The Kinesis `avro` payload (`kinesis.payload = "avro"`): each event's SBE frame becomes
//! `MarketData` records of seed 003's schema, `schemas/avro/market_data.avsc` (compiled in), in
//! Avro single-object encoding: `C3 01`, the schema's 8-byte CRC-64-AVRO (Rabin) fingerprint
//! little-endian, then the binary datum. One Kinesis record carries the messages of one event
//! back to back: one for a trade (SBE trades events of several trades give several), one for a
//! best bid/ask, one per level for a depth diff or snapshot. A consumer reads messages until the
//! record ends.
//!
//! The datum is written by apache-avro's schema-aware serde serializer straight into the
//! caller's buffer (no `Value` tree, no allocation per record once the buffer has grown).
//! Prices and quantities are `double`s, as the old service wrote them: the nearest double to
//! Binance's exact decimal (one correctly rounded division), so a decimal of at most 15
//! significant digits comes back exactly from the double's shortest representation (Python's
//! `repr`, Rust's `{}`); README, "Kinesis Avro payload", says what that means for consumers.

use std::sync::OnceLock;

use apache_avro::Schema;
use apache_avro::headers::{HeaderBuilder, RabinFingerprintHeader};
use apache_avro::reader::single_object::GenericSingleObjectReader;
use apache_avro::writer::datum::GenericDatumWriter;
use serde::{Deserialize, Serialize};

use crate::sbe::spot_stream::Message;

/// The schema's text, as shipped in `schemas/avro/market_data.avsc`.
pub const SCHEMA_JSON: &str = include_str!("../../../../schemas/avro/market_data.avsc");

/// Bytes before each datum: the marker `C3 01` and the 8-byte fingerprint.
pub const HEADER_BYTES: usize = 10;

/// `source` of every record hotpath writes: live data from the WebSocket streams (trades the
/// sidecar fetched over REST fill gaps of those streams and are written the same way).
const SOURCE: &str = "websocket";

/// Why an event could not be written as Avro.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AvroError {
    /// The compiled-in schema does not parse (a build defect; a unit test guards it).
    Schema(String),
    /// The frame does not decode.
    Decode(String),
    /// The symbol is not UTF-8.
    Symbol,
    /// The serializer refused a record.
    Encode(String),
}

impl std::fmt::Display for AvroError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AvroError::Schema(e) => write!(f, "market_data.avsc does not parse: {e}"),
            AvroError::Decode(e) => write!(f, "the frame does not decode: {e}"),
            AvroError::Symbol => f.write_str("the symbol is not UTF-8"),
            AvroError::Encode(e) => write!(f, "cannot encode a MarketData record: {e}"),
        }
    }
}

impl std::error::Error for AvroError {}

/// One `MarketData` record, fields in the schema's order.
#[derive(Serialize)]
struct MarketData<'a> {
    symbol: &'a str,
    timestamp: i64,
    price: f64,
    volume: f64,
    bid_price: Option<f64>,
    ask_price: Option<f64>,
    source: &'static str,
    event_type: &'static str,
}

/// A `MarketData` record as a consumer reads it back ([`read_record`]).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename = "MarketData")]
pub struct MarketRecord {
    /// Trading pair.
    pub symbol: String,
    /// Unix milliseconds.
    pub timestamp: i64,
    /// Price (trade, level, or best bid/ask mid).
    pub price: f64,
    /// Quantity (0 for a best bid/ask).
    pub volume: f64,
    /// Best bid, or a bid level's price.
    pub bid_price: Option<f64>,
    /// Best ask, or an ask level's price.
    pub ask_price: Option<f64>,
    /// `websocket` or `rest`.
    pub source: String,
    /// `trade` or `depth`.
    pub event_type: String,
}

/// Reads every message of one Kinesis record's data with apache-avro, checking each header
/// against the schema's fingerprint (what a Rust consumer does; the README shows Python).
pub fn read_record(data: &[u8]) -> Result<Vec<MarketRecord>, AvroError> {
    let reader = GenericSingleObjectReader::builder()
        .schema(schema()?.clone())
        .build()
        .map_err(|e| AvroError::Schema(e.to_string()))?;
    let mut rest = data;
    let mut records = Vec::new();
    while !rest.is_empty() {
        let record = reader
            .read_deser(&mut rest)
            .map_err(|e| AvroError::Decode(e.to_string()))?;
        records.push(record);
    }
    Ok(records)
}

/// The parsed schema, parsed once per process.
pub fn schema() -> Result<&'static Schema, AvroError> {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    if let Some(schema) = SCHEMA.get() {
        return Ok(schema);
    }
    let parsed = Schema::parse_str(SCHEMA_JSON).map_err(|e| AvroError::Schema(e.to_string()))?;
    Ok(SCHEMA.get_or_init(|| parsed))
}

/// Writes events as `MarketData` single-object messages.
pub struct AvroEncoder {
    writer: GenericDatumWriter<'static>,
    header: [u8; HEADER_BYTES],
}

impl AvroEncoder {
    /// An encoder of the compiled-in schema.
    pub fn new() -> Result<AvroEncoder, AvroError> {
        let schema = schema()?;
        let header = RabinFingerprintHeader::from_schema(schema).build_header();
        let header: [u8; HEADER_BYTES] = header
            .try_into()
            .map_err(|h: Vec<u8>| AvroError::Schema(format!("a {}-byte header", h.len())))?;
        let writer = GenericDatumWriter::builder(schema)
            .build()
            .map_err(|e| AvroError::Schema(e.to_string()))?;
        Ok(AvroEncoder { writer, header })
    }

    /// The single-object header every message starts with.
    pub fn header(&self) -> &[u8; HEADER_BYTES] {
        &self.header
    }

    /// Appends the messages of the SBE event `frame` to `out`; returns how many. On an error
    /// `out` may hold part of the event (the caller clears it).
    pub fn encode(&self, frame: &[u8], out: &mut Vec<u8>) -> Result<usize, AvroError> {
        let message = crate::sbe::decode(frame).map_err(|e| AvroError::Decode(e.to_string()))?;
        let symbol =
            std::str::from_utf8(crate::sbe::symbol(&message)).map_err(|_| AvroError::Symbol)?;
        let mut n = 0;
        let mut put = |record: &MarketData<'_>| -> Result<(), AvroError> {
            out.extend_from_slice(&self.header);
            self.writer
                .write_ser(out, record)
                .map_err(|e| AvroError::Encode(e.to_string()))?;
            n += 1;
            Ok(())
        };
        match message {
            Message::TradesStreamEvent(m) => {
                let (pe, qe) = (m.price_exponent(), m.qty_exponent());
                let timestamp = m.transact_time().div_euclid(1000);
                for t in m.trades() {
                    put(&MarketData {
                        price: decimal(t.price(), pe),
                        volume: decimal(t.qty(), qe),
                        ..record(symbol, timestamp, "trade")
                    })?;
                }
            }
            Message::BestBidAskStreamEvent(m) => {
                let pe = m.price_exponent();
                let mid = i128::from(m.bid_price()) * 5 + i128::from(m.ask_price()) * 5;
                put(&MarketData {
                    price: decimal_wide(mid, i32::from(pe) - 1),
                    bid_price: Some(decimal(m.bid_price(), pe)),
                    ask_price: Some(decimal(m.ask_price(), pe)),
                    ..record(symbol, m.event_time().div_euclid(1000), "depth")
                })?;
            }
            Message::DepthSnapshotStreamEvent(m) => {
                let base = record(symbol, m.event_time().div_euclid(1000), "depth");
                let (pe, qe) = (m.price_exponent(), m.qty_exponent());
                for l in m.bids() {
                    put(&level(
                        &base,
                        decimal(l.price(), pe),
                        decimal(l.qty(), qe),
                        true,
                    ))?;
                }
                for l in m.asks() {
                    put(&level(
                        &base,
                        decimal(l.price(), pe),
                        decimal(l.qty(), qe),
                        false,
                    ))?;
                }
            }
            Message::DepthDiffStreamEvent(m) => {
                let base = record(symbol, m.event_time().div_euclid(1000), "depth");
                let (pe, qe) = (m.price_exponent(), m.qty_exponent());
                for l in m.bids() {
                    put(&level(
                        &base,
                        decimal(l.price(), pe),
                        decimal(l.qty(), qe),
                        true,
                    ))?;
                }
                for l in m.asks() {
                    put(&level(
                        &base,
                        decimal(l.price(), pe),
                        decimal(l.qty(), qe),
                        false,
                    ))?;
                }
            }
        }
        Ok(n)
    }
}

/// A record of `symbol` with zero price and volume and no bid or ask.
fn record<'a>(symbol: &'a str, timestamp: i64, event_type: &'static str) -> MarketData<'a> {
    MarketData {
        symbol,
        timestamp,
        price: 0.0,
        volume: 0.0,
        bid_price: None,
        ask_price: None,
        source: SOURCE,
        event_type,
    }
}

/// A book level: its price as `price` and as `bid_price` or `ask_price` by side.
fn level<'a>(base: &MarketData<'a>, price: f64, volume: f64, bid: bool) -> MarketData<'a> {
    MarketData {
        price,
        volume,
        bid_price: bid.then_some(price),
        ask_price: (!bid).then_some(price),
        ..*base
    }
}

impl Clone for MarketData<'_> {
    fn clone(&self) -> Self {
        *self
    }
}
impl Copy for MarketData<'_> {}

/// Powers of ten a double holds exactly.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The double nearest to `mantissa` x 10^`exponent`.
pub fn decimal(mantissa: i64, exponent: i8) -> f64 {
    decimal_wide(i128::from(mantissa), i32::from(exponent))
}

/// The double nearest to `mantissa` x 10^`exponent`: one correctly rounded IEEE division or
/// multiplication of two exact doubles when the mantissa has at most 53 bits and the power of
/// ten at most 22 (every Binance price and quantity); otherwise Rust's correctly rounded parse.
fn decimal_wide(mantissa: i128, exponent: i32) -> f64 {
    let k = exponent.unsigned_abs() as usize;
    if mantissa.unsigned_abs() <= 1 << 53 && k < POW10.len() {
        // Exact: |mantissa| <= 2^53.
        #[allow(clippy::cast_precision_loss)]
        let m = mantissa as f64;
        return if exponent < 0 {
            m / POW10[k]
        } else {
            m * POW10[k]
        };
    }
    format!("{mantissa}e{exponent}").parse().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::encode::encode_sbe;
    use crate::sim::exchange::{Event, Payload, StreamKey};
    use crate::sim::market::{Diff, Trade};
    use crate::stream::StreamKind;

    const TIME_US: i64 = 1_759_750_000_123_456;

    fn frame(kind: StreamKind, payload: Payload) -> Vec<u8> {
        let event = Event {
            key: StreamKey { symbol: 0, kind },
            event_time_us: TIME_US,
            payload,
        };
        let mut out = Vec::new();
        encode_sbe("BTCUSDT", &event, &mut out);
        out
    }

    fn encode(frame: &[u8]) -> (usize, Vec<u8>) {
        let encoder = AvroEncoder::new().expect("schema");
        let mut out = Vec::new();
        let n = encoder.encode(frame, &mut out).expect("encodes");
        (n, out)
    }

    #[test]
    fn the_shipped_schema_parses_with_seed_003s_fields() {
        let Schema::Record(record) = schema().expect("parses") else {
            panic!("not a record");
        };
        let names: Vec<&str> = record.fields.iter().map(|f| f.name.as_str()).collect();
        let seed = [
            "symbol",
            "timestamp",
            "price",
            "volume",
            "bid_price",
            "ask_price",
            "source",
            "event_type",
        ];
        assert_eq!(names, seed);
    }

    #[test]
    fn decimals_become_the_nearest_double() {
        assert_eq!(decimal(6_500_012_345_678, -8), 65_000.123_456_78);
        assert_eq!(decimal(1, -8), 0.000_000_01);
        assert_eq!(decimal(-25, -1), -2.5);
        assert_eq!(decimal(7, 2), 700.0);
        // Past 2^53 the parse path rounds correctly too.
        let big: f64 = "92233720368.54775807".parse().expect("parses");
        assert_eq!(decimal(i64::MAX, -8), big);
        assert_eq!(decimal_wide(5, -30), 5e-30);
        // The shortest representation gives the exact decimal back (15 digits or fewer).
        assert_eq!(decimal(6_500_012_345_678, -8).to_string(), "65000.12345678");
    }

    #[test]
    fn a_trades_event_gives_one_message_per_trade_that_apache_avro_reads_back() {
        let trades = (0..3)
            .map(|i| Trade {
                id: 5_000 + i,
                price: 6_976_988_000_000 + i,
                qty: 1_301_000 * (i + 1),
                buyer_maker: i % 2 == 0,
                time_us: TIME_US - 7,
            })
            .collect();
        let payload = Payload::Trades {
            transact_time_us: TIME_US - 7_000,
            trades,
        };
        let (n, data) = encode(&frame(StreamKind::Trade, payload));
        assert_eq!(n, 3);
        // Single-object encoding: C3 01 and the fingerprint before each datum.
        let header = *AvroEncoder::new().expect("schema").header();
        assert_eq!(&data[..2], &[0xC3, 0x01]);
        assert_eq!(&data[..HEADER_BYTES], &header);
        // The CRC-64-AVRO of the schema's parsing canonical form (README gives it; the Python
        // example computes it with fastavro).
        let fingerprint = [0x59, 0x6e, 0x79, 0x16, 0x72, 0x3a, 0x3e, 0x0b];
        assert_eq!(header[2..], fingerprint);
        let records = read_record(&data).expect("reads back");
        assert_eq!(records.len(), 3);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.symbol, "BTCUSDT");
            assert_eq!(r.timestamp, (TIME_US - 7_000) / 1000);
            assert_eq!(r.price, decimal(6_976_988_000_000 + i as i64, -8));
            assert_eq!(r.volume, decimal(1_301_000 * (i as i64 + 1), -8));
            assert_eq!((r.bid_price, r.ask_price), (None, None));
            assert_eq!(
                (r.source.as_str(), r.event_type.as_str()),
                ("websocket", "trade")
            );
        }
        assert_eq!(records[0].price.to_string(), "69769.88");
    }

    #[test]
    fn a_best_bid_ask_carries_both_sides_and_the_mid() {
        let payload = Payload::BestBidAsk {
            update_id: 9,
            bid: (6_976_988_000_000, 5),
            ask: (6_976_988_000_001, 7),
        };
        let (n, data) = encode(&frame(StreamKind::BestBidAsk, payload));
        assert_eq!(n, 1);
        let records = read_record(&data).expect("reads back");
        let r = &records[0];
        assert_eq!(r.bid_price, Some(69_769.88));
        assert_eq!(r.ask_price, Some(69_769.880_000_01));
        assert_eq!(r.price, 69_769.880_000_005);
        assert_eq!((r.volume, r.event_type.as_str()), (0.0, "depth"));
        assert_eq!(r.timestamp, TIME_US / 1000);
    }

    #[test]
    fn depth_diffs_and_snapshots_give_one_message_per_level() {
        let diff = Diff {
            first_update_id: 1,
            last_update_id: 2,
            bids: vec![(100_000_000, 0), (90_000_000, 3)],
            asks: vec![(110_000_000, 4)],
        };
        for (kind, payload) in [
            (StreamKind::Depth, Payload::DepthDiff(diff.clone())),
            (
                StreamKind::Depth20,
                Payload::Depth20 {
                    update_id: 2,
                    bids: diff.bids.clone(),
                    asks: diff.asks.clone(),
                },
            ),
        ] {
            let (n, data) = encode(&frame(kind, payload));
            assert_eq!(n, 3, "{kind:?}");
            let got: Vec<(f64, f64, Option<f64>, Option<f64>)> = read_record(&data)
                .expect("reads back")
                .iter()
                .map(|r| (r.price, r.volume, r.bid_price, r.ask_price))
                .collect();
            let want = [
                (1.0, 0.0, Some(1.0), None),
                (0.9, 3e-8, Some(0.9), None),
                (1.1, 4e-8, None, Some(1.1)),
            ];
            assert_eq!(got, want, "{kind:?}");
        }
    }

    #[test]
    fn a_bad_frame_is_an_error_not_a_panic() {
        let encoder = AvroEncoder::new().expect("schema");
        let mut out = Vec::new();
        let err = encoder.encode(&[0x32, 0x00, 0x11], &mut out);
        assert!(matches!(err, Err(AvroError::Decode(_))), "{err:?}");
        assert!(read_record(&[0xC3, 0x01, 0, 0]).is_err());
    }
}
