//! The schema as written: names unresolved, offsets as given, every element with its location.
//! Produced by [`crate::parse`], consumed by [`crate::resolve`].

use crate::error::Location;

/// The wire byte order of every multi-byte value in a schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteOrder {
    /// Least significant byte first (the SBE default, and Binance's).
    Little,
    /// Most significant byte first.
    Big,
}

/// A `<messageSchema>`.
#[derive(Debug)]
pub struct SchemaSyntax {
    pub location: Location,
    pub package: String,
    pub id: u16,
    pub version: u16,
    pub byte_order: ByteOrder,
    pub header_type: String,
    pub types: Vec<TypeSyntax>,
    pub messages: Vec<MessageSyntax>,
}

/// What every type element carries.
#[derive(Debug)]
pub struct Common {
    pub location: Location,
    pub name: String,
    pub offset: Option<usize>,
    pub since_version: u16,
    pub description: Option<String>,
}

/// A `<type>`, `<composite>`, `<enum>` or `<set>`.
#[derive(Debug)]
pub enum TypeSyntax {
    Encoded(EncodedSyntax),
    Composite(CompositeSyntax),
    Enum(EnumSyntax),
    Set(SetSyntax),
}

impl TypeSyntax {
    pub fn common(&self) -> &Common {
        match self {
            TypeSyntax::Encoded(t) => &t.common,
            TypeSyntax::Composite(t) => &t.common,
            TypeSyntax::Enum(t) => &t.common,
            TypeSyntax::Set(t) => &t.common,
        }
    }
}

/// A `<type>`: a primitive, an array of primitives, or a constant.
#[derive(Debug)]
pub struct EncodedSyntax {
    pub common: Common,
    pub primitive: String,
    pub length: Option<usize>,
    pub presence: Option<String>,
    pub null_value: Option<String>,
    pub min_value: Option<String>,
    pub max_value: Option<String>,
    pub character_encoding: Option<String>,
    pub value_ref: Option<String>,
    /// The element's text: the value of a constant.
    pub text: String,
}

/// A `<composite>`.
#[derive(Debug)]
pub struct CompositeSyntax {
    pub common: Common,
    pub members: Vec<MemberSyntax>,
}

/// A member of a composite: a type defined in place, or a `<ref>` to a named type.
#[derive(Debug)]
pub enum MemberSyntax {
    Inline(Box<TypeSyntax>),
    Ref {
        location: Location,
        name: String,
        type_name: String,
        offset: Option<usize>,
    },
}

/// An `<enum>`.
#[derive(Debug)]
pub struct EnumSyntax {
    pub common: Common,
    pub encoding_type: String,
    pub values: Vec<ValueSyntax>,
}

/// A `<set>`.
#[derive(Debug)]
pub struct SetSyntax {
    pub common: Common,
    pub encoding_type: String,
    pub choices: Vec<ValueSyntax>,
}

/// A `<validValue>` or `<choice>`.
#[derive(Debug)]
pub struct ValueSyntax {
    pub location: Location,
    pub name: String,
    pub literal: String,
    pub since_version: u16,
}

/// A `<message>`.
#[derive(Debug)]
pub struct MessageSyntax {
    pub location: Location,
    pub name: String,
    pub id: u32,
    pub block_length: Option<usize>,
    pub since_version: u16,
    pub body: BodySyntax,
}

/// The fields, groups and var data of a message or group, in schema order.
#[derive(Debug, Default)]
pub struct BodySyntax {
    pub fields: Vec<FieldSyntax>,
    pub groups: Vec<GroupSyntax>,
    pub data: Vec<DataSyntax>,
}

/// A `<field>`.
#[derive(Debug)]
pub struct FieldSyntax {
    pub location: Location,
    pub name: String,
    pub id: u32,
    pub type_name: String,
    pub offset: Option<usize>,
    pub presence: Option<String>,
    pub value_ref: Option<String>,
    pub since_version: u16,
    pub exponent: Option<String>,
}

/// A `<group>`.
#[derive(Debug)]
pub struct GroupSyntax {
    pub location: Location,
    pub name: String,
    pub id: u32,
    pub dimension_type: String,
    pub block_length: Option<usize>,
    pub since_version: u16,
    pub body: BodySyntax,
}

/// A `<data>`.
#[derive(Debug)]
pub struct DataSyntax {
    pub location: Location,
    pub name: String,
    pub id: u32,
    pub type_name: String,
    pub since_version: u16,
}
