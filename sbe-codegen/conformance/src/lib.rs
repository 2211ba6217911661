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
