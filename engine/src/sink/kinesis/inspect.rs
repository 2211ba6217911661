//! `hotpath kinesis count STREAM...`: reads every record of a stream (all shards, from
//! TRIM_HORIZON until caught up) and counts Kinesis records, user records (KPL aggregates
//! de-aggregated) and bytes, and the trades inside SBE trade frames and Avro `MarketData`
//! records (`kinesis.payload = "avro"`): a check of what landed.

use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::DisplayErrorContext;
use aws_sdk_kinesis::types::ShardIteratorType;
use serde::Serialize;

use super::aggregate::deaggregate;

/// What a stream holds.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct StreamCount {
    /// The stream.
    pub stream: String,
    /// Shards read.
    pub shards: usize,
    /// Kinesis records.
    pub records: u64,
    /// User records (an aggregate counts its records).
    pub user_records: u64,
    /// Trades in SBE trade frames and Avro records.
    pub trades: u64,
    /// Data bytes.
    pub bytes: u64,
}

/// Counts `stream`, giving up after `patience`.
pub async fn count(
    client: &Client,
    stream: &str,
    patience: Duration,
) -> Result<StreamCount, String> {
    let fail = |what: &str, e: &dyn std::error::Error| {
        format!("{what} {stream}: {}", DisplayErrorContext(e))
    };
    let deadline = Instant::now() + patience;
    let shards = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .map_err(|e| fail("ListShards", &e))?;
    let mut out = StreamCount {
        stream: stream.to_string(),
        shards: shards.shards().len(),
        ..StreamCount::default()
    };
    for shard in shards.shards() {
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .map_err(|e| fail("GetShardIterator", &e))?
            .shard_iterator()
            .map(str::to_string);
        while let Some(it) = iterator.take() {
            let page = client
                .get_records()
                .shard_iterator(it)
                .limit(10_000)
                .send()
                .await
                .map_err(|e| fail("GetRecords", &e))?;
            for record in page.records() {
                out.records += 1;
                let data = record.data().as_ref();
                out.bytes += data.len() as u64;
                let key = record.partition_key().unwrap_or_default();
                for user in deaggregate(key, data).unwrap_or_default() {
                    out.user_records += 1;
                    if user.data.starts_with(&[0xC3, 0x01]) {
                        // The `avro` payload: MarketData messages, trades among them.
                        let records = super::avro::read_record(&user.data).unwrap_or_default();
                        out.trades +=
                            records.iter().filter(|r| r.event_type == "trade").count() as u64;
                    } else if let Ok(crate::sbe::spot_stream::Message::TradesStreamEvent(m)) =
                        crate::sbe::decode(&user.data)
                    {
                        out.trades += m.trades().len() as u64;
                    }
                }
            }
            if page.records().is_empty() && page.millis_behind_latest() == Some(0) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("reading {stream} did not catch up in {patience:?}"));
            }
            iterator = page.next_shard_iterator().map(str::to_string);
        }
    }
    Ok(out)
}
