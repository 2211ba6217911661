//! `hotpath backfill klines --symbol S --interval 1m --from TIME --to TIME`: every candle
//! opening in `[from, to]` and closed (the one still open, which Binance answers partial, is
//! never written), fetched with `GET /api/v3/klines` in pages of 1000 (weight 2
//! each, through the REST client's weight budget: a page that would pass it waits for the
//! next minute, a 429 or 418 for its `Retry-After`), checked for holes and duplicates, and
//! written to the Kinesis klines stream (one record per candle, Binance's kline event JSON with
//! `x` true and `"missing_trades":0`, partition key the symbol, oldest first) and to the Redis
//! `kl:{S}:<interval>` hash (`closed`: the newest candle fetched, only if Redis holds none
//! newer, nor the same one whole; `closed_missing` 0). So a live candle published with trades
//! missing (`crate::kline::Candle::missing_trades`) is published again whole.
//!
//! The pages: `startTime` = `from`, then the open time after the last candle of the page
//! before, until a page ends past `to` or comes back short (no more candles yet). A candle
//! whose open time is not the one after the previous is a hole (or a duplicate when it is at
//! or before it): counted in the report, never written twice.
//!
//! `--s3` (with `--config`, whose `[s3]` table names the bucket, as `hotpath backfill
//! trades`): the candles go to the S3 bronze layer too, in the live writer's layout
//! (`klines/interval=I/symbol=S/date=D/hour=H/part-<first open>-<last open>.parquet`, see
//! `crate::archive::klines`). This path pages on its own and is resumable: before each page
//! the start jumps over the open times the hour's parts already hold, each page is written
//! when it comes (so a crash loses at most one page), and [`Store::archive_klines`] skips any
//! candle a part holds. A candle not closed yet (its close time not past) is never archived.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::archive::store::Store;
use crate::binance::rest::{RestClient, RestKline};
use crate::clock::unix_ms;
use crate::config::KeyLayout;
use crate::kline::{Candle, Interval};
use crate::sink::dlq::{DeadRecord, Outcome, Target};

/// Candles per page: `GET /api/v3/klines`' maximum `limit`.
pub const PAGE_LIMIT: u32 = 1000;

/// REST attempts per page before the backfill gives up (waits for the weight budget, 429s
/// and transport errors each count one).
const PAGE_ATTEMPTS: u32 = 20;

/// Rounds without progress before a Kinesis record is given up (as `hotpath dlq resend`).
const KINESIS_ATTEMPTS: u32 = 10;

/// `hotpath backfill klines` flags.
#[derive(Clone, Debug, clap::Args)]
pub struct KlinesArgs {
    /// The symbol, upper case (BTCUSDT).
    #[arg(long)]
    pub symbol: String,
    /// The kline interval: 1s, 1m, 3m, 5m, 15m, 30m, 1h, 2h, 4h, 6h, 8h, 12h, 1d, 3d, 1w.
    #[arg(long, default_value = "1m")]
    pub interval: String,
    /// First open time: Unix milliseconds or UTC `YYYY-MM-DD[THH:MM[:SS]][Z]`.
    #[arg(long)]
    pub from: String,
    /// Last open time (inclusive), as --from.
    #[arg(long)]
    pub to: String,
    /// The REST API (https://api.binance.com, or a simulator's http://host:port).
    #[arg(long, default_value = "https://api.binance.com")]
    pub rest: String,
    /// Trust this PEM certificate for https:// (a simulator's self-signed one).
    #[arg(long)]
    pub trust_cert: Option<std::path::PathBuf>,
    /// Request weight per minute this backfill may use (Binance allows 6000 per IP, shared
    /// with a running engine).
    #[arg(long, default_value_t = 1200)]
    pub weight_budget: u32,
    /// Write the candles to Kinesis at this endpoint (an emulator's http://host:port), or
    /// `aws`. Credentials and region come from the standard AWS chain.
    #[arg(long)]
    pub kinesis_endpoint: Option<String>,
    /// AWS region (default: the chain's).
    #[arg(long)]
    pub region: Option<String>,
    /// The Kinesis klines stream (`kinesis.stream_kline`).
    #[arg(long, default_value = "market-kline")]
    pub stream: String,
    /// Create the stream when missing (emulators, dev accounts).
    #[arg(long)]
    pub create_stream: bool,
    /// Write the newest candle to this Redis (redis://host:port/db) as `kl:{S}:<interval>`'s
    /// `closed` field.
    #[arg(long)]
    pub redis: Option<String>,
    /// The Redis key layout (`redis.keys`): `hash-tag` (`kl:{BTCUSDT}:1m`) or `plain`
    /// (`kl:BTCUSDT:1m`).
    #[arg(long, default_value = "hash-tag")]
    pub keys: String,
    /// Write the candles to the S3 bronze layer of `--config`'s `[s3]` table (resumable).
    #[arg(long, requires = "config")]
    pub s3: bool,
    /// TOML configuration whose `[s3]` table (bucket, prefix, region, endpoint_url) `--s3`
    /// writes to, as `hotpath backfill trades --config`.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// The `[s3]` settings `--s3` writes with (filled from `--config` by the command).
    #[arg(skip)]
    pub s3_config: Option<crate::config::s3::S3Config>,
}

/// What a backfill did (printed as one JSON line).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Candles fetched in `[from, to]` (each once).
    pub candles: u64,
    /// REST pages fetched.
    pub pages: u64,
    /// Open time of the first and the last candle, Unix ms.
    pub first_open_ms: Option<i64>,
    /// Last one.
    pub last_open_ms: Option<i64>,
    /// Missing intervals between two candles fetched.
    pub holes: u64,
    /// Candles at or before one fetched already (dropped).
    pub duplicates: u64,
    /// Records Kinesis acknowledged.
    pub kinesis_written: u64,
    /// Records Kinesis did not take after the attempts.
    pub kinesis_failed: u64,
    /// Whether the Redis hash now holds the newest candle fetched (false: Redis held a newer
    /// one, or no Redis was given).
    pub redis_written: bool,
    /// `--s3`: candles written to the bucket.
    pub s3_written: u64,
    /// `--s3`: candles a part in the bucket already held (skipped or jumped over).
    pub s3_skipped: u64,
    /// `--s3`: parts written.
    pub s3_parts: u64,
    /// `--s3`: REST pages fetched.
    pub s3_pages: u64,
}

impl Report {
    /// Whether everything asked for was written (holes are Binance's, not failures).
    pub fn ok(&self) -> bool {
        self.kinesis_failed == 0
    }
}

/// Runs the backfill `args` describe, with a Kinesis client from the standard AWS chain.
pub async fn run(args: &KlinesArgs) -> anyhow::Result<Report> {
    run_with(args, None).await
}

/// Runs the backfill `args` describe; `kinesis`: a ready client (else one from the AWS
/// chain, when `--kinesis-endpoint` is given).
pub async fn run_with(
    args: &KlinesArgs,
    kinesis: Option<aws_sdk_kinesis::Client>,
) -> anyhow::Result<Report> {
    let interval = Interval::of(&args.interval)
        .with_context(|| format!("--interval {:?}: not a kline interval", args.interval))?;
    let from = parse_time(&args.from).with_context(|| format!("--from {:?}", args.from))?;
    let to = parse_time(&args.to).with_context(|| format!("--to {:?}", args.to))?;
    anyhow::ensure!(from <= to, "--from is after --to");
    anyhow::ensure!(
        args.kinesis_endpoint.is_some() || args.redis.is_some() || args.s3,
        "nothing to write to: give --kinesis-endpoint, --redis and/or --s3"
    );
    let mut client = rest_client(args)?;
    let mut s3_report = Report::default();
    if args.s3 {
        let settings = args
            .s3_config
            .clone()
            .context("--s3: the configuration has no [s3] bucket")?;
        let store = Store::new(
            crate::archive::store::client_from_chain(&settings).await,
            settings,
        );
        s3_report = to_s3(&mut client, &store, &args.symbol, interval, (from, to)).await?;
        if args.kinesis_endpoint.is_none() && args.redis.is_none() {
            return Ok(s3_report);
        }
    }
    let (candles, mut report) = fetch(&mut client, &args.symbol, interval, (from, to)).await?;
    (report.s3_written, report.s3_skipped) = (s3_report.s3_written, s3_report.s3_skipped);
    (report.s3_parts, report.s3_pages) = (s3_report.s3_parts, s3_report.s3_pages);
    if let Some(endpoint) = &args.kinesis_endpoint {
        let client = match kinesis {
            Some(client) => client,
            None => kinesis_client(args, endpoint).await,
        };
        let (written, failed) = to_kinesis(args, &client, interval, &candles).await?;
        (report.kinesis_written, report.kinesis_failed) = (written, failed);
    }
    if let (Some(url), Some(newest)) = (&args.redis, candles.last()) {
        let layout = match args.keys.as_str() {
            "hash-tag" => KeyLayout::HashTag,
            "plain" => KeyLayout::Plain,
            other => anyhow::bail!("--keys {other:?}: \"hash-tag\" or \"plain\""),
        };
        report.redis_written = to_redis(url, layout, &args.symbol, interval, newest).await?;
    }
    Ok(report)
}

fn rest_client(args: &KlinesArgs) -> anyhow::Result<RestClient> {
    let tls = match &args.trust_cert {
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("--trust-cert {}", path.display()))?;
            Some(std::sync::Arc::new(crate::tls::client_config_trusting(
                &pem,
            )?))
        }
        None => None,
    };
    let mut client = RestClient::new(args.rest.trim_end_matches('/'), tls)?;
    client.set_weight_budget(args.weight_budget);
    Ok(client)
}

/// Every candle of `symbol` opening in `[from, to]` and closed by now, oldest first, each
/// once; the report's counts filled.
pub async fn fetch(
    client: &mut RestClient,
    symbol: &str,
    interval: Interval,
    (from, to): (i64, i64),
) -> anyhow::Result<(Vec<Candle>, Report)> {
    let mut report = Report::default();
    let mut candles: Vec<Candle> = Vec::new();
    let mut start = from;
    while start <= to {
        let page = page(client, symbol, interval, start).await?;
        report.pages += 1;
        let short = page.len() < PAGE_LIMIT as usize;
        // Binance answers the candle still open too (partial): never written as closed.
        let now = unix_ms();
        let wanted = |k: &&RestKline| k.open_ms >= from && k.open_ms <= to && k.close_ms < now;
        for k in page.iter().filter(wanted) {
            let candle = Candle::from_rest(k)
                .with_context(|| format!("kline at {} is not exact decimals", k.open_ms))?;
            match candles.last() {
                Some(last) if candle.open_ms <= last.open_ms => {
                    report.duplicates += 1;
                    continue;
                }
                Some(last) if candle.open_ms > last.open_ms + interval.ms => {
                    report.holes += ((candle.open_ms - last.open_ms) / interval.ms - 1) as u64;
                }
                _ => {}
            }
            candles.push(candle);
        }
        match page.last() {
            Some(last) if !short => start = start.max(last.open_ms + interval.ms),
            _ => break,
        }
    }
    report.candles = candles.len() as u64;
    report.first_open_ms = candles.first().map(|c| c.open_ms);
    report.last_open_ms = candles.last().map(|c| c.open_ms);
    Ok((candles, report))
}

/// `--s3`: the candles opening in `[from, to]` and closed by now into `store`, page by page,
/// jumping over what the bucket holds (see the module doc).
pub async fn to_s3(
    client: &mut RestClient,
    store: &Store,
    symbol: &str,
    interval: Interval,
    (from, to): (i64, i64),
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let hour_ms = crate::archive::keys::HOUR_US / 1000;
    let mut start = interval.open_of(from).max(from);
    while start <= to {
        let hour = start.div_euclid(hour_ms);
        let covered = store.covered_klines(symbol, interval.name, hour).await?;
        let mut jumped = start;
        while let Some(&(_, last)) = covered
            .ranges()
            .iter()
            .find(|r| r.0 <= jumped && jumped <= r.1)
        {
            jumped = last + interval.ms;
        }
        if jumped != start {
            report.s3_skipped += ((jumped - start) / interval.ms) as u64;
            start = jumped;
            continue;
        }
        let page = page(client, symbol, interval, start).await?;
        report.s3_pages += 1;
        let now = unix_ms();
        let mut candles = Vec::with_capacity(page.len());
        for k in page
            .iter()
            .filter(|k| k.open_ms >= start && k.open_ms <= to && k.close_ms < now)
        {
            let candle = Candle::from_rest(k)
                .with_context(|| format!("kline at {} is not exact decimals", k.open_ms))?;
            if candles
                .last()
                .is_none_or(|l: &Candle| candle.open_ms > l.open_ms)
            {
                candles.push(candle);
            }
        }
        let done = store
            .archive_klines(symbol, interval.name, &candles)
            .await?;
        report.s3_written += done.written as u64;
        report.s3_skipped += done.skipped as u64;
        report.s3_parts += done.parts as u64;
        report.candles += candles.len() as u64;
        report.first_open_ms = report.first_open_ms.or(candles.first().map(|c| c.open_ms));
        report.last_open_ms = candles.last().map(|c| c.open_ms).or(report.last_open_ms);
        match page.last() {
            Some(last) if page.len() == PAGE_LIMIT as usize && last.close_ms < now => {
                start = start.max(last.open_ms + interval.ms);
            }
            _ => break,
        }
    }
    Ok(report)
}

/// One page, waiting out the weight budget and Binance's `Retry-After`, retrying transport
/// failures with backoff.
async fn page(
    client: &mut RestClient,
    symbol: &str,
    interval: Interval,
    start: i64,
) -> anyhow::Result<Vec<RestKline>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match client
            .klines(symbol, interval.name, start, PAGE_LIMIT)
            .await
        {
            Ok(page) => return Ok(page),
            Err(e) if attempt < PAGE_ATTEMPTS => {
                let wait = e
                    .retry_after()
                    .unwrap_or_else(|| Duration::from_millis(200 << attempt.min(6)));
                tracing::warn!("backfill: klines from {start}: {e}; again in {wait:?}");
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("klines from {start}, {attempt} attempts"));
            }
        }
    }
}

/// A client from the standard AWS chain for `endpoint` (`aws`: AWS itself).
async fn kinesis_client(args: &KlinesArgs, endpoint: &str) -> aws_sdk_kinesis::Client {
    let config = crate::config::KinesisConfig {
        region: args.region.clone(),
        endpoint_url: (endpoint != "aws").then(|| endpoint.to_string()),
        ..crate::config::KinesisConfig::default()
    };
    crate::sink::kinesis::writer::client_from_chain(&config).await
}

/// Sends the candles to the klines stream, in order; returns (acknowledged, failed).
async fn to_kinesis(
    args: &KlinesArgs,
    client: &aws_sdk_kinesis::Client,
    interval: Interval,
    candles: &[Candle],
) -> anyhow::Result<(u64, u64)> {
    crate::sink::kinesis::writer::check_streams(client, &[&args.stream], args.create_stream)
        .await?;
    let now = unix_ms();
    let records: Vec<DeadRecord> = candles
        .iter()
        .map(|c| DeadRecord {
            target: Target::Kinesis {
                stream: args.stream.clone(),
                partition_key: args.symbol.clone(),
                data: c
                    .record_json(&args.symbol, interval.name, c.close_ms + 1)
                    .into_bytes(),
            },
            attempts: 0,
            first_attempt_ms: 0,
            dead_at_ms: now,
            outcome: Outcome::Failed,
            error: String::new(),
        })
        .collect();
    let started = Instant::now();
    let (sent, failed) =
        crate::sink::kinesis::resend::resend(client, records, KINESIS_ATTEMPTS).await;
    if let Some(f) = failed.first() {
        tracing::error!(
            "backfill: {} klines not written to {}: {}",
            failed.len(),
            args.stream,
            f.error
        );
    }
    tracing::info!(
        "backfill: {sent} klines to {} in {:?}, {} failed",
        args.stream,
        started.elapsed(),
        failed.len()
    );
    Ok((sent as u64, failed.len() as u64))
}

/// Sets `kl:{S}:<interval>`'s `closed` to `candle` (and `closed_missing` to 0: a REST candle
/// is whole) unless the hash holds a newer closed one, or the same one already whole; returns
/// whether it was set. A live candle marked with missing trades is so replaced by Binance's.
async fn to_redis(
    url: &str,
    layout: KeyLayout,
    symbol: &str,
    interval: Interval,
    candle: &Candle,
) -> anyhow::Result<bool> {
    // The closed field's first element is its open time: compare, then set, in one script.
    const SCRIPT: &str = r"
local old = redis.call('HGET', KEYS[1], 'closed')
if old then
  local open = tonumber(string.match(old, '^%[(%-?%d+),'))
  if open and open > tonumber(ARGV[1]) then return 0 end
  local missing = tonumber(redis.call('HGET', KEYS[1], 'closed_missing')) or 0
  if open and open == tonumber(ARGV[1]) and missing == 0 then return 0 end
end
redis.call('HSET', KEYS[1], 'closed', ARGV[2], 'closed_missing', '0')
return 1";
    let client = redis::Client::open(url).with_context(|| format!("--redis {url:?}"))?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .context("cannot connect to Redis")?;
    let key = crate::sink::redis::keys::kline(layout, symbol, interval.name);
    let set: i64 = redis::cmd("EVAL")
        .arg(SCRIPT)
        .arg(1)
        .arg(&key)
        .arg(candle.open_ms)
        .arg(candle.rest_json())
        .query_async(&mut conn)
        .await
        .with_context(|| format!("HSET {key}"))?;
    Ok(set == 1)
}

/// Unix milliseconds, or UTC `YYYY-MM-DD[THH:MM[:SS]][Z]` (a space for `T` too).
pub fn parse_time(text: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let text = text.trim_end_matches('Z');
    let (date, time) = text.split_once(['T', ' ']).unwrap_or((text, "00:00"));
    let number = |s: &str| s.parse::<i64>().context("not a number");
    let date: Vec<&str> = date.split('-').collect();
    let time: Vec<&str> = time.split(':').collect();
    anyhow::ensure!(
        date.len() == 3 && (2..=3).contains(&time.len()),
        "expected Unix ms or YYYY-MM-DD[THH:MM[:SS]][Z]"
    );
    let (y, m, d) = (number(date[0])?, number(date[1])?, number(date[2])?);
    let (hh, mm) = (number(time[0])?, number(time[1])?);
    let ss = time.get(2).map_or(Ok(0), |s| number(s))?;
    anyhow::ensure!(
        (1..=12).contains(&m) && (1..=31).contains(&d) && hh < 24 && mm < 60 && ss < 61,
        "out of range"
    );
    Ok(((days_from_civil(y, m, d) * 24 + hh) * 60 + mm) * 60_000 + ss * 1000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_unix_ms_or_utc_dates() {
        assert_eq!(parse_time("1700000000000").expect("ms"), 1_700_000_000_000);
        assert_eq!(parse_time("1970-01-01").expect("date"), 0);
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z").expect("time"),
            1_700_000_000_000
        );
        assert_eq!(
            parse_time("2000-03-01 00:01").expect("time"),
            951_868_860_000
        );
        for bad in ["2023-13-01", "yesterday", "2023-01-01T25:00", "2023-01"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
