//! Fuzz target: arbitrary (timestamp, payload) sequences through the RFC 4733 receiver.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::dtmf::rfc4733::Rfc4733Receiver;

fuzz_target!(|data: &[u8]| {
    let mut receiver = Rfc4733Receiver::new();
    for chunk in data.chunks(6) {
        let timestamp = u32::from(chunk.first().copied().unwrap_or(0)) * 160;
        receiver.handle_packet(timestamp, chunk.get(1..).unwrap_or(&[]));
        while receiver.poll_digit().is_some() {}
    }
    receiver.flush();
});
