//! Turning schema names into Rust identifiers: `snake_case` for methods, `PascalCase` for
//! types and variants, with keywords escaped by a trailing underscore.

const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut",
    "pub", "ref", "return", "self", "static", "struct", "super", "trait", "true", "type", "unsafe",
    "use", "where", "while", "abstract", "become", "box", "do", "final", "macro", "override",
    "priv", "try", "typeof", "unsized", "virtual", "yield",
];

/// Splits a schema name into lowercase words at case changes, digits-to-letters and
/// separators: `bookUpdateId` -> `book update id`, `XMLValue` -> `xml value`, `TURBO` -> `turbo`.
fn words(name: &str) -> Vec<String> {
    let chars: Vec<char> = name.chars().collect();
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            continue;
        }
        let prev = i.checked_sub(1).map(|p| chars[p]);
        let next = chars.get(i + 1).copied();
        let boundary = c.is_ascii_uppercase()
            && match prev {
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
        if boundary && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        current.push(c.to_ascii_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

fn escape(ident: String) -> String {
    let starts_with_digit = ident.chars().next().is_some_and(|c| c.is_ascii_digit());
    if starts_with_digit {
        format!("_{ident}")
    } else if KEYWORDS.contains(&ident.as_str()) || ident == "Self" {
        format!("{ident}_")
    } else {
        ident
    }
}

/// Method names the emitter defines on message decoders, encoders and group views and entries;
/// a field, group or var data element whose name becomes one of these is escaped by [`method`].
pub const BODY_RESERVED: &[&str] = &[
    "decode",
    "decode_with",
    "decode_body",
    "header",
    "name",
    "encoded_length",
    "acting_version",
    "acting_block_length",
    "write_json",
    "as_bytes",
    "wrap",
    "finish",
    "begin",
    "next_entry",
    "at",
    "new",
    "validate",
    "num_in_group",
];

/// Method names generated on composite views.
pub const COMPOSITE_RESERVED: &[&str] = &["new", "write_json"];

/// Method names generated on bit sets.
pub const SET_RESERVED: &[&str] = &["raw", "from_raw", "write_json"];

/// Whether `name` is a valid SBE symbolic name: a letter or `_`, then letters, digits and `_`
/// (what the reference implementation accepts for every target language).
pub fn is_symbolic(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The method name for schema name `name` among generated methods `reserved`: its
/// [`snake`] form, with a trailing underscore when that is one of `reserved`
/// (`header` -> `header_`).
pub fn method(name: &str, reserved: &[&str]) -> String {
    let rust = snake(name);
    if reserved.contains(&rust.as_str()) {
        rust + "_"
    } else {
        rust
    }
}

/// A generated name derived from method name `ident`: `price` + `raw` -> `price_raw`, without
/// doubling an escape's underscore (`header_` + `pos` -> `header_pos`).
pub fn suffixed(ident: &str, suffix: &str) -> String {
    format!("{}_{suffix}", ident.trim_end_matches('_'))
}

/// `bookUpdateId` -> `book_update_id`.
pub fn snake(name: &str) -> String {
    escape(words(name).join("_"))
}

/// `bookUpdateId` -> `BookUpdateId`; `TURBO` -> `Turbo`.
pub fn pascal(name: &str) -> String {
    let joined: String = words(name)
        .iter()
        .map(|w| {
            let mut chars = w.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect();
    escape(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_schema_names() {
        assert_eq!(snake("bookUpdateId"), "book_update_id");
        assert_eq!(snake("isBuyerMaker"), "is_buyer_maker");
        assert_eq!(snake("XMLValue"), "xml_value");
        assert_eq!(snake("bid2Price"), "bid2_price");
        assert_eq!(snake("type"), "type_");
        assert_eq!(snake("TURBO"), "turbo");
        assert_eq!(pascal("messageHeader"), "MessageHeader");
        assert_eq!(pascal("TURBO"), "Turbo");
        assert_eq!(pascal("groupSize16Encoding"), "GroupSize16Encoding");
        assert_eq!(pascal("spot_stream"), "SpotStream");
        assert_eq!(pascal("Self"), "Self_");
        assert_eq!(snake("1st"), "_1st");
        assert_eq!(method("header", BODY_RESERVED), "header_");
        assert_eq!(method("Name", BODY_RESERVED), "name_");
        assert_eq!(method("price", BODY_RESERVED), "price");
        assert_eq!(method("raw", SET_RESERVED), "raw_");
    }

    #[test]
    fn recognises_symbolic_names() {
        assert!(is_symbolic("bookUpdateId"));
        assert!(is_symbolic("_x1"));
        assert!(!is_symbolic("invalid field name"));
        assert!(!is_symbolic("1st"));
        assert!(!is_symbolic(""));
        assert!(!is_symbolic("a-b"));
    }
}
