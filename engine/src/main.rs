//! The `hotpath` binary: subcommands over the engine library.

use std::io::{BufRead, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hotpath::{decode, frames};

/// mimalloc, unless built with the `system-alloc` feature (glibc's malloc, which heap
/// profilers such as heaptrack intercept; for finding where memory goes, not for running).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A low-latency Binance Spot SBE market-data engine.
#[derive(Parser)]
#[command(name = "hotpath", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum KinesisCommand {
    /// Count what each stream holds (all shards, from the oldest record).
    Count {
        /// Stream names.
        #[arg(required = true)]
        streams: Vec<String>,
        /// Endpoint override (an emulator); default: AWS. Credentials and region come from
        /// the standard AWS chain.
        #[arg(long)]
        kinesis_endpoint: Option<String>,
        /// AWS region (default: the chain's).
        #[arg(long)]
        region: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a configuration with this environment's overrides laid over it (see
    /// engine/src/config/env.rs) and print the effective configuration, secrets redacted
    /// (API keys and tokens are never in it; Redis URLs print with their password as ***).
    /// Exits 2 with the key or variable at fault when it is invalid.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Send a dead-letter file's records again: Kinesis records to their streams, in order per
    /// stream and partition key; Redis trades to their streams with their own entry ids
    /// (idempotent: one already there is found with XRANGE, never added twice). Kinesis
    /// records of outcome "unknown" (they may have landed) are only sent with
    /// --include-unknown, otherwise written to FILE.unknown. Records that still fail are
    /// written to FILE.failed.
    Resend {
        /// The dead-letter file (JSON Lines, see the README).
        file: PathBuf,
        /// Endpoint override (an emulator); default: AWS. Credentials and region come from
        /// the standard AWS chain.
        #[arg(long)]
        kinesis_endpoint: Option<String>,
        /// AWS region (default: the chain's).
        #[arg(long)]
        region: Option<String>,
        /// The Redis server for Redis records (redis://host:port/db); required when the file
        /// holds any.
        #[arg(long)]
        redis: Option<String>,
        /// The PostgreSQL database for PostgreSQL rows (postgres://user@host:port/db); required
        /// when the file holds any. Rows already there are counted, not written twice.
        #[arg(long)]
        postgres: Option<String>,
        /// Also send Kinesis records of outcome "unknown", which may be in the stream already
        /// (consumers then see them twice and must dedupe on symbol + trade id).
        #[arg(long)]
        include_unknown: bool,
    },
}

#[derive(Subcommand)]
enum BackfillCommand {
    /// Candles from GET /api/v3/klines (pages of 1000, weight-budgeted) into the Kinesis
    /// klines stream, the Redis kl: hash and (--s3 --config) the S3 archive of the
    /// configuration's [s3] table, resumably (engine/src/backfill/klines.rs). Prints a JSON
    /// report: candles, pages, holes, duplicates, records written.
    Klines(Box<hotpath::backfill::klines::KlinesArgs>),
    /// A symbol's historical trades from REST (aggTrades to find the first id by time, then
    /// historicalTrades pages), weight-budgeted, into the S3 archive of the configuration's
    /// [s3] table; resumable (ids already in the bucket are skipped). Prints a JSON report.
    Trades(hotpath::archive::backfill::TradesArgs),
}

#[derive(Subcommand)]
enum Command {
    /// Decode Binance SBE frames and print one JSON object per frame.
    ///
    /// Frames are read as hex, one per line, from stdin (default) or --hex-file, or from a
    /// binary file of frames each preceded by its length as a little-endian u32 (--bin-file).
    /// A bad frame prints {"error": ...} and decoding goes on; the exit code is 1 if any frame
    /// failed.
    Decode {
        /// Read hex frames, one per line, from this file instead of stdin.
        #[arg(long, conflicts_with = "bin_file")]
        hex_file: Option<PathBuf>,
        /// Read length-prefixed binary frames from this file.
        #[arg(long, conflicts_with = "rec_file")]
        bin_file: Option<PathBuf>,
        /// Read a recording made by `hotpath record`; its text frames print as they are.
        #[arg(long, conflicts_with = "hex_file")]
        rec_file: Option<PathBuf>,
    },
    /// Ingest Binance SBE market data: pinned reader threads, lock-free rings, sequence checks.
    /// Exits after --duration (or on Ctrl-C / SIGTERM) with a one-line JSON summary.
    ///
    /// Settings come from the file (--config, else the file CONFIG_FILE names), then the
    /// environment (REDIS_URL, PAIRS_LIMIT, ... and HOTPATH_SECTION__KEY; see the README),
    /// then these flags: each overrides the one before.
    Run {
        /// TOML configuration (config/binance.toml, config/sim-run.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Endpoint, e.g. wss://stream-sbe.binance.com:9443 or ws://127.0.0.1:9443.
        #[arg(long)]
        endpoint: Option<String>,
        /// Stream format: sbe (Binance's SBE streams, API key needed), json (its regular
        /// JSON streams, no key), e.g. --format json --endpoint wss://stream.binance.com:9443,
        /// or dual (SBE, moving to the JSON streams at feed.json_endpoint when SBE refuses the
        /// key or is down).
        #[arg(long)]
        format: Option<String>,
        /// Symbols, comma-separated, upper case.
        #[arg(long, value_delimiter = ',')]
        symbols: Option<Vec<String>>,
        /// Streams, comma-separated: trade,bestBidAsk,depth,depth20.
        #[arg(long, value_delimiter = ',')]
        streams: Option<Vec<String>>,
        /// Exit cleanly after this many seconds.
        #[arg(long)]
        duration: Option<f64>,
        /// Enable the Redis writer against this URL (redis://host:port/db).
        #[arg(long)]
        redis: Option<String>,
        /// Enable the Kinesis writer against this endpoint (an emulator's http://host:port), or
        /// `aws` for AWS itself. Credentials and region come from the standard AWS chain.
        #[arg(long)]
        kinesis_endpoint: Option<String>,
        /// Print a progress line (JSON, to stderr) every this many seconds: messages/s, sink
        /// writes, latency, queue depth.
        #[arg(long)]
        progress: Option<f64>,
        /// Write every gap range (wire gaps and queue drops) to this JSON-lines file; the
        /// summary lists only counts per stream and the first few.
        #[arg(long)]
        gaps_file: Option<PathBuf>,
        /// Carry only this instance's share of the symbols, `i/n` (0 <= i < n): those whose
        /// stable hash (engine/src/shard.rs) mod n is i. Several instances with 0/n..n-1/n
        /// carry every symbol exactly once.
        #[arg(long)]
        shard: Option<String>,
    },
    /// Inspect Kinesis streams: `hotpath kinesis count STREAM...` prints, per stream, its
    /// records, user records (KPL aggregates de-aggregated), trades and bytes.
    Kinesis {
        #[command(subcommand)]
        command: KinesisCommand,
    },
    /// Dead-letter files of the Kinesis and Redis writers.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// History from Binance's REST API: klines where `hotpath run` writes them, trades into the
    /// S3 archive.
    Backfill {
        #[command(subcommand)]
        command: BackfillCommand,
    },
    /// Configuration files of `hotpath run`.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Run the local Binance simulator: SBE and JSON WebSocket streams and the REST API of a
    /// seeded simulated market, on one port, until stopped (Ctrl-C or SIGTERM).
    Sim(SimArgs),
    /// Connect like a client and record every frame received, with its receive time, into a
    /// recording file (format: engine/src/sim/record.rs). The API key, if needed, comes from
    /// the BINANCE_API_KEY environment variable.
    Record {
        /// ws:// or wss:// URL, e.g. ws://127.0.0.1:9443/stream?streams=btcusdt@trade
        #[arg(long)]
        url: String,
        /// The recording to write.
        #[arg(long)]
        out: PathBuf,
        /// Stop after this many seconds.
        #[arg(long)]
        duration: Option<f64>,
        /// Stop after this many frames.
        #[arg(long)]
        max_frames: Option<u64>,
        /// Trust this PEM certificate for wss:// (a simulator's self-signed one).
        #[arg(long)]
        trust_cert: Option<PathBuf>,
    },
    /// Serve a recording as a WebSocket source: every connection gets its frames in order.
    Replay {
        /// The recording.
        file: PathBuf,
        /// Address and port to listen on.
        #[arg(long, default_value = "127.0.0.1:9444")]
        listen: std::net::SocketAddr,
        /// Send as fast as possible instead of at the recorded pace.
        #[arg(long)]
        fast: bool,
        /// Start over after the last frame instead of closing.
        #[arg(long)]
        repeat: bool,
    },
}

/// `hotpath sim` flags; each overrides the config file.
#[derive(clap::Args)]
struct SimArgs {
    /// TOML configuration (see engine/src/sim/config.rs and config/sim.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address and port to listen on.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Symbols, comma-separated, upper case.
    #[arg(long, value_delimiter = ',')]
    symbols: Option<Vec<String>>,
    /// Seed of the market: same seed, same market.
    #[arg(long)]
    seed: Option<u64>,
    /// Order-flow actions per second per symbol.
    #[arg(long)]
    rate: Option<f64>,
    /// Serve TLS with a self-signed certificate made at start.
    #[arg(long)]
    tls: bool,
    /// Write that certificate (PEM) here, for clients to trust.
    #[arg(long)]
    cert_out: Option<PathBuf>,
}

fn main() -> ExitCode {
    allocator::purge_delay();
    init_logging();
    // One rustls crypto provider for every TLS connection of the process.
    hotpath::tls::install_default_provider();
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("hotpath: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Logs go to stderr; `RUST_LOG` filters them (default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs a command; `Ok(false)` when it ran but some input was bad.
fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Run {
            config,
            endpoint,
            format,
            symbols,
            streams,
            duration,
            redis,
            kinesis_endpoint,
            progress,
            gaps_file,
            shard,
        } => {
            let config = config.or_else(|| {
                std::env::var_os(hotpath::config::env::CONFIG_FILE_VAR)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            });
            // Caught before anything starts: a stop during start-up ends the run once it has
            // started, with its summary and the sinks flushed, rather than killing it.
            let mut signals = StopSignals::catch()?;
            let mut run_config = load_config(config.as_deref())?;
            let overrides = hotpath::config::Overrides {
                endpoint,
                format,
                symbols,
                streams,
                duration: duration.map(std::time::Duration::from_secs_f64),
                redis_url: redis,
                kinesis_endpoint,
                gaps_file,
                shard,
            };
            run_config
                .apply(overrides)
                .map_err(|e| anyhow::anyhow!(e))?;
            run_config.validate().map_err(|e| anyhow::anyhow!(e))?;
            run_config.select_shard().map_err(|e| anyhow::anyhow!(e))?;
            if run_config.discovery.enabled {
                run_config.symbols = hotpath::control::discovery::initial(&run_config)
                    .map_err(|e| anyhow::anyhow!(e))?;
            }
            let api_key = run_config.api_key().map_err(|e| anyhow::anyhow!(e))?;
            let limit = run_config.duration;
            let every = progress
                .filter(|p| *p > 0.0)
                .map(std::time::Duration::from_secs_f64);
            let token = run_config
                .http
                .token_from(|name| std::env::var(name).ok())
                .map_err(|e| anyhow::anyhow!(e))?;
            let mut control_error = None;
            let summary = hotpath::feed::run::run(&run_config, api_key, |feed, sinks| {
                match hotpath::control::start(&run_config, feed, sinks, token) {
                    Ok(mut control) => {
                        let ending = Ending { limit, every };
                        wait_for_end(&mut signals, ending, feed, sinks, control.as_mut());
                        if let Some(control) = control {
                            control.stop();
                        }
                    }
                    Err(e) => control_error = Some(e),
                }
            })
            .map_err(|e| anyhow::anyhow!(e))?;
            if let Some(e) = control_error {
                anyhow::bail!(e);
            }
            if run_config.summary {
                println!("{}", serde_json::to_string(&summary)?);
            }
            Ok(true)
        }
        Command::Backfill {
            command: BackfillCommand::Trades(args),
        } => backfill_trades(&args),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => {
            let config = load_config(Some(&file))?;
            config.validate().map_err(|e| anyhow::anyhow!(e))?;
            println!("{config:#?}");
            Ok(true)
        }
        Command::Kinesis {
            command:
                KinesisCommand::Count {
                    streams,
                    kinesis_endpoint,
                    region,
                },
        } => {
            let config = hotpath::config::KinesisConfig {
                endpoint_url: kinesis_endpoint,
                region,
                ..Default::default()
            };
            config.check().map_err(|e| anyhow::anyhow!(e))?;
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            runtime.block_on(async {
                let client = hotpath::sink::kinesis::writer::client_from_chain(&config).await;
                for stream in &streams {
                    let count = hotpath::sink::kinesis::inspect::count(
                        &client,
                        stream,
                        std::time::Duration::from_secs(60),
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!(e))?;
                    println!("{}", serde_json::to_string(&count)?);
                }
                anyhow::Ok(true)
            })
        }
        Command::Backfill {
            command: BackfillCommand::Klines(args),
        } => {
            let mut args = *args;
            if args.s3 {
                let config = load_config(args.config.as_deref())?;
                args.s3_config = config.s3;
            }
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            let report = runtime.block_on(hotpath::backfill::klines::run(&args))?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(report.ok())
        }
        Command::Dlq {
            command:
                DlqCommand::Resend {
                    file,
                    kinesis_endpoint,
                    region,
                    redis,
                    postgres,
                    include_unknown,
                },
        } => {
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            let options = hotpath::sink::resend::ResendOptions {
                kinesis_endpoint,
                region,
                redis_url: redis,
                postgres_url: postgres,
                include_unknown,
            };
            let report = runtime.block_on(hotpath::sink::resend::resend_file(&file, &options))?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(report.failed == 0)
        }
        Command::Record {
            url,
            out,
            duration,
            max_frames,
            trust_cert,
        } => {
            let trust_pem = match trust_cert {
                Some(path) => Some(
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?,
                ),
                None => None,
            };
            let options = hotpath::sim::record::RecordOptions {
                url,
                api_key: std::env::var("BINANCE_API_KEY")
                    .ok()
                    .filter(|k| !k.is_empty()),
                trust_pem,
                out,
                duration: duration.map(std::time::Duration::from_secs_f64),
                max_frames,
            };
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            let summary = runtime.block_on(hotpath::sim::record::record(options))?;
            println!(
                "{}",
                serde_json::json!({"frames": summary.frames, "binary": summary.binary, "text": summary.text, "bytes": summary.bytes})
            );
            Ok(true)
        }
        Command::Replay {
            file,
            listen,
            fast,
            repeat,
        } => {
            use hotpath::sim::record::{Pace, ReplayOptions, replay};
            let pace = if fast {
                Pace::AsFastAsPossible
            } else {
                Pace::Recorded
            };
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            runtime.block_on(async {
                let handle = replay(ReplayOptions { file, listen, pace, repeat }).await?;
                println!("{}", serde_json::json!({"listening": handle.addr.to_string(), "frames": handle.frames}));
                wait_for_stop_signal().await;
                handle.shutdown().await;
                anyhow::Ok(true)
            })
        }
        Command::Sim(args) => {
            let config = sim_config(args)?;
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            runtime.block_on(async {
                let sim = hotpath::sim::server::start(config).await.context("cannot start the simulator")?;
                println!("{}", serde_json::json!({"listening": sim.addr.to_string(), "tls": sim.cert_pem.is_some()}));
                wait_for_stop_signal().await;
                sim.shutdown();
                anyhow::Ok(true)
            })
        }
        Command::Decode {
            hex_file,
            bin_file,
            rec_file,
        } => {
            let stdout = std::io::stdout();
            let mut out = BufWriter::new(stdout.lock());
            let all_good = match (hex_file, bin_file) {
                _ if rec_file.is_some() => {
                    let path = rec_file.unwrap_or_default();
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    decode_recording(&bytes, &mut out)?
                }
                (_, Some(path)) => {
                    let mut bytes = Vec::new();
                    std::fs::File::open(&path)
                        .and_then(|mut f| f.read_to_end(&mut bytes))
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    decode_binary(&bytes, &mut out)?
                }
                (Some(path), None) => {
                    let file = std::fs::File::open(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    decode_hex_lines(std::io::BufReader::new(file), &mut out)?
                }
                (None, None) => decode_hex_lines(std::io::stdin().lock(), &mut out)?,
            };
            out.flush()?;
            Ok(all_good)
        }
    }
}

/// `hotpath backfill trades` (engine/src/archive/backfill.rs).
fn backfill_trades(args: &hotpath::archive::backfill::TradesArgs) -> anyhow::Result<bool> {
    let config = load_config(args.config.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime
        .block_on(hotpath::archive::backfill::run_cli(&config, args))
        .map_err(|e| anyhow::anyhow!(e))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(true)
}

/// The file at `path` (none: the defaults) with the process environment's overrides; errors
/// name the file or the variable at fault.
fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<hotpath::config::RunConfig> {
    let text = match path {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        ),
        None => None,
    };
    let vars = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let from_env = |key: &str| {
        key.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    };
    hotpath::config::env::load(text.as_deref(), vars).map_err(|e| match path {
        Some(path) if !e.key().is_some_and(from_env) => {
            anyhow::anyhow!("{}: {e}", path.display())
        }
        _ => anyhow::anyhow!(e),
    })
}

/// Decodes hex frames, one per line; blank lines and lines starting with `#` are skipped.
fn decode_hex_lines(input: impl BufRead, out: &mut impl Write) -> anyhow::Result<bool> {
    let mut all_good = true;
    let mut frame = Vec::new();
    let mut json = String::new();
    for (index, line) in input.lines().enumerate() {
        let line = line.context("cannot read input")?;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        json.clear();
        let ok = match frames::parse_hex(&line, &mut frame) {
            Ok(()) => decode::frame_to_json(&frame, &mut json),
            Err(e) => {
                decode::error_json(&format_args!("line {}: {e}", index + 1), &mut json);
                false
            }
        };
        all_good &= ok;
        writeln!(out, "{json}")?;
    }
    Ok(all_good)
}

/// Decodes a recording: binary frames to JSON, text frames as they are.
fn decode_recording(bytes: &[u8], out: &mut impl Write) -> anyhow::Result<bool> {
    use hotpath::sim::record::{FrameKind, RecordReader};
    let frames =
        RecordReader::new(bytes).map(|r| r.map(|r| (r.kind == FrameKind::Text, r.payload)));
    print_frames(frames, out)
}

/// Decodes a length-prefixed binary file.
fn decode_binary(bytes: &[u8], out: &mut impl Write) -> anyhow::Result<bool> {
    print_frames(
        frames::LengthPrefixed::new(bytes).map(|f| f.map(|f| (false, f))),
        out,
    )
}

/// Prints one JSON line per frame (`(is_text, bytes)`: text frames print as they are) or per
/// error; returns whether everything decoded.
fn print_frames<'a, E: std::fmt::Display>(
    frames: impl Iterator<Item = Result<(bool, &'a [u8]), E>>,
    out: &mut impl Write,
) -> anyhow::Result<bool> {
    let mut all_good = true;
    let mut json = String::new();
    for frame in frames {
        json.clear();
        let ok = match frame {
            Ok((true, text)) => {
                json.push_str(&String::from_utf8_lossy(text));
                true
            }
            Ok((false, frame)) => decode::frame_to_json(frame, &mut json),
            Err(e) => {
                decode::error_json(&e, &mut json);
                false
            }
        };
        all_good &= ok;
        writeln!(out, "{json}")?;
    }
    Ok(all_good)
}

fn sim_config(args: SimArgs) -> anyhow::Result<hotpath::sim::config::SimConfig> {
    use hotpath::sim::config::SimConfig;
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            SimConfig::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => SimConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9443)),
            ..SimConfig::default()
        },
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(symbols) = args.symbols {
        config.exchange.symbols = symbols;
    }
    if let Some(seed) = args.seed {
        config.exchange.seed = seed;
    }
    if let Some(rate) = args.rate {
        config.exchange.actions_per_second = rate;
    }
    config.tls |= args.tls;
    if args.cert_out.is_some() {
        config.cert_out = args.cert_out;
    }
    config.validate().map_err(|e| anyhow::anyhow!(e))?;
    Ok(config)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The control plane's next pair change; pending forever without one.
async fn next_change(
    control: Option<&mut hotpath::control::Control>,
) -> hotpath::control::PairRequest {
    match control {
        Some(control) => control.next_request().await,
        None => std::future::pending().await,
    }
}

/// The stop signals of `hotpath run` (Ctrl-C, SIGTERM), caught from its first moment: one
/// that arrives while the run starts is kept and ends the run as soon as it has started.
struct StopSignals {
    runtime: tokio::runtime::Runtime,
    /// SIGTERM and SIGINT, registered on `runtime`; `None` off unix (Ctrl-C is then awaited
    /// when the wait starts).
    #[cfg(unix)]
    caught: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl StopSignals {
    fn catch() -> anyhow::Result<StopSignals> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        #[cfg(unix)]
        let caught = {
            use tokio::signal::unix::{SignalKind, signal};
            let _entered = runtime.enter();
            let term = signal(SignalKind::terminate())
                .map_err(|e| anyhow::anyhow!("cannot catch SIGTERM: {e}"))?;
            let int = signal(SignalKind::interrupt())
                .map_err(|e| anyhow::anyhow!("cannot catch SIGINT: {e}"))?;
            Some((term, int))
        };
        Ok(StopSignals {
            runtime,
            #[cfg(unix)]
            caught,
        })
    }
}

/// Resolves when one of the caught signals has arrived (also before this was first polled).
#[cfg(unix)]
async fn caught_stop(
    caught: &mut Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
) {
    match caught {
        Some((term, int)) => tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        },
        None => wait_for_stop_signal().await,
    }
}

/// When a run ends by itself, and how often it prints a progress line.
struct Ending {
    limit: Option<std::time::Duration>,
    every: Option<std::time::Duration>,
}

/// Blocks until `limit` has passed or a stop signal arrives, printing a progress line every
/// `every` if set and carrying out the control plane's pair changes.
fn wait_for_end(
    signals: &mut StopSignals,
    Ending { limit, every }: Ending,
    feed: &mut hotpath::feed::run::Feed,
    sinks: &[hotpath::feed::run::SinkHandle],
    mut control: Option<&mut hotpath::control::Control>,
) {
    let StopSignals {
        runtime,
        #[cfg(unix)]
        caught,
    } = signals;
    runtime.block_on(async {
        let stop = async {
            #[cfg(unix)]
            caught_stop(caught).await;
            #[cfg(not(unix))]
            wait_for_stop_signal().await;
        };
        let end = async {
            match limit {
                Some(limit) => tokio::select! {
                    _ = tokio::time::sleep(limit) => {}
                    _ = stop => {}
                },
                None => stop.await,
            }
        };
        tokio::pin!(end);
        let mut progress = hotpath::feed::progress::Progress::new();
        let mut tick = tokio::time::interval(every.unwrap_or(std::time::Duration::from_secs(3600)));
        tick.tick().await;
        // One loop, so the progress line (reading the feed) and the control plane's pair
        // changes (changing it) take turns.
        loop {
            tokio::select! {
                _ = &mut end => return,
                _ = tick.tick(), if every.is_some() => eprintln!("{}", progress.line(feed, sinks)),
                request = next_change(control.as_deref_mut()) => {
                    if let Some(control) = control.as_deref_mut() {
                        control.apply(request, feed);
                    }
                }
            }
        }
    });
}

/// mimalloc's tuning: the binary's one `unsafe` (calls into the allocator's C API; the library
/// forbids `unsafe`).
#[allow(unsafe_code)]
mod allocator {
    /// mimalloc's `purge_delay` option (its index in mimalloc 3's `mi_option_t`).
    #[cfg(not(feature = "system-alloc"))]
    const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;
    /// How long mimalloc keeps freed memory resident before giving it back to the OS (ms).
    /// mimalloc 3 waits 1000 ms: at 200 symbols the steady state carried about 8 MiB of freed
    /// pages, and a drained Kinesis backlog about 10 MiB more (README, issue 11). 10 ms is
    /// mimalloc 2's default.
    #[cfg(not(feature = "system-alloc"))]
    pub const PURGE_DELAY_MS: std::ffi::c_long = 10;

    #[cfg(not(feature = "system-alloc"))]
    unsafe extern "C" {
        /// mimalloc's option setter (`mimalloc.h`), in the library the `mimalloc` crate links.
        fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
        /// mimalloc's option getter.
        #[cfg(test)]
        fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    }

    /// Sets mimalloc's purge delay to [`PURGE_DELAY_MS`] unless `MIMALLOC_PURGE_DELAY` says
    /// otherwise.
    pub fn purge_delay() {
        #[cfg(not(feature = "system-alloc"))]
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: mimalloc's options may be set at any time; the value is a plain integer.
            unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
        }
    }

    /// mimalloc's purge delay now (ms).
    #[cfg(all(test, not(feature = "system-alloc")))]
    pub fn purge_delay_ms() -> std::ffi::c_long {
        // SAFETY: reading an option of the linked mimalloc.
        unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }
    }

    #[cfg(all(test, not(feature = "system-alloc")))]
    mod tests {
        /// The option index is mimalloc 3's purge delay: its default (1000 ms), or what
        /// `MIMALLOC_PURGE_DELAY` says, which mimalloc reads into that option; start-up sets it
        /// to [`super::PURGE_DELAY_MS`], unless the variable is set, which it then leaves.
        #[test]
        fn the_purge_delay_is_set_at_start() {
            let from_env = std::env::var("MIMALLOC_PURGE_DELAY").ok().map(|v| {
                v.trim().parse::<std::ffi::c_long>().unwrap_or_else(|_| {
                    panic!("MIMALLOC_PURGE_DELAY = {v:?}: this test needs a number of ms")
                })
            });
            let before = super::purge_delay_ms();
            assert_eq!(
                before,
                from_env.unwrap_or(1000),
                "option 15 is not the purge delay (mimalloc 3's default 1000 ms, or \
                 MIMALLOC_PURGE_DELAY)"
            );
            super::purge_delay();
            assert_eq!(
                super::purge_delay_ms(),
                from_env.unwrap_or(super::PURGE_DELAY_MS)
            );
        }
    }
}
