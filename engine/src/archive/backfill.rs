//! `hotpath backfill trades --symbol S --from TIME --to TIME`: a symbol's historical trades
//! from Binance REST into the archive's layout, so a new deployment can fill a training set.
//!
//! 1. The first trade id at or after `--from`: `/api/v3/aggTrades` by time, one hour window
//!    at a time (Binance allows at most an hour between `startTime` and `endTime`), until an
//!    aggregate is found; its first trade id is where the pages start.
//! 2. `/api/v3/historicalTrades` pages of 1000 by `fromId`, until a trade at or after `--to`,
//!    an empty or short page (the newest trade), each trade parsed exactly (a trade that is
//!    not exact at 10^-8 is refused, counted and left out, never rounded).
//! 3. Each UTC hour's trades go to [`Store::archive`] when the pages pass the hour (or at
//!    `s3.part_rows_max` trades): the ids the hour's parts already hold are skipped, so
//!    running the command again, after a crash or over a range the live writer archived,
//!    writes nothing twice. Before a page, the cursor jumps over the ids the current hour's
//!    parts hold (resuming without fetching them again).
//!
//! Weight: the client's own budget (`DEFAULT_WEIGHT_BUDGET` per minute, Binance's 429 / 418
//! rules in `binance::rest`) refuses a request that would pass it, with the time to wait;
//! the command waits that long and goes on. Transport errors and 5xx answers are retried
//! with backoff, [`ATTEMPTS_MAX`] times in a row at most; then it stops with an error, and
//! running it again resumes from the bucket.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::keys::{Covered, HOUR_US, hour_of};
use super::store::{Store, StoreError};
use super::{TradeRow, rest_row};
use crate::binance::rest::{RestClient, RestError, RestTrade, TRADES_LIMIT_MAX};
use crate::config::RunConfig;

/// Failed requests in a row before the backfill gives up (a later run resumes).
pub const ATTEMPTS_MAX: u32 = 8;
/// Milliseconds in an hour: the widest aggTrades time window.
const HOUR_MS: i64 = HOUR_US / 1000;

/// `hotpath backfill trades`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct TradesArgs {
    /// TOML configuration: its `[s3]` table (bucket, prefix, region, endpoint_url) and the
    /// REST base (`sidecar.rest_endpoint`, else derived from `binance.endpoint`).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// The symbol, upper case.
    #[arg(long)]
    pub symbol: String,
    /// Start (inclusive): `2026-11-29T14:00:00Z`, `2026-11-29`, or milliseconds since the epoch.
    #[arg(long)]
    pub from: String,
    /// End (exclusive), same forms.
    #[arg(long)]
    pub to: String,
}

/// Why a backfill stopped.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// Bad arguments.
    #[error("{0}")]
    Invalid(String),
    /// REST failed [`ATTEMPTS_MAX`] times in a row (or refused the request for good).
    #[error("REST: {0}")]
    Rest(RestError),
    /// S3 failed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// What a backfill did (printed as JSON by the command).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BackfillReport {
    /// The symbol.
    pub symbol: String,
    /// The first trade id at or after `--from`; `None`: no trade in the range.
    pub first_id: Option<i64>,
    /// The last trade id archived or found archived.
    pub last_id: Option<i64>,
    /// `historicalTrades` pages fetched.
    pub pages: u64,
    /// Trades fetched in the range.
    pub fetched: u64,
    /// Trades written.
    pub written: u64,
    /// Trades skipped because a part already held them (fetched, or jumped over).
    pub skipped: u64,
    /// Parts written.
    pub parts: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Trades refused: not exact at 10^-8.
    pub refused: u64,
    /// Requests retried (transport errors, 5xx, waits for the weight budget).
    pub retries: u64,
}

/// Parses `2026-11-29T14:05:00Z` (seconds optional, `Z` or `+00:00`), `2026-11-29`, or
/// milliseconds since the epoch, into milliseconds since the epoch.
pub fn parse_time(text: &str) -> Option<i64> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    let (date, time) = text.split_once('T').unwrap_or((text, "00:00:00Z"));
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time
        .strip_suffix('Z')
        .or_else(|| time.strip_suffix("+00:00"))?;
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (h, min) = (t.next()??, t.next()??);
    let s = t.next().map_or(Some(0), |s| s).unwrap_or(-1);
    let valid = (1..=12).contains(&m)
        && (1..=31).contains(&day)
        && (0..24).contains(&h)
        && (0..60).contains(&min)
        && (0..60).contains(&s)
        && t.next().is_none();
    valid.then(|| (days_from_civil(y, m, day) * 86_400 + h * 3600 + min * 60 + s) * 1000)
}

/// Days since 1970-01-01 of a date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Runs `hotpath backfill trades` with `config` (the REST base and TLS from it, `[s3]` for the
/// bucket).
pub async fn run_cli(
    config: &RunConfig,
    args: &TradesArgs,
) -> Result<BackfillReport, BackfillError> {
    let invalid = BackfillError::Invalid;
    let Some(s3) = &config.s3 else {
        return Err(invalid(
            "[s3] bucket: not set; the backfill writes there".into(),
        ));
    };
    let from_ms = parse_time(&args.from)
        .ok_or_else(|| invalid(format!("--from {:?}: not a time", args.from)))?;
    let to_ms =
        parse_time(&args.to).ok_or_else(|| invalid(format!("--to {:?}: not a time", args.to)))?;
    let base = config.sidecar.rest_base(&config.endpoint);
    let mut rest = RestClient::new(&base, Some(client_tls(config).map_err(invalid)?))
        .map_err(|e| invalid(format!("REST {base}: {e}")))?;
    rest.set_format(config.rest_format);
    let store = Store::new(super::store::client_from_chain(s3).await, s3.clone());
    backfill_trades(&mut rest, &store, &args.symbol, from_ms, to_ms).await
}

fn client_tls(config: &RunConfig) -> Result<Arc<rustls::ClientConfig>, String> {
    match &config.trust_cert {
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| format!("binance.trust_cert: cannot read {}: {e}", path.display()))?;
            crate::tls::client_config_trusting(&pem)
                .map(Arc::new)
                .map_err(|e| format!("binance.trust_cert: {e}"))
        }
        None => crate::tls::default_client_config().map_err(|e| format!("TLS: {e}")),
    }
}

/// Waits out a failed request when it may succeed later; `Err` when it will not (or after
/// [`ATTEMPTS_MAX`] failures in a row).
async fn wait_after(
    e: RestError,
    failures: &mut u32,
    report: &mut BackfillReport,
) -> Result<(), BackfillError> {
    report.retries += 1;
    if let Some(wait) = e.retry_after() {
        // The weight budget or Binance asked to wait: not a failure of ours.
        tokio::time::sleep(wait).await;
        return Ok(());
    }
    let transient = matches!(&e, RestError::Io(_))
        || matches!(&e, RestError::Http { status, .. } if *status >= 500);
    *failures += 1;
    if !transient || *failures >= ATTEMPTS_MAX {
        return Err(BackfillError::Rest(e));
    }
    let mut rng = crate::rng::Rng::new(crate::clock::unix_ms() as u64 ^ u64::from(*failures));
    tokio::time::sleep(crate::backoff::jittered(
        &mut rng,
        Duration::from_millis(100),
        Duration::from_secs(10),
        *failures,
    ))
    .await;
    Ok(())
}

/// The first trade id at or after `from_ms` and before `to_ms`, by aggTrades windows.
async fn first_id(
    rest: &mut RestClient,
    symbol: &str,
    (from_ms, to_ms): (i64, i64),
    report: &mut BackfillReport,
) -> Result<Option<i64>, BackfillError> {
    let mut start = from_ms;
    let mut failures = 0;
    while start < to_ms {
        let end = (start + HOUR_MS - 1).min(to_ms - 1);
        match rest.agg_trades(symbol, start, end, 1).await {
            Ok(aggs) => {
                failures = 0;
                if let Some(a) = aggs.first() {
                    return Ok(Some(a.first_trade_id));
                }
                start = end + 1;
            }
            Err(e) => wait_after(e, &mut failures, report).await?,
        }
    }
    Ok(None)
}

/// One page from `cursor`, retried.
async fn page(
    rest: &mut RestClient,
    symbol: &str,
    cursor: i64,
    report: &mut BackfillReport,
) -> Result<Vec<RestTrade>, BackfillError> {
    let mut failures = 0;
    loop {
        match rest
            .historical_trades(symbol, Some(cursor), TRADES_LIMIT_MAX)
            .await
        {
            Ok(trades) => {
                report.pages += 1;
                return Ok(trades);
            }
            Err(e) => wait_after(e, &mut failures, report).await?,
        }
    }
}

/// Archives `buffer` (one hour's trades at most) and empties it.
async fn flush(
    store: &Store,
    symbol: &str,
    buffer: &mut Vec<TradeRow>,
    report: &mut BackfillReport,
) -> Result<(), BackfillError> {
    if buffer.is_empty() {
        return Ok(());
    }
    let done = store.archive(symbol, buffer).await?;
    report.written += done.written as u64;
    report.skipped += done.skipped as u64;
    report.parts += done.parts as u64;
    report.bytes += done.bytes as u64;
    report.last_id = buffer.last().map(|r| r.trade_id).max(report.last_id);
    buffer.clear();
    Ok(())
}

/// Where the cursor goes when the hour's parts already hold it: past the part.
fn jump(covered: &Covered, mut cursor: i64) -> i64 {
    while let Some(&(_, last)) = covered
        .ranges()
        .iter()
        .find(|r| r.0 <= cursor && cursor <= r.1)
    {
        cursor = last + 1;
    }
    cursor
}

/// Backfills `symbol`'s trades of `[from_ms, to_ms)` into `store` (see the module doc).
pub async fn backfill_trades(
    rest: &mut RestClient,
    store: &Store,
    symbol: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<BackfillReport, BackfillError> {
    if from_ms >= to_ms {
        return Err(BackfillError::Invalid(format!(
            "--from ({from_ms} ms) must be before --to ({to_ms} ms)"
        )));
    }
    let mut report = BackfillReport {
        symbol: symbol.to_string(),
        ..BackfillReport::default()
    };
    let Some(mut cursor) = first_id(rest, symbol, (from_ms, to_ms), &mut report).await? else {
        return Ok(report);
    };
    report.first_id = Some(cursor);
    let (rows_max, to_us) = (store.config().part_rows_max, to_ms.saturating_mul(1000));
    let mut hour = hour_of(from_ms.saturating_mul(1000));
    let mut covered: Option<(i64, Covered)> = None;
    let mut buffer: Vec<TradeRow> = Vec::new();
    loop {
        if covered.as_ref().is_none_or(|(h, _)| *h != hour) {
            covered = Some((hour, store.covered(symbol, hour).await?));
        }
        if let Some((_, c)) = &covered {
            let jumped = jump(c, cursor);
            report.skipped += u64::try_from(jumped - cursor).unwrap_or(0);
            if jumped != cursor {
                report.last_id = Some(jumped - 1).max(report.last_id);
            }
            cursor = jumped;
        }
        let trades = page(rest, symbol, cursor, &mut report).await?;
        let full = trades.len() == TRADES_LIMIT_MAX as usize;
        let mut ended = trades.is_empty();
        for t in &trades {
            cursor = t.id + 1;
            let Ok(row) = rest_row(t) else {
                report.refused += 1;
                continue;
            };
            if row.trade_time_us >= to_us {
                ended = true;
                break;
            }
            report.fetched += 1;
            if hour_of(row.trade_time_us) != hour || buffer.len() >= rows_max {
                flush(store, symbol, &mut buffer, &mut report).await?;
                hour = hour_of(row.trade_time_us);
            }
            buffer.push(row);
        }
        if ended || !full {
            break;
        }
    }
    flush(store, symbol, &mut buffer, &mut report).await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_three_forms_and_nonsense_does_not() {
        assert_eq!(parse_time("2026-11-29T14:05:00Z"), Some(1_795_961_100_000));
        assert_eq!(parse_time("2026-11-29T14:05Z"), Some(1_795_961_100_000));
        assert_eq!(
            parse_time("2026-11-29T14:05:00+00:00"),
            Some(1_795_961_100_000)
        );
        assert_eq!(parse_time("2026-11-29"), Some(1_795_910_400_000));
        assert_eq!(parse_time("1795961100000"), Some(1_795_961_100_000));
        assert_eq!(parse_time("1970-01-01"), Some(0));
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-11-29T25:00Z",
            "2026-11-29T14:05:00",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_cursor_jumps_over_archived_parts() {
        let mut c = Covered::default();
        c.insert(10, 19);
        c.insert(20, 29);
        c.insert(40, 49);
        assert_eq!(jump(&c, 5), 5);
        assert_eq!(jump(&c, 10), 30);
        assert_eq!(jump(&c, 25), 30);
        assert_eq!(jump(&c, 45), 50);
    }
}
