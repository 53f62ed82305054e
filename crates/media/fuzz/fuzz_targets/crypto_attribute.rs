//! Fuzz target: arbitrary text through the `a=crypto` parser; whatever parses must round-trip through the
//! writer. Arbitrary datagrams through SRTP/SRTCP unprotect must be rejected without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::sdes::{crypto_attribute_format, crypto_attribute_parse};
use media::srtp::{MasterKey, SrtpReceiver, SrtpSuite};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(attribute) = crypto_attribute_parse(text) {
            let written = crypto_attribute_format(&attribute);
            // Lifetimes written as 2^N come back as decimal: longer, maybe past the parser's length limit.
            if written.len() <= 1024 {
                assert_eq!(crypto_attribute_parse(&written).ok(), Some(attribute));
            }
        }
    }
    let mut receiver = SrtpReceiver::new(SrtpSuite::AesCm128HmacSha1_80, &MasterKey::from_bytes(&[1; 30]));
    assert!(receiver.unprotect_rtp(&mut data.to_vec()).is_err());
    assert!(receiver.unprotect_rtcp(&mut data.to_vec()).is_err());
});
