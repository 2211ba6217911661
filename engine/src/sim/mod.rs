//! The local Binance: a simulated exchange whose market is driven by a seeded order flow.
//!
//! This module is the pure core (no sockets, clocks or threads): [`rng`] (seeded generator),
//! [`book`] (price-time matching), [`market`] (one symbol: order flow, ids, ground-truth
//! journal, depth-diff aggregation). The network shell that serves it as Binance's WebSocket
//! and REST protocols is built on top.

pub mod book;
pub mod config;
pub mod encode;
pub mod exchange;
pub mod klines;
pub mod market;
pub mod record;
pub mod rest;
pub mod rest_sbe;
/// The seeded generator, shared with the feed (it moved to the crate root).
pub use crate::rng;
pub mod server;
pub mod session;
pub mod tls;
