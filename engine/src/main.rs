//! The `hotpath` binary: subcommands over the engine library.

use std::io::{BufRead, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hotpath::{decode, frames};

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
        #[arg(long)]
        bin_file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("hotpath: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs a command; `Ok(false)` when it ran but some input was bad.
fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Decode { hex_file, bin_file } => {
            let stdout = std::io::stdout();
            let mut out = BufWriter::new(stdout.lock());
            let all_good = match (hex_file, bin_file) {
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

/// Decodes a length-prefixed binary file.
fn decode_binary(bytes: &[u8], out: &mut impl Write) -> anyhow::Result<bool> {
    let mut all_good = true;
    let mut json = String::new();
    for frame in frames::LengthPrefixed::new(bytes) {
        json.clear();
        let ok = match frame {
            Ok(frame) => decode::frame_to_json(frame, &mut json),
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
