//! The archive's keys and what an hour's parts cover, pure.
//!
//! A part of symbol `S`'s trades of one UTC hour is the object
//! `{prefix}/binance/trades/symbol=S/date=YYYY-MM-DD/hour=HH/part-F-L.parquet`, where `F` and
//! `L` are its first and last trade id (decimal, no padding). The parts of an hour never
//! overlap: a part claims every id from `F` to `L`, and a writer skips the ids an existing
//! part claims ([`Covered`]) and cuts its own parts around them ([`cut_parts`]). A part holds
//! every id it claims: a run of trades with ids missing (given up unrepaired, or refused as
//! inexact) is cut at the hole, so a later writer (the backfill, a restart) can still fill it.
//!
//! The other datasets share the layout ([`Dataset`]): klines under
//! `{prefix}/binance/klines/interval=I/symbol=S/...`, their parts named by the first and last
//! candle's open time (Unix ms) and cut the same way; depth snapshots under
//! `{prefix}/binance/depth_snapshots/symbol=S/...`, one part per snapshot named by its
//! `lastUpdateId` ([`snapshot_key`]).

use super::TradeRow;

/// Microseconds in an hour.
pub const HOUR_US: i64 = 3_600_000_000;

/// The UTC hour (hours since the epoch) of a time in microseconds since the epoch.
pub fn hour_of(time_us: i64) -> i64 {
    time_us.div_euclid(HOUR_US)
}

/// `(year, month, day)` of `days` since 1970-01-01 (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// What a part holds: its path segment(s) between `{prefix}/binance/` and `symbol=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dataset<'a> {
    /// Trades: `trades`.
    Trades,
    /// Candles of one interval (`1m`): `klines/interval=1m`.
    Klines(&'a str),
    /// Depth snapshots: `depth_snapshots`.
    DepthSnapshots,
}

impl std::fmt::Display for Dataset<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dataset::Trades => f.write_str("trades"),
            Dataset::Klines(interval) => write!(f, "klines/interval={interval}"),
            Dataset::DepthSnapshots => f.write_str("depth_snapshots"),
        }
    }
}

/// The key prefix of one symbol's parts of `dataset` of one hour, ending in `/`.
pub fn dataset_hour_prefix(prefix: &str, dataset: Dataset<'_>, symbol: &str, hour: i64) -> String {
    let (y, m, d) = civil_from_days(hour.div_euclid(24));
    let h = hour.rem_euclid(24);
    format!("{prefix}/binance/{dataset}/symbol={symbol}/date={y:04}-{m:02}-{d:02}/hour={h:02}/")
}

/// The key prefix of one symbol's trades of one hour, ending in `/`.
pub fn hour_prefix(prefix: &str, symbol: &str, hour: i64) -> String {
    dataset_hour_prefix(prefix, Dataset::Trades, symbol, hour)
}

/// The key of the part holding trades `first..=last` of `symbol` in `hour`.
pub fn part_key(prefix: &str, symbol: &str, hour: i64, first: i64, last: i64) -> String {
    dataset_part_key(prefix, Dataset::Trades, symbol, hour, (first, last))
}

/// The key of the part of `dataset` holding `first..=last` (ids, or open times) of `symbol`
/// in `hour`.
pub fn dataset_part_key(
    prefix: &str,
    dataset: Dataset<'_>,
    symbol: &str,
    hour: i64,
    (first, last): (i64, i64),
) -> String {
    format!(
        "{}part-{first}-{last}.parquet",
        dataset_hour_prefix(prefix, dataset, symbol, hour)
    )
}

/// The key of a depth snapshot of `symbol` fetched in `hour` with `last_update_id`.
pub fn snapshot_key(prefix: &str, symbol: &str, hour: i64, last_update_id: i64) -> String {
    format!(
        "{}part-{last_update_id}.parquet",
        dataset_hour_prefix(prefix, Dataset::DepthSnapshots, symbol, hour)
    )
}

/// The first and last id of a part's key (or file name); `None` for anything else.
pub fn parse_part(key: &str) -> Option<(i64, i64)> {
    let name = key.rsplit('/').next()?;
    let ids = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let (first, last) = ids.split_once('-')?;
    let (first, last) = (first.parse().ok()?, last.parse().ok()?);
    (first <= last).then_some((first, last))
}

/// The id ranges an hour's parts claim, sorted by first id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Covered {
    ranges: Vec<(i64, i64)>,
}

impl Covered {
    /// Adds a part's range.
    pub fn insert(&mut self, first: i64, last: i64) {
        let at = self.ranges.partition_point(|r| r.0 < first);
        self.ranges.insert(at, (first, last));
    }

    /// Whether a part claims `id`.
    pub fn contains(&self, id: i64) -> bool {
        let at = self.ranges.partition_point(|r| r.0 <= id);
        self.ranges[..at].iter().any(|r| r.1 >= id)
    }

    /// The highest id claimed, if any.
    pub fn last(&self) -> Option<i64> {
        self.ranges.iter().map(|r| r.1).max()
    }

    /// The ranges, sorted by first id.
    pub fn ranges(&self) -> &[(i64, i64)] {
        &self.ranges
    }
}

/// Cuts one hour's trades (increasing ids) into parts: the trades no existing part claims, at
/// most `rows_max` per part, never a part across an existing part's range (so parts never
/// overlap). Returns the parts and how many trades were skipped as already archived.
pub fn cut_parts(
    rows: &[TradeRow],
    covered: &Covered,
    rows_max: usize,
) -> (Vec<Vec<TradeRow>>, usize) {
    cut_parts_by(rows, (|r| r.trade_id, 1), covered, rows_max)
}

/// [`cut_parts`] of any rows with increasing keys (`key`: a trade's id, a candle's open time),
/// `step` apart when none is missing (1 for trade ids, the interval for candles): a part never
/// spans a missing key, so its name never claims a row it lacks.
pub fn cut_parts_by<T: Clone>(
    rows: &[T],
    (key, step): (impl Fn(&T) -> i64, i64),
    covered: &Covered,
    rows_max: usize,
) -> (Vec<Vec<T>>, usize) {
    let mut parts = Vec::new();
    let mut part: Vec<T> = Vec::new();
    let mut skipped = 0;
    for row in rows {
        let id = key(row);
        let claimed = covered.contains(id);
        // Keys missing between the part's last row and this one (an existing part's range, or
        // rows given up) cut the part: its name claims every key from its first to its last.
        let hole = part
            .last()
            .is_some_and(|p| id != key(p).saturating_add(step));
        if (claimed || hole || part.len() >= rows_max) && !part.is_empty() {
            parts.push(std::mem::take(&mut part));
        }
        if claimed {
            skipped += 1;
        } else {
            part.push(row.clone());
        }
    }
    if !part.is_empty() {
        parts.push(part);
    }
    (parts, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(ids: impl IntoIterator<Item = i64>) -> Vec<TradeRow> {
        ids.into_iter()
            .map(|trade_id| TradeRow {
                trade_id,
                price: 1,
                qty: 1,
                trade_time_us: 0,
                event_time_us: 0,
                is_buyer_maker: false,
            })
            .collect()
    }

    fn ids(part: &[TradeRow]) -> (i64, i64) {
        (part[0].trade_id, part[part.len() - 1].trade_id)
    }

    #[test]
    fn keys_are_hive_partitions_by_utc_hour() {
        // 2026-11-29T14:05:00Z.
        let t_us = 1_795_961_100_000_000;
        let hour = hour_of(t_us);
        assert_eq!(
            part_key("bronze", "BTCUSDT", hour, 10, 12),
            "bronze/binance/trades/symbol=BTCUSDT/date=2026-11-29/hour=14/part-10-12.parquet"
        );
        assert_eq!(
            hour_prefix("a/b", "ETHUSDT", 0),
            "a/b/binance/trades/symbol=ETHUSDT/date=1970-01-01/hour=00/"
        );
        assert_eq!(
            dataset_part_key("bronze", Dataset::Klines("1m"), "BTCUSDT", hour, (1, 2)),
            "bronze/binance/klines/interval=1m/symbol=BTCUSDT/date=2026-11-29/hour=14/\
             part-1-2.parquet"
        );
        assert_eq!(
            snapshot_key("bronze", "BTCUSDT", hour, 777),
            "bronze/binance/depth_snapshots/symbol=BTCUSDT/date=2026-11-29/hour=14/\
             part-777.parquet"
        );
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(hour_of(-1), -1);
    }

    #[test]
    fn part_names_parse_back_and_others_do_not() {
        let key = part_key("bronze", "BTCUSDT", 7, 100, 250);
        assert_eq!(parse_part(&key), Some((100, 250)));
        for other in [
            "x/part-1.parquet",
            "x/part-2-1.parquet",
            "x/part-a-b.parquet",
            "x/part-1-2.csv",
            "x/_SUCCESS",
        ] {
            assert_eq!(parse_part(other), None, "{other}");
        }
    }

    #[test]
    fn covered_ranges_answer_membership() {
        let mut c = Covered::default();
        c.insert(200, 300);
        c.insert(1, 100);
        assert!(c.contains(1) && c.contains(100) && c.contains(250));
        assert!(!c.contains(0) && !c.contains(150) && !c.contains(301));
        assert_eq!(c.last(), Some(300));
        assert_eq!(c.ranges(), &[(1, 100), (200, 300)]);
    }

    #[test]
    fn parts_skip_what_is_archived_and_never_straddle_a_part() {
        let mut c = Covered::default();
        c.insert(10, 19);
        c.insert(30, 30);
        // Ids 1..=40 with 25..=29 missing (not traded here).
        let all: Vec<TradeRow> = rows((1..=24).chain(31..=40));
        let (parts, skipped) = cut_parts(&all, &c, 1000);
        let got: Vec<(i64, i64)> = parts.iter().map(|p| ids(p)).collect();
        assert_eq!(got, vec![(1, 9), (20, 24), (31, 40)]);
        assert_eq!(skipped, 10);
        let (parts, _) = cut_parts(&rows(1..=10), &Covered::default(), 4);
        let got: Vec<(i64, i64)> = parts.iter().map(|p| ids(p)).collect();
        assert_eq!(got, vec![(1, 4), (5, 8), (9, 10)]);
        let (parts, skipped) = cut_parts(&rows(10..=19), &c, 4);
        assert!(parts.is_empty());
        assert_eq!(skipped, 10);
    }

    #[test]
    fn a_part_never_claims_ids_missing_from_its_trades() {
        // 11..=20 were given up (never arrived): no part may name them.
        let holed: Vec<TradeRow> = rows((1..=10).chain(21..=30));
        let (parts, skipped) = cut_parts(&holed, &Covered::default(), 1000);
        let got: Vec<(i64, i64)> = parts.iter().map(|p| ids(p)).collect();
        assert_eq!(got, vec![(1, 10), (21, 30)]);
        assert_eq!(skipped, 0);
        // Candles a minute apart, the one at 180000 missing (incomplete, not archived).
        let opens = [0, 60_000, 120_000, 240_000];
        let (parts, _) = cut_parts_by(&opens, (|o: &i64| *o, 60_000), &Covered::default(), 10);
        assert_eq!(parts, vec![vec![0, 60_000, 120_000], vec![240_000]]);
    }
}
