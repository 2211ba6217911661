//! One shard's queue (a destination stream has one lane per open shard, see
//! [`super::shards`]): records wait here until a PutRecords batch closes (500
//! records, 5 MiB, or the linger time), and failed entries come back to the front, so a
//! partition key's records always leave in order. Pure: no I/O, time passed in.
//!
//! Order per partition key: one request per lane is in flight at a time; a batch takes the
//! oldest records; entries that fail go back before everything newer. With aggregation each
//! key has at most one Kinesis record per request, so a failure can never let a later record
//! of the same key overtake it. Without aggregation a request may carry several records of a
//! key; Kinesis throttles a shard for the rest of a request, so failures come as a suffix per
//! key and order holds; a failure followed by a success of the same key in one request (a
//! rare `InternalFailure`) is counted in [`Verdict::overtaken`].

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::aggregate::{Aggregator, RECORD_BYTES_MAX};
pub use crate::config::Aggregate;

/// Per-record overhead Kinesis counts besides data and key: none; the 5 MiB limit is data plus
/// partition keys.
const KEY_OVERHEAD: usize = 0;

/// A user record waiting for delivery.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Partition key (the symbol).
    pub key: std::sync::Arc<str>,
    /// Payload.
    pub data: Bytes,
    /// When the frame was received (monotonic ns), for the receipt-to-ack latency.
    pub recv_time_ns: u64,
    /// When the record entered the writer; the delivery deadline counts from here.
    pub enqueued: Instant,
    /// Unix ms of the first attempt (0 before).
    pub first_attempt_ms: i64,
    /// Attempts so far.
    pub attempts: u32,
    /// The last error.
    pub error: Option<std::sync::Arc<str>>,
    /// An attempt got no answer (timeout, lost connection, HTTP 500, the shutdown deadline):
    /// the record may be in the stream already.
    pub maybe_landed: bool,
}

impl Entry {
    /// Bytes PutRecords counts for this record.
    pub fn cost(&self) -> usize {
        self.data.len() + self.key.len() + KEY_OVERHEAD
    }

    /// Memory the record holds while queued, what `kinesis.buffer_bytes_max` bounds: its data
    /// (a copy of its own, or a frame the reader copied into a small pooled chunk, so no
    /// receive buffer is pinned behind it), its key and the entry itself.
    pub fn held_bytes(&self) -> usize {
        self.cost() + std::mem::size_of::<Entry>()
    }
}

/// One Kinesis record of a request and the user records it carries.
#[derive(Debug)]
pub struct Outgoing {
    /// Partition key.
    pub key: std::sync::Arc<str>,
    /// Kinesis record data (the user record, or an aggregate of several); empty once the
    /// request is built ([`super::send::put_records`] moves it into the request).
    pub data: Bytes,
    /// The user records, in order.
    pub entries: Vec<Entry>,
}

/// What the response did to a batch.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// User records delivered.
    pub delivered: usize,
    /// User records back in the queue.
    pub requeued: usize,
    /// Keys whose failed record was followed by a delivered one in the same request.
    pub overtaken: usize,
}

/// Kinesis' limit on the records one shard takes per second.
pub const SHARD_RECORDS_PER_S: usize = 1000;

/// Records a lane's queue keeps room for however short it gets (about 110 KiB of entries);
/// above, its room follows its length ([`Lane::trim_capacity`]).
pub const QUEUE_CAPACITY_KEPT: usize = 1024;

/// One partition key's aggregate being built by [`Lane::take_aggregated`].
struct Building {
    key: std::sync::Arc<str>,
    aggregator: Aggregator,
    entries: Vec<Entry>,
    /// A record of this key did not fit: every later one waits too, keeping the key's order.
    closed: bool,
}

impl Building {
    fn new(key: std::sync::Arc<str>) -> Building {
        Building {
            key,
            aggregator: Aggregator::new(),
            entries: Vec::new(),
            closed: false,
        }
    }

    /// Adds `entry` if it fits (1 MiB per record, `bytes_max` per request, counted in
    /// `total`); otherwise closes the key and hands the entry back. The request's first
    /// record always fits `bytes_max` (as in [`Lane::take_plain`]): a request's share of the
    /// memory budget can be smaller than one record, which must still leave.
    fn offer(&mut self, entry: Entry, total: &mut usize, bytes_max: usize) -> Option<Entry> {
        let current = if self.entries.is_empty() {
            0
        } else {
            self.aggregator.size() + self.key.len()
        };
        let next = self.aggregator.size_with(&entry.key, &entry.data) + self.key.len();
        let over = *total > 0 && *total + next - current > bytes_max;
        if self.closed || next > RECORD_BYTES_MAX || over {
            self.closed = true;
            return Some(entry);
        }
        *total += next - current;
        self.aggregator.push(&entry.key, entry.data.clone());
        self.entries.push(entry);
        None
    }

    fn finish(mut self) -> Option<Outgoing> {
        let (_, data) = self.aggregator.finish()?;
        Some(Outgoing {
            key: self.key,
            data: Bytes::from(data),
            entries: self.entries,
        })
    }
}

/// The queue of one shard of a destination stream.
#[derive(Debug, Default)]
pub struct Lane {
    queue: VecDeque<Entry>,
    bytes: usize,
    /// A request of this lane is in flight.
    pub in_flight: bool,
    /// Failed attempts in a row (backoff exponent).
    pub failures: u32,
    /// Kinesis records sent in the last second, per request (for [`Aggregate::Auto`]).
    sent: VecDeque<(Instant, usize)>,
    /// The sum of `sent`.
    sent_last_second: usize,
    /// No request before this instant (backoff).
    pub not_before: Option<Instant>,
}

impl Lane {
    /// Appends a new record.
    pub fn push(&mut self, entry: Entry) {
        self.bytes += entry.cost();
        self.queue.push_back(entry);
    }

    /// Records waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Memory the waiting records hold ([`Entry::held_bytes`] summed).
    pub fn held_bytes(&self) -> usize {
        self.bytes + self.queue.len() * std::mem::size_of::<Entry>()
    }

    /// Whether a batch should leave now: full, or its oldest record has lingered long enough,
    /// or `flush` (shutdown). Backoff and in-flight requests hold it back.
    pub fn ready(
        &self,
        now: Instant,
        linger: Duration,
        records_max: usize,
        bytes_max: usize,
        flush: bool,
    ) -> bool {
        let Some(oldest) = self.queue.front() else {
            return false;
        };
        if self.in_flight || self.not_before.is_some_and(|t| now < t) {
            return false;
        }
        flush
            || self.queue.len() >= records_max
            || self.bytes >= bytes_max
            || now.duration_since(oldest.enqueued) >= linger
    }

    /// The instant the lane becomes ready by time alone, if it holds anything.
    pub fn due(&self, linger: Duration) -> Option<Instant> {
        let linger_due = self.queue.front()?.enqueued + linger;
        Some(self.not_before.map_or(linger_due, |t| t.max(linger_due)))
    }

    /// Removes the oldest records whose delivery deadline passed (`now - enqueued >=
    /// deliver_within`), oldest first.
    pub fn expire(&mut self, now: Instant, deliver_within: Duration) -> Vec<Entry> {
        let mut dead = Vec::new();
        while self
            .queue
            .front()
            .is_some_and(|e| now.duration_since(e.enqueued) >= deliver_within)
        {
            if let Some(e) = self.queue.pop_front() {
                self.bytes -= e.cost();
                dead.push(e);
            }
        }
        dead
    }

    /// Takes the next batch: the oldest records, one Kinesis record each, up to the limits.
    pub fn take_plain(&mut self, records_max: usize, bytes_max: usize) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let mut bytes = 0;
        while out.len() < records_max {
            let Some(next) = self.queue.front() else {
                break;
            };
            if !out.is_empty() && bytes + next.cost() > bytes_max {
                break;
            }
            let Some(entry) = self.queue.pop_front() else {
                break;
            };
            bytes += entry.cost();
            self.bytes -= entry.cost();
            out.push(Outgoing {
                key: entry.key.clone(),
                data: entry.data.clone(),
                entries: vec![entry],
            });
        }
        out
    }

    /// Takes the next batch with KPL aggregation: for each partition key (in order of first
    /// appearance), one aggregated record of its oldest records up to 1 MiB; records that do
    /// not fit stay queued, in order, for the next request.
    ///
    /// Cost: proportional to the records looked at, not to the queue: the scan pops from the
    /// front and stops once nothing more can fit (the request's bytes are reached, or a request's
    /// worth of records had to be passed over), and what it passed over goes back to the front.
    /// Keys are found through a hash map. (It used to drain and rebuild the whole queue per
    /// request, with a linear search per key: quadratic while a long queue catches up.)
    pub fn take_aggregated(&mut self, records_max: usize, bytes_max: usize) -> Vec<Outgoing> {
        let mut building: Vec<Building> = Vec::new();
        let mut index: HashMap<std::sync::Arc<str>, usize> = HashMap::new();
        let mut passed = Vec::new();
        let (mut total, mut passed_bytes) = (0usize, 0usize);
        while total < bytes_max && passed_bytes < bytes_max {
            let Some(entry) = self.queue.pop_front() else {
                break;
            };
            self.bytes -= entry.cost();
            let at = match index.get(&entry.key) {
                Some(&at) => Some(at),
                None if building.len() < records_max => {
                    index.insert(entry.key.clone(), building.len());
                    building.push(Building::new(entry.key.clone()));
                    Some(building.len() - 1)
                }
                None => None,
            };
            let left = match at {
                Some(at) => building[at].offer(entry, &mut total, bytes_max),
                None => Some(entry),
            };
            if let Some(entry) = left {
                // Passed over: it and everything later of its key wait for the next request.
                passed_bytes += entry.cost();
                passed.push(entry);
            }
        }
        self.requeue_front(passed);
        building
            .into_iter()
            .filter(|b| !b.entries.is_empty())
            .filter_map(Building::finish)
            .collect()
    }

    /// Takes the next batch, aggregated or not as `aggregate` says; with
    /// [`Aggregate::Auto`], aggregated when the plain records would take the records this lane
    /// sent in the last second above [`SHARD_RECORDS_PER_S`], a shard's limit.
    pub fn take(
        &mut self,
        aggregate: Aggregate,
        now: Instant,
        records_max: usize,
        bytes_max: usize,
    ) -> Vec<Outgoing> {
        while self
            .sent
            .front()
            .is_some_and(|&(at, _)| now.duration_since(at) >= Duration::from_secs(1))
        {
            if let Some((_, n)) = self.sent.pop_front() {
                self.sent_last_second -= n;
            }
        }
        let aggregated = match aggregate {
            Aggregate::Off => false,
            Aggregate::On => true,
            Aggregate::Auto => {
                self.sent_last_second + self.queue.len().min(records_max) > SHARD_RECORDS_PER_S
            }
        };
        let batch = if aggregated {
            self.take_aggregated(records_max, bytes_max)
        } else {
            self.take_plain(records_max, bytes_max)
        };
        if aggregate == Aggregate::Auto && !batch.is_empty() {
            self.sent.push_back((now, batch.len()));
            self.sent_last_second += batch.len();
        }
        self.trim_capacity();
        batch
    }

    /// Gives back the queue's room once a backlog has drained: a `VecDeque` keeps the capacity
    /// of its longest moment, so one slow minute of the server would keep the room of its
    /// backlog (tens of MiB of entries) resident for the rest of the run. Beyond
    /// [`QUEUE_CAPACITY_KEPT`], the capacity stays within 4x the records waiting; shrinking
    /// to twice them makes the copy rare (amortised O(1) per record).
    fn trim_capacity(&mut self) {
        let len = self.queue.len();
        if self.queue.capacity() > QUEUE_CAPACITY_KEPT.max(4 * len) {
            self.queue.shrink_to(QUEUE_CAPACITY_KEPT.max(2 * len));
        }
    }

    /// The queue's room, in records (for tests of the bound).
    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// Takes every record, in order (a new shard map re-sorts them into new lanes).
    pub fn take_all(&mut self) -> VecDeque<Entry> {
        self.bytes = 0;
        std::mem::take(&mut self.queue)
    }

    /// Puts a whole failed batch back at the front, in its order.
    pub fn requeue_all(&mut self, batch: Vec<Outgoing>) -> usize {
        let entries: Vec<Entry> = batch.into_iter().flat_map(|o| o.entries).collect();
        let n = entries.len();
        self.requeue_front(entries);
        n
    }

    fn requeue_front(&mut self, entries: Vec<Entry>) {
        for entry in entries.into_iter().rev() {
            self.bytes += entry.cost();
            self.queue.push_front(entry);
        }
    }

    /// Applies a partial result: `failed[i]` tells whether record `i` of the batch failed.
    /// Failed records go back to the front in order; delivered ones are returned in `done`.
    pub fn settle(
        &mut self,
        batch: Vec<Outgoing>,
        failed: &[bool],
        done: &mut Vec<Entry>,
    ) -> Verdict {
        let mut verdict = Verdict::default();
        let mut back = Vec::new();
        let mut failed_keys: Vec<std::sync::Arc<str>> = Vec::new();
        for (i, outgoing) in batch.into_iter().enumerate() {
            if failed.get(i).copied().unwrap_or(true) {
                if !failed_keys.contains(&outgoing.key) {
                    failed_keys.push(outgoing.key.clone());
                }
                verdict.requeued += outgoing.entries.len();
                back.extend(outgoing.entries);
            } else {
                if failed_keys.contains(&outgoing.key) {
                    verdict.overtaken += 1;
                }
                verdict.delivered += outgoing.entries.len();
                done.extend(outgoing.entries);
            }
        }
        self.requeue_front(back);
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, data: &[u8], at: Instant) -> Entry {
        Entry {
            key: key.into(),
            data: Bytes::copy_from_slice(data),
            recv_time_ns: 0,
            enqueued: at,
            first_attempt_ms: 0,
            attempts: 0,
            error: None,
            maybe_landed: false,
        }
    }

    fn keys_and_data(lane: &mut Lane) -> Vec<(String, Vec<u8>)> {
        lane.take_plain(usize::MAX, usize::MAX)
            .into_iter()
            .map(|o| (o.key.to_string(), o.data.to_vec()))
            .collect()
    }

    /// A backlog's room is given back as it drains (the queue stays within 4x its length above
    /// [`QUEUE_CAPACITY_KEPT`]), and every record still leaves once, in order, in both modes.
    #[test]
    fn a_drained_backlog_gives_its_room_back_and_loses_nothing() {
        let t0 = Instant::now();
        for aggregate in [Aggregate::Off, Aggregate::On] {
            let mut lane = Lane::default();
            let n = 50_000u32;
            for i in 0..n {
                lane.push(entry(["A", "B", "C"][i as usize % 3], &i.to_le_bytes(), t0));
            }
            assert!(lane.capacity() >= n as usize);
            let mut seen = Vec::new();
            let mut capacity_max_late = 0;
            while !lane.is_empty() {
                let batch = lane.take(aggregate, t0, 500, 5 << 20);
                assert!(
                    lane.capacity() <= QUEUE_CAPACITY_KEPT.max(4 * lane.len()),
                    "room {} for {} records",
                    lane.capacity(),
                    lane.len()
                );
                if lane.len() < 1000 {
                    capacity_max_late = capacity_max_late.max(lane.capacity());
                }
                for o in batch {
                    for e in o.entries {
                        let bytes: [u8; 4] = e.data[..].try_into().expect("4 bytes");
                        seen.push(u32::from_le_bytes(bytes));
                    }
                }
            }
            assert!(
                capacity_max_late <= QUEUE_CAPACITY_KEPT,
                "{capacity_max_late}"
            );
            // Per key, in order; every record once.
            for key in 0..3 {
                let ids: Vec<u32> = seen.iter().copied().filter(|i| i % 3 == key).collect();
                let expected: Vec<u32> = (0..n).filter(|i| i % 3 == key).collect();
                assert_eq!(ids, expected, "{aggregate:?}: key {key}");
            }
            assert_eq!(seen.len(), n as usize);
        }
    }

    #[test]
    fn batches_close_on_count_bytes_or_linger() {
        let t0 = Instant::now();
        let linger = Duration::from_millis(100);
        let mut lane = Lane::default();
        assert!(!lane.ready(t0, linger, 3, 1000, true), "empty");
        lane.push(entry("A", b"xx", t0));
        assert!(!lane.ready(t0, linger, 3, 1000, false));
        assert!(lane.ready(t0, linger, 3, 1000, true), "flush");
        assert!(lane.ready(t0 + linger, linger, 3, 1000, false), "lingered");
        assert_eq!(lane.due(linger), Some(t0 + linger));
        lane.push(entry("A", b"yy", t0));
        lane.push(entry("B", b"zz", t0));
        assert!(lane.ready(t0, linger, 3, 1000, false), "full by count");
        assert!(lane.ready(t0, linger, 10, 9, false), "full by bytes");
        lane.in_flight = true;
        assert!(
            !lane.ready(t0 + linger, linger, 3, 1000, true),
            "one request at a time"
        );
        lane.in_flight = false;
        lane.not_before = Some(t0 + Duration::from_secs(1));
        assert!(
            !lane.ready(t0 + linger, linger, 3, 1000, true),
            "backing off"
        );
        assert_eq!(lane.due(linger), Some(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn plain_batches_respect_both_limits() {
        let t0 = Instant::now();
        let mut lane = Lane::default();
        for i in 0..10u8 {
            lane.push(entry("K", &[i; 9], t0));
        }
        assert_eq!(lane.bytes(), 100);
        let entry_bytes = std::mem::size_of::<Entry>();
        assert_eq!(
            lane.held_bytes(),
            100 + 10 * entry_bytes,
            "data, keys and entries"
        );
        let batch = lane.take_plain(4, 1000);
        assert_eq!(batch.len(), 4);
        let batch = lane.take_plain(100, 25);
        assert_eq!(batch.len(), 2, "10 bytes each, 25 allowed");
        assert_eq!(batch[0].data[0], 4, "oldest first");
        assert_eq!(lane.len(), 4);
        assert_eq!(lane.bytes(), 40);
    }

    #[test]
    fn failed_entries_return_before_newer_ones_of_their_key() {
        let t0 = Instant::now();
        let mut lane = Lane::default();
        for (key, data) in [("A", 1u8), ("B", 2), ("A", 3), ("B", 4)] {
            lane.push(entry(key, &[data], t0));
        }
        let batch = lane.take_plain(3, 1000);
        lane.push(entry("A", &[5], t0));
        let mut done = Vec::new();
        // A's second record and B's first fail; A's first succeeded.
        let verdict = lane.settle(batch, &[false, true, true], &mut done);
        assert_eq!(
            verdict,
            Verdict {
                delivered: 1,
                requeued: 2,
                overtaken: 0
            }
        );
        assert_eq!(done[0].data[0], 1);
        assert_eq!(
            keys_and_data(&mut lane),
            [
                ("B".to_string(), vec![2]),
                ("A".to_string(), vec![3]),
                ("B".to_string(), vec![4]),
                ("A".to_string(), vec![5])
            ]
        );
        // A failure followed by a success of the same key is reported.
        for data in [1u8, 2] {
            lane.push(entry("A", &[data], t0));
        }
        let batch = lane.take_plain(2, 1000);
        let verdict = lane.settle(batch, &[true, false], &mut done);
        assert_eq!(verdict.overtaken, 1);
    }

    #[test]
    fn aggregation_packs_one_record_per_key_and_keeps_the_rest_in_order() {
        let t0 = Instant::now();
        let mut lane = Lane::default();
        for i in 0..6u8 {
            lane.push(entry(if i % 2 == 0 { "A" } else { "B" }, &[i], t0));
        }
        let batch = lane.take_aggregated(500, 5 << 20);
        assert_eq!(batch.len(), 2);
        assert!(lane.is_empty());
        let users = super::super::aggregate::deaggregate(&batch[0].key, &batch[0].data)
            .expect("an aggregate");
        let data: Vec<u8> = users.iter().map(|u| u.data[0]).collect();
        assert_eq!((batch[0].key.as_ref(), data), ("A", vec![0, 2, 4]));
        assert_eq!(batch[1].entries.len(), 3);

        // A key over 1 MiB: its first records go now, the rest wait in order.
        let big = vec![7u8; 400 << 10];
        for i in 0..4u8 {
            let mut data = big.clone();
            data[0] = i;
            lane.push(entry("A", &data, t0));
        }
        lane.push(entry("B", b"b", t0));
        let batch = lane.take_aggregated(500, 5 << 20);
        assert_eq!(batch.len(), 2);
        assert_eq!(
            batch[0].entries.len(),
            2,
            "two 400 KiB records fit in 1 MiB"
        );
        assert!(batch[0].data.len() + batch[0].key.len() <= RECORD_BYTES_MAX);
        let rest: Vec<u8> = lane
            .take_plain(10, usize::MAX)
            .iter()
            .map(|o| o.data[0])
            .collect();
        assert_eq!(rest, [2, 3]);
    }

    /// Many requests' worth of records of a few keys, some large: every batch keeps each key's
    /// order, the byte count stays exact, and a key passed over keeps its place.
    #[test]
    fn aggregated_batches_of_a_long_queue_keep_each_keys_order_and_the_byte_count() {
        let t0 = Instant::now();
        let mut lane = Lane::default();
        let keys = ["A", "B", "C", "D"];
        let mut rng = 7u64;
        for i in 0..20_000u32 {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = keys[(rng >> 33) as usize % keys.len()];
            // Mostly small, now and then 300 KiB, so that keys close and get passed over.
            let len = if (rng >> 20).is_multiple_of(500) {
                300 << 10
            } else {
                60
            };
            let mut data = vec![0u8; len];
            data[..4].copy_from_slice(&i.to_be_bytes());
            lane.push(entry(key, &data, t0));
        }
        let mut seen: std::collections::BTreeMap<String, Vec<u32>> = Default::default();
        let mut requests = 0;
        while !lane.is_empty() {
            let batch = lane.take_aggregated(3, 2 << 20);
            assert!(!batch.is_empty(), "progress");
            assert!(batch.len() <= 3);
            requests += 1;
            for o in &batch {
                assert!(o.data.len() + o.key.len() <= RECORD_BYTES_MAX);
                let users =
                    super::super::aggregate::deaggregate(&o.key, &o.data).expect("aggregate");
                for u in users {
                    let n = u32::from_be_bytes(u.data[..4].try_into().expect("4 bytes"));
                    seen.entry(u.partition_key).or_default().push(n);
                }
            }
            let left: usize = lane.queue.iter().map(Entry::cost).sum();
            assert_eq!(lane.bytes(), left);
        }
        assert!(requests > 1);
        let total: usize = seen.values().map(Vec::len).sum();
        assert_eq!(total, 20_000);
        for (key, ids) in seen {
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "{key} in order");
        }
    }

    /// `Auto` sends plain records while a shard's last second stays within 1000 records, and
    /// aggregates the request that would pass it.
    #[test]
    fn auto_aggregates_only_past_the_shards_records_per_second() {
        let t0 = Instant::now();
        let mut lane = Lane::default();
        let fill = |lane: &mut Lane| {
            for i in 0..500u32 {
                lane.push(entry(
                    if i % 2 == 0 { "A" } else { "B" },
                    &i.to_be_bytes(),
                    t0,
                ));
            }
        };
        fill(&mut lane);
        assert_eq!(lane.take(Aggregate::Auto, t0, 500, 5 << 20).len(), 500);
        fill(&mut lane);
        assert_eq!(
            lane.take(Aggregate::Auto, t0, 500, 5 << 20).len(),
            500,
            "1000: at the limit"
        );
        fill(&mut lane);
        let batch = lane.take(Aggregate::Auto, t0, 500, 5 << 20);
        assert_eq!(batch.len(), 2, "past it: one aggregate per key");
        assert_eq!(batch[0].entries.len() + batch[1].entries.len(), 500);
        fill(&mut lane);
        let later = t0 + Duration::from_secs(1);
        assert_eq!(
            lane.take(Aggregate::Auto, later, 500, 5 << 20).len(),
            500,
            "a new second"
        );
        fill(&mut lane);
        assert_eq!(lane.take(Aggregate::Off, later, 500, 5 << 20).len(), 500);
        fill(&mut lane);
        assert_eq!(lane.take(Aggregate::On, later, 500, 5 << 20).len(), 2);
    }

    #[test]
    fn expiry_takes_the_oldest() {
        let t0 = Instant::now();
        let mut lane = Lane::default();
        lane.push(entry("A", b"1", t0));
        lane.push(entry("A", b"2", t0 + Duration::from_secs(5)));
        let dead = lane.expire(t0 + Duration::from_secs(6), Duration::from_secs(3));
        assert_eq!(dead.len(), 1);
        assert_eq!(lane.len(), 1);
        assert_eq!(lane.bytes(), 2);
    }
}
