//! One destination stream's queue: records wait here until a PutRecords batch closes (500
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

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::aggregate::{Aggregator, RECORD_BYTES_MAX};

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
    /// Kinesis record data (the user record, or an aggregate of several).
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

/// The queue of one destination stream.
#[derive(Debug, Default)]
pub struct Lane {
    queue: VecDeque<Entry>,
    bytes: usize,
    /// A request of this lane is in flight.
    pub in_flight: bool,
    /// Failed attempts in a row (backoff exponent).
    pub failures: u32,
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
    pub fn take_aggregated(&mut self, records_max: usize, bytes_max: usize) -> Vec<Outgoing> {
        struct Building {
            key: std::sync::Arc<str>,
            aggregator: Aggregator,
            entries: Vec<Entry>,
            closed: bool,
        }
        let mut building: Vec<Building> = Vec::new();
        let mut kept = VecDeque::with_capacity(self.queue.len());
        let mut total = 0usize;
        for entry in self.queue.drain(..) {
            let at = building.iter().position(|b| b.key == entry.key);
            let at = match at {
                Some(at) => at,
                None if building.len() < records_max => {
                    building.push(Building {
                        key: entry.key.clone(),
                        aggregator: Aggregator::new(),
                        entries: Vec::new(),
                        closed: false,
                    });
                    building.len() - 1
                }
                None => {
                    kept.push_back(entry);
                    continue;
                }
            };
            let b = &mut building[at];
            let current = if b.entries.is_empty() {
                0
            } else {
                b.aggregator.size() + b.key.len()
            };
            let next = b.aggregator.size_with(&entry.key, &entry.data) + b.key.len();
            let fits = !b.closed && next <= RECORD_BYTES_MAX && total + next - current <= bytes_max;
            if fits {
                total += next - current;
                b.aggregator.push(&entry.key, entry.data.clone());
                b.entries.push(entry);
            } else {
                // Everything later of this key waits too, keeping its order.
                b.closed = true;
                kept.push_back(entry);
            }
        }
        self.queue = kept;
        self.bytes = self.queue.iter().map(Entry::cost).sum();
        building
            .into_iter()
            .filter(|b| !b.entries.is_empty())
            .filter_map(|mut b| {
                let (_, data) = b.aggregator.finish()?;
                Some(Outgoing {
                    key: b.key,
                    data: Bytes::from(data),
                    entries: b.entries,
                })
            })
            .collect()
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
