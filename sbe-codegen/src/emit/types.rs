//! Enums, sets and composites.

use super::{Code, Emitter, pascal};
use crate::model::*;
use crate::names;

impl Emitter<'_> {
    pub(super) fn enum_type(&self, code: &mut Code, e: &EnumDef) {
        let name = pascal(&e.name);
        let raw = e.encoding.rust();
        code.doc(&format!(
            "Enum `{}`, encoded as `{}`.",
            e.name,
            e.encoding.name()
        ));
        if let Some(d) = &e.description {
            code.doc("");
            code.doc(d);
        }
        code.line("#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]");
        code.line(format!("pub enum {name} {{"));
        for (value, number) in &e.values {
            code.doc(&format!("`{value}` = {number}."));
            code.line(format!("{},", pascal(value)));
        }
        code.line("}");
        code.blank();
        code.line(format!("impl {name} {{"));
        code.doc("The raw value that means \"no value\" in an optional field.");
        code.line(format!("pub const NULL_VALUE: {raw} = {};", e.null));
        code.doc("The value for `raw`, or `None` for the null value and values this schema does not know.");
        code.line(format!(
            "pub const fn from_raw(raw: {raw}) -> Option<Self> {{"
        ));
        code.line("match raw {");
        for (value, number) in &e.values {
            code.line(format!("{number} => Some(Self::{}),", pascal(value)));
        }
        code.line("_ => None,");
        code.line("}");
        code.line("}");
        code.doc("The value's encoding.");
        code.line(format!("pub const fn raw(self) -> {raw} {{"));
        code.line("match self {");
        for (value, number) in &e.values {
            code.line(format!("Self::{} => {number},", pascal(value)));
        }
        code.line("}");
        code.line("}");
        code.doc("The value's name in the schema.");
        code.line("pub const fn name(self) -> &'static str {");
        code.line("match self {");
        for (value, _) in &e.values {
            code.line(format!("Self::{} => \"{value}\",", pascal(value)));
        }
        code.line("}");
        code.line("}");
        code.line("}");
        code.blank();
    }

    pub(super) fn set_type(&self, code: &mut Code, s: &SetDef) {
        let name = pascal(&s.name);
        let raw = s.encoding.rust();
        code.doc(&format!(
            "Bit set `{}`, encoded as `{}`.",
            s.name,
            s.encoding.name()
        ));
        if let Some(d) = &s.description {
            code.doc("");
            code.doc(d);
        }
        code.line("#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]");
        code.line(format!("pub struct {name}({raw});"));
        code.blank();
        code.line(format!("impl {name} {{"));
        code.doc("The set with exactly the bits of `raw`.");
        code.line(format!("pub const fn from_raw(raw: {raw}) -> Self {{"));
        code.line("Self(raw)");
        code.line("}");
        code.doc("The set's encoding.");
        code.line(format!("pub const fn raw(self) -> {raw} {{"));
        code.line("self.0");
        code.line("}");
        for (choice, bit) in &s.choices {
            let mask = 1u64 << bit;
            let method = names::method(choice, names::SET_RESERVED);
            code.doc(&format!("Whether choice `{choice}` (bit {bit}) is set."));
            code.line(format!("pub const fn {method}(self) -> bool {{"));
            code.line(format!("(self.0 & {mask}) != 0"));
            code.line("}");
            code.doc(&format!(
                "The set with choice `{choice}` (bit {bit}) set or cleared."
            ));
            code.line(format!(
                "pub const fn with_{method}(self, on: bool) -> Self {{"
            ));
            code.line(format!(
                "if on {{ Self(self.0 | {mask}) }} else {{ Self(self.0 & !{mask}) }}"
            ));
            code.line("}");
        }
        code.doc("Appends the set as a JSON array of the names of its set choices.");
        code.line("pub fn write_json(self, out: &mut String) {");
        code.line("let mut a = rt::json::Array::begin(out);");
        for (choice, _) in &s.choices {
            code.line(format!(
                "if self.{}() {{",
                names::method(choice, names::SET_RESERVED)
            ));
            code.line(format!("rt::json::write_str(a.item(), b\"{choice}\");"));
            code.line("}");
        }
        code.line("a.end();");
        code.line("}");
        code.line("}");
        code.blank();
    }

    pub(super) fn composite_type(&self, code: &mut Code, c: &CompositeDef) {
        let name = pascal(&c.name);
        let size = c.size;
        code.doc(&format!(
            "Read view of composite `{}` ({}).",
            c.name,
            bytes(size)
        ));
        if let Some(d) = &c.description {
            code.doc("");
            code.doc(d);
        }
        self.layout_doc(code, &c.members);
        code.line("#[derive(Clone, Copy, Debug)]");
        code.line(format!("pub struct {name}Decoder<'a> {{"));
        code.line(format!("buf: &'a [u8; {size}],"));
        code.line("}");
        code.blank();
        code.line(format!("impl<'a> {name}Decoder<'a> {{"));
        code.doc("Encoded size in bytes.");
        code.line(format!("pub const ENCODED_LENGTH: usize = {size};"));
        code.doc("A view of the composite's bytes.");
        code.line(format!("pub fn new(buf: &'a [u8; {size}]) -> Self {{"));
        code.line("Self { buf }");
        code.line("}");
        let place = super::fields::Place::composite();
        for member in &c.members {
            self.getter(code, member, &place);
        }
        code.doc("Appends the composite as one JSON object.");
        code.line("pub fn write_json(&self, out: &mut String) {");
        code.line("let mut o = rt::json::Object::begin(out);");
        let root = super::fields::Root { message: false };
        for member in &c.members {
            self.field_json(code, member, "self", &root, "o", &place);
        }
        code.line("o.end();");
        code.line("}");
        code.line("}");
        code.blank();

        code.doc(&format!(
            "Write view of composite `{}` ({}).",
            c.name,
            bytes(size)
        ));
        code.line("#[derive(Debug)]");
        code.line(format!("pub struct {name}Encoder<'a> {{"));
        code.line("buf: &'a mut [u8],");
        code.line("}");
        code.blank();
        code.line(format!("impl<'a> {name}Encoder<'a> {{"));
        code.doc("Encoded size in bytes.");
        code.line(format!("pub const ENCODED_LENGTH: usize = {size};"));
        code.doc("A write view of `buf`, which should be `ENCODED_LENGTH` bytes; stores past its end are dropped.");
        code.line("pub fn new(buf: &'a mut [u8]) -> Self {");
        code.line("Self { buf }");
        code.line("}");
        for member in &c.members {
            self.setter(code, member, "self.buf", "0");
        }
        code.line("}");
        code.blank();
    }
}

fn bytes(size: usize) -> String {
    if size == 1 {
        "1 byte".to_string()
    } else {
        format!("{size} bytes")
    }
}
