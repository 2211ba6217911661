//! Whatever bytes arrive, generated decoders return a value or a typed error: no panic, no
//! read out of bounds (every load is checked, so this would panic if one were not), and a
//! decoded frame can be walked completely.

use proptest::prelude::*;
use sbe_conformance::{baseline, kitchen_sink};

use super::shared_vector;

fn walk_baseline(bytes: &[u8]) {
    if let Ok(m) = baseline::decode(bytes) {
        let mut out = String::new();
        m.write_json(&mut out);
        assert!(m.encoded_length() <= bytes.len());
    }
}

fn walk_kitchen_sink(bytes: &[u8]) {
    if let Ok(m) = kitchen_sink::decode(bytes) {
        let mut out = String::new();
        m.write_json(&mut out);
        assert!(m.encoded_length() <= bytes.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        walk_baseline(&bytes);
        walk_kitchen_sink(&bytes);
    }

    #[test]
    fn mutated_reference_frames_never_panic(
        edits in proptest::collection::vec((0usize..207, any::<u8>()), 1..8),
        cut in 0usize..=207,
    ) {
        let mut bytes = shared_vector("car_example_baseline_data.sbe");
        for (at, value) in edits {
            bytes[at] = value;
        }
        walk_baseline(&bytes);
        walk_baseline(&bytes[..cut]);
    }
}
