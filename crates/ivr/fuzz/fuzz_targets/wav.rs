//! Fuzz target: arbitrary bytes as a prompt file through the WAV header check; it must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ivr::wav::check_wav(data);
});
