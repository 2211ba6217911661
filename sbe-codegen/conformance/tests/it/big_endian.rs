//! A big-endian schema: the same generator, every multi-byte value most significant first.

use sbe_conformance::big_endian::*;

#[test]
fn values_are_written_and_read_big_endian() {
    let mut buf = [0u8; 64];
    let mut q = QuoteEncoder::wrap(&mut buf).expect("fits");
    q.seq(0x0102_0304).price(-2).weight(1.0);
    q.levels(1)
        .expect("fits")
        .next_entry()
        .expect("fits")
        .size(-300);
    q.venue(b"XNAS").expect("fits");
    let len = q.finish();
    let frame = &buf[..len];
    assert_eq!(
        &frame[..8],
        &[0, 20, 2, 1, 0, 9, 0, 0],
        "header, big-endian"
    );
    assert_eq!(&frame[8..12], &[1, 2, 3, 4]);
    assert_eq!(&frame[12..20], &(-2i64).to_be_bytes());
    assert_eq!(&frame[28..32], &[0, 2, 0, 1], "group dimension");
    assert_eq!(&frame[32..34], &(-300i16).to_be_bytes());
    assert_eq!(&frame[34..38], &[0, 0, 0, 4], "u32 var-data length");

    let Message::Quote(q) = decode(frame).expect("decodes");
    assert_eq!((q.seq(), q.price(), q.weight()), (0x0102_0304, -2, 1.0));
    assert_eq!(q.levels().map(|l| l.size()).collect::<Vec<_>>(), [-300]);
    assert_eq!(q.venue(), b"XNAS");
}
