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
        let mut body = resolver.body(&m.body, m.block_length, &m.location, &element)?;
        check_block_length(
            body.block_length,
            header.block_length,
            "the header's blockLength",
            &m.location,
            &element,
        )?;
        bind_exponents(
            &mut body,
            &m.body,
            &mut Vec::new(),
            &element,
            &mut resolver.warnings,
        );
        messages.push(Message {
            name: m.name.clone(),
            id,
            since_version: m.since_version,
            body,
        });
    }
    let warnings = std::mem::take(&mut resolver.warnings);
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
        warnings,
    })
}

struct Resolver<'s> {
    schema: &'s SchemaSyntax,
    /// Every globally named type: top-level types and enums, sets and composites defined
    /// inside composites.
    globals: HashMap<String, &'s TypeSyntax>,
    /// Enums, sets and composites in definition order; their index is their place in `defs`.
    order: Vec<String>,
    index: HashMap<String, usize>,
    defs: Vec<Option<TypeDef>>,
    in_progress: HashSet<String>,
    /// Nested type names used more than once in the schema: such a nested type is known by
    /// `composite.name`, scoped to its composite, and its Rust type is named after both.
    scoped: HashSet<&'s str>,
    warnings: Vec<String>,
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
            scoped: HashSet::new(),
            warnings: Vec::new(),
        };
        let mut counts: HashMap<&str, usize> = HashMap::new();
        count_names(&schema.types, &mut counts);
        resolver.scoped = nested_names(&schema.types)
            .into_iter()
            .filter(|n| counts.get(n).copied().unwrap_or(0) > 1)
            .collect();
        let mut rust_names = HashMap::new();
        for t in &schema.types {
            resolver.register(t, None, &mut rust_names)?;
        }
        Ok(resolver)
    }

    /// The name a type is known by: its own, or `composite.name` when it is a nested type
    /// whose name is used more than once.
    fn key(&self, t: &'s TypeSyntax, outer: Option<&str>) -> String {
        let name = &t.common().name;
        match outer {
            Some(outer) if self.scoped.contains(name.as_str()) => format!("{outer}.{name}"),
            _ => name.clone(),
        }
    }

    fn register(
        &mut self,
        t: &'s TypeSyntax,
        outer: Option<&str>,
        rust_names: &mut HashMap<String, String>,
    ) -> Result<()> {
        let common = t.common();
        let element = format!("type '{}'", common.name);
        if matches!(t, TypeSyntax::Encoded(_)) && outer.is_some() {
            return Ok(());
        }
        let key = self.key(t, outer);
        if Primitive::from_name(&common.name).is_some() {
            return Err(Error::schema(
                &common.location,
                &element,
                "a type may not take the name of a primitive",
            ));
        }
        if self.globals.insert(key.clone(), t).is_some() {
            return Err(Error::schema(
                &common.location,
                &element,
                "duplicate type name",
            ));
        }
        if let Some(other) = rust_names.insert(names::pascal(&key), key.clone()) {
            return Err(Error::schema(
                &common.location,
                &element,
                format!("name clashes with type '{other}' once converted to Rust"),
            ));
        }
        if let TypeSyntax::Composite(c) = t {
            for m in &c.members {
                if let MemberSyntax::Inline(inner) = m {
                    self.register(inner, Some(&key), rust_names)?;
                }
            }
        }
        if !matches!(t, TypeSyntax::Encoded(_)) {
            self.index.insert(key.clone(), self.defs.len());
            self.order.push(key);
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
            TypeSyntax::Enum(e) => TypeDef::Enum(self.enum_def(e, name)?),
            TypeSyntax::Set(s) => TypeDef::Set(self.set_def(s, name)?),
            TypeSyntax::Composite(c) => TypeDef::Composite(self.composite_def(c, name)?),
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

    /// The least and greatest value and the null value of a (non-char) enum encoding: its
    /// type's `minValue`, `maxValue` and `nullValue`, or the SBE defaults of its primitive.
    fn enum_range(
        &self,
        encoding: Primitive,
        e: &EnumSyntax,
        element: &str,
    ) -> Result<Option<(i128, i128, i128)>> {
        let Some((mut min, mut max, mut null)) = encoding.sbe_range() else {
            return Ok(None);
        };
        if let Some(TypeSyntax::Encoded(t)) = self.globals.get(e.encoding_type.as_str()) {
            let location = &t.common.location;
            if let Some(v) = &t.min_value {
                min = integer(encoding, v, location, element)?;
            }
            if let Some(v) = &t.max_value {
                max = integer(encoding, v, location, element)?;
            }
            if let Some(v) = &t.null_value {
                null = integer(encoding, v, location, element)?;
            }
        }
        Ok(Some((min, max, null)))
    }

    fn enum_def(&self, e: &EnumSyntax, key: &str) -> Result<EnumDef> {
        let element = format!("enum '{}'", e.common.name);
        let (encoding, null) = self.encoding(&e.encoding_type, &e.common.location, &element)?;
        if !encoding.is_integer() {
            return Err(Error::schema(
                &e.common.location,
                &element,
                "an enum needs an integer or char encoding",
            ));
        }
        let range = self.enum_range(encoding, e, &element)?;
        let mut values: Vec<(String, i128)> = Vec::new();
        let mut variants = HashSet::new();
        for v in &e.values {
            let value_element = format!("{element} validValue '{}'", v.name);
            let raw = if encoding == Primitive::Char && v.literal.len() == 1 {
                i128::from(v.literal.as_bytes()[0])
            } else {
                integer(encoding, &v.literal, &v.location, &value_element)?
            };
            if let Some((min, max, null)) = range {
                let problem = if raw == null {
                    Some(format!(
                        "value {raw} is the encoding's null value (an absent optional enum)"
                    ))
                } else if raw < min || raw > max {
                    Some(format!(
                        "value {raw} is outside the encoding's range {min} to {max}"
                    ))
                } else {
                    None
                };
                if let Some(problem) = problem {
                    return Err(Error::schema(&v.location, &value_element, problem));
                }
            }
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
            name: key.to_string(),
            encoding,
            null,
            values,
            description: e.common.description.clone(),
        })
    }

    fn set_def(&self, s: &SetSyntax, key: &str) -> Result<SetDef> {
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
            let method = |name: &str| names::method(name, names::SET_RESERVED);
            if choices
                .iter()
                .any(|(n, b)| *b == bit || method(n) == method(&c.name))
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
            name: key.to_string(),
            encoding,
            choices,
            description: s.common.description.clone(),
        })
    }

    /// The kind and size of a type defined inside composite `outer` (its key).
    fn inline_member(
        &mut self,
        t: &'s TypeSyntax,
        outer: &str,
        element: &str,
    ) -> Result<(FieldKind, usize)> {
        let common = t.common();
        match t {
            TypeSyntax::Encoded(e) => {
                let (mut kind, mut size) = self.encoded_kind(e, None, None, element)?;
                // SBE's var-data convention: `varData` is the variable-length part, whatever
                // length it declares (the reference implementation does the same).
                if common.name == "varData"
                    && let FieldKind::Primitive { length, .. } = &mut kind
                {
                    *length = 0;
                    size = 0;
                }
                Ok((kind, size))
            }
            _ => {
                let key = self.key(t, Some(outer));
                let (kind, size, _) =
                    self.type_kind(&key, None, None, &common.location, element)?;
                Ok((kind, size))
            }
        }
    }

    fn composite_def(&mut self, c: &'s CompositeSyntax, key: &str) -> Result<CompositeDef> {
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
                    let (kind, size) = self.inline_member(t, key, &member_element)?;
                    (
                        &common.name,
                        &common.location,
                        common.offset,
                        common.since_version,
                        kind,
                        size,
                        common.description.clone(),
                    )
                }
            };
            let member_element = format!("{element} member '{name}'");
            let ident = names::method(name, names::COMPOSITE_RESERVED);
            if !seen.insert(ident.clone()) {
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
                ident,
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
            name: key.to_string(),
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
            let ident = scope.claim(&f.name, f.id, &f.location, &field_element)?;
            let (kind, size, type_since) = self.type_kind(
                &f.type_name,
                f.presence.as_deref(),
                f.value_ref.as_deref(),
                &f.location,
                &field_element,
            )?;
            if let FieldKind::Enum { .. } = kind {
                scope.claim_method(&names::suffixed(&ident, "raw"), &f.location, &field_element)?;
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
                ident,
                id: f.id,
                offset: at,
                size,
                since_version,
                kind,
                exponent: None,
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
            let ident = scope.claim(&g.name, g.id, &g.location, &group_element)?;
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
                ident,
                id,
                since_version: g.since_version,
                dimension,
                body,
            });
        }
        let mut data = Vec::new();
        for d in &body.data {
            let data_element = format!("{element} data '{}'", d.name);
            let ident = scope.claim(&d.name, d.id, &d.location, &data_element)?;
            self.check_version(d.since_version, &d.location, &data_element)?;
            data.push(self.data(d, ident, &data_element)?);
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

    /// A header member that is on the wire (a [`Self::slot`]) or a constant of 16 bits.
    fn header_field(
        &mut self,
        composite: &str,
        member: &str,
        location: &Location,
        element: &str,
    ) -> Result<HeaderField> {
        let c = self.composite(composite, location, element)?;
        let constant = c.members.iter().find_map(|m| match &m.kind {
            FieldKind::Constant(Constant::Number(p, value)) if m.name == member => {
                Some((*p, value.clone()))
            }
            _ => None,
        });
        match constant {
            None => self
                .slot(composite, member, location, element)
                .map(HeaderField::Wire),
            Some((p, value)) => match value.parse::<u16>() {
                Ok(value) if p.is_unsigned() => Ok(HeaderField::Constant(value)),
                _ => Err(Error::schema(
                    location,
                    element,
                    format!("constant header member '{member}' must be an unsigned 16-bit value"),
                )),
            },
        }
    }

    /// The `maxValue` of an inline member of a composite, if it declares one.
    fn max_value(&self, composite: &str, member: &str) -> Option<&'s str> {
        let Some(TypeSyntax::Composite(c)) = self.globals.get(composite) else {
            return None;
        };
        c.members.iter().find_map(|m| match m {
            MemberSyntax::Inline(t) => match &**t {
                TypeSyntax::Encoded(e) if e.common.name == member => e.max_value.as_deref(),
                _ => None,
            },
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
        let declared = self.max_value(composite, member);
        let max = match declared {
            Some(text) => integer(slot.primitive, text, location, element)?,
            None => type_max,
        };
        // As the reference implementation requires: SBE decoders in other languages hold
        // counts and lengths in a signed 32-bit integer.
        let int_max = i128::from(i32::MAX);
        if slot.primitive == Primitive::U32 && max > int_max {
            let why = match declared {
                Some(_) => format!("maxValue {max} is above {int_max}"),
                None => "needs a maxValue".to_string(),
            };
            return Err(Error::schema(
                location,
                element,
                format!(
                    "uint32 '{member}' of composite '{composite}' {why} (at most {int_max}: decoders in other languages hold it in a signed 32-bit integer)"
                ),
            ));
        }
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

    fn data(&mut self, d: &DataSyntax, ident: String, element: &str) -> Result<Data> {
        let length = self.slot(&d.type_name, "length", &d.location, element)?;
        let c = self.composite(&d.type_name, &d.location, element)?;
        let bad = || {
            Error::schema(
                &d.location,
                element,
                format!(
                    "composite '{}' needs a 'varData' member of uint8 or char",
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
                MemberSyntax::Inline(t) => matches!(&**t, TypeSyntax::Encoded(e)
                    if e.common.name == "varData" && e.character_encoding.is_some()),
                _ => false,
            }),
            _ => false,
        };
        Ok(Data {
            name: d.name.clone(),
            ident,
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
            template_id: self.header_field(&name, "templateId", &location, &element)?,
            schema_id: self.header_field(&name, "schemaId", &location, &element)?,
            version: self.header_field(&name, "version", &location, &element)?,
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
    /// Claims the name and id of a field, group or var data element; returns its method name.
    fn claim(&mut self, name: &str, id: u32, location: &Location, element: &str) -> Result<String> {
        let rust = names::method(name, names::BODY_RESERVED);
        self.claim_method(&rust, location, element)?;
        if !self.ids.insert(id) {
            return Err(Error::schema(
                location,
                element,
                format!("duplicate id {id}"),
            ));
        }
        Ok(rust)
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

/// Binds every decimal hint (`mbx:exponent`) to its exponent field: in the mantissa's own
/// block or an enclosing one, nearest first (`scopes` holds the enclosing blocks' fields, the
/// message root first). The hint changes no layout, so it never makes a valid schema unusable:
/// one that names no required integer field there, or sits on a field that is not an integer
/// mantissa (a scalar, or a 16-byte array holding a 128-bit one), is ignored with a warning.
fn bind_exponents(
    body: &mut Body,
    syntax: &BodySyntax,
    scopes: &mut Vec<Vec<Field>>,
    element: &str,
    warnings: &mut Vec<String>,
) {
    scopes.push(body.fields.clone());
    for (field, f) in body.fields.iter_mut().zip(&syntax.fields) {
        let Some(name) = &f.exponent else {
            continue;
        };
        let exponent = scopes.iter().enumerate().rev().find_map(|(depth, fields)| {
            let r = fields.iter().find(|r| r.name == *name)?;
            match r.kind {
                FieldKind::Primitive {
                    primitive,
                    length: 1,
                    ref null,
                } if primitive.is_integer() && r.since_version == 0 => Some(Exponent {
                    name: r.name.clone(),
                    ident: r.ident.clone(),
                    depth,
                    primitive,
                    optional: null.is_some(),
                }),
                _ => None,
            }
        });
        let why = match (&exponent, is_mantissa(&field.kind)) {
            (Some(_), true) => {
                field.exponent = exponent;
                continue;
            }
            (_, false) => "the field is not an integer or 128-bit mantissa",
            (None, true) => "it names no integer field of this block or an enclosing one",
        };
        warnings.push(format!(
            "{}: {element} field '{}': exponent '{name}' ignored: {why}",
            f.location, f.name
        ));
    }
    for (group, g) in body.groups.iter_mut().zip(&syntax.groups) {
        let group_element = format!("{element} group '{}'", g.name);
        bind_exponents(&mut group.body, &g.body, scopes, &group_element, warnings);
    }
    scopes.pop();
}

/// Whether a field can carry a decimal hint: an integer, or 16 bytes holding a 128-bit one.
fn is_mantissa(kind: &FieldKind) -> bool {
    match kind {
        FieldKind::Primitive {
            primitive,
            length: 1,
            ..
        } => primitive.is_integer() && *primitive != Primitive::Char,
        FieldKind::Primitive {
            primitive: Primitive::U8 | Primitive::I8,
            length: 16,
            ..
        } => true,
        _ => false,
    }
}

/// Counts every enum, set and composite name, top-level and nested.
fn count_names<'s>(types: &'s [TypeSyntax], counts: &mut HashMap<&'s str, usize>) {
    for t in types {
        *counts.entry(t.common().name.as_str()).or_default() += 1;
        if let TypeSyntax::Composite(c) = t {
            count_nested(c, counts);
        }
    }
}

fn count_nested<'s>(c: &'s CompositeSyntax, counts: &mut HashMap<&'s str, usize>) {
    for m in &c.members {
        if let MemberSyntax::Inline(inner) = m
            && !matches!(**inner, TypeSyntax::Encoded(_))
        {
            *counts.entry(inner.common().name.as_str()).or_default() += 1;
            if let TypeSyntax::Composite(c) = &**inner {
                count_nested(c, counts);
            }
        }
    }
}

/// The names of enums, sets and composites defined inside composites.
fn nested_names(types: &[TypeSyntax]) -> Vec<&str> {
    let mut counts = HashMap::new();
    for t in types {
        if let TypeSyntax::Composite(c) = t {
            count_nested(c, &mut counts);
        }
    }
    counts.into_keys().collect()
}
