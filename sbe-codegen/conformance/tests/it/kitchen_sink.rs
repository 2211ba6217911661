//! Our fixture schema: every primitive, optional values and their nulls, explicit offsets,
//! constants, char and signed enums, a 16-bit set, nested composites, u32 group counts, nested
//! groups, u8 and u16 var-data lengths, decimal hints, and schema evolution both ways.

use sbe_conformance::kitchen_sink::*;
use sbe_runtime::{DecodeError, EncodeError};

fn encode_everything(buf: &mut [u8]) -> Result<usize, EncodeError> {
    let mut m = EverythingEncoder::wrap(buf)?;
    m.c(b'Z')
        .i8(-8)
        .i16(-16)
        .i32(-32)
        .i64(i64::MIN + 1)
        .u8(8)
        .u16(16)
        .u32(32)
        .u64(u64::MAX - 1)
        .f32(1.5)
        .f64(-2.25)
        .symbol(b"BTC")
        .maybe_price(None)
        .level(Some(3))
        .ratio(Some(0.5))
        .shorts(&[-1, 0, 1])
        .doubles(&[f64::MAX, f64::MIN_POSITIVE])
        .side(Side::Buy)
        .status(Some(Status::Halted))
        .flags(Flags::default().with_first(true).with_last(true))
        .exponent(-3)
        .amount(12_345);
    let mut b = m.box_();
    b.low().x(1).y(-1);
    b.high().x(i32::MAX).y(i32::MIN);
    b.side(Side::Sell);
    b.tag().code(b"QZ");
    let mut legs = m.legs(2)?;
    legs.next_entry()?.leg_id(7).price(-1);
    legs.fills(2)?.next_entry()?.qty(10).next_entry()?.qty(-20);
    legs.note(b"first")?;
    legs.next_entry()?.leg_id(8).price(250);
    legs.fills(0)?;
    legs.note("\u{e9}t\u{e9}".as_bytes())?;
    m.empty(3)?.next_entry()?.next_entry()?.next_entry()?;
    m.text(b"hi \"there\"")?.blob(&[0, 1, 0xff])?;
    Ok(m.finish())
}

#[test]
fn every_field_kind_round_trips() {
    let mut buf = [0u8; 512];
    let len = encode_everything(&mut buf).expect("fits");
    let m = EverythingDecoder::decode(&buf[..len]).expect("decodes");
    assert_eq!(
        m.header().block_length,
        160,
        "the declared blockLength is written"
    );
    assert_eq!(m.c(), b'Z');
    assert_eq!(
        (m.i8(), m.i16(), m.i32(), m.i64()),
        (-8, -16, -32, i64::MIN + 1)
    );
    assert_eq!(
        (m.u8(), m.u16(), m.u32(), m.u64()),
        (8, 16, 32, u64::MAX - 1)
    );
    assert_eq!((m.f32(), m.f64()), (1.5, -2.25));
    assert_eq!(m.symbol(), b"BTC\0\0\0\0\0");
    assert_eq!(m.maybe_price(), None, "None is written as the null value");
    assert_eq!(m.level(), Some(3));
    assert_eq!(m.ratio(), Some(0.5));
    assert_eq!(m.magic(), 3_735_928_559);
    assert_eq!(m.venue(), b"XBIN");
    assert_eq!(m.shorts(), [-1, 0, 1]);
    assert_eq!(m.doubles(), [f64::MAX, f64::MIN_POSITIVE]);
    assert_eq!(m.side(), Some(Side::Buy));
    assert_eq!(m.side_raw(), b'B');
    assert_eq!(m.status(), Some(Status::Halted));
    assert_eq!(m.status_raw(), -1);
    assert_eq!(m.flags().raw(), 0x8001);
    assert!(m.flags().first() && m.flags().last() && !m.flags().middle());
    let b = m.box_();
    assert_eq!((b.low().x(), b.low().y()), (1, -1));
    assert_eq!((b.high().x(), b.high().y()), (i32::MAX, i32::MIN));
    assert_eq!(b.side(), Some(Side::Sell));
    assert_eq!(b.tag().code(), b"QZ");
    assert_eq!(m.always_sell(), Side::Sell);
    assert_eq!(m.amount(), 12_345);

    let legs: Vec<_> = m.legs().collect();
    assert_eq!(legs.len(), 2);
    assert_eq!((legs[0].leg_id(), legs[0].price()), (7, -1));
    assert_eq!(
        legs[0].fills().map(|f| f.qty()).collect::<Vec<_>>(),
        [10, -20]
    );
    assert_eq!(legs[0].note(), b"first");
    assert_eq!(legs[1].fills().len(), 0);
    assert_eq!(legs[1].note(), "\u{e9}t\u{e9}".as_bytes());
    assert_eq!(m.empty().len(), 3);
    assert_eq!(m.text(), b"hi \"there\"");
    assert_eq!(m.blob(), [0, 1, 0xff]);
    assert_eq!(m.encoded_length(), len);
}

#[test]
fn explicit_offsets_and_wire_layout() {
    let mut buf = [0u8; 512];
    let len = encode_everything(&mut buf).expect("fits");
    // symbol sits at its explicit offset 48 of the root block, after a gap.
    assert_eq!(&buf[8 + 48..8 + 51], b"BTC");
    // Point.y has offset 6 inside the composite: Box starts at the field's offset.
    let m = EverythingDecoder::decode(&buf[..len]).expect("decodes");
    assert_eq!(BoxDecoder::ENCODED_LENGTH, 10 + 10 + 1 + 2);
    assert_eq!(PointDecoder::ENCODED_LENGTH, 10);
    // The legs group has a u32 count: 2 bytes blockLength, then 4 bytes numInGroup.
    let legs_at = 8 + 160;
    assert_eq!(&buf[legs_at..legs_at + 6], &[12, 0, 2, 0, 0, 0]);
    assert_eq!(m.legs().num_in_group(), 2);
}

#[test]
fn optional_nulls_read_as_none() {
    let mut buf = [0u8; 512];
    let mut m = EverythingEncoder::wrap(&mut buf).expect("fits");
    m.level(None).ratio(None).status(None).maybe_price(Some(-5));
    m.legs(0).expect("fits");
    m.empty(0).expect("fits");
    m.text(b"").expect("fits").blob(b"").expect("fits");
    let len = m.finish();
    let m = EverythingDecoder::decode(&buf[..len]).expect("decodes");
    assert_eq!(m.level(), None, "custom nullValue 0");
    assert_eq!(m.ratio(), None, "NaN null");
    assert_eq!(m.status(), None);
    assert_eq!(m.status_raw(), Status::NULL_VALUE);
    assert_eq!(m.maybe_price(), Some(-5));
    assert_eq!(m.side(), None, "0 is not a Side");
    let mut out = String::new();
    m.write_json(&mut out);
    assert!(out.contains(r#""level":null,"ratio":null,"#), "{out}");
    assert!(out.contains(r#""side":0,"status":null,"#), "{out}");
}

#[test]
fn var_data_and_counts_over_their_encoding_are_refused() {
    let mut buf = vec![0u8; 1 << 20];
    let mut m = EverythingEncoder::wrap(&mut buf).expect("fits");
    assert_eq!(
        m.legs(100_001).err(),
        Some(EncodeError::TooLong {
            id: 30,
            len: 100_001,
            max: 100_000
        })
    );
    m.legs(0).expect("fits");
    m.empty(0).expect("fits");
    assert_eq!(
        m.text(&[b'a'; 256]).err(),
        Some(EncodeError::TooLong {
            id: 50,
            len: 256,
            max: 255
        })
    );
    assert!(m.text(&[b'a'; 255]).is_ok());
    assert!(m.blob(&[1; 65_535]).is_ok());
}

#[test]
fn decimal_hints_print_exact_decimals_in_json() {
    let mut buf = [0u8; 512];
    let len = encode_everything(&mut buf).expect("fits");
    let mut out = String::new();
    decode(&buf[..len]).expect("decodes").write_json(&mut out);
    assert!(
        out.starts_with(r#"{"message":"Everything","c":"Z","i8":-8,"#),
        "{out}"
    );
    assert!(out.contains(r#""exponent":-3,"amount":"12.345","#), "{out}");
    assert!(out.contains(r#""legs":[{"legId":7,"price":"-0.001","fills":[{"qty":10},{"qty":-20}],"note":"first"}"#), "{out}");
    assert!(
        out.contains(r#""empty":[{},{},{}],"text":"hi \"there\"","blob":"0001ff"}"#),
        "{out}"
    );
    assert!(out.contains(r#""flags":["first","last"]"#), "{out}");
    assert!(out.contains(r#""box":{"low":{"x":1,"y":-1},"#), "{out}");
}

/// Builds an `Evolving` frame by hand, as an encoder of `version` would.
fn evolving_frame(
    version: u16,
    block: &[u8],
    items: &[&[u8]],
    extras: Option<&[u8]>,
    label: Option<&[u8]>,
) -> Vec<u8> {
    let mut f = Vec::new();
    for v in [block.len() as u16, 2, 77, version] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    f.extend_from_slice(block);
    let item_len = items.first().map_or(2, |i| i.len()) as u16;
    f.extend_from_slice(&item_len.to_le_bytes());
    f.extend_from_slice(&(items.len() as u16).to_le_bytes());
    for item in items {
        f.extend_from_slice(item);
    }
    if let Some(extras) = extras {
        f.extend_from_slice(&1u16.to_le_bytes());
        f.extend_from_slice(&(extras.len() as u16).to_le_bytes());
        f.extend_from_slice(extras);
    }
    if let Some(label) = label {
        f.push(label.len() as u8);
        f.extend_from_slice(label);
    }
    f
}

#[test]
fn older_versions_read_later_fields_as_absent() {
    let v0 = evolving_frame(0, &5u32.to_le_bytes(), &[&[1, 0], &[2, 0]], None, None);
    let m = EvolvingDecoder::decode(&v0).expect("a version-0 frame decodes");
    assert_eq!(m.a(), 5);
    assert_eq!(m.b(), None);
    assert_eq!(m.c(), None);
    assert_eq!(
        m.items().map(|i| (i.x(), i.y())).collect::<Vec<_>>(),
        [(1, None), (2, None)]
    );
    assert_eq!(m.extras().len(), 0);
    assert_eq!(m.label(), b"");
    assert_eq!(m.encoded_length(), v0.len());

    let mut block = 5u32.to_le_bytes().to_vec();
    block.extend_from_slice(&6u32.to_le_bytes());
    let v1 = evolving_frame(1, &block, &[&[1, 0]], Some(&[9, 8]), None);
    let m = EvolvingDecoder::decode(&v1).expect("a version-1 frame decodes");
    assert_eq!((m.a(), m.b(), m.c()), (5, Some(6), None));
    assert_eq!(m.extras().map(|e| e.z()).collect::<Vec<_>>(), [9, 8]);
    assert_eq!(m.label(), b"");
}

#[test]
fn newer_versions_with_longer_blocks_decode() {
    // Version 3 (newer than this decoder): 4 more root bytes, 2 more bytes per item.
    let mut block = Vec::new();
    block.extend_from_slice(&5u32.to_le_bytes());
    block.extend_from_slice(&6u32.to_le_bytes());
    block.push(b'S');
    block.extend_from_slice(&[0xee; 4]);
    let items: [&[u8]; 2] = [&[1, 0, 2, 0, 0xee, 0xee], &[3, 0, 4, 0, 0xee, 0xee]];
    let v3 = evolving_frame(3, &block, &items, Some(&[7]), Some(b"new"));
    let m = EvolvingDecoder::decode(&v3).expect("a newer frame decodes");
    assert_eq!((m.a(), m.b(), m.c()), (5, Some(6), Some(Side::Sell)));
    assert_eq!(
        m.items().map(|i| (i.x(), i.y())).collect::<Vec<_>>(),
        [(1, Some(2)), (3, Some(4))]
    );
    assert_eq!(m.extras().map(|e| e.z()).collect::<Vec<_>>(), [7]);
    assert_eq!(m.label(), b"new");

    // And our own version-2 encoder's output decodes to the same values.
    let mut buf = [0u8; 128];
    let mut e = EvolvingEncoder::wrap(&mut buf).expect("fits");
    e.a(5).b(6).c(Side::Sell);
    e.items(1)
        .expect("fits")
        .next_entry()
        .expect("fits")
        .x(1)
        .y(2);
    e.extras(0).expect("fits");
    e.label(b"new").expect("fits");
    let len = e.finish();
    let m = EvolvingDecoder::decode(&buf[..len]).expect("decodes");
    assert_eq!(m.acting_version(), 2);
    assert_eq!(m.label(), b"new");
}

#[test]
fn a_group_entry_shorter_than_version_0_is_rejected() {
    let v0 = evolving_frame(0, &5u32.to_le_bytes(), &[&[1]], None, None);
    assert_eq!(
        EvolvingDecoder::decode(&v0).err(),
        Some(DecodeError::BlockTooShort {
            id: 10,
            needed: 2,
            got: 1
        })
    );
}

#[test]
fn a_count_over_the_dimension_max_value_is_rejected_by_the_decoder() {
    let mut buf = vec![0u8; 1024];
    let len = encode_everything(&mut buf).expect("fits");
    // legs: u16 blockLength then u32 numInGroup, maxValue 100000.
    buf[8 + 160 + 2..8 + 160 + 6].copy_from_slice(&100_001u32.to_le_bytes());
    let limits = sbe_runtime::Limits {
        group_count_max: u32::MAX,
    };
    assert_eq!(
        decode_with(&buf[..len], &limits).err(),
        Some(DecodeError::GroupTooLarge {
            id: 30,
            count: 100_001,
            max: 100_000
        })
    );
}
