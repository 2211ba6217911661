//! A stream's open shards and the routing of a partition key to one of them, as Kinesis routes:
//! the key's MD5 digest read as a 128-bit big-endian number (the hash key) falls in exactly one
//! open shard's hash key range. The writer keeps one lane per open shard, so one PutRecords per
//! shard is in flight and a symbol's records always leave from the same lane, in order. Pure:
//! the listing's pages are passed in ([`ShardMap::from_shards`]); [`list`] is the thin I/O part.
//!
//! The map only decides which lane a record waits in. Kinesis itself places every record by its
//! hash key, so a stale map (a reshard the writer has not seen yet) never puts a record on a wrong
//! shard: it only lets two lanes write to one shard (throttling) or one lane serve two.

use std::sync::Arc;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::DisplayErrorContext;
use aws_sdk_kinesis::types::Shard;
use md5::{Digest, Md5};

/// Pages one listing may take before it is given up (a stream has at most a few thousand
/// shards; ListShards returns up to 1000 per page).
const PAGES_MAX: usize = 100;

/// The hash key Kinesis derives from a partition key: its MD5 digest, big-endian.
pub fn hash_key(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// One open shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardRange {
    /// The shard's id (`shardId-000000000003`); empty in [`ShardMap::whole`].
    pub id: Arc<str>,
    /// The lowest hash key of the shard's range.
    pub start: u128,
    /// The highest hash key of the shard's range (inclusive).
    pub end: u128,
}

/// The open shards of a stream, ordered by hash key range. Never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardMap {
    /// Invariant: non-empty, sorted by `start`, no two ranges overlap.
    ranges: Vec<ShardRange>,
}

/// Why a listing gave no map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListError(pub String);

impl std::fmt::Display for ListError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl ShardMap {
    /// One lane for the whole hash key space: before the first listing, or when none succeeded.
    pub fn whole() -> ShardMap {
        ShardMap {
            ranges: vec![ShardRange {
                id: Arc::from(""),
                start: 0,
                end: u128::MAX,
            }],
        }
    }

    /// The map of the open shards among `shards` (a closed shard has an ending sequence number):
    /// `(id, starting hash key, ending hash key, closed)`, hash keys in decimal as Kinesis
    /// writes them. Overlapping open ranges (a listing taken mid-reshard) keep the first of
    /// each overlap; holes are allowed (a key in a hole goes to the range below it).
    pub fn from_shards<'a>(
        shards: impl IntoIterator<Item = (&'a str, &'a str, &'a str, bool)>,
    ) -> Result<ShardMap, ListError> {
        let mut ranges = Vec::new();
        for (id, start, end, closed) in shards {
            if closed {
                continue;
            }
            let number = |text: &str| {
                text.parse::<u128>().map_err(|_| {
                    ListError(format!(
                        "shard {id}: hash key {text:?} is not a 128-bit number"
                    ))
                })
            };
            let (start, end) = (number(start)?, number(end)?);
            if start > end {
                return Err(ListError(format!(
                    "shard {id}: hash key range starts above its end"
                )));
            }
            ranges.push(ShardRange {
                id: Arc::from(id),
                start,
                end,
            });
        }
        ranges.sort_by_key(|r| r.start);
        ranges.dedup_by(|later, kept| later.start <= kept.end);
        if ranges.is_empty() {
            return Err(ListError("no open shard".into()));
        }
        Ok(ShardMap { ranges })
    }

    /// The open shards, in hash key order (lane `i` writes to shard `i`).
    pub fn ranges(&self) -> &[ShardRange] {
        &self.ranges
    }

    /// How many lanes the map asks for.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Never true (a map has at least one range); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The lane of `hash_key`: the range holding it (or, in a hole, the range below it; below
    /// the first range, the first).
    pub fn lane_of(&self, hash_key: u128) -> usize {
        self.ranges
            .partition_point(|r| r.start <= hash_key)
            .saturating_sub(1)
    }

    /// The shard id of lane `lane` (empty for [`ShardMap::whole`]).
    pub fn shard_id(&self, lane: usize) -> &str {
        self.ranges.get(lane).map_or("", |r| &r.id)
    }
}

/// Lists `stream`'s shards (every page) and maps the open ones.
pub async fn list(client: &Client, stream: &str) -> Result<ShardMap, ListError> {
    let mut shards: Vec<Shard> = Vec::new();
    let mut next_token: Option<String> = None;
    for _ in 0..PAGES_MAX {
        // A page after the first names its token only (the API refuses both).
        let request = match next_token.take() {
            Some(token) => client.list_shards().next_token(token),
            None => client.list_shards().stream_name(stream),
        };
        let page = request
            .send()
            .await
            .map_err(|e| ListError(format!("ListShards {stream}: {}", DisplayErrorContext(&e))))?;
        shards.extend(page.shards().iter().cloned());
        next_token = page.next_token().map(str::to_string);
        if next_token.is_none() {
            return map_of(&shards);
        }
    }
    Err(ListError(format!(
        "ListShards {stream}: more than {PAGES_MAX} pages"
    )))
}

/// The map of listed shards; a shard without a hash key range is refused.
fn map_of(shards: &[Shard]) -> Result<ShardMap, ListError> {
    let mut rows = Vec::with_capacity(shards.len());
    for shard in shards {
        let Some(range) = shard.hash_key_range() else {
            return Err(ListError(format!(
                "shard {} has no hash key range",
                shard.shard_id()
            )));
        };
        let closed = shard
            .sequence_number_range()
            .is_some_and(|s| s.ending_sequence_number().is_some());
        rows.push((
            shard.shard_id(),
            range.starting_hash_key(),
            range.ending_hash_key(),
            closed,
        ));
    }
    ShardMap::from_shards(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ranges Kinesis gives a new stream of `n` shards: equal parts of 2^128.
    fn even(n: u128) -> Vec<(String, String, String, bool)> {
        let part = u128::MAX / n;
        (0..n)
            .map(|i| {
                let end = if i == n - 1 {
                    u128::MAX
                } else {
                    part * (i + 1) + i
                };
                (
                    format!("shardId-{i:012}"),
                    (part * i + i).to_string(),
                    end.to_string(),
                    false,
                )
            })
            .collect()
    }

    fn map(rows: &[(String, String, String, bool)]) -> Result<ShardMap, ListError> {
        ShardMap::from_shards(
            rows.iter()
                .map(|(a, b, c, d)| (a.as_str(), b.as_str(), c.as_str(), *d)),
        )
    }

    #[test]
    fn the_hash_key_is_the_big_endian_md5_of_the_partition_key() {
        // `printf BTCUSDT | md5sum`: abfa6eeb99b722f0151713f9c425d38d; in decimal as Kinesis
        // writes hash keys (`python3 -c "print(int('abfa...d38d', 16))"`).
        assert_eq!(hash_key("BTCUSDT"), 0xabfa6eeb99b722f0151713f9c425d38d);
        assert_eq!(
            hash_key("BTCUSDT").to_string(),
            "228598311225101518626403573345525552013"
        );
        assert_eq!(
            format!("{:032x}", hash_key("")),
            "d41d8cd98f00b204e9800998ecf8427e",
            "MD5 of the empty string"
        );
        assert_eq!(
            format!("{:032x}", hash_key("a")),
            "0cc175b9c0f1b6a831c399e269772661"
        );
    }

    #[test]
    fn every_hash_key_falls_in_its_range() {
        let m = map(&even(4)).expect("a map");
        assert_eq!(m.len(), 4);
        for (lane, r) in m.ranges().iter().enumerate() {
            for key in [r.start, r.start + 1, r.end - 1, r.end] {
                assert_eq!(m.lane_of(key), lane, "{key}");
            }
            assert_eq!(m.shard_id(lane), format!("shardId-{lane:012}"));
        }
        assert_eq!(m.lane_of(0), 0);
        assert_eq!(m.lane_of(u128::MAX), 3);
        // "a" hashes to 0x0cc1..., the first quarter; "" to 0xd41d..., the last.
        assert_eq!(m.lane_of(hash_key("a")), 0);
        assert_eq!(m.lane_of(hash_key("")), 3);
    }

    #[test]
    fn closed_shards_are_left_out_and_the_order_is_by_hash_key() {
        let mut rows = even(2);
        rows.reverse();
        // The parent of a split: closed, covering everything.
        rows.push((
            "shardId-parent".into(),
            "0".into(),
            u128::MAX.to_string(),
            true,
        ));
        let m = map(&rows).expect("a map");
        assert_eq!(m.len(), 2);
        assert_eq!(m.shard_id(0), "shardId-000000000000");
        assert_eq!(m.ranges()[1].end, u128::MAX);
    }

    #[test]
    fn overlaps_keep_one_range_and_holes_fall_to_the_range_below() {
        let rows: Vec<(String, String, String, bool)> = [
            ("a", "0", "99", false),
            ("b", "50", "150", false),
            ("c", "200", "300", false),
        ]
        .iter()
        .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), *d))
        .collect();
        let m = map(&rows).expect("a map");
        assert_eq!(m.len(), 2, "b overlaps a");
        assert_eq!(m.lane_of(120), 0, "a hole");
        assert_eq!(m.lane_of(250), 1);
        assert_eq!(m.lane_of(u128::MAX), 1);
    }

    #[test]
    fn bad_listings_are_errors() {
        let bad = |rows: &[(&str, &str, &str, bool)]| {
            ShardMap::from_shards(rows.iter().copied()).expect_err("refused")
        };
        assert_eq!(bad(&[]).0, "no open shard");
        assert_eq!(bad(&[("a", "0", "9", true)]).0, "no open shard");
        assert!(
            bad(&[("a", "x", "9", false)])
                .0
                .contains("not a 128-bit number")
        );
        assert!(
            bad(&[("a", "0", "340282366920938463463374607431768211456", false)])
                .0
                .contains("not a 128-bit"),
            "2^128 is one too many"
        );
        assert!(bad(&[("a", "9", "0", false)]).0.contains("starts above"));
    }

    #[test]
    fn the_whole_map_has_one_lane() {
        let m = ShardMap::whole();
        assert_eq!((m.len(), m.lane_of(0), m.lane_of(u128::MAX)), (1, 0, 0));
        assert_eq!(m.shard_id(0), "");
        assert!(!m.is_empty());
    }
}
