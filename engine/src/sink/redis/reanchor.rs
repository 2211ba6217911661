//! The atomic re-anchor of one symbol's Redis state (seed 004's procedure, made exact): the
//! commands, pure; the writer sends them.
//!
//! 1. **Lock**: `SET reanchor:{S} <token> NX EX <ttl>`: one re-anchor of a symbol at a time,
//!    across processes too; the TTL frees a lock whose holder died.
//! 2. **Build** under temporary keys in the symbol's hash slot (`ob:new:{S}`, `tr:new:{S}:1s`,
//!    `tr:new:{S}:5s`, `feat:new:{S}`): each is deleted first (leftovers of a failed attempt),
//!    then written whole with one `HMSET`.
//! 3. **Swap**: one `RENAME` per key onto the live key.
//!
//! Steps 2 and 3 run inside one `MULTI`/`EXEC`: readers see the old state or the new, never a
//! mix, and a live key is never deleted or half-written. Building inside the transaction
//! matters: Redis has no rollback, and a build refused outside it (out of memory) would leave a
//! temporary key missing, whose `RENAME` would then fail inside `EXEC` while the others
//! succeeded. Inside it, a refused command aborts the whole transaction (`EXECABORT`).
//! 4. **Unlock**: delete the lock only if it still holds our token (a script, so a lock that
//!    expired and was taken by another process is left alone).
//!
//! Steps 2 to 4 go in one pipeline after the lock is granted. On failure, [`cleanup`] deletes
//! the temporary keys and releases the lock. With `redis.keys = "hash-tag"` all keys share the
//! hash tag `{S}`, so the whole procedure runs on one node of a Redis Cluster. With `"plain"`
//! (the old services' names, `ob:S`, `ob:new:S`, ..., see [`super::keys`]) the keys fall in
//! different cluster slots, so plain keys are refused with `redis.cluster_urls`; on a
//! standalone Redis, `MULTI`/`EXEC` is atomic whatever the key names, and the procedure is the
//! same, step for step.

use super::keys::Keys;
pub use super::keys::TempKeys;

/// Seconds a re-anchor lock lives if its holder never releases it.
pub const LOCK_TTL_S: u64 = 30;

/// Releases a lock only when it still holds the caller's token.
const UNLOCK_SCRIPT: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// The fields of each key of the new state, every list non-empty (a `RENAME` of a key that
/// was never written would fail inside `EXEC`).
#[derive(Clone, Debug, Default)]
pub struct NewState {
    /// `ob:{S}` fields.
    pub ob: Vec<(&'static str, String)>,
    /// `tr:{S}:1s` fields.
    pub tr_1s: Vec<(&'static str, String)>,
    /// `tr:{S}:5s` fields.
    pub tr_5s: Vec<(&'static str, String)>,
    /// `feat:{S}` fields.
    pub feat: Vec<(&'static str, String)>,
}

/// Step 1: take the lock with `token`. The reply is `OK` when granted, nil when another holds
/// it.
pub fn lock(temp: &TempKeys, token: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(&temp.lock)
        .arg(token)
        .arg("NX")
        .arg("EX")
        .arg(LOCK_TTL_S);
    cmd
}

/// Steps 2 to 4 as one pipeline: `MULTI`, 4 `DEL`s, 4 `HMSET`s, 4 `RENAME`s, `EXEC`, then the
/// unlock. Replies: `OK`, 12 `QUEUED`, `EXEC`'s array of 12 results, the unlock's 1 (0 when
/// the lock had expired and was taken by another: the swap happened all the same).
pub fn build_and_swap(
    live: &Keys,
    temp: &TempKeys,
    state: &NewState,
    token: &str,
) -> redis::Pipeline {
    debug_assert!(
        !state.ob.is_empty()
            && !state.tr_1s.is_empty()
            && !state.tr_5s.is_empty()
            && !state.feat.is_empty(),
        "every key of the new state has fields"
    );
    let mut pipe = redis::pipe();
    pipe.cmd("MULTI");
    for key in temp.temporaries() {
        pipe.del(key);
    }
    pipe.hset_multiple(&temp.ob, &state.ob);
    pipe.hset_multiple(&temp.tr_1s, &state.tr_1s);
    pipe.hset_multiple(&temp.tr_5s, &state.tr_5s);
    pipe.hset_multiple(&temp.feat, &state.feat);
    for (from, to) in [
        (&temp.ob, &live.ob),
        (&temp.tr_1s, &live.tr_1s),
        (&temp.tr_5s, &live.tr_5s),
        (&temp.feat, &live.feat),
    ] {
        pipe.rename(from, to);
    }
    pipe.cmd("EXEC");
    pipe.add_command(unlock(temp, token));
    pipe
}

/// Commands inside the transaction.
const QUEUED: usize = 4 + 4 + 4;

/// The replies [`build_and_swap`] gets: `MULTI`, the queued commands, `EXEC`, the unlock.
pub const SWAP_REPLIES: usize = 1 + QUEUED + 1 + 1;

/// Whether the replies of [`build_and_swap`] say the swap happened: `EXEC` returned its 12
/// results and the four `RENAME`s (the last four) said `OK`. Anything else (`EXECABORT`, a
/// connection lost before the reply) leaves the live keys as they were or unknown: the caller
/// cleans up and the symbol stays stale until the next re-anchor.
pub fn swapped(replies: &[redis::Value]) -> bool {
    use redis::Value;
    let Some(Value::Array(results)) = replies.get(1 + QUEUED) else {
        return false;
    };
    results.len() == QUEUED
        && results[QUEUED - 4..]
            .iter()
            .all(|r| matches!(r, Value::Okay))
}

/// Step 4 alone: release the lock if it holds `token`.
pub fn unlock(temp: &TempKeys, token: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(UNLOCK_SCRIPT).arg(1).arg(&temp.lock).arg(token);
    cmd
}

/// After a failure: delete the temporary keys and release the lock (if still ours).
pub fn cleanup(temp: &TempKeys, token: &str) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for key in temp.temporaries() {
        pipe.del(key);
    }
    pipe.add_command(unlock(temp, token));
    pipe
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeyLayout;

    #[test]
    fn temporary_keys_are_not_the_live_keys_in_either_layout() {
        for layout in [KeyLayout::HashTag, KeyLayout::Plain] {
            let temp = TempKeys::with(layout, "BTCUSDT");
            let live = Keys::with(layout, "BTCUSDT");
            for (t, l) in [
                (&temp.ob, &live.ob),
                (&temp.tr_1s, &live.tr_1s),
                (&temp.tr_5s, &live.tr_5s),
                (&temp.feat, &live.feat),
            ] {
                assert_ne!(t, l);
            }
        }
    }

    #[test]
    fn the_swap_is_one_transaction_of_renames_after_the_build() {
        let live = Keys::of("ETHUSDT");
        let temp = TempKeys::of("ETHUSDT");
        let state = NewState {
            ob: vec![("update_id", "7".into())],
            tr_1s: vec![("count", "0".into())],
            tr_5s: vec![("count", "0".into())],
            feat: vec![("mid", String::new())],
        };
        let pipe = build_and_swap(&live, &temp, &state, "t");
        let commands: Vec<String> = pipe
            .cmd_iter()
            .map(|c| {
                let packed = c.get_packed_command();
                let text = String::from_utf8_lossy(&packed).to_string();
                text.split("\r\n").nth(2).unwrap_or("").to_string()
            })
            .collect();
        assert_eq!(commands.len(), SWAP_REPLIES);
        assert_eq!(commands[0], "MULTI");
        assert_eq!(&commands[1..5], ["DEL", "DEL", "DEL", "DEL"]);
        assert_eq!(&commands[5..9], ["HMSET", "HMSET", "HMSET", "HMSET"]);
        assert_eq!(&commands[9..13], ["RENAME", "RENAME", "RENAME", "RENAME"]);
        assert_eq!(commands[13], "EXEC");
        assert_eq!(commands[14], "EVAL");
    }

    #[test]
    fn only_four_oks_from_exec_count_as_swapped() {
        use redis::Value;
        let mut replies = vec![Value::Okay; SWAP_REPLIES];
        let mut results = vec![Value::Int(1); 8];
        results.extend(vec![Value::Okay; 4]);
        replies[SWAP_REPLIES - 2] = Value::Array(results);
        assert!(swapped(&replies));
        replies[SWAP_REPLIES - 2] = Value::Nil;
        assert!(!swapped(&replies));
        assert!(!swapped(&[]));
    }
}
