//! The atomic re-anchor procedure against a real redis-server, standalone and as a one-node
//! cluster: the new state replaces the old whole, no temporary key or lock is left, a held
//! lock refuses a second re-anchor, and a refused build leaves the live keys untouched. With
//! `redis.keys = "plain"` (the old services' names) the same procedure on a standalone Redis;
//! on a cluster plain keys fall in different slots and the swap is refused, which is why the
//! configuration refuses plain keys with `cluster_urls`.

use hotpath::config::KeyLayout;
use hotpath::sink::redis::reanchor::{self, NewState, TempKeys};
use hotpath::sink::redis::state::Keys;
use redis::Value;

use crate::servers::RedisServer;

fn state(update_id: i64) -> NewState {
    NewState {
        ob: vec![("update_id", update_id.to_string()), ("stale", "0".into())],
        tr_1s: vec![("count", "3".into())],
        tr_5s: vec![("count", "9".into())],
        feat: vec![("book_update_id", update_id.to_string())],
    }
}

fn exists(con: &mut redis::Connection, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query::<i64>(con)
        .expect("EXISTS")
        == 1
}

fn run_procedure(con: &mut redis::Connection, layout: KeyLayout, symbol: &str) {
    let live = Keys::with(layout, symbol);
    let temp = TempKeys::with(layout, symbol);
    // The old state, with a field the new one no longer has.
    redis::pipe()
        .hset_multiple(&live.ob, &[("update_id", "1"), ("old_field", "x")])
        .query::<()>(con)
        .expect("old state");
    let granted: Option<String> = reanchor::lock(&temp, "me").query(con).expect("SET NX");
    assert_eq!(granted.as_deref(), Some("OK"));
    let refused: Option<String> = reanchor::lock(&temp, "other").query(con).expect("SET NX");
    assert_eq!(refused, None, "a held lock refuses a second re-anchor");

    let replies: Vec<Value> = reanchor::build_and_swap(&live, &temp, &state(42), "me")
        .query(con)
        .expect("swap pipeline");
    assert_eq!(replies.len(), reanchor::SWAP_REPLIES);
    assert!(reanchor::swapped(&replies), "{replies:?}");

    let ob: Vec<(String, String)> = redis::cmd("HGETALL").arg(&live.ob).query(con).expect("ob");
    assert!(ob.contains(&("update_id".into(), "42".into())), "{ob:?}");
    assert!(
        !ob.iter().any(|(k, _)| k == "old_field"),
        "replaced whole: {ob:?}"
    );
    for key in [&temp.ob, &temp.tr_1s, &temp.tr_5s, &temp.feat, &temp.lock] {
        assert!(!exists(con, key), "{key} left behind");
    }
    for key in [&live.tr_1s, &live.tr_5s, &live.feat] {
        assert!(exists(con, key), "{key} swapped in");
    }
}

#[test]
fn the_swap_replaces_the_state_whole_and_leaves_nothing_behind() {
    let server = RedisServer::start();
    let mut con = redis::Client::open(server.url())
        .expect("url")
        .get_connection()
        .expect("connection");
    run_procedure(&mut con, KeyLayout::HashTag, "BTCUSDT");
}

#[test]
fn plain_keys_swap_the_same_way_on_a_standalone_redis() {
    let server = RedisServer::start();
    let mut con = redis::Client::open(server.url())
        .expect("url")
        .get_connection()
        .expect("connection");
    run_procedure(&mut con, KeyLayout::Plain, "BTCUSDT");
    assert!(exists(&mut con, "ob:BTCUSDT") && exists(&mut con, "tr:BTCUSDT:5s"));
}

#[test]
fn plain_keys_cannot_swap_on_a_cluster() {
    let server = RedisServer::start_cluster_single_node();
    let mut con = redis::Client::open(server.url())
        .expect("url")
        .get_connection()
        .expect("connection");
    let live = Keys::with(KeyLayout::Plain, "BTCUSDT");
    let temp = TempKeys::with(KeyLayout::Plain, "BTCUSDT");
    // Even with every slot on one node, a transaction over keys of several slots is refused.
    let replies: Result<Vec<Value>, _> =
        reanchor::build_and_swap(&live, &temp, &state(42), "me").query(&mut con);
    assert!(
        !replies.as_deref().is_ok_and(reanchor::swapped),
        "{replies:?}"
    );
    let why = format!("{replies:?}");
    assert!(
        why.to_lowercase().contains("crossslot"),
        "the RENAMEs are refused for their slots: {why}"
    );
    assert!(!exists(&mut con, &live.ob), "nothing swapped in");
}

#[test]
fn the_swap_works_on_a_redis_cluster() {
    let server = RedisServer::start_cluster_single_node();
    let mut con = redis::Client::open(server.url())
        .expect("url")
        .get_connection()
        .expect("connection");
    run_procedure(&mut con, KeyLayout::HashTag, "ETHUSDT");
}

#[test]
fn a_refused_build_aborts_the_transaction_and_cleanup_removes_the_leftovers() {
    let server = RedisServer::start();
    let mut con = redis::Client::open(server.url())
        .expect("url")
        .get_connection()
        .expect("connection");
    let live = Keys::of("BNBUSDT");
    let temp = TempKeys::of("BNBUSDT");
    redis::cmd("HSET")
        .arg(&live.ob)
        .arg("update_id")
        .arg("1")
        .query::<()>(&mut con)
        .expect("old state");
    // Any write is refused from here on (as when Redis is out of memory).
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .query::<()>(&mut con)
        .expect("CONFIG SET");
    let _: Option<String> = reanchor::lock(&temp, "me").query(&mut con).unwrap_or(None);
    let replies: Result<Vec<Value>, _> =
        reanchor::build_and_swap(&live, &temp, &state(7), "me").query(&mut con);
    let swapped = replies.as_deref().is_ok_and(reanchor::swapped);
    assert!(!swapped, "{replies:?}");
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query::<()>(&mut con)
        .expect("CONFIG SET");
    let ob: String = redis::cmd("HGET")
        .arg(&live.ob)
        .arg("update_id")
        .query(&mut con)
        .expect("HGET");
    assert_eq!(ob, "1", "the live book is untouched");
    let _: Vec<Value> = reanchor::cleanup(&temp, "me")
        .query(&mut con)
        .expect("cleanup");
    for key in [&temp.ob, &temp.tr_1s, &temp.tr_5s, &temp.feat, &temp.lock] {
        assert!(!exists(&mut con, key), "{key} left behind");
    }
}
