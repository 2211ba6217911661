//! One destination stream of the Kinesis writer: its shard map ([`ShardMap`]) and one
//! [`Lane`] per open shard, so that one PutRecords per shard is in flight and a stream of N
//! shards moves N times as much as one lane could. Pure: no I/O.
//!
//! Order per symbol: a record waits in the lane its partition key's hash key maps to, so all of
//! a symbol's records wait in one lane, in order, and leave one request at a time.
//!
//! Resharding: a new map (from a periodic listing, or one taken because an answer placed
//! records on a shard other than their lane's) is not used at once. It waits ([`pending`]) while
//! any request of the stream is in flight, and no new request starts meanwhile; then every
//! queued record is sorted into the new lanes, each lane's records in their order. A symbol's
//! records are therefore never in two lanes at once, and a record queued before the change never
//! leaves after one queued later. Kinesis places each record by its hash key whatever the lanes
//! say, so a stale map costs throughput (two lanes on one shard), never order.
//!
//! [`pending`]: Destination::pending

use std::time::Instant;

use super::lane::{Entry, Lane, Outgoing};
use super::shards::{ShardMap, hash_key};

/// A lane and its batch in flight (settled by the answer; dead-lettered if the shutdown
/// deadline abandons the request).
#[derive(Debug, Default)]
pub struct ShardLane {
    /// The queue.
    pub lane: Lane,
    /// The batch of the request in flight: its user records (the request owns the data).
    pub in_flight: Vec<Outgoing>,
    /// Memory the request in flight holds: its user records, and its data twice more at most
    /// (the request's copy, and the JSON body the SDK makes of it, base64: 4/3).
    pub in_flight_bytes: usize,
}

/// One destination stream.
#[derive(Debug)]
pub struct Destination {
    /// The stream's name.
    pub name: String,
    /// The map the lanes follow: lane `i` writes to shard `i` of it.
    map: ShardMap,
    /// One lane per range of `map`.
    pub lanes: Vec<ShardLane>,
    /// A newer map, adopted once no request of this stream is in flight.
    pending: Option<ShardMap>,
    /// When to list the shards next; `None`: not planned (no periodic listing, or one is in
    /// flight).
    pub relist_at: Option<Instant>,
    /// A listing is in flight.
    pub listing: bool,
    /// When the shards were last listed (a listing asked for by a misplaced record waits for
    /// the minimum interval).
    pub listed_at: Option<Instant>,
}

impl Destination {
    /// A stream whose shards are not listed yet: one lane.
    pub fn new(name: String) -> Destination {
        Destination {
            name,
            map: ShardMap::whole(),
            lanes: vec![ShardLane::default()],
            pending: None,
            relist_at: None,
            listing: false,
            listed_at: None,
        }
    }

    /// The map the lanes follow.
    pub fn map(&self) -> &ShardMap {
        &self.map
    }

    /// Plans a listing as soon as `min_interval` after the last one allows (a record was
    /// stored on another shard than its lane's: the stream was resharded).
    pub fn relist_soon(&mut self, now: Instant, min_interval: std::time::Duration) {
        if self.listing {
            return;
        }
        let earliest = self.listed_at.map_or(now, |t| (t + min_interval).max(now));
        self.relist_at = Some(self.relist_at.map_or(earliest, |t| t.min(earliest)));
    }

    /// Whether a newer map waits for the in-flight requests to end (no request starts
    /// meanwhile).
    pub fn pending(&self) -> bool {
        self.pending.is_some()
    }

    /// The lane of a record whose partition key has `hash_key`.
    pub fn lane_of(&self, hash_key: u128) -> usize {
        self.map.lane_of(hash_key)
    }

    /// Queues `entry` (its key's hash key is `hash_key`) in its shard's lane.
    pub fn push(&mut self, hash_key: u128, entry: Entry) {
        let lane = self.map.lane_of(hash_key);
        self.lanes[lane].lane.push(entry);
    }

    /// Records queued in all lanes.
    pub fn len(&self) -> usize {
        self.lanes.iter().map(|l| l.lane.len()).sum()
    }

    /// Whether no record is queued.
    pub fn is_empty(&self) -> bool {
        self.lanes.iter().all(|l| l.lane.is_empty())
    }

    /// Bytes queued in all lanes.
    pub fn bytes(&self) -> usize {
        self.lanes.iter().map(|l| l.lane.bytes()).sum()
    }

    /// Memory the stream's records hold, waiting ([`Lane::held_bytes`]) and in flight
    /// ([`ShardLane::in_flight_bytes`]): what
    /// `kinesis.buffer_bytes_max` bounds.
    pub fn held_bytes(&self) -> usize {
        self.lanes
            .iter()
            .map(|l| l.lane.held_bytes() + l.in_flight_bytes)
            .sum()
    }

    /// Whether a request of this stream is in flight.
    pub fn in_flight(&self) -> bool {
        self.lanes.iter().any(|l| l.lane.in_flight)
    }

    /// Takes a listed map: the same map changes nothing; another one waits for the in-flight
    /// requests and is then adopted ([`Self::adopt_pending`]). Returns whether it differs.
    pub fn offer(&mut self, map: ShardMap) -> bool {
        if map == self.map {
            self.pending = None;
            return false;
        }
        self.pending = Some(map);
        self.adopt_pending();
        true
    }

    /// Adopts the pending map if no request is in flight: the lanes are rebuilt for it and
    /// every queued record moves to its new lane, in order. The new lanes inherit the longest
    /// backoff of the old ones (a throttled stream stays throttled). Returns whether it did.
    pub fn adopt_pending(&mut self) -> bool {
        if self.pending.is_none() || self.in_flight() {
            return false;
        }
        let Some(map) = self.pending.take() else {
            return false;
        };
        let not_before = self.lanes.iter().filter_map(|l| l.lane.not_before).max();
        let failures = self.lanes.iter().map(|l| l.lane.failures).max();
        let old = std::mem::take(&mut self.lanes);
        self.lanes = (0..map.len()).map(|_| ShardLane::default()).collect();
        for lane in &mut self.lanes {
            lane.lane.not_before = not_before;
            lane.lane.failures = failures.unwrap_or(0);
        }
        self.map = map;
        for mut old in old {
            for entry in old.lane.take_all() {
                let hash = hash_key(&entry.key);
                self.push(hash, entry);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    fn entry(key: &str, n: u8) -> Entry {
        Entry {
            key: key.into(),
            data: Bytes::copy_from_slice(&[n]),
            recv_time_ns: 0,
            enqueued: Instant::now(),
            first_attempt_ms: 0,
            attempts: 0,
            error: None,
            maybe_landed: false,
        }
    }

    /// `n` shards splitting the hash key space evenly.
    fn even(n: u128) -> ShardMap {
        let part = u128::MAX / n;
        let rows: Vec<(String, String, String)> = (0..n)
            .map(|i| {
                let end = if i == n - 1 {
                    u128::MAX
                } else {
                    part * (i + 1) - 1
                };
                (format!("s{i}"), (part * i).to_string(), end.to_string())
            })
            .collect();
        ShardMap::from_shards(
            rows.iter()
                .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str(), false)),
        )
        .expect("a map")
    }

    fn push(d: &mut Destination, key: &str, n: u8) {
        d.push(hash_key(key), entry(key, n));
    }

    /// Per key, the data bytes in the order the lanes would send them.
    fn per_key(d: &mut Destination) -> std::collections::BTreeMap<String, Vec<u8>> {
        let mut out: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
        for lane in &mut d.lanes {
            for e in lane.lane.take_all() {
                out.entry(e.key.to_string()).or_default().push(e.data[0]);
            }
        }
        out
    }

    const KEYS: [&str; 6] = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "a"];

    #[test]
    fn records_wait_in_the_lane_of_their_keys_hash() {
        let mut d = Destination::new("s".into());
        assert!(d.offer(even(4)));
        assert_eq!(d.lanes.len(), 4);
        for (i, key) in KEYS.iter().enumerate() {
            push(&mut d, key, i as u8);
        }
        let mut seen = 0;
        for lane in 0..d.lanes.len() {
            let range = d.map().ranges()[lane].clone();
            for e in d.lanes[lane].lane.take_all() {
                assert!(
                    (range.start..=range.end).contains(&hash_key(&e.key)),
                    "{}",
                    e.key
                );
                seen += 1;
            }
        }
        assert_eq!(seen, KEYS.len());
        // The six keys spread over more than one shard (their MD5s differ in the top bits).
        let lanes: std::collections::BTreeSet<usize> =
            KEYS.iter().map(|k| d.lane_of(hash_key(k))).collect();
        assert!(lanes.len() > 1, "{lanes:?}");
        assert!(d.is_empty());
        assert!(!d.offer(even(4)), "the same map changes nothing");
    }

    #[test]
    fn a_misplaced_record_plans_a_listing_no_sooner_than_the_minimum_interval() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut d = Destination::new("s".into());
        d.relist_soon(t0, second);
        assert_eq!(d.relist_at, Some(t0), "never listed: at once");
        d.listed_at = Some(t0);
        d.relist_at = None;
        d.relist_soon(t0, second);
        assert_eq!(d.relist_at, Some(t0 + second));
        d.relist_at = Some(t0 + second / 2);
        d.relist_soon(t0, second);
        assert_eq!(d.relist_at, Some(t0 + second / 2), "an earlier plan stays");
        d.relist_at = None;
        d.listing = true;
        d.relist_soon(t0 + 2 * second, second);
        assert_eq!(d.relist_at, None, "one is in flight");
    }

    #[test]
    fn a_new_map_waits_for_requests_in_flight_then_keeps_each_keys_order() {
        let mut d = Destination::new("s".into());
        d.offer(even(2));
        for n in 0..30u8 {
            push(&mut d, KEYS[usize::from(n) % KEYS.len()], n);
        }
        d.lanes[1].lane.in_flight = true;
        d.lanes[0].lane.not_before = Some(Instant::now() + Duration::from_secs(1));
        assert!(d.offer(even(4)), "a split");
        assert!(d.pending(), "waits for the request in flight");
        assert_eq!(d.lanes.len(), 2);
        d.lanes[1].lane.in_flight = false;
        assert!(d.adopt_pending());
        assert!(!d.pending());
        assert_eq!(d.lanes.len(), 4);
        assert!(
            d.lanes.iter().all(|l| l.lane.not_before.is_some()),
            "backoff kept"
        );
        assert_eq!(d.len(), 30);
        for (lane, l) in d.lanes.iter_mut().enumerate() {
            for o in l.lane.take_plain(usize::MAX, usize::MAX) {
                assert_eq!(d.map.lane_of(hash_key(&o.key)), lane, "{}", o.key);
                l.lane
                    .push(o.entries.into_iter().next().expect("one entry"));
            }
        }
        let order = per_key(&mut d);
        for (i, key) in KEYS.iter().enumerate() {
            let expected: Vec<u8> = (0..30u8)
                .filter(|n| usize::from(*n) % KEYS.len() == i)
                .collect();
            assert_eq!(order[*key], expected, "{key}");
        }
        // A merge back to one shard keeps the order too.
        for n in 0..12u8 {
            push(&mut d, KEYS[usize::from(n) % 3], n);
        }
        assert!(d.offer(ShardMap::whole()));
        assert_eq!(d.lanes.len(), 1);
        let order = per_key(&mut d);
        assert_eq!(order["BTCUSDT"], [0, 3, 6, 9]);
        assert_eq!(d.bytes(), 0);
    }
}
