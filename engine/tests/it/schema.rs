//! Our schema (`schemas/binance_spot_stream_1_0.xml`) is wire-identical to Binance's official
//! `stream_1_0.xml`: same schema id, version and byte order, same header, and per message the
//! same template id, block lengths, and for every field its offset, size, encoding and presence,
//! for every group its id and dimension encoding, for var data its length encoding. Our REST
//! schema (`schemas/binance_spot_3_5.xml`) is Binance's `spot_3_5.xml` byte for byte.

use std::path::PathBuf;

use sbe_codegen::model::*;

fn load(path: &str) -> Schema {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    sbe_codegen::load(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .0
}

/// One line per wire-relevant fact; descriptions and type names are left out on purpose.
fn wire_facts(schema: &Schema) -> Vec<String> {
    let mut facts = vec![
        format!(
            "schema id={} version={} order={:?}",
            schema.id, schema.version, schema.byte_order
        ),
        format!(
            "header {:?}",
            (
                schema.header.size,
                schema.header.block_length,
                schema.header.template_id,
                schema.header.schema_id,
                schema.header.version
            )
        ),
    ];
    for m in &schema.messages {
        let at = format!("message {} id={}", m.name, m.id);
        facts.push(format!("{at} since={}", m.since_version));
        body_facts(schema, &at, &m.body, &mut facts);
    }
    facts
}

fn body_facts(schema: &Schema, at: &str, body: &Body, facts: &mut Vec<String>) {
    facts.push(format!(
        "{at} block={} base={}",
        body.block_length, body.base_length
    ));
    for f in &body.fields {
        facts.push(format!(
            "{at} field {} id={} offset={} size={} since={} {} exponent={:?}",
            f.name,
            f.id,
            f.offset,
            f.size,
            f.since_version,
            kind_facts(schema, &f.kind),
            f.exponent
        ));
    }
    for g in &body.groups {
        let d = &g.dimension;
        let group_at = format!("{at} group {} id={}", g.name, g.id);
        facts.push(format!(
            "{group_at} since={} dimension size={} blockLength={:?} numInGroup={:?} max={}",
            g.since_version, d.size, d.block_length, d.num_in_group, d.count_max
        ));
        body_facts(schema, &group_at, &g.body, facts);
    }
    for d in &body.data {
        facts.push(format!(
            "{at} data {} id={} since={} length={:?} offset={} max={} text={}",
            d.name, d.id, d.since_version, d.length, d.data_offset, d.length_max, d.is_text
        ));
    }
}

fn kind_facts(schema: &Schema, kind: &FieldKind) -> String {
    match kind {
        FieldKind::Primitive {
            primitive,
            length,
            null,
        } => {
            format!("{}x{length} null={null:?}", primitive.name())
        }
        FieldKind::Constant(Constant::EnumValue(def, value)) => {
            format!("constant {} = {value}", enum_facts(schema, *def))
        }
        FieldKind::Constant(c) => format!("constant {c:?}"),
        FieldKind::Enum { def, optional } => {
            format!("{} optional={optional}", enum_facts(schema, *def))
        }
        FieldKind::Set { def } | FieldKind::Composite { def } => {
            format!("{:?}", schema.types[*def])
        }
    }
}

fn enum_facts(schema: &Schema, def: usize) -> String {
    match &schema.types[def] {
        TypeDef::Enum(e) => format!("enum {} {:?} {:?}", e.encoding.name(), e.null, e.values),
        other => format!("{other:?}"),
    }
}

#[test]
fn our_schema_is_wire_identical_to_binance_stream_1_0() {
    let official = load("../../shared/binance/schemas/stream_1_0.xml");
    let ours = load("../schemas/binance_spot_stream_1_0.xml");
    let (official, ours) = (wire_facts(&official), wire_facts(&ours));
    for (a, b) in official.iter().zip(&ours) {
        assert_eq!(a, b, "first difference");
    }
    assert_eq!(official.len(), ours.len());
}

#[test]
fn our_rest_schema_is_binance_spot_3_5_verbatim() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let read =
        |path: &str| std::fs::read(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(
        read("../schemas/binance_spot_3_5.xml")
            == read("../../shared/binance/schemas/spot_3_5.xml"),
        "schemas/binance_spot_3_5.xml must stay a copy of Binance's spot_3_5.xml"
    );
    // PROTOCOL.md 4.6: the REST messages the client reads.
    let rest = load("../schemas/binance_spot_3_5.xml");
    let layout = |name: &str| {
        let m = rest.messages.iter().find(|m| m.name == name).expect(name);
        let entries: Vec<usize> = m.body.groups.iter().map(|g| g.body.block_length).collect();
        (m.id, m.body.block_length, entries)
    };
    assert_eq!(layout("DepthResponse"), (200, 10, vec![16, 16]));
    assert_eq!(layout("TradesResponse"), (201, 2, vec![42]));
    assert_eq!(layout("AggTradesResponse"), (202, 2, vec![50]));
    assert_eq!(layout("KlinesResponse"), (203, 2, vec![120]));
    assert_eq!((rest.id, rest.version), (3, 5));
}

#[test]
fn the_layout_matches_the_protocol_notes() {
    // PROTOCOL.md section 2.2: block lengths 18/50/18/26 and the trades entry of 25 bytes.
    let ours = load("../schemas/binance_spot_stream_1_0.xml");
    let blocks: Vec<(u16, usize)> = ours
        .messages
        .iter()
        .map(|m| (m.id, m.body.block_length))
        .collect();
    assert_eq!(blocks, [(10000, 18), (10001, 50), (10002, 18), (10003, 26)]);
    assert_eq!(ours.messages[0].body.groups[0].body.block_length, 25);
    assert_eq!(ours.messages[0].body.groups[0].dimension.size, 6);
    assert_eq!(ours.messages[2].body.groups[0].dimension.size, 4);
}
