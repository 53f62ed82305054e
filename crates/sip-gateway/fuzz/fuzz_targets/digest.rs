//! Fuzzes the Authorization header parser and the client-side challenge answer.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = sip_gateway::digest::parse_authorization(text);
        let _ = sip_gateway::digest::answer_challenge(text, "INVITE", "sip:x", "u", "p", "c");
    }
});
