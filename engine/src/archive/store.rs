//! The archive's S3 shell: the client (the AWS SDK with the standard credential chain, like
//! the Kinesis writer's, and `s3.region` / `s3.endpoint_url` / `s3.force_path_style`), whole-object
//! writes, listing an hour's parts, and [`Store::archive`].
//!
//! **Objects are written whole.** A part under `s3.multipart_threshold_bytes` is one
//! PutObject; a bigger one a multipart upload, which S3 makes visible only when
//! CompleteMultipartUpload succeeds (a failed upload is aborted). Either way a reader, or a
//! writer that crashed and restarted, sees the old object or the new one, never half of one.
//! A part's key names its ids, so writing it again writes the same trades.

use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;

use super::TradeRow;
use super::keys::{
    Covered, Dataset, HOUR_US, cut_parts, cut_parts_by, dataset_hour_prefix, dataset_part_key,
    hour_of, hour_prefix, parse_part, part_key, snapshot_key,
};
use super::parquet::{ParquetError, encode};
use super::snapshots::SnapshotRows;
use crate::config::s3::S3Config;
use crate::kline::Candle;

/// Why an S3 operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request failed (the SDK's error with its context).
    #[error("s3: {op} {key}: {reason}")]
    S3 {
        /// The operation (`PutObject`, ...).
        op: &'static str,
        /// The key or prefix.
        key: String,
        /// What the SDK said.
        reason: String,
    },
    /// The part could not be encoded or an object read back is no part.
    #[error("{key}: {source}")]
    Parquet {
        /// The key.
        key: String,
        /// What went wrong.
        source: ParquetError,
    },
}

fn s3_error(op: &'static str, key: &str, e: &dyn std::error::Error) -> StoreError {
    StoreError::S3 {
        op,
        key: key.to_string(),
        reason: DisplayErrorContext(e).to_string(),
    }
}

/// Builds a client from the standard AWS chain with the `[s3]` overrides.
pub async fn client_from_chain(config: &S3Config) -> Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(
        TimeoutConfig::builder()
            .operation_timeout(config.request_timeout)
            .build(),
    );
    if let Some(region) = &config.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(url) = &config.endpoint_url {
        loader = loader.endpoint_url(url.clone());
    }
    let shared = loader.load().await;
    let s3 = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(config.force_path_style)
        .build();
    Client::from_conf(s3)
}

/// What [`Store::archive`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Archived {
    /// Parts written.
    pub parts: usize,
    /// Trades written.
    pub written: usize,
    /// Trades skipped: a part in the bucket already holds them.
    pub skipped: usize,
    /// Bytes written.
    pub bytes: usize,
}

/// The bucket and how to write to it.
#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
    config: S3Config,
}

impl Store {
    /// A store on `client` with the `[s3]` settings.
    pub fn new(client: Client, config: S3Config) -> Store {
        Store { client, config }
    }

    /// The settings.
    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Writes a Parquet file just encoded (or says which key it was for when encoding failed);
    /// returns its size.
    async fn put_encoded(
        &self,
        key: &str,
        encoded: Result<Vec<u8>, ParquetError>,
    ) -> Result<usize, StoreError> {
        let bytes = encoded.map_err(|source| StoreError::Parquet {
            key: key.to_string(),
            source,
        })?;
        let size = bytes.len();
        self.put(key, bytes).await?;
        Ok(size)
    }

    /// Writes `bytes` as the object `key`, whole: one PutObject, or a multipart upload at or
    /// above the threshold, aborted when any step fails.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        if bytes.len() < self.config.multipart_threshold_bytes {
            self.client
                .put_object()
                .bucket(&self.config.bucket)
                .key(key)
                .body(ByteStream::from(bytes))
                .send()
                .await
                .map_err(|e| s3_error("PutObject", key, &e))?;
            return Ok(());
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.config.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error("CreateMultipartUpload", key, &e))?;
        let Some(upload_id) = created.upload_id() else {
            return Err(StoreError::S3 {
                op: "CreateMultipartUpload",
                key: key.to_string(),
                reason: "no upload id in the answer".into(),
            });
        };
        let outcome = self.upload_parts(key, upload_id, Bytes::from(bytes)).await;
        if outcome.is_err() {
            // Best effort: an upload left open is invisible and lifecycle rules reap it.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.config.bucket)
                .key(key)
                .upload_id(upload_id)
                .send()
                .await;
        }
        outcome
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        bytes: Bytes,
    ) -> Result<(), StoreError> {
        let size = self.config.multipart_part_bytes;
        let mut parts = Vec::new();
        for (i, start) in (0..bytes.len()).step_by(size).enumerate() {
            let number = i32::try_from(i + 1).unwrap_or(i32::MAX);
            let chunk = bytes.slice(start..(start + size).min(bytes.len()));
            let done = self
                .client
                .upload_part()
                .bucket(&self.config.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(chunk))
                .send()
                .await
                .map_err(|e| s3_error("UploadPart", key, &e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(done.e_tag().map(str::to_string))
                    .build(),
            );
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.config.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| s3_error("CompleteMultipartUpload", key, &e))?;
        Ok(())
    }

    /// Every key under `prefix`, in S3's (lexicographic) order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.config.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| s3_error("ListObjectsV2", prefix, &e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => return Ok(keys),
            }
        }
    }

    /// The object `key`'s bytes.
    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let object = self
            .client
            .get_object()
            .bucket(&self.config.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error("GetObject", key, &e))?;
        let body = object
            .body
            .collect()
            .await
            .map_err(|e| s3_error("GetObject", key, &e))?;
        Ok(body.into_bytes())
    }

    /// The ids the parts of `symbol`'s `hour` claim.
    pub async fn covered(&self, symbol: &str, hour: i64) -> Result<Covered, StoreError> {
        self.claimed(&hour_prefix(&self.config.prefix, symbol, hour))
            .await
    }

    /// The ranges the parts under `prefix` claim (by their names' first and last).
    async fn claimed(&self, prefix: &str) -> Result<Covered, StoreError> {
        let mut covered = Covered::default();
        for key in self.list(prefix).await? {
            if let Some((first, last)) = parse_part(&key) {
                covered.insert(first, last);
            }
        }
        Ok(covered)
    }

    /// The ranges (of open times) the klines parts of `symbol`'s `hour` claim.
    pub async fn covered_klines(
        &self,
        symbol: &str,
        interval: &str,
        hour: i64,
    ) -> Result<Covered, StoreError> {
        let dataset = Dataset::Klines(interval);
        self.claimed(&dataset_hour_prefix(
            &self.config.prefix,
            dataset,
            symbol,
            hour,
        ))
        .await
    }

    /// Archives `candles` of `symbol` (increasing open times) as [`Store::archive`] does
    /// trades: per UTC hour of the open time, without the open times the hour's parts claim,
    /// in parts named by their first and last open time (ms). `written` and `skipped` count
    /// candles.
    pub async fn archive_klines(
        &self,
        symbol: &str,
        interval: &str,
        candles: &[Candle],
    ) -> Result<Archived, StoreError> {
        let mut done = Archived::default();
        let mut rest = candles;
        let hour_ms = HOUR_US / 1000;
        while let Some(first) = rest.first() {
            let hour = first.open_ms.div_euclid(hour_ms);
            let n = rest
                .iter()
                .position(|c| c.open_ms.div_euclid(hour_ms) != hour)
                .unwrap_or(rest.len());
            let (this, after) = rest.split_at(n);
            rest = after;
            let covered = self.covered_klines(symbol, interval, hour).await?;
            let rows_max = self.config.part_rows_max;
            let step = this[0].close_ms - this[0].open_ms + 1;
            let (parts, skipped) = cut_parts_by(this, (|c| c.open_ms, step), &covered, rows_max);
            done.skipped += skipped;
            for part in parts {
                let ids = (part[0].open_ms, part[part.len() - 1].open_ms);
                let dataset = Dataset::Klines(interval);
                let key = dataset_part_key(&self.config.prefix, dataset, symbol, hour, ids);
                let encoded = super::klines::encode(symbol, interval, &part);
                done.bytes += self.put_encoded(&key, encoded).await?;
                done.parts += 1;
                done.written += part.len();
            }
        }
        Ok(done)
    }

    /// Writes one depth snapshot of `symbol` as its part (named by its `lastUpdateId`, in the
    /// hour of its fetch time; writing it again writes the same object). Returns its key.
    pub async fn put_snapshot(
        &self,
        symbol: &str,
        rows: &SnapshotRows,
    ) -> Result<String, StoreError> {
        let hour = hour_of(rows.fetch_time_us);
        let key = snapshot_key(&self.config.prefix, symbol, hour, rows.last_update_id);
        self.put_encoded(&key, super::snapshots::encode(symbol, rows))
            .await?;
        Ok(key)
    }

    /// Archives `rows` of `symbol` (increasing ids): per UTC hour, lists the hour's parts,
    /// cuts the trades no part holds into parts of at most `s3.part_rows_max` and writes each
    /// whole. Safe to call again with the same trades after a failure: what landed is skipped.
    pub async fn archive(&self, symbol: &str, rows: &[TradeRow]) -> Result<Archived, StoreError> {
        let mut done = Archived::default();
        let mut rest = rows;
        while let Some(first) = rest.first() {
            let hour = hour_of(first.trade_time_us);
            let n = rest
                .iter()
                .position(|r| hour_of(r.trade_time_us) != hour)
                .unwrap_or(rest.len());
            let (this, after) = rest.split_at(n);
            rest = after;
            let covered = self.covered(symbol, hour).await?;
            let (parts, skipped) = cut_parts(this, &covered, self.config.part_rows_max);
            done.skipped += skipped;
            for part in parts {
                let (f, l) = (part[0].trade_id, part[part.len() - 1].trade_id);
                let key = part_key(&self.config.prefix, symbol, hour, f, l);
                done.bytes += self.put_encoded(&key, encode(symbol, &part)).await?;
                done.parts += 1;
                done.written += part.len();
            }
        }
        Ok(done)
    }
}
