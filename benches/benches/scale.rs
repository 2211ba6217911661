//! The many-symbol scenario of issue 11, end to end on real processes: `hotpath sim`, a
//! `redis-server` and the kinesalite Kinesis emulator are started on free loopback ports, then
//! `hotpath run` (the release binary, both sinks on, every stream of every symbol) runs for a
//! given duration while this bench samples its RSS and CPU from `/proc/<pid>`.
//!
//! Reports, per scenario, one JSON line: the message rate reached, ring drops (`queue_drops`),
//! receipt-to-ack percentiles of both sinks (from the run's summary, hdrhistogram), RSS every
//! few seconds with its maximum, its value at the end and its growth over the second half of
//! the run (`rss_steady`: under 5 %), and CPU per message (utime + stime over frames) for the
//! whole run and for the part after the warm-up (the first quarter, at least 10 s).
//!
//! Scenarios (`SCALE_PRESETS`, comma-separated, default `20k`):
//! - `20k`: 200 symbols, about 20,000 messages/s in total;
//! - `100k`: 200 symbols, about 100,000 messages/s;
//! - `1sym`: one symbol at about 10,000 messages/s.
//!
//! `SCALE_SINKS` picks the sinks: `both` (the default), `redis`, `kinesis` or `none` (a
//! counting consumer drains the rings); a server whose sink is off is not started.
//!
//! With Redis, the line has `redis_server`: what redis-server took per message, from its own
//! counters (`INFO stats`: `total_net_input_bytes`, `total_commands_processed`; `INFO
//! commandstats`: calls per command and the microseconds spent executing them) read before the
//! run and after it (`bytes_in_per_msg`, `commands_per_msg`, `calls_per_msg`,
//! `command_us_per_msg`: Redis' own execution time per message, a floor under a burst's
//! latency whatever the writer does), and between the first sample after the warm-up and the
//! last one (`..._after_warmup`). Counts of bytes and commands do not depend on how busy the box
//! is, unlike the latencies: they compare builds on a shared machine.
//!
//! Each line also says what is needed to judge it: the machine (CPU model, cores), the load
//! average before and after, the commit, the sinks, and the CPU seconds the simulator,
//! redis-server and kinesalite used meanwhile (they share the box with the run).
//!
//! Overrides: `SCALE_SYMBOLS`, `SCALE_ACTIONS` (the simulator's order-flow actions per second
//! per symbol; the message rate follows from it and is measured), `SCALE_DURATION_S` (default
//! 60; the target is steady over 600), `SCALE_KINESIS_AGGREGATE` (`kinesis.aggregate` as
//! written in TOML: `false`, `true` or `"auto"`; default: the engine's), `SCALE_KINESIS_STALL_S`
//! (stalls kinesalite for that many seconds, `kill -STOP` then `kill -CONT`, starting
//! `SCALE_KINESIS_STALL_AT_S` into the run, default half the duration: what a Kinesis outage
//! costs in memory; the line's `kinesis_stall` says when, and the RSS maximum from the stall to
//! the end). `HOTPATH_BIN` names the binary (default: the
//! `hotpath` beside this bench's `deps/`, so `cargo build --release -p hotpath` first);
//! `HOTPATH_REDIS_SERVER` and `HOTPATH_KINESALITE` the servers (scripts/servers.sh).
//!
//! `cargo bench -p hotpath-benches --bench scale` (see BENCHMARKING.md).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hotpath_benches::servers::{Server, start_kinesalite, start_redis};
use serde_json::{Value, json};

/// One scenario: symbols and the simulator's actions per second per symbol.
struct Scenario {
    name: String,
    symbols: usize,
    actions_per_symbol: f64,
    duration: Duration,
    sinks: Sinks,
}

/// Which sinks the run has (`SCALE_SINKS`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sinks {
    Both,
    Redis,
    Kinesis,
    None,
}

impl Sinks {
    fn parse(name: &str) -> Option<Sinks> {
        match name {
            "both" => Some(Sinks::Both),
            "redis" => Some(Sinks::Redis),
            "kinesis" => Some(Sinks::Kinesis),
            "none" => Some(Sinks::None),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Sinks::Both => "both",
            Sinks::Redis => "redis",
            Sinks::Kinesis => "kinesis",
            Sinks::None => "none",
        }
    }

    fn redis(self) -> bool {
        matches!(self, Sinks::Both | Sinks::Redis)
    }

    fn kinesis(self) -> bool {
        matches!(self, Sinks::Both | Sinks::Kinesis)
    }
}

/// A preset's symbols and actions per second per symbol; the run measures the message rate it
/// got. Per symbol the simulator publishes a fixed 70 messages/s (a depth diff every 20 ms, a
/// depth20 every 50 ms) plus, per order-flow action, a trade event when it filled (about 1 in
/// 4) and a best bid/ask when the top changed (about 1 in 3): about 0.56 messages per action
/// (measured: 5,000 actions/s gave 2,890 messages/s, 16,000 gave 9,000, 18,000 gave 10,050).
/// So 200 symbols at 50 actions/s give about 20,000 messages/s, and one symbol needs 18,000
/// actions/s for 10,000 messages/s.
fn preset(name: &str) -> Option<(usize, f64)> {
    match name {
        "20k" => Some((200, 50.0)),
        "100k" => Some((200, 250.0)),
        "1sym" => Some((1, ONE_SYMBOL_ACTIONS)),
        _ => None,
    }
}

/// The `1sym` preset's actions per second (about 10,000 messages/s, measured).
const ONE_SYMBOL_ACTIONS: f64 = 18_000.0;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let presets = std::env::var("SCALE_PRESETS").unwrap_or_else(|_| "20k".into());
    let sinks_name = std::env::var("SCALE_SINKS").unwrap_or_else(|_| "both".into());
    let sinks = Sinks::parse(&sinks_name)
        .unwrap_or_else(|| panic!("SCALE_SINKS={sinks_name}: one of both, redis, kinesis, none"));
    let bin = hotpath_bin();
    let redis = sinks.redis().then(start_redis);
    let kinesalite = sinks.kinesis().then(start_kinesalite);
    let servers = Servers {
        redis_url: redis.as_ref().map(|(_, url)| url.clone()),
        redis_pid: redis.as_ref().map(|(s, _)| s.0.id()),
        kinesis_endpoint: kinesalite.as_ref().map(|(_, url)| url.clone()),
        kinesalite_pid: kinesalite.as_ref().map(|(s, _)| s.0.id()),
    };
    for name in presets.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let (symbols, actions) =
            preset(name).unwrap_or_else(|| panic!("unknown preset {name}: 20k, 100k or 1sym"));
        let scenario = Scenario {
            name: name.to_string(),
            symbols: env_or("SCALE_SYMBOLS", symbols),
            actions_per_symbol: env_or("SCALE_ACTIONS", actions),
            duration: Duration::from_secs(env_or("SCALE_DURATION_S", 60)),
            sinks,
        };
        let line = run_scenario(&bin, &scenario, &servers);
        println!("{line}");
    }
}

/// The `hotpath` binary: `HOTPATH_BIN`, else the one beside this bench's `deps/` directory.
fn hotpath_bin() -> PathBuf {
    let bin = std::env::var_os("HOTPATH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("the bench's own path");
            let deps = exe.parent().expect("deps/");
            deps.parent()
                .expect("the profile directory")
                .join("hotpath")
        });
    assert!(
        bin.exists(),
        "{} missing: cargo build --release -p hotpath (or set HOTPATH_BIN)",
        bin.display()
    );
    bin
}

/// Starts `hotpath sim` for `symbols` at `actions` per second per symbol; returns it and the
/// address it listens on (its first stdout line, `{"listening":"127.0.0.1:PORT"}`).
fn start_sim(bin: &Path, symbols: &[String], actions: f64) -> (Server, String) {
    let mut child = Command::new(bin)
        .args(["sim", "--listen", "127.0.0.1:0", "--seed", "1"])
        .args([
            "--symbols",
            &symbols.join(","),
            "--rate",
            &actions.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("hotpath sim starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the simulator's first line");
    let addr = serde_json::from_str::<Value>(&line)
        .ok()
        .and_then(|v| v["listening"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("the simulator did not say where it listens: {line:?}"));
    (server, addr)
}

/// The servers the sinks write to, and their processes (for their CPU time).
struct Servers {
    redis_url: Option<String>,
    redis_pid: Option<u32>,
    kinesis_endpoint: Option<String>,
    kinesalite_pid: Option<u32>,
}

/// The run's configuration: the chosen sinks, no control plane, the reader on the last core.
fn run_config(dir: &Path, sim: &str, symbols: &[String], servers: &Servers) -> PathBuf {
    let cores = core_affinity::get_core_ids().map_or(1, |c| c.len());
    let quoted: Vec<String> = symbols.iter().map(|s| format!("\"{s}\"")).collect();
    let mut text = format!(
        "[binance]\nendpoint = \"ws://{sim}\"\nsymbols = [{}]\n\
         streams = [\"trade\", \"bestBidAsk\", \"depth\", \"depth20\"]\n\
         [readers]\ncores = [{}]\n[http]\nlisten = \"0\"\n",
        quoted.join(", "),
        cores - 1,
    );
    if let Some(kinesis) = &servers.kinesis_endpoint {
        text.push_str(&format!(
            "[kinesis]\nenabled = true\nendpoint_url = \"{kinesis}\"\nregion = \"us-east-1\"\n\
             create_streams = true\ndead_letter_path = \"{}\"\n",
            dir.join("kinesis-dlq.jsonl").display(),
        ));
    }
    if let Some(redis) = &servers.redis_url {
        text.push_str(&format!(
            "[redis]\nenabled = true\nurl = \"{redis}\"\ndead_letter_path = \"{}\"\n",
            dir.join("redis-dlq.jsonl").display(),
        ));
    }
    let text = kinesis_aggregate(text);
    let path = dir.join("run.toml");
    std::fs::write(&path, text).expect("the run config is written");
    path
}

/// `SCALE_KINESIS_AGGREGATE`, if set, as `kinesis.aggregate` in `config`.
fn kinesis_aggregate(config: String) -> String {
    match std::env::var("SCALE_KINESIS_AGGREGATE") {
        Ok(value) => config.replace("[kinesis]\n", &format!("[kinesis]\naggregate = {value}\n")),
        Err(_) => config,
    }
}

/// One `/proc` sample of the run.
#[derive(Clone, Copy)]
struct Sample {
    at_s: f64,
    rss_kib: u64,
    cpu_ticks: u64,
    /// Frames received by then, from the latest progress line.
    frames: u64,
    /// redis-server's (`total_net_input_bytes`, `total_commands_processed`) then.
    redis: Option<(u64, u64)>,
}

/// redis-server's counters: bytes received, commands processed, calls per command.
#[derive(Clone, Default)]
struct RedisCounters {
    bytes_in: u64,
    commands: u64,
    calls: BTreeMap<String, u64>,
    /// Microseconds redis-server spent executing commands, all commands (`usec=`).
    command_us: u64,
}

/// `host:port` of a `redis://host:port/db` URL.
fn redis_addr(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("redis://")?;
    Some(rest.split('/').next().unwrap_or(rest))
}

/// `INFO <section>`'s text, over a plain connection (RESP by hand: one bulk string back).
fn redis_info(addr: &str, section: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("*2\r\n$4\r\nINFO\r\n${}\r\n{section}\r\n", section.len());
    stream.write_all(request.as_bytes()).ok()?;
    let mut reader = BufReader::new(stream);
    let mut header = String::new();
    reader.read_line(&mut header).ok()?;
    let length: usize = header.trim_end().strip_prefix('$')?.parse().ok()?;
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    String::from_utf8(body).ok()
}

/// `name:value` of an `INFO` text, as a number.
fn info_number(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// Bytes in and commands processed (`INFO stats`).
fn redis_totals(addr: &str) -> Option<(u64, u64)> {
    let stats = redis_info(addr, "stats")?;
    Some((
        info_number(&stats, "total_net_input_bytes")?,
        info_number(&stats, "total_commands_processed")?,
    ))
}

/// [`redis_totals`] and the calls per command (`INFO commandstats`: `cmdstat_hset:calls=N,..`).
fn redis_counters(addr: &str) -> Option<RedisCounters> {
    let (bytes_in, commands) = redis_totals(addr)?;
    let text = redis_info(addr, "commandstats")?;
    let mut command_us = 0;
    let calls = text
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| -> Option<u64> {
                rest.split(',')
                    .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))?
                    .parse()
                    .ok()
            };
            command_us += field("usec").unwrap_or(0);
            Some((name.to_string(), field("calls")?))
        })
        .collect();
    Some(RedisCounters {
        bytes_in,
        commands,
        calls,
        command_us,
    })
}

/// What redis-server took per message: over the whole run (`before` to `after`, over `frames`)
/// and after the warm-up (between two samples).
fn redis_per_msg(
    (before, after): (&RedisCounters, &RedisCounters),
    frames: u64,
    (warm, last): (Option<Sample>, Option<Sample>),
) -> Value {
    let per = |n: u64, frames: u64| (n as f64 / frames.max(1) as f64 * 1000.0).round() / 1000.0;
    let calls: serde_json::Map<String, Value> = after
        .calls
        .iter()
        .map(|(name, n)| {
            let was = before.calls.get(name).copied().unwrap_or(0);
            (name.clone(), json!(per(n.saturating_sub(was), frames)))
        })
        .filter(|(_, v)| v.as_f64().is_some_and(|v| v > 0.0))
        .collect();
    let steady = match (warm, last) {
        (Some(a), Some(b)) if b.frames > a.frames => a.redis.zip(b.redis).map(|(x, y)| {
            let frames = b.frames - a.frames;
            (per(y.0 - x.0, frames), per(y.1 - x.1, frames))
        }),
        _ => None,
    };
    json!({
        "bytes_in_per_msg": per(after.bytes_in.saturating_sub(before.bytes_in), frames),
        "commands_per_msg": per(after.commands.saturating_sub(before.commands), frames),
        "calls_per_msg": calls,
        // Redis' own execution time: a floor under any burst's latency, whatever the writer.
        "command_us_per_msg": per(after.command_us.saturating_sub(before.command_us), frames),
        "bytes_in_per_msg_after_warmup": steady.map(|s| s.0),
        "commands_per_msg_after_warmup": steady.map(|s| s.1),
    })
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn run_scenario(bin: &Path, scenario: &Scenario, servers: &Servers) -> Value {
    let symbols: Vec<String> = if scenario.symbols == 1 {
        vec!["BTCUSDT".into()]
    } else {
        (0..scenario.symbols)
            .map(|i| format!("S{i:03}USDT"))
            .collect()
    };
    let dir = std::env::temp_dir().join(format!(
        "hotpath-scale-{}-{}",
        std::process::id(),
        scenario.name
    ));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let (sim, addr) = start_sim(bin, &symbols, scenario.actions_per_symbol);
    let config = run_config(&dir, &addr, &symbols, servers);
    let others = [
        ("sim", Some(sim.0.id())),
        ("redis_server", servers.redis_pid),
        ("kinesalite", servers.kinesalite_pid),
    ];
    let others_before = others.map(|(_, pid)| pid.and_then(cpu_ticks));
    let load_before = load_average();
    let redis = servers.redis_url.as_deref().and_then(redis_addr);
    let redis_before = redis.and_then(redis_counters);
    let mut child = Command::new(bin)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .args(["--duration", &scenario.duration.as_secs().to_string()])
        .args(["--progress", "1"])
        .env("BINANCE_API_KEY", "bench")
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_REGION", "us-east-1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hotpath run starts");
    let pid = child.id();
    let frames_now = Arc::new(Mutex::new(0u64));
    let stderr = child.stderr.take().expect("piped stderr");
    let progress = {
        let frames_now = frames_now.clone();
        std::thread::spawn(move || follow_progress(stderr, &frames_now))
    };
    let mut stdout = child.stdout.take().expect("piped stdout");
    let summary = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let stall = kinesis_stall(scenario, servers.kinesalite_pid);
    let samples = sample_until_exit(&mut child, pid, &frames_now, redis);
    let stall = stall.map(|(at_s, for_s, driver)| {
        // kinesalite goes on whatever happened to the run.
        let _ = driver.join();
        (at_s, for_s)
    });
    let load_after = load_average();
    let redis_after = redis.and_then(redis_counters);
    let hz = clock_ticks_per_second();
    let mut others_cpu = serde_json::Map::new();
    for ((name, pid), before) in others.iter().zip(others_before) {
        if let (Some(after), Some(before)) = (pid.and_then(cpu_ticks), before) {
            let seconds = after.saturating_sub(before) as f64 / hz;
            others_cpu.insert((*name).into(), json!((seconds * 100.0).round() / 100.0));
        }
    }
    let warnings = progress.join().unwrap_or_default();
    let text = summary.join().unwrap_or_default();
    let summary: Value = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no summary from hotpath run; stderr: {warnings:?}"));
    let _ = std::fs::remove_dir_all(&dir);
    let mut line = report(scenario, &summary, &samples, warnings);
    if let Some((at_s, for_s)) = stall {
        let mib = |kib: u64| (kib as f64 / 1024.0 * 10.0).round() / 10.0;
        let after = samples.iter().filter(|s| s.at_s >= at_s);
        line["kinesis_stall"] = json!({
            "at_s": at_s,
            "for_s": for_s,
            "rss_mib_max_from_stall": after.map(|s| s.rss_kib).max().map(mib),
        });
    }
    if let (Some(before), Some(after)) = (&redis_before, &redis_after) {
        let frames = summary["frames"].as_u64().unwrap_or(0);
        let window = (warm_sample(scenario, &samples), samples.last().copied());
        line["redis_server"] = redis_per_msg((before, after), frames, window);
    }
    line["box"] = json!({
        "cpu": cpu_model(),
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "load_avg_1m_before": load_before,
        "load_avg_1m_after": load_after,
        "others_cpu_s": others_cpu,
    });
    line["commit"] = json!(commit());
    line["hotpath_bin"] = json!(bin.display().to_string());
    line
}

/// `SCALE_KINESIS_STALL_S`: a thread that stops kinesalite (`kill -STOP`) at
/// `SCALE_KINESIS_STALL_AT_S` (default: half the run) for that many seconds, then lets it go
/// on (`kill -CONT`); returns when and how long, and the thread (join it before the next run).
fn kinesis_stall(
    scenario: &Scenario,
    kinesalite: Option<u32>,
) -> Option<(f64, f64, std::thread::JoinHandle<()>)> {
    let for_s: f64 = std::env::var("SCALE_KINESIS_STALL_S").ok()?.parse().ok()?;
    let pid = kinesalite?.to_string();
    let at_s = env_or(
        "SCALE_KINESIS_STALL_AT_S",
        scenario.duration.as_secs_f64() / 2.0,
    );
    let signal = move |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} kinesalite");
    };
    let driver = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs_f64(at_s));
        signal("-STOP");
        std::thread::sleep(Duration::from_secs_f64(for_s));
        signal("-CONT");
    });
    Some((at_s, for_s, driver))
}

/// The one-minute load average (`/proc/loadavg`).
fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// The CPU model (`/proc/cpuinfo`'s `model name`).
fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

/// The checked-out commit, `+dirty` when the tree has changes (`git`, if there is one).
fn commit() -> Option<String> {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "--short", "HEAD"])?;
    let dirty = git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}+dirty") } else { head })
}

/// Reads the run's stderr: progress lines update `frames_now`; returns the other lines (last
/// 20), which say what went wrong if anything did.
fn follow_progress(stderr: impl Read, frames_now: &Mutex<u64>) -> Vec<String> {
    let mut other = Vec::new();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        match serde_json::from_str::<Value>(&line) {
            Ok(v) if v.get("msgs_per_s").is_some() => {
                if let (Some(frames), Ok(mut now)) = (v["frames"].as_u64(), frames_now.lock()) {
                    *now = frames;
                }
            }
            _ => {
                other.push(line);
                if other.len() > 20 {
                    other.remove(0);
                }
            }
        }
    }
    other
}

/// Samples RSS and CPU (and redis-server's counters, at `redis`) every 500 ms until the run
/// exits.
fn sample_until_exit(
    child: &mut Child,
    pid: u32,
    frames_now: &Mutex<u64>,
    redis: Option<&str>,
) -> Vec<Sample> {
    let start = Instant::now();
    let mut samples = Vec::new();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return samples;
        }
        if let (Some(rss_kib), Some(cpu_ticks)) = (rss_kib(pid), cpu_ticks(pid)) {
            samples.push(Sample {
                at_s: start.elapsed().as_secs_f64(),
                rss_kib,
                cpu_ticks,
                frames: frames_now.lock().map_or(0, |f| *f),
                redis: redis.and_then(redis_totals),
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The warm-up's end, seconds into the run: the first quarter of it, at least 10 s.
fn warm_s(scenario: &Scenario) -> f64 {
    (scenario.duration.as_secs_f64() / 4.0).max(10.0)
}

/// The first sample after the warm-up.
fn warm_sample(scenario: &Scenario, samples: &[Sample]) -> Option<Sample> {
    let warm = warm_s(scenario);
    samples.iter().find(|s| s.at_s >= warm).copied()
}

/// RSS p50, p99 and max (KiB) of the samples taken from `warm` to `end` seconds: the measured
/// window, without start-up (books syncing) or the shutdown flush.
fn rss_window(samples: &[Sample], warm: f64, end: f64) -> Option<[u64; 3]> {
    let mut rss: Vec<u64> = samples
        .iter()
        .filter(|s| s.at_s >= warm && s.at_s <= end)
        .map(|s| s.rss_kib)
        .collect();
    rss.sort_unstable();
    let at = |q: f64| rss[((rss.len() - 1) as f64 * q).round() as usize];
    (!rss.is_empty()).then(|| [at(0.5), at(0.99), at(1.0)])
}

fn report(scenario: &Scenario, summary: &Value, samples: &[Sample], stderr: Vec<String>) -> Value {
    let hz = clock_ticks_per_second();
    let frames = summary["frames"].as_u64().unwrap_or(0);
    let seconds = scenario.duration.as_secs_f64();
    let last = samples.last().copied();
    let cpu_s = last.map_or(0.0, |s| s.cpu_ticks as f64 / hz);
    let mib = |kib: u64| (kib as f64 / 1024.0 * 10.0).round() / 10.0;
    let steady = warm_sample(scenario, samples);
    let steady_us = match (steady, last) {
        (Some(a), Some(b)) if b.frames > a.frames => {
            Some((b.cpu_ticks - a.cpu_ticks) as f64 / hz / (b.frames - a.frames) as f64 * 1e6)
        }
        _ => None,
    };
    let steady_rate = match (steady, last) {
        (Some(a), Some(b)) if b.at_s > a.at_s => {
            Some((b.frames.saturating_sub(a.frames) as f64 / (b.at_s - a.at_s)).round())
        }
        _ => None,
    };
    let rss_max = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let window = rss_window(samples, warm_s(scenario), seconds);
    let half = samples.iter().find(|s| s.at_s >= seconds / 2.0).copied();
    let growth = match (half, last) {
        (Some(h), Some(l)) => l.rss_kib as f64 / h.rss_kib.max(1) as f64 - 1.0,
        _ => f64::NAN,
    };
    let series: Vec<Value> = samples
        .iter()
        .step_by(10)
        .map(|s| json!([s.at_s.round(), mib(s.rss_kib)]))
        .collect();
    let sink = |name: &str| {
        let s = &summary["sinks"][name];
        if s.is_null() {
            return Value::Null;
        }
        json!({
            "written": s["written"],
            "dead_lettered": s["dead_lettered"],
            "dropped": s["dropped"],
            "requests": s["requests"],
            "receipt_to_ack_ns": s["receipt_to_ack_ns"],
            // Redis: how many books were live (synced) by the end; a book is synced from a
            // REST snapshot within the weight budget, so 200 take minutes, and only live books
            // have their `ob:` written.
            "book": s["book"],
        })
    };
    json!({
        "bench": "scale",
        "scenario": scenario.name,
        "sinks": scenario.sinks.name(),
        "symbols": scenario.symbols,
        "sim_actions_per_symbol_per_s": scenario.actions_per_symbol,
        "kinesis_aggregate": std::env::var("SCALE_KINESIS_AGGREGATE").ok(),
        "duration_s": seconds,
        "frames": frames,
        "msgs_per_s": (frames as f64 / seconds).round(),
        "msgs_per_s_after_warmup": steady_rate,
        "queue_drops": summary["queue_drops"],
        "gaps": summary["gaps"]["count"],
        "redis": sink("redis"),
        "kinesis": sink("kinesis"),
        "rss_mib_max": mib(rss_max),
        "rss_mib_window": window.map(|[p50, p99, max]| {
            json!({"p50": mib(p50), "p99": mib(p99), "max": mib(max)})
        }),
        "rss_mib_end": last.map(|s| mib(s.rss_kib)),
        "rss_growth_second_half": (growth * 1000.0).round() / 1000.0,
        "rss_steady": growth.abs() < 0.05,
        "rss_mib_every_5s": series,
        "cpu_s": (cpu_s * 100.0).round() / 100.0,
        "cpu_us_per_msg": if frames > 0 { Some((cpu_s / frames as f64 * 1e6 * 10.0).round() / 10.0) } else { None },
        "cpu_us_per_msg_after_warmup": steady_us.map(|u| (u * 10.0).round() / 10.0),
        "stderr_tail": stderr,
    })
}
