//! Rows per second into PostgreSQL through the writer's own batch path
//! (`sink::postgres::copy::write_batch`: binary COPY into staging, merged with
//! `ON CONFLICT DO NOTHING`, one transaction per batch), against a throwaway cluster this bench
//! starts itself (`HOTPATH_PG_BIN`, else `/usr/lib/postgresql/15/bin`; as root the server runs
//! as the `postgres` user). Not criterion: one long measurement per batch size, alternated, so
//! the figures are ratios within one run on a shared machine.
//!
//! `cargo bench -p hotpath-benches --bench postgres` (`ROWS=200000` by default per round).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hotpath::sink::postgres::copy;
use hotpath::sink::postgres::rows::{Row, Tick};
use hotpath::sink::postgres::types::{Numeric, UnixMicros};

fn pg(bin: &Path, program: &str, args: &[&str], root: bool) {
    let mut command = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    };
    let out = command
        .args(args)
        .output()
        .expect("a PostgreSQL program runs");
    assert!(out.status.success(), "{program}: {out:?}");
}

fn rows(n: usize, first_id: i64) -> Vec<Row> {
    let symbol: Arc<str> = Arc::from("BTCUSDT");
    let now_us = hotpath::clock::unix_us();
    (0..n)
        .map(|i| {
            let id = first_id + i as i64;
            Row::Tick(Tick {
                symbol: symbol.clone(),
                trade_id: id,
                price: Numeric::new(6_976_988_000_000 + id % 1000, -8),
                qty: Numeric::new(100_000 + id % 77, -8),
                side: if id % 2 == 0 { "buy" } else { "sell" },
                trade_time: UnixMicros(now_us + i as i64),
                event_time: UnixMicros(now_us + i as i64),
            })
        })
        .collect()
}

/// A throwaway cluster: its URL, and what stops it.
struct Cluster {
    url: String,
    bin: PathBuf,
    dir: PathBuf,
    root: bool,
}

impl Cluster {
    fn start() -> Cluster {
        let bin = std::env::var_os("HOTPATH_PG_BIN").map_or_else(
            || PathBuf::from("/usr/lib/postgresql/15/bin"),
            PathBuf::from,
        );
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        let dir = std::env::temp_dir().join(format!("hotpath-bench-pg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        if root {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown");
        }
        let data = dir.join("data").display().to_string();
        let log = dir.join("log").display().to_string();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        pg(
            &bin,
            "initdb",
            &["-D", &data, "-U", "postgres", "--auth=trust", "--no-sync"],
            root,
        );
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            dir.display()
        );
        pg(
            &bin,
            "pg_ctl",
            &["-D", &data, "-l", &log, "-o", &options, "-w", "start"],
            root,
        );
        Cluster {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            bin,
            dir,
            root,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.join("data").display().to_string();
        pg(
            &self.bin,
            "pg_ctl",
            &["-D", &data, "-m", "fast", "-w", "stop"],
            self.root,
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes `rows` in batches of `batch`; rows per second.
async fn rate(session: &copy::Session, rows: &[Row], batch: usize) -> f64 {
    let start = Instant::now();
    for chunk in rows.chunks(batch) {
        copy::write_batch(&session.client, chunk, &[])
            .await
            .expect("a batch");
    }
    rows.len() as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let total: usize = std::env::var("ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let cluster = Cluster::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let session = copy::connect(&cluster.url, Duration::from_secs(60))
            .await
            .expect("connect");
        let today = hotpath::clock::unix_us().div_euclid(86_400_000_000);
        let partitions: Vec<String> = (today - 1..=today + 1)
            .map(|d| hotpath::sink::postgres::schema::create_partition("ticks", d))
            .collect();
        copy::write_batch(&session.client, &[], &partitions)
            .await
            .expect("partitions");
        let mut next_id = 1;
        println!("rows/s into PostgreSQL ({total} ticks rows per round, fsync on)");
        for round in 0..2 {
            for batch in [500usize, 5000] {
                let all = rows(total, next_id);
                next_id += total as i64;
                let r = rate(&session, &all, batch).await;
                println!("round {round} batch_rows {batch:>5}: {r:>9.0} rows/s");
            }
        }
        // Sending again a batch that landed: a COPY and a merge that changes nothing.
        let r = rate(&session, &rows(total, 1), 5000).await;
        println!("replayed, all conflicts   : {r:>9.0} rows/s");
    });
}
