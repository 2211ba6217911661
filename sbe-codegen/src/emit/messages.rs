//! Message decoders and encoders, their repeating groups and var data.

use super::fields::{Place, Root};
use super::{Code, Emitter, cast, pascal};
use crate::model::*;
use crate::names::suffixed;

/// `base + off`, without a `+ 0` (clippy rejects those).
fn plus(base: &str, off: usize) -> String {
    if off == 0 {
        base.to_string()
    } else {
        format!("{base} + {off}")
    }
}

/// Whether any field of the block is read through the acting block (it has `sinceVersion > 0`
/// and is on the wire).
fn has_extensions(body: &Body) -> bool {
    body.fields
        .iter()
        .any(|f| f.since_version > 0 && !matches!(f.kind, FieldKind::Constant(_)))
}

/// Whether any getter reads the fixed block of version-0 fields.
fn reads_block(body: &Body) -> bool {
    body.fields
        .iter()
        .any(|f| f.since_version == 0 && f.size > 0)
}

/// Whether validating the groups and var data after a block needs the acting version.
fn tail_uses_version(body: &Body) -> bool {
    !body.groups.is_empty() || body.data.iter().any(|d| d.since_version > 0)
}

/// The bytes a var-data element needs before its value: its length prefix (and any padding
/// up to the value).
fn data_prefix(d: &Data) -> usize {
    d.data_offset
        .max(d.length.offset + d.length.primitive.size())
}

/// The fixed prefix validation checks first in the tail element at `index` (the groups, then
/// the var data): a group's header, a var-data element's length prefix. Zero past the end and
/// for an element of a later version, which only some frames carry. The check before it covers
/// these bytes too (`rt::need_ahead`), so a valid frame pays one comparison for both.
fn tail_prefix(body: &Body, index: usize) -> usize {
    if let Some(g) = body.groups.get(index) {
        return if g.since_version == 0 && g.body.is_fixed() {
            g.dimension.size
        } else {
            0
        };
    }
    match body.data.get(index - body.groups.len()) {
        Some(d) if d.since_version == 0 => data_prefix(d),
        _ => 0,
    }
}

/// How validation code propagates an error: `?` in functions returning `Result`, `.ok()?` in
/// those returning `Option`.
#[derive(Clone, Copy)]
enum Propagate {
    Result,
    Option,
}

impl Propagate {
    fn suffix(self) -> &'static str {
        match self {
            Propagate::Result => "?",
            Propagate::Option => ".ok()?",
        }
    }
}

/// How [`Emitter::validate_tail`] writes a tail's validation.
#[derive(Clone, Copy)]
struct TailMode<'s> {
    /// How errors propagate.
    how: Propagate,
    /// The expression of the decode limits.
    limits: &'s str,
    /// Whether to keep what the getters return (a decoder), or only check (a group entry's
    /// validation, which keeps nothing).
    store: bool,
}

impl Emitter<'_> {
    pub(super) fn message(&self, code: &mut Code, m: &Message) {
        let name = pascal(&m.name);
        self.message_decoder(code, m, &name);
        self.group_decoders(code, &m.body, &name, m);
        self.message_encoder(code, m, &name);
        self.group_encoders(code, &m.body, &name);
    }

    /// Lines that validate the groups and var data following a block, advancing `pos`, and
    /// (when `mode.store`) keep what the getters return: each fixed-size group's entries
    /// (`<name>_group`), where each other group starts (`<name>_pos`) and each var data
    /// element's bytes (`<name>_data`).
    ///
    /// Each step checks, with its own bytes, the fixed prefix of the next element (a fixed-size
    /// group's header, a var-data length; see `rt::take_ahead`) and hands it on in `next`, so a
    /// valid frame pays one comparison per element and reads each prefix at constant offsets.
    /// `carried`: whether the code before already put the first element's prefix in `next`.
    fn validate_tail(
        &self,
        code: &mut Code,
        body: &Body,
        prefix: &str,
        mode: TailMode<'_>,
        mut carried: bool,
    ) {
        for index in 0..body.groups.len() {
            carried = self.tail_group(code, body, index, prefix, mode, carried);
        }
        for index in 0..body.data.len() {
            carried = self.tail_data(code, body, index, mode, carried);
        }
    }

    /// The lines of [`Self::validate_tail`] for group `index`; whether they leave the next
    /// element's prefix in `next`.
    fn tail_group(
        &self,
        code: &mut Code,
        body: &Body,
        index: usize,
        prefix: &str,
        mode: TailMode<'_>,
        carried: bool,
    ) -> bool {
        let TailMode { how, limits, store } = mode;
        let q = how.suffix();
        let g = &body.groups[index];
        let group = format!("{prefix}{}Group", pascal(&g.name));
        let since = g.since_version;
        let stored = tail_field(g, &g.ident);
        let fixed = g.body.is_fixed();
        if store && fixed && since > 0 {
            code.line(format!(
                "let mut {stored} = {group}::empty(acting_version);"
            ));
        } else if store && !fixed {
            code.line(format!("let {stored} = pos;"));
        }
        if since > 0 {
            code.line(format!("if acting_version >= {since} {{"));
        }
        let mut ahead = 0;
        if !fixed {
            code.line(format!(
                "pos = {group}::validate(buf, pos, acting_version, {limits}){q};"
            ));
        } else {
            let dim = if carried {
                "next".to_string()
            } else {
                format!("rt::prefix_at::<{}>(buf, pos){q}", g.dimension.size)
            };
            if store && since == 0 {
                ahead = tail_prefix(body, index + 1);
            }
            let validate = format!(
                "{group}::validate::<{ahead}>(buf, pos, {dim}, acting_version, {limits}){q}"
            );
            let next = if ahead > 0 { "next" } else { "_" };
            match (store, since > 0) {
                (true, false) => {
                    code.line(format!("let ({stored}, end, {next}) = {validate};"));
                    code.line("pos = end;");
                }
                (true, true) => code.line(format!("({stored}, pos, _) = {validate};")),
                (false, _) => code.line(format!("pos = {validate}.1;")),
            }
        }
        if since > 0 {
            code.line("}");
        }
        ahead > 0
    }

    /// The lines of [`Self::validate_tail`] for var data `index`; whether they leave the next
    /// element's prefix in `next`.
    fn tail_data(
        &self,
        code: &mut Code,
        body: &Body,
        index: usize,
        mode: TailMode<'_>,
        carried: bool,
    ) -> bool {
        let q = mode.how.suffix();
        let d = &body.data[index];
        let since = d.since_version;
        let stored = suffixed(&d.ident, "data");
        if mode.store && since > 0 {
            code.line(format!("let mut {stored}: &[u8] = &[];"));
        }
        if since > 0 {
            code.line(format!("if acting_version >= {since} {{"));
        }
        let mut ahead = 0;
        if !mode.store {
            let len = self.get(d.length.primitive, "buf", &plus("pos", d.length.offset));
            let len = cast(&len, d.length.primitive, "usize");
            code.line(format!(
                "pos = rt::skip_data(buf, pos, {}, {len}){q};",
                d.data_offset
            ));
        } else {
            // The length prefix is checked before it is read, so the read needs no check.
            let held = if carried { "next" } else { "prefix" };
            if !carried {
                code.line(format!(
                    "let prefix = rt::prefix_at::<{}>(buf, pos){q};",
                    data_prefix(d)
                ));
            }
            if since == 0 {
                ahead = tail_prefix(body, body.groups.len() + index + 1);
            }
            let len = self.get(d.length.primitive, held, &d.length.offset.to_string());
            let len = cast(&len, d.length.primitive, "usize");
            let start = plus("pos", d.data_offset);
            let take = format!("rt::take_ahead::<{ahead}>(buf, {start}, {len}){q}");
            if since > 0 {
                code.line(format!("({stored}, pos, _) = {take};"));
            } else {
                let next = if ahead > 0 { "next" } else { "_" };
                code.line(format!("let ({stored}, end, {next}) = {take};"));
                code.line("pos = end;");
            }
        }
        if since > 0 {
            code.line("}");
        }
        ahead > 0
    }

    /// Struct fields holding what [`Self::validate_tail`] keeps.
    fn position_fields(&self, code: &mut Code, body: &Body, prefix: &str) {
        for g in &body.groups {
            if g.body.is_fixed() {
                code.line(format!(
                    "{}: {prefix}{}Group<'a>,",
                    tail_field(g, &g.ident),
                    pascal(&g.name)
                ));
            } else {
                code.line(format!("{}: usize,", tail_field(g, &g.ident)));
            }
        }
        for d in &body.data {
            code.line(format!("{}: &'a [u8],", suffixed(&d.ident, "data")));
        }
    }

    fn position_names(&self, body: &Body) -> String {
        body.groups
            .iter()
            .map(|g| tail_field(g, &g.ident))
            .chain(body.data.iter().map(|d| suffixed(&d.ident, "data")))
            .map(|n| format!(", {n}"))
            .collect()
    }

    /// Getters of the groups and var data of a message or entry.
    fn tail_getters(&self, code: &mut Code, body: &Body, prefix: &str) {
        for g in &body.groups {
            let group = format!("{prefix}{}Group", pascal(&g.name));
            code.doc(&format!(
                "Group `{}` (id {}): {}-byte entries, dimension `{}`{}.",
                g.name,
                g.id,
                g.body.block_length,
                g.dimension.name,
                since_text(g.since_version)
            ));
            code.line(format!("pub fn {}(&self) -> {group}<'a> {{", &g.ident));
            let stored = tail_field(g, &g.ident);
            if g.body.is_fixed() {
                // Validation kept the entries (empty before the group's version).
                code.line(format!("self.{stored}"));
                code.line("}");
                continue;
            }
            if g.since_version > 0 {
                code.line(format!(
                    "if self.acting_version() < {} {{ return {group}::empty(self.buf, self.acting_version()); }}",
                    g.since_version
                ));
            }
            code.line(format!(
                "{group}::at(self.buf, self.{stored}, self.acting_version())"
            ));
            code.line("}");
        }
        for d in &body.data {
            code.doc(&format!(
                "Var data `{}` (id {}), encoding `{}`{}.",
                d.name,
                d.id,
                d.encoding,
                since_text(d.since_version)
            ));
            code.line(format!("pub fn {}(&self) -> &'a [u8] {{", &d.ident));
            // Validation kept the bytes (empty before the element's version).
            code.line(format!("self.{}", suffixed(&d.ident, "data")));
            code.line("}");
        }
    }

    fn message_decoder(&self, code: &mut Code, m: &Message, name: &str) {
        let body = &m.body;
        let base = body.base_length;
        let ext = has_extensions(body);
        code.doc(&format!(
            "Decoder for message `{}` (template {}): a validated, zero-copy view of one frame.",
            m.name, m.id
        ));
        code.doc("");
        code.doc(&format!(
            "Root block: {} bytes as written by this schema, at least {base} accepted.",
            body.block_length
        ));
        self.layout_doc(code, &body.fields);
        code.line("#[derive(Clone, Copy, Debug)]");
        code.line(format!("pub struct {name}Decoder<'a> {{"));
        code.line("buf: &'a [u8],");
        code.line("header: Header,");
        let block = reads_block(body);
        if block {
            code.line(format!("block: &'a [u8; {base}],"));
        }
        if ext {
            code.line("acting_block: &'a [u8],");
        }
        self.position_fields(code, body, name);
        code.line("}");
        code.blank();
        code.line(format!("impl<'a> {name}Decoder<'a> {{"));
        code.doc("The template id.");
        code.line(format!("pub const TEMPLATE_ID: u16 = {};", m.id));
        code.doc("The root block length this schema writes.");
        code.line(format!(
            "pub const BLOCK_LENGTH: usize = {};",
            body.block_length
        ));
        code.doc("The least root block length accepted: the fields every version carries.");
        code.line(format!("pub const BASE_LENGTH: usize = {base};"));
        code.doc("The schema's name for the message.");
        code.line(format!("pub const NAME: &'static str = \"{}\";", m.name));
        code.blank();
        code.doc("Decodes and validates a frame with the default limits.");
        code.line("pub fn decode(buf: &'a [u8]) -> Result<Self, rt::DecodeError> {");
        code.line("Self::decode_with(buf, &rt::Limits::DEFAULT)");
        code.line("}");
        code.blank();
        code.doc("Decodes and validates a frame: header, root block, every group and var data.");
        code.line("pub fn decode_with(buf: &'a [u8], limits: &rt::Limits) -> Result<Self, rt::DecodeError> {");
        code.line("let header = decode_header(buf)?;");
        code.line("if header.template_id != Self::TEMPLATE_ID {");
        code.line("return Err(rt::DecodeError::WrongTemplate { expected: Self::TEMPLATE_ID, got: header.template_id });");
        code.line("}");
        code.line("Self::decode_body(buf, header, limits)");
        code.line("}");
        code.blank();
        code.doc("Validates the frame after its header, which `decode_header` already read.");
        code.doc(
            "Uses the header's block length and version (the acting ones), so frames of newer",
        );
        code.doc("and older versions of the schema decode.");
        let tail = !body.groups.is_empty() || !body.data.is_empty();
        let limits = if body.groups.is_empty() {
            "_limits"
        } else {
            "limits"
        };
        code.line(format!(
            "pub fn decode_body(buf: &'a [u8], header: Header, {limits}: &rt::Limits) -> Result<Self, rt::DecodeError> {{"
        ));
        if base > 0 {
            code.line("if header.block_length < Self::BASE_LENGTH {");
            code.line("return Err(rt::DecodeError::BlockTooShort { id: Self::TEMPLATE_ID, needed: Self::BASE_LENGTH, got: header.block_length });");
            code.line("}");
        }
        let mutable = if tail { "mut " } else { "" };
        let ahead = if tail { tail_prefix(body, 0) } else { 0 };
        if ahead > 0 {
            code.line(format!(
                "let ({mutable}pos, next) = rt::need_ahead::<{ahead}>(buf, HEADER_LENGTH, header.block_length)?;"
            ));
        } else {
            code.line(format!(
                "let {mutable}pos = rt::need(buf, HEADER_LENGTH, header.block_length)?;"
            ));
        }
        if block {
            code.line(format!(
                "let Some(block) = rt::array_at::<{base}>(buf, HEADER_LENGTH) else {{"
            ));
            code.line("return Err(rt::DecodeError::Truncated { needed: HEADER_LENGTH + Self::BASE_LENGTH, got: buf.len() });");
            code.line("};");
        }
        if ext {
            code.line("let acting_block = rt::slice_at(buf, HEADER_LENGTH, header.block_length).unwrap_or_default();");
        }
        if tail_uses_version(body) {
            code.line("let acting_version = header.version;");
        }
        self.validate_tail(
            code,
            body,
            name,
            TailMode {
                how: Propagate::Result,
                limits: "limits",
                store: true,
            },
            ahead > 0,
        );
        code.line("let buf = rt::slice_at(buf, 0, pos).unwrap_or(buf);");
        code.line(format!(
            "Ok(Self {{ buf, header{}{}{} }})",
            if block { ", block" } else { "" },
            if ext { ", acting_block" } else { "" },
            self.position_names(body)
        ));
        code.line("}");
        code.blank();
        code.doc("The schema's name for the message.");
        code.line("pub fn name(&self) -> &'static str {");
        code.line("Self::NAME");
        code.line("}");
        code.doc("The header as read from the frame.");
        code.line("pub fn header(&self) -> Header {");
        code.line("self.header");
        code.line("}");
        code.doc("The version of the encoder that wrote the frame.");
        code.line("pub fn acting_version(&self) -> u16 {");
        code.line("self.header.version");
        code.line("}");
        code.doc("Bytes from the header's start to the end of the message.");
        code.line("pub fn encoded_length(&self) -> usize {");
        code.line("self.buf.len()");
        code.line("}");
        code.doc("The message's bytes, header included.");
        code.line("pub fn as_bytes(&self) -> &'a [u8] {");
        code.line("self.buf");
        code.line("}");
        let place = Place::block();
        for field in &body.fields {
            self.getter(code, field, &place);
        }
        self.tail_getters(code, body, name);
        code.doc(
            "Appends the message as one JSON object: `\"message\"`, then every field, group and",
        );
        code.doc("var data in schema order.");
        code.line("pub fn write_json(&self, out: &mut String) {");
        code.line("let mut o0 = rt::json::Object::begin(out);");
        code.line(format!(
            "rt::json::write_str(o0.key(\"message\"), b\"{}\");",
            m.name
        ));
        let root = Root { message: true };
        self.body_json(code, body, "self", 0, &root);
        code.line("o0.end();");
        code.line("}");
        code.line("}");
        code.blank();
    }

    fn body_json(&self, code: &mut Code, body: &Body, dec: &str, depth: usize, root: &Root) {
        let obj = format!("o{depth}");
        let place = Place::block();
        for field in &body.fields {
            self.field_json(code, field, dec, root, &obj, &place);
        }
        for g in &body.groups {
            let array = format!("a{depth}");
            let entry = format!("e{}", depth + 1);
            let inner = format!("o{}", depth + 1);
            code.line("{");
            code.line(format!(
                "let mut {array} = rt::json::Array::begin({obj}.key(\"{}\"));",
                g.name
            ));
            let empty = g
                .body
                .fields
                .iter()
                .all(|f| matches!(f.kind, FieldKind::Primitive { length: 0, .. }))
                && g.body.groups.is_empty()
                && g.body.data.is_empty();
            if empty {
                code.line(format!("for _ in {dec}.{}() {{", &g.ident));
                code.line(format!("{array}.item().push_str(\"{{}}\");"));
            } else {
                code.line(format!("for {entry} in {dec}.{}() {{", &g.ident));
                code.line(format!(
                    "let mut {inner} = rt::json::Object::begin({array}.item());"
                ));
                self.body_json(code, &g.body, &entry, depth + 1, root);
                code.line(format!("{inner}.end();"));
            }
            code.line("}");
            code.line(format!("{array}.end();"));
            code.line("}");
        }
        for d in &body.data {
            let writer = if d.is_text { "write_str" } else { "write_hex" };
            code.line(format!(
                "rt::json::{writer}({obj}.key(\"{}\"), {dec}.{}());",
                d.name, &d.ident
            ));
        }
    }

    fn group_decoders(&self, code: &mut Code, body: &Body, prefix: &str, m: &Message) {
        for g in &body.groups {
            let name = format!("{prefix}{}", pascal(&g.name));
            self.group_iterator(code, g, &name, m);
            self.group_entry(code, g, &name);
            self.group_decoders(code, &g.body, &name, m);
        }
    }

    fn group_iterator(&self, code: &mut Code, g: &Group, name: &str, m: &Message) {
        let dim = &g.dimension;
        let body = &g.body;
        code.doc(&format!(
            "The entries of group `{}` (id {}) of message `{}`, in wire order.",
            g.name, g.id, m.name
        ));
        code.line("#[derive(Clone, Copy, Debug)]");
        code.line(format!("pub struct {name}Group<'a> {{"));
        let fixed = body.is_fixed();
        if fixed {
            fixed_group_fields(code, body);
        } else {
            code.line("buf: &'a [u8],");
            code.line("pos: usize,");
            code.line("block_length: usize,");
            code.line("count: usize,");
            code.line("index: usize,");
            code.line("acting_version: u16,");
        }
        code.line("}");
        code.blank();
        code.line(format!("impl<'a> {name}Group<'a> {{"));
        code.doc("The group id.");
        code.line(format!("pub const ID: u16 = {};", g.id));
        code.doc("The entry block length this schema writes.");
        code.line(format!(
            "pub const BLOCK_LENGTH: usize = {};",
            body.block_length
        ));
        code.doc("The least entry block length accepted.");
        code.line(format!(
            "pub const BASE_LENGTH: usize = {};",
            body.base_length
        ));
        code.blank();
        let (block_length, count) = self.group_validate(code, g, name);
        if fixed {
            if g.since_version > 0 {
                code.blank();
                fixed_group_empty(code, body);
            }
        } else {
            code.blank();
            code.line("fn at(buf: &'a [u8], pos: usize, acting_version: u16) -> Self {");
            code.line(format!(
                "let block_length = {};",
                cast(&block_length, dim.block_length.primitive, "usize")
            ));
            code.line(format!(
                "let count = {};",
                cast(&count, dim.num_in_group.primitive, "usize")
            ));
            code.line(format!(
                "Self {{ buf, pos: pos + {}, block_length, count, index: 0, acting_version }}",
                dim.size
            ));
            code.line("}");
            if g.since_version > 0 {
                code.blank();
                code.line("fn empty(buf: &'a [u8], acting_version: u16) -> Self {");
                code.line(
                    "Self { buf, pos: 0, block_length: 0, count: 0, index: 0, acting_version }",
                );
                code.line("}");
            }
        }
        code.blank();
        code.doc("The number of entries on the wire (`numInGroup`).");
        code.line("pub fn num_in_group(&self) -> usize {");
        code.line("self.count");
        code.line("}");
        code.line("}");
        code.blank();
        code.line(format!("impl<'a> Iterator for {name}Group<'a> {{"));
        code.line(format!("type Item = {name}Entry<'a>;"));
        code.blank();
        if fixed {
            fixed_group_next(code, body, name);
        } else {
            code.line("fn next(&mut self) -> Option<Self::Item> {");
            code.line("if self.index >= self.count {");
            code.line("return None;");
            code.line("}");
            code.line(format!(
                "let (entry, end) = {name}Entry::at(self.buf, self.pos, self.block_length, self.acting_version)?;"
            ));
            code.line("self.pos = end;");
            code.line("self.index += 1;");
            code.line("Some(entry)");
            code.line("}");
            code.blank();
            code.line("fn size_hint(&self) -> (usize, Option<usize>) {");
            code.line("let left = self.count - self.index;");
            code.line("(left, Some(left))");
            code.line("}");
        }
        code.line("}");
        code.blank();
        code.line(format!("impl ExactSizeIterator for {name}Group<'_> {{}}"));
        code.blank();
    }

    /// A group's `validate`: its header, count and block length, then its entries. A fixed-size
    /// group returns itself (its entries sliced once) and its end, any other group its end.
    /// Returns the expressions reading the header's block length and count at `pos`.
    fn group_validate(&self, code: &mut Code, g: &Group, name: &str) -> (String, String) {
        let dim = &g.dimension;
        let body = &g.body;
        let fixed = body.is_fixed();
        if fixed {
            code.line(format!(
                "fn validate<const A: usize>(buf: &'a [u8], pos: usize, dimension: &[u8; {}], acting_version: u16, limits: &rt::Limits) -> Result<(Self, usize, &'a [u8; A]), rt::DecodeError> {{",
                dim.size
            ));
        } else {
            let version = if tail_uses_version(body) {
                "acting_version"
            } else {
                "_acting_version"
            };
            code.line(format!(
                "fn validate(buf: &[u8], pos: usize, {version}: u16, limits: &rt::Limits) -> Result<usize, rt::DecodeError> {{"
            ));
        }
        let block_length = self.get(
            dim.block_length.primitive,
            "buf",
            &plus("pos", dim.block_length.offset),
        );
        let count = self.get(
            dim.num_in_group.primitive,
            "buf",
            &plus("pos", dim.num_in_group.offset),
        );
        if fixed {
            // The caller checked the header's bytes and hands them over: constant-offset loads.
            code.line(format!("let start = pos + {};", dim.size));
            let block_length = self.get(
                dim.block_length.primitive,
                "dimension",
                &dim.block_length.offset.to_string(),
            );
            let count = self.get(
                dim.num_in_group.primitive,
                "dimension",
                &dim.num_in_group.offset.to_string(),
            );
            code.line(format!(
                "let block_length = {};",
                cast(&block_length, dim.block_length.primitive, "usize")
            ));
            code.line(format!(
                "let count = {};",
                cast(&count, dim.num_in_group.primitive, "u64")
            ));
        } else {
            code.line(format!("let start = rt::need(buf, pos, {})?;", dim.size));
            code.line(format!(
                "let block_length = {};",
                cast(&block_length, dim.block_length.primitive, "usize")
            ));
            code.line(format!(
                "let count = {};",
                cast(&count, dim.num_in_group.primitive, "u64")
            ));
        }
        let type_max = dim.num_in_group.primitive.range().map_or(0, |(_, max)| max);
        if i128::from(dim.count_max) < type_max {
            code.line(format!(
                "let max = u64::from(limits.group_count_max).min({});",
                dim.count_max
            ));
        } else {
            code.line("let max = u64::from(limits.group_count_max);");
        }
        code.line("if count > max {");
        code.line("return Err(rt::DecodeError::GroupTooLarge { id: Self::ID, count, max });");
        code.line("}");
        if body.base_length > 0 {
            code.line("if block_length < Self::BASE_LENGTH {");
            code.line("return Err(rt::DecodeError::BlockTooShort { id: Self::ID, needed: Self::BASE_LENGTH, got: block_length });");
            code.line("}");
        }
        if fixed {
            fixed_group_new(code, body);
        } else {
            code.line("let mut pos = start;");
            code.line("for _ in 0..count {");
            code.line("pos = rt::need(buf, pos, block_length)?;");
            self.validate_tail(
                code,
                body,
                name,
                TailMode {
                    how: Propagate::Result,
                    limits: "limits",
                    store: false,
                },
                false,
            );
            code.line("}");
            code.line("Ok(pos)");
        }
        code.line("}");
        (block_length, count)
    }

    fn group_entry(&self, code: &mut Code, g: &Group, name: &str) {
        let body = &g.body;
        let base = body.base_length;
        let ext = has_extensions(body);
        let fixed = body.is_fixed();
        code.doc(&format!("One entry of group `{}` (id {}).", g.name, g.id));
        self.layout_doc(code, &body.fields);
        code.line("#[derive(Clone, Copy, Debug)]");
        code.line(format!("pub struct {name}Entry<'a> {{"));
        // Only groups that are not fixed-size are found again from the frame when read.
        let keeps_buf = body.groups.iter().any(|g| !g.body.is_fixed());
        if keeps_buf {
            code.line("buf: &'a [u8],");
        }
        let block = reads_block(body);
        if block {
            code.line(format!("block: &'a [u8; {base}],"));
        }
        if ext {
            code.line("acting_block: &'a [u8],");
        }
        // An entry with nothing to read still borrows the frame.
        let marker = fixed && !block && !ext;
        if marker {
            code.line("marker: core::marker::PhantomData<&'a [u8]>,");
        }
        code.line("acting_version: u16,");
        self.position_fields(code, body, name);
        code.line("}");
        code.blank();
        code.line(format!("impl<'a> {name}Entry<'a> {{"));
        if fixed {
            code.doc("The entry whose block is `entry`; `None` only for frames that did not pass");
            code.doc("validation.");
            code.line("#[inline]");
            code.line("fn at(entry: &'a [u8], acting_version: u16) -> Option<Self> {");
            if block {
                code.line(format!("let block = entry.first_chunk::<{base}>()?;"));
            }
            if ext {
                code.line("let acting_block = entry;");
            }
            if marker {
                code.line("let (_, marker) = (entry, core::marker::PhantomData);");
            }
            code.line(format!(
                "Some(Self {{ {}{}acting_version }})",
                if block { "block, " } else { "" },
                if ext {
                    "acting_block, "
                } else if marker {
                    "marker, "
                } else {
                    ""
                },
            ));
        } else {
            code.doc(
                "The entry at `pos` and where the next one starts; `None` only for frames that",
            );
            code.doc("did not pass validation.");
            code.line("#[inline]");
            code.line(
                "fn at(buf: &'a [u8], pos: usize, block_length: usize, acting_version: u16) -> Option<(Self, usize)> {",
            );
            if block {
                code.line(format!("let block = rt::array_at::<{base}>(buf, pos)?;"));
            }
            if ext {
                code.line("let acting_block = rt::slice_at(buf, pos, block_length)?;");
            }
            code.line("let mut pos = pos.checked_add(block_length)?;");
            self.validate_tail(
                code,
                body,
                name,
                TailMode {
                    how: Propagate::Option,
                    limits: "&rt::Limits::UNLIMITED",
                    store: true,
                },
                false,
            );
            code.line(format!(
                "Some((Self {{ {}{}{}acting_version{} }}, pos))",
                if keeps_buf { "buf, " } else { "" },
                if block { "block, " } else { "" },
                if ext { "acting_block, " } else { "" },
                self.position_names(body)
            ));
        }
        code.line("}");
        code.blank();
        code.doc("The version of the encoder that wrote the frame.");
        code.line("pub fn acting_version(&self) -> u16 {");
        code.line("self.acting_version");
        code.line("}");
        let place = Place::block();
        for field in &body.fields {
            self.getter(code, field, &place);
        }
        self.tail_getters(code, body, name);
        code.line("}");
        code.blank();
    }

    fn message_encoder(&self, code: &mut Code, m: &Message, name: &str) {
        let h = &self.schema.header;
        code.doc(&format!(
            "Encoder for message `{}` (template {}): writes the header and a zeroed root block, then",
            m.name, m.id
        ));
        code.doc("takes fields in any order and groups and var data in schema order.");
        code.line("#[derive(Debug)]");
        code.line(format!("pub struct {name}Encoder<'a> {{"));
        code.line("w: rt::Writer<'a>,");
        // A root block with nothing on the wire (constants only, or no fields) has no setter.
        let block = m.body.fields.iter().any(|f| f.size > 0);
        if block {
            code.line("block: usize,");
        }
        code.line("}");
        code.blank();
        code.line(format!("impl<'a> {name}Encoder<'a> {{"));
        code.doc("The template id.");
        code.line(format!("pub const TEMPLATE_ID: u16 = {};", m.id));
        code.doc("The root block length written.");
        code.line(format!(
            "pub const BLOCK_LENGTH: usize = {};",
            m.body.block_length
        ));
        code.blank();
        code.doc("Starts a message at the beginning of `buf`: writes the header and reserves the root block.");
        code.line("pub fn wrap(buf: &'a mut [u8]) -> Result<Self, rt::EncodeError> {");
        code.line("let mut w = rt::Writer::new(buf);");
        code.line("let header = w.reserve(HEADER_LENGTH)?;");
        let members = [
            (
                HeaderField::Wire(h.block_length),
                m.body.block_length.to_string(),
            ),
            (h.template_id, m.id.to_string()),
            (h.schema_id, "SCHEMA_ID".to_string()),
            (h.version, "SCHEMA_VERSION".to_string()),
        ];
        for (member, value) in members {
            // Constant members are not on the wire.
            let HeaderField::Wire(slot) = member else {
                continue;
            };
            let value =
                if value.chars().all(|c| c.is_ascii_digit()) || slot.primitive == Primitive::U16 {
                    value
                } else {
                    format!("{value} as {}", slot.primitive.rust())
                };
            code.line(self.put(
                slot.primitive,
                "w.buf_mut()",
                &plus("header", slot.offset),
                &value,
            ));
        }
        if block {
            code.line("let block = w.reserve(Self::BLOCK_LENGTH)?;");
            code.line("Ok(Self { w, block })");
        } else {
            code.line("w.reserve(Self::BLOCK_LENGTH)?;");
            code.line("Ok(Self { w })");
        }
        code.line("}");
        for field in &m.body.fields {
            self.setter(code, field, "self.w.buf_mut()", "self.block");
        }
        self.tail_writers(code, &m.body, name, "&mut self.w");
        code.doc("Ends the message and returns its encoded length.");
        code.line("pub fn finish(self) -> usize {");
        code.line("self.w.position()");
        code.line("}");
        code.line("}");
        code.blank();
    }

    /// Group starters and var-data writers of a message or entry encoder.
    fn tail_writers(&self, code: &mut Code, body: &Body, prefix: &str, writer: &str) {
        for g in &body.groups {
            let encoder = format!("{prefix}{}Encoder", pascal(&g.name));
            let count = g.dimension.num_in_group.primitive.rust();
            code.doc(&format!(
                "Starts group `{}` (id {}) with `count` entries; call `next_entry` before each.",
                g.name, g.id
            ));
            code.line(format!(
                "pub fn {}(&mut self, count: {count}) -> Result<{encoder}<'_, 'a>, rt::EncodeError> {{",
                &g.ident
            ));
            code.line(format!("{encoder}::begin({writer}, count)"));
            code.line("}");
        }
        for d in &body.data {
            let len = d.length.primitive;
            code.doc(&format!("Appends var data `{}` (id {}).", d.name, d.id));
            code.line(format!(
                "pub fn {}(&mut self, value: &[u8]) -> Result<&mut Self, rt::EncodeError> {{",
                &d.ident
            ));
            if d.length_max < u64::MAX {
                code.line(format!("if value.len() as u64 > {} {{", d.length_max));
                code.line(format!(
                    "return Err(rt::EncodeError::TooLong {{ id: {}, len: value.len() as u64, max: {} }});",
                    d.id, d.length_max
                ));
                code.line("}");
            }
            code.line(format!(
                "let at = self.w.reserve({})?;",
                plus("value.len()", d.data_offset)
            ));
            code.line(self.put(
                len,
                "self.w.buf_mut()",
                &plus("at", d.length.offset),
                &format!("value.len() as {}", len.rust()),
            ));
            code.line(format!(
                "rt::bytes::put_bytes(self.w.buf_mut(), {}, value);",
                plus("at", d.data_offset)
            ));
            code.line("Ok(self)");
            code.line("}");
        }
    }

    fn group_encoders(&self, code: &mut Code, body: &Body, prefix: &str) {
        for g in &body.groups {
            let name = format!("{prefix}{}", pascal(&g.name));
            let dim = &g.dimension;
            let count = dim.num_in_group.primitive;
            code.doc(&format!(
                "Writes the entries of group `{}` (id {}).",
                g.name, g.id
            ));
            code.line("#[derive(Debug)]");
            code.line(format!("pub struct {name}Encoder<'w, 'a> {{"));
            code.line("w: &'w mut rt::Writer<'a>,");
            code.line("entry: usize,");
            code.line("count: u64,");
            code.line("started: u64,");
            code.line("}");
            code.blank();
            code.line(format!("impl<'w, 'a> {name}Encoder<'w, 'a> {{"));
            code.doc("The group id.");
            code.line(format!("pub const ID: u16 = {};", g.id));
            code.doc("The entry block length written.");
            code.line(format!(
                "pub const BLOCK_LENGTH: usize = {};",
                g.body.block_length
            ));
            code.blank();
            code.line(format!(
                "fn begin(w: &'w mut rt::Writer<'a>, count: {}) -> Result<Self, rt::EncodeError> {{",
                count.rust()
            ));
            let count_u64 = cast("count", count, "u64");
            let type_max = count.range().map_or(0, |(_, max)| max);
            if i128::from(dim.count_max) < type_max {
                code.line(format!("if {count_u64} > {} {{", dim.count_max));
                code.line(format!(
                    "return Err(rt::EncodeError::TooLong {{ id: Self::ID, len: {count_u64}, max: {} }});",
                    dim.count_max
                ));
                code.line("}");
            }
            code.line(format!("let at = w.reserve({})?;", dim.size));
            code.line(self.put(
                dim.block_length.primitive,
                "w.buf_mut()",
                &plus("at", dim.block_length.offset),
                &g.body.block_length.to_string(),
            ));
            code.line(self.put(
                count,
                "w.buf_mut()",
                &plus("at", dim.num_in_group.offset),
                "count",
            ));
            code.line(format!(
                "Ok(Self {{ w, entry: usize::MAX, count: {count_u64}, started: 0 }})"
            ));
            code.line("}");
            code.blank();
            code.doc("Starts the next entry (its block zeroed); fails past the declared count.");
            code.line("pub fn next_entry(&mut self) -> Result<&mut Self, rt::EncodeError> {");
            code.line("if self.started >= self.count {");
            code.line(
                "return Err(rt::EncodeError::GroupOverflow { id: Self::ID, count: self.count });",
            );
            code.line("}");
            code.line("self.entry = self.w.reserve(Self::BLOCK_LENGTH)?;");
            code.line("self.started += 1;");
            code.line("Ok(self)");
            code.line("}");
            for field in &g.body.fields {
                self.setter(code, field, "self.w.buf_mut()", "self.entry");
            }
            self.tail_writers(code, &g.body, &name, "&mut *self.w");
            code.line("}");
            code.blank();
            self.group_encoders(code, &g.body, &name);
        }
    }
}

/// The decoder field that keeps group `g` (method `ident`): its entries when it is fixed-size,
/// else where it starts.
fn tail_field(g: &Group, ident: &str) -> String {
    suffixed(ident, if g.body.is_fixed() { "group" } else { "pos" })
}

/// Whether a fixed-size group walks its entries as arrays of `BLOCK_LENGTH` bytes when the
/// frame's block length is the schema's (arrays of zero bytes would not advance).
fn has_array_entries(body: &Body) -> bool {
    body.block_length > 0
}

/// The fields of a fixed-size group's iterator. Frames written with this schema's block length
/// (the usual case) walk one array per entry, sliced once from the span checked once when the
/// frame was validated: each step is a length test and constant-offset loads, as the reference
/// implementation's flyweights advance by a known block length. Frames of other versions walk
/// the span by the acting block length (see `rt::FixedEntries`).
fn fixed_group_fields(code: &mut Code, body: &Body) {
    if has_array_entries(body) {
        code.line("/// The entries not yet read, validated.");
        code.line(format!(
            "entries: rt::FixedEntries<'a, {}>,",
            body.block_length
        ));
    } else {
        code.line(
            "/// The entries not yet read, validated: `left` entries of `block_length` bytes.",
        );
        code.line("rest: &'a [u8],");
        code.line("block_length: usize,");
        code.line("left: usize,");
    }
    code.line("count: usize,");
    code.line("acting_version: u16,");
}

/// The end of a fixed-size group's `validate`: the group over `span`, `count` entries of
/// `block_length` bytes, and its end `end`.
fn fixed_group_new(code: &mut Code, body: &Body) {
    if has_array_entries(body) {
        code.line(format!(
            "let (entries, end, next) = rt::fixed_entries_at::<{}, A>(buf, start, count, block_length)?;",
            body.block_length
        ));
    } else {
        code.line("let (span, end) = rt::entries_at(buf, start, count, block_length)?;");
        code.line("let next = rt::prefix_at::<A>(buf, end)?;");
    }
    code.line("// The count fits: the span of `count` entries is in the frame, or it is at most");
    code.line("// `limits.group_count_max`, a `u32`.");
    code.line("let count = count as usize;");
    if has_array_entries(body) {
        code.line("Ok((Self { entries, count, acting_version }, end, next))");
    } else {
        code.line(
            "Ok((Self { rest: span, block_length, left: count, count, acting_version }, end, next))",
        );
    }
}

/// A fixed-size group's `empty`: what a frame older than the group reads.
fn fixed_group_empty(code: &mut Code, body: &Body) {
    code.line("fn empty(acting_version: u16) -> Self {");
    if has_array_entries(body) {
        code.line("Self { entries: rt::FixedEntries::EMPTY, count: 0, acting_version }");
    } else {
        code.line("Self { rest: &[], block_length: 0, left: 0, count: 0, acting_version }");
    }
    code.line("}");
}

/// A fixed-size group's `next` and `size_hint`.
fn fixed_group_next(code: &mut Code, body: &Body, name: &str) {
    code.line("fn next(&mut self) -> Option<Self::Item> {");
    if has_array_entries(body) {
        code.line("let acting_version = self.acting_version;");
        code.line(format!(
            "self.entries.next_with(|entry| {name}Entry::at(entry, acting_version))"
        ));
    } else {
        code.line("if self.left == 0 {");
        code.line("return None;");
        code.line("}");
        code.line("let (entry, rest) = self.rest.split_at_checked(self.block_length)?;");
        code.line("self.rest = rest;");
        code.line("self.left -= 1;");
        code.line(format!("{name}Entry::at(entry, self.acting_version)"));
    }
    code.line("}");
    code.blank();
    code.line("fn size_hint(&self) -> (usize, Option<usize>) {");
    if has_array_entries(body) {
        code.line("let left = self.entries.len();");
    } else {
        code.line("let left = self.left;");
    }
    code.line("(left, Some(left))");
    code.line("}");
}

fn since_text(since: u16) -> String {
    if since > 0 {
        format!(", since version {since}")
    } else {
        String::new()
    }
}
