//! Conformance tests for generated codecs: against bytes written by the reference SBE
//! implementation (`../shared/sbe-conformance/`), and against our own fixtures.

mod big_endian;
mod car;
mod edge_cases;
mod hostile;
mod kitchen_sink;
mod spot_3_5;

use std::path::PathBuf;

/// Reads a file of the shared conformance vectors, where it stands.
fn shared_vector(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/sbe-conformance")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}
