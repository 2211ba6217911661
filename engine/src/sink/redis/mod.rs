//! The Redis writer: trades as streams, best bid/ask, the order book, rolling trade statistics
//! and features, per symbol under one hash tag, written in coalesced pipelines. The keys and
//! fields are listed in [`state`].

pub mod keys;
pub mod memo;
pub mod ob;
pub mod reanchor;
pub mod resend;
pub mod state;
pub mod writer;
