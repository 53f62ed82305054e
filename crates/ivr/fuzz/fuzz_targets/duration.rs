//! Fuzz target: arbitrary text through the duration parser; whatever parses formats and re-parses equal.
#![no_main]

use ivr::duration::{format_duration, parse_duration};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(d) = parse_duration(text) {
        assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }
});
