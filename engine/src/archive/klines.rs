//! Candles as Parquet bytes and back, pure, with the parquet crate's low-level column writer
//! and reader (as the trades' [`super::parquet`]).
//!
//! The schema (one row per candle, in open-time order; symbol, interval, date and hour are
//! the Hive partition columns of the key, the symbol and interval also key-value metadata):
//!
//! ```text
//! message kline {
//!   REQUIRED INT64 open_time (TIMESTAMP(MILLIS,true));  -- the interval's first ms, UTC
//!   REQUIRED INT64 close_time (TIMESTAMP(MILLIS,true)); -- its last ms (Binance's closeTime)
//!   REQUIRED FIXED_LEN_BYTE_ARRAY(16) open (DECIMAL(38,18));   -- exact, as every value below
//!   REQUIRED FIXED_LEN_BYTE_ARRAY(16) high (DECIMAL(38,18));
//!   REQUIRED FIXED_LEN_BYTE_ARRAY(16) low (DECIMAL(38,18));
//!   REQUIRED FIXED_LEN_BYTE_ARRAY(16) close (DECIMAL(38,18));
//!   REQUIRED FIXED_LEN_BYTE_ARRAY(16) volume (DECIMAL(38,18));            -- base volume
//!   REQUIRED FIXED_LEN_BYTE_ARRAY(16) quote_volume (DECIMAL(38,18));      -- sum of price x qty
//!   REQUIRED FIXED_LEN_BYTE_ARRAY(16) taker_buy_volume (DECIMAL(38,18));
//!   REQUIRED FIXED_LEN_BYTE_ARRAY(16) taker_buy_quote_volume (DECIMAL(38,18));
//!   REQUIRED INT64 trade_count;
//!   OPTIONAL INT64 first_trade_id;  -- null: no trades, or not known (a REST kline has none)
//!   OPTIONAL INT64 last_trade_id;
//! }
//! ```
//!
//! The values are [`Candle`]'s mantissas at 10^-18 ([`crate::kline::EXPONENT`]): a quote volume
//! (price x quantity) has up to 16 decimals, so the trades' `DECIMAL(18, 8)` would round it.

use std::sync::Arc;

use bytes::Bytes;
use parquet::basic::Compression;
use parquet::column::reader::ColumnReader;
use parquet::data_type::{FixedLenByteArray, FixedLenByteArrayType, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::{SerializedColumnWriter, SerializedFileWriter};
use parquet::schema::parser::parse_message_type;

use super::parquet::ParquetError;
use crate::kline::Candle;

/// The schema every klines part is written with.
pub const SCHEMA: &str = "message kline {
  REQUIRED INT64 open_time (TIMESTAMP(MILLIS,true));
  REQUIRED INT64 close_time (TIMESTAMP(MILLIS,true));
  REQUIRED FIXED_LEN_BYTE_ARRAY(16) open (DECIMAL(38,18));
  REQUIRED FIXED_LEN_BYTE_ARRAY(16) high (DECIMAL(38,18));
  REQUIRED FIXED_LEN_BYTE_ARRAY(16) low (DECIMAL(38,18));
  REQUIRED FIXED_LEN_BYTE_ARRAY(16) close (DECIMAL(38,18));
  REQUIRED FIXED_LEN_BYTE_ARRAY(16) volume (DECIMAL(38,18));
  REQUIRED FIXED_LEN_BYTE_ARRAY(16) quote_volume (DECIMAL(38,18));
  REQUIRED FIXED_LEN_BYTE_ARRAY(16) taker_buy_volume (DECIMAL(38,18));
  REQUIRED FIXED_LEN_BYTE_ARRAY(16) taker_buy_quote_volume (DECIMAL(38,18));
  REQUIRED INT64 trade_count;
  OPTIONAL INT64 first_trade_id;
  OPTIONAL INT64 last_trade_id;
}";

/// The columns, in schema order.
pub const COLUMNS: [&str; 13] = [
    "open_time",
    "close_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "trade_count",
    "first_trade_id",
    "last_trade_id",
];

/// The eight decimal values of a candle, in schema order.
fn values(c: &Candle) -> [i128; 8] {
    [
        c.open,
        c.high,
        c.low,
        c.close,
        c.volume,
        c.quote_volume,
        c.taker_buy_volume,
        c.taker_buy_quote_volume,
    ]
}

fn properties(symbol: &str, interval: &str) -> WriterProperties {
    let kv = |k: &str, v: &str| KeyValue::new(k.to_string(), v.to_string());
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by(format!("hotpath {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(vec![kv("symbol", symbol), kv("interval", interval)]))
        .build()
}

fn next<'a, W: std::io::Write + Send>(
    group: &'a mut parquet::file::writer::SerializedRowGroupWriter<'_, W>,
) -> Result<SerializedColumnWriter<'a>, ParquetError> {
    group
        .next_column()?
        .ok_or_else(|| ParquetError::Schema("fewer columns than written".into()))
}

/// `candles` (one symbol's, one interval's, in open-time order) as one Parquet file.
pub fn encode(symbol: &str, interval: &str, candles: &[Candle]) -> Result<Vec<u8>, ParquetError> {
    let schema = Arc::new(parse_message_type(SCHEMA)?);
    let props = Arc::new(properties(symbol, interval));
    let mut writer = SerializedFileWriter::new(Vec::new(), schema, props)?;
    let mut group = writer.next_row_group()?;
    for f in [|c: &Candle| c.open_ms, |c: &Candle| c.close_ms] {
        let times: Vec<i64> = candles.iter().map(f).collect();
        let mut column = next(&mut group)?;
        column
            .typed::<Int64Type>()
            .write_batch(&times, None, None)?;
        column.close()?;
    }
    for i in 0..8 {
        let decimals: Vec<FixedLenByteArray> = candles
            .iter()
            .map(|c| FixedLenByteArray::from(values(c)[i].to_be_bytes().to_vec()))
            .collect();
        let mut column = next(&mut group)?;
        column
            .typed::<FixedLenByteArrayType>()
            .write_batch(&decimals, None, None)?;
        column.close()?;
    }
    let counts: Vec<i64> = candles
        .iter()
        .map(|c| i64::try_from(c.trades).unwrap_or(i64::MAX))
        .collect();
    let mut column = next(&mut group)?;
    column
        .typed::<Int64Type>()
        .write_batch(&counts, None, None)?;
    column.close()?;
    for f in [|c: &Candle| c.first_id, |c: &Candle| c.last_id] {
        let ids: Vec<i64> = candles.iter().map(f).filter(|&id| id >= 0).collect();
        let levels: Vec<i16> = candles.iter().map(|c| i16::from(f(c) >= 0)).collect();
        let mut column = next(&mut group)?;
        column
            .typed::<Int64Type>()
            .write_batch(&ids, Some(&levels), None)?;
        column.close()?;
    }
    group.close()?;
    Ok(writer.into_inner()?)
}

/// The candles of a part written by [`encode`] (a null trade id reads as -1, [`Candle`]'s
/// "none").
pub fn decode(bytes: Bytes) -> Result<Vec<Candle>, ParquetError> {
    let reader = SerializedFileReader::new(bytes)?;
    let schema = reader.metadata().file_metadata().schema_descr();
    let names: Vec<&str> = schema.columns().iter().map(|c| c.name()).collect();
    if names != COLUMNS {
        return Err(ParquetError::Schema(format!("columns {names:?}")));
    }
    let mut out = Vec::new();
    for g in 0..reader.num_row_groups() {
        let group = reader.get_row_group(g)?;
        let times = [
            read_int64(group.get_column_reader(0)?)?.0,
            read_int64(group.get_column_reader(1)?)?.0,
        ];
        let mut decimals = Vec::with_capacity(8);
        for c in 2..10 {
            decimals.push(read_decimals(group.get_column_reader(c)?)?);
        }
        let counts = read_int64(group.get_column_reader(10)?)?.0;
        let firsts = nullable(read_int64(group.get_column_reader(11)?)?);
        let lasts = nullable(read_int64(group.get_column_reader(12)?)?);
        let n = counts.len();
        let lengths_agree = times.iter().all(|v| v.len() == n)
            && decimals.iter().all(|v| v.len() == n)
            && firsts.len() == n
            && lasts.len() == n;
        if !lengths_agree {
            return Err(ParquetError::Schema("columns of unequal lengths".into()));
        }
        out.extend((0..n).map(|i| Candle {
            open_ms: times[0][i],
            close_ms: times[1][i],
            open: decimals[0][i],
            high: decimals[1][i],
            low: decimals[2][i],
            close: decimals[3][i],
            volume: decimals[4][i],
            quote_volume: decimals[5][i],
            taker_buy_volume: decimals[6][i],
            taker_buy_quote_volume: decimals[7][i],
            trades: u64::try_from(counts[i]).unwrap_or(0),
            first_id: firsts[i],
            last_id: lasts[i],
            inexact: false,
            missing_trades: 0,
        }));
    }
    Ok(out)
}

/// An optional column's values with -1 where the definition level says null.
fn nullable((values, levels): (Vec<i64>, Vec<i16>)) -> Vec<i64> {
    let mut present = values.into_iter();
    levels
        .iter()
        .map(|&l| {
            if l > 0 {
                present.next().unwrap_or(-1)
            } else {
                -1
            }
        })
        .collect()
}

/// An INT64 column's values and definition levels (empty for a required column).
fn read_int64(reader: ColumnReader) -> Result<(Vec<i64>, Vec<i16>), ParquetError> {
    let ColumnReader::Int64ColumnReader(mut r) = reader else {
        return Err(ParquetError::Schema("a column is not INT64".into()));
    };
    let (mut values, mut levels) = (Vec::new(), Vec::new());
    loop {
        let (records, _, _) = r.read_records(8192, Some(&mut levels), None, &mut values)?;
        if records == 0 {
            return Ok((values, levels));
        }
    }
}

fn read_decimals(reader: ColumnReader) -> Result<Vec<i128>, ParquetError> {
    let ColumnReader::FixedLenByteArrayColumnReader(mut r) = reader else {
        return Err(ParquetError::Schema(
            "a value is not FIXED_LEN_BYTE_ARRAY".into(),
        ));
    };
    let mut raw: Vec<FixedLenByteArray> = Vec::new();
    loop {
        let (records, _, _) = r.read_records(8192, None, None, &mut raw)?;
        if records == 0 {
            break;
        }
    }
    raw.iter()
        .map(|v| {
            <[u8; 16]>::try_from(v.data())
                .map(i128::from_be_bytes)
                .map_err(|_| ParquetError::Schema("a decimal is not 16 bytes".into()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kline::Interval;

    fn candles(n: i64) -> Vec<Candle> {
        let minute = Interval::of("1m").expect("1m");
        (0..n)
            .map(|i| {
                let mut c = Candle::flat(1_795_961_100_000 + i * 60_000, minute, 0);
                c.open = 69_769_880_000_000_000_000_000 + i128::from(i);
                c.high = c.open * 2;
                c.low = -1;
                c.close = i128::MAX - i128::from(i);
                c.volume = 12 * 10i128.pow(14);
                c.quote_volume = 837_238_560_000_000_000_123;
                c.taker_buy_volume = 5;
                c.taker_buy_quote_volume = 0;
                if i % 3 != 0 {
                    (c.trades, c.first_id, c.last_id) = (2, 100 + i * 2, 101 + i * 2);
                }
                c
            })
            .collect()
    }

    #[test]
    fn candles_round_trip_exactly_with_null_trade_ids() {
        for n in [0, 1, 7, 2_000] {
            let written = candles(n);
            let bytes = encode("BTCUSDT", "1m", &written).expect("encodes");
            assert_eq!(&bytes[..4], b"PAR1");
            assert_eq!(decode(Bytes::from(bytes)).expect("decodes"), written, "{n}");
        }
    }

    #[test]
    fn a_trades_part_is_not_a_klines_part() {
        let trades = super::super::parquet::encode("BTCUSDT", &[]).expect("encodes");
        assert!(decode(Bytes::from(trades)).is_err());
        assert!(decode(Bytes::from_static(b"PAR1 nothing")).is_err());
    }
}
