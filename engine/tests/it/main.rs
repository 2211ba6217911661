//! Integration tests of the engine, one binary (see ripgrep's tests/tests.rs for the model).

mod alloc;
mod avro;
mod bench_scripts;
mod binance;
mod book;
mod chaos;
mod cli;
mod compat;
mod control;
mod delivery;
mod deploy;
mod detect;
mod discovery;
mod dual_feed;
mod fault_proxy;
mod feed;
mod json_feed;
mod klines;
mod kshards;
mod pg_server;
mod postgres;
mod reanchor;
mod record;
mod redis_idle;
mod repairs;
mod rest;
mod rest_sbe;
mod s3;
mod schema;
mod servers;
mod shards;
mod sidecar;
mod sim;
mod sinks;
mod tidy;
mod tidy_docs;

use std::path::PathBuf;

/// A file of `../shared/binance/`, read where it stands.
fn shared_binance(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/binance")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Parses a hex line.
fn unhex(line: &str) -> Vec<u8> {
    let mut out = Vec::new();
    hotpath::frames::parse_hex(line, &mut out).expect("valid hex");
    out
}
