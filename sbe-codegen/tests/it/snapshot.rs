//! Snapshot placeholder.
