//! Codecs generated at build time by `sbe-codegen`, one module per schema, for the
//! conformance tests in `tests/`. Nothing here is written by hand.

/// The reference SBE "Car" schema (`example-schema.xml`, package `baseline`).
#[forbid(unsafe_code)]
pub mod baseline {
    include!(concat!(env!("OUT_DIR"), "/baseline.rs"));
}

/// The extended "Car" schema (`example-extension-schema.xml`, version 1).
#[forbid(unsafe_code)]
pub mod extension {
    include!(concat!(env!("OUT_DIR"), "/extension.rs"));
}

/// Our fixture exercising what the Car schemas do not: every primitive, optional fields and
/// enums, explicit offsets, u8/u16 var-data lengths, u32 group counts, nested composites.
#[forbid(unsafe_code)]
pub mod kitchen_sink {
    include!(concat!(env!("OUT_DIR"), "/kitchen_sink.rs"));
}

/// A big-endian schema.
#[forbid(unsafe_code)]
pub mod big_endian {
    include!(concat!(env!("OUT_DIR"), "/big_endian.rs"));
}

/// Valid SBE that sbe-codegen once refused or turned into Rust that did not compile: constants
/// introduced in a later version, arrays in composites, scoped nested types, `varData` without
/// `length="0"`, names of generated methods, decimal hints in the same entry and on 128-bit
/// mantissas.
#[forbid(unsafe_code)]
pub mod edge_cases {
    include!(concat!(env!("OUT_DIR"), "/edge_cases.rs"));
}

/// A header whose `schemaId` is a constant.
#[forbid(unsafe_code)]
pub mod constant_header {
    include!(concat!(env!("OUT_DIR"), "/constant_header.rs"));
}

/// Binance's Spot REST and WebSocket API schema (id 3, version 5), a real-world schema.
#[forbid(unsafe_code)]
pub mod spot_3_5 {
    include!(concat!(env!("OUT_DIR"), "/spot_3_5.rs"));
}
