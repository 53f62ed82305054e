//! Fuzz target: arbitrary text through the SDP parser and negotiation; an accepted offer must yield an answer
//! that parses again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::g711::G711;
use media::sdp;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(offer) = sdp::parse(&text)
        && let Ok(negotiated) = sdp::negotiate(&offer, &[G711::Pcmu, G711::Pcma])
    {
        let answer = sdp::answer(&negotiated, "127.0.0.1:20000".parse().unwrap(), 1, 1);
        assert!(sdp::parse(&answer).is_ok());
    }
});
