//! The Kinesis writer: PutRecords batches per shard (the open shards listed at start and again
//! on a reshard, one request in flight per shard), partition key = symbol, retries of failed
//! entries only, a circuit breaker, a dead-letter file ([`crate::sink::dlq`]), a heartbeat,
//! optional KPL aggregation.

pub mod aggregate;
pub mod avro;
pub mod breaker;
pub mod destination;
pub mod inspect;
pub mod kpl;
pub mod lane;
pub mod resend;
pub mod send;
pub mod shards;
pub mod spill;
pub mod trim;
pub mod writer;
