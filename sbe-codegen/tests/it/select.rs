//! `generate_messages`: a crate that reads a few messages of a large schema generates only those
//! (every type stays), the whole schema is still checked, and a name that is no message fails.

use std::path::PathBuf;

fn spot() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/binance_spot_3_5.xml")
}

#[test]
fn only_the_named_messages_are_generated() {
    let all = sbe_codegen::generate(spot()).expect("the whole schema");
    let some = sbe_codegen::generate_messages(spot(), &["DepthResponse", "ErrorResponse"])
        .expect("two messages");
    let names: Vec<&str> = some
        .schema
        .messages
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, ["ErrorResponse", "DepthResponse"], "schema order");
    assert!(some.code.contains("pub struct DepthResponseDecoder"));
    assert!(some.code.contains("pub struct DepthResponseEncoder"));
    assert!(!some.code.contains("KlinesResponseDecoder"));
    assert!(!some.code.contains("NewOrderFullResponse"));
    // Types stay: an enum only other messages use is still there.
    assert!(some.code.contains("pub enum SymbolStatus"));
    assert!(
        some.code.len() * 5 < all.code.len(),
        "{} of {} bytes",
        some.code.len(),
        all.code.len()
    );
    assert_eq!(some.schema.types.len(), all.schema.types.len());
}

#[test]
fn a_name_that_is_no_message_fails_naming_it_and_the_file() {
    let error = sbe_codegen::generate_messages(spot(), &["DepthResponse", "DepthRespnse"])
        .expect_err("a typo");
    let text = error.to_string();
    assert!(text.contains("no message named 'DepthRespnse'"), "{text}");
    assert!(text.contains("binance_spot_3_5.xml:1"), "{text}");
}
