//! hotpath: a low-latency Binance Spot SBE market-data engine.
//!
//! This crate is the engine library behind the `hotpath` binary. What it holds so far:
//! - [`sbe`]: the Binance stream codecs, generated at build time by `sbe-codegen` from
//!   `schemas/binance_spot_stream_1_0.xml`, and the decode entry point with hotpath's limits;
//! - [`frames`]: reading recorded frames (hex lines, or length-prefixed binary files);
//! - [`decode`]: the `hotpath decode` command's core, frame bytes to one JSON line;
//! - [`constants`]: every limit, in one place;
//! - [`binance`]: Binance's REST endpoints, weights, rate-limit rules, decimals and the REST
//!   client;
//! - [`tls`]: the one TLS crypto provider and the client configurations;
//! - [`idle`]: idle strategies of the ring consumers and waking them on data.
//!
//! See ARCHITECTURE.md at the repository root for the whole design.
#![forbid(unsafe_code)]

pub mod analytics;
pub mod archive;
pub mod backfill;
pub mod backoff;
pub mod binance;
pub mod book;
pub mod clock;
pub mod config;
pub mod constants;
pub mod control;
pub mod cores;
pub mod decode;
pub mod feed;
pub mod frames;
pub mod gaps;
pub mod idle;
pub mod kline;
pub mod metrics;
pub mod rng;
pub mod sbe;
pub mod shard;
pub mod sidecar;
pub mod sim;
pub mod sink;
pub mod stream;
pub mod sync;
pub mod tally;
pub mod tls;
