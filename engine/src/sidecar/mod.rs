//! The reliability sidecar: one thread, off the hot path, that turns gap notices into repairs.
//! Pure core: [`backfill`] (which trade ids are missing for whom, which REST page next, who
//! gets what a page returned). The thread that owns the REST client and the repair rings is
//! the shell around it.

pub mod backfill;
pub mod books;
pub mod depth;
pub mod frames;
pub mod thread;
