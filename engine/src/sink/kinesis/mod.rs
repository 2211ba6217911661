//! The Kinesis writer: PutRecords batches per stream, partition key = symbol, retries of failed
//! entries only, a circuit breaker, a dead-letter file ([`crate::sink::dlq`]), a heartbeat,
//! optional KPL aggregation.

pub mod aggregate;
pub mod breaker;
pub mod inspect;
pub mod kpl;
pub mod lane;
pub mod resend;
pub mod trim;
pub mod writer;
