//! The KPL's aggregation messages as prost types, written by hand from its proto2 schema (no
//! build script, no protoc):
//!
//! ```text
//! message AggregatedRecord {
//!   repeated string partition_key_table     = 1;
//!   repeated string explicit_hash_key_table = 2;
//!   repeated Record records                 = 3;
//! }
//! message Tag    { required string key = 1; optional string value = 2; }
//! message Record {
//!   required uint64 partition_key_index     = 1;
//!   optional uint64 explicit_hash_key_index = 2;
//!   required bytes  data                    = 3;
//!   repeated Tag    tags                    = 4;
//! }
//! ```
//!
//! prost does not check proto2's `required`, so required fields are `Option`s here (`Some` is
//! encoded exactly as a required field is) and [`super::aggregate::deaggregate`] checks that
//! they are present. Every field number is below 16, so every field key is one byte
//! ([`FIELD_KEY_LEN`]), which the aggregator's size accounting relies on.

use bytes::Bytes;

/// Bytes of a field key: one for every field number here (all below 16; a key is the field
/// number shifted left by 3 and the wire type, as a varint).
pub const FIELD_KEY_LEN: usize = 1;

/// `AggregatedRecord`: the tables and the user records.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AggregatedRecord {
    /// Partition keys, each once; records refer to them by index.
    #[prost(string, repeated, tag = "1")]
    pub partition_key_table: Vec<String>,
    /// Explicit hash keys, each once; records refer to them by index.
    #[prost(string, repeated, tag = "2")]
    pub explicit_hash_key_table: Vec<String>,
    /// The user records, in order.
    #[prost(message, repeated, tag = "3")]
    pub records: Vec<Record>,
}

/// `Record`: one user record.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Record {
    /// Index into `partition_key_table` (required).
    #[prost(uint64, optional, tag = "1")]
    pub partition_key_index: Option<u64>,
    /// Index into `explicit_hash_key_table`.
    #[prost(uint64, optional, tag = "2")]
    pub explicit_hash_key_index: Option<u64>,
    /// The user record's data (required).
    #[prost(bytes = "bytes", optional, tag = "3")]
    pub data: Option<Bytes>,
    /// Tags (the KCL ignores them; so does hotpath).
    #[prost(message, repeated, tag = "4")]
    pub tags: Vec<Tag>,
}

/// `Tag`: a key (required) and an optional value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Tag {
    /// The tag's key (required).
    #[prost(string, optional, tag = "1")]
    pub key: Option<String>,
    /// The tag's value.
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}
