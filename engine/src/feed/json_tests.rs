//! Tests of the JSON transcoder: every event the simulator makes, sent as JSON, becomes the SBE
//! frame of the same event; malformed frames are told apart from control frames.

use super::*;
use crate::sbe::spot_stream::Message;
use crate::sim::encode::{encode_json_each, encode_sbe, wrap_combined};
use crate::sim::exchange::{Event, Exchange, ExchangeConfig, Payload};
use crate::stream::stream_name;

const BTC: &str = "BTCUSDT";

/// A transcoder with a pool of its own, as a reader's frame path gives it one.
struct Pooled {
    t: Transcoder,
    pool: FramePool,
}

impl Pooled {
    fn new() -> Pooled {
        Pooled {
            t: Transcoder::new(),
            pool: FramePool::default(),
        }
    }

    fn transcode(&mut self, text: &str, now_us: i64) -> Transcoded {
        self.t.transcode(text, now_us, &mut self.pool)
    }
}

fn wrapped(kind: StreamKind, payload: &str) -> String {
    let name = format!("btcusdt@{}", json_suffix(kind));
    let mut out = String::new();
    wrap_combined(&name, payload, &mut out);
    out
}

fn frame(t: &mut Pooled, text: &str, now_us: i64) -> Bytes {
    match t.transcode(text, now_us) {
        Transcoded::Frame(frame) => frame,
        other => panic!("{text}: {other:?}"),
    }
}

fn floor_ms(us: i64) -> i64 {
    us.div_euclid(1000) * 1000
}

fn sbe(event: &Event) -> Vec<u8> {
    let mut out = Vec::new();
    encode_sbe(BTC, event, &mut out);
    out
}

/// The SBE frames JSON gives for `event`, and the SBE frames of the same event as JSON sees
/// it (one trade per frame, times in whole milliseconds).
fn both(t: &mut Pooled, event: &Event) -> (Vec<Bytes>, Vec<Vec<u8>>) {
    let mut got = Vec::new();
    encode_json_each(BTC, event, |payload| {
        got.push(frame(
            t,
            &wrapped(event.key.kind, payload),
            event.event_time_us,
        ));
    });
    let ms = Event {
        event_time_us: floor_ms(event.event_time_us),
        ..event.clone()
    };
    let want = match &event.payload {
        Payload::Trades { trades, .. } => trades
            .iter()
            .map(|trade| {
                sbe(&Event {
                    payload: Payload::Trades {
                        transact_time_us: floor_ms(trade.time_us),
                        trades: vec![*trade],
                    },
                    ..ms.clone()
                })
            })
            .collect(),
        Payload::DepthDiff(_) => vec![sbe(&ms)],
        // No event time in JSON: the receive time (here the event's own) stands in.
        Payload::BestBidAsk { .. } | Payload::Depth20 { .. } => vec![sbe(event)],
    };
    (got, want)
}

#[test]
fn every_simulated_event_transcodes_to_its_sbe_frame() {
    let mut exchange = Exchange::new(ExchangeConfig::default());
    let mut events = Vec::new();
    for step in 0..300 {
        exchange.advance(1_000_000_000_000 + step * 5_123, &mut events);
    }
    let mut t = Pooled::new();
    let mut kinds = std::collections::BTreeSet::new();
    for event in events.iter().filter(|e| e.key.symbol == 0) {
        let (got, want) = both(&mut t, event);
        assert_eq!(got.len(), want.len());
        for (got, want) in got.iter().zip(&want) {
            assert_eq!(&got[..], &want[..], "{:?}", event.key.kind);
            assert!(crate::sbe::decode(got).is_ok());
        }
        kinds.insert(event.key.kind);
    }
    assert_eq!(kinds.len(), 4, "every stream kind was seen");
}

#[test]
fn control_frames_are_not_data() {
    let mut t = Pooled::new();
    for text in [
        r#"{"result":null,"id":1}"#,
        r#"{"code":2,"msg":"Invalid request","id":7}"#,
        r#"{"e":"serverShutdown","E":1770123456789}"#,
        r#"{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}"#,
    ] {
        assert!(
            matches!(t.transcode(text, 0), Transcoded::Control),
            "{text}"
        );
    }
}

#[test]
fn malformed_frames_are_told() {
    let trade =
        r#"{"e":"trade","E":1,"s":"BTCUSDT","t":5,"p":"1.5","q":"2","T":1,"m":true,"M":true}"#;
    let good = wrapped(StreamKind::Trade, trade);
    let mut t = Pooled::new();
    assert!(matches!(t.transcode(&good, 0), Transcoded::Frame(_)));
    let cases = [
        good[..good.len() - 1].to_string(),
        good.replace(r#""p":"1.5""#, r#""p":1.5"#),
        good.replace(r#""p":"1.5""#, r#""p":"1.5.0""#),
        good.replace(r#""p":"1.5""#, r#""p":"1.0000000000000000001""#),
        good.replace(r#""p":"1.5""#, r#""p":"99999999999999999999""#),
        good.replace(r#""t":5,"#, ""),
        good.replace("btcusdt@trade", "btcusdt@aggTrade"),
        good.replace("btcusdt@trade", "btcusdt"),
        format!(r#"{{"data":{trade},"stream":"btcusdt@trade"}}"#),
        format!("{good} x"),
        r#"{"stream":"btcusdt@depth@100ms","data":{"E":1,"U":1,"u":2,"b":[["1"]],"a":[]}}"#.into(),
        r#"{"stream":"btcusdt@depth@100ms","data":{"E":1,"U":1,"u":2,"a":[]}}"#.into(),
        r#"{"stream":"btcusdt@bookTicker","data":{"u":1,"b":"1","B":"1","a":"1"}}"#.into(),
        "not json".into(),
        good.replacen("stream", "strean", 1),
    ];
    for text in cases {
        assert!(
            matches!(t.transcode(&text, 0), Transcoded::Malformed),
            "{text}"
        );
    }
}

#[test]
fn decimals_stay_exact_at_the_finest_exponent() {
    let text = wrapped(
        StreamKind::BestBidAsk,
        r#"{"u":9,"s":"BTCUSDT","b":"0.1","B":"3","a":"69769.89000001","A":"0.00040000"}"#,
    );
    let mut t = Pooled::new();
    let frame = frame(&mut t, &text, 42);
    let Ok(Message::BestBidAskStreamEvent(m)) = crate::sbe::decode(&frame) else {
        panic!("not a bestBidAsk frame");
    };
    assert_eq!((m.price_exponent(), m.qty_exponent()), (-8, -8));
    assert_eq!((m.bid_price(), m.bid_qty()), (10_000_000, 300_000_000));
    assert_eq!((m.ask_price(), m.ask_qty()), (6_976_989_000_001, 40_000));
    assert_eq!((m.event_time(), m.book_update_id()), (42, 9));
    assert_eq!(m.symbol(), b"BTCUSDT");
}

#[test]
fn decimal_parse() {
    let d = |m, decimals| {
        Some(Dec {
            mantissa: m,
            decimals,
        })
    };
    assert_eq!(Dec::parse("69769.88000000"), d(6_976_988_000_000, 8));
    assert_eq!(Dec::parse("-0.5"), d(-5, 1));
    assert_eq!(Dec::parse("12"), d(12, 0));
    for bad in ["", "-", ".5", "5.", "1e3", "+1", "1.2.3", " 1", "0x1"] {
        assert_eq!(Dec::parse(bad), None, "{bad}");
    }
    assert_eq!(Dec::parse("9223372036854775808"), None);
    assert_eq!(Dec::parse("9223372036854775807"), d(i64::MAX, 0));
}

#[test]
fn stream_names_and_control_requests_in_json() {
    for kind in StreamKind::ALL {
        let name = stream_name(BTC, kind);
        let json = json_name(&name);
        let (_, suffix) = json.split_once('@').expect("a stream name");
        assert_eq!(json_kind(suffix), Some(kind), "{json}");
    }
    assert_eq!(json_name("btcusdt@bestBidAsk"), "btcusdt@bookTicker");
    assert_eq!(json_name("btcusdt@depth"), "btcusdt@depth@100ms");
    assert_eq!(
        json_control(
            r#"{"method":"SUBSCRIBE","params":["btcusdt@depth20","ethusdt@trade"],"id":3}"#,
            &[]
        ),
        r#"{"method":"SUBSCRIBE","params":["btcusdt@depth20@100ms","ethusdt@trade"],"id":3}"#
    );
}

#[test]
fn kline_streams_ride_beside_each_trade_stream() {
    let intervals = [MINUTE, Interval::of("1s").expect("1s")];
    let streams: Vec<String> = ["btcusdt@trade", "btcusdt@bestBidAsk", "ethusdt@depth"]
        .map(String::from)
        .to_vec();
    assert_eq!(
        json_names(&streams, &intervals),
        [
            "btcusdt@trade",
            "btcusdt@kline_1m",
            "btcusdt@kline_1s",
            "btcusdt@bookTicker",
            "ethusdt@depth@100ms"
        ]
    );
    assert_eq!(
        json_names(&streams, &[])[..2],
        ["btcusdt@trade", "btcusdt@bookTicker"]
    );
    assert_eq!(
        json_control(
            r#"{"method":"UNSUBSCRIBE","params":["ethusdt@trade","ethusdt@depth20"],"id":4}"#,
            &intervals[..1]
        ),
        r#"{"method":"UNSUBSCRIBE","params":["ethusdt@trade","ethusdt@kline_1m","ethusdt@depth20@100ms"],"id":4}"#
    );
    let parsed: serde_json::Value = serde_json::from_str(&json_control(
        r#"{"method":"SUBSCRIBE","params":["a@trade"],"id":1}"#,
        &intervals,
    ))
    .expect("still JSON");
    assert_eq!(parsed["params"].as_array().map(Vec::len), Some(3));
}

const MINUTE: Interval = Interval {
    name: "1m",
    ms: 60_000,
};

/// A closed 1m kline event as Binance sends it (PROTOCOL.md; Binance's kline stream docs).
const KLINE: &str = r#"{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1672515782136,"s":"BTCUSDT","k":{"t":1672515720000,"T":1672515779999,"s":"BTCUSDT","i":"1m","f":100,"L":200,"o":"0.00100000","c":"0.00200000","h":"0.00250000","l":"0.00150000","v":"1000.12345678","n":101,"x":true,"q":"1.00000001","V":"500","Q":"0.500","B":"123456"}}}"#;

fn kline(t: &mut Pooled, text: &str) -> KlineEvent {
    match t.transcode(text, 0) {
        Transcoded::Kline => *t.t.kline(),
        other => panic!("{text}: {other:?} ({:?})", t.t.malformed()),
    }
}

#[test]
fn a_kline_event_is_parsed_exactly() {
    let mut t = Pooled::new();
    let k = kline(&mut t, KLINE);
    let e15 = 10i128.pow(15);
    assert_eq!(k.symbol(), b"BTCUSDT");
    assert_eq!(
        (k.interval, k.closed, k.event_ms),
        (MINUTE, true, 1672515782136)
    );
    let c = k.candle;
    assert_eq!((c.open_ms, c.close_ms), (1672515720000, 1672515779999));
    assert_eq!((c.first_id, c.last_id, c.trades), (100, 200, 101));
    // Mantissas at 10^-18: exact, whatever decimals each value was printed with.
    assert_eq!((c.open, c.close), (e15, 2 * e15));
    assert_eq!((c.high, c.low), (25 * 10i128.pow(14), 15 * 10i128.pow(14)));
    assert_eq!(c.volume, 100_012_345_678 * 10i128.pow(10));
    assert_eq!(c.quote_volume, 100_000_001 * 10i128.pow(10));
    assert_eq!(c.taker_buy_volume, 500 * 10i128.pow(18));
    assert_eq!(c.taker_buy_quote_volume, 5 * 10i128.pow(17));
    // An open candle, a week's (it opens on a Monday), and the simulator's own form.
    let open = KLINE.replace(r#""x":true"#, r#""x":false"#);
    assert!(!kline(&mut t, &open).closed);
    let week = KLINE
        .replace("kline_1m", "kline_1w")
        .replace(r#""i":"1m""#, r#""i":"1w""#)
        .replace("1672515720000", "1672012800000")
        .replace("1672515779999", "1672617599999");
    assert_eq!(kline(&mut t, &week).interval.name, "1w");
    let interval = Interval::of("1s").expect("1s");
    let candle = crate::kline::Candle::flat(5_000, interval, 7 * e15);
    let mut sim = String::new();
    wrap_combined(
        "ethusdt@kline_1s",
        &candle.stream_json("ETHUSDT", "1s", true, 6_000),
        &mut sim,
    );
    let k = kline(&mut t, &sim);
    assert_eq!((k.symbol(), k.candle), (&b"ETHUSDT"[..], candle));
}

#[test]
fn malformed_kline_events_are_told_with_the_reason() {
    let mut t = Pooled::new();
    let cases = [
        (
            KLINE.replace(r#""v":"1000.12345678""#, r#""v":1000.1"#),
            "invalid type",
        ),
        (
            KLINE.replace(r#""v":"1000.12345678""#, r#""v":"1e3""#),
            "kline field v: \"1e3\" is not an exact",
        ),
        (
            KLINE.replace(r#""o":"0.00100000""#, r#""o":"0.0000000000000000001""#),
            "kline field o",
        ),
        (
            KLINE.replace(r#""c":"0.00200000""#, r#""c":"-1""#),
            "kline field c",
        ),
        (KLINE.replace(r#""n":101,"#, ""), "a kline field is missing"),
        (
            KLINE.replace(r#""x":true,"#, ""),
            "a kline field is missing",
        ),
        (
            KLINE.replace(r#""i":"1m""#, r#""i":"5m""#),
            "interval (i) is not its stream's",
        ),
        (
            KLINE.replace("1672515779999", "1672515779998"),
            "open and close times (t, T)",
        ),
        (
            KLINE.replace("1672515720000", "1672515720001"),
            "open and close times (t, T)",
        ),
        (KLINE.replace("kline_1m", "kline_2m"), "unknown stream kind"),
        (KLINE.replace(r#""k":{"#, r#""k":["#), "invalid type"),
        (
            KLINE.replace("btcusdt@kline", &format!("{}@kline", "x".repeat(40))),
            "longer than 32 bytes",
        ),
    ];
    for (text, reason) in cases {
        assert!(
            matches!(t.transcode(&text, 0), Transcoded::Malformed),
            "{text}"
        );
        let told = t.t.malformed().map(ToString::to_string).unwrap_or_default();
        assert!(told.contains(reason), "{text}: {told:?} lacks {reason:?}");
    }
    // A good frame after them parses: nothing of a bad one stays in the scratch.
    assert_eq!(kline(&mut t, KLINE).candle.trades, 101);
}

#[test]
fn frames_share_one_pool_chunk() {
    let mut t = Pooled::new();
    let trade =
        r#"{"e":"trade","E":1,"s":"BTCUSDT","t":5,"p":"1.5","q":"2","T":1,"m":true,"M":true}"#;
    let text = wrapped(StreamKind::Trade, trade);
    let frames: Vec<Bytes> = (0..100).map(|_| frame(&mut t, &text, 0)).collect();
    // Consecutive frames are adjacent in one chunk: no allocation per frame.
    for pair in frames.windows(2) {
        assert_eq!(
            pair[0].as_ptr().wrapping_add(pair[0].len()),
            pair[1].as_ptr()
        );
    }
}

/// Regression (found in review): a frame's exponents were minus the most decimals of its own
/// values, so a depth diff with no levels said (0, 0) and a value printed with fewer decimals
/// said more; the Redis writer takes the book's exponents from every frame, so the book's -8
/// mantissas were then published at 10^0. Every frame now says at least 8 decimals (Binance
/// prints 8): the same exponents whatever the frame holds.
#[test]
fn every_frame_says_the_same_exponents_whatever_it_holds() {
    let mut t = Pooled::new();
    let texts = [
        wrapped(
            StreamKind::Depth,
            r#"{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":5,"u":6,"b":[],"a":[]}"#,
        ),
        wrapped(
            StreamKind::Depth20,
            r#"{"lastUpdateId":7,"bids":[],"asks":[]}"#,
        ),
        wrapped(
            StreamKind::Depth,
            r#"{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":7,"u":8,"b":[["1.5","2"]],"a":[]}"#,
        ),
        wrapped(
            StreamKind::Trade,
            r#"{"e":"trade","E":1,"s":"BTCUSDT","t":5,"p":"1.5","q":"2","T":1,"m":true,"M":true}"#,
        ),
        wrapped(
            StreamKind::BestBidAsk,
            r#"{"u":9,"s":"BTCUSDT","b":"1","B":"3","a":"2","A":"4"}"#,
        ),
    ];
    let mut prices = Vec::new();
    for text in &texts {
        let frame = frame(&mut t, text, 1);
        let message = crate::sbe::decode(&frame).expect("decodes");
        let exponents = match &message {
            Message::DepthDiffStreamEvent(m) => {
                prices.extend(m.bids().map(|l| (l.price(), l.qty())));
                (m.price_exponent(), m.qty_exponent())
            }
            Message::DepthSnapshotStreamEvent(m) => (m.price_exponent(), m.qty_exponent()),
            Message::TradesStreamEvent(m) => {
                prices.extend(m.trades().map(|l| (l.price(), l.qty())));
                (m.price_exponent(), m.qty_exponent())
            }
            Message::BestBidAskStreamEvent(m) => {
                prices.push((m.bid_price(), m.bid_qty()));
                (m.price_exponent(), m.qty_exponent())
            }
        };
        assert_eq!(exponents, (-8, -8), "{text}");
    }
    assert_eq!(
        prices,
        [
            (150_000_000, 200_000_000),
            (150_000_000, 200_000_000),
            (100_000_000, 300_000_000)
        ]
    );
}
