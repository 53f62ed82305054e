//! Fuzz target: arbitrary datagrams through the RTCP compound parser; whatever parses must round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::rtcp::RtcpCompound;

fuzz_target!(|data: &[u8]| {
    if let Ok(compound) = RtcpCompound::parse(data) {
        if let Ok(bytes) = compound.to_bytes() {
            assert_eq!(RtcpCompound::parse(&bytes).ok(), Some(compound));
        }
    }
});
