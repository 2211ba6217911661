//! Real servers for the integration tests, started by the tests themselves: a `redis-server`
//! (stand-alone, or a one-node Redis Cluster) and the kinesalite Kinesis emulator, each on a
//! free loopback port, killed on drop. Nothing is skipped: a server that cannot start panics
//! with its log. `scripts/servers.sh` installs both (scripts/test.sh runs it).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType, StreamStatus};
use redis::AsyncCommands;

/// How long a server may take to answer after it was started (bounds a hang; generous, as a
/// loaded 2-core machine starts node slowly).
const START_PATIENCE: Duration = Duration::from_secs(60);
/// How long a Kinesis stream may take to become ACTIVE, and reading a shard may go on without
/// a record (a loaded kinesalite reads slowly; only a reader that stops progressing fails).
const STREAM_PATIENCE: Duration = Duration::from_secs(60);
/// The pause between two readiness probes (polling a port with a bounded deadline).
const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// How many fresh ports a server is tried on when the one picked was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// A directory of its own under the system temp dir, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/hotpath-it-<kind>-<pid>-<n>`.
    pub fn new(kind: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("hotpath-it-{kind}-{}-{n}", std::process::id()));
        // A leftover of an earlier process with the same pid.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create temp dir {}: {e}", path.display()));
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A port that was free on 127.0.0.1 a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// The repository root (the workspace beside `engine/`).
fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("engine/ has a parent")
        .to_path_buf()
}

/// The file a server writes its stdout and stderr to: truncated, or appended to (a restart).
fn log_file(path: &Path, append: bool) -> (Stdio, Stdio) {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    let err = file.try_clone().expect("clone a log file handle");
    (Stdio::from(file), Stdio::from(err))
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("<no log at {}: {e}>", path.display()))
}

/// Why a server did not become ready.
enum NotReady {
    /// The process exited; the log says why.
    Died(String),
    /// It kept running but did not answer within the deadline.
    Silent,
}

/// Kills a child (SIGKILL) and reaps it; a child that already exited is only reaped.
fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Polls `probe` until it succeeds, the child exits, or `START_PATIENCE` passes.
fn await_ready(child: &mut Child, mut probe: impl FnMut() -> bool) -> Result<(), NotReady> {
    let deadline = Instant::now() + START_PATIENCE;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(NotReady::Died(format!("exited with {status}")));
        }
        if probe() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(NotReady::Silent);
        }
        std::thread::sleep(PROBE_INTERVAL);
    }
}

// ---------------------------------------------------------------------------------------------
// Redis

/// A `redis-server` process of this test on 127.0.0.1, without persistence.
pub struct RedisServer {
    /// The port it listens on (kept across `restart`).
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
    /// The cluster bus port (`--cluster-port`), `None` for a stand-alone server.
    bus_port: Option<u16>,
}

impl RedisServer {
    /// Starts a stand-alone redis-server on a free loopback port and waits until it answers PING.
    pub fn start() -> RedisServer {
        RedisServer::start_with(false)
    }

    /// Starts a one-node Redis Cluster: cluster mode on, all 16384 slots assigned to this node,
    /// and waits until `CLUSTER INFO` says `cluster_state:ok`.
    pub fn start_cluster_single_node() -> RedisServer {
        let server = RedisServer::start_with(true);
        let reply: String = server
            .command(redis::cmd("CLUSTER").arg("ADDSLOTSRANGE").arg(0).arg(16383))
            .unwrap_or_else(|e| panic!("CLUSTER ADDSLOTSRANGE failed: {e}\n{}", server.log()));
        assert_eq!(reply, "OK", "CLUSTER ADDSLOTSRANGE");
        server.await_cluster_ok();
        server
    }

    fn start_with(cluster: bool) -> RedisServer {
        let dir = TempDir::new(if cluster { "redis-cluster" } else { "redis" });
        let mut server = RedisServer {
            port: 0,
            child: None,
            dir,
            bus_port: None,
        };
        let mut taken = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_port();
            // An explicit bus port: the default (port + 10000) may be taken or above 65535.
            server.bus_port = cluster.then(free_port);
            match server.spawn(false) {
                Ok(()) => return server,
                Err(NotReady::Died(why)) => {
                    let log = server.log();
                    if !log.contains("Address already in use") {
                        panic!(
                            "redis-server ({}) {why} on port {}; its log:\n{log}",
                            redis_binary().display(),
                            server.port
                        );
                    }
                    taken.push(log);
                }
                Err(NotReady::Silent) => panic!(
                    "redis-server did not answer PING on 127.0.0.1:{} within {:?}; its log:\n{}",
                    server.port,
                    START_PATIENCE,
                    server.log()
                ),
            }
        }
        panic!(
            "redis-server found no free port in {PORT_ATTEMPTS} attempts; last log:\n{}",
            taken.last().map_or("", String::as_str)
        )
    }

    /// Spawns the process on `self.port` and waits for PING; `append`: keep the earlier log.
    fn spawn(&mut self, append: bool) -> Result<(), NotReady> {
        let binary = redis_binary();
        let log = self.dir.path().join("redis.log");
        let (out, err) = log_file(&log, append);
        let mut command = Command::new(&binary);
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path());
        if let Some(bus_port) = self.bus_port {
            command
                .args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(self.dir.path().join("nodes.conf"))
                .arg("--cluster-port")
                .arg(bus_port.to_string());
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): install it with scripts/servers.sh (ensure_redis) \
                     or set HOTPATH_REDIS_SERVER",
                    binary.display()
                )
            });
        let child = self.child.insert(child);
        let url = format!("redis://127.0.0.1:{}/", self.port);
        let result = await_ready(child, || ping(&url));
        if result.is_err() {
            kill_child(child);
            self.child = None;
        }
        result
    }

    /// `redis://127.0.0.1:P/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it to exit. Its data is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child);
        }
    }

    /// Starts the server again on the same port (killing it first if it still runs) and waits
    /// until it answers PING (and, in cluster mode, until the cluster is ok again).
    pub fn restart(&mut self) {
        self.kill();
        match self.spawn(true) {
            Ok(()) => {}
            Err(NotReady::Died(why)) => panic!(
                "redis-server {why} when restarted on port {}; its log:\n{}",
                self.port,
                self.log()
            ),
            Err(NotReady::Silent) => panic!(
                "restarted redis-server did not answer PING on port {} within {:?}; log:\n{}",
                self.port,
                START_PATIENCE,
                self.log()
            ),
        }
        if self.bus_port.is_some() {
            self.await_cluster_ok();
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("redis.log"))
    }

    /// Runs one command on a fresh synchronous connection.
    fn command<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let client = redis::Client::open(self.url())?;
        let mut con = client.get_connection_with_timeout(START_PATIENCE)?;
        cmd.query(&mut con)
    }

    fn await_cluster_ok(&self) {
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            let last = match self.command::<String>(redis::cmd("CLUSTER").arg("INFO")) {
                Ok(info) if info.contains("cluster_state:ok") => return,
                Ok(info) => info,
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                panic!(
                    "the one-node Redis Cluster on port {} is not ok after {:?}: {last}\nlog:\n{}",
                    self.port,
                    START_PATIENCE,
                    self.log()
                );
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `HOTPATH_REDIS_SERVER`, or `redis-server` from PATH.
fn redis_binary() -> PathBuf {
    std::env::var_os("HOTPATH_REDIS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-server"))
}

/// Whether a PING on `url` answers PONG (one short attempt).
fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut con) = client.get_connection_with_timeout(Duration::from_millis(500)) else {
        return false;
    };
    let _ = con.set_read_timeout(Some(Duration::from_millis(500)));
    matches!(redis::cmd("PING").query::<String>(&mut con), Ok(pong) if pong == "PONG")
}

// ---------------------------------------------------------------------------------------------
// Kinesis

/// A kinesalite process (the Kinesis emulator, in memory) of this test.
pub struct KinesisEmulator {
    /// The port it listens on (all interfaces; the tests use 127.0.0.1).
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl KinesisEmulator {
    /// Starts kinesalite on a free port and waits until it answers a ListStreams.
    pub fn start() -> KinesisEmulator {
        let cli = kinesalite_cli();
        if !cli.is_file() {
            panic!(
                "kinesalite is not installed at {} (HOTPATH_KINESALITE): run \
                 `source scripts/servers.sh; ensure_kinesalite` (scripts/test.sh does)",
                cli.display()
            );
        }
        let dir = TempDir::new("kinesalite");
        let log = dir.path().join("kinesalite.log");
        let mut taken = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let (out, err) = log_file(&log, false);
            let mut child = Command::new("node")
                .arg(&cli)
                .arg("--port")
                .arg(port.to_string())
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run `node {}` ({e}): install node (scripts/servers.sh)",
                        cli.display()
                    )
                });
            match await_ready(&mut child, || list_streams_answers(port)) {
                Ok(()) => {
                    return KinesisEmulator {
                        port,
                        child: Some(child),
                        dir,
                    };
                }
                Err(NotReady::Died(why)) => {
                    let text = read_log(&log);
                    if !text.contains("EADDRINUSE") {
                        panic!("kinesalite {why} on port {port}; its output:\n{text}");
                    }
                    taken.push(text);
                }
                Err(NotReady::Silent) => {
                    kill_child(&mut child);
                    panic!(
                        "kinesalite did not answer ListStreams on 127.0.0.1:{port} within \
                         {START_PATIENCE:?}; its output:\n{}",
                        read_log(&log)
                    );
                }
            }
        }
        panic!(
            "kinesalite found no free port in {PORT_ATTEMPTS} attempts; last output:\n{}",
            taken.last().map_or("", String::as_str)
        )
    }

    /// `http://127.0.0.1:P`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The emulator's address on the loopback interface.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The emulator's output so far.
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("kinesalite.log"))
    }

    /// An SDK client for the emulator, with static test credentials and the SDK's default
    /// (standard) retries.
    pub async fn client(&self) -> aws_sdk_kinesis::Client {
        kinesis_client(&self.endpoint(), RetryConfig::standard())
    }

    /// Creates a stream of `shards` shards and waits until it is ACTIVE.
    pub async fn create_stream(&self, name: &str, shards: i32) {
        let client = kinesis_client(&self.endpoint(), RetryConfig::disabled());
        client
            .create_stream()
            .stream_name(name)
            .shard_count(shards)
            .send()
            .await
            .unwrap_or_else(|e| panic!("CreateStream {name}: {}", sdk_error(&e)));
        let deadline = Instant::now() + STREAM_PATIENCE;
        loop {
            let summary = client
                .describe_stream_summary()
                .stream_name(name)
                .send()
                .await
                .unwrap_or_else(|e| panic!("DescribeStreamSummary {name}: {}", sdk_error(&e)));
            let status = summary
                .stream_description_summary()
                .map(|s| s.stream_status().clone());
            if status == Some(StreamStatus::Active) {
                return;
            }
            if Instant::now() >= deadline {
                panic!("stream {name} is not ACTIVE after {STREAM_PATIENCE:?} (status {status:?})");
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// Every record of every shard of `stream`, from TRIM_HORIZON until caught up, as
    /// (partition key, data, sequence number): each shard's records in order, shards in
    /// shard-id order.
    pub async fn read_all(&self, stream: &str) -> Vec<(String, Vec<u8>, String)> {
        self.read_by_shard(stream)
            .await
            .into_iter()
            .flat_map(|s| s.records)
            .collect()
    }

    /// Every shard of `stream` (open or closed) with its hash key range and its records, in
    /// shard-id order (a split's parent before its children).
    pub async fn read_by_shard(&self, stream: &str) -> Vec<ShardRecords> {
        let client = kinesis_client(&self.endpoint(), RetryConfig::disabled());
        let mut shards: Vec<ShardRecords> = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let request = match &next_token {
                Some(token) => client.list_shards().next_token(token),
                None => client.list_shards().stream_name(stream),
            };
            let page = request
                .send()
                .await
                .unwrap_or_else(|e| panic!("ListShards {stream}: {}", sdk_error(&e)));
            for shard in page.shards() {
                let range = shard.hash_key_range().expect("a hash key range");
                let number = |t: &str| t.parse::<u128>().expect("a 128-bit hash key");
                shards.push(ShardRecords {
                    id: shard.shard_id().to_string(),
                    start: number(range.starting_hash_key()),
                    end: number(range.ending_hash_key()),
                    records: Vec::new(),
                });
            }
            next_token = page.next_token().map(str::to_string);
            if next_token.is_none() {
                break;
            }
        }
        shards.sort_by(|a, b| a.id.cmp(&b.id));
        for shard in &mut shards {
            shard.records = self.read_shard(&client, stream, &shard.id).await;
        }
        shards
    }

    /// One shard's records, from TRIM_HORIZON until caught up (or its end, when closed).
    async fn read_shard(
        &self,
        client: &aws_sdk_kinesis::Client,
        stream: &str,
        shard: &str,
    ) -> Vec<(String, Vec<u8>, String)> {
        let mut deadline = Instant::now() + STREAM_PATIENCE;
        let mut out = Vec::new();
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetShardIterator {stream}/{shard}: {}", sdk_error(&e)))
            .shard_iterator()
            .map(str::to_string);
        while let Some(it) = iterator.take() {
            let page = client
                .get_records()
                .shard_iterator(it)
                .limit(10_000)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GetRecords {stream}/{shard}: {}", sdk_error(&e)));
            for record in page.records() {
                out.push((
                    record
                        .partition_key()
                        .expect("kinesalite returns the partition key")
                        .to_string(),
                    record.data().as_ref().to_vec(),
                    record.sequence_number().to_string(),
                ));
            }
            if page.records().is_empty() && page.millis_behind_latest() == Some(0) {
                break;
            }
            if !page.records().is_empty() {
                deadline = Instant::now() + STREAM_PATIENCE;
            } else if Instant::now() >= deadline {
                panic!(
                    "reading {stream}/{shard}: no record and not caught up for \
                     {STREAM_PATIENCE:?}"
                );
            }
            // None: the shard is closed and read to its end.
            iterator = page.next_shard_iterator().map(str::to_string);
        }
        out
    }
}

/// One shard as [`KinesisEmulator::read_by_shard`] reads it.
pub struct ShardRecords {
    /// `shardId-...`.
    pub id: String,
    /// Its hash key range, inclusive.
    pub start: u128,
    /// The range's end.
    pub end: u128,
    /// (partition key, data, sequence number), in order.
    pub records: Vec<(String, Vec<u8>, String)>,
}

impl Drop for KinesisEmulator {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child);
        }
    }
}

/// An SDK client for the Kinesis endpoint `endpoint` with static test credentials, region
/// us-east-1 and the given retry policy (no environment lookup).
pub fn kinesis_client(endpoint: &str, retry: RetryConfig) -> aws_sdk_kinesis::Client {
    hotpath::tls::install_default_provider();
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .credentials_provider(Credentials::new(
            "test",
            "test",
            None,
            None,
            "hotpath-tests",
        ))
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .retry_config(retry)
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}

/// An SDK error with its whole chain of causes.
pub fn sdk_error(e: &(dyn std::error::Error + 'static)) -> String {
    aws_sdk_kinesis::error::DisplayErrorContext(e).to_string()
}

/// `HOTPATH_KINESALITE`, or `<repo>/target/tools/kinesalite/node_modules/kinesalite/cli.js`.
fn kinesalite_cli() -> PathBuf {
    std::env::var_os("HOTPATH_KINESALITE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            repo_root().join("target/tools/kinesalite/node_modules/kinesalite/cli.js")
        })
}

/// Whether a ListStreams on 127.0.0.1:`port` answers 200 (one short attempt). kinesalite does
/// not check signatures but wants an `Authorization` header and a date.
fn list_streams_answers(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(1000)));
    let body = "{}";
    let request = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         X-Amz-Target: Kinesis_20131202.ListStreams\r\n\
         Content-Type: application/x-amz-json-1.1\r\n\
         X-Amz-Date: 20200101T000000Z\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=test/20200101/us-east-1/kinesis/aws4_request, \
         SignedHeaders=host, Signature=00\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    response.starts_with(b"HTTP/1.1 200")
}

// ---------------------------------------------------------------------------------------------
// The harness, proven.

#[tokio::test]
async fn redis_starts_answers_and_restarts_empty_on_the_same_port() {
    let mut server = RedisServer::start();
    let port = server.port;
    let client = redis::Client::open(server.url()).expect("a valid URL");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    let pong: String = redis::cmd("PING")
        .query_async(&mut con)
        .await
        .expect("PING");
    assert_eq!(pong, "PONG");
    let () = con.set("k", "v").await.expect("SET");
    let v: Option<String> = con.get("k").await.expect("GET");
    assert_eq!(v.as_deref(), Some("v"));

    server.kill();
    let refused = redis::cmd("PING").query_async::<String>(&mut con).await;
    assert!(
        refused.is_err(),
        "a killed server does not answer: {refused:?}"
    );
    assert!(
        !ping(&server.url()),
        "nothing answers on port {port} after kill"
    );

    server.restart();
    assert_eq!(server.port, port, "restart keeps the port");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("reconnects after restart");
    let v: Option<String> = con.get("k").await.expect("GET after restart");
    assert_eq!(v, None, "no persistence: the data is gone after a restart");
}

#[tokio::test]
async fn redis_cluster_single_node_serves_hash_tagged_keys() {
    let server = RedisServer::start_cluster_single_node();
    let client = redis::cluster::ClusterClient::new(vec![server.url()]).expect("cluster client");
    let mut con = client
        .get_async_connection()
        .await
        .expect("connects to the cluster");
    let () = con.set("{BTCUSDT}:x", "42").await.expect("SET");
    let v: String = con.get("{BTCUSDT}:x").await.expect("GET");
    assert_eq!(v, "42");
    // Multi-key commands work within one hash slot.
    let () = con.set("{BTCUSDT}:y", "43").await.expect("SET");
    let both: Vec<String> = con
        .mget(&["{BTCUSDT}:x", "{BTCUSDT}:y"])
        .await
        .expect("MGET in one slot");
    assert_eq!(both, ["42", "43"]);
}

#[tokio::test]
async fn redis_cluster_node_restarts_with_its_slots() {
    let mut server = RedisServer::start_cluster_single_node();
    server.restart();
    let client = redis::cluster::ClusterClient::new(vec![server.url()]).expect("cluster client");
    let mut con = client
        .get_async_connection()
        .await
        .expect("connects to the restarted cluster");
    let () = con.set("{ETHUSDT}:x", "1").await.expect("SET");
    let v: String = con.get("{ETHUSDT}:x").await.expect("GET");
    assert_eq!(v, "1");
}

#[tokio::test]
async fn kinesalite_stores_put_records_in_order() {
    let kinesis = KinesisEmulator::start();
    let banner = format!("Listening at http://:::{}", kinesis.port);
    assert!(kinesis.log().contains(&banner), "{}", kinesis.log());
    kinesis.create_stream("harness", 1).await;
    let client = kinesis.client().await;
    let entries = [("BTCUSDT", "a"), ("ETHUSDT", "b"), ("BTCUSDT", "c")]
        .into_iter()
        .map(|(key, data)| {
            PutRecordsRequestEntry::builder()
                .partition_key(key)
                .data(Blob::new(data.as_bytes()))
                .build()
                .expect("a complete entry")
        })
        .collect::<Vec<_>>();
    let out = client
        .put_records()
        .stream_name("harness")
        .set_records(Some(entries))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutRecords: {}", sdk_error(&e)));
    assert_eq!(out.failed_record_count(), Some(0));
    assert_eq!(out.records().len(), 3);
    let sequences: Vec<String> = out
        .records()
        .iter()
        .map(|r| r.sequence_number().expect("a sequence number").to_string())
        .collect();

    let read = kinesis.read_all("harness").await;
    let got: Vec<(&str, &[u8], &str)> = read
        .iter()
        .map(|(k, d, s)| (k.as_str(), d.as_slice(), s.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("BTCUSDT", &b"a"[..], sequences[0].as_str()),
            ("ETHUSDT", &b"b"[..], sequences[1].as_str()),
            ("BTCUSDT", &b"c"[..], sequences[2].as_str()),
        ]
    );
}

#[tokio::test]
async fn kinesalite_reads_every_shard_in_shard_order() {
    let kinesis = KinesisEmulator::start();
    kinesis.create_stream("sharded", 4).await;
    let client = kinesis.client().await;
    let entries = (0..40)
        .map(|i| {
            PutRecordsRequestEntry::builder()
                .partition_key(format!("key-{}", i % 8))
                .data(Blob::new(format!("{i}").into_bytes()))
                .build()
                .expect("a complete entry")
        })
        .collect::<Vec<_>>();
    let out = client
        .put_records()
        .stream_name("sharded")
        .set_records(Some(entries))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutRecords: {}", sdk_error(&e)));
    assert_eq!(out.failed_record_count(), Some(0));
    let mut expected: Vec<(String, String, String)> = out
        .records()
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                r.shard_id().expect("a shard id").to_string(),
                i.to_string(),
                r.sequence_number().expect("a sequence number").to_string(),
            )
        })
        .collect();
    // Stable: within a shard, request order is the shard's order.
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    let read = kinesis.read_all("sharded").await;
    let got: Vec<(String, String)> = read
        .into_iter()
        .map(|(_, d, s)| (String::from_utf8(d).expect("utf-8"), s))
        .collect();
    let expected: Vec<(String, String)> = expected.into_iter().map(|(_, d, s)| (d, s)).collect();
    assert_eq!(got, expected);
}
