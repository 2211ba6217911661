//! A throwaway PostgreSQL cluster per test: `initdb` into a temp dir, `pg_ctl start` on a free
//! loopback port (socket in the same dir), trust authentication; stopped (and restartable) with
//! `pg_ctl`. Run as root it runs the server as the `postgres` user (`runuser`), as PostgreSQL
//! refuses root. The binaries come from `HOTPATH_PG_BIN` (set by `scripts/servers.sh`'s
//! `ensure_postgres`), else `/usr/lib/postgresql/15/bin`. Anything missing fails loudly.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::servers::{TempDir, free_port};

/// How long a start may take (initdb and start on a loaded machine).
const START_PATIENCE: Duration = Duration::from_secs(60);
const PORT_ATTEMPTS: usize = 5;

/// A running PostgreSQL cluster of this test.
pub struct PgServer {
    /// The port it listens on (kept across `restart`).
    pub port: u16,
    bin: PathBuf,
    dir: TempDir,
    running: bool,
}

fn bin_dir() -> PathBuf {
    let dir = std::env::var_os("HOTPATH_PG_BIN").map_or_else(
        || PathBuf::from("/usr/lib/postgresql/15/bin"),
        PathBuf::from,
    );
    assert!(
        dir.join("initdb").is_file() && dir.join("pg_ctl").is_file(),
        "PostgreSQL's initdb/pg_ctl not found in {} (set HOTPATH_PG_BIN, or run \
         `source scripts/servers.sh; ensure_postgres`, which installs postgresql)",
        dir.display()
    );
    dir
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

impl PgServer {
    /// Makes a cluster and starts it on a free loopback port; panics with the log if it cannot.
    pub fn start() -> PgServer {
        let dir = TempDir::new("postgres");
        let mut server = PgServer {
            port: 0,
            bin: bin_dir(),
            dir,
            running: false,
        };
        if is_root() {
            let out = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(server.dir.path())
                .output()
                .expect("chown runs");
            assert!(out.status.success(), "chown postgres: {out:?}");
        }
        let data = server.data();
        let out = server.pg(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(out.status.success(), "initdb failed: {}", text(&out));
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_port();
            if server.try_start() {
                return server;
            }
        }
        panic!(
            "postgres did not start in {PORT_ATTEMPTS} attempts; log:\n{}",
            server.log()
        )
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs a PostgreSQL program, as the `postgres` user when we are root.
    fn pg(&self, program: &str, args: &[&str]) -> Output {
        let binary = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&binary);
            c
        } else {
            Command::new(&binary)
        };
        command
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()))
    }

    fn try_start(&mut self) -> bool {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50",
            self.port,
            self.dir.path().display()
        );
        let (data, log) = (self.data(), self.log_path().display().to_string());
        let timeout = START_PATIENCE.as_secs().to_string();
        let out = self.pg(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &options, "-w", "-t", &timeout, "start",
            ],
        );
        self.running = out.status.success();
        if !self.running && !self.log().contains("already in use") {
            panic!("pg_ctl start failed: {}\nlog:\n{}", text(&out), self.log());
        }
        self.running
    }

    /// Stops the server (fast shutdown: open connections are cut).
    pub fn stop(&mut self) {
        let data = self.data();
        let out = self.pg("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
        assert!(out.status.success(), "pg_ctl stop failed: {}", text(&out));
        self.running = false;
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        let deadline = Instant::now() + START_PATIENCE;
        while !self.try_start() {
            assert!(
                Instant::now() < deadline,
                "postgres did not restart:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The URL of the `postgres` database as the `postgres` superuser.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs `query` and returns every row (each column as text, NULL as `None`).
    pub fn query(&self, query: &str) -> Vec<Vec<Option<String>>> {
        let runtime = crate::sinks::runtime();
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url()));
            tokio::spawn(connection);
            let messages = client
                .simple_query(query)
                .await
                .unwrap_or_else(|e| panic!("{query}: {e:?}"));
            messages
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                        (0..row.len())
                            .map(|i| row.get(i).map(str::to_string))
                            .collect(),
                    ),
                    _ => None,
                })
                .collect()
        })
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.running {
            let data = self.data();
            let _ = self.pg("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
