//! Fuzzes the datagram screen (and through it the SIP stack's parser): no input may panic, and a
//! rewrite must be something the stack accepts.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sip_gateway::guard::{ScreenLimits, Screened, screen};

fuzz_target!(|data: &[u8]| {
    if let Screened::Rewrite(bytes) = screen(data, ScreenLimits::default(), "fuzz") {
        assert!(!bytes.is_empty());
    }
});
