//! The REST API of the simulated exchange (being written).
