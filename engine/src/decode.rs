//! The core of `hotpath decode`: one frame in, one JSON object out. Field names are the
//! schema's, groups are arrays, the symbol is a string, and prices and quantities are exact
//! decimal strings with exactly `-exponent` decimals, as Binance's own JSON prints them.

use std::fmt::Display;

use crate::sbe;

/// Appends the JSON object for `frame` to `out`: the decoded message, or `{"error": ...}`
/// naming the problem. Returns whether the frame decoded.
pub fn frame_to_json(frame: &[u8], out: &mut String) -> bool {
    match sbe::decode(frame) {
        Ok(message) => {
            message.write_json(out);
            true
        }
        Err(e) => {
            error_json(&e, out);
            false
        }
    }
}

/// Appends `{"error":"<problem>"}`.
pub fn error_json(problem: &dyn Display, out: &mut String) {
    let mut o = sbe_runtime::json::Object::begin(out);
    sbe_runtime::json::write_str(o.key("error"), problem.to_string().as_bytes());
    o.end();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_frame_names_the_problem() {
        let mut out = String::new();
        assert!(!frame_to_json(&[0x32, 0x00, 0x11], &mut out));
        assert_eq!(out, r#"{"error":"truncated frame: needed 8 bytes, got 3"}"#);
    }
}
