//! The config loader over arbitrary text: parsing and validation answer with an error
//! naming the problem, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::config::Config;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    if let Ok(config) = Config::from_toml(text, "fuzz.toml") {
        let _ = config.validate();
    }
});
