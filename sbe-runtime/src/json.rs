//! Minimal JSON writing for generated `write_json` methods: objects and arrays with comma
//! bookkeeping, escaped strings, and numbers. Not used on the hot path.

use core::fmt::{Display, Write};

/// An open JSON object; call [`Object::key`] before each value and [`Object::end`] once.
pub struct Object<'o> {
    out: &'o mut String,
    first: bool,
}

impl<'o> Object<'o> {
    /// Writes `{` and returns the object.
    pub fn begin(out: &'o mut String) -> Self {
        out.push('{');
        Object { out, first: true }
    }

    /// Writes the separator and `"key":`, and returns the output for the value.
    pub fn key(&mut self, key: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        write_str(self.out, key.as_bytes());
        self.out.push(':');
        self.out
    }

    /// Writes `}`.
    pub fn end(self) {
        self.out.push('}');
    }
}

/// An open JSON array; call [`Array::item`] before each value and [`Array::end`] once.
pub struct Array<'o> {
    out: &'o mut String,
    first: bool,
}

impl<'o> Array<'o> {
    /// Writes `[` and returns the array.
    pub fn begin(out: &'o mut String) -> Self {
        out.push('[');
        Array { out, first: true }
    }

    /// Writes the separator and returns the output for the next value.
    pub fn item(&mut self) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out
    }

    /// Writes `]`.
    pub fn end(self) {
        self.out.push(']');
    }
}

/// Writes `bytes` as a JSON string. Invalid UTF-8 becomes U+FFFD, so any wire bytes print.
pub fn write_str(out: &mut String, bytes: &[u8]) {
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        if !chunk.invalid().is_empty() {
            out.push('\u{fffd}');
        }
    }
    out.push('"');
}

/// Writes `bytes` as a JSON string of lowercase hex digits (for binary var data).
pub fn write_hex(out: &mut String, bytes: &[u8]) {
    out.push('"');
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out.push('"');
}

/// Writes an integer or any value whose `Display` is a JSON number.
pub fn write_number(out: &mut String, value: impl Display) {
    let _ = write!(out, "{value}");
}

/// Writes a float: its shortest round-tripping text, or `null` for NaN and infinities, which
/// JSON cannot carry.
pub fn write_float(out: &mut String, value: impl Display, finite: bool) {
    if finite {
        let _ = write!(out, "{value}");
    } else {
        out.push_str("null");
    }
}

/// Writes a value's `Display` text as a JSON string (exact decimals, for one).
pub fn write_display_str(out: &mut String, value: impl Display) {
    let _ = write!(out, "\"{value}\"");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_arrays_and_escapes() {
        let mut out = String::new();
        let mut o = Object::begin(&mut out);
        write_str(o.key("s"), b"a\"b\\c\n\x01\xff");
        let mut a = Array::begin(o.key("a"));
        write_number(a.item(), 1);
        write_float(a.item(), 35.9f32, true);
        write_float(a.item(), f64::NAN, false);
        a.end();
        write_hex(o.key("h"), &[0, 0xab]);
        write_display_str(o.key("d"), crate::Decimal::new(5, -2));
        o.end();
        assert_eq!(
            out,
            r#"{"s":"a\"b\\c\n\u0001�","a":[1,35.9,null],"h":"00ab","d":"0.05"}"#
        );
    }
}
