//! KPL aggregated records: many small user records packed into one Kinesis record, in the format
//! the Kinesis Producer Library writes and the Kinesis Client Library de-aggregates.
//!
//! An aggregated record's data is, byte for byte:
//!
//! | bytes | what |
//! |---|---|
//! | 4 | [`MAGIC`], `F3 89 9A C2` |
//! | n | an `AggregatedRecord` protobuf message ([`super::kpl`] has the schema) |
//! | 16 | the MD5 digest of the n protobuf bytes (not of the magic) |
//!
//! [`Aggregator`] fills the partition key table (each distinct key once, in order of first use)
//! and the records, each with `partition_key_index` and `data` and nothing else, and prost encodes
//! them. [`deaggregate`] decodes with prost and is total: it returns an error for any malformed
//! input and never panics.

use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;
use md5::{Digest, Md5};
use prost::Message;

use super::kpl::{AggregatedRecord, FIELD_KEY_LEN, Record};

/// The four bytes that open every aggregated record's data.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// Kinesis' limit on one record's data + partition key: 1 MiB.
pub const RECORD_BYTES_MAX: usize = 1 << 20;

/// Length of the MD5 digest that closes an aggregated record.
const DIGEST_LEN: usize = 16;

/// Builds one aggregated record; all user records pushed get a partition key each (the table
/// dedupes keys).
///
/// The aggregator keeps the protobuf's encoded length as it goes (prost's `encoded_len` of each
/// table entry and record pushed), so [`size`](Self::size) and [`size_with`](Self::size_with)
/// are exact and O(1) (plus one hash lookup of the key), and [`finish`](Self::finish) encodes
/// once and digests. It does not enforce [`RECORD_BYTES_MAX`]: the caller checks `size_with(..)`
/// plus the outer partition key (the first user record's key) against it before each push.
#[derive(Debug, Default)]
pub struct Aggregator {
    /// Each distinct partition key pushed so far and its index in the table; the indexes are
    /// exactly `0..key_index.len()`, in order of first use.
    key_index: HashMap<String, u64>,
    /// The message being built.
    message: AggregatedRecord,
    /// `message.encoded_len()`, kept up to date by every push.
    encoded_len: usize,
}

impl Aggregator {
    /// An empty aggregator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Size in bytes of the finished record if `data` with `partition_key` were added (exact,
    /// magic and MD5 included).
    pub fn size_with(&self, partition_key: &str, data: &[u8]) -> usize {
        let (index, table_bytes) = match self.key_index.get(partition_key) {
            Some(&index) => (index, 0),
            None => (self.key_index.len() as u64, field_len(partition_key.len())),
        };
        self.size() + table_bytes + field_len(record_body_len(index, data.len()))
    }

    /// Adds one user record; `data` is shared, not copied, until [`finish`](Self::finish).
    pub fn push(&mut self, partition_key: &str, data: Bytes) {
        let index = match self.key_index.get(partition_key) {
            Some(&index) => index,
            None => {
                let index = self.key_index.len() as u64;
                self.key_index.insert(partition_key.to_owned(), index);
                self.encoded_len += field_len(partition_key.len());
                self.message
                    .partition_key_table
                    .push(partition_key.to_owned());
                index
            }
        };
        let record = Record {
            partition_key_index: Some(index),
            explicit_hash_key_index: None,
            data: Some(data),
            tags: Vec::new(),
        };
        self.encoded_len += field_len(record.encoded_len());
        self.message.records.push(record);
    }

    /// User records pushed since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.message.records.len()
    }

    /// Whether no user record was pushed since the last [`finish`](Self::finish).
    pub fn is_empty(&self) -> bool {
        self.message.records.is_empty()
    }

    /// Exact size in bytes of what [`finish`](Self::finish) would return now (when empty, the
    /// size of an aggregate with no records: magic and MD5 only).
    pub fn size(&self) -> usize {
        MAGIC.len() + self.encoded_len + DIGEST_LEN
    }

    /// The aggregated record bytes, with the partition key the Kinesis record should carry (the
    /// first user record's); `None` when empty. The aggregator is left empty for reuse.
    pub fn finish(&mut self) -> Option<(String, Vec<u8>)> {
        if self.is_empty() {
            return None;
        }
        let size = self.size();
        debug_assert_eq!(self.encoded_len, self.message.encoded_len());
        let mut bytes = Vec::with_capacity(size);
        bytes.extend_from_slice(&MAGIC);
        // Only a buffer without room fails, and a Vec grows.
        let encoded = self.message.encode(&mut bytes);
        let digest = Md5::digest(&bytes[MAGIC.len()..]);
        bytes.extend_from_slice(&digest);
        debug_assert_eq!(bytes.len(), size, "size accounting must match the encoding");
        let key = (self.message.partition_key_table.first_mut())
            .map(std::mem::take)
            .unwrap_or_default();
        self.key_index.clear();
        self.message.partition_key_table.clear();
        self.message.records.clear();
        self.encoded_len = 0;
        encoded.ok().map(|()| (key, bytes))
    }
}

/// Bytes of a length-delimited field (one-byte key) with a `body_len`-byte body.
fn field_len(body_len: usize) -> usize {
    FIELD_KEY_LEN + prost::length_delimiter_len(body_len) + body_len
}

/// Bytes of an encoded `Record` body with `partition_key_index` and `data_len` bytes of data,
/// as prost encodes it (checked against `encoded_len` by the tests).
fn record_body_len(partition_key_index: u64, data_len: usize) -> usize {
    // A varint's length depends only on the value: the length delimiter's is the same function.
    let index_len = prost::length_delimiter_len(partition_key_index as usize);
    FIELD_KEY_LEN + index_len + field_len(data_len)
}

/// One user record out of [`deaggregate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    /// The user record's partition key (for a plain record, the Kinesis record's).
    pub partition_key: String,
    /// The user record's explicit hash key, when the aggregate gave one.
    pub explicit_hash_key: Option<String>,
    /// The user record's data.
    pub data: Vec<u8>,
}

/// Why an aggregated record could not be de-aggregated.
#[derive(Debug, PartialEq, Eq)]
pub enum DeaggregateError {
    /// The MD5 digest at the end does not match the protobuf bytes.
    BadMd5,
    /// The protobuf does not decode: truncated, malformed, a known field with another wire type,
    /// or a string that is not UTF-8 (prost's error names the message and field).
    Protobuf(prost::DecodeError),
    /// A required field is absent: `Record.partition_key_index`, `Record.data` or `Tag.key`.
    MissingField(&'static str),
    /// A record's index points past the end of its table.
    IndexOutOfTable {
        /// The table's field name: `partition_key_table` or `explicit_hash_key_table`.
        table: &'static str,
        /// The index the record gave.
        index: u64,
        /// How many entries the table has.
        len: usize,
    },
}

impl fmt::Display for DeaggregateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeaggregateError::BadMd5 => {
                write!(
                    f,
                    "aggregated record's MD5 digest does not match its contents"
                )
            }
            DeaggregateError::Protobuf(e) => {
                write!(f, "aggregated record's protobuf is invalid: {e}")
            }
            DeaggregateError::MissingField(field) => {
                write!(f, "aggregated record's protobuf has no {field}")
            }
            DeaggregateError::IndexOutOfTable { table, index, len } => {
                write!(
                    f,
                    "record index {index} is outside {table}, which has {len} entries"
                )
            }
        }
    }
}

impl std::error::Error for DeaggregateError {}

/// De-aggregates like the KCL: data without the magic prefix (or too short to hold magic + MD5)
/// is one plain user record with `outer_partition_key`; with the magic prefix, MD5 is verified
/// and the user records are returned in order.
///
/// Unlike the KCL, which hands a record whose digest does not match (or whose protobuf does not
/// parse) to the application as one plain record, this reports [`DeaggregateError`]. Unknown
/// fields are skipped (as protobuf parsers do); a known field with another wire type is an error
/// (prost's rule); tags are checked for a key and dropped.
pub fn deaggregate(
    outer_partition_key: &str,
    data: &[u8],
) -> Result<Vec<UserRecord>, DeaggregateError> {
    let aggregated = data
        .strip_prefix(&MAGIC)
        .and_then(|rest| rest.split_last_chunk::<DIGEST_LEN>());
    let Some((protobuf, digest)) = aggregated else {
        return Ok(vec![UserRecord {
            partition_key: outer_partition_key.to_owned(),
            explicit_hash_key: None,
            data: data.to_vec(),
        }]);
    };
    if Md5::digest(protobuf).as_slice() != digest.as_slice() {
        return Err(DeaggregateError::BadMd5);
    }
    let message = AggregatedRecord::decode(protobuf).map_err(DeaggregateError::Protobuf)?;
    let partition_keys = &message.partition_key_table;
    let explicit_hash_keys = &message.explicit_hash_key_table;
    message
        .records
        .into_iter()
        .map(|record| {
            if record.tags.iter().any(|tag| tag.key.is_none()) {
                return Err(DeaggregateError::MissingField("Tag.key"));
            }
            let index = record
                .partition_key_index
                .ok_or(DeaggregateError::MissingField("Record.partition_key_index"))?;
            let data = record
                .data
                .ok_or(DeaggregateError::MissingField("Record.data"))?;
            let partition_key = table_entry(partition_keys, "partition_key_table", index)?;
            let explicit_hash_key = record
                .explicit_hash_key_index
                .map(|index| table_entry(explicit_hash_keys, "explicit_hash_key_table", index))
                .transpose()?;
            Ok(UserRecord {
                partition_key: partition_key.to_owned(),
                explicit_hash_key: explicit_hash_key.map(str::to_owned),
                data: Vec::from(data),
            })
        })
        .collect()
}

/// Entry `index` of `entries`, or the error naming `table`.
fn table_entry<'a>(
    entries: &'a [String],
    table: &'static str,
    index: u64,
) -> Result<&'a str, DeaggregateError> {
    usize::try_from(index)
        .ok()
        .and_then(|i| entries.get(i))
        .map(String::as_str)
        .ok_or(DeaggregateError::IndexOutOfTable {
            table,
            index,
            len: entries.len(),
        })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Wraps `protobuf` in magic and its MD5, like a well-formed aggregate.
    fn wrap(protobuf: &[u8]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(protobuf);
        bytes.extend_from_slice(&Md5::digest(protobuf));
        bytes
    }

    fn user(partition_key: &str, data: &[u8]) -> UserRecord {
        UserRecord {
            partition_key: partition_key.to_owned(),
            explicit_hash_key: None,
            data: data.to_vec(),
        }
    }

    /// Pushes every record, checking `size_with`, `len` and `size` on the way, then finishes.
    fn aggregate(records: &[(&str, &[u8])]) -> (String, Vec<u8>) {
        let mut aggregator = Aggregator::new();
        for (count, &(key, data)) in records.iter().enumerate() {
            let predicted = aggregator.size_with(key, data);
            aggregator.push(key, Bytes::copy_from_slice(data));
            assert_eq!(
                aggregator.size(),
                predicted,
                "size_with before push {count}"
            );
            assert_eq!(aggregator.len(), count + 1);
        }
        let size = aggregator.size();
        let finished = aggregator.finish().expect("records were pushed");
        assert_eq!(finished.1.len(), size, "size() is the finished length");
        finished
    }

    #[test]
    fn golden_one_key_one_byte() {
        // Protobuf by hand: field 1 (partition_key_table), wire type 2: key 0x0A, length 1, "a".
        // Field 3 (records), wire type 2: key 0x1A, length 5, then the Record: field 1
        // (partition_key_index), wire type 0: key 0x08, value 0; field 3 (data), wire type 2:
        // key 0x1A, length 1, "x". MD5 of those 10 bytes computed with `md5sum`.
        let expected: [u8; 30] = [
            0xF3, 0x89, 0x9A, 0xC2, // magic
            0x0A, 0x01, b'a', // partition_key_table: "a"
            0x1A, 0x05, 0x08, 0x00, 0x1A, 0x01, b'x', // records: {index 0, data "x"}
            0x27, 0x4f, 0xa4, 0xa2, 0x21, 0x60, 0x92, 0x41, // MD5, first half
            0x96, 0x6b, 0x02, 0xc7, 0xaf, 0xbf, 0x42, 0x83, // MD5, second half
        ];
        let mut aggregator = Aggregator::new();
        assert_eq!(aggregator.size_with("a", b"x"), expected.len());
        aggregator.push("a", Bytes::from_static(b"x"));
        assert_eq!(
            aggregator.finish(),
            Some(("a".to_owned(), expected.to_vec()))
        );
        assert_eq!(deaggregate("outer", &expected), Ok(vec![user("a", b"x")]));
    }

    #[test]
    fn round_trip_with_repeated_and_distinct_keys_and_empty_data() {
        let records: [(&str, &[u8]); 6] = [
            ("BTCUSDT", b"first"),
            ("ETHUSDT", b""),
            ("BTCUSDT", b"\x00\xFF binary"),
            ("SOLUSDT", b"third key"),
            ("ETHUSDT", b"again"),
            ("BTCUSDT", b""),
        ];
        let (key, bytes) = aggregate(&records);
        assert_eq!(key, "BTCUSDT", "the outer key is the first user record's");
        // Three distinct keys, so three table entries: "BTCUSDT" appears once.
        assert_eq!(bytes.windows(7).filter(|w| w == b"BTCUSDT").count(), 1);
        let expected: Vec<UserRecord> = records.iter().map(|&(k, d)| user(k, d)).collect();
        assert_eq!(deaggregate(&key, &bytes), Ok(expected));
    }

    #[test]
    fn finish_leaves_the_aggregator_empty_for_reuse() {
        let mut aggregator = Aggregator::default();
        assert!(aggregator.is_empty());
        assert_eq!(aggregator.finish(), None);
        assert_eq!(aggregator.size(), MAGIC.len() + DIGEST_LEN);
        aggregator.push("first", Bytes::from_static(b"1"));
        aggregator.push("second", Bytes::from_static(b"2"));
        assert!(aggregator.finish().is_some());
        assert!(aggregator.is_empty());
        assert_eq!(aggregator.len(), 0);
        assert_eq!(aggregator.size(), MAGIC.len() + DIGEST_LEN);
        // The old table is gone: "second" is index 0 of the new aggregate and its outer key.
        aggregator.push("second", Bytes::from_static(b"3"));
        let (key, bytes) = aggregator.finish().expect("one record was pushed");
        assert_eq!(key, "second");
        assert_eq!(deaggregate("outer", &bytes), Ok(vec![user("second", b"3")]));
    }

    #[test]
    fn sizes_are_exact_across_varint_boundaries() {
        // Data lengths where the length varint grows, and more than 128 keys so that the index
        // varint grows too.
        let lengths = [
            0, 1, 126, 127, 128, 129, 16_381, 16_382, 16_383, 16_384, 2_097_152,
        ];
        let keys: Vec<String> = (0..300).map(|i| format!("key-{i}")).collect();
        let data: Vec<Vec<u8>> = lengths.iter().map(|&len| vec![0xA5; len]).collect();
        let small = [0x5A; 200];
        let mut records: Vec<(&str, &[u8])> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            records.push((key, &small[..i % 200]));
        }
        for (i, bytes) in data.iter().enumerate() {
            records.push((&keys[i * 29], bytes));
        }
        let (key, bytes) = aggregate(&records);
        let expected: Vec<UserRecord> = records.iter().map(|&(k, d)| user(k, d)).collect();
        assert_eq!(deaggregate(&key, &bytes), Ok(expected));
    }

    #[test]
    fn a_corrupted_byte_fails_the_md5_check() {
        let (key, bytes) = aggregate(&[("BTCUSDT", b"trade"), ("ETHUSDT", b"depth")]);
        for i in MAGIC.len()..bytes.len() {
            let mut corrupt = bytes.clone();
            corrupt[i] ^= 0x01;
            assert_eq!(
                deaggregate(&key, &corrupt),
                Err(DeaggregateError::BadMd5),
                "byte {i}"
            );
        }
    }

    #[test]
    fn plain_data_passes_through_as_one_record() {
        let short_with_magic = [&MAGIC[..], &[0u8; DIGEST_LEN - 1]].concat();
        let magic_almost = [
            0xF3, 0x89, 0x9A, 0xC3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
        ];
        let cases: [&[u8]; 5] = [
            b"",
            b"plain",
            &MAGIC,
            &short_with_magic,
            &[&magic_almost[..], &[0u8; 16]].concat(),
        ];
        for data in cases {
            assert_eq!(
                deaggregate("BTCUSDT", data),
                Ok(vec![user("BTCUSDT", data)]),
                "{data:?}"
            );
        }
    }

    #[test]
    fn an_aggregate_without_records_is_empty() {
        assert_eq!(deaggregate("outer", &wrap(&[])), Ok(vec![]));
        assert_eq!(deaggregate("outer", &wrap(&[0x0A, 0x01, b'a'])), Ok(vec![]));
    }

    #[test]
    fn decoder_reads_explicit_hash_keys_and_tags_and_skips_unknown_fields() {
        // Written out of the encoder's order: the record before the tables, unknown fields of
        // every skippable wire type at both levels.
        let record = [
            0x08, 0x01, // partition_key_index 1
            0x10, 0x00, // explicit_hash_key_index 0
            0x1A, 0x02, b'h', b'i', // data "hi"
            0x22, 0x06, 0x0A, 0x01, b'k', 0x12, 0x01, b'v', // tag {key "k", value "v"}
            0x28, 0x07, // unknown field 5, varint
            0x32, 0x00, // unknown field 6, empty length-delimited
        ];
        let mut protobuf = vec![0x1A, record.len() as u8];
        protobuf.extend_from_slice(&record);
        protobuf.extend_from_slice(&[
            0x0A, 0x01, b'a', // partition_key_table "a"
            0x30, 0x96, 0x01, // unknown field 6, two-byte varint
            0x0A, 0x01, b'b', // partition_key_table "b"
            0x39, 1, 2, 3, 4, 5, 6, 7, 8, // unknown field 7, fixed64
            0x12, 0x03, b'1', b'2', b'3', // explicit_hash_key_table "123"
            0x45, 1, 2, 3, 4, // unknown field 8, fixed32
            0x4A, 0x02, 0xFF, 0xFE, // unknown field 9, length-delimited
            0x1A, 0x05, 0x08, 0x00, 0x1A, 0x01, b'x', // a second record: "a", "x"
        ]);
        let expected = vec![
            UserRecord {
                partition_key: "b".to_owned(),
                explicit_hash_key: Some("123".to_owned()),
                data: b"hi".to_vec(),
            },
            user("a", b"x"),
        ];
        assert_eq!(deaggregate("outer", &wrap(&protobuf)), Ok(expected));
    }

    #[test]
    fn malformed_aggregates_are_errors() {
        use DeaggregateError::*;
        // What prost refuses, with a word its error must contain.
        let undecodable: [(&[u8], &str); 11] = [
            (&[0x0A, 0x05, b'a'], "buffer underflow"),
            (&[0x0A], "partition_key_table: invalid varint"),
            (&[0x1A, 0x80], "records: invalid varint"),
            (&[0x0B], "invalid wire type: StartGroup"),
            (&[0x0E], "invalid wire type value: 6"),
            (&[0x08, 0x05], "invalid wire type: Varint"),
            (&[0x02, 0x00], "invalid tag value: 0"),
            (
                &[
                    0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02,
                ],
                "varint",
            ),
            (&[0x0A, 0x01, 0xFF], "partition_key_table: invalid string"),
            (
                &[0x12, 0x01, 0xFF],
                "explicit_hash_key_table: invalid string",
            ),
            (
                &[0x1A, 0x07, 0x22, 0x05, 0x0A, 0x01, b'k', 0x12, 0x80],
                "Tag.value",
            ),
        ];
        for (protobuf, word) in undecodable {
            match deaggregate("outer", &wrap(protobuf)) {
                Err(Protobuf(e)) => assert!(e.to_string().contains(word), "{protobuf:02X?}: {e}"),
                other => panic!("{protobuf:02X?}: expected a decode error, got {other:?}"),
            }
        }
        let refused: [(&[u8], DeaggregateError); 5] = [
            (&[0x1A, 0x02, 0x08, 0x00], MissingField("Record.data")),
            (
                &[0x1A, 0x03, 0x1A, 0x01, b'x'],
                MissingField("Record.partition_key_index"),
            ),
            (
                &[0x0A, 0x01, b'a', 0x1A, 0x05, 0x08, 0x01, 0x1A, 0x01, b'x'],
                IndexOutOfTable {
                    table: "partition_key_table",
                    index: 1,
                    len: 1,
                },
            ),
            (
                &[
                    0x0A, 0x01, b'a', 0x1A, 0x07, 0x08, 0x00, 0x10, 0x00, 0x1A, 0x01, b'x',
                ],
                IndexOutOfTable {
                    table: "explicit_hash_key_table",
                    index: 0,
                    len: 0,
                },
            ),
            (
                &[
                    0x0A, 0x01, b'a', 0x1A, 0x08, 0x08, 0x00, 0x1A, 0x00, 0x22, 0x02, 0x12, 0x00,
                ],
                MissingField("Tag.key"),
            ),
        ];
        for (protobuf, expected) in refused {
            assert_eq!(
                deaggregate("outer", &wrap(protobuf)),
                Err(expected),
                "{protobuf:02X?}"
            );
        }
    }

    #[test]
    fn a_varint_of_ten_bytes_holds_u64_max() {
        let protobuf = [
            0x0A, 0x01, b'a', 0x1A, 0x0E, 0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
            0xFF, 0x01, 0x1A, 0x01, b'x',
        ];
        assert_eq!(
            deaggregate("outer", &wrap(&protobuf)),
            Err(DeaggregateError::IndexOutOfTable {
                table: "partition_key_table",
                index: u64::MAX,
                len: 1,
            })
        );
    }

    #[test]
    fn size_accounting_is_prosts_encoded_len() {
        let indexes = [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ];
        let lengths = [0, 1, 127, 128, 16_383, 16_384, 2_097_152];
        for index in indexes {
            for len in lengths {
                let record = Record {
                    partition_key_index: Some(index),
                    explicit_hash_key_index: None,
                    data: Some(Bytes::from(vec![0; len])),
                    tags: Vec::new(),
                };
                assert_eq!(
                    record_body_len(index, len),
                    record.encoded_len(),
                    "{index} {len}"
                );
                let message = AggregatedRecord {
                    partition_key_table: vec!["k".repeat(len)],
                    explicit_hash_key_table: Vec::new(),
                    records: vec![record],
                };
                assert_eq!(
                    field_len(len) + field_len(record_body_len(index, len)),
                    message.encoded_len(),
                    "{index} {len}"
                );
            }
        }
    }

    #[test]
    fn errors_display_what_went_wrong() {
        let error = DeaggregateError::IndexOutOfTable {
            table: "partition_key_table",
            index: 3,
            len: 2,
        };
        assert_eq!(
            error.to_string(),
            "record index 3 is outside partition_key_table, which has 2 entries"
        );
        assert_eq!(
            DeaggregateError::BadMd5.to_string(),
            "aggregated record's MD5 digest does not match its contents"
        );
    }

    proptest! {
        #[test]
        fn deaggregate_never_panics_on_arbitrary_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let _ = deaggregate("outer", &bytes);
            let _ = deaggregate("outer", &[&MAGIC[..], &bytes].concat());
            // With a matching digest the protobuf decoder itself sees the arbitrary bytes.
            let _ = deaggregate("outer", &wrap(&bytes));
        }

        #[test]
        fn deaggregate_never_panics_on_a_mutated_aggregate(
            data in proptest::collection::vec(any::<u8>(), 0..64),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let records: [(&str, &[u8]); 3] = [("k1", &data), ("k2", b"two"), ("k1", b"")];
            let (_, bytes) = aggregate(&records);
            let mut protobuf = bytes[MAGIC.len()..bytes.len() - DIGEST_LEN].to_vec();
            for (at, value) in flips {
                let i = at.index(protobuf.len());
                protobuf[i] = value;
            }
            let _ = deaggregate("outer", &wrap(&protobuf));
        }

        #[test]
        fn random_records_round_trip_with_exact_sizes(
            keys in proptest::collection::vec("\\PC{1,16}", 1..8),
            picks in proptest::collection::vec(
                (any::<prop::sample::Index>(), proptest::collection::vec(any::<u8>(), 0..300)),
                1..60,
            ),
        ) {
            let records: Vec<(&str, &[u8])> = picks
                .iter()
                .map(|(pick, data)| (keys[pick.index(keys.len())].as_str(), data.as_slice()))
                .collect();
            let (key, bytes) = aggregate(&records);
            prop_assert_eq!(key.as_str(), records[0].0);
            let expected: Vec<UserRecord> = records.iter().map(|&(k, d)| user(k, d)).collect();
            prop_assert_eq!(deaggregate("outer", &bytes), Ok(expected));
        }
    }
}
