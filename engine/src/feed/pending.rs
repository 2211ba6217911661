//! Notices waiting beside the sidecar's full notice ring, in the order they happened: control
//! notices (connection lost or back, symbol removed or halted) and gap notices (`Wire`,
//! `QueueFull`). Nothing is dropped: a gap notice whose symbol, stream and cause already has one
//! waiting (and no control notice of the symbol came since) is merged into it: the waiting
//! notice then names the smallest id range covering both. A merged range may name ids that
//! did arrive in between: their repair is a duplicate the sinks' trade order drops
//! ([`crate::sink::order`]), and a depth gap is a re-sync either way; what must not happen is a
//! repair never asked for (issue 11: gap notices dropped at a full ring left trades lost at a
//! consumer's full ring unrepaired until its hold gave up).
//!
//! Bounded: at most one waiting gap notice per symbol, stream and cause since the symbol's last
//! control notice, and control notices come once per lost or regained connection or pair
//! change. Pure (no clock, no ring): [`PendingNotices::flush`] takes the ring's push.

use std::collections::VecDeque;

use super::event::{Cause, Notice};
use crate::stream::StreamKind;

/// Notices [`PendingNotices`] keeps room for without allocating.
const RESERVED: usize = 64;

/// See the module documentation.
#[derive(Debug)]
pub struct PendingNotices {
    /// Waiting notices, oldest first.
    queue: VecDeque<Notice>,
    /// Notices that left `queue` so far: a notice's sequence number minus this is its place.
    popped: u64,
    /// Per (symbol, stream, cause): 1 + the sequence number of its last waiting gap notice
    /// (0: none). Grown on demand (a cold allocation, once per new symbol).
    gap_at: Vec<u64>,
    /// Per symbol: 1 + the sequence number of its last control notice (0: none).
    control_at: Vec<u64>,
    /// Consumers (for the cause's slot: `Wire`, then `QueueFull` per consumer).
    consumers: usize,
}

impl PendingNotices {
    /// An empty queue for a reader feeding `consumers` consumers.
    pub fn new(consumers: usize) -> PendingNotices {
        PendingNotices {
            queue: VecDeque::with_capacity(RESERVED),
            popped: 0,
            gap_at: Vec::new(),
            control_at: Vec::new(),
            consumers,
        }
    }

    /// Whether nothing waits.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Notices waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Queues `notice` behind the others; a gap notice is merged into a waiting one of the same
    /// symbol, stream and cause when no control notice of the symbol came since. Returns
    /// whether it was merged.
    #[cold]
    pub fn push(&mut self, notice: Notice) -> bool {
        let next = self.popped + self.queue.len() as u64 + 1;
        let symbol = usize::from(notice.gap.symbol);
        if !notice.cause.is_gap() {
            grow(&mut self.control_at, symbol)[symbol] = next;
            self.queue.push_back(notice);
            return false;
        }
        let key = self.key(&notice);
        let control = self.control_at.get(symbol).copied().unwrap_or(0);
        let at = grow(&mut self.gap_at, key)[key];
        if at > self.popped && at > control {
            let place = (at - 1 - self.popped) as usize;
            if let Some(waiting) = self.queue.get_mut(place) {
                waiting.gap.last_good = waiting.gap.last_good.min(notice.gap.last_good);
                waiting.gap.first_seen = waiting.gap.first_seen.max(notice.gap.first_seen);
                return true;
            }
        }
        self.gap_at[key] = next;
        self.queue.push_back(notice);
        false
    }

    /// Sends waiting notices, oldest first, while `send` takes them; returns how many still
    /// wait.
    #[cold]
    pub fn flush(&mut self, mut send: impl FnMut(Notice) -> bool) -> usize {
        while let Some(&notice) = self.queue.front() {
            if !send(notice) {
                break;
            }
            self.queue.pop_front();
            self.popped += 1;
        }
        self.queue.len()
    }

    /// The (symbol, stream, cause) slot of a gap notice.
    fn key(&self, notice: &Notice) -> usize {
        let causes = self.consumers + 1;
        let cause = match notice.cause {
            Cause::QueueFull { consumer } => 1 + consumer.min(self.consumers),
            _ => 0,
        };
        let kind = notice.gap.kind as usize;
        (usize::from(notice.gap.symbol) * StreamKind::ALL.len() + kind) * (causes + 1) + cause
    }
}

/// `table`, long enough to index `at`.
fn grow(table: &mut Vec<u64>, at: usize) -> &mut Vec<u64> {
    if table.len() <= at {
        table.resize(at + 1, 0);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::sequence::GapNotice;

    fn gap(symbol: u16, kind: StreamKind, missing: std::ops::RangeInclusive<i64>) -> GapNotice {
        GapNotice {
            symbol,
            kind,
            last_good: missing.start() - 1,
            first_seen: missing.end() + 1,
        }
    }

    fn full(consumer: usize, symbol: u16, missing: std::ops::RangeInclusive<i64>) -> Notice {
        Notice {
            gap: gap(symbol, StreamKind::Trade, missing),
            cause: Cause::QueueFull { consumer },
        }
    }

    fn control(symbol: u16, cause: Cause) -> Notice {
        Notice {
            gap: GapNotice {
                symbol,
                kind: StreamKind::Depth,
                last_good: 0,
                first_seen: 1,
            },
            cause,
        }
    }

    fn drain(pending: &mut PendingNotices) -> Vec<Notice> {
        let mut out = Vec::new();
        assert_eq!(
            pending.flush(|n| {
                out.push(n);
                true
            }),
            0
        );
        out
    }

    #[test]
    fn gaps_of_one_stream_merge_into_the_waiting_one() {
        let mut pending = PendingNotices::new(2);
        assert!(!pending.push(full(0, 3, 10..=12)));
        assert!(!pending.push(full(1, 3, 11..=11)), "another consumer");
        assert!(!pending.push(full(0, 4, 5..=5)), "another symbol");
        assert!(pending.push(full(0, 3, 20..=20)));
        assert!(pending.push(full(0, 3, 15..=16)));
        let wire = Notice {
            gap: gap(3, StreamKind::Trade, 30..=31),
            cause: Cause::Wire,
        };
        assert!(!pending.push(wire), "another cause");
        let out = drain(&mut pending);
        let ranges: Vec<_> = out
            .iter()
            .map(|n| (n.cause, n.gap.missing_range()))
            .collect();
        assert_eq!(
            ranges,
            [
                (Cause::QueueFull { consumer: 0 }, 10..=20),
                (Cause::QueueFull { consumer: 1 }, 11..=11),
                (Cause::QueueFull { consumer: 0 }, 5..=5),
                (Cause::Wire, 30..=31),
            ]
        );
    }

    /// A gap after a control notice of its symbol stays after it: the sidecar sees them in the
    /// order they happened.
    #[test]
    fn a_gap_never_merges_across_a_control_notice_of_its_symbol() {
        let mut pending = PendingNotices::new(1);
        pending.push(full(0, 0, 1..=1));
        pending.push(control(0, Cause::Disconnected));
        assert!(!pending.push(full(0, 0, 5..=5)));
        assert!(pending.push(full(0, 0, 7..=7)));
        pending.push(control(1, Cause::Reconnected));
        assert!(pending.push(full(0, 0, 9..=9)), "another symbol's control");
        let out = drain(&mut pending);
        let got: Vec<_> = out
            .iter()
            .map(|n| (n.cause, n.gap.missing_range()))
            .collect();
        assert_eq!(got[0], (Cause::QueueFull { consumer: 0 }, 1..=1));
        assert_eq!(got[1].0, Cause::Disconnected);
        assert_eq!(got[2], (Cause::QueueFull { consumer: 0 }, 5..=9));
        assert_eq!(got[3].0, Cause::Reconnected);
        assert_eq!(got.len(), 4);
    }

    /// Sent notices are never merged into: a later gap waits as a new notice.
    #[test]
    fn a_sent_notice_is_not_merged_into() {
        let mut pending = PendingNotices::new(1);
        pending.push(full(0, 0, 1..=1));
        pending.push(full(0, 1, 1..=1));
        let mut room = 1;
        assert_eq!(
            pending.flush(|_| {
                room -= 1;
                room >= 0
            }),
            1
        );
        assert!(!pending.push(full(0, 0, 3..=3)), "its first is gone");
        assert!(pending.push(full(0, 1, 3..=3)), "still waiting");
        let out = drain(&mut pending);
        let got: Vec<_> = out
            .iter()
            .map(|n| (n.gap.symbol, n.gap.missing_range()))
            .collect();
        assert_eq!(got, [(1, 1..=3), (0, 3..=3)]);
    }

    /// A storm of gaps on a few streams keeps a few notices, not one per gap.
    #[test]
    fn a_storm_stays_bounded() {
        let mut pending = PendingNotices::new(2);
        for id in 0..100_000 {
            pending.push(full((id % 2) as usize, (id % 5) as u16, id..=id));
        }
        assert_eq!(pending.len(), 10);
    }
}
