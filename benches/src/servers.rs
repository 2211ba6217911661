//! The servers the end-to-end benches start for themselves (redis-server, kinesalite, moto),
//! each a child process on a free loopback port, killed when dropped; and the Kinesis client
//! they talk to an emulator with. A server that cannot start fails the bench loudly, naming the
//! `scripts/servers.sh` function that installs it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started server has to accept connections.
const START_PATIENCE: Duration = Duration::from_secs(30);

/// A child process, killed on drop.
pub struct Server(pub Child);

impl Server {
    /// The process id (for its CPU time).
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The unsigned setting in environment variable `name`, or `default`.
pub fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Spawns `command` (its output discarded) and waits until `port` accepts connections.
pub fn spawn_listening(command: &mut Command, port: u16, what: &str) -> Server {
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let server = Server(child);
    let deadline = Instant::now() + START_PATIENCE;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

/// A redis-server without persistence (`HOTPATH_REDIS_SERVER`, else `redis-server` on the
/// path: scripts/servers.sh's `ensure_redis`) and its URL.
pub fn start_redis() -> (Server, String) {
    let bin = std::env::var("HOTPATH_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let port = free_port();
    let mut command = Command::new(&bin);
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"]);
    let what = format!("{bin} (scripts/servers.sh's ensure_redis)");
    let server = spawn_listening(&mut command, port, &what);
    (server, format!("redis://127.0.0.1:{port}/0"))
}

/// kinesalite's `cli.js`: `HOTPATH_KINESALITE`, else where scripts/servers.sh's
/// `ensure_kinesalite` puts it in this checkout.
pub fn kinesalite_cli() -> PathBuf {
    let cli = std::env::var_os("HOTPATH_KINESALITE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/tools/kinesalite/node_modules/kinesalite/cli.js")
        });
    assert!(
        cli.exists(),
        "{} missing: run scripts/servers.sh's ensure_kinesalite",
        cli.display()
    );
    cli
}

/// kinesalite with its defaults, and its endpoint URL.
pub fn start_kinesalite() -> (Server, String) {
    let (server, port) = kinesalite(&[]);
    (server, format!("http://127.0.0.1:{port}"))
}

/// kinesalite with `extra` arguments, and its port.
pub fn kinesalite(extra: &[&str]) -> (Server, u16) {
    let port = free_port();
    let mut command = Command::new("node");
    command
        .arg(kinesalite_cli())
        .args(["--port", &port.to_string()])
        .args(extra);
    (spawn_listening(&mut command, port, "kinesalite"), port)
}

/// A Kinesis client for an emulator at `endpoint`: fixed credentials, `us-east-1`, and no
/// retries of its own (the benches count what each request does).
pub fn kinesis_client(endpoint: &str) -> aws_sdk_kinesis::Client {
    hotpath::tls::install_default_provider();
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            "bench", "bench", None, None, "bench",
        ))
        .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}
