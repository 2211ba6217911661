//! The PostgreSQL writer end to end: the simulator's feed through `hotpath run` into a real
//! PostgreSQL 15 cluster of the test's own (plain tables partitioned by day; TimescaleDB is not
//! installed here), read back and compared with the simulator's ground truth: every trade
//! exactly once and in order across a database restart mid-run, `books` rows equal to the
//! exchange's book at their update id, seed 002's example queries verbatim, and migrations that
//! apply again without effect.

use std::collections::BTreeMap;
use std::time::Duration;

use hotpath::config::postgres::PostgresConfig;
use hotpath::feed::run::SinkHandle;

use crate::pg_server::PgServer;
use crate::servers::TempDir;
use crate::sinks::{SYMBOLS, assert_exactly_once, run, run_config, sim, wait_for, written};

fn settings(url: String, dir: &TempDir) -> PostgresConfig {
    PostgresConfig {
        url,
        batch_rows: 200,
        linger: Duration::from_millis(50),
        book_interval: Duration::from_millis(200),
        book_levels: 10,
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        dead_letter_path: dir.path().join("pg-dead-letters.jsonl"),
        ..PostgresConfig::default()
    }
}

/// Trade ids per symbol in trade-id order, and how many rows there are in all.
fn ticks(server: &PgServer) -> (BTreeMap<String, Vec<i64>>, usize) {
    let rows = server.query("SELECT symbol, trade_id FROM ticks ORDER BY symbol, trade_id");
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for row in &rows {
        let symbol = row[0].clone().expect("a symbol");
        let id = row[1]
            .as_deref()
            .and_then(|v| v.parse().ok())
            .expect("an id");
        out.entry(symbol).or_default().push(id);
    }
    (out, rows.len())
}

fn failed(sinks: &[SinkHandle]) -> u64 {
    sinks
        .iter()
        .find(|s| s.name == "postgres")
        .map_or(0, |s| s.stats.failed_requests.get())
}

#[test]
fn every_trade_lands_exactly_once_across_a_database_restart() {
    let sim = sim();
    let mut server = PgServer::start();
    let dir = TempDir::new("pg-restart");
    let config = run_config(&sim, |c| c.postgres = Some(settings(server.url(), &dir)));
    let server_ref = &mut server;
    let summary = run(&config, None, |sinks| {
        wait_for("rows before the outage", || {
            written(sinks, "postgres") >= 300
        });
        server_ref.stop();
        // The outage is seen (a batch or a reconnect failed) while the feed goes on.
        wait_for("a failed write", || failed(sinks) >= 1);
        let before = written(sinks, "postgres");
        std::thread::sleep(Duration::from_millis(500));
        server_ref.restart();
        wait_for("rows after the restart", || {
            written(sinks, "postgres") >= before + 600
        });
    });
    let pg = &summary.sinks["postgres"];
    assert!(pg.flushed, "{pg:?}\n{}", server.log());
    assert_eq!((pg.dead_lettered, pg.dropped), (0, 0), "{pg:?}");
    assert!(pg.failed_requests >= 1, "{pg:?}");
    let (ids, rows) = ticks(&server);
    for symbol in SYMBOLS {
        let got = ids.get(symbol).map_or(&[][..], Vec::as_slice);
        assert_exactly_once(&sim, symbol, got, "postgres");
    }
    // Every committed trade row counted once as written (books rows make up the rest).
    let books: usize = server.query("SELECT count(*) FROM books")[0][0]
        .as_deref()
        .and_then(|v| v.parse().ok())
        .expect("a count");
    assert_eq!(u64::try_from(rows + books).ok(), Some(pg.written), "{pg:?}");
}

/// Review of the sinks: the writer remembered which daily partitions exist for the whole run,
/// so a database recreated empty mid-run (its tables made again by the migrations on the
/// reconnect, but not today's partitions) refused every later batch, for ever ("no partition
/// of relation"). Rows land again after such a wipe, none dead-lettered.
#[test]
fn rows_land_again_after_the_database_is_recreated_empty_mid_run() {
    let sim = sim();
    let server = PgServer::start();
    let dir = TempDir::new("pg-wiped");
    let config = run_config(&sim, |c| c.postgres = Some(settings(server.url(), &dir)));
    let summary = run(&config, None, |sinks| {
        wait_for("rows before the wipe", || written(sinks, "postgres") >= 300);
        // Everything of hotpath's goes (tables, partitions, the migrations' record) and the
        // writer's connection is cut, as a database restored empty would do.
        server.query(
            "DROP SCHEMA public CASCADE; CREATE SCHEMA public; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'",
        );
        let before = written(sinks, "postgres");
        wait_for("rows after the wipe", || {
            written(sinks, "postgres") >= before + 600
        });
    });
    let pg = &summary.sinks["postgres"];
    assert!(pg.flushed, "{pg:?}\n{}", server.log());
    assert_eq!((pg.dead_lettered, pg.dropped), (0, 0), "{pg:?}");
    let (_, rows) = ticks(&server);
    assert!(rows >= 300, "rows after the wipe: {rows}");
}

/// Resumes a stopped process when dropped (also when the test fails).
struct Stopped(String);

impl Stopped {
    /// Stops process `pid` (SIGSTOP): its socket stays open, nothing it has answers.
    fn stop(pid: String) -> Stopped {
        let out = std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .output()
            .expect("kill runs");
        assert!(out.status.success(), "kill -STOP {pid}: {out:?}");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0])
            .output();
    }
}

/// Stops the writer's backend while it is idle (no transaction open), retrying until a stop
/// lands between two batches.
fn stop_between_batches(server: &PgServer) -> Stopped {
    let backend = |state: &str| {
        server.query(&format!(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' \
             AND pid <> pg_backend_pid() AND state = '{state}'"
        ))
    };
    for _ in 0..1000 {
        let idle = backend("idle");
        let Some(pid) = idle.first().and_then(|row| row[0].clone()) else {
            continue;
        };
        let stopped = Stopped::stop(pid.clone());
        // A stopped backend reports nothing new: still idle means stopped between batches.
        if backend("idle")
            .iter()
            .any(|row| row[0].as_deref() == Some(pid.as_str()))
        {
            return stopped;
        }
    }
    panic!("the writer's backend was never idle:\n{}", server.log());
}

/// Review of the sinks: a connection whose server stopped answering (a hung backend, a lost
/// network path) never failed by itself, so the writer waited on its batch for ever while the
/// rows went to the dead-letter file. After `postgres.request_timeout_ms` the connection is
/// dropped and the batch goes again on a new one: rows land again, none dead-lettered, none
/// twice.
#[test]
fn a_connection_that_stops_answering_is_replaced() {
    let sim = sim();
    let server = PgServer::start();
    let dir = TempDir::new("pg-hung");
    let pg = PostgresConfig {
        request_timeout: Duration::from_secs(1),
        ..settings(server.url(), &dir)
    };
    let config = run_config(&sim, |c| c.postgres = Some(pg));
    let summary = run(&config, None, |sinks| {
        wait_for("rows before the hang", || written(sinks, "postgres") >= 300);
        // The writer's backend (the only other client) stops answering, between two batches:
        // stopped inside a transaction it would hold the row locks of the batch the writer
        // sends again, and no new connection could get past them while it lives.
        let _stopped = stop_between_batches(&server);
        wait_for("a batch given up on", || failed(sinks) >= 1);
        let before = written(sinks, "postgres");
        wait_for("rows on a new connection", || {
            written(sinks, "postgres") >= before + 600
        });
    });
    let pg = &summary.sinks["postgres"];
    assert!(pg.flushed, "{pg:?}\n{}", server.log());
    assert_eq!((pg.dead_lettered, pg.dropped), (0, 0), "{pg:?}");
    let (ids, _) = ticks(&server);
    for symbol in SYMBOLS {
        let got = ids.get(symbol).map_or(&[][..], Vec::as_slice);
        assert_exactly_once(&sim, symbol, got, "postgres");
    }
}

/// A transaction the writer gave up on while its connection stays open (a lost network path:
/// the server sees no close) must not hold its row locks for ever: the session's
/// `idle_in_transaction_session_timeout` makes the server abort it, and the row it had inserted
/// can then be written by the batch sent again on a new connection.
#[test]
fn an_abandoned_transaction_is_aborted_and_releases_its_locks() {
    use hotpath::sink::postgres::{copy, schema};
    let server = PgServer::start();
    let runtime = crate::sinks::runtime();
    runtime.block_on(async {
        let request_timeout = Duration::from_millis(250);
        let abandoned = copy::connect(&server.url(), copy::idle_abort(request_timeout))
            .await
            .expect("the writer's session");
        let now_us = hotpath::clock::unix_us();
        let day = schema::day_of_us(now_us);
        let tick = format!(
            "INSERT INTO ticks (exchange, symbol, trade_id, price, qty, side, ts, event_time) \
             VALUES ('binance', 'BTCUSDT', 7, 1.5, 2, 'buy', to_timestamp({now_us} / 1e6), \
             to_timestamp({now_us} / 1e6)) ON CONFLICT DO NOTHING"
        );
        let client = &abandoned.client;
        client
            .batch_execute(&schema::create_partition("ticks", day))
            .await
            .expect("today's partition");
        client
            .batch_execute(&format!("BEGIN; {tick}"))
            .await
            .expect("the abandoned batch's first statement");
        // The batch sent again, on another connection: it waits on the abandoned row's lock
        // until the server aborts the abandoned transaction, then inserts the row itself.
        let (retry, connection) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
            .await
            .expect("a second connection");
        tokio::spawn(connection);
        retry
            .batch_execute("SET statement_timeout = 60000")
            .await
            .expect("a statement timeout");
        let inserted = retry
            .execute(tick.as_str(), &[])
            .await
            .expect("the lock is released before the statement timeout");
        assert_eq!(inserted, 1, "the abandoned insert was rolled back");
        let after = client.batch_execute("SELECT 1").await;
        assert!(after.is_err(), "the server ended the abandoned session");
    });
    let log = server.log();
    assert!(
        log.contains("idle-in-transaction timeout"),
        "the server says why it ended the session:\n{log}"
    );
}

#[test]
fn books_match_the_exchange_and_seed_queries_answer() {
    let sim = sim();
    let server = PgServer::start();
    let dir = TempDir::new("pg-books");
    let config = run_config(&sim, |c| c.postgres = Some(settings(server.url(), &dir)));
    let summary = run(&config, None, |sinks| {
        wait_for("trades and books", || written(sinks, "postgres") >= 400);
        let books = || server.query("SELECT count(*) FROM books")[0][0].clone();
        wait_for("books of both symbols", || {
            books().and_then(|n| n.parse::<u64>().ok()) >= Some(10)
        });
    });
    assert!(summary.sinks["postgres"].flushed);
    check_books(&sim, &server);
    seed_queries(&server);
    // Migrations apply again without effect.
    let runtime = crate::sinks::runtime();
    runtime
        .block_on(hotpath::sink::postgres::copy::connect(
            &server.url(),
            Duration::from_secs(60),
        ))
        .expect("a second connection migrates cleanly");
    let applied = server.query("SELECT name FROM hotpath_migrations");
    assert_eq!(
        applied,
        vec![vec![Some("001_tables.plain.sql".to_string())]]
    );
}

/// Every `books` row whose update id is still in the simulator's journal equals the exchange's
/// book then (top 10 per side), with best bid/ask and spread agreeing.
fn check_books(sim: &crate::feed::Sim, server: &PgServer) {
    let rows = server.query(
        "SELECT symbol, update_id, bid_prices::text, bid_qtys::text, ask_prices::text, \
         ask_qtys::text, best_bid::text, best_ask::text, spread_bps FROM books ORDER BY ts",
    );
    let mut compared = 0;
    for row in &rows {
        let col = |i: usize| row[i].clone().unwrap_or_default();
        let (symbol, update_id) = (col(0), col(1).parse::<i64>().expect("an id"));
        let truth = {
            let shared = &sim.handle().shared;
            let index = shared.symbol_index(&symbol).expect("a symbol");
            let exchange = hotpath::sim::server::lock(&shared.exchange);
            exchange.market(index).book_at(update_id)
        };
        let Some(truth) = truth else {
            continue; // older than the journal
        };
        let levels = |prices: String, qtys: String| -> Vec<(i64, i64)> {
            let list = |s: String| -> Vec<i64> {
                s.trim_matches(|c| c == '{' || c == '}')
                    .split(',')
                    .filter(|v| !v.is_empty())
                    .map(|v| hotpath::binance::decimal::parse_decimal(v, -8).expect("a decimal"))
                    .collect()
            };
            list(prices).into_iter().zip(list(qtys)).collect()
        };
        let bids = levels(col(2), col(3));
        let asks = levels(col(4), col(5));
        let want_bids: Vec<(i64, i64)> = truth.bids.iter().take(10).copied().collect();
        let want_asks: Vec<(i64, i64)> = truth.asks.iter().take(10).copied().collect();
        assert_eq!(bids, want_bids, "{symbol} bids at {update_id}");
        assert_eq!(asks, want_asks, "{symbol} asks at {update_id}");
        let best = |s: String| hotpath::binance::decimal::parse_decimal(&s, -8);
        assert_eq!(best(col(6)), want_bids.first().map(|l| l.0));
        assert_eq!(best(col(7)), want_asks.first().map(|l| l.0));
        let spread: f64 = col(8).parse().expect("a spread");
        let (b, a) = (want_bids[0].0 as f64, want_asks[0].0 as f64);
        assert!((spread - (a - b) / ((a + b) / 2.0) * 1e4).abs() < 1e-6);
        compared += 1;
    }
    assert!(
        compared >= 5,
        "only {compared} of {} books rows were still in the journal",
        rows.len()
    );
}

/// Seed 002's "Performance Metrics" queries, verbatim.
fn seed_queries(server: &PgServer) {
    let per_asset = server.query(
        "SELECT a.symbol, COUNT(*) as tick_count
         FROM ticks t
         JOIN assets a ON t.asset_id = a.asset_id
         WHERE t.ts >= NOW() - INTERVAL '1 hour'
         GROUP BY a.symbol
         ORDER BY tick_count DESC;",
    );
    let (ids, total) = ticks(server);
    assert_eq!(per_asset.len(), SYMBOLS.len(), "{per_asset:?}");
    let mut sum = 0;
    for row in &per_asset {
        let symbol = row[0].clone().expect("a symbol");
        let count: usize = row[1]
            .as_deref()
            .and_then(|v| v.parse().ok())
            .expect("a count");
        assert_eq!(Some(count), ids.get(&symbol).map(Vec::len), "{symbol}");
        assert!(count > 0);
        sum += count;
    }
    assert_eq!(sum, total);
    let spread = server.query(
        "SELECT venue, AVG(spread_bps) as avg_spread
         FROM books
         WHERE ts >= NOW() - INTERVAL '1 hour'
         GROUP BY venue;",
    );
    assert_eq!(spread.len(), 1, "{spread:?}");
    assert_eq!(spread[0][0].as_deref(), Some("binance"));
    let avg: f64 = spread[0][1]
        .as_deref()
        .and_then(|v| v.parse().ok())
        .expect("a number");
    assert!(avg > 0.0 && avg < 10_000.0, "average spread {avg} bps");
}

#[test]
fn a_database_that_never_answers_costs_no_trade_and_never_blocks_the_readers() {
    let sim = sim();
    let dir = TempDir::new("pg-down");
    // Nothing listens there: every connection attempt is refused.
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        crate::servers::free_port()
    );
    let pg = PostgresConfig {
        batch_rows: 50,
        buffer_rows_max: 100,
        ..settings(url, &dir)
    };
    let dead_path = pg.dead_letter_path.clone();
    let config = run_config(&sim, |c| c.postgres = Some(pg));
    let summary = hotpath::feed::run::run_with(
        &config,
        crate::feed::key(&config),
        hotpath::feed::run::RunOptions {
            kinesis_client: None,
            sink_flush_timeout: Some(Duration::from_secs(2)),
        },
        |_, sinks| {
            let dead =
                |s: &[SinkHandle]| s.iter().map(|s| s.stats.dead_lettered.get()).sum::<u64>();
            wait_for("rows beyond the buffer dead-lettered", || {
                dead(sinks) >= 300
            });
        },
    )
    .expect("the run succeeds");
    let pg = &summary.sinks["postgres"];
    assert_eq!(summary.queue_drops, 0, "a reader's ring filled");
    assert_eq!((pg.written, pg.dropped), (0, 0), "{pg:?}");
    assert!(pg.flushed, "everything taken was dead-lettered: {pg:?}");
    assert!(pg.failed_requests >= 1, "{pg:?}");
    let letters = hotpath::sink::dlq::read(&dead_path).expect("the dead-letter file");
    assert_eq!(letters.records.len() as u64, pg.dead_lettered);
    let mut ids: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for record in &letters.records {
        let hotpath::sink::dlq::Target::Postgres { table, row } = &record.target else {
            panic!("not a PostgreSQL record: {record:?}");
        };
        assert_eq!(record.outcome, hotpath::sink::dlq::Outcome::Failed);
        if table != "ticks" {
            continue;
        }
        let field = |name: &str| row.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        let id = field("trade_id")
            .and_then(|v| v.parse().ok())
            .expect("an id");
        ids.entry(field("symbol").expect("a symbol"))
            .or_default()
            .push(id);
    }
    // Dead-lettered in the order taken: each symbol's trades once and in order.
    for symbol in SYMBOLS {
        let got = ids.get(symbol).map_or(&[][..], Vec::as_slice);
        assert_exactly_once(&sim, symbol, got, "postgres dead letters");
    }
    resend_puts_every_row_in_once(&dead_path, &ids, letters.records.len());
}

/// `hotpath dlq resend --postgres URL` of a dead-letter file, twice, into a database that is
/// up: the first run writes every row, the second finds them all there; `ticks` holds exactly
/// the dead-lettered trades, once each, with their exact prices.
fn resend_puts_every_row_in_once(
    dead_path: &std::path::Path,
    ids: &BTreeMap<String, Vec<i64>>,
    rows: usize,
) {
    use hotpath::sink::resend::{ResendOptions, resend_file};
    let server = PgServer::start();
    let options = ResendOptions {
        postgres_url: Some(server.url()),
        ..ResendOptions::default()
    };
    let runtime = crate::sinks::runtime();
    let missing = runtime.block_on(resend_file(dead_path, &ResendOptions::default()));
    let refused = missing.expect_err("PostgreSQL rows need --postgres");
    assert!(refused.to_string().contains("--postgres"), "{refused}");
    let first = runtime
        .block_on(resend_file(dead_path, &options))
        .expect("the resend runs");
    assert_eq!(
        (first.sent, first.already_there, first.failed),
        (rows, 0, 0)
    );
    let second = runtime
        .block_on(resend_file(dead_path, &options))
        .expect("the resend runs again");
    assert_eq!((second.sent, second.already_there), (0, rows), "{second:?}");
    let (landed, _) = ticks(&server);
    assert_eq!(
        &landed, ids,
        "ticks holds the dead-lettered trades, once each"
    );
    let books = server.query("SELECT count(*) FROM books")[0][0].clone();
    let tick_rows: usize = ids.values().map(Vec::len).sum();
    assert_eq!(books, Some((rows - tick_rows).to_string()));
    let text = server.query("SELECT price::text, qty::text FROM ticks LIMIT 1");
    let letters = hotpath::sink::dlq::read(dead_path).expect("the dead-letter file");
    let in_file = letters.records.iter().any(|r| {
        let hotpath::sink::dlq::Target::Postgres { row, .. } = &r.target else {
            return false;
        };
        let field = |name: &str| row.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        field("price") == text[0][0] && field("qty") == text[0][1]
    });
    assert!(in_file, "exact NUMERIC text round-trips: {text:?}");
}
