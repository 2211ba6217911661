//! Generates the Binance stream codecs from `schemas/` into OUT_DIR (see `src/sbe.rs`).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    sbe_codegen::build(
        "../schemas/binance_spot_stream_1_0.xml",
        out.join("binance_spot_stream.rs"),
    );
}
