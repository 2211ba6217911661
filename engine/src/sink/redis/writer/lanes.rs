//! The Redis writer's connections (`redis.connections`): each a lane with its own connection,
//! reconnect backoff and at most one pipeline in flight. Symbol `i` always goes over lane
//! `i % connections`, so a symbol's writes (and its re-anchors, on the same multiplexed
//! connection) stay in order, while a slow reply holds up only the symbols of its lane. A write
//! counts as landed only on its reply; a failed lane drops its connection, and its symbols'
//! state is written again after the reconnect (their trades kept, retried as before).

use std::time::Instant;

use super::{Batch, Conn, Replies, SymbolState, Writer, connect, execute};
use crate::idle::spawn_ringing;

/// The lane symbol `symbol` is written over, of `lanes` (at least 1).
pub(super) fn lane_of(symbol: usize, lanes: usize) -> usize {
    symbol % lanes.max(1)
}

/// One connection and the pipeline in flight on it.
pub(super) struct Lane {
    pub(super) conn: Option<Conn>,
    connecting: Option<tokio::task::JoinHandle<Result<Conn, String>>>,
    pub(super) writing: Option<(Replies, Batch)>,
    next_connect: Instant,
    attempt: u32,
    connected_once: bool,
    /// A batch of this lane was acknowledged since start: the start's stale marks of its
    /// symbols are in Redis, so their books may be published.
    pub(super) acked_once: bool,
}

/// The lanes beside the drain loop.
pub(super) struct Io {
    pub(super) lanes: Vec<Lane>,
}

impl Io {
    /// `count` lanes, none connected yet.
    pub(super) fn new(count: usize) -> Io {
        let lanes = (0..count.max(1))
            .map(|_| Lane {
                conn: None,
                connecting: None,
                writing: None,
                next_connect: Instant::now(),
                attempt: 0,
                connected_once: false,
                acked_once: false,
            })
            .collect();
        Io { lanes }
    }

    /// Whether no pipeline is in flight.
    pub(super) fn quiet(&self) -> bool {
        self.lanes.iter().all(|l| l.writing.is_none())
    }

    /// Whether a lane that has symbols (of `symbols`, `i` over lane `i % lanes`) is connected
    /// and has no pipeline in flight: frames for it could go at once.
    pub(super) fn free_lane(&self, symbols: usize) -> bool {
        self.lanes
            .iter()
            .take(symbols)
            .any(|l| l.conn.is_some() && l.writing.is_none())
    }

    /// When the first lane that is down (neither connected nor connecting) tries again: no
    /// task of it wakes the writer then, so its park must end by itself. `None`: none is down.
    pub(super) fn next_connect(&self) -> Option<Instant> {
        self.lanes
            .iter()
            .filter(|l| l.conn.is_none() && l.connecting.is_none())
            .map(|l| l.next_connect)
            .min()
    }

    /// The connection of `symbol`'s lane, once that lane's start marks are in Redis.
    pub(super) fn publishing(&self, symbol: usize) -> Option<&Conn> {
        let lane = self.lanes.get(lane_of(symbol, self.lanes.len()))?;
        lane.conn.as_ref().filter(|_| lane.acked_once)
    }
}

impl Writer {
    /// The states of `lane`'s symbols.
    fn lane_states(&mut self, lane: usize) -> impl Iterator<Item = &mut SymbolState> {
        let lanes = self.lanes;
        self.states
            .iter_mut()
            .enumerate()
            .filter(move |(i, _)| lane_of(*i, lanes) == lane)
            .filter_map(|(_, s)| s.as_mut())
    }

    /// Starts connecting each lane when due, and takes finished connects.
    pub(super) async fn connection(&mut self, io: &mut Io, now: Instant) -> usize {
        let mut work = 0;
        for index in 0..io.lanes.len() {
            work += self.connect_lane(&mut io.lanes[index], index, now).await;
        }
        work
    }

    async fn connect_lane(&mut self, lane: &mut Lane, index: usize, now: Instant) -> usize {
        if lane.conn.is_none() && lane.connecting.is_none() && now >= lane.next_connect {
            let config = self.config.clone();
            let connecting = async move { connect(&config).await };
            lane.connecting = Some(spawn_ringing(&self.bell, connecting));
        }
        let Some(task) = lane.connecting.take_if(|t| t.is_finished()) else {
            return 0;
        };
        match task.await.unwrap_or_else(|e| Err(e.to_string())) {
            Ok(c) => {
                tracing::debug!(lane = index, "redis: connected");
                lane.conn = Some(c);
                lane.attempt = 0;
                if lane.connected_once {
                    self.stats.reconnects.add(1);
                    tracing::info!(
                        "redis: connection {index} reconnected; writing its symbols' state again"
                    );
                }
                lane.connected_once = true;
                for state in self.lane_states(index) {
                    state.mark_all_dirty();
                }
            }
            Err(e) => {
                self.stats.failed_requests.add(1);
                lane.next_connect = self.backoff(lane.attempt);
                if lane.attempt == 0 {
                    tracing::warn!("redis: cannot connect: {e}; retrying with backoff");
                }
                lane.attempt = lane.attempt.saturating_add(1);
            }
        }
        1
    }

    /// Takes each lane's finished batch; a failed batch drops its lane's connection.
    /// `now_ns`: the round's [`crate::clock::monotonic_ns`], the time the replies are taken.
    pub(super) async fn finish_write(&mut self, io: &mut Io, now_ns: u64) -> usize {
        let mut work = 0;
        for index in 0..io.lanes.len() {
            work += self.finish_lane(&mut io.lanes[index], index, now_ns).await;
        }
        work
    }

    async fn finish_lane(&mut self, lane: &mut Lane, index: usize, now_ns: u64) -> usize {
        let Some((task, batch)) = lane.writing.take_if(|(t, _)| t.is_finished()) else {
            return 0;
        };
        tracing::debug!(
            lane = index,
            sections = batch.sections.len(),
            "redis: batch finished"
        );
        let outcome = match task.await.unwrap_or_else(|e| Err(e.to_string())) {
            Ok(replies) => self.settle(batch, &replies, now_ns),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => lane.acked_once = true,
            Err(e) => {
                self.stats.failed_requests.add(1);
                tracing::warn!("redis: write on connection {index} failed: {e}; reconnecting");
                lane.conn = None;
                for state in self.lane_states(index) {
                    // Commands that got no reply may have been carried out.
                    state.unanswered();
                    state.mark_all_dirty();
                }
                lane.next_connect = self.backoff(lane.attempt);
                lane.attempt = lane.attempt.saturating_add(1);
            }
        }
        1
    }

    /// Sends each idle, connected lane's next batch when one of its symbols is dirty; `now_us`:
    /// the round's Unix time, µs. After starting one it yields to the runtime before building
    /// the next, so the first pipeline is on the wire (and Redis works on it) while the writer
    /// builds the others, rather than all of them going out after the last is built.
    pub(super) async fn start_write(&mut self, io: &mut Io, now_us: i64) -> usize {
        let mut work = 0;
        for (index, lane) in io.lanes.iter_mut().enumerate() {
            if lane.writing.is_some() {
                continue;
            }
            let Some(c) = lane.conn.as_ref() else {
                continue;
            };
            if !self.lane_states(index).any(|s| s.dirty()) {
                continue;
            }
            if work > 0 {
                tokio::task::yield_now().await;
            }
            let (pipes, batch) = self.prepare(index, matches!(c, Conn::Cluster(_)), now_us);
            tracing::debug!(
                lane = index,
                sections = batch.sections.len(),
                "redis: batch started"
            );
            let writing = spawn_ringing(&self.bell, execute(c.clone(), pipes));
            lane.writing = Some((writing, batch));
            work += 1;
        }
        work
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A symbol always maps to one lane, and symbols spread evenly over the lanes.
    #[test]
    fn symbols_map_to_one_lane_each_spread_evenly() {
        assert_eq!(lane_of(5, 1), 0);
        assert_eq!(lane_of(5, 0), 0, "no lanes is taken as one");
        let counts = (0..200).fold([0usize; 3], |mut c, s| {
            c[lane_of(s, 3)] += 1;
            c
        });
        assert_eq!(counts, [67, 67, 66]);
        assert!((0..200).all(|s| lane_of(s, 3) == lane_of(s, 3)));
    }
}
