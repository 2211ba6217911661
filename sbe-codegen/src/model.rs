//! The resolved schema: every name bound, every offset and size computed and checked. This is
//! what the emitter turns into code, and what tests compare when they ask whether two schema
//! files describe the same wire format.

pub use crate::syntax::ByteOrder;

/// An SBE primitive type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Primitive {
    /// A single byte of text (`char`).
    Char,
    /// `int8`
    I8,
    /// `int16`
    I16,
    /// `int32`
    I32,
    /// `int64`
    I64,
    /// `uint8`
    U8,
    /// `uint16`
    U16,
    /// `uint32`
    U32,
    /// `uint64`
    U64,
    /// `float`
    F32,
    /// `double`
    F64,
}

impl Primitive {
    /// The primitive named `name` in a schema.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "char" => Primitive::Char,
            "int8" => Primitive::I8,
            "int16" => Primitive::I16,
            "int32" => Primitive::I32,
            "int64" => Primitive::I64,
            "uint8" => Primitive::U8,
            "uint16" => Primitive::U16,
            "uint32" => Primitive::U32,
            "uint64" => Primitive::U64,
            "float" => Primitive::F32,
            "double" => Primitive::F64,
            _ => return None,
        })
    }

    /// The schema's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Primitive::Char => "char",
            Primitive::I8 => "int8",
            Primitive::I16 => "int16",
            Primitive::I32 => "int32",
            Primitive::I64 => "int64",
            Primitive::U8 => "uint8",
            Primitive::U16 => "uint16",
            Primitive::U32 => "uint32",
            Primitive::U64 => "uint64",
            Primitive::F32 => "float",
            Primitive::F64 => "double",
        }
    }

    /// Encoded size in bytes.
    pub fn size(self) -> usize {
        match self {
            Primitive::Char | Primitive::I8 | Primitive::U8 => 1,
            Primitive::I16 | Primitive::U16 => 2,
            Primitive::I32 | Primitive::U32 | Primitive::F32 => 4,
            Primitive::I64 | Primitive::U64 | Primitive::F64 => 8,
        }
    }

    /// The Rust type a decoder returns for it (`char` is a byte).
    pub fn rust(self) -> &'static str {
        match self {
            Primitive::Char | Primitive::U8 => "u8",
            Primitive::I8 => "i8",
            Primitive::I16 => "i16",
            Primitive::I32 => "i32",
            Primitive::I64 => "i64",
            Primitive::U16 => "u16",
            Primitive::U32 => "u32",
            Primitive::U64 => "u64",
            Primitive::F32 => "f32",
            Primitive::F64 => "f64",
        }
    }

    /// Whether it is an integer type (including `char`).
    pub fn is_integer(self) -> bool {
        !matches!(self, Primitive::F32 | Primitive::F64)
    }

    /// Whether it is an unsigned integer type (including `char`).
    pub fn is_unsigned(self) -> bool {
        matches!(
            self,
            Primitive::Char | Primitive::U8 | Primitive::U16 | Primitive::U32 | Primitive::U64
        )
    }

    /// The integer range, for integer types.
    pub fn range(self) -> Option<(i128, i128)> {
        Some(match self {
            Primitive::Char | Primitive::U8 => (0, u8::MAX.into()),
            Primitive::I8 => (i8::MIN.into(), i8::MAX.into()),
            Primitive::I16 => (i16::MIN.into(), i16::MAX.into()),
            Primitive::I32 => (i32::MIN.into(), i32::MAX.into()),
            Primitive::I64 => (i64::MIN.into(), i64::MAX.into()),
            Primitive::U16 => (0, u16::MAX.into()),
            Primitive::U32 => (0, u32::MAX.into()),
            Primitive::U64 => (0, u64::MAX.into()),
            Primitive::F32 | Primitive::F64 => return None,
        })
    }

    /// The SBE value range of an integer type (which leaves out its default null value) and
    /// that null value; `None` for `char` and floats.
    pub fn sbe_range(self) -> Option<(i128, i128, i128)> {
        let (min, max) = self.range()?;
        match self {
            Primitive::Char => None,
            _ if self.is_unsigned() => Some((min, max - 1, max)),
            _ => Some((min + 1, max, min)),
        }
    }

    /// The SBE default null value, as a Rust expression of [`Primitive::rust`] type.
    pub fn default_null(self) -> &'static str {
        match self {
            Primitive::Char => "0",
            Primitive::I8 => "i8::MIN",
            Primitive::I16 => "i16::MIN",
            Primitive::I32 => "i32::MIN",
            Primitive::I64 => "i64::MIN",
            Primitive::U8 => "u8::MAX",
            Primitive::U16 => "u16::MAX",
            Primitive::U32 => "u32::MAX",
            Primitive::U64 => "u64::MAX",
            Primitive::F32 => "f32::NAN",
            Primitive::F64 => "f64::NAN",
        }
    }
}

/// A whole schema.
#[derive(Clone, Debug)]
pub struct Schema {
    /// `package`: the module name the emitter suggests.
    pub package: String,
    /// Schema id, checked against every header.
    pub id: u16,
    /// Schema version, written by encoders.
    pub version: u16,
    /// Byte order of the whole schema.
    pub byte_order: ByteOrder,
    /// The message header layout.
    pub header: Header,
    /// Enums, sets and composites, in schema order.
    pub types: Vec<TypeDef>,
    /// Messages, in schema order.
    pub messages: Vec<Message>,
    /// What is valid but probably not meant, each naming file and line: a decimal hint that
    /// names no usable exponent (ignored), an enum value equal to its encoding's null value.
    pub warnings: Vec<String>,
}

/// A scalar member of a fixed composite: where it is and how it is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Offset from the composite's start.
    pub offset: usize,
    /// Encoding.
    pub primitive: Primitive,
}

/// The message header composite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Composite name.
    pub name: String,
    /// Encoded size.
    pub size: usize,
    /// `blockLength`.
    pub block_length: Slot,
    /// `templateId`.
    pub template_id: HeaderField,
    /// `schemaId`.
    pub schema_id: HeaderField,
    /// `version`.
    pub version: HeaderField,
}

/// A header member: on the wire, or a constant (`presence="constant"`) that is not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderField {
    /// Read from and written to the frame.
    Wire(Slot),
    /// Always this value; takes no bytes.
    Constant(u16),
}

/// A named enum, set or composite.
#[derive(Clone, Debug)]
pub enum TypeDef {
    /// An `<enum>`.
    Enum(EnumDef),
    /// A `<set>`.
    Set(SetDef),
    /// A `<composite>`.
    Composite(CompositeDef),
}

/// An `<enum>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnumDef {
    /// Schema name.
    pub name: String,
    /// Encoding primitive.
    pub encoding: Primitive,
    /// The null value, as a Rust expression.
    pub null: String,
    /// Names and raw values.
    pub values: Vec<(String, i128)>,
    /// Description from the schema.
    pub description: Option<String>,
}

/// A `<set>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetDef {
    /// Schema name.
    pub name: String,
    /// Encoding primitive (an unsigned integer).
    pub encoding: Primitive,
    /// Names and bit positions.
    pub choices: Vec<(String, u32)>,
    /// Description from the schema.
    pub description: Option<String>,
}

/// A `<composite>`.
#[derive(Clone, Debug, PartialEq)]
pub struct CompositeDef {
    /// Schema name.
    pub name: String,
    /// Encoded size.
    pub size: usize,
    /// Members, in order, with offsets relative to the composite.
    pub members: Vec<Field>,
    /// Description from the schema.
    pub description: Option<String>,
}

/// A field of a message or group, or a member of a composite.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    /// Schema name.
    pub name: String,
    /// The generated methods' name: `snake_case`, escaped where it would clash with a keyword
    /// or a generated method (`header` -> `header_`).
    pub ident: String,
    /// Field id (0 for composite members).
    pub id: u32,
    /// Offset in the block.
    pub offset: usize,
    /// Encoded size (0 for constants).
    pub size: usize,
    /// The version that introduced it.
    pub since_version: u16,
    /// How it is encoded.
    pub kind: FieldKind,
    /// The field holding this mantissa's exponent (decimal hint), if any.
    pub exponent: Option<Exponent>,
    /// Description from the schema.
    pub description: Option<String>,
}

/// A decimal hint resolved: where the exponent of a mantissa field is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exponent {
    /// The exponent field's schema name.
    pub name: String,
    /// Its generated getter.
    pub ident: String,
    /// The block holding it: 0 for the message root, `n` for the entry of the `n`th nested
    /// group on the way from the root to the mantissa.
    pub depth: usize,
    /// Its encoding (a signed or unsigned integer, read as `i8`).
    pub primitive: Primitive,
    /// Whether it is optional: when absent the mantissa is printed unscaled.
    pub optional: bool,
}

/// How a field is encoded.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldKind {
    /// One primitive (`length == 1`) or a fixed array of them.
    Primitive {
        /// Element encoding.
        primitive: Primitive,
        /// Element count; 1 for a scalar.
        length: usize,
        /// The null value (a Rust expression) when the field is optional.
        null: Option<String>,
    },
    /// Not on the wire.
    Constant(Constant),
    /// An enum value.
    Enum {
        /// Index into [`Schema::types`].
        def: usize,
        /// Whether the null value may appear.
        optional: bool,
    },
    /// A bit set.
    Set {
        /// Index into [`Schema::types`].
        def: usize,
    },
    /// A composite.
    Composite {
        /// Index into [`Schema::types`].
        def: usize,
    },
}

/// The value of a constant field.
#[derive(Clone, Debug, PartialEq)]
pub enum Constant {
    /// A number of the given primitive, as a Rust literal.
    Number(Primitive, String),
    /// Text (a `char` constant of any length).
    Text(Vec<u8>),
    /// A value of an enum: index into [`Schema::types`] and the value's name.
    EnumValue(usize, String),
}

/// A repeating group's dimension composite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dimension {
    /// Composite name.
    pub name: String,
    /// Encoded size.
    pub size: usize,
    /// `blockLength`.
    pub block_length: Slot,
    /// `numInGroup`.
    pub num_in_group: Slot,
    /// The largest count the encoding allows (its `maxValue`, or the type's maximum).
    pub count_max: u64,
}

/// The fields, groups and var data of a message or of a group entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Body {
    /// Fixed fields, in order.
    pub fields: Vec<Field>,
    /// Repeating groups, in order.
    pub groups: Vec<Group>,
    /// Var data, in order.
    pub data: Vec<Data>,
    /// The block length encoders write (at least the end of the last field).
    pub block_length: usize,
    /// The least block length every version carries: the end of the last field with
    /// `sinceVersion` 0. Decoders reject shorter blocks.
    pub base_length: usize,
}

/// A `<message>`.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// Schema name.
    pub name: String,
    /// Template id.
    pub id: u16,
    /// The version that introduced it.
    pub since_version: u16,
    /// Its contents.
    pub body: Body,
}

/// A `<group>`.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// Schema name.
    pub name: String,
    /// The generated method's name (see [`Field::ident`]).
    pub ident: String,
    /// Group id.
    pub id: u16,
    /// The version that introduced it.
    pub since_version: u16,
    /// Dimension encoding.
    pub dimension: Dimension,
    /// Entry contents.
    pub body: Body,
}

/// A `<data>` element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Data {
    /// Schema name.
    pub name: String,
    /// The generated method's name (see [`Field::ident`]).
    pub ident: String,
    /// Data id.
    pub id: u16,
    /// The version that introduced it.
    pub since_version: u16,
    /// The encoding composite's name.
    pub encoding: String,
    /// The length prefix.
    pub length: Slot,
    /// Offset of the bytes after the element start (the prefix size, usually).
    pub data_offset: usize,
    /// The longest value the encoding allows.
    pub length_max: u64,
    /// Whether it carries text (a `characterEncoding` is set), printed as a string.
    pub is_text: bool,
}

impl Body {
    /// Whether every entry has the same size (no nested groups, no var data).
    pub fn is_fixed(&self) -> bool {
        self.groups.is_empty() && self.data.is_empty()
    }
}
