//! The feed: hotpath's ingestion hot path, from Binance (or the simulator, or a replay) into
//! per-consumer lock-free rings.
//!
//! Pure core: [`sequence`] (per-symbol sequence checks, duplicates, gap notices). The
//! configuration it runs from is [`crate::config`]; reconnect pacing is [`crate::backoff`]. Shell: reader threads pinned to cores, each running its WebSocket
//! connections on a single-threaded runtime.

pub mod event;
pub mod frame_path;
pub mod progress;
pub mod reader;
pub mod run;
pub mod sequence;
pub mod slot;
pub mod stats;
