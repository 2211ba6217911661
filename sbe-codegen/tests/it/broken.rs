//! Broken schemas: each must fail with an error that names the file, the line and the element
//! at fault, and says what is wrong. Plus XInclude, which resolves relative to the including
//! file.

use std::path::{Path, PathBuf};

/// The file every in-memory schema claims to come from; errors must name it.
const FILE: &str = "fixtures/broken.xml";

/// A valid schema (version 1) with the standard header, group dimension and var-data
/// composites, plus `types` and `messages` spliced in.
fn schema(types: &str, messages: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<sbe:messageSchema xmlns:sbe="http://fixprotocol.io/2016/sbe" package="broken" id="9" version="1">
    <types>
        <composite name="messageHeader">
            <type name="blockLength" primitiveType="uint16"/>
            <type name="templateId" primitiveType="uint16"/>
            <type name="schemaId" primitiveType="uint16"/>
            <type name="version" primitiveType="uint16"/>
        </composite>
        <composite name="groupSizeEncoding">
            <type name="blockLength" primitiveType="uint16"/>
            <type name="numInGroup" primitiveType="uint16"/>
        </composite>
        <composite name="varString8">
            <type name="length" primitiveType="uint8"/>
            <type name="varData" primitiveType="uint8" length="0" characterEncoding="UTF-8"/>
        </composite>
{types}
    </types>
{messages}
</sbe:messageSchema>
"#
    )
}

/// The 1-based line of the one place `needle` occurs in `xml`.
fn line_of(xml: &str, needle: &str) -> usize {
    let lines: Vec<usize> = xml
        .lines()
        .enumerate()
        .filter(|(_, line)| line.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "'{needle}' must occur once, not on lines {lines:?}"
    );
    lines[0]
}

/// The error `xml` fails with, displayed.
fn error(path: impl AsRef<Path>, xml: &str) -> String {
    match sbe_codegen::generate_str(path, xml) {
        Ok(_) => panic!("the schema was accepted:\n{xml}"),
        Err(e) => e.to_string(),
    }
}

/// Asserts that `xml` fails at the line holding `needle`, naming `element`, with `message`.
fn assert_fails(xml: &str, needle: &str, element: &str, message: &str) {
    let line = line_of(xml, needle);
    assert_eq!(
        error(FILE, xml),
        format!("{FILE}:{line}: {element}: {message}")
    );
}

/// The sanity check for the template: with nothing spliced in, it is valid.
#[test]
fn template_is_valid() {
    let xml = schema(
        "",
        r#"<sbe:message name="M" id="1"><field name="f" id="1" type="uint8"/></sbe:message>"#,
    );
    if let Err(e) = sbe_codegen::generate_str(FILE, &xml) {
        panic!("the template schema is rejected: {e}");
    }
}

#[test]
fn unknown_field_type() {
    let xml = schema(
        "",
        r#"    <sbe:message name="M" id="1">
        <field name="f" id="1" type="Nope"/>
    </sbe:message>"#,
    );
    assert_fails(
        &xml,
        r#"name="f""#,
        "message 'M' field 'f'",
        "unknown type 'Nope'",
    );
}

#[test]
fn unknown_primitive_type() {
    let xml = schema(
        r#"        <type name="Wide" primitiveType="int128"/>"#,
        r#"    <sbe:message name="M" id="1">
        <field name="f" id="1" type="Wide"/>
    </sbe:message>"#,
    );
    assert_fails(
        &xml,
        r#"name="Wide""#,
        "type 'Wide'",
        "unknown primitiveType 'int128'",
    );
}

/// A `<type>` no field uses is checked all the same.
#[test]
fn unknown_primitive_type_in_unused_type() {
    let xml = schema(r#"        <type name="Wide" primitiveType="int128"/>"#, "");
    assert_fails(
        &xml,
        r#"name="Wide""#,
        "type 'Wide'",
        "unknown primitiveType 'int128'",
    );
}

#[test]
fn unknown_primitive_type_in_composite() {
    let xml = schema(
        r#"        <composite name="Pair">
            <type name="a" primitiveType="uint8"/>
            <type name="b" primitiveType="unit8"/>
        </composite>"#,
        "",
    );
    assert_fails(
        &xml,
        r#"name="b""#,
        "composite 'Pair' member 'b'",
        "unknown primitiveType 'unit8'",
    );
}

#[test]
fn overlapping_explicit_offsets() {
    let xml = schema(
        "",
        r#"    <sbe:message name="M" id="1">
        <field name="a" id="1" type="uint32" offset="0"/>
        <field name="b" id="2" type="uint32" offset="2"/>
    </sbe:message>"#,
    );
    assert_fails(
        &xml,
        r#"name="b""#,
        "message 'M' field 'b'",
        "offset 2 overlaps the previous member, which ends at 4",
    );
}

#[test]
fn overlapping_explicit_offsets_in_composite() {
    let xml = schema(
        r#"        <composite name="Pair">
            <type name="a" primitiveType="uint16" offset="0"/>
            <type name="b" primitiveType="uint16" offset="1"/>
        </composite>"#,
        "",
    );
    assert_fails(
        &xml,
        r#"name="b""#,
        "composite 'Pair' member 'b'",
        "offset 1 overlaps the previous member, which ends at 2",
    );
}

#[test]
fn message_block_length_smaller_than_fields() {
    let xml = schema(
        "",
        r#"    <sbe:message name="M" id="1" blockLength="6">
        <field name="a" id="1" type="uint32"/>
        <field name="b" id="2" type="uint32"/>
    </sbe:message>"#,
    );
    assert_fails(
        &xml,
        r#"name="M""#,
        "message 'M'",
        "blockLength 6 is smaller than its fields (8 bytes)",
    );
}

#[test]
fn group_block_length_smaller_than_fields() {
    let xml = schema(
        "",
        r#"    <sbe:message name="M" id="1">
        <group name="g" id="1" blockLength="1">
            <field name="a" id="2" type="uint16"/>
        </group>
    </sbe:message>"#,
    );
    assert_fails(
        &xml,
        r#"name="g""#,
        "message 'M' group 'g'",
        "blockLength 1 is smaller than its fields (2 bytes)",
    );
}

#[test]
fn duplicate_type_names() {
    let xml = schema(
        r#"        <type name="Price" primitiveType="int64"/>
        <enum name="Price" encodingType="uint8"><validValue name="A">1</validValue></enum>"#,
        "",
    );
    assert_fails(&xml, "<enum", "type 'Price'", "duplicate type name");
}

#[test]
fn duplicate_field_names_in_message() {
    let xml = schema(
        "",
        r#"    <sbe:message name="M" id="1">
        <field name="f" id="1" type="uint8"/>
        <field name="f" id="2" type="uint16"/>
    </sbe:message>"#,
    );
    assert_fails(
        &xml,
        r#"id="2""#,
        "message 'M' field 'f'",
        "duplicate name 'f' in this block",
    );
}

#[test]
fn duplicate_template_ids() {
    let xml = schema(
        "",
        r#"    <sbe:message name="A" id="7"/>
    <sbe:message name="B" id="7"/>"#,
    );
    assert_fails(
        &xml,
        r#"name="B""#,
        "message 'B'",
        "template id 7 is also used by message 'A'",
    );
}

#[test]
fn group_dimension_lacking_num_in_group() {
    let xml = schema(
        r#"        <composite name="badDimension">
            <type name="blockLength" primitiveType="uint16"/>
            <type name="count" primitiveType="uint16"/>
        </composite>"#,
        r#"    <sbe:message name="M" id="1">
        <group name="g" id="1" dimensionType="badDimension">
            <field name="a" id="2" type="uint8"/>
        </group>
    </sbe:message>"#,
    );
    assert_fails(
        &xml,
        r#"name="g""#,
        "message 'M' group 'g'",
        "composite 'badDimension' needs an unsigned integer member 'numInGroup'",
    );
}

#[test]
fn group_dimension_with_signed_num_in_group() {
    let xml = schema(
        r#"        <composite name="signedDimension">
            <type name="blockLength" primitiveType="uint16"/>
            <type name="numInGroup" primitiveType="int16"/>
        </composite>"#,
        r#"    <sbe:message name="M" id="1">
        <group name="g" id="1" dimensionType="signedDimension">
            <field name="a" id="2" type="uint8"/>
        </group>
    </sbe:message>"#,
    );
    assert_fails(
        &xml,
        r#"name="g""#,
        "message 'M' group 'g'",
        "composite 'signedDimension' needs an unsigned integer member 'numInGroup'",
    );
}

#[test]
fn var_data_type_lacking_var_data() {
    let xml = schema(
        r#"        <composite name="noBytes">
            <type name="length" primitiveType="uint8"/>
        </composite>"#,
        r#"    <sbe:message name="M" id="1">
        <data name="d" id="1" type="noBytes"/>
    </sbe:message>"#,
    );
    assert_fails(
        &xml,
        r#"name="d""#,
        "message 'M' data 'd'",
        "composite 'noBytes' needs a 'varData' member of uint8 or char",
    );
}

#[test]
fn since_version_above_schema_version() {
    let xml = schema(
        "",
        r#"    <sbe:message name="M" id="1">
        <field name="a" id="1" type="uint8"/>
        <field name="b" id="2" type="uint8" sinceVersion="2"/>
    </sbe:message>"#,
    );
    assert_fails(
        &xml,
        r#"name="b""#,
        "message 'M' field 'b'",
        "sinceVersion 2 is above the schema version 1",
    );
}

#[test]
fn enum_value_out_of_range_of_its_encoding() {
    let xml = schema(
        r#"        <enum name="Level" encodingType="uint8">
            <validValue name="Low">1</validValue>
            <validValue name="High">256</validValue>
        </enum>"#,
        "",
    );
    assert_fails(
        &xml,
        r#"name="High""#,
        "enum 'Level' validValue 'High'",
        "256 does not fit uint8",
    );
}

#[test]
fn set_choice_bit_too_large() {
    let xml = schema(
        r#"        <set name="Flags" encodingType="uint8">
            <choice name="first">0</choice>
            <choice name="ninth">8</choice>
        </set>"#,
        "",
    );
    assert_fails(
        &xml,
        r#"name="ninth""#,
        "set 'Flags' choice 'ninth'",
        "bit 8 does not fit uint8 (bits 0 to 7)",
    );
}

#[test]
fn recursive_composite() {
    let xml = schema(
        r#"        <composite name="Node">
            <type name="value" primitiveType="uint8"/>
            <ref name="next" type="Node"/>
        </composite>"#,
        "",
    );
    assert_fails(
        &xml,
        r#"name="next""#,
        "composite 'Node' ref 'next'",
        "type 'Node' contains itself",
    );
}

#[test]
fn field_after_group() {
    let xml = schema(
        "",
        r#"    <sbe:message name="M" id="1">
        <group name="g" id="1">
            <field name="a" id="2" type="uint8"/>
        </group>
        <field name="late" id="3" type="uint8"/>
    </sbe:message>"#,
    );
    assert_fails(
        &xml,
        r#"name="late""#,
        "message 'M' field 'late'",
        "fields must precede groups, and groups must precede var data",
    );
}

/// The code generated for `xml`, which must be accepted.
fn generated(xml: &str) -> String {
    match sbe_codegen::generate_str(FILE, xml) {
        Ok(generated) => generated.code,
        Err(e) => panic!("the schema is refused: {e}\n{xml}"),
    }
}

/// Names that clash with generated methods (`decode`, a decoder's `name()` and `header()`, a
/// group encoder's private `begin`) are escaped with a trailing underscore, not refused (the
/// reference implementation accepts them). The conformance crate's `edge_cases` fixture
/// compiles and round-trips such fields.
#[test]
fn fields_named_like_generated_methods_are_escaped() {
    let xml = schema(
        "",
        r#"    <sbe:message name="M" id="1">
        <field name="decode" id="1" type="uint8"/>
        <field name="name" id="2" type="uint8"/>
        <field name="header" id="3" type="uint8"/>
        <group name="g" id="4">
            <field name="begin" id="5" type="uint8"/>
        </group>
        <data name="wrap" id="6" type="varString8"/>
    </sbe:message>"#,
    );
    let code = generated(&xml);
    for method in [
        "fn decode_(&self)",
        "fn name_(&self)",
        "fn header_(&self)",
        "fn begin_(&self)",
        "fn begin_(&mut self",
        "fn wrap_(&self)",
        "fn wrap_(&mut self",
    ] {
        assert!(code.contains(method), "no `{method}` in the generated code");
    }
}

/// An escaped name still clashes with a field that is already named so.
#[test]
fn escaped_name_clashing_with_another_field() {
    let xml = schema(
        "",
        r#"    <sbe:message name="M" id="1">
        <field name="name_" id="1" type="uint8"/>
        <field name="name" id="2" type="uint8"/>
    </sbe:message>"#,
    );
    assert_fails(
        &xml,
        r#"name="name""#,
        "message 'M' field 'name'",
        "duplicate name 'name_' in this block",
    );
}

#[test]
fn names_that_are_not_symbolic() {
    for (types, messages, needle, element) in [
        (
            "",
            r#"<sbe:message name="M" id="1"><field name="bad name" id="1" type="uint8"/></sbe:message>"#,
            r#"name="bad name""#,
            "message 'M' <field>",
        ),
        (
            r#"        <enum name="E" encodingType="uint8"><validValue name="a-b">1</validValue></enum>"#,
            "",
            r#"name="a-b""#,
            "enum 'E' <validValue>",
        ),
        (
            r#"        <type name="word!" primitiveType="uint8"/>"#,
            "",
            r#"name="word!""#,
            "<type>",
        ),
        (
            "",
            r#"<sbe:message name="M" id="1"><group name="g g" id="1"/></sbe:message>"#,
            r#"name="g g""#,
            "message 'M' <group>",
        ),
    ] {
        let xml = schema(types, messages);
        let name = needle.trim_start_matches("name=\"").trim_end_matches('"');
        assert_fails(
            &xml,
            needle,
            element,
            &format!(
                "name '{name}' is not a symbolic name (a letter or '_', then letters, digits and '_')"
            ),
        );
    }
}

#[test]
fn enum_values_outside_the_encoding_range() {
    for (encoding, value, message) in [
        (
            "uint8",
            "255",
            "value 255 is the encoding's null value (an absent optional enum)",
        ),
        (
            "int8",
            "-128",
            "value -128 is the encoding's null value (an absent optional enum)",
        ),
        (
            "bounded",
            "11",
            "value 11 is outside the encoding's range 1 to 10",
        ),
        (
            "bounded",
            "0",
            "value 0 is outside the encoding's range 1 to 10",
        ),
        (
            "nulled",
            "7",
            "value 7 is the encoding's null value (an absent optional enum)",
        ),
    ] {
        let xml = schema(
            &format!(
                r#"        <type name="bounded" primitiveType="uint8" minValue="1" maxValue="10"/>
        <type name="nulled" primitiveType="uint8" nullValue="7"/>
        <enum name="E" encodingType="{encoding}">
            <validValue name="ok">3</validValue>
            <validValue name="bad">{value}</validValue>
        </enum>"#
            ),
            "",
        );
        assert_fails(&xml, r#"name="bad""#, "enum 'E' validValue 'bad'", message);
    }
}

/// Valid schemas the reference implementation accepts and we refused; the conformance crate's
/// `edge_cases` fixture compiles and round-trips each.
#[test]
fn valid_schemas_that_were_refused() {
    // varData without length="0".
    let xml = schema(
        r#"        <composite name="varNoLength">
            <type name="length" primitiveType="uint16"/>
            <type name="varData" primitiveType="uint8"/>
        </composite>"#,
        r#"    <sbe:message name="M" id="1"><data name="d" id="1" type="varNoLength"/></sbe:message>"#,
    );
    assert!(generated(&xml).contains("fn d(&self) -> &'a [u8]"));
    // A constant schemaId in the header.
    let xml = schema("", "").replace(
        r#"<type name="schemaId" primitiveType="uint16"/>"#,
        r#"<type name="schemaId" primitiveType="uint16" presence="constant">9</type>"#,
    );
    assert!(generated(&xml).contains("schema_id: 9,"));
    // Two composites with a nested type of one name: scoped, each named after its composite.
    let xml = schema(
        r#"        <composite name="a"><enum name="kind" encodingType="uint8"><validValue name="x">1</validValue></enum></composite>
        <composite name="b"><set name="kind" encodingType="uint8"><choice name="y">0</choice></set></composite>"#,
        "",
    );
    let code = generated(&xml);
    assert!(code.contains("pub enum AKind {"), "{code}");
    assert!(code.contains("pub struct BKind(u8);"), "{code}");
}

/// As in the reference implementation: a uint32 group count or var-data length needs a
/// maxValue that fits a signed 32-bit integer.
#[test]
fn uint32_count_without_max_value() {
    let xml = schema(
        r#"        <composite name="bigGroups">
            <type name="blockLength" primitiveType="uint16"/>
            <type name="numInGroup" primitiveType="uint32"/>
        </composite>"#,
        r#"    <sbe:message name="M" id="1">
        <group name="g" id="1" dimensionType="bigGroups"/>
    </sbe:message>"#,
    );
    assert_fails(
        &xml,
        r#"name="g""#,
        "message 'M' group 'g'",
        "uint32 'numInGroup' of composite 'bigGroups' needs a maxValue (at most 2147483647: decoders in other languages hold it in a signed 32-bit integer)",
    );
    let xml = schema(
        r#"        <composite name="bigData">
            <type name="length" primitiveType="uint32" maxValue="4294967294"/>
            <type name="varData" primitiveType="uint8" length="0"/>
        </composite>"#,
        r#"    <sbe:message name="M" id="1">
        <data name="d" id="1" type="bigData"/>
    </sbe:message>"#,
    );
    assert_fails(
        &xml,
        r#"name="d""#,
        "message 'M' data 'd'",
        "uint32 'length' of composite 'bigData' maxValue 4294967294 is above 2147483647 (at most 2147483647: decoders in other languages hold it in a signed 32-bit integer)",
    );
}

/// A decimal hint that cannot be honoured is a warning, never an error: it changes no layout.
#[test]
fn unusable_exponent_hint_is_a_warning() {
    let xml = schema(
        "",
        r#"    <sbe:message name="M" id="1">
        <field name="exp" id="1" type="int8" sinceVersion="1"/>
        <field name="price" id="2" type="int64" mbx:exponent="exp"/>
        <field name="text" id="3" type="char" mbx:exponent="nothing"/>
    </sbe:message>"#,
    )
    .replace(
        "<sbe:messageSchema ",
        r#"<sbe:messageSchema xmlns:mbx="urn:mbx" "#,
    );
    let Ok(generated) = sbe_codegen::generate_str(FILE, &xml) else {
        panic!("the schema is refused");
    };
    let warnings = &generated.schema.warnings;
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    let price = line_of(&xml, r#"name="price""#);
    assert_eq!(
        warnings[0],
        format!(
            "{FILE}:{price}: message 'M' field 'price': exponent 'exp' ignored: it names no integer field of this block or an enclosing one"
        )
    );
    assert!(warnings[1].ends_with("the field is not an integer or 128-bit mantissa"));
}

#[test]
fn message_block_length_too_large_for_header() {
    let header = r#"<type name="blockLength" primitiveType="uint16"/>
            <type name="templateId""#;
    let xml = schema(
        r#"        <type name="Text300" primitiveType="char" length="300"/>"#,
        r#"    <sbe:message name="M" id="1">
        <field name="text" id="1" type="Text300"/>
    </sbe:message>"#,
    )
    .replacen(header, &header.replace("uint16", "uint8"), 1);
    assert_fails(
        &xml,
        r#"name="M""#,
        "message 'M'",
        "block length 300 does not fit the header's blockLength (uint8)",
    );
}

#[test]
fn group_block_length_too_large_for_dimension() {
    let xml = schema(
        r#"        <composite name="groupSize8">
            <type name="blockLength" primitiveType="uint8"/>
            <type name="numInGroup" primitiveType="uint8"/>
        </composite>
        <type name="Text300" primitiveType="char" length="300"/>"#,
        r#"    <sbe:message name="M" id="1">
        <group name="g" id="1" dimensionType="groupSize8">
            <field name="text" id="2" type="Text300"/>
        </group>
    </sbe:message>"#,
    );
    assert_fails(
        &xml,
        r#"name="g""#,
        "message 'M' group 'g'",
        "block length 300 does not fit the blockLength of 'groupSize8' (uint8)",
    );
}

#[test]
fn declared_block_length_too_large_for_dimension() {
    let xml = schema(
        r#"        <composite name="groupSize8">
            <type name="blockLength" primitiveType="uint8"/>
            <type name="numInGroup" primitiveType="uint8"/>
        </composite>"#,
        r#"    <sbe:message name="M" id="1">
        <group name="g" id="1" dimensionType="groupSize8" blockLength="256">
            <field name="a" id="2" type="uint8"/>
        </group>
    </sbe:message>"#,
    );
    assert_fails(
        &xml,
        r#"name="g""#,
        "message 'M' group 'g'",
        "block length 256 does not fit the blockLength of 'groupSize8' (uint8)",
    );
}

#[test]
fn malformed_xml() {
    let xml = schema(
        "",
        r#"    <sbe:message name="M" id="1">
        <field name="f" id="1" type="uint8">
    </sbe:message>"#,
    );
    let line = line_of(&xml, "</sbe:message>");
    let e = error(FILE, &xml);
    assert!(e.starts_with(&format!("{FILE}: invalid XML: ")), "{e}");
    assert!(
        e.contains(&format!(" at {line}:")),
        "{e} does not name line {line}"
    );
}

/// A folder of its own under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("sbe-codegen-it-{}-{test}", std::process::id()));
        // A leftover from an earlier run with the same pid would make the test depend on it.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir(path)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
        }
        std::fs::write(&path, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A schema whose types come from `href`, and one message that uses them.
fn including(href: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<sbe:messageSchema xmlns:sbe="http://fixprotocol.io/2016/sbe"
                   xmlns:xi="http://www.w3.org/2001/XInclude"
                   package="included" id="9" version="0">
    <xi:include href="{href}"/>
    <sbe:message name="M" id="1">
        <field name="price" id="1" type="Price"/>
    </sbe:message>
</sbe:messageSchema>
"#
    )
}

/// The types `including` expects, as an included file.
const COMMON_TYPES: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<types>
    <composite name="messageHeader">
        <type name="blockLength" primitiveType="uint16"/>
        <type name="templateId" primitiveType="uint16"/>
        <type name="schemaId" primitiveType="uint16"/>
        <type name="version" primitiveType="uint16"/>
    </composite>
    <type name="Price" primitiveType="int64"/>
</types>
"#;

#[test]
fn missing_xinclude_file() {
    let dir = TempDir::new("missing_xinclude_file");
    let main = dir.0.join("main.xml");
    let xml = including("missing.xml");
    let line = line_of(&xml, "<xi:include");
    let e = error(&main, &xml);
    let expected = format!(
        "{}:{line}: xi:include: cannot read '{}': ",
        main.display(),
        dir.0.join("missing.xml").display()
    );
    assert!(
        e.starts_with(&expected),
        "{e}\ndoes not start with\n{expected}"
    );
}

#[test]
fn xinclude_resolves_relative_to_the_including_file() {
    let dir = TempDir::new("xinclude_resolves_relative");
    let common = dir.write("schemas/common/types.xml", COMMON_TYPES);
    let main = dir.write("schemas/main.xml", &including("common/types.xml"));
    let generated = match sbe_codegen::generate(&main) {
        Ok(generated) => generated,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(generated.inputs, [main, common]);
    assert!(
        generated.code.contains("pub fn price(&self) -> i64"),
        "{}",
        generated.code
    );
}

#[test]
fn error_in_included_file_names_that_file() {
    let dir = TempDir::new("error_in_included_file");
    let broken = COMMON_TYPES.replace(
        r#""Price" primitiveType="int64""#,
        r#""Price" primitiveType="int65""#,
    );
    let types = dir.write("types.xml", &broken);
    let main = dir.write("main.xml", &including("types.xml"));
    let line = line_of(&broken, r#"name="Price""#);
    let e = match sbe_codegen::generate(&main) {
        Ok(_) => panic!("the schema was accepted"),
        Err(e) => e.to_string(),
    };
    assert_eq!(
        e,
        format!(
            "{}:{line}: type 'Price': unknown primitiveType 'int65'",
            types.display()
        )
    );
}

/// Generated Rust names that would collide are schema errors, not compile errors in the
/// generated code (found by review: each of these produced duplicate items).
mod generated_name_clashes {
    fn error(xml: &str) -> String {
        sbe_codegen::generate_str("fixtures/broken.xml", xml)
            .expect_err("the schema is refused")
            .to_string()
    }

    fn schema(types: &str, messages: &str) -> String {
        format!(
            r#"<?xml version="1.0"?>
<sbe:messageSchema xmlns:sbe="http://fixprotocol.io/2016/sbe" package="p" id="1" version="0">
<types>
<composite name="messageHeader"><type name="blockLength" primitiveType="uint16"/><type name="templateId" primitiveType="uint16"/><type name="schemaId" primitiveType="uint16"/><type name="version" primitiveType="uint16"/></composite>
<composite name="groupSizeEncoding"><type name="blockLength" primitiveType="uint16"/><type name="numInGroup" primitiveType="uint16"/></composite>
{types}
</types>
{messages}
</sbe:messageSchema>"#
        )
    }

    #[test]
    fn an_enum_named_like_the_generated_header() {
        let xml = schema(
            r#"<enum name="Header" encodingType="uint8"><validValue name="A">0</validValue></enum>"#,
            "",
        );
        let e = error(&xml);
        assert!(
            e.contains("type 'Header': generates type 'Header', as the generated module does"),
            "{e}"
        );
    }

    #[test]
    fn a_composite_and_a_message_of_one_name() {
        let xml = schema(
            r#"<composite name="Order"><type name="x" primitiveType="uint8"/></composite>"#,
            r#"<sbe:message name="Order" id="1"><field name="a" id="1" type="uint8"/></sbe:message>"#,
        );
        let e = error(&xml);
        assert!(
            e.contains("message 'Order': generates type 'OrderDecoder'"),
            "{e}"
        );
    }

    #[test]
    fn nested_and_top_level_groups_with_one_rust_name() {
        let xml = schema(
            "",
            r#"<sbe:message name="M" id="1">
<group name="g" id="1"><field name="a" id="1" type="uint8"/><group name="h" id="2"><field name="b" id="1" type="uint8"/></group></group>
<group name="gH" id="3"><field name="c" id="1" type="uint8"/></group>
</sbe:message>"#,
        );
        let e = error(&xml);
        assert!(e.contains("group 'gH': generates type 'MGHGroup'"), "{e}");
    }

    #[test]
    fn an_enum_field_and_a_field_named_like_its_raw_getter() {
        let xml = schema(
            r#"<enum name="E" encodingType="uint8"><validValue name="A">0</validValue></enum>"#,
            r#"<sbe:message name="M" id="1"><field name="x" id="1" type="E"/><field name="xRaw" id="2" type="uint8"/></sbe:message>"#,
        );
        let e = error(&xml);
        assert!(
            e.contains("field 'xRaw': duplicate name 'x_raw' in this block"),
            "{e}"
        );
    }

    #[test]
    fn composite_members_and_set_choices_named_like_generated_methods_are_escaped() {
        let xml = schema(
            r#"<composite name="C"><type name="new" primitiveType="uint8"/></composite>
            <set name="S" encodingType="uint8"><choice name="raw">0</choice></set>"#,
            "",
        );
        let code = match sbe_codegen::generate_str("p.xml", &xml) {
            Ok(generated) => generated.code,
            Err(e) => panic!("refused: {e}"),
        };
        assert!(code.contains("pub fn new_(&self) -> u8"));
        assert!(code.contains("pub const fn raw_(self) -> bool"));
    }
}
