//! Generates codecs from the reference SBE "Car" schemas in `../shared/sbe-conformance/` and
//! Binance's REST schema `../shared/binance/schemas/spot_3_5.xml` (read where they stand, never
//! copied), and from this crate's own fixture schemas.

use std::path::PathBuf;

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let shared = manifest.join("../../../shared/sbe-conformance");
    if !shared.join("example-schema.xml").is_file() {
        panic!(
            "the SBE conformance vectors are missing: expected {} (the project's ../shared folder)",
            shared.display()
        );
    }
    sbe_codegen::build(shared.join("example-schema.xml"), out.join("baseline.rs"));
    sbe_codegen::build(
        shared.join("example-extension-schema.xml"),
        out.join("extension.rs"),
    );
    let spot = manifest.join("../../../shared/binance/schemas/spot_3_5.xml");
    if !spot.is_file() {
        panic!(
            "Binance's REST schema is missing: expected {} (the project's ../shared folder)",
            spot.display()
        );
    }
    sbe_codegen::build(spot, out.join("spot_3_5.rs"));
    for fixture in [
        "kitchen_sink",
        "big_endian",
        "edge_cases",
        "constant_header",
    ] {
        sbe_codegen::build(
            manifest.join("schemas").join(format!("{fixture}.xml")),
            out.join(format!("{fixture}.rs")),
        );
    }
}
