//! Stage 2: bind names, lay out blocks, and check the schema. Produces [`crate::model::Schema`].
//!
//! Everything a broken schema can get wrong is caught here and reported with the file, line and
//! element: unknown types, overlapping offsets, a `blockLength` below the fields it holds or
//! above what the header's or group dimension's `blockLength` can carry, duplicate names or
//! ids, bad group dimensions and var-data encodings, out-of-range values, `sinceVersion` beyond
//! the schema version, and recursive composites.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Location, Result};
use crate::model::*;
use crate::names;
use crate::syntax::*;

/// Method names the emitter defines on message decoders, encoders and group views; a field
/// with one of these names would clash.
const RESERVED: &[&str] = &[
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

/// Resolves a parsed schema.
pub fn resolve(schema: &SchemaSyntax) -> Result<Schema> {
    let mut resolver = Resolver::new(schema)?;
    for name in resolver.order.clone() {
        resolver.def(&name, &schema.location, "messageSchema")?;
    }
    // Top-level `<type>`s are checked on their own, so an error in one names the type and its
    // file and line rather than whichever field first uses it.
    for t in &schema.types {
        if let TypeSyntax::Encoded(e) = t {
            resolver.encoded_kind(e, None, None, &format!("type '{}'", e.common.name))?;
        }
    }
    check_type_names(schema, &resolver)?;
    let header = resolver.header()?;
    let mut messages: Vec<Message> = Vec::new();
    let mut ids = HashMap::new();
    let mut message_names = HashSet::new();
    for m in &schema.messages {
        let element = format!("message '{}'", m.name);
        let id = u16::try_from(m.id)
            .map_err(|_| Error::schema(&m.location, &element, "id does not fit 16 bits"))?;
        if let Some(other) = ids.insert(id, m.name.clone()) {
            return Err(Error::schema(
                &m.location,
                &element,
                format!("template id {id} is also used by message '{other}'"),
            ));
        }
        if !message_names.insert(names::pascal(&m.name)) {
            return Err(Error::schema(
                &m.location,
                &element,
                "duplicate message name",
            ));
        }
        resolver.check_version(m.since_version, &m.location, &element)?;
        let body = resolver.body(&m.body, m.block_length, &m.location, &element)?;
        check_block_length(
            body.block_length,
            header.block_length,
            "the header's blockLength",
            &m.location,
            &element,
        )?;
        check_exponents(&body, &body, &m.body, &element)?;
        messages.push(Message {
            name: m.name.clone(),
            id,
            since_version: m.since_version,
            body,
        });
    }
    let types = resolver
        .defs
        .into_iter()
        .map(|d| d.expect("every definition was resolved in the loop above"))
        .collect();
    Ok(Schema {
        package: schema.package.clone(),
        id: schema.id,
        version: schema.version,
        byte_order: schema.byte_order,
        header,
        types,
        messages,
    })
}

struct Resolver<'s> {
    schema: &'s SchemaSyntax,
    /// Every globally named type: top-level types and enums, sets and composites defined
    /// inside composites.
    globals: HashMap<&'s str, &'s TypeSyntax>,
    /// Enums, sets and composites in definition order; their index is their place in `defs`.
    order: Vec<String>,
    index: HashMap<String, usize>,
    defs: Vec<Option<TypeDef>>,
    in_progress: HashSet<String>,
}

impl<'s> Resolver<'s> {
    fn new(schema: &'s SchemaSyntax) -> Result<Self> {
        let mut resolver = Resolver {
            schema,
            globals: HashMap::new(),
            order: Vec::new(),
            index: HashMap::new(),
            defs: Vec::new(),
            in_progress: HashSet::new(),
        };
        let mut rust_names = HashMap::new();
        for t in &schema.types {
            resolver.register(t, &mut rust_names, true)?;
        }
        Ok(resolver)
    }

    fn register(
        &mut self,
        t: &'s TypeSyntax,
        rust_names: &mut HashMap<String, String>,
        top_level: bool,
    ) -> Result<()> {
        let common = t.common();
        let element = format!("type '{}'", common.name);
        if matches!(t, TypeSyntax::Encoded(_)) && !top_level {
            return Ok(());
        }
        if Primitive::from_name(&common.name).is_some() {
            return Err(Error::schema(
                &common.location,
                &element,
                "a type may not take the name of a primitive",
            ));
        }
        if self.globals.insert(&common.name, t).is_some() {
            return Err(Error::schema(
                &common.location,
                &element,
                "duplicate type name",
            ));
        }
        if let Some(other) = rust_names.insert(names::pascal(&common.name), common.name.clone()) {
            return Err(Error::schema(
                &common.location,
                &element,
                format!("name clashes with type '{other}' once converted to Rust"),
            ));
        }
        if let TypeSyntax::Composite(c) = t {
            for m in &c.members {
                if let MemberSyntax::Inline(inner) = m {
                    self.register(inner, rust_names, false)?;
                }
            }
        }
        if !matches!(t, TypeSyntax::Encoded(_)) {
            self.index.insert(common.name.clone(), self.defs.len());
            self.order.push(common.name.clone());
            self.defs.push(None);
        }
        Ok(())
    }

    fn check_version(&self, since: u16, location: &Location, element: &str) -> Result<()> {
        if since > self.schema.version {
            return Err(Error::schema(
                location,
                element,
                format!(
                    "sinceVersion {since} is above the schema version {}",
                    self.schema.version
                ),
            ));
        }
        Ok(())
    }

    /// Resolves the enum, set or composite called `name`, once, and returns its index.
    fn def(&mut self, name: &str, location: &Location, element: &str) -> Result<usize> {
        let Some(&index) = self.index.get(name) else {
            return Err(Error::schema(
                location,
                element,
                format!("unknown type '{name}'"),
            ));
        };
        if self.defs[index].is_some() {
            return Ok(index);
        }
        if !self.in_progress.insert(name.to_string()) {
            return Err(Error::schema(
                location,
                element,
                format!("type '{name}' contains itself"),
            ));
        }
        let def = match self.globals[name] {
            TypeSyntax::Enum(e) => TypeDef::Enum(self.enum_def(e)?),
            TypeSyntax::Set(s) => TypeDef::Set(self.set_def(s)?),
            TypeSyntax::Composite(c) => TypeDef::Composite(self.composite_def(c)?),
            TypeSyntax::Encoded(_) => unreachable!("encoded types are not indexed"),
        };
        self.in_progress.remove(name);
        self.defs[index] = Some(def);
        Ok(index)
    }

    fn composite(
        &mut self,
        name: &str,
        location: &Location,
        element: &str,
    ) -> Result<&CompositeDef> {
        let index = self.def(name, location, element)?;
        match &self.defs[index] {
            Some(TypeDef::Composite(c)) => Ok(c),
            _ => Err(Error::schema(
                location,
                element,
                format!("type '{name}' is not a composite"),
            )),
        }
    }

    /// The primitive and null value of an enum or set `encodingType`: a primitive name or an
    /// encoded type.
    fn encoding(
        &self,
        name: &str,
        location: &Location,
        element: &str,
    ) -> Result<(Primitive, String)> {
        if let Some(p) = Primitive::from_name(name) {
            return Ok((p, p.default_null().to_string()));
        }
        match self.globals.get(name) {
            Some(TypeSyntax::Encoded(t)) if t.length.unwrap_or(1) == 1 => {
                let p = primitive(t, element)?;
                let null = match &t.null_value {
                    Some(v) => literal(p, v, &t.common.location, element)?,
                    None => p.default_null().to_string(),
                };
                Ok((p, null))
            }
            _ => Err(Error::schema(
                location,
                element,
                format!("encodingType '{name}' is not a primitive or a single-value type"),
            )),
        }
    }

    fn enum_def(&self, e: &EnumSyntax) -> Result<EnumDef> {
        let element = format!("enum '{}'", e.common.name);
        let (encoding, null) = self.encoding(&e.encoding_type, &e.common.location, &element)?;
        if !encoding.is_integer() {
            return Err(Error::schema(
                &e.common.location,
                &element,
                "an enum needs an integer or char encoding",
            ));
        }
        let mut values: Vec<(String, i128)> = Vec::new();
        let mut variants = HashSet::new();
        for v in &e.values {
            let value_element = format!("{element} validValue '{}'", v.name);
            let raw = if encoding == Primitive::Char && v.literal.len() == 1 {
                i128::from(v.literal.as_bytes()[0])
            } else {
                integer(encoding, &v.literal, &v.location, &value_element)?
            };
            if !variants.insert(names::pascal(&v.name)) {
                return Err(Error::schema(
                    &v.location,
                    &value_element,
                    "duplicate value name",
                ));
            }
            if let Some((other, _)) = values.iter().find(|(_, r)| *r == raw) {
                return Err(Error::schema(
                    &v.location,
                    &value_element,
                    format!("value {raw} is also used by '{other}'"),
                ));
            }
            self.check_version(v.since_version, &v.location, &value_element)?;
            values.push((v.name.clone(), raw));
        }
        Ok(EnumDef {
            name: e.common.name.clone(),
            encoding,
            null,
            values,
            description: e.common.description.clone(),
        })
    }

    fn set_def(&self, s: &SetSyntax) -> Result<SetDef> {
        let element = format!("set '{}'", s.common.name);
        let (encoding, _) = self.encoding(&s.encoding_type, &s.common.location, &element)?;
        if !encoding.is_unsigned() {
            return Err(Error::schema(
                &s.common.location,
                &element,
                "a set needs an unsigned encoding",
            ));
        }
        let bits = encoding.size() as u32 * 8;
        let mut choices: Vec<(String, u32)> = Vec::new();
        for c in &s.choices {
            let choice_element = format!("{element} choice '{}'", c.name);
            let bit: u32 = c.literal.parse().map_err(|_| {
                Error::schema(
                    &c.location,
                    &choice_element,
                    format!("bit '{}' is not a number", c.literal),
                )
            })?;
            if bit >= bits {
                return Err(Error::schema(
                    &c.location,
                    &choice_element,
                    format!(
                        "bit {bit} does not fit {} (bits 0 to {})",
                        encoding.name(),
                        bits - 1
                    ),
                ));
            }
            if SET_RESERVED.contains(&names::snake(&c.name).as_str()) {
                return Err(Error::schema(
                    &c.location,
                    &choice_element,
                    format!(
                        "the name '{}' is reserved for a generated method",
                        names::snake(&c.name)
                    ),
                ));
            }
            if choices
                .iter()
                .any(|(n, b)| *b == bit || names::snake(n) == names::snake(&c.name))
            {
                return Err(Error::schema(
                    &c.location,
                    &choice_element,
                    "duplicate choice name or bit",
                ));
            }
            choices.push((c.name.clone(), bit));
        }
        Ok(SetDef {
            name: s.common.name.clone(),
            encoding,
            choices,
            description: s.common.description.clone(),
        })
    }

    fn composite_def(&mut self, c: &'s CompositeSyntax) -> Result<CompositeDef> {
        let element = format!("composite '{}'", c.common.name);
        let mut members = Vec::new();
        let mut offset = 0usize;
        let mut seen = HashSet::new();
        for m in &c.members {
            let (name, location, explicit, since, kind, size, description) = match m {
                MemberSyntax::Ref {
                    location,
                    name,
                    type_name,
                    offset,
                } => {
                    let member_element = format!("{element} ref '{name}'");
                    let (kind, size, since) =
                        self.type_kind(type_name, None, None, location, &member_element)?;
                    (name, location, *offset, since, kind, size, None)
                }
                MemberSyntax::Inline(t) => {
                    let common = t.common();
                    let member_element = format!("{element} member '{}'", common.name);
                    let (kind, size) = match t {
                        TypeSyntax::Encoded(e) => {
                            self.encoded_kind(e, None, None, &member_element)?
                        }
                        _ => {
                            let (kind, size, _) = self.type_kind(
                                &common.name,
                                None,
                                None,
                                &common.location,
                                &member_element,
                            )?;
                            (kind, size)
                        }
                    };
                    let since = common.since_version;
                    (
                        &common.name,
                        &common.location,
                        common.offset,
                        since,
                        kind,
                        size,
                        common.description.clone(),
                    )
                }
            };
            let member_element = format!("{element} member '{name}'");
            if COMPOSITE_RESERVED.contains(&names::snake(name).as_str()) {
                return Err(Error::schema(
                    location,
                    &member_element,
                    format!(
                        "the name '{}' is reserved for a generated method",
                        names::snake(name)
                    ),
                ));
            }
            if !seen.insert(names::snake(name)) {
                return Err(Error::schema(
                    location,
                    &member_element,
                    "duplicate member name",
                ));
            }
            let at = place(offset, explicit, &kind, location, &member_element)?;
            offset = at + size;
            members.push(Field {
                name: name.clone(),
                id: 0,
                offset: at,
                size,
                since_version: since,
                kind,
                exponent: None,
                description,
            });
        }
        Ok(CompositeDef {
            name: c.common.name.clone(),
            size: offset,
            members,
            description: c.common.description.clone(),
        })
    }

    /// The kind, size and `sinceVersion` of a field or ref of type `name`.
    fn type_kind(
        &mut self,
        name: &str,
        presence: Option<&str>,
        value_ref: Option<&str>,
        location: &Location,
        element: &str,
    ) -> Result<(FieldKind, usize, u16)> {
        if let Some(p) = Primitive::from_name(name) {
            let optional = presence == Some("optional");
            if presence == Some("constant") {
                let value = value_ref.ok_or_else(|| {
                    Error::schema(
                        location,
                        element,
                        "a constant of a primitive type needs a valueRef",
                    )
                })?;
                let (_, raw) = self.value_ref(value, location, element)?;
                return Ok((
                    FieldKind::Constant(Constant::Number(p, raw.to_string())),
                    0,
                    0,
                ));
            }
            let null = optional.then(|| p.default_null().to_string());
            return Ok((
                FieldKind::Primitive {
                    primitive: p,
                    length: 1,
                    null,
                },
                p.size(),
                0,
            ));
        }
        let Some(&t) = self.globals.get(name) else {
            return Err(Error::schema(
                location,
                element,
                format!("unknown type '{name}'"),
            ));
        };
        let since = t.common().since_version;
        if let TypeSyntax::Encoded(e) = t {
            let (kind, size) = self.encoded_kind(e, presence, value_ref, element)?;
            return Ok((kind, size, since));
        }
        let def = self.def(name, location, element)?;
        let (kind, size) = match &self.defs[def] {
            Some(TypeDef::Enum(e)) => {
                if presence == Some("constant") {
                    let value = value_ref.ok_or_else(|| {
                        Error::schema(location, element, "a constant enum field needs a valueRef")
                    })?;
                    let (enum_def, _) = self.value_ref(value, location, element)?;
                    if enum_def != def {
                        return Err(Error::schema(
                            location,
                            element,
                            format!("valueRef '{value}' is not a value of '{name}'"),
                        ));
                    }
                    let variant = value.split_once('.').map(|(_, v)| v).unwrap_or_default();
                    (
                        FieldKind::Constant(Constant::EnumValue(def, variant.to_string())),
                        0,
                    )
                } else {
                    let optional = presence == Some("optional");
                    (FieldKind::Enum { def, optional }, e.encoding.size())
                }
            }
            Some(TypeDef::Set(s)) => (FieldKind::Set { def }, s.encoding.size()),
            Some(TypeDef::Composite(c)) => (FieldKind::Composite { def }, c.size),
            None => unreachable!("def() resolved it"),
        };
        Ok((kind, size, since))
    }

    /// Resolves `Enum.Value` to the enum's index and the value's raw number.
    fn value_ref(
        &mut self,
        value: &str,
        location: &Location,
        element: &str,
    ) -> Result<(usize, i128)> {
        let bad = || {
            Error::schema(
                location,
                element,
                format!("valueRef '{value}' names no enum value"),
            )
        };
        let (enum_name, variant) = value.split_once('.').ok_or_else(bad)?;
        let def = self.def(enum_name, location, element).map_err(|_| bad())?;
        match &self.defs[def] {
            Some(TypeDef::Enum(e)) => e
                .values
                .iter()
                .find(|(n, _)| n == variant)
                .map(|(_, raw)| (def, *raw))
                .ok_or_else(bad),
            _ => Err(bad()),
        }
    }

    fn encoded_kind(
        &mut self,
        t: &EncodedSyntax,
        presence: Option<&str>,
        value_ref: Option<&str>,
        element: &str,
    ) -> Result<(FieldKind, usize)> {
        let location = &t.common.location;
        let p = primitive(t, element)?;
        let length = t.length.unwrap_or(1);
        let presence = presence.or(t.presence.as_deref()).unwrap_or("required");
        match presence {
            "constant" => {
                let constant = match value_ref.or(t.value_ref.as_deref()) {
                    Some(value) => {
                        let (_, raw) = self.value_ref(value, location, element)?;
                        Constant::Number(p, raw.to_string())
                    }
                    None if p == Primitive::Char => {
                        Constant::Text(t.text.trim().as_bytes().to_vec())
                    }
                    None => Constant::Number(p, literal(p, t.text.trim(), location, element)?),
                };
                Ok((FieldKind::Constant(constant), 0))
            }
            "required" | "optional" => {
                let null = match (presence, &t.null_value) {
                    ("optional", Some(v)) => Some(literal(p, v, location, element)?),
                    ("optional", None) => Some(p.default_null().to_string()),
                    _ => None,
                };
                Ok((
                    FieldKind::Primitive {
                        primitive: p,
                        length,
                        null,
                    },
                    p.size() * length,
                ))
            }
            other => Err(Error::schema(
                location,
                element,
                format!("unknown presence '{other}'"),
            )),
        }
    }

    fn body(
        &mut self,
        body: &'s BodySyntax,
        block_length: Option<usize>,
        location: &Location,
        element: &str,
    ) -> Result<Body> {
        let mut scope = Scope::default();
        let mut fields = Vec::new();
        let mut offset = 0usize;
        let mut base_length = 0usize;
        for f in &body.fields {
            let field_element = format!("{element} field '{}'", f.name);
            scope.claim(&f.name, f.id, &f.location, &field_element)?;
            let (kind, size, type_since) = self.type_kind(
                &f.type_name,
                f.presence.as_deref(),
                f.value_ref.as_deref(),
                &f.location,
                &field_element,
            )?;
            if let FieldKind::Enum { .. } = kind {
                scope.claim_method(
                    &format!("{}_raw", names::snake(&f.name)),
                    &f.location,
                    &field_element,
                )?;
            }
            let since_version = f.since_version.max(type_since);
            self.check_version(since_version, &f.location, &field_element)?;
            let at = place(offset, f.offset, &kind, &f.location, &field_element)?;
            offset = at + size;
            if since_version == 0 {
                base_length = base_length.max(offset);
            }
            fields.push(Field {
                name: f.name.clone(),
                id: f.id,
                offset: at,
                size,
                since_version,
                kind,
                exponent: f.exponent.clone(),
                description: None,
            });
        }
        let block_length = match block_length {
            Some(declared) if declared < offset => {
                return Err(Error::schema(
                    location,
                    element,
                    format!("blockLength {declared} is smaller than its fields ({offset} bytes)"),
                ));
            }
            Some(declared) => declared,
            None => offset,
        };
        let mut groups = Vec::new();
        for g in &body.groups {
            let group_element = format!("{element} group '{}'", g.name);
            scope.claim(&g.name, g.id, &g.location, &group_element)?;
            self.check_version(g.since_version, &g.location, &group_element)?;
            let id = small_id(g.id, &g.location, &group_element)?;
            let dimension = self.dimension(&g.dimension_type, &g.location, &group_element)?;
            let body = self.body(&g.body, g.block_length, &g.location, &group_element)?;
            check_block_length(
                body.block_length,
                dimension.block_length,
                &format!("the blockLength of '{}'", dimension.name),
                &g.location,
                &group_element,
            )?;
            groups.push(Group {
                name: g.name.clone(),
                id,
                since_version: g.since_version,
                dimension,
                body,
            });
        }
        let mut data = Vec::new();
        for d in &body.data {
            let data_element = format!("{element} data '{}'", d.name);
            scope.claim(&d.name, d.id, &d.location, &data_element)?;
            self.check_version(d.since_version, &d.location, &data_element)?;
            data.push(self.data(d, &data_element)?);
        }
        Ok(Body {
            fields,
            groups,
            data,
            block_length,
            base_length,
        })
    }

    /// A member of a fixed composite that must be a scalar unsigned integer.
    fn slot(
        &mut self,
        composite: &str,
        member: &str,
        location: &Location,
        element: &str,
    ) -> Result<Slot> {
        let c = self.composite(composite, location, element)?;
        match c.members.iter().find(|m| m.name == member) {
            Some(Field {
                offset,
                kind:
                    FieldKind::Primitive {
                        primitive,
                        length: 1,
                        ..
                    },
                ..
            }) if primitive.is_unsigned() => Ok(Slot {
                offset: *offset,
                primitive: *primitive,
            }),
            _ => Err(Error::schema(
                location,
                element,
                format!("composite '{composite}' needs an unsigned integer member '{member}'"),
            )),
        }
    }

    /// The `maxValue` of an inline member of a composite, if it declares one.
    fn max_value(&self, composite: &str, member: &str) -> Option<&'s str> {
        let Some(TypeSyntax::Composite(c)) = self.globals.get(composite) else {
            return None;
        };
        c.members.iter().find_map(|m| match m {
            MemberSyntax::Inline(TypeSyntax::Encoded(e)) if e.common.name == member => {
                e.max_value.as_deref()
            }
            _ => None,
        })
    }

    fn count_max(
        &self,
        composite: &str,
        member: &str,
        slot: Slot,
        location: &Location,
        element: &str,
    ) -> Result<u64> {
        let type_max = slot.primitive.range().map_or(0, |(_, max)| max);
        let max = match self.max_value(composite, member) {
            Some(text) => integer(slot.primitive, text, location, element)?,
            None => type_max,
        };
        Ok(u64::try_from(max).unwrap_or(u64::MAX))
    }

    fn dimension(&mut self, name: &str, location: &Location, element: &str) -> Result<Dimension> {
        let block_length = self.slot(name, "blockLength", location, element)?;
        let num_in_group = self.slot(name, "numInGroup", location, element)?;
        let size = self.composite(name, location, element)?.size;
        let count_max = self.count_max(name, "numInGroup", num_in_group, location, element)?;
        Ok(Dimension {
            name: name.to_string(),
            size,
            block_length,
            num_in_group,
            count_max,
        })
    }

    fn data(&mut self, d: &DataSyntax, element: &str) -> Result<Data> {
        let length = self.slot(&d.type_name, "length", &d.location, element)?;
        let c = self.composite(&d.type_name, &d.location, element)?;
        let bad = || {
            Error::schema(
                &d.location,
                element,
                format!(
                    "composite '{}' needs a 'varData' member of length 0",
                    d.type_name
                ),
            )
        };
        let var = c
            .members
            .iter()
            .find(|m| m.name == "varData")
            .ok_or_else(bad)?;
        match var.kind {
            FieldKind::Primitive {
                primitive: Primitive::U8 | Primitive::Char,
                length: 0,
                ..
            } => {}
            _ => return Err(bad()),
        }
        let data_offset = var.offset;
        let is_text = match self.globals.get(d.type_name.as_str()) {
            Some(TypeSyntax::Composite(c)) => c.members.iter().any(|m| match m {
                MemberSyntax::Inline(TypeSyntax::Encoded(e)) => {
                    e.common.name == "varData" && e.character_encoding.is_some()
                }
                _ => false,
            }),
            _ => false,
        };
        Ok(Data {
            name: d.name.clone(),
            id: small_id(d.id, &d.location, element)?,
            since_version: d.since_version,
            encoding: d.type_name.clone(),
            length,
            data_offset,
            length_max: self.count_max(&d.type_name, "length", length, &d.location, element)?,
            is_text,
        })
    }

    fn header(&mut self) -> Result<Header> {
        let name = self.schema.header_type.clone();
        let location = self.schema.location.clone();
        let element = format!("messageSchema headerType '{name}'");
        Ok(Header {
            block_length: self.slot(&name, "blockLength", &location, &element)?,
            template_id: self.slot(&name, "templateId", &location, &element)?,
            schema_id: self.slot(&name, "schemaId", &location, &element)?,
            version: self.slot(&name, "version", &location, &element)?,
            size: self.composite(&name, &location, &element)?.size,
            name,
        })
    }
}

/// Names and ids already used in one message, group or composite.
#[derive(Default)]
struct Scope {
    names: HashSet<String>,
    ids: HashSet<u32>,
}

impl Scope {
    fn claim(&mut self, name: &str, id: u32, location: &Location, element: &str) -> Result<()> {
        let rust = names::snake(name);
        if RESERVED.contains(&rust.as_str()) {
            return Err(Error::schema(
                location,
                element,
                format!("the name '{rust}' is reserved for a generated method"),
            ));
        }
        self.claim_method(&rust, location, element)?;
        if !self.ids.insert(id) {
            return Err(Error::schema(
                location,
                element,
                format!("duplicate id {id}"),
            ));
        }
        Ok(())
    }
}

impl Scope {
    /// Claims a generated method name that no other member of the scope may take.
    fn claim_method(&mut self, rust: &str, location: &Location, element: &str) -> Result<()> {
        if !self.names.insert(rust.to_string()) {
            return Err(Error::schema(
                location,
                element,
                format!("duplicate name '{rust}' in this block"),
            ));
        }
        Ok(())
    }
}

/// Method names generated on composite views and bit sets, which members and choices must
/// not take.
const COMPOSITE_RESERVED: &[&str] = &["new", "write_json"];
const SET_RESERVED: &[&str] = &["raw", "from_raw", "write_json"];

/// Rust type names every generated module defines.
const TYPE_RESERVED: &[&str] = &["Header", "Message"];

/// Every Rust type the emitter will define must be unique: enums and sets as named, composites
/// and messages as `...Decoder`/`...Encoder`, groups as `...Group`/`...Entry`/`...Encoder`
/// under their message's name.
fn check_type_names(schema: &SchemaSyntax, resolver: &Resolver<'_>) -> Result<()> {
    let mut taken: HashMap<String, String> = TYPE_RESERVED
        .iter()
        .map(|n| (n.to_string(), "the generated module".to_string()))
        .collect();
    let mut claim = |rust: String, location: &Location, element: &str| -> Result<()> {
        match taken.insert(rust.clone(), element.to_string()) {
            Some(other) => Err(Error::schema(
                location,
                element,
                format!("generates type '{rust}', as {other} does"),
            )),
            None => Ok(()),
        }
    };
    for name in &resolver.order {
        let common = resolver.globals[name.as_str()].common();
        let element = format!("type '{name}'");
        let rust = names::pascal(name);
        match resolver.globals[name.as_str()] {
            TypeSyntax::Composite(_) => {
                claim(format!("{rust}Decoder"), &common.location, &element)?;
                claim(format!("{rust}Encoder"), &common.location, &element)?;
            }
            _ => claim(rust, &common.location, &element)?,
        }
    }
    fn groups(
        prefix: &str,
        body: &BodySyntax,
        parent: &str,
        claim: &mut dyn FnMut(String, &Location, &str) -> Result<()>,
    ) -> Result<()> {
        for g in &body.groups {
            let element = format!("{parent} group '{}'", g.name);
            let rust = format!("{prefix}{}", names::pascal(&g.name));
            for suffix in ["Group", "Entry", "Encoder"] {
                claim(format!("{rust}{suffix}"), &g.location, &element)?;
            }
            groups(&rust, &g.body, &element, claim)?;
        }
        Ok(())
    }
    for m in &schema.messages {
        let element = format!("message '{}'", m.name);
        let rust = names::pascal(&m.name);
        claim(format!("{rust}Decoder"), &m.location, &element)?;
        claim(format!("{rust}Encoder"), &m.location, &element)?;
        groups(&rust, &m.body, &element, &mut claim)?;
    }
    Ok(())
}

/// Where a member goes: at its explicit offset (which must not overlap what precedes it) or
/// right after the previous one. Constants take no space and stay where they are.
fn place(
    offset: usize,
    explicit: Option<usize>,
    kind: &FieldKind,
    location: &Location,
    element: &str,
) -> Result<usize> {
    if matches!(kind, FieldKind::Constant(_)) {
        return Ok(offset);
    }
    match explicit {
        Some(at) if at < offset => Err(Error::schema(
            location,
            element,
            format!("offset {at} overlaps the previous member, which ends at {offset}"),
        )),
        Some(at) => Ok(at),
        None => Ok(offset),
    }
}

/// A block of `length` bytes must fit the `slot` (a header's or dimension's blockLength) that
/// carries its length on the wire.
fn check_block_length(
    length: usize,
    slot: Slot,
    slot_name: &str,
    location: &Location,
    element: &str,
) -> Result<()> {
    let max = slot.primitive.range().map_or(0, |(_, max)| max);
    let fits = i128::try_from(length).is_ok_and(|length| length <= max);
    if !fits {
        return Err(Error::schema(
            location,
            element,
            format!(
                "block length {length} does not fit {slot_name} ({})",
                slot.primitive.name()
            ),
        ));
    }
    Ok(())
}

fn primitive(t: &EncodedSyntax, element: &str) -> Result<Primitive> {
    Primitive::from_name(&t.primitive).ok_or_else(|| {
        Error::schema(
            &t.common.location,
            element,
            format!("unknown primitiveType '{}'", t.primitive),
        )
    })
}

fn small_id(id: u32, location: &Location, element: &str) -> Result<u16> {
    u16::try_from(id).map_err(|_| Error::schema(location, element, "id does not fit 16 bits"))
}

fn integer(p: Primitive, text: &str, location: &Location, element: &str) -> Result<i128> {
    let value: i128 = text
        .trim()
        .parse()
        .map_err(|_| Error::schema(location, element, format!("'{text}' is not an integer")))?;
    let (min, max) = p.range().unwrap_or((i128::MIN, i128::MAX));
    if value < min || value > max {
        return Err(Error::schema(
            location,
            element,
            format!("{value} does not fit {}", p.name()),
        ));
    }
    Ok(value)
}

/// A value of primitive `p` written in the schema, as a Rust expression of `p.rust()` type.
fn literal(p: Primitive, text: &str, location: &Location, element: &str) -> Result<String> {
    let text = text.trim();
    if p.is_integer() {
        if p == Primitive::Char && text.len() == 1 && !text.as_bytes()[0].is_ascii_digit() {
            return Ok(text.as_bytes()[0].to_string());
        }
        return integer(p, text, location, element).map(|v| v.to_string());
    }
    let value: f64 = text
        .parse()
        .map_err(|_| Error::schema(location, element, format!("'{text}' is not a number")))?;
    if value.is_nan() {
        return Ok(p.default_null().to_string());
    }
    Ok(format!("{value:?}_{}", p.rust()))
}

/// Every decimal hint must name a required integer field of the message's root block.
fn check_exponents(root: &Body, body: &Body, syntax: &BodySyntax, element: &str) -> Result<()> {
    for (field, f) in body.fields.iter().zip(&syntax.fields) {
        let Some(exponent) = &field.exponent else {
            continue;
        };
        let ok = root.fields.iter().any(|r| {
            r.name == *exponent
                && r.since_version == 0
                && matches!(r.kind, FieldKind::Primitive { primitive, length: 1, null: None } if primitive.is_integer())
        }) && matches!(field.kind, FieldKind::Primitive { primitive, length: 1, .. } if primitive.is_integer());
        if !ok {
            return Err(Error::schema(
                &f.location,
                format!("{element} field '{}'", f.name),
                format!(
                    "exponent '{exponent}' must name a required integer field of the message root, on an integer field"
                ),
            ));
        }
    }
    for (group, g) in body.groups.iter().zip(&syntax.groups) {
        check_exponents(
            root,
            &group.body,
            &g.body,
            &format!("{element} group '{}'", g.name),
        )?;
    }
    Ok(())
}
