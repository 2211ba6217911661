//! The reliability sidecar: one thread, off the hot path, that turns gap notices into repairs.
//! Pure cores: [`backfill`] (which trade ids are missing for whom, which REST page next, who
//! gets what a page returned), [`silence`] (which streams fell silent while their symbol
//! moves), [`klines`] (which kline interval to check, and whether a sink's [`crate::tally`] of it
//! agrees). The thread that owns the REST client and the repair rings is
//! the shell around it.

pub mod backfill;
pub mod books;
pub mod depth;
pub mod detect;
pub mod frames;
pub mod klines;
pub mod silence;
pub mod thread;
