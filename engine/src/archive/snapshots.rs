//! Depth snapshots as Parquet bytes and back, pure: the REST snapshots the sidecar fetched
//! (for the Redis writer's books), one part per snapshot, one row per level.
//!
//! The schema (symbol, date and hour are the Hive partition columns of the key; the hour is
//! the fetch time's; symbol, `last_update_id` and `fetch_time_us` are also key-value metadata,
//! so a snapshot with no level still says what it was):
//!
//! ```text
//! message depth_snapshot {
//!   REQUIRED INT64 last_update_id;                      -- the book after this diff
//!   REQUIRED INT64 fetch_time (TIMESTAMP(MICROS,true)); -- when the answer came, UTC
//!   REQUIRED BYTE_ARRAY side (STRING);                  -- "bid" or "ask"
//!   REQUIRED INT32 level;                               -- 0: the best price of its side
//!   REQUIRED INT64 price (DECIMAL(18,8));               -- exact, as the trades'
//!   REQUIRED INT64 qty (DECIMAL(18,8));
//! }
//! ```
//!
//! Rows: the bids best (highest) first, then the asks best (lowest) first, as REST gave them.

use std::sync::Arc;

use bytes::Bytes;
use parquet::basic::Compression;
use parquet::column::reader::ColumnReader;
use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use super::DECIMAL_SCALE;
use super::parquet::ParquetError;
use crate::binance::decimal::mantissas;
use crate::binance::rest::DepthSnapshot;

/// The schema every snapshot part is written with.
pub const SCHEMA: &str = "message depth_snapshot {
  REQUIRED INT64 last_update_id;
  REQUIRED INT64 fetch_time (TIMESTAMP(MICROS,true));
  REQUIRED BYTE_ARRAY side (STRING);
  REQUIRED INT32 level;
  REQUIRED INT64 price (DECIMAL(18,8));
  REQUIRED INT64 qty (DECIMAL(18,8));
}";

/// The columns, in schema order.
pub const COLUMNS: [&str; 6] = [
    "last_update_id",
    "fetch_time",
    "side",
    "level",
    "price",
    "qty",
];

/// A snapshot as archived: levels as mantissas at 10^-8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRows {
    /// The snapshot's `lastUpdateId`.
    pub last_update_id: i64,
    /// When it was fetched, microseconds since the epoch.
    pub fetch_time_us: i64,
    /// `(price, qty)`, best first.
    pub bids: Vec<(i64, i64)>,
    /// `(price, qty)`, best first.
    pub asks: Vec<(i64, i64)>,
}

/// A snapshot the sidecar fetched, on its way to the archive.
#[derive(Clone, Debug)]
pub struct FetchedSnapshot {
    /// The symbol's name.
    pub symbol: String,
    /// When the answer came, microseconds since the epoch.
    pub fetch_time_us: i64,
    /// The snapshot as it came.
    pub snapshot: DepthSnapshot,
}

impl SnapshotRows {
    /// The rows of `fetched`, exact at 10^-8, or why a level is not.
    pub fn of(fetched: &FetchedSnapshot) -> Result<SnapshotRows, String> {
        let side = |levels| mantissas(levels, -DECIMAL_SCALE, -DECIMAL_SCALE);
        Ok(SnapshotRows {
            last_update_id: fetched.snapshot.last_update_id,
            fetch_time_us: fetched.fetch_time_us,
            bids: side(&fetched.snapshot.bids).map_err(|e| format!("bids: {e}"))?,
            asks: side(&fetched.snapshot.asks).map_err(|e| format!("asks: {e}"))?,
        })
    }

    /// Every level as `(side, rank, (price, qty))`: the bids, then the asks.
    fn levels(&self) -> impl Iterator<Item = (&'static str, i32, (i64, i64))> + '_ {
        let bids = self.bids.iter().enumerate().map(|(i, &l)| ("bid", i, l));
        let asks = self.asks.iter().enumerate().map(|(i, &l)| ("ask", i, l));
        bids.chain(asks)
            .map(|(s, i, l)| (s, i32::try_from(i).unwrap_or(i32::MAX), l))
    }
}

fn properties(symbol: &str, rows: &SnapshotRows) -> WriterProperties {
    let kv = |k: &str, v: String| KeyValue::new(k.to_string(), v);
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by(format!("hotpath {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(vec![
            kv("symbol", symbol.to_string()),
            kv("last_update_id", rows.last_update_id.to_string()),
            kv("fetch_time_us", rows.fetch_time_us.to_string()),
        ]))
        .build()
}

/// One snapshot of `symbol` as one Parquet file.
pub fn encode(symbol: &str, rows: &SnapshotRows) -> Result<Vec<u8>, ParquetError> {
    let schema = Arc::new(parse_message_type(SCHEMA)?);
    let props = Arc::new(properties(symbol, rows));
    let mut writer = SerializedFileWriter::new(Vec::new(), schema, props)?;
    let mut group = writer.next_row_group()?;
    let levels: Vec<_> = rows.levels().collect();
    let n = levels.len();
    let missing = || ParquetError::Schema("fewer columns than written".into());
    let columns64 = [vec![rows.last_update_id; n], vec![rows.fetch_time_us; n]];
    for values in &columns64 {
        let mut column = group.next_column()?.ok_or_else(missing)?;
        column
            .typed::<Int64Type>()
            .write_batch(values, None, None)?;
        column.close()?;
    }
    let sides: Vec<ByteArray> = levels.iter().map(|l| ByteArray::from(l.0)).collect();
    let mut column = group.next_column()?.ok_or_else(missing)?;
    column
        .typed::<ByteArrayType>()
        .write_batch(&sides, None, None)?;
    column.close()?;
    let ranks: Vec<i32> = levels.iter().map(|l| l.1).collect();
    let mut column = group.next_column()?.ok_or_else(missing)?;
    column
        .typed::<Int32Type>()
        .write_batch(&ranks, None, None)?;
    column.close()?;
    for f in [|l: &(i64, i64)| l.0, |l: &(i64, i64)| l.1] {
        let values: Vec<i64> = levels.iter().map(|l| f(&l.2)).collect();
        let mut column = group.next_column()?.ok_or_else(missing)?;
        column
            .typed::<Int64Type>()
            .write_batch(&values, None, None)?;
        column.close()?;
    }
    group.close()?;
    Ok(writer.into_inner()?)
}

/// The snapshot of a part written by [`encode`] (its id and time from the key-value metadata
/// when it has no level).
pub fn decode(bytes: Bytes) -> Result<SnapshotRows, ParquetError> {
    let reader = SerializedFileReader::new(bytes)?;
    let meta = reader.metadata().file_metadata();
    let names: Vec<&str> = meta
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name())
        .collect();
    if names != COLUMNS {
        return Err(ParquetError::Schema(format!("columns {names:?}")));
    }
    let kv = |key: &str| -> Option<i64> {
        meta.key_value_metadata()?
            .iter()
            .find(|kv| kv.key == key)?
            .value
            .as_deref()?
            .parse()
            .ok()
    };
    let bad = |what: &str| ParquetError::Schema(format!("no {what} in the metadata"));
    let mut out = SnapshotRows {
        last_update_id: kv("last_update_id").ok_or_else(|| bad("last_update_id"))?,
        fetch_time_us: kv("fetch_time_us").ok_or_else(|| bad("fetch_time_us"))?,
        bids: Vec::new(),
        asks: Vec::new(),
    };
    for g in 0..reader.num_row_groups() {
        let group = reader.get_row_group(g)?;
        let ids = read_int64(group.get_column_reader(0)?)?;
        let sides = read_sides(group.get_column_reader(2)?)?;
        let prices = read_int64(group.get_column_reader(4)?)?;
        let qtys = read_int64(group.get_column_reader(5)?)?;
        let n = sides.len();
        if [ids.len(), prices.len(), qtys.len()]
            .iter()
            .any(|&l| l != n)
        {
            return Err(ParquetError::Schema("columns of unequal lengths".into()));
        }
        if ids.iter().any(|&id| id != out.last_update_id) {
            return Err(ParquetError::Schema("rows of another snapshot".into()));
        }
        for i in 0..n {
            let side = if sides[i] {
                &mut out.bids
            } else {
                &mut out.asks
            };
            side.push((prices[i], qtys[i]));
        }
    }
    Ok(out)
}

fn read_int64(reader: ColumnReader) -> Result<Vec<i64>, ParquetError> {
    let ColumnReader::Int64ColumnReader(mut r) = reader else {
        return Err(ParquetError::Schema("a column is not INT64".into()));
    };
    let mut out = Vec::new();
    loop {
        let (records, _, _) = r.read_records(8192, None, None, &mut out)?;
        if records == 0 {
            return Ok(out);
        }
    }
}

/// The side column as `true` for a bid.
fn read_sides(reader: ColumnReader) -> Result<Vec<bool>, ParquetError> {
    let ColumnReader::ByteArrayColumnReader(mut r) = reader else {
        return Err(ParquetError::Schema("side is not BYTE_ARRAY".into()));
    };
    let mut raw: Vec<ByteArray> = Vec::new();
    loop {
        let (records, _, _) = r.read_records(8192, None, None, &mut raw)?;
        if records == 0 {
            break;
        }
    }
    raw.iter()
        .map(|s| match s.data() {
            b"bid" => Ok(true),
            b"ask" => Ok(false),
            other => Err(ParquetError::Schema(format!(
                "side {:?}",
                String::from_utf8_lossy(other)
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binance::rest::Levels;

    fn fetched(levels: usize) -> FetchedSnapshot {
        let side = |base: i64| {
            (0..levels)
                .map(|i| (format!("{}.01000000", base + i as i64), "0.5".to_string()))
                .collect()
        };
        FetchedSnapshot {
            symbol: "BTCUSDT".into(),
            fetch_time_us: 1_795_961_100_123_456,
            snapshot: DepthSnapshot {
                last_update_id: 987_654,
                bids: Levels::Text(side(100)),
                asks: Levels::Exact {
                    price_exponent: -2,
                    qty_exponent: 0,
                    levels: (0..levels as i64).map(|i| (20_001 + i, 3)).collect(),
                },
            },
        }
    }

    #[test]
    fn snapshots_round_trip_exactly_even_without_levels() {
        for n in [0, 1, 5000] {
            let rows = SnapshotRows::of(&fetched(n)).expect("exact");
            assert_eq!(rows.bids.len(), n);
            if n > 0 {
                assert_eq!(rows.bids[0], (10_001_000_000, 50_000_000));
                assert_eq!(rows.asks[0], (20_001_000_000, 300_000_000));
            }
            let bytes = encode("BTCUSDT", &rows).expect("encodes");
            assert_eq!(decode(Bytes::from(bytes)).expect("decodes"), rows, "{n}");
        }
    }

    #[test]
    fn an_inexact_level_is_refused() {
        let mut f = fetched(2);
        f.snapshot.bids = Levels::Text(vec![("1.000000001".into(), "1".into())]);
        assert!(SnapshotRows::of(&f).is_err());
    }
}
