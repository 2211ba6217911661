//! Bytes per trade in the S3 archive's Parquet parts against the raw SBE trades frames the
//! stream carried: the simulator's market (seeded, the trades stream only) for a simulated
//! hour, every trades event encoded as Binance's SBE frame, the same trades archived as parts
//! of 1 000, 10 000 and all the hour's trades (`hotpath::archive::parquet::encode`).
//!
//! Sizes do not depend on the build profile or the machine's load: `cargo bench -p
//! hotpath-benches --bench archive_size --profile dev` gives the same figures as a release
//! build, without one.

use hotpath::archive::parquet::encode;
use hotpath::archive::{TradeRow, frame_rows};
use hotpath::sim::encode::encode_sbe;
use hotpath::sim::exchange::{Exchange, ExchangeConfig, StreamKind};

/// Simulated time per `advance`, microseconds.
const STEP_US: i64 = 10_000;
/// The simulated span: one hour, one archive part at most.
const SPAN_US: i64 = 3_600_000_000;

fn main() {
    for (symbol, rate) in [("BTCUSDT", 2_000.0), ("ETHUSDT", 500.0)] {
        measure(symbol, rate);
    }
}

fn measure(symbol: &str, actions_per_second: f64) {
    let mut exchange = Exchange::new(ExchangeConfig {
        symbols: vec![symbol.to_string()],
        seed: 7,
        actions_per_second,
        journal_max: 1 << 16,
        ..ExchangeConfig::default()
    });
    let start_us = 1_795_957_200_000_000;
    let (mut events, mut frame, mut rows, mut inexact) =
        (Vec::new(), Vec::new(), Vec::<TradeRow>::new(), Vec::new());
    let (mut frames, mut sbe_bytes) = (0usize, 0usize);
    let mut now = start_us;
    while now < start_us + SPAN_US {
        exchange.advance(now, &mut events);
        for event in events.drain(..) {
            if event.key.kind != StreamKind::Trade {
                continue;
            }
            frame.clear();
            encode_sbe(symbol, &event, &mut frame);
            frames += 1;
            sbe_bytes += frame.len();
            frame_rows(&frame, i64::MIN, &mut rows, &mut inexact);
        }
        now += STEP_US;
    }
    assert!(inexact.is_empty(), "the simulator's trades are exact");
    let trades = rows.len();
    let per = |bytes: usize| bytes as f64 / trades as f64;
    println!(
        "{symbol}: {trades} trades in {frames} SBE trades frames over a simulated hour \
         ({actions_per_second} actions/s)"
    );
    println!(
        "  SBE frames: {sbe_bytes} bytes, {:.1} bytes/trade",
        per(sbe_bytes)
    );
    for part_rows in [1_000, 10_000, trades] {
        let parquet_bytes: usize = rows
            .chunks(part_rows.max(1))
            .map(|part| encode(symbol, part).map_or(0, |b| b.len()))
            .sum();
        println!(
            "  Parquet, parts of {part_rows:>7} trades: {parquet_bytes} bytes, {:.1} bytes/trade, \
             {:.3} of the SBE bytes",
            per(parquet_bytes),
            parquet_bytes as f64 / sbe_bytes as f64
        );
    }
}
