//! Fuzz target: arbitrary text as a phone number (typed by an agent, imported, or a SIP From user).
//! What normalises is E.164 and normalises again to itself.
#![no_main]

use crm_store::{CountryCode, normalize_phone};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(number) = normalize_phone(text, CountryCode::default()) {
        let e164 = number.as_str();
        assert!(e164.starts_with('+') && e164[1..].bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(normalize_phone(e164, CountryCode::default()).ok(), Some(number));
    }
});
