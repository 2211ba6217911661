//! `hotpath decode`, run as a user runs it.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::shared_binance;

fn hotpath(args: &[&str], stdin: &[u8]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hotpath"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hotpath starts");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(stdin)
        .expect("stdin accepts");
    let output = child.wait_with_output().expect("hotpath exits");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).expect("UTF-8 output"),
    )
}

fn samples_path(name: &str) -> String {
    format!(
        "{}/../../shared/binance/samples/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn decodes_the_sample_hex_file_to_exact_decimals() {
    let (code, out) = hotpath(
        &[
            "decode",
            "--hex-file",
            &samples_path("bestbidask_btcusdt_reencoded.hex"),
        ],
        b"",
    );
    assert_eq!(code, 0);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 10);
    let first = &lines[0];
    assert_eq!(first["message"], "BestBidAskStreamEvent");
    assert_eq!(first["eventTime"], 1_773_305_079_016_056i64);
    assert_eq!(first["bookUpdateId"], 89_969_613_074i64);
    assert_eq!(first["bidPrice"], "69769.88000000");
    assert_eq!(first["bidQty"], "0.01301000");
    assert_eq!(first["askPrice"], "69769.89000000");
    assert_eq!(first["askQty"], "2.86360000");
    assert_eq!(first["symbol"], "BTCUSDT");
    let published = shared_binance("samples/bestbidask_btcusdt_live_decoded.jsonl");
    for (ours, theirs) in lines.iter().zip(published.lines()) {
        let theirs: Value = serde_json::from_str(theirs).expect("JSON line");
        assert_eq!(ours["bookUpdateId"], theirs["book_update_id"]);
        assert_eq!(ours["eventTime"], theirs["event_time_us"]);
    }
}

#[test]
fn trades_print_groups_as_arrays_and_stdin_works() {
    // One BTCUSDT trade: 65 bytes.
    let mut frame = Vec::new();
    for v in [18u16, 10000, 1, 0] {
        frame.extend_from_slice(&v.to_le_bytes());
    }
    frame.extend_from_slice(&1_700_000_000_000_001i64.to_le_bytes());
    frame.extend_from_slice(&1_700_000_000_000_000i64.to_le_bytes());
    frame.extend_from_slice(&[0xf8, 0xf8]);
    frame.extend_from_slice(&25u16.to_le_bytes());
    frame.extend_from_slice(&1u32.to_le_bytes());
    for v in [12_345i64, 6_976_988_000_000, 100_000] {
        frame.extend_from_slice(&v.to_le_bytes());
    }
    frame.push(0);
    frame.push(7);
    frame.extend_from_slice(b"BTCUSDT");
    assert_eq!(frame.len(), 65);
    let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
    let (code, out) = hotpath(&["decode"], format!("# a comment\n\n{hex}\n").as_bytes());
    assert_eq!(code, 0);
    assert_eq!(
        out.trim_end(),
        r#"{"message":"TradesStreamEvent","eventTime":1700000000000001,"transactTime":1700000000000000,"priceExponent":-8,"qtyExponent":-8,"trades":[{"id":12345,"price":"69769.88000000","qty":"0.00100000","isBuyerMaker":"False","isBestMatch":"True"}],"symbol":"BTCUSDT"}"#
    );
}

#[test]
fn bad_frames_print_an_error_and_decoding_goes_on() {
    let prefixes = shared_binance("samples/live_frame_prefixes.hex");
    let good = shared_binance("samples/bestbidask_btcusdt_reencoded.hex");
    let input = format!("{prefixes}zz\n{}\n", good.lines().next().expect("a line"));
    let (code, out) = hotpath(&["decode"], input.as_bytes());
    assert_eq!(code, 1, "a failed frame makes the exit code non-zero");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(
        lines[0],
        r#"{"error":"truncated frame: needed 58 bytes, got 32"}"#
    );
    assert_eq!(lines[3], r#"{"error":"line 4: invalid hex at column 1"}"#);
    assert!(lines[4].starts_with(r#"{"message":"BestBidAskStreamEvent""#));
}

#[test]
fn reads_length_prefixed_binary_files() {
    let dir = std::env::temp_dir().join(format!("hotpath-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("frames.bin");
    let mut file = Vec::new();
    for line in shared_binance("samples/bestbidask_btcusdt_reencoded.hex")
        .lines()
        .take(3)
    {
        hotpath::frames::push_length_prefixed(&mut file, &super::unhex(line));
    }
    file.extend_from_slice(&[9, 0, 0, 0, 1]);
    std::fs::write(&path, &file).expect("written");
    let (code, out) = hotpath(
        &["decode", "--bin-file", path.to_str().expect("UTF-8 path")],
        b"",
    );
    std::fs::remove_dir_all(&dir).expect("cleaned up");
    assert_eq!(code, 1);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[2].contains(r#""bookUpdateId":89969613083"#));
    assert_eq!(
        lines[3],
        r#"{"error":"file ends inside a frame: needed 9 bytes, got 1"}"#
    );
}

/// The user's path through the simulator: `hotpath sim` on a free port, `hotpath record` from it
/// with the API key from the environment, `hotpath decode --rec-file`, then SIGTERM stops the
/// simulator.
#[test]
fn sim_record_decode_from_the_command_line() {
    let (mut sim, addr) = start_sim(&["--symbols", "BTCUSDT,ETHUSDT", "--seed", "5"]);

    let dir = std::env::temp_dir().join(format!("hotpath-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let recording = dir.join("trades.rec");
    let record = Command::new(env!("CARGO_BIN_EXE_hotpath"))
        .args([
            "record",
            "--url",
            &format!("ws://{addr}/ws/ethusdt@trade"),
            "--max-frames",
            "20",
        ])
        .arg("--out")
        .arg(&recording)
        .env("BINANCE_API_KEY", "cli-test-key")
        .output()
        .expect("hotpath record runs");
    assert!(
        record.status.success(),
        "{}",
        String::from_utf8_lossy(&record.stderr)
    );
    let summary: Value = serde_json::from_slice(&record.stdout).expect("a JSON summary");
    assert_eq!(summary["frames"], 20);

    let decoded = Command::new(env!("CARGO_BIN_EXE_hotpath"))
        .args(["decode", "--rec-file"])
        .arg(&recording)
        .output()
        .expect("hotpath decode runs");
    assert!(decoded.status.success());
    let lines: Vec<Value> = String::from_utf8(decoded.stdout)
        .expect("UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(lines.len(), 20);
    assert!(
        lines
            .iter()
            .all(|l| l["message"] == "TradesStreamEvent" && l["symbol"] == "ETHUSDT")
    );

    let killed = Command::new("kill")
        .args(["-TERM", &sim.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = sim.wait().expect("the simulator exits");
    std::fs::remove_dir_all(&dir).expect("cleaned up");
    assert!(
        status.success(),
        "SIGTERM stops the simulator cleanly: {status:?}"
    );
}

/// `hotpath sim` on a free port with `args`; the child and the address it prints.
fn start_sim(args: &[&str]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut sim = Command::new(env!("CARGO_BIN_EXE_hotpath"))
        .args(["sim", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("hotpath sim starts");
    let mut line = String::new();
    std::io::BufReader::new(sim.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("the simulator prints where it listens");
    let started: Value = serde_json::from_str(&line).expect("a JSON line");
    let addr = started["listening"].as_str().expect("an address");
    (sim, addr.to_string())
}

/// The names of the threads of process `pid` (`/proc/PID/task/*/comm`).
fn thread_names(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect()
}

/// Whether process `pid` catches SIGTERM yet (`SigCgt` in `/proc/<pid>/status`): `hotpath run`
/// installs its handler first thing, before it reads its configuration.
fn catches_sigterm(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (15 - 1)) != 0)
}

/// With the Redis sink and the sidecar every ring has its own consumer, so `hotpath run`
/// starts no counting thread (found by the cryptofeed comparison: it woke up to 100 times a
/// second to drain nothing); without sinks the counter drains the rings and counts.
#[test]
fn a_run_with_sinks_starts_no_idle_counting_thread() {
    let redis = super::servers::RedisServer::start();
    let (mut sim, addr) = start_sim(&["--symbols", "BTCUSDT", "--rate", "200"]);
    let config = config_file("no-counter.toml", "[http]\nlisten = \"0\"\n");
    let endpoint = format!("ws://{addr}");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_hotpath"))
            .args(["run", "--config"])
            .arg(&config)
            .args([
                "--endpoint",
                &endpoint,
                "--symbols",
                "BTCUSDT",
                "--streams",
                "trade",
            ])
            .args(extra)
            .env("BINANCE_API_KEY", "cli-test-key")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("hotpath run starts")
    };
    for (extra, sink_thread, counter) in [
        (
            vec!["--redis", redis.url().as_str()],
            "hotpath-redis",
            false,
        ),
        (vec![], "hotpath-counter", true),
    ] {
        let child = run(&extra);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let names = loop {
            let names = thread_names(child.id());
            let started = names.iter().any(|n| n == sink_thread) && catches_sigterm(child.id());
            if started || std::time::Instant::now() > deadline {
                break names;
            }
            // Thread creation and signal handlers have no event to await: poll /proc.
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        let out = child.wait_with_output().expect("the run exits");
        assert!(killed.success() && out.status.success(), "{:?}", out.status);
        assert!(
            names.iter().any(|n| n == sink_thread),
            "{sink_thread} in {names:?}"
        );
        assert_eq!(
            names.iter().any(|n| n == "hotpath-counter"),
            counter,
            "{names:?}"
        );
        let summary: Value = serde_json::from_slice(&out.stdout).expect("a JSON summary");
        assert_eq!(
            summary["sinks"].get("redis").is_some(),
            !counter,
            "{summary}"
        );
    }
    let _ = Command::new("kill")
        .args(["-TERM", &sim.id().to_string()])
        .status();
    let _ = sim.wait();
}

/// A SIGTERM while `hotpath run` is still starting (sent as soon as it is caught, before the
/// connections and sinks are up) is kept: the run ends cleanly once started, with its summary.
/// It used to end the process at once, without a summary or a flush.
#[test]
fn a_sigterm_during_start_up_ends_the_run_cleanly() {
    let redis = super::servers::RedisServer::start();
    let (mut sim, addr) = start_sim(&["--symbols", "BTCUSDT", "--rate", "200"]);
    let config = config_file("early-stop.toml", "[http]\nlisten = \"0\"\n");
    let child = Command::new(env!("CARGO_BIN_EXE_hotpath"))
        .args(["run", "--config"])
        .arg(&config)
        .args([
            "--endpoint",
            &format!("ws://{addr}"),
            "--symbols",
            "BTCUSDT",
        ])
        .args(["--streams", "trade", "--redis", redis.url().as_str()])
        .env("BINANCE_API_KEY", "cli-test-key")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("hotpath run starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !catches_sigterm(child.id()) {
        assert!(std::time::Instant::now() < deadline, "SIGTERM never caught");
        // A signal handler has no event to await: poll /proc.
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    let out = child.wait_with_output().expect("the run exits");
    assert!(killed.success() && out.status.success(), "{:?}", out.status);
    let summary: Value = serde_json::from_slice(&out.stdout).expect("a JSON summary");
    assert!(summary["sinks"].get("redis").is_some(), "{summary}");
    let _ = Command::new("kill")
        .args(["-TERM", &sim.id().to_string()])
        .status();
    let _ = sim.wait();
}

/// `hotpath` with `args` and extra environment variables: exit code, stdout, stderr.
fn hotpath_with_env(args: &[&str], vars: &[(&str, &str)]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_hotpath"))
        .args(args)
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("hotpath runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn config_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("hotpath-cli-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).expect("written");
    path
}

#[test]
fn config_check_prints_the_effective_config_with_the_environment_and_no_password() {
    let file = config_file(
        "check",
        "[binance]\nsymbols = [\"BTCUSDT\"]\n[redis]\nenabled = true\nurl = \"redis://file:filepass@h/0\"\ntrades_maxlen = 100\n[discovery]\npairs_limit = 10\n",
    );
    let path = file.to_str().expect("UTF-8 path");
    let (code, out, err) = hotpath_with_env(
        &["config", "check", path],
        &[
            ("REDIS_URL", "redis://user:s3cr3t@10.0.0.5:6379/0"),
            ("PAIRS_LIMIT", "50"),
            ("HOTPATH_READERS__RING_CAPACITY", "2048"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("redis://user:***@10.0.0.5:6379/0"), "{out}");
    assert!(
        !out.contains("s3cr3t") && !out.contains("filepass"),
        "{out}"
    );
    assert!(
        out.contains("pairs_limit: 50"),
        "the environment beats the file: {out}"
    );
    assert!(out.contains("ring_capacity: 2048"), "{out}");
    assert!(
        out.contains("trades_maxlen: 100"),
        "the file's own value stays: {out}"
    );
    let (code, _, err) = hotpath_with_env(&["config", "check", path], &[("PAIRS_LIMIT", "0")]);
    assert_eq!(code, 2);
    assert!(err.contains("PAIRS_LIMIT"), "the variable is named: {err}");
    let (code, _, err) = hotpath_with_env(
        &["config", "check", path],
        &[("REDIS_URL", "http://user:s3cr3t@host/0")],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("REDIS_URL") && !err.contains("s3cr3t"),
        "{err}"
    );
    let bad = config_file("bad", "[readers]\nring_capacity = 1000\n");
    let (code, _, err) = hotpath_with_env(&["config", "check", bad.to_str().expect("UTF-8")], &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("readers.ring_capacity") && err.contains("hotpath-cli-"),
        "{err}"
    );
    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_file(bad);
}

#[test]
fn run_reads_config_file_from_the_environment_and_its_errors_name_the_variable() {
    let bad = config_file("run-bad", "[readers]\nring_capacity = 1000\n");
    let (code, _, err) = hotpath_with_env(
        &["run", "--duration", "1"],
        &[("CONFIG_FILE", bad.to_str().expect("UTF-8"))],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("readers.ring_capacity"),
        "CONFIG_FILE was read: {err}"
    );
    let (code, _, err) = hotpath_with_env(
        &["run", "--duration", "1"],
        &[("PAIRS_PER_CONNECTION", "5000")],
    );
    assert_eq!(code, 2);
    assert!(err.contains("PAIRS_PER_CONNECTION"), "{err}");
    let _ = std::fs::remove_file(bad);
}
