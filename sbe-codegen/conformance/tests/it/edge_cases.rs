//! Valid SBE that sbe-codegen once refused or generated uncompilable Rust for (issue 12): the
//! `edge_cases` and `constant_header` fixtures compile without warnings (the crate denies
//! none, clippy runs with `-D warnings`) and every field round-trips.

use sbe_conformance::{constant_header, edge_cases::*};

fn encode(buf: &mut [u8]) -> Result<usize, sbe_runtime::EncodeError> {
    let mut m = EdgeEncoder::wrap(buf)?;
    m.id(42)
        .header_(0xbeef)
        .name_(7)
        .decode_(-3)
        .qty_exponent(-2);
    m.pair()
        .tag(9)
        .values(&[1, u32::MAX])
        .deltas(&[-1, 0, i16::MAX]);
    m.left().kind(LeftKind::Down).n(-77);
    m.right().kind(RightKind::default().with_cold(true));
    let mut g = m.finish_(2)?;
    g.next_entry()?
        .begin_(1)
        .price_exponent(-4)
        .price(123_456)
        .volume(&(-1_234_567_890_123_456_789_i128).to_le_bytes());
    g.name_(b"first")?;
    g.next_entry()?
        .begin_(2)
        .price_exponent(0)
        .price(-5)
        .volume(&i128::MIN.to_le_bytes());
    g.name_(b"")?;
    m.wrap_("\u{e9}t\u{e9}".as_bytes())?;
    Ok(m.finish())
}

#[test]
fn every_field_round_trips() {
    let mut buf = [0u8; 256];
    let len = encode(&mut buf).expect("fits");
    let m = EdgeDecoder::decode(&buf[..len]).expect("decodes");
    assert_eq!(m.id(), 42);
    assert_eq!(m.lots(), 4, "a constant introduced in version 1");
    assert_eq!(
        m.where_(),
        Venue::Cme,
        "an enum constant introduced in version 2"
    );
    assert_eq!(
        (m.header_(), m.name_(), m.decode_(), m.qty_exponent()),
        (0xbeef, 7, -3, -2)
    );
    assert_eq!(m.name(), "Edge", "the generated method is still there");
    assert_eq!(m.header().template_id, 1);
    let pair = m.pair();
    assert_eq!(
        (pair.tag(), pair.values(), pair.deltas()),
        (9, [1, u32::MAX], [-1, 0, i16::MAX])
    );
    assert_eq!(m.left().kind(), Some(LeftKind::Down));
    assert_eq!(m.left().n(), -77);
    assert!(m.right().kind().cold() && !m.right().kind().hot());
    let entries: Vec<_> = m.finish_().collect();
    assert_eq!(entries.len(), 2);
    let (a, b) = (entries[0], entries[1]);
    assert_eq!(
        (a.begin_(), a.price_exponent(), a.price()),
        (1, -4, 123_456)
    );
    assert_eq!(i128::from_le_bytes(*a.volume()), -1_234_567_890_123_456_789);
    assert_eq!(a.name_(), b"first");
    assert_eq!((b.begin_(), b.price_exponent(), b.price()), (2, 0, -5));
    assert_eq!(i128::from_le_bytes(*b.volume()), i128::MIN);
    assert_eq!(b.name_(), b"");
    assert_eq!(m.wrap_(), "\u{e9}t\u{e9}".as_bytes());
    assert_eq!(m.encoded_length(), len);
}

/// Decimal hints: `price` scaled by its own entry's exponent, `volume` (a 128-bit mantissa)
/// by the root's; the 128-bit null prints as null.
#[test]
fn json_scales_by_the_exponent_of_the_entry_or_the_root() {
    let mut buf = [0u8; 256];
    let len = encode(&mut buf).expect("fits");
    let mut json = String::new();
    decode(&buf[..len]).expect("decodes").write_json(&mut json);
    assert_eq!(
        json,
        concat!(
            r#"{"message":"Edge","id":42,"lots":4,"where":"cme","#,
            r#""pair":{"tag":9,"values":[1,4294967295],"deltas":[-1,0,32767]},"#,
            r#""left":{"kind":"down","n":-77},"right":{"kind":["cold"]},"#,
            r#""header":48879,"name":7,"decode":-3,"qtyExponent":-2,"finish":["#,
            r#"{"begin":1,"priceExponent":-4,"price":"12.3456","volume":"-12345678901234567.89","name":"first"},"#,
            r#"{"begin":2,"priceExponent":0,"price":"-5","volume":null,"name":""}],"#,
            r#""wrap":"été"}"#
        )
    );
}

/// A version-0 frame (as an older encoder writes it) still decodes, constants included.
#[test]
fn constants_read_the_same_in_older_versions() {
    let mut buf = [0u8; 256];
    let len = encode(&mut buf).expect("fits");
    buf[6..8].copy_from_slice(&0u16.to_le_bytes());
    let m = EdgeDecoder::decode(&buf[..len]).expect("decodes");
    assert_eq!(m.acting_version(), 0);
    assert_eq!((m.lots(), m.where_()), (4, Venue::Cme));
}

/// `schemaId` is a constant: not on the wire, so the header is 6 bytes and nothing checks it.
#[test]
fn constant_header_member_is_not_on_the_wire() {
    use constant_header::*;
    assert_eq!(HEADER_LENGTH, 6);
    let mut buf = [0u8; 32];
    let mut p = PingEncoder::wrap(&mut buf).expect("fits");
    p.seq(u64::MAX - 1);
    let len = p.finish();
    assert_eq!(len, 6 + 8);
    assert_eq!(
        &buf[..6],
        &[8, 0, 7, 0, 0, 0],
        "blockLength, templateId, version"
    );
    let Message::Ping(p) = decode(&buf[..len]).expect("decodes");
    assert_eq!(p.seq(), u64::MAX - 1);
    assert_eq!(p.header().schema_id, 2);
}
