//! The feed: hotpath's ingestion hot path, from Binance (or the simulator, or a replay) into
//! per-consumer lock-free rings.
//!
//! Pure cores: [`slot`] (one connection slot's state machine: replacement, overlap, silence,
//! control requests and replies, backoff, attempt budget; inputs in, actions out),
//! [`frame_path`] (per frame: decode, sequence check, rings; the hold behind an older
//! connection), [`sequence`] (per-symbol sequence checks, duplicates, gap notices). The
//! configuration it runs from is [`crate::config`]; reconnect pacing is [`crate::backoff`].
//! Shell: [`reader`] (threads pinned to cores, each running its slots' WebSocket connections on
//! a single-threaded runtime and carrying out what the slots decide), [`run`] (starting and
//! stopping, the summary).

pub mod announce;
pub mod dual;
pub mod event;
pub mod frame_path;
pub mod json;
pub mod pending;
pub mod pool;
pub mod progress;
pub mod reader;
pub mod run;
pub mod sequence;
pub mod slot;
pub mod stats;
