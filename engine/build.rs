//! Generates the Binance codecs from `schemas/` into OUT_DIR (see `src/sbe.rs`): the stream
//! schema whole, and of the REST schema only the messages the REST client reads (the whole
//! REST schema is 20 times the stream codecs' code, mostly order and account messages).

/// The REST schema's messages `binance::rest` decodes and the simulator encodes.
const REST_MESSAGES: [&str; 6] = [
    "ErrorResponse",
    "ExchangeInfoResponse",
    "DepthResponse",
    "TradesResponse",
    "AggTradesResponse",
    "KlinesResponse",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    sbe_codegen::build(
        "../schemas/binance_spot_stream_1_0.xml",
        out.join("binance_spot_stream.rs"),
    );
    sbe_codegen::build_messages(
        "../schemas/binance_spot_3_5.xml",
        out.join("binance_spot_rest.rs"),
        &REST_MESSAGES,
    );
}
