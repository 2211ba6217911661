//! Fuzzes `hotpath::sbe::decode`, the entry point every frame from the network goes through:
//! whatever the bytes, it must return a message or an error and never panic or read out of
//! bounds, and a frame it accepts must render to JSON, which walks every field, group entry
//! and the symbol.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = hotpath::sbe::decode(data) {
        assert!(message.encoded_length() <= data.len());
        let mut json = String::new();
        message.write_json(&mut json);
    }
});
