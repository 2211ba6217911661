//! Stage 1: schema XML (with XInclude resolved) -> the syntax tree in [`crate::syntax`].
//!
//! This stage checks only what the XML itself says: element and attribute names, numbers that
//! must be numbers, required attributes. Name resolution, layout and every cross-element
//! check happen in [`crate::resolve`].

use std::path::{Path, PathBuf};

use crate::error::{Error, Location, Result};
use crate::names;
use crate::syntax::*;

/// The SBE 1.0 XML namespace. Older drafts used other URIs; elements are matched by local name,
/// so the namespace is informational.
pub const SBE_NAMESPACE: &str = "http://fixprotocol.io/2016/sbe";
const XINCLUDE_NAMESPACE: &str = "http://www.w3.org/2001/XInclude";

/// Reads `path` and the files it includes. Returns the syntax tree and every file read.
pub fn parse_file(path: &Path) -> Result<(SchemaSyntax, Vec<PathBuf>)> {
    let text = read(path)?;
    parse_str(path, &text)
}

/// Parses `text` as if read from `path` (includes resolve relative to `path`'s folder).
pub fn parse_str(path: &Path, text: &str) -> Result<(SchemaSyntax, Vec<PathBuf>)> {
    let doc = xml(path, text)?;
    let root = doc.root_element();
    let file = File { path, doc: &doc };
    if root.tag_name().name() != "messageSchema" {
        return Err(file.error(
            root,
            format!("<{}>", root.tag_name().name()),
            "the root element must be messageSchema",
        ));
    }
    let element = "messageSchema";
    let mut schema = SchemaSyntax {
        location: file.location(root),
        package: root.attribute("package").unwrap_or("").to_string(),
        id: file.number(root, element, "id")?.unwrap_or(0),
        version: file.number(root, element, "version")?.unwrap_or(0),
        byte_order: match root.attribute("byteOrder").unwrap_or("littleEndian") {
            "littleEndian" => ByteOrder::Little,
            "bigEndian" => ByteOrder::Big,
            other => {
                return Err(file.error(root, element, format!("unknown byteOrder '{other}'")));
            }
        },
        header_type: root
            .attribute("headerType")
            .unwrap_or("messageHeader")
            .to_string(),
        types: Vec::new(),
        messages: Vec::new(),
    };
    let mut inputs = vec![path.to_path_buf()];
    for child in root.children().filter(|n| n.is_element()) {
        match child.tag_name().name() {
            "types" => file.types(child, &mut schema.types)?,
            "include" if child.tag_name().namespace() == Some(XINCLUDE_NAMESPACE) => {
                include(&file, child, &mut schema.types, &mut inputs)?
            }
            "message" => schema.messages.push(file.message(child)?),
            other => {
                return Err(file.error(child, format!("<{other}>"), "unexpected element"));
            }
        }
    }
    Ok((schema, inputs))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn xml<'t>(path: &Path, text: &'t str) -> Result<roxmltree::Document<'t>> {
    roxmltree::Document::parse(text).map_err(|e| Error::Xml {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Resolves `<xi:include href="...">` relative to the including file. The included document's
/// root is a `<types>` element (or a messageSchema whose `<types>` are taken).
fn include(
    file: &File<'_, '_>,
    node: Node<'_, '_>,
    types: &mut Vec<TypeSyntax>,
    inputs: &mut Vec<PathBuf>,
) -> Result<()> {
    let href = file.required(node, "xi:include", "href")?;
    let target = file.path.parent().unwrap_or(Path::new(".")).join(href);
    if inputs.contains(&target) {
        return Err(file.error(node, "xi:include", format!("'{href}' is included twice")));
    }
    let text = read(&target).map_err(|e| match e {
        Error::Io { source, .. } => file.error(
            node,
            "xi:include",
            format!("cannot read '{}': {source}", target.display()),
        ),
        other => other,
    })?;
    let doc = xml(&target, &text)?;
    let included = File {
        path: &target,
        doc: &doc,
    };
    inputs.push(target.clone());
    let root = doc.root_element();
    match root.tag_name().name() {
        "types" => included.types(root, types),
        "messageSchema" => {
            for child in root.children().filter(|n| n.has_tag_name("types")) {
                included.types(child, types)?;
            }
            Ok(())
        }
        other => Err(included.error(
            root,
            format!("<{other}>"),
            "an included file must have <types> as its root",
        )),
    }
}

type Node<'a, 'input> = roxmltree::Node<'a, 'input>;

/// One XML document being read, for locations in errors.
struct File<'p, 'd> {
    path: &'p Path,
    doc: &'d roxmltree::Document<'d>,
}

impl File<'_, '_> {
    fn location(&self, node: Node<'_, '_>) -> Location {
        Location {
            file: self.path.to_path_buf(),
            line: self.doc.text_pos_at(node.range().start).row,
        }
    }

    fn error(
        &self,
        node: Node<'_, '_>,
        element: impl Into<String>,
        message: impl Into<String>,
    ) -> Error {
        Error::schema(&self.location(node), element, message)
    }

    fn required<'n>(&self, node: Node<'n, '_>, element: &str, attr: &str) -> Result<&'n str> {
        node.attribute(attr)
            .ok_or_else(|| self.error(node, element, format!("missing attribute '{attr}'")))
    }

    /// The `name` attribute, which must be a symbolic name (see [`names::is_symbolic`]).
    fn name(&self, node: Node<'_, '_>, element: &str) -> Result<String> {
        let name = self.required(node, element, "name")?;
        if !names::is_symbolic(name) {
            return Err(self.error(
                node,
                element,
                format!(
                    "name '{name}' is not a symbolic name (a letter or '_', then letters, digits and '_')"
                ),
            ));
        }
        Ok(name.to_string())
    }

    fn number<T: std::str::FromStr>(
        &self,
        node: Node<'_, '_>,
        element: &str,
        attr: &str,
    ) -> Result<Option<T>> {
        match node.attribute(attr) {
            None => Ok(None),
            Some(text) => text.trim().parse().map(Some).map_err(|_| {
                self.error(
                    node,
                    element,
                    format!("attribute {attr}='{text}' is not a valid number"),
                )
            }),
        }
    }

    fn types(&self, node: Node<'_, '_>, out: &mut Vec<TypeSyntax>) -> Result<()> {
        for child in node.children().filter(|n| n.is_element()) {
            out.push(self.type_definition(child)?);
        }
        Ok(())
    }

    fn type_definition(&self, node: Node<'_, '_>) -> Result<TypeSyntax> {
        let kind = node.tag_name().name();
        let name = self.name(node, &format!("<{kind}>"))?;
        let element = format!("{kind} '{name}'");
        let common = Common {
            location: self.location(node),
            offset: self.number(node, &element, "offset")?,
            since_version: self.number(node, &element, "sinceVersion")?.unwrap_or(0),
            description: node.attribute("description").map(str::to_string),
            name,
        };
        Ok(match kind {
            "type" => TypeSyntax::Encoded(EncodedSyntax {
                primitive: self.required(node, &element, "primitiveType")?.to_string(),
                length: self.number(node, &element, "length")?,
                presence: node.attribute("presence").map(str::to_string),
                null_value: node.attribute("nullValue").map(str::to_string),
                min_value: node.attribute("minValue").map(str::to_string),
                max_value: node.attribute("maxValue").map(str::to_string),
                character_encoding: node.attribute("characterEncoding").map(str::to_string),
                value_ref: node.attribute("valueRef").map(str::to_string),
                text: node.text().unwrap_or("").to_string(),
                common,
            }),
            "composite" => {
                let mut members = Vec::new();
                for child in node.children().filter(|n| n.is_element()) {
                    members.push(self.member(child)?);
                }
                TypeSyntax::Composite(CompositeSyntax { common, members })
            }
            "enum" => TypeSyntax::Enum(EnumSyntax {
                encoding_type: self.required(node, &element, "encodingType")?.to_string(),
                values: self.values(node, &element, "validValue")?,
                common,
            }),
            "set" => TypeSyntax::Set(SetSyntax {
                encoding_type: self.required(node, &element, "encodingType")?.to_string(),
                choices: self.values(node, &element, "choice")?,
                common,
            }),
            other => return Err(self.error(node, format!("<{other}>"), "unexpected element")),
        })
    }

    fn member(&self, node: Node<'_, '_>) -> Result<MemberSyntax> {
        if node.tag_name().name() != "ref" {
            return Ok(MemberSyntax::Inline(Box::new(self.type_definition(node)?)));
        }
        let name = self.name(node, "<ref>")?;
        let element = format!("ref '{name}'");
        Ok(MemberSyntax::Ref {
            location: self.location(node),
            offset: self.number(node, &element, "offset")?,
            type_name: self.required(node, &element, "type")?.to_string(),
            name,
        })
    }

    fn values(&self, node: Node<'_, '_>, element: &str, tag: &str) -> Result<Vec<ValueSyntax>> {
        let mut values = Vec::new();
        for child in node.children().filter(|n| n.is_element()) {
            if child.tag_name().name() != tag {
                return Err(self.error(child, element, format!("expected <{tag}>")));
            }
            let name = &self.name(child, &format!("{element} <{tag}>"))?;
            values.push(ValueSyntax {
                location: self.location(child),
                name: name.to_string(),
                literal: child.text().unwrap_or("").trim().to_string(),
                since_version: self
                    .number(child, &format!("{element} {tag} '{name}'"), "sinceVersion")?
                    .unwrap_or(0),
            });
        }
        Ok(values)
    }

    fn message(&self, node: Node<'_, '_>) -> Result<MessageSyntax> {
        let name = self.name(node, "<message>")?;
        let element = format!("message '{name}'");
        Ok(MessageSyntax {
            location: self.location(node),
            id: self
                .number(node, &element, "id")?
                .ok_or_else(|| self.error(node, &element, "missing attribute 'id'"))?,
            block_length: self.number(node, &element, "blockLength")?,
            since_version: self.number(node, &element, "sinceVersion")?.unwrap_or(0),
            body: self.body(node, &element)?,
            name,
        })
    }

    /// Fields, then groups, then var data: the order SBE requires.
    fn body(&self, node: Node<'_, '_>, parent: &str) -> Result<BodySyntax> {
        let mut body = BodySyntax::default();
        for child in node.children().filter(|n| n.is_element()) {
            let tag = child.tag_name().name();
            let name = self.name(child, &format!("{parent} <{tag}>"))?;
            let element = format!("{parent} {tag} '{name}'");
            let out_of_order = match tag {
                "field" => !body.groups.is_empty() || !body.data.is_empty(),
                "group" => !body.data.is_empty(),
                _ => false,
            };
            if out_of_order {
                return Err(self.error(
                    child,
                    &element,
                    "fields must precede groups, and groups must precede var data",
                ));
            }
            let location = self.location(child);
            let id = self
                .number(child, &element, "id")?
                .ok_or_else(|| self.error(child, &element, "missing attribute 'id'"))?;
            let since_version = self.number(child, &element, "sinceVersion")?.unwrap_or(0);
            match tag {
                "field" => body.fields.push(FieldSyntax {
                    location,
                    id,
                    since_version,
                    type_name: self.required(child, &element, "type")?.to_string(),
                    offset: self.number(child, &element, "offset")?,
                    presence: child.attribute("presence").map(str::to_string),
                    value_ref: child.attribute("valueRef").map(str::to_string),
                    exponent: exponent_hint(child),
                    name,
                }),
                "group" => body.groups.push(GroupSyntax {
                    location,
                    id,
                    since_version,
                    dimension_type: child
                        .attribute("dimensionType")
                        .unwrap_or("groupSizeEncoding")
                        .to_string(),
                    block_length: self.number(child, &element, "blockLength")?,
                    body: self.body(child, &element)?,
                    name,
                }),
                "data" => body.data.push(DataSyntax {
                    location,
                    id,
                    since_version,
                    type_name: self.required(child, &element, "type")?.to_string(),
                    name,
                }),
                other => {
                    return Err(self.error(
                        child,
                        format!("{parent} <{other}>"),
                        "unexpected element",
                    ));
                }
            }
        }
        Ok(body)
    }
}

/// A decimal hint: an attribute named `exponent` in a namespace other than SBE's (Binance writes
/// `mbx:exponent="priceExponent"`) names the root field holding this mantissa's base-10
/// exponent. It changes no layout; it lets generated JSON print exact decimals.
fn exponent_hint(node: Node<'_, '_>) -> Option<String> {
    node.attributes()
        .find(|a| a.name() == "exponent" && a.namespace().is_some_and(|ns| ns != SBE_NAMESPACE))
        .map(|a| a.value().to_string())
}
