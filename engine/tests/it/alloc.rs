//! Decoding allocates nothing: a counting global allocator (per thread, so parallel tests do
//! not disturb each other) sees zero allocations while every message type is decoded and every
//! field, entry and symbol read.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use hotpath::sbe::{self, spot_stream::*};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every method forwards to the system allocator unchanged; counting touches only a
// const-initialized thread-local, which never allocates.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller upholds `alloc`'s contract, which we pass on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: `ptr` came from this allocator with `layout`, as `realloc` requires.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

/// Reads every field of `frame` and returns a checksum so nothing is optimized away.
fn read_everything(frame: &[u8]) -> i64 {
    let mut sum = 0i64;
    match sbe::decode(frame).expect("a valid frame") {
        Message::TradesStreamEvent(m) => {
            sum ^= m.event_time()
                ^ m.transact_time()
                ^ i64::from(m.price_exponent() ^ m.qty_exponent());
            for t in m.trades() {
                sum ^= t.id() ^ t.price() ^ t.qty() ^ i64::from(t.is_buyer_maker_raw());
            }
            sum ^= m.symbol().len() as i64;
        }
        Message::BestBidAskStreamEvent(m) => {
            sum ^= m.event_time()
                ^ m.book_update_id()
                ^ m.bid_price()
                ^ m.bid_qty()
                ^ m.ask_price()
                ^ m.ask_qty();
            sum ^= i64::from(m.price_exponent() ^ m.qty_exponent()) ^ m.symbol().len() as i64;
        }
        Message::DepthSnapshotStreamEvent(m) => {
            sum ^= m.event_time()
                ^ m.book_update_id()
                ^ i64::from(m.price_exponent() ^ m.qty_exponent());
            for l in m.bids() {
                sum ^= l.price() ^ l.qty();
            }
            for l in m.asks() {
                sum ^= l.price() ^ l.qty();
            }
            sum ^= m.symbol().len() as i64;
        }
        Message::DepthDiffStreamEvent(m) => {
            sum ^= m.event_time() ^ m.first_book_update_id() ^ m.last_book_update_id();
            sum ^= i64::from(m.price_exponent() ^ m.qty_exponent());
            for l in m.bids() {
                sum ^= l.price() ^ l.qty();
            }
            for l in m.asks() {
                sum ^= l.price() ^ l.qty();
            }
            sum ^= m.symbol().len() as i64;
        }
    }
    sum
}

fn frames() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];

    let mut m = TradesStreamEventEncoder::wrap(&mut buf).expect("fits");
    m.event_time(1)
        .transact_time(2)
        .price_exponent(-8)
        .qty_exponent(-8);
    let mut trades = m.trades(10).expect("fits");
    for i in 0..10 {
        trades
            .next_entry()
            .expect("fits")
            .id(i)
            .price(100 + i)
            .qty(3)
            .is_buyer_maker(BoolEnum::False);
    }
    m.symbol(b"BTCUSDT").expect("fits");
    let len = m.finish();
    out.push(buf[..len].to_vec());

    let mut m = BestBidAskStreamEventEncoder::wrap(&mut buf).expect("fits");
    m.event_time(1)
        .book_update_id(2)
        .bid_price(3)
        .ask_price(4)
        .symbol(b"BTCUSDT")
        .expect("fits");
    let len = m.finish();
    out.push(buf[..len].to_vec());

    let mut m = DepthSnapshotStreamEventEncoder::wrap(&mut buf).expect("fits");
    m.event_time(1).book_update_id(2);
    let mut bids = m.bids(20).expect("fits");
    for i in 0..20 {
        bids.next_entry().expect("fits").price(i).qty(i);
    }
    let mut asks = m.asks(20).expect("fits");
    for i in 0..20 {
        asks.next_entry().expect("fits").price(i).qty(i);
    }
    m.symbol(b"BTCUSDT").expect("fits");
    let len = m.finish();
    out.push(buf[..len].to_vec());

    let mut m = DepthDiffStreamEventEncoder::wrap(&mut buf).expect("fits");
    m.event_time(1)
        .first_book_update_id(2)
        .last_book_update_id(9);
    let mut bids = m.bids(100).expect("fits");
    for i in 0..100 {
        bids.next_entry().expect("fits").price(i).qty(0);
    }
    m.asks(0).expect("fits");
    m.symbol(b"BTCUSDT").expect("fits");
    let len = m.finish();
    out.push(buf[..len].to_vec());
    out
}

#[test]
fn decoding_every_message_type_allocates_nothing() {
    let frames = frames();
    let before = allocations();
    let mut checksum = 0i64;
    for _ in 0..1000 {
        for frame in &frames {
            checksum ^= read_everything(frame);
        }
    }
    let after = allocations();
    assert_eq!(after - before, 0, "allocations while decoding");
    assert_ne!(std::hint::black_box(checksum), i64::MIN);
}

#[test]
fn the_counter_sees_allocations() {
    let before = allocations();
    let v = std::hint::black_box(vec![1u8; 64]);
    assert!(allocations() > before);
    drop(v);
}

/// The reader's frame path (decode, sequence check, enqueue to two consumers, latency record)
/// allocates nothing per frame: the frame's `Bytes` is shared with consumers by reference.
#[test]
fn the_reader_frame_path_allocates_nothing() {
    use std::sync::Arc;

    use hotpath::feed::frame_path::FramePath;
    use hotpath::feed::stats::ReaderStats;

    // Frames as the WebSocket layer hands them over: split off one shared receive buffer (so
    // cloning one is a reference-count increment, as in production).
    let mut received = bytes::BytesMut::new();
    let mut lengths = Vec::new();
    let mut buf = vec![0u8; 4096];
    for i in 0..2000i64 {
        let mut m = TradesStreamEventEncoder::wrap(&mut buf).expect("fits");
        m.event_time(i)
            .transact_time(i)
            .price_exponent(-8)
            .qty_exponent(-8);
        m.trades(1)
            .expect("fits")
            .next_entry()
            .expect("fits")
            .id(1000 + i)
            .price(5)
            .qty(6)
            .is_buyer_maker(BoolEnum::True);
        m.symbol(b"BTCUSDT").expect("fits");
        let len = m.finish();
        received.extend_from_slice(&buf[..len]);
        lengths.push(len);
        let mut d = DepthDiffStreamEventEncoder::wrap(&mut buf).expect("fits");
        d.event_time(i)
            .first_book_update_id(10 * i + 1)
            .last_book_update_id(10 * i + 10);
        let mut bids = d.bids(2).expect("fits");
        bids.next_entry().expect("fits").price(7).qty(8);
        bids.next_entry().expect("fits").price(6).qty(0);
        d.asks(0).expect("fits");
        d.symbol(b"BTCUSDT").expect("fits");
        let len = d.finish();
        received.extend_from_slice(&buf[..len]);
        lengths.push(len);
    }
    let frames: Vec<bytes::Bytes> = lengths
        .iter()
        .map(|&len| received.split_to(len).freeze())
        .collect();
    let (p1, mut c1) = rtrb::RingBuffer::new(1 << 13);
    let (p2, mut c2) = rtrb::RingBuffer::new(1 << 13);
    let (notices, _notice_ring) = rtrb::RingBuffer::new(64);
    let stats = Arc::new(ReaderStats::default());
    let symbols = vec!["BTCUSDT".to_string()];
    let mut path = FramePath::with(&symbols, 65_535, vec![p1, p2], notices, stats.clone());
    let before = allocations();
    for (i, frame) in frames.iter().enumerate() {
        path.on_frame(frame.clone(), i as u64);
        let (a, b) = (c1.pop(), c2.pop());
        assert!(a.is_ok() && b.is_ok(), "both consumers got frame {i}");
    }
    let after = allocations();
    assert_eq!(after - before, 0, "allocations on the frame path");
    assert_eq!(stats.frames.get(), frames.len() as u64);
    assert_eq!(
        stats.duplicates.get() + stats.gaps.get() + stats.decode_errors.get(),
        0
    );
}
