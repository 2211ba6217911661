//! Accessors, setters and JSON writers for fixed fields, shared by message blocks, group
//! entries and composites.

use super::{Code, Emitter, cast, pascal};
use crate::model::*;

/// Where a getter reads a field from.
pub(super) struct Place {
    /// The fixed array holding every field of version 0.
    block: &'static str,
    /// Whether fields with `sinceVersion > 0` are read from `self.acting_block` behind a
    /// version check (messages and group entries), or like any other (composites).
    versioned: bool,
}

impl Place {
    pub(super) fn composite() -> Self {
        Place {
            block: "self.buf",
            versioned: false,
        }
    }

    pub(super) fn block() -> Self {
        Place {
            block: "self.block",
            versioned: true,
        }
    }
}

/// The message decoder seen from inside its `write_json`: where decimal exponents are read.
pub(super) struct Root {
    /// Whether JSON is written for a message (whose decoders are `self`, then `e1`, `e2`...
    /// for nested group entries); composites have no decimal hints.
    pub(super) message: bool,
}

impl Root {
    /// A statement writing mantissa `m` scaled by exponent `e` (`ctor` is `Decimal::new` or
    /// `Decimal128::new`) as a JSON string to `key`; an absent optional exponent writes the
    /// mantissa as a plain number.
    fn decimal(&self, key: &str, m: &str, e: &Exponent, ctor: &str) -> String {
        let decoder = if e.depth == 0 {
            "self".to_string()
        } else {
            format!("e{}", e.depth)
        };
        let read = format!("{decoder}.{}()", e.ident);
        if e.optional {
            format!(
                "match {read} {{ Some(x) => rt::json::write_display_str({key}, rt::{ctor}({m}, {})), None => rt::json::write_number({key}, {m}), }}",
                cast("x", e.primitive, "i8")
            )
        } else {
            format!(
                "rt::json::write_display_str({key}, rt::{ctor}({m}, {}));",
                cast(&read, e.primitive, "i8")
            )
        }
    }
}

/// The offset of element `i` of an array at `base` with elements of `size` bytes, without the
/// `+ 0` and `* 1` that clippy rejects.
fn element_offset(base: &str, size: usize, saturating: bool) -> String {
    let index = if size == 1 {
        "i".to_string()
    } else {
        format!("i * {size}")
    };
    if saturating {
        format!("{base}.saturating_add({index})")
    } else if base == "0" {
        index
    } else {
        format!("{base} + {index}")
    }
}

/// Constants are not on the wire, so they read the same in every version and are never an
/// extension.
fn is_extension(field: &Field, place: &Place) -> bool {
    place.versioned && field.since_version > 0 && !matches!(field.kind, FieldKind::Constant(_))
}

fn type_name(schema: &Schema, def: usize) -> String {
    match &schema.types[def] {
        TypeDef::Enum(e) => pascal(&e.name),
        TypeDef::Set(s) => pascal(&s.name),
        TypeDef::Composite(c) => pascal(&c.name),
    }
}

fn encoding_text(schema: &Schema, field: &Field) -> String {
    match &field.kind {
        FieldKind::Primitive {
            primitive,
            length: 1,
            ..
        } => primitive.name().to_string(),
        FieldKind::Primitive {
            primitive, length, ..
        } => format!("{}[{length}]", primitive.name()),
        FieldKind::Constant(_) => "constant".to_string(),
        FieldKind::Enum { def, .. } | FieldKind::Set { def } | FieldKind::Composite { def } => {
            format!("`{}`", type_name(schema, *def))
        }
    }
}

impl Emitter<'_> {
    /// A doc table of the fields' wire layout.
    pub(super) fn layout_doc(&self, code: &mut Code, fields: &[Field]) {
        if fields.is_empty() {
            return;
        }
        code.doc("");
        code.doc("| offset | field | encoding | since |");
        code.doc("|---:|---|---|---:|");
        for f in fields {
            let offset = match f.kind {
                FieldKind::Constant(_) => "-".to_string(),
                _ => f.offset.to_string(),
            };
            code.doc(&format!(
                "| {offset} | `{}` | {} | {} |",
                f.name,
                encoding_text(self.schema, f),
                f.since_version
            ));
        }
    }

    fn field_doc(&self, code: &mut Code, field: &Field) {
        let mut text = format!("`{}`", field.name);
        if field.id != 0 {
            text += &format!(" (id {})", field.id);
        }
        text += &format!(": {}", encoding_text(self.schema, field));
        match &field.kind {
            FieldKind::Constant(_) => text += ", constant (not on the wire)",
            _ => text += &format!(" at offset {}", field.offset),
        }
        if let FieldKind::Primitive {
            null: Some(null), ..
        } = &field.kind
        {
            text += &format!(", optional (null {null})");
        }
        if field.since_version > 0 {
            text += &format!(", since version {}", field.since_version);
        }
        if let Some(exponent) = &field.exponent {
            text += &format!(", a mantissa scaled by 10^`{}`", exponent.name);
        }
        code.doc(&(text + "."));
        if let Some(d) = &field.description {
            code.doc("");
            code.doc(d);
        }
    }

    /// The getter(s) for one field.
    pub(super) fn getter(&self, code: &mut Code, field: &Field, place: &Place) {
        let name = &field.ident;
        let raw_name = crate::names::suffixed(name, "raw");
        let off = field.offset;
        let ext = is_extension(field, place);
        let src = if ext {
            "self.acting_block"
        } else {
            place.block
        };
        let end = off + field.size;
        let short = if end == 1 {
            "self.acting_block.is_empty()".to_string()
        } else {
            format!("self.acting_block.len() < {end}")
        };
        let guard = format!(
            "if self.acting_version() < {} || {short} {{ return None; }}",
            field.since_version
        );
        let (ty, expr, null): (String, String, Option<String>) = match &field.kind {
            FieldKind::Primitive { length: 0, .. } => return,
            FieldKind::Primitive {
                primitive,
                length: 1,
                null,
            } => {
                let check = null
                    .as_ref()
                    .map(|n| match (primitive, n.ends_with("NAN")) {
                        (Primitive::F32 | Primitive::F64, true) => "value.is_nan()".to_string(),
                        _ => format!("value == {n}"),
                    });
                (
                    primitive.rust().to_string(),
                    self.get(*primitive, src, &off.to_string()),
                    check,
                )
            }
            FieldKind::Primitive {
                primitive: Primitive::U8 | Primitive::Char,
                length,
                ..
            } => (
                format!("&'a [u8; {length}]"),
                format!("rt::array_at::<{length}>({src}, {off}).unwrap_or(&[0; {length}])"),
                None,
            ),
            FieldKind::Primitive {
                primitive, length, ..
            } => (
                format!("[{}; {length}]", primitive.rust()),
                format!(
                    "core::array::from_fn(|i| {})",
                    self.get(
                        *primitive,
                        src,
                        &element_offset(&off.to_string(), primitive.size(), false)
                    )
                ),
                None,
            ),
            FieldKind::Constant(constant) => {
                let (ty, value) = match constant {
                    Constant::Number(p, literal) => (p.rust().to_string(), literal.clone()),
                    Constant::Text(bytes) => (
                        "&'static [u8]".to_string(),
                        format!("b\"{}\"", bytes.escape_ascii()),
                    ),
                    Constant::EnumValue(def, variant) => {
                        let e = type_name(self.schema, *def);
                        (e.clone(), format!("{e}::{}", pascal(variant)))
                    }
                };
                self.field_doc(code, field);
                code.line(format!("pub const fn {name}(&self) -> {ty} {{"));
                code.line(value);
                code.line("}");
                return;
            }
            FieldKind::Enum { def, .. } => {
                let e = type_name(self.schema, *def);
                let TypeDef::Enum(enum_def) = &self.schema.types[*def] else {
                    unreachable!("an enum field refers to an enum")
                };
                let raw = enum_def.encoding.rust();
                let read = self.get(enum_def.encoding, src, &off.to_string());
                self.field_doc(code, field);
                code.doc("The value, or `None` for the null value and values this decoder does not know.");
                if ext {
                    code.line(format!("pub fn {name}(&self) -> Option<{e}> {{"));
                    code.line(format!("self.{raw_name}().and_then({e}::from_raw)"));
                    code.line("}");
                    code.doc(&format!(
                        "`{}` as encoded; `None` before version {}.",
                        field.name, field.since_version
                    ));
                    code.line(format!("pub fn {raw_name}(&self) -> Option<{raw}> {{"));
                    code.line(&guard);
                    code.line(format!("Some({read})"));
                } else {
                    code.line(format!("pub fn {name}(&self) -> Option<{e}> {{"));
                    code.line(format!("{e}::from_raw(self.{raw_name}())"));
                    code.line("}");
                    code.doc(&format!("`{}` as encoded.", field.name));
                    code.line(format!("pub fn {raw_name}(&self) -> {raw} {{"));
                    code.line(read);
                }
                code.line("}");
                return;
            }
            FieldKind::Set { def } => {
                let s = type_name(self.schema, *def);
                let TypeDef::Set(set_def) = &self.schema.types[*def] else {
                    unreachable!("a set field refers to a set")
                };
                (
                    s.clone(),
                    format!(
                        "{s}::from_raw({})",
                        self.get(set_def.encoding, src, &off.to_string())
                    ),
                    None,
                )
            }
            FieldKind::Composite { def } => {
                let c = type_name(self.schema, *def);
                let size = field.size;
                (
                    format!("{c}Decoder<'a>"),
                    format!(
                        "{c}Decoder::new(rt::array_at::<{size}>({src}, {off}).unwrap_or(&[0; {size}]))"
                    ),
                    None,
                )
            }
        };
        self.field_doc(code, field);
        match (ext, null) {
            (false, None) => {
                code.line(format!("pub fn {name}(&self) -> {ty} {{"));
                code.line(expr);
            }
            (false, Some(check)) => {
                code.line(format!("pub fn {name}(&self) -> Option<{ty}> {{"));
                code.line(format!("let value = {expr};"));
                code.line(format!("if {check} {{ None }} else {{ Some(value) }}"));
            }
            (true, check) => {
                code.line(format!("pub fn {name}(&self) -> Option<{ty}> {{"));
                code.line(&guard);
                match check {
                    None => code.line(format!("Some({expr})")),
                    Some(check) => {
                        code.line(format!("let value = {expr};"));
                        code.line(format!("if {check} {{ None }} else {{ Some(value) }}"));
                    }
                }
            }
        }
        code.line("}");
    }

    /// The setter for one field, storing into `buf` at `base` + the field's offset.
    pub(super) fn setter(&self, code: &mut Code, field: &Field, buf: &str, base: &str) {
        let name = &field.ident;
        let pos = if base == "0" {
            field.offset.to_string()
        } else {
            format!("{base}.saturating_add({})", field.offset)
        };
        let (param, body): (String, Vec<String>) = match &field.kind {
            FieldKind::Primitive { length: 0, .. } | FieldKind::Constant(_) => return,
            FieldKind::Primitive {
                primitive,
                length: 1,
                null,
            } => match null {
                None => (
                    primitive.rust().to_string(),
                    vec![self.put(*primitive, buf, &pos, "value")],
                ),
                Some(null) => (
                    format!("Option<{}>", primitive.rust()),
                    vec![self.put(*primitive, buf, &pos, &format!("value.unwrap_or({null})"))],
                ),
            },
            FieldKind::Primitive {
                primitive: Primitive::U8 | Primitive::Char,
                length,
                ..
            } => (
                "&[u8]".to_string(),
                vec![format!(
                    "rt::copy_padded(rt::bytes::slice_mut({buf}, {pos}, {length}), value);"
                )],
            ),
            FieldKind::Primitive {
                primitive, length, ..
            } => (
                format!("&[{}; {length}]", primitive.rust()),
                vec![
                    format!("let at: usize = {pos};"),
                    "for (i, v) in value.iter().enumerate() {".to_string(),
                    self.put(
                        *primitive,
                        buf,
                        &element_offset("at", primitive.size(), true),
                        "*v",
                    ),
                    "}".to_string(),
                ],
            ),
            FieldKind::Enum { def, optional } => {
                let e = type_name(self.schema, *def);
                let TypeDef::Enum(enum_def) = &self.schema.types[*def] else {
                    unreachable!("an enum field refers to an enum")
                };
                if *optional {
                    (
                        format!("Option<{e}>"),
                        vec![self.put(
                            enum_def.encoding,
                            buf,
                            &pos,
                            &format!("value.map_or({e}::NULL_VALUE, {e}::raw)"),
                        )],
                    )
                } else {
                    (
                        e,
                        vec![self.put(enum_def.encoding, buf, &pos, "value.raw()")],
                    )
                }
            }
            FieldKind::Set { def } => {
                let TypeDef::Set(set_def) = &self.schema.types[*def] else {
                    unreachable!("a set field refers to a set")
                };
                (
                    type_name(self.schema, *def),
                    vec![self.put(set_def.encoding, buf, &pos, "value.raw()")],
                )
            }
            FieldKind::Composite { def } => {
                let c = type_name(self.schema, *def);
                self.field_doc(code, field);
                code.line(format!("pub fn {name}(&mut self) -> {c}Encoder<'_> {{"));
                code.line(format!(
                    "{c}Encoder::new(rt::bytes::slice_mut({buf}, {pos}, {}))",
                    field.size
                ));
                code.line("}");
                return;
            }
        };
        self.field_doc(code, field);
        code.line(format!(
            "pub fn {name}(&mut self, value: {param}) -> &mut Self {{"
        ));
        for line in body {
            code.line(line);
        }
        code.line("self");
        code.line("}");
    }

    /// Statements that add `field` to JSON object `obj`, reading it from decoder `dec`.
    /// `root` is the message decoder, where decimal exponents live.
    pub(super) fn field_json(
        &self,
        code: &mut Code,
        field: &Field,
        dec: &str,
        root: &Root,
        obj: &str,
        place: &Place,
    ) {
        let name = &field.ident;
        let raw_name = crate::names::suffixed(name, "raw");
        let key = format!("{obj}.key(\"{}\")", field.name);
        let ext = is_extension(field, place);
        let write = match &field.kind {
            FieldKind::Primitive { length: 0, .. } => return,
            FieldKind::Constant(Constant::Number(..)) => {
                format!("rt::json::write_number({key}, v);")
            }
            FieldKind::Constant(Constant::Text(_)) => format!("rt::json::write_str({key}, v);"),
            FieldKind::Constant(Constant::EnumValue(..)) => {
                format!("rt::json::write_str({key}, v.name().as_bytes());")
            }
            FieldKind::Primitive {
                primitive,
                length: 1,
                ..
            } => match primitive {
                Primitive::F32 | Primitive::F64 => {
                    format!("rt::json::write_float({key}, v, v.is_finite());")
                }
                Primitive::Char => format!("rt::json::write_str({key}, rt::trim_nul(&[v]));"),
                p => match &field.exponent {
                    Some(exponent) if root.message => {
                        root.decimal(&key, &cast("v", *p, "i64"), exponent, "Decimal::new")
                    }
                    _ => format!("rt::json::write_number({key}, v);"),
                },
            },
            FieldKind::Primitive {
                primitive,
                length: 16,
                ..
            } if root.message && field.exponent.is_some() => {
                let bytes = match primitive {
                    Primitive::I8 => "v.map(|b| b as u8)",
                    _ => "*v",
                };
                let write = field
                    .exponent
                    .as_ref()
                    .map(|e| root.decimal(&key, "m", e, "Decimal128::new"))
                    .unwrap_or_default();
                format!(
                    "let m = i128::from_{}_bytes({bytes}); if m == i128::MIN {{ {key}.push_str(\"null\"); }} else {{ {write} }}",
                    self.end
                )
            }
            FieldKind::Primitive {
                primitive: Primitive::Char,
                ..
            } => {
                format!("rt::json::write_str({key}, rt::trim_nul(v));")
            }
            FieldKind::Primitive { primitive, .. } => {
                let item = match primitive {
                    Primitive::F32 | Primitive::F64 => {
                        "rt::json::write_float(a.item(), x, x.is_finite());"
                    }
                    _ => "rt::json::write_number(a.item(), x);",
                };
                format!(
                    "let mut a = rt::json::Array::begin({key}); for x in v {{ {item} }} a.end();"
                )
            }
            FieldKind::Set { .. } | FieldKind::Composite { .. } => format!("v.write_json({key});"),
            FieldKind::Enum { def, optional } => {
                let e = type_name(self.schema, *def);
                let null_arm = if *optional {
                    format!("None if raw == {e}::NULL_VALUE => {key}.push_str(\"null\"),")
                } else {
                    String::new()
                };
                let write = format!(
                    "match {e}::from_raw(raw) {{ Some(v) => rt::json::write_str({key}, v.name().as_bytes()), {null_arm} None => rt::json::write_number({key}, raw), }}"
                );
                if ext {
                    code.line(format!(
                        "match {dec}.{raw_name}() {{ Some(raw) => {{ {write} }} None => {key}.push_str(\"null\"), }}"
                    ));
                } else {
                    code.line(format!("{{ let raw = {dec}.{raw_name}(); {write} }}"));
                }
                return;
            }
        };
        let optional = matches!(
            field.kind,
            FieldKind::Primitive {
                null: Some(_),
                length: 1,
                ..
            }
        );
        if ext || optional {
            code.line(format!(
                "match {dec}.{name}() {{ Some(v) => {{ {write} }} None => {key}.push_str(\"null\"), }}"
            ));
        } else {
            code.line(format!("{{ let v = {dec}.{name}(); {write} }}"));
        }
    }
}
