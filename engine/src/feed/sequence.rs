//! Per-symbol sequence checks: duplicates and gaps (being written).
