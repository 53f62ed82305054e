//! Fuzz target: arbitrary bytes through the WAV prompt parser (never panics, errors say what is wrong).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = media::wav::parse_wav(data);
});
