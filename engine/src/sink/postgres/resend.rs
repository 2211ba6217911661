//! Sending a dead-letter file's PostgreSQL rows again (`hotpath dlq resend --postgres URL`, see
//! [`crate::sink::resend`]). Each row goes back into its table with `ON CONFLICT DO NOTHING`
//! on the table's unique key, so a row that did land (outcome `unknown`: its `COMMIT` got no
//! answer) is counted as already there and never written twice; `failed` and `unknown` rows
//! are therefore both sent. The text values are read by PostgreSQL's own input functions
//! (`json_populate_record`), so NUMERIC prices and quantities stay exact.
//!
//! The session is the writer's: migrations applied, and on the plain layout each row's UTC day
//! partition made if missing (retention may have dropped it, or the database be new). A row
//! whose table or columns are not the writer's is handed back, never guessed at. Rows go in
//! pipelined chunks; a chunk whose connection fails is sent again (up to `attempts` times);
//! a row the server refuses (a malformed value) is handed back with the server's reason.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio_postgres::Client;

use super::copy::{self, BOOK_COLUMNS, Session, TICK_COLUMNS};
use super::schema::{self, Layout};
use crate::backoff::jittered;
use crate::clock::{monotonic_ns, unix_ms};
use crate::sink::dlq::{DeadRecord, Target};

/// Rows per pipelined chunk.
const CHUNK: usize = 1000;
/// Connect and chunk deadline.
const TIMEOUT: Duration = Duration::from_secs(30);

/// What a PostgreSQL resend did.
#[derive(Debug, Default)]
pub struct Resent {
    /// Rows inserted.
    pub added: usize,
    /// Rows whose unique key was in the table already.
    pub already_there: usize,
    /// Rows that could not be written, with the reason in their `error`.
    pub failed: Vec<DeadRecord>,
}

/// One row, checked: its table and its values as a JSON object (`""` is NULL).
struct Checked {
    table: &'static str,
    json: String,
    /// The UTC day of its `ts`, for the plain layout's partition.
    day: Option<i64>,
    symbol: Option<String>,
}

/// Sends `records` (PostgreSQL ones; others are handed back untouched) to the database at
/// `url`.
pub async fn resend(url: &str, records: Vec<DeadRecord>, attempts: u32) -> Resent {
    let mut out = Resent::default();
    let mut rows = Vec::new();
    for record in records {
        match check(&record) {
            Ok(row) => rows.push((row, record)),
            Err(why) => out.failed.push(again(record, why)),
        }
    }
    let mut rng = crate::rng::Rng::new(monotonic_ns() | 1);
    let mut session: Option<Session> = None;
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<(Checked, DeadRecord)> = rows.by_ref().take(CHUNK).collect();
        let mut tries = 0u32;
        loop {
            tries += 1;
            let result = match &session {
                Some(s) => tokio::time::timeout(TIMEOUT, send_chunk(s, &chunk))
                    .await
                    .unwrap_or_else(|_| Err("no answer within 30 s".into())),
                None => connect(url).await.map(|s| {
                    session = Some(s);
                    Vec::new()
                }),
            };
            match result {
                Ok(placed) if !placed.is_empty() || chunk.is_empty() => {
                    settle(&mut out, chunk, placed);
                    break;
                }
                Ok(_) => continue, // connected: send the chunk now
                Err(why) if tries >= attempts => {
                    tracing::warn!("postgres resend: {why}; giving up on {} rows", chunk.len());
                    out.failed
                        .extend(chunk.into_iter().map(|(_, r)| again(r, why.clone())));
                    break;
                }
                Err(why) => {
                    tracing::warn!("postgres resend: {why}; trying again");
                    session = None;
                    let delay = jittered(
                        &mut rng,
                        Duration::from_millis(50),
                        Duration::from_secs(2),
                        tries,
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
    out
}

async fn connect(url: &str) -> Result<Session, String> {
    match tokio::time::timeout(TIMEOUT, copy::connect(url, copy::idle_abort(TIMEOUT))).await {
        Ok(Ok(session)) => Ok(session),
        Ok(Err(e)) => Err(crate::config::redact_urls(&copy::error_text(&e))),
        Err(_) => Err("no answer within 30 s".into()),
    }
}

/// What became of one row: inserted, already there, or refused with the server's reason.
enum Placed {
    Added,
    There,
    Refused(String),
}

/// Makes the chunk's partitions and assets, then sends its rows pipelined. `Err` when the
/// connection failed (the chunk goes again); a refused row is `Placed::Refused`.
async fn send_chunk(
    session: &Session,
    chunk: &[(Checked, DeadRecord)],
) -> Result<Vec<Placed>, String> {
    let client: &Client = &session.client;
    let lost = |e: tokio_postgres::Error| copy::error_text(&e);
    if session.layout == Layout::Plain {
        let days: BTreeSet<(&str, i64)> = chunk
            .iter()
            .filter_map(|(row, _)| row.day.map(|d| (row.table, d)))
            .collect();
        for (table, day) in days {
            client
                .batch_execute(&schema::create_partition(table, day))
                .await
                .map_err(lost)?;
        }
    }
    let symbols: BTreeSet<&str> = chunk
        .iter()
        .filter_map(|(row, _)| row.symbol.as_deref())
        .collect();
    for symbol in symbols {
        client
            .execute(
                "INSERT INTO assets (asset_id, symbol) VALUES ($1, $1) ON CONFLICT DO NOTHING",
                &[&symbol],
            )
            .await
            .map_err(lost)?;
    }
    let inserts = chunk.iter().map(|(row, _)| {
        let columns = columns_of(row.table);
        let sql = format!(
            "INSERT INTO {table} ({columns}) SELECT {columns} FROM \
             json_populate_record(NULL::{table}, $1::text::json) ON CONFLICT DO NOTHING",
            table = row.table
        );
        async move { client.execute(sql.as_str(), &[&row.json]).await }
    });
    let results = futures_util::future::join_all(inserts).await;
    if client.is_closed() {
        return Err("the connection closed".into());
    }
    Ok(results
        .into_iter()
        .map(|r| match r {
            Ok(0) => Placed::There,
            Ok(_) => Placed::Added,
            Err(e) => Placed::Refused(copy::error_text(&e)),
        })
        .collect())
}

fn settle(out: &mut Resent, chunk: Vec<(Checked, DeadRecord)>, placed: Vec<Placed>) {
    for ((_, record), placed) in chunk.into_iter().zip(placed) {
        match placed {
            Placed::Added => out.added += 1,
            Placed::There => out.already_there += 1,
            Placed::Refused(why) => out.failed.push(again(record, why)),
        }
    }
}

fn columns_of(table: &str) -> &'static str {
    if table == "ticks" {
        TICK_COLUMNS
    } else {
        BOOK_COLUMNS
    }
}

/// Checks a record's table and columns against the writer's and turns its values into JSON.
fn check(record: &DeadRecord) -> Result<Checked, String> {
    let Target::Postgres { table, row } = &record.target else {
        return Err("not a PostgreSQL record".into());
    };
    let table: &'static str = match table.as_str() {
        "ticks" => "ticks",
        "books" => "books",
        other => return Err(format!("unknown table {other:?}")),
    };
    let expected: BTreeSet<&str> = columns_of(table).split(", ").collect();
    let got: BTreeSet<&str> = row.iter().map(|(c, _)| c.as_str()).collect();
    if got != expected || row.len() != expected.len() {
        return Err(format!(
            "the columns of {table} are {expected:?}, not {got:?}"
        ));
    }
    let value = |name: &str| row.iter().find(|(c, _)| c == name).map(|(_, v)| v.as_str());
    let mut object = serde_json::Map::new();
    for (column, text) in row {
        let v = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::Value::String(text.clone())
        };
        object.insert(column.clone(), v);
    }
    let day = value("ts").and_then(schema::day_of_text);
    if day.is_none() {
        return Err("no readable ts".into());
    }
    Ok(Checked {
        table,
        json: serde_json::Value::Object(object).to_string(),
        day,
        symbol: (table == "ticks")
            .then(|| value("symbol").map(str::to_string))
            .flatten(),
    })
}

/// The record handed back, with one more attempt and `why`.
fn again(mut record: DeadRecord, why: String) -> DeadRecord {
    record.attempts = record.attempts.saturating_add(1);
    record.dead_at_ms = unix_ms();
    record.error = why;
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::dlq::Outcome;

    fn record(table: &str, row: &[(&str, &str)]) -> DeadRecord {
        DeadRecord {
            target: Target::Postgres {
                table: table.into(),
                row: row
                    .iter()
                    .map(|(c, v)| (c.to_string(), v.to_string()))
                    .collect(),
            },
            attempts: 1,
            first_attempt_ms: 0,
            dead_at_ms: 0,
            outcome: Outcome::Failed,
            error: String::new(),
        }
    }

    const TICK: [(&str, &str); 8] = [
        ("exchange", "binance"),
        ("symbol", "BTCUSDT"),
        ("trade_id", "7"),
        ("price", "69769.88000000"),
        ("qty", "0.00100000"),
        ("side", "buy"),
        ("ts", "2026-11-30T10:00:00.000000Z"),
        ("event_time", "2026-11-30T10:00:00.000001Z"),
    ];

    #[test]
    fn a_tick_becomes_json_with_its_day_and_symbol() {
        let row = check(&record("ticks", &TICK)).expect("a valid row");
        assert_eq!(row.table, "ticks");
        assert_eq!(row.day, schema::day_of_text("2026-11-30"));
        assert_eq!(row.symbol.as_deref(), Some("BTCUSDT"));
        let json: serde_json::Value = serde_json::from_str(&row.json).expect("JSON");
        assert_eq!(json["price"], "69769.88000000", "exact text, not a float");
    }

    #[test]
    fn other_tables_and_columns_are_refused() {
        assert!(check(&record("orders", &TICK)).is_err());
        let mut extra = TICK.to_vec();
        extra.push(("note", "x); DROP TABLE ticks; --"));
        assert!(check(&record("ticks", &extra)).is_err());
        assert!(check(&record("ticks", &TICK[..7])).is_err());
        let mut bad_ts = TICK;
        bad_ts[6] = ("ts", "yesterday");
        assert!(check(&record("ticks", &bad_ts)).is_err());
    }

    #[test]
    fn empty_text_is_null() {
        let mut row = TICK;
        row[4] = ("qty", "");
        let checked = check(&record("ticks", &row)).expect("a row");
        let json: serde_json::Value = serde_json::from_str(&checked.json).expect("JSON");
        assert!(json["qty"].is_null());
    }
}
