//! Generates codecs from the reference SBE "Car" schemas in `../shared/sbe-conformance/` (read
//! where they stand, never copied) and from this crate's own fixture schemas.

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
    for fixture in ["kitchen_sink", "big_endian"] {
        sbe_codegen::build(
            manifest.join("schemas").join(format!("{fixture}.xml")),
            out.join(format!("{fixture}.rs")),
        );
    }
}
