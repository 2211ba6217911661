//! The Kinesis writer on streams of several shards, against kinesalite: one lane per open
//! shard, each symbol's records on the shard its partition key's MD5 says, every trade exactly
//! once and in order per symbol; and a shard split mid-run, which the writer notices (records
//! answered from another shard than their lane's) and follows without reordering a symbol.

use hotpath::sink::kinesis::shards::hash_key;

use crate::fault_proxy::FaultProxy;
use crate::feed::Sim;
use crate::servers::{KinesisEmulator, ShardRecords, TempDir};
use crate::sinks::{
    TRADE_STREAM, assert_exactly_once, kinesis_settings, kinesis_trades, run, run_config, runtime,
    test_client, wait_for, written,
};

/// Two symbols in each quarter of the hash key space (MD5, `printf SYMBOL | md5sum`): ETHUSDT
/// and TRXUSDT in the first, ADAUSDT and DOGEUSDT in the second, BTCUSDT and SOLUSDT in the
/// third, BNBUSDT and XRPUSDT in the fourth.
const SYMBOLS: [&str; 8] = [
    "BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "TRXUSDT",
];

/// Eight symbols at 150 actions/s each: about the flow the two-symbol tests send, which
/// kinesalite keeps up with on a loaded machine.
fn sim() -> Sim {
    Sim::start(|c| {
        c.exchange.symbols = SYMBOLS.iter().map(|s| s.to_string()).collect();
        c.exchange.actions_per_second = 150.0;
    })
}

/// Checks that every record of every shard has a partition key whose hash key is in the
/// shard's range (kinesalite, like Kinesis, places records by it; the check proves the
/// partition key is the symbol and nothing overrode it); returns the shards that hold records.
fn assert_placed_by_md5(shards: &[ShardRecords]) -> usize {
    for shard in shards {
        for (key, _, _) in &shard.records {
            let hash = hash_key(key);
            assert!(
                (shard.start..=shard.end).contains(&hash),
                "{key} ({hash}) on {} ({}..={})",
                shard.id,
                shard.start,
                shard.end
            );
        }
    }
    shards.iter().filter(|s| !s.records.is_empty()).count()
}

#[test]
fn a_four_shard_stream_gets_every_trade_once_in_order_on_its_symbols_md5_shard() {
    let sim = sim();
    let emulator = KinesisEmulator::start();
    runtime().block_on(emulator.create_stream(TRADE_STREAM, 4));
    let dir = TempDir::new("kshards-four");
    let config = run_config(&sim, |c| {
        c.symbols = SYMBOLS.iter().map(|s| s.to_string()).collect();
        c.kinesis = Some(kinesis_settings(&emulator.endpoint(), dir.path()));
    });
    let summary = run(&config, Some(test_client(&emulator.endpoint())), |sinks| {
        wait_for("3000 records in Kinesis", || {
            written(sinks, "kinesis") >= 3000
        });
    });
    let k = &summary.sinks["kinesis"];
    assert!(k.flushed && k.written == k.received, "{k:?}");
    assert_eq!((k.dead_lettered, k.dropped), (0, 0), "{k:?}");
    let shards = runtime().block_on(emulator.read_by_shard(TRADE_STREAM));
    assert_eq!(shards.len(), 4);
    assert_eq!(assert_placed_by_md5(&shards), 4, "two symbols per shard");
    let records: Vec<_> = shards.into_iter().flat_map(|s| s.records).collect();
    let trades = kinesis_trades(&records);
    for symbol in SYMBOLS {
        assert_exactly_once(&sim, symbol, &trades[symbol], "kinesis");
    }
}

/// Splits `stream`'s shard `shard` at the middle of its range (kinesalite closes it and opens
/// two children).
async fn split(emulator: &KinesisEmulator, stream: &str, shard: &ShardRecords) {
    let client = test_client(&emulator.endpoint());
    let middle = shard.start + (shard.end - shard.start) / 2;
    client
        .split_shard()
        .stream_name(stream)
        .shard_to_split(&shard.id)
        .new_starting_hash_key(middle.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("SplitShard {}: {e:?}", shard.id));
}

#[test]
fn a_shard_split_mid_run_is_followed_without_reordering_a_symbol() {
    let sim = sim();
    let emulator = KinesisEmulator::start();
    runtime().block_on(emulator.create_stream(TRADE_STREAM, 2));
    let proxy = FaultProxy::start(emulator.addr());
    let dir = TempDir::new("kshards-split");
    let config = run_config(&sim, |c| {
        c.symbols = SYMBOLS.iter().map(|s| s.to_string()).collect();
        let mut k = kinesis_settings(&proxy.endpoint(), dir.path());
        // Only a misplaced record can make the writer list the shards again.
        k.shard_refresh = None;
        c.kinesis = Some(k);
    });
    let mut listings_before = 0;
    let summary = run(&config, Some(test_client(&proxy.endpoint())), |sinks| {
        wait_for("first writes", || written(sinks, "kinesis") >= 1000);
        listings_before = proxy.faults().requests("ListShards");
        let shards = runtime().block_on(emulator.read_by_shard(TRADE_STREAM));
        runtime().block_on(split(&emulator, TRADE_STREAM, &shards[0]));
        wait_for("a listing after the split", || {
            proxy.faults().requests("ListShards") > listings_before
        });
        let after = written(sinks, "kinesis");
        wait_for("writes after the split", || {
            written(sinks, "kinesis") >= after + 2000
        });
    });
    let k = &summary.sinks["kinesis"];
    assert!(k.flushed && k.written == k.received, "{k:?}");
    assert_eq!((k.dead_lettered, k.dropped), (0, 0), "{k:?}");
    assert!(listings_before >= 1, "the shards were listed at start");
    let shards = runtime().block_on(emulator.read_by_shard(TRADE_STREAM));
    assert_eq!(
        shards.len(),
        4,
        "the parent, its untouched sibling, two children"
    );
    assert_eq!(
        assert_placed_by_md5(&shards),
        4,
        "records before and after the split"
    );
    // Shard-id order reads a parent before its children: each symbol's records in order.
    let records: Vec<_> = shards.into_iter().flat_map(|s| s.records).collect();
    let trades = kinesis_trades(&records);
    for symbol in SYMBOLS {
        assert_exactly_once(&sim, symbol, &trades[symbol], "kinesis");
    }
}
