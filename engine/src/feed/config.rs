//! The `hotpath run` configuration (being written).
