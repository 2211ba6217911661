//! Trades as Parquet bytes and back, pure, with the parquet crate's low-level column writer
//! and reader (no Arrow: it would build some 20 more crates for six flat columns).
//!
//! The schema (one row per trade, in trade-id order; the symbol, date and hour are the Hive
//! partition columns of the key, and the symbol is also in the key-value metadata):
//!
//! ```text
//! message trade {
//!   REQUIRED INT64 trade_id;                           -- Binance's trade id
//!   REQUIRED INT64 price (DECIMAL(18,8));              -- exact
//!   REQUIRED INT64 qty (DECIMAL(18,8));                -- exact
//!   REQUIRED INT64 trade_time (TIMESTAMP(MICROS,true));-- transaction time, UTC
//!   REQUIRED INT64 event_time (TIMESTAMP(MICROS,true));-- event time (backfill: trade time)
//!   REQUIRED BOOLEAN is_buyer_maker;                   -- true: the taker sold
//! }
//! ```
//!
//! Ids and times are DELTA_BINARY_PACKED (they increase), prices and quantities dictionary
//! encoded; pages are Snappy compressed; one row group per part.

use std::sync::Arc;

use bytes::Bytes;
use parquet::basic::{Compression, Encoding};
use parquet::column::reader::ColumnReader;
use parquet::data_type::{BoolType, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::ColumnPath;

use super::TradeRow;

/// The schema every part is written with.
pub const SCHEMA: &str = "message trade {
  REQUIRED INT64 trade_id;
  REQUIRED INT64 price (DECIMAL(18,8));
  REQUIRED INT64 qty (DECIMAL(18,8));
  REQUIRED INT64 trade_time (TIMESTAMP(MICROS,true));
  REQUIRED INT64 event_time (TIMESTAMP(MICROS,true));
  REQUIRED BOOLEAN is_buyer_maker;
}";

/// The columns, in schema order.
pub const COLUMNS: [&str; 6] = [
    "trade_id",
    "price",
    "qty",
    "trade_time",
    "event_time",
    "is_buyer_maker",
];

/// Rows read per call of a column reader.
const READ_BATCH: usize = 8192;

/// Why Parquet bytes could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ParquetError {
    /// The parquet crate refused.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// A file whose columns are not [`SCHEMA`]'s.
    #[error("not a trades part: {0}")]
    Schema(String),
}

fn properties(symbol: &str) -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by(format!("hotpath {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(vec![KeyValue::new(
            "symbol".to_string(),
            symbol.to_string(),
        )]));
    for column in ["trade_id", "trade_time", "event_time"] {
        let path = ColumnPath::from(column);
        builder = builder
            .set_column_dictionary_enabled(path.clone(), false)
            .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
    }
    builder.build()
}

/// `rows` (one symbol's, in trade-id order) as one Parquet file.
pub fn encode(symbol: &str, rows: &[TradeRow]) -> Result<Vec<u8>, ParquetError> {
    let schema = Arc::new(parse_message_type(SCHEMA)?);
    let mut writer = SerializedFileWriter::new(Vec::new(), schema, Arc::new(properties(symbol)))?;
    let mut group = writer.next_row_group()?;
    let int64 = |f: fn(&TradeRow) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
    let columns = [
        int64(|r| r.trade_id),
        int64(|r| r.price),
        int64(|r| r.qty),
        int64(|r| r.trade_time_us),
        int64(|r| r.event_time_us),
    ];
    for values in &columns {
        let Some(mut column) = group.next_column()? else {
            return Err(ParquetError::Schema("fewer columns than written".into()));
        };
        column
            .typed::<Int64Type>()
            .write_batch(values, None, None)?;
        column.close()?;
    }
    let Some(mut column) = group.next_column()? else {
        return Err(ParquetError::Schema("no is_buyer_maker column".into()));
    };
    let makers: Vec<bool> = rows.iter().map(|r| r.is_buyer_maker).collect();
    column
        .typed::<BoolType>()
        .write_batch(&makers, None, None)?;
    column.close()?;
    group.close()?;
    Ok(writer.into_inner()?)
}

/// The trades of a part written by [`encode`] (or anything with the same columns).
pub fn decode(bytes: Bytes) -> Result<Vec<TradeRow>, ParquetError> {
    let reader = SerializedFileReader::new(bytes)?;
    let schema = reader.metadata().file_metadata().schema_descr();
    let names: Vec<&str> = schema.columns().iter().map(|c| c.name()).collect();
    if names != COLUMNS {
        return Err(ParquetError::Schema(format!("columns {names:?}")));
    }
    let mut rows = Vec::new();
    for g in 0..reader.num_row_groups() {
        let group = reader.get_row_group(g)?;
        let mut ints: Vec<Vec<i64>> = Vec::with_capacity(5);
        for (c, name) in COLUMNS.iter().enumerate().take(5) {
            ints.push(read_int64(group.get_column_reader(c)?, name)?);
        }
        let makers = read_bool(group.get_column_reader(5)?)?;
        let n = makers.len();
        if ints.iter().any(|v| v.len() != n) {
            return Err(ParquetError::Schema("columns of unequal lengths".into()));
        }
        rows.extend((0..n).map(|i| TradeRow {
            trade_id: ints[0][i],
            price: ints[1][i],
            qty: ints[2][i],
            trade_time_us: ints[3][i],
            event_time_us: ints[4][i],
            is_buyer_maker: makers[i],
        }));
    }
    Ok(rows)
}

fn read_int64(reader: ColumnReader, name: &str) -> Result<Vec<i64>, ParquetError> {
    let ColumnReader::Int64ColumnReader(mut r) = reader else {
        return Err(ParquetError::Schema(format!("{name} is not INT64")));
    };
    let mut out = Vec::new();
    loop {
        let (records, _, _) = r.read_records(READ_BATCH, None, None, &mut out)?;
        if records == 0 {
            return Ok(out);
        }
    }
}

fn read_bool(reader: ColumnReader) -> Result<Vec<bool>, ParquetError> {
    let ColumnReader::BoolColumnReader(mut r) = reader else {
        return Err(ParquetError::Schema("is_buyer_maker is not BOOLEAN".into()));
    };
    let mut out = Vec::new();
    loop {
        let (records, _, _) = r.read_records(READ_BATCH, None, None, &mut out)?;
        if records == 0 {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: i64) -> Vec<TradeRow> {
        (0..n)
            .map(|i| TradeRow {
                trade_id: 1_000 + i,
                price: 6_976_988_000_000 + (i % 7) * 1_000_000,
                qty: 12_000 + i * 3,
                trade_time_us: 1_795_961_100_000_000 + i * 250,
                event_time_us: 1_795_961_100_000_100 + i * 250,
                is_buyer_maker: i % 3 == 0,
            })
            .collect()
    }

    #[test]
    fn rows_round_trip_exactly() {
        for n in [0, 1, 20_000] {
            let written = rows(n);
            let bytes = encode("BTCUSDT", &written).expect("encodes");
            assert_eq!(&bytes[..4], b"PAR1");
            let read = decode(Bytes::from(bytes)).expect("decodes");
            assert_eq!(read, written, "{n} rows");
        }
    }

    #[test]
    fn garbage_and_truncated_files_are_errors() {
        assert!(decode(Bytes::from_static(b"not parquet at all")).is_err());
        let bytes = encode("BTCUSDT", &rows(10)).expect("encodes");
        assert!(decode(Bytes::from(bytes[..bytes.len() - 9].to_vec())).is_err());
    }
}
