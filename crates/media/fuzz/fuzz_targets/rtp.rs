//! Fuzz target: arbitrary datagrams through the RTP parser; whatever parses must serialise and re-parse equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::rtp::RtpPacket;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = RtpPacket::parse(data) {
        let bytes = packet.to_vec();
        assert_eq!(RtpPacket::parse(&bytes).ok(), Some(packet));
    }
});
