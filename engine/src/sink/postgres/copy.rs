//! One batch into PostgreSQL, exactly once: binary `COPY` into per-session staging tables,
//! then `INSERT ... SELECT ... ON CONFLICT DO NOTHING` into `ticks` and `books`, all in one
//! transaction. A batch counts as landed only when `COMMIT` returned; a failed or unanswered
//! batch is sent again whole, and the unique keys make the repeat a no-op for rows that did
//! land. Also the per-connection setup: migrations, staging tables, retention.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls};

use super::rows::{Book, EXCHANGE, Row, Tick};
use super::schema::{self, Layout};
use super::types::Numeric;

/// The staging tables, one per session, emptied at each commit.
const STAGING: &str = "\
CREATE TEMP TABLE IF NOT EXISTS ticks_stage (
    exchange text, symbol text, trade_id bigint, price numeric, qty numeric, side text,
    ts timestamptz, event_time timestamptz) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS books_stage (
    venue text, symbol text, update_id bigint, ts timestamptz, best_bid numeric,
    best_bid_qty numeric, best_ask numeric, best_ask_qty numeric, spread_bps double precision,
    bid_prices numeric[], bid_qtys numeric[], ask_prices numeric[], ask_qtys numeric[])
    ON COMMIT DELETE ROWS;";

/// The columns the writer fills in `ticks`, in staging order.
pub const TICK_COLUMNS: &str = "exchange, symbol, trade_id, price, qty, side, ts, event_time";
/// The columns the writer fills in `books`, in staging order.
pub const BOOK_COLUMNS: &str = "venue, symbol, update_id, ts, best_bid, best_bid_qty, best_ask, \
                            best_ask_qty, spread_bps, bid_prices, bid_qtys, ask_prices, ask_qtys";

/// A connection ready for batches.
pub struct Session {
    /// The client (shared with the batch in flight).
    pub client: Arc<Client>,
    /// The database's layout.
    pub layout: Layout,
}

/// Connects, applies the migrations and makes the staging tables.
///
/// The session's `idle_in_transaction_session_timeout` is `idle_abort`: a transaction left
/// open between two statements that long is aborted by the server. The writer gives up on a
/// batch after `postgres.request_timeout_ms` and drops its connection; over a lost network
/// path the server does not see that drop (no FIN arrives), and without this the abandoned
/// transaction would hold the row locks of the very batch the writer sends again.
pub async fn connect(url: &str, idle_abort: Duration) -> Result<Session, tokio_postgres::Error> {
    let (mut client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("postgres: connection ended: {e}");
        }
    });
    client
        .batch_execute(&format!(
            "SET idle_in_transaction_session_timeout = {}",
            idle_abort.as_millis().max(1)
        ))
        .await?;
    let layout = schema::migrate(&mut client).await?;
    client.batch_execute(STAGING).await?;
    Ok(Session {
        client: Arc::new(client),
        layout,
    })
}

/// The `idle_in_transaction_session_timeout` of a writer whose requests time out after
/// `request_timeout`: twice that. Between two statements of a live batch the writer waits on
/// nothing but itself, so only a transaction the writer has given up on (after
/// `request_timeout`) stays idle that long.
pub fn idle_abort(request_timeout: Duration) -> Duration {
    request_timeout.saturating_mul(2)
}

/// How far a failed batch got.
#[derive(Debug)]
pub struct BatchError {
    /// What went wrong.
    pub message: String,
    /// `COMMIT` was sent and no answer came: the batch may have landed.
    pub maybe_landed: bool,
}

/// Writes `rows` in one transaction (creating the partitions in `partitions` first). `Ok` only
/// once `COMMIT` succeeded.
pub async fn write_batch(
    client: &Client,
    rows: &[Row],
    partitions: &[String],
) -> Result<(), BatchError> {
    let failed = |e: tokio_postgres::Error| BatchError {
        message: error_text(&e),
        maybe_landed: false,
    };
    for statement in partitions {
        client.batch_execute(statement).await.map_err(failed)?;
    }
    client.batch_execute("BEGIN").await.map_err(failed)?;
    if let Err(e) = stage_and_merge(client, rows).await {
        // Best effort: a broken connection rolls back by itself.
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(failed(e));
    }
    client
        .batch_execute("COMMIT")
        .await
        .map_err(|e| BatchError {
            message: error_text(&e),
            maybe_landed: true,
        })
}

async fn stage_and_merge(client: &Client, rows: &[Row]) -> Result<(), tokio_postgres::Error> {
    let ticks = rows.iter().filter_map(|r| match r {
        Row::Tick(t) => Some(t),
        Row::Book(_) => None,
    });
    let books = rows.iter().filter_map(|r| match r {
        Row::Book(b) => Some(b),
        Row::Tick(_) => None,
    });
    if copy_ticks(client, ticks).await? > 0 {
        client
            .batch_execute(&format!(
                "INSERT INTO assets (asset_id, symbol) SELECT DISTINCT symbol, symbol \
                 FROM ticks_stage ON CONFLICT DO NOTHING;
                 INSERT INTO ticks ({TICK_COLUMNS}) SELECT {TICK_COLUMNS} FROM ticks_stage \
                 ON CONFLICT DO NOTHING"
            ))
            .await?;
    }
    if copy_books(client, books).await? > 0 {
        client
            .batch_execute(&format!(
                "INSERT INTO books ({BOOK_COLUMNS}) SELECT {BOOK_COLUMNS} FROM books_stage \
                 ON CONFLICT DO NOTHING"
            ))
            .await?;
    }
    Ok(())
}

async fn copy_ticks<'a>(
    client: &Client,
    ticks: impl Iterator<Item = &'a Tick>,
) -> Result<u64, tokio_postgres::Error> {
    let mut ticks = ticks.peekable();
    if ticks.peek().is_none() {
        return Ok(0);
    }
    let sink = client
        .copy_in(&format!(
            "COPY ticks_stage ({TICK_COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    let types = [
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::NUMERIC,
        Type::NUMERIC,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    let mut writer = std::pin::pin!(writer);
    for t in ticks {
        let symbol: &str = &t.symbol;
        let values: [&(dyn ToSql + Sync); 8] = [
            &EXCHANGE,
            &symbol,
            &t.trade_id,
            &t.price,
            &t.qty,
            &t.side,
            &t.trade_time,
            &t.event_time,
        ];
        writer.as_mut().write(&values).await?;
    }
    writer.finish().await
}

async fn copy_books<'a>(
    client: &Client,
    books: impl Iterator<Item = &'a Book>,
) -> Result<u64, tokio_postgres::Error> {
    let mut books = books.peekable();
    if books.peek().is_none() {
        return Ok(0);
    }
    let sink = client
        .copy_in(&format!(
            "COPY books_stage ({BOOK_COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    let n = Type::NUMERIC;
    let a = Type::NUMERIC_ARRAY;
    let types = [
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::TIMESTAMPTZ,
        n.clone(),
        n.clone(),
        n.clone(),
        n,
        Type::FLOAT8,
        a.clone(),
        a.clone(),
        a.clone(),
        a,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    let mut writer = std::pin::pin!(writer);
    for b in books {
        let column = |levels: &[(Numeric, Numeric)], qty: bool| -> Vec<Numeric> {
            levels.iter().map(|l| if qty { l.1 } else { l.0 }).collect()
        };
        let (bid_p, bid_q) = (column(&b.bids, false), column(&b.bids, true));
        let (ask_p, ask_q) = (column(&b.asks, false), column(&b.asks, true));
        let symbol: &str = &b.symbol;
        let best_bid = b.bids.first().map(|l| l.0);
        let best_bid_qty = b.bids.first().map(|l| l.1);
        let best_ask = b.asks.first().map(|l| l.0);
        let best_ask_qty = b.asks.first().map(|l| l.1);
        let spread = b.spread_bps();
        let values: [&(dyn ToSql + Sync); 13] = [
            &EXCHANGE,
            &symbol,
            &b.update_id,
            &b.event_time,
            &best_bid,
            &best_bid_qty,
            &best_ask,
            &best_ask_qty,
            &spread,
            &bid_p,
            &bid_q,
            &ask_p,
            &ask_q,
        ];
        writer.as_mut().write(&values).await?;
    }
    writer.finish().await
}

/// An error with the server's message, when there is one (`db error` alone says nothing).
pub fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}
