//! Sharding symbols over several `hotpath run` instances (`--shard i/n`, `run.shard`): each
//! instance carries the symbols whose shard is `i`, so `n` instances together carry every
//! symbol exactly once, each writing its own symbols' keys and records.
//!
//! The hash is fixed forever: `shard(symbol) = mix(fnv1a64(symbol)) mod n`, where `fnv1a64` is
//! 64-bit FNV-1a over the symbol's upper-case ASCII bytes (offset basis
//! `0xcbf29ce484222325`, prime `0x100000001b3`) and `mix` is SplitMix64's finalizer
//! (`z ^= z >> 30; z *= 0xbf58476d1ce4e5b9; z ^= z >> 27; z *= 0x94d049bb133111eb;
//! z ^= z >> 31`, wrapping). It depends on nothing but those bytes: not on the process (unlike
//! std's `RandomState`), the build, the platform or the order symbols are listed in, so every
//! instance of every version agrees on who owns a symbol; the unit tests pin known values.
//! The finalizer spreads symbols that differ in a character or two (`S1USDT`, `S2USDT`) over
//! the shards evenly; Redis Cluster's CRC16 slot, tried first, is linear and put four times as
//! many of such symbols on some of 16 shards as on others.

use std::fmt;

/// Shards at most (far beyond any deployment; keeps `n` a small number).
pub const SHARDS_MAX: u16 = 1024;

/// The stable hash of `symbol` (see the module documentation).
pub fn hash(symbol: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in symbol.as_bytes() {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = h;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Instance `index` of `count`. Invariant: `index < count <= SHARDS_MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    index: u16,
    count: u16,
}

impl Shard {
    /// Parses `i/n` (`0 <= i < n <= 1024`); the error says what is wrong.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let bad = || {
            format!(
                "{text:?} is not a shard such as \"0/2\" (index/count, 0 <= index < count <= {SHARDS_MAX})"
            )
        };
        let (index, count) = text.trim().split_once('/').ok_or_else(bad)?;
        let index: u16 = index.trim().parse().map_err(|_| bad())?;
        let count: u16 = count.trim().parse().map_err(|_| bad())?;
        if count == 0 || count > SHARDS_MAX || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// The shard of `symbol` among `count`.
    pub fn of(symbol: &str, count: u16) -> u16 {
        (hash(symbol) % u64::from(count.max(1))) as u16
    }

    /// Whether this instance carries `symbol`.
    pub fn owns(&self, symbol: &str) -> bool {
        Shard::of(symbol, self.count) == self.index
    }

    /// This shard's index.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// How many shards there are.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// Why this instance refuses `symbol` (another shard owns it), or `None`.
    pub fn refusal(&self, symbol: &str) -> Option<String> {
        let owner = Shard::of(symbol, self.count);
        (owner != self.index).then(|| {
            format!(
                "{symbol} belongs to shard {owner}/{n}; this instance runs shard {self}",
                n = self.count,
            )
        })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash never changes: FNV-1a's published values before the finalizer, and pinned
    /// owners after it. A change here moves symbols between running instances.
    #[test]
    fn the_hash_never_changes() {
        let fnv = |text: &str| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for &byte in text.as_bytes() {
                h ^= u64::from(byte);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
            h
        };
        // The FNV reference test vectors (IETF draft-eastlake-fnv, FNV-1a 64).
        assert_eq!(fnv(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv("foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(hash("BTCUSDT"), PINNED[0].1);
        for (symbol, value) in PINNED {
            assert_eq!(hash(symbol), value, "{symbol}");
        }
    }

    /// Values of [`hash`], computed once; they must never change.
    const PINNED: [(&str, u64); 4] = [
        ("BTCUSDT", 0x0c32_f71a_48bb_955e),
        ("ETHUSDT", 0x15cd_dd31_44c6_1911),
        ("BNBUSDT", 0x7f39_a9cf_039e_5ccd),
        ("SOLUSDT", 0xed17_b11c_9e52_b220),
    ];

    #[test]
    fn every_symbol_has_exactly_one_owner() {
        let symbols: Vec<String> = (0..500).map(|i| format!("S{i}USDT")).collect();
        for count in [1u16, 2, 3, 7, 16] {
            let shards: Vec<Shard> = (0..count)
                .map(|i| Shard::parse(&format!("{i}/{count}")).expect("valid"))
                .collect();
            let mut per_shard = vec![0usize; count as usize];
            for symbol in &symbols {
                let owners: Vec<&Shard> = shards.iter().filter(|s| s.owns(symbol)).collect();
                assert_eq!(owners.len(), 1, "{symbol} among {count}");
                per_shard[owners[0].index() as usize] += 1;
            }
            // Spread like a fair draw: every shard within four standard deviations of its
            // share (CRC16, which is linear, put 12 on one of 16 shards and 48 on another).
            let fair = symbols.len() as f64 / f64::from(count);
            let sigma = (fair * (1.0 - 1.0 / f64::from(count))).sqrt();
            assert!(
                per_shard
                    .iter()
                    .all(|&n| (n as f64 - fair).abs() <= 4.0 * sigma),
                "{per_shard:?}"
            );
        }
    }

    #[test]
    fn shards_parse_and_bad_ones_say_why() {
        let shard = Shard::parse("1/4").expect("valid");
        assert_eq!(
            (shard.index(), shard.count(), shard.to_string()),
            (1, 4, "1/4".into())
        );
        assert_eq!(Shard::parse(" 0 / 1 ").map(|s| s.count()), Ok(1));
        for bad in ["", "1", "2/2", "0/0", "-1/2", "a/b", "0/1025", "1/2/3"] {
            let e = Shard::parse(bad).expect_err(bad);
            assert!(e.contains("is not a shard"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_refusal_names_the_owner() {
        let symbol = "BTCUSDT";
        let owner = Shard::of(symbol, 2);
        let mine = Shard::parse(&format!("{owner}/2")).expect("valid");
        let other = Shard::parse(&format!("{}/2", 1 - owner)).expect("valid");
        assert_eq!(mine.refusal(symbol), None);
        let why = other.refusal(symbol).expect("refused");
        assert!(
            why.starts_with(&format!("BTCUSDT belongs to shard {owner}/2")),
            "{why}"
        );
    }
}
