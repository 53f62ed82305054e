//! Fuzz target: arbitrary text through the skill-expression parser; whatever parses prints to text that
//! parses to the same tree.
#![no_main]

use acd::expr::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(expr) = parse(text) {
        assert_eq!(parse(&expr.to_string()), Ok(expr));
    }
});
