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

/// 2000 one-trade frames and 2000 depth diffs of BTCUSDT, alternating, as the WebSocket layer
/// hands them over: split off one shared receive buffer (so cloning one is a reference-count
/// increment, as in production).
fn trades_and_diffs() -> Vec<bytes::Bytes> {
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
    frames
}

/// With `readers.copy_frames` (the default) the frame path copies each accepted frame into the
/// reader's pool: no allocation per frame. Consumers that keep up let one chunk serve every
/// frame; a consumer holding every frame costs one chunk per few hundred frames.
#[test]
fn the_frame_pool_allocates_per_chunk_not_per_frame() {
    use std::sync::Arc;

    use hotpath::feed::frame_path::FramePath;
    use hotpath::feed::pool::FramePool;
    use hotpath::feed::stats::ReaderStats;

    let frames = trades_and_diffs();
    let symbols = vec!["BTCUSDT".to_string()];
    let (producer, mut consumer) = rtrb::RingBuffer::new(1 << 13);
    let (notices, _notice_ring) = rtrb::RingBuffer::new(64);
    let stats = Arc::new(ReaderStats::default());
    let mut path = FramePath::with(&symbols, 65_535, vec![producer], notices, stats)
        .with_pool(Some(FramePool::default()));
    // Warm: the first chunk is promoted to a shared buffer on its first frame.
    path.on_frame(frames[0].clone(), 1);
    let _ = consumer.pop();
    let before = allocations();
    for (i, frame) in frames.iter().enumerate().skip(1) {
        path.on_frame(frame.clone(), i as u64 + 1);
        let event = consumer.pop().expect("the consumer got the frame");
        assert_eq!(event.frame, *frame, "the queued copy equals the frame");
    }
    assert_eq!(
        allocations() - before,
        0,
        "a consumer keeping up: no allocation"
    );

    // A consumer holding every frame: chunks, not frames, are allocated.
    let (producer, mut consumer) = rtrb::RingBuffer::new(1 << 13);
    let (notices, _notice_ring) = rtrb::RingBuffer::new(64);
    let stats = Arc::new(ReaderStats::default());
    let mut path = FramePath::with(&symbols, 65_535, vec![producer], notices, stats)
        .with_pool(Some(FramePool::default()));
    let before = allocations();
    for (i, frame) in frames.iter().enumerate() {
        path.on_frame(frame.clone(), i as u64 + 1);
    }
    let allocated = allocations() - before;
    let bytes: usize = frames.iter().map(|f| f.len()).sum();
    let chunks = bytes.div_ceil(hotpath::feed::pool::CHUNK_BYTES);
    // Each chunk: its buffer, and its shared header on the first frame cut from it.
    assert!(
        allocated <= 2 * chunks + 2,
        "{allocated} allocations for {chunks} chunks"
    );
    for frame in &frames {
        let event = consumer.pop().expect("held in the ring");
        assert_eq!(event.frame, *frame);
    }
}

/// The reader's frame path (decode, sequence check, enqueue to two consumers, latency record)
/// allocates nothing per frame: the frame's `Bytes` is shared with consumers by reference.
#[test]
fn the_reader_frame_path_allocates_nothing() {
    use std::sync::Arc;

    use hotpath::feed::frame_path::FramePath;
    use hotpath::feed::stats::ReaderStats;

    let frames = trades_and_diffs();
    let (p1, mut c1) = rtrb::RingBuffer::new(1 << 13);
    let (p2, mut c2) = rtrb::RingBuffer::new(1 << 13);
    let (notices, _notice_ring) = rtrb::RingBuffer::new(64);
    let stats = Arc::new(ReaderStats::default());
    let symbols = vec!["BTCUSDT".to_string()];
    // With the stream clock the sidecar's silence check reads: one relaxed store per frame.
    let clock = Arc::new(hotpath::sidecar::silence::StreamClock::new(symbols.len()));
    let mut path = FramePath::with(&symbols, 65_535, vec![p1, p2], notices, stats.clone())
        .with_clock(Some(clock.clone()));
    let before = allocations();
    for (i, frame) in frames.iter().enumerate() {
        path.on_frame(frame.clone(), i as u64 + 1);
        let (a, b) = (c1.pop(), c2.pop());
        assert!(a.is_ok() && b.is_ok(), "both consumers got frame {i}");
    }
    // Duplicates (counted per symbol and stream too) allocate nothing either.
    for frame in &frames[..100] {
        path.on_frame(frame.clone(), 1);
    }
    let after = allocations();
    assert_eq!(after - before, 0, "allocations on the frame path");
    use hotpath::feed::stats::SymbolCount;
    let per_symbol = |kind, count| stats.symbols.get(0, kind, count);
    assert_eq!(
        per_symbol(hotpath::stream::StreamKind::Trade, SymbolCount::Frames),
        frames.len() as u64 / 2 + 50
    );
    assert_eq!(
        per_symbol(
            hotpath::stream::StreamKind::Trade,
            SymbolCount::DuplicateIds
        ),
        50
    );
    let mut stamps = Vec::new();
    clock.read(&mut stamps);
    // Frames alternate trades and diffs: the last is a diff, the one before it trades.
    use hotpath::stream::StreamKind;
    let (trade, depth) = (StreamKind::Trade as usize, StreamKind::Depth as usize);
    assert_eq!(
        (stamps[trade], stamps[depth]),
        (frames.len() as u64 - 1, frames.len() as u64),
        "each stream stamped with its last receive time"
    );
    assert_eq!(stats.frames.get(), frames.len() as u64 + 100);
    assert_eq!(stats.duplicates.get(), 100);
    assert_eq!(stats.gaps.get() + stats.decode_errors.get(), 0);
}

/// One-trade BTCUSDT frames with ids `ids`, split off one shared receive buffer.
fn trade_frames(ids: std::ops::Range<i64>) -> Vec<bytes::Bytes> {
    let mut received = bytes::BytesMut::new();
    let mut lengths = Vec::new();
    let mut buf = vec![0u8; 256];
    for id in ids {
        let mut m = TradesStreamEventEncoder::wrap(&mut buf).expect("fits");
        m.event_time(id).transact_time(id);
        m.trades(1)
            .expect("fits")
            .next_entry()
            .expect("fits")
            .id(id)
            .price(5)
            .qty(6)
            .is_buyer_maker(BoolEnum::True);
        m.symbol(b"BTCUSDT").expect("fits");
        let len = m.finish();
        received.extend_from_slice(&buf[..len]);
        lengths.push(len);
    }
    lengths
        .iter()
        .map(|&len| received.split_to(len).freeze())
        .collect()
}

/// The connection slot's hot path and the hold of a make-before-break overlap allocate nothing
/// per frame once warm: in the steady state `Slot::on_data` is a comparison and a store; in an
/// overlap the new connection's frames wait in the held queue (whose capacity stays from the
/// first overlap) and are released as the old connection catches up.
#[test]
fn the_slot_and_the_overlap_hold_allocate_nothing_per_frame() {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use hotpath::backoff::AttemptBudget;
    use hotpath::config::ReaderSettings;
    use hotpath::feed::frame_path::{FramePath, Held};
    use hotpath::feed::slot::{Action, ConnId, Input, Route, Slot};
    use hotpath::feed::stats::ReaderStats;

    const AHEAD: i64 = 200;
    let frames = trade_frames(1..3001);
    let (producer, mut ring) = rtrb::RingBuffer::new(1 << 13);
    let (notices, _notice_ring) = rtrb::RingBuffer::new(64);
    let stats = Arc::new(ReaderStats::default());
    let symbols = vec!["BTCUSDT".to_string()];
    let mut path = FramePath::with(&symbols, 65_535, vec![producer], notices, stats.clone());
    let mut held = Held::default();
    let now = Instant::now();
    let mut budget = AttemptBudget::new(10, Duration::from_secs(60));
    let streams = vec!["btcusdt@trade".to_string()];
    let mut slot = Slot::new(&ReaderSettings::default(), streams, 1, stats.clone(), now);
    // Opens a connection and returns it (cold: allocates).
    let mut open = |slot: &mut Slot, held: &mut Held, path: &mut FramePath| -> ConnId {
        slot.handle_timeout(now, &mut budget);
        let mut opened = None;
        while let Some(action) = slot.poll_action() {
            match action {
                Action::Open { conn, .. } => opened = Some(conn),
                Action::ReleaseHeld => path.release(held, true),
                _ => {}
            }
        }
        let conn = opened.expect("an Open");
        slot.handle(Input::Opened(conn), now);
        conn
    };
    let mut deliver = |slot: &mut Slot, held: &mut Held, path: &mut FramePath, conn, at: usize| {
        match slot.on_data(conn, now) {
            Route::Direct => path.on_frame(frames[at].clone(), at as u64),
            Route::DirectThenRelease => {
                path.on_frame(frames[at].clone(), at as u64);
                path.release(held, false);
            }
            Route::Hold => path.on_frame_holding(frames[at].clone(), at as u64, held),
            Route::Drop => {}
        }
        while ring.pop().is_ok() {}
    };
    let mut old = open(&mut slot, &mut held, &mut path);
    deliver(&mut slot, &mut held, &mut path, old, 0);
    let mut at = 1usize;
    for round in 0..2 {
        // The steady state.
        let before = allocations();
        for _ in 0..500 {
            deliver(&mut slot, &mut held, &mut path, old, at);
            at += 1;
        }
        assert_eq!(allocations() - before, 0, "round {round}: steady state");
        // A replacement (cold), whose first frame runs AHEAD frames ahead of the old one.
        slot.handle(Input::Text(old, r#"{"e":"serverShutdown","E":1}"#), now);
        let new = open(&mut slot, &mut held, &mut path);
        deliver(&mut slot, &mut held, &mut path, new, at + AHEAD as usize);
        let before = allocations();
        for i in 1..AHEAD as usize {
            deliver(
                &mut slot,
                &mut held,
                &mut path,
                new,
                at + AHEAD as usize + i,
            );
            deliver(&mut slot, &mut held, &mut path, old, at + i - 1);
        }
        if round == 1 {
            assert_eq!(allocations() - before, 0, "round {round}: overlap, warm");
        }
        assert!(!held.is_empty(), "the new connection's frames wait");
        deliver(
            &mut slot,
            &mut held,
            &mut path,
            old,
            at + AHEAD as usize - 1,
        );
        assert!(held.is_empty(), "released once the old one caught up");
        slot.handle(Input::Closed(old), now);
        while let Some(action) = slot.poll_action() {
            if action == Action::ReleaseHeld {
                path.release(&mut held, true);
            }
        }
        old = new;
        at += 2 * AHEAD as usize;
    }
    assert_eq!(stats.gaps.get(), 0);
    assert_eq!(stats.switches.get(), 2);
}

/// `feed.format = "json"`: once the pool's chunk and the depth scratch are warm, parsing a
/// JSON frame and encoding its SBE frame into the pool allocates nothing, for every stream kind;
/// nor does parsing a kline event.
#[test]
fn transcoding_json_frames_allocates_nothing_per_frame() {
    use hotpath::feed::json::{Transcoded, Transcoder};
    use hotpath::feed::pool::FramePool;
    let mut transcoder = Transcoder::new();
    let mut pool = FramePool::default();
    let mut frames = Vec::with_capacity(JSON_TEXTS.len() * 40);
    let mut run = |frames: &mut Vec<bytes::Bytes>| {
        for text in JSON_TEXTS {
            match transcoder.transcode(text, 1, &mut pool) {
                Transcoded::Frame(frame) => {
                    assert_ne!(read_everything(&frame), i64::MIN);
                    frames.push(frame);
                }
                Transcoded::Control => {}
                Transcoded::Kline => assert_eq!(transcoder.kline().candle.trades, 12),
                Transcoded::Malformed => panic!("{text}"),
            }
        }
    };
    run(&mut frames); // warm: the chunk's shared header, the scratch vectors' capacity
    let before = allocations();
    for _ in 0..30 {
        run(&mut frames);
    }
    assert_eq!(allocations() - before, 0, "transcoding allocated");
    assert_eq!(frames.len(), 31 * 4);
}

/// One JSON text frame of each stream kind, a closed kline, and a control reply.
const JSON_TEXTS: [&str; 6] = [
    r#"{"stream":"btcusdt@trade","data":{"e":"trade","E":1759750000123,"s":"BTCUSDT","t":5000000000,"p":"69769.88000000","q":"0.01301000","T":1759750000123,"m":true,"M":true}}"#,
    r#"{"stream":"btcusdt@bookTicker","data":{"u":77453519761,"s":"BTCUSDT","b":"69769.88000000","B":"2.86360000","a":"69769.89000000","A":"0.00040000"}}"#,
    r#"{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1759750000123,"s":"BTCUSDT","U":77453519695,"u":77453519761,"b":[["69769.88000000","0.00000000"],["69769.87000000","0.01000000"]],"a":[["69769.89000000","0.00000000"]]}}"#,
    r#"{"stream":"btcusdt@depth20@100ms","data":{"lastUpdateId":90000000001,"bids":[["69769.88000000","1.00000000"],["69769.87000000","2.00000000"]],"asks":[["69769.89000000","3.00000000"]]}}"#,
    r#"{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1759750020001,"s":"BTCUSDT","k":{"t":1759749960000,"T":1759750019999,"s":"BTCUSDT","i":"1m","f":4999999989,"L":5000000000,"o":"69760.01000000","c":"69769.88000000","h":"69770.00000000","l":"69759.99000000","v":"1.25000000","n":12,"x":true,"q":"87212.35000000","V":"0.50000000","Q":"34884.94000000","B":"0"}}}"#,
    r#"{"result":null,"id":1}"#,
];

/// `feed.format = "json"` through the frame path, as the reader runs it: each text frame is
/// transcoded into the frame path's own pool and queued as it is: the consumer gets the very
/// bytes the transcoder wrote (no second copy), and nothing is allocated per frame, with
/// `readers.copy_frames` on or off.
#[test]
fn json_frames_are_built_in_the_pool_and_queued_without_a_copy() {
    use std::sync::Arc;

    use hotpath::feed::frame_path::{FramePath, Origin};
    use hotpath::feed::json::{Transcoded, Transcoder};
    use hotpath::feed::pool::FramePool;
    use hotpath::feed::stats::ReaderStats;

    for copy_frames in [true, false] {
        let symbols = vec!["BTCUSDT".to_string()];
        let (producer, mut consumer) = rtrb::RingBuffer::new(64);
        let (notices, _notice_ring) = rtrb::RingBuffer::new(64);
        let stats = Arc::new(ReaderStats::default());
        let (klines, kline_ring) = rtrb::RingBuffer::new(64);
        let mut path = FramePath::with(&symbols, 65_535, vec![producer], notices, stats)
            .with_pool(copy_frames.then(FramePool::default))
            .with_klines(Some(klines));
        // Fresh ids each round, so the sequence check accepts every frame.
        let rounds: Vec<Vec<String>> = (0..=30i64)
            .map(|round| {
                JSON_TEXTS
                    .iter()
                    .map(|text| {
                        text.replace("5000000000", &(5_000_000_000 + round).to_string())
                            .replace("77453519695", &(77_453_519_695 + 67 * round).to_string())
                            .replace("77453519761", &(77_453_519_761 + 67 * round).to_string())
                            .replace("90000000001", &(90_000_000_001 + round).to_string())
                    })
                    .collect()
            })
            .collect();
        let mut transcoder = Transcoder::new();
        let mut at = 0u64;
        let mut step = |path: &mut FramePath, texts: &[String]| {
            for text in texts {
                let frame = match transcoder.transcode(text, 1, path.pool()) {
                    Transcoded::Frame(frame) => frame,
                    Transcoded::Kline => {
                        path.on_kline(transcoder.kline());
                        continue;
                    }
                    _ => continue,
                };
                at += 1;
                let written = (frame.as_ptr(), frame.len());
                path.on_frame_from(frame, at, Origin::Pooled);
                let event = consumer.pop().expect("queued");
                assert_eq!(
                    (event.frame.as_ptr(), event.frame.len()),
                    written,
                    "queued as written (copy_frames = {copy_frames})"
                );
            }
        };
        step(&mut path, &rounds[0]); // warm: the pool, the scratch
        let before = allocations();
        for texts in &rounds[1..] {
            step(&mut path, texts);
        }
        let allocated = allocations() - before;
        assert_eq!(path.stats().gaps.get(), 0);
        assert_eq!(path.stats().frames.get(), 31 * 4);
        assert_eq!(path.stats().stream_klines.get(), 31, "the closed klines");
        assert_eq!(
            kline_ring.slots(),
            31,
            "each closed kline went to the sidecar's ring"
        );
        assert_eq!(allocated, 0, "copy_frames = {copy_frames}");
    }
}

/// A `trades:` entry's fields, `raw_json` included (the trade rendered as Binance's
/// `<s>@trade` JSON), are written into one reused scratch string: no allocation per trade.
#[test]
fn trade_entry_fields_with_raw_json_allocate_nothing_per_trade() {
    use hotpath::config::KeyLayout;
    use hotpath::sink::redis::ob::BookSettings;
    use hotpath::sink::redis::state::SymbolState;

    let mut state = SymbolState::new("BTCUSDT", BookSettings::new(20, 5000))
        .with_format(KeyLayout::Plain, true);
    for frame in trade_frames(1..201) {
        let Ok(Message::TradesStreamEvent(m)) = sbe::decode(&frame) else {
            panic!("a trades frame");
        };
        state.on_trades(&m, i64::MIN, 0, 1000);
    }
    assert_eq!(state.pending.len(), 200);
    let mut text = String::with_capacity(512);
    let (mut bytes, mut raw) = (0usize, 0usize);
    let before = allocations();
    for t in &state.pending {
        state.fields(t, &mut text, |name, value| {
            bytes += name.len() + value.len();
            raw += usize::from(name == "raw_json");
        });
    }
    assert_eq!(allocations() - before, 0, "no allocation for 200 entries");
    assert_eq!(raw, 200, "every entry carries raw_json");
    assert!(bytes > 200 * 100);
}
