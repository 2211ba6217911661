//! Sending a dead-letter file's Redis records again (`hotpath dlq resend`, see
//! [`crate::sink::resend`]): each trade goes back to its stream with its own entry id, in file
//! order, in pipelines. Idempotent: a refusal as "equal or smaller than the target stream top
//! item" is resolved with `XRANGE` for that exact id, so a trade already in the stream is
//! counted as there (never added twice) and one that cannot be placed (the stream holds newer
//! entries, and a Redis stream only appends) is handed back with that reason. Entries are
//! added without `MAXLEN` (the resend does not know the writer's `trades_maxlen`; the writer's
//! next `XADD` trims the stream).

use std::time::Duration;

use redis::Value;
use redis::aio::MultiplexedConnection;

use crate::backoff::jittered;
use crate::clock::{monotonic_ns, unix_ms};
use crate::sink::dlq::{DeadRecord, Target};

/// Trades per pipeline.
const CHUNK: usize = 1000;
/// Connect and response deadline.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What a Redis resend did.
#[derive(Debug, Default)]
pub struct Resent {
    /// Entries added.
    pub added: usize,
    /// Entries found in their stream already.
    pub already_there: usize,
    /// Records that could not be placed or sent.
    pub failed: Vec<DeadRecord>,
}

/// What became of one record.
enum Placed {
    Added,
    There,
    Refused(String),
}

/// Sends `records` (Redis ones; others are handed back untouched) to the server at `url`.
/// A chunk whose pipeline fails (connection lost) is sent again, up to `attempts` times.
pub async fn resend(url: &str, records: Vec<DeadRecord>, attempts: u32) -> anyhow::Result<Resent> {
    let client = redis::Client::open(url)
        .map_err(|e| anyhow::anyhow!("--redis {}: {e}", crate::config::redact_url(url)))?;
    let mut rng = crate::rng::Rng::new(monotonic_ns() | 1);
    let mut conn: Option<MultiplexedConnection> = None;
    let mut out = Resent::default();
    let (records, others): (Vec<DeadRecord>, Vec<DeadRecord>) =
        records.into_iter().partition(|r| entry_of(r).is_some());
    for record in others {
        out.failed
            .push(again(record, 0, "not a Redis record".to_string()));
    }
    let mut records = records.into_iter().peekable();
    while records.peek().is_some() {
        let chunk: Vec<DeadRecord> = records.by_ref().take(CHUNK).collect();
        let mut tries = 0u32;
        let placed = loop {
            match place(&client, &mut conn, &chunk).await {
                Ok(placed) => break Ok(placed),
                Err(e) => {
                    conn = None;
                    tries += 1;
                    if tries >= attempts.max(1) {
                        break Err(e);
                    }
                    let delay = jittered(
                        &mut rng,
                        Duration::from_millis(100),
                        Duration::from_secs(2),
                        tries,
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        };
        match placed {
            Ok(placed) => {
                for (record, placed) in chunk.into_iter().zip(placed) {
                    match placed {
                        Placed::Added => out.added += 1,
                        Placed::There => out.already_there += 1,
                        Placed::Refused(why) => out.failed.push(again(record, 1, why)),
                    }
                }
            }
            Err(e) => {
                let why = format!("redis: {e}");
                out.failed
                    .extend(chunk.into_iter().map(|r| again(r, tries, why.clone())));
            }
        }
    }
    Ok(out)
}

/// `record` after `tries` more failed attempts, with `error`.
fn again(mut record: DeadRecord, tries: u32, error: String) -> DeadRecord {
    record.attempts = record.attempts.saturating_add(tries);
    record.dead_at_ms = unix_ms();
    record.error = error;
    record
}

/// One chunk: an `XADD` per record, then an `XRANGE` per refusal as "equal or smaller".
async fn place(
    client: &redis::Client,
    conn: &mut Option<MultiplexedConnection>,
    chunk: &[DeadRecord],
) -> Result<Vec<Placed>, String> {
    if conn.is_none() {
        let options = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT));
        let c = client
            .get_multiplexed_async_connection_with_config(&options)
            .await
            .map_err(|e| e.to_string())?;
        *conn = Some(c);
    }
    let Some(c) = conn.as_mut() else {
        return Err("no connection".into());
    };
    let entries: Vec<Entry<'_>> = chunk.iter().filter_map(entry_of).collect();
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for e in &entries {
        let cmd = pipe.cmd("XADD").arg(e.key).arg(e.id);
        for (name, value) in e.fields {
            cmd.arg(name).arg(value);
        }
    }
    let replies: Vec<Value> = pipe.query_async(c).await.map_err(|e| e.to_string())?;
    if replies.len() != chunk.len() || entries.len() != chunk.len() {
        return Err(format!(
            "{} replies for {} commands",
            replies.len(),
            chunk.len()
        ));
    }
    let mut placed = Vec::with_capacity(chunk.len());
    let mut check = redis::pipe();
    check.ignore_errors();
    let mut checked = Vec::new();
    for (at, (e, reply)) in entries.iter().zip(&replies).enumerate() {
        placed.push(match reply {
            Value::ServerError(err)
                if err
                    .details()
                    .is_some_and(|d| d.contains("equal or smaller")) =>
            {
                check.cmd("XRANGE").arg(e.key).arg(e.id).arg(e.id);
                checked.push(at);
                Placed::Refused(String::new())
            }
            Value::ServerError(err) => Placed::Refused(format!("XADD refused: {err:?}")),
            _ => Placed::Added,
        });
    }
    if !checked.is_empty() {
        let found: Vec<Value> = check.query_async(c).await.map_err(|e| e.to_string())?;
        for (at, reply) in checked.into_iter().zip(found) {
            placed[at] = verdict_of_xrange(&entries[at], &reply);
        }
    }
    Ok(placed)
}

/// A Redis record's parts.
struct Entry<'a> {
    key: &'a str,
    id: &'a str,
    fields: &'a [(String, String)],
}

fn entry_of(record: &DeadRecord) -> Option<Entry<'_>> {
    match &record.target {
        Target::Redis { key, id, fields } => Some(Entry { key, id, fields }),
        Target::Kinesis { .. } | Target::Postgres { .. } => None,
    }
}

/// Whether an `XRANGE key id id` reply shows the entry.
fn verdict_of_xrange(entry: &Entry<'_>, reply: &Value) -> Placed {
    let (key, id) = (entry.key, entry.id);
    match reply {
        Value::Array(entries) if !entries.is_empty() => Placed::There,
        Value::Array(_) => Placed::Refused(format!(
            "{key} holds entries newer than {id} and a Redis stream only appends: it cannot \
             be placed"
        )),
        other => Placed::Refused(format!(
            "XRANGE {key} {id} {id}: unexpected reply {other:?}"
        )),
    }
}
