//! Fuzz target: arbitrary JSON as a stored router snapshot. Restoring must succeed or fail cleanly, and a
//! restored router must run a tick without panicking.
#![no_main]

use acd::{Acd, AcdSnapshot, Input};
use domain::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(snapshot) = serde_json::from_slice::<AcdSnapshot>(data) else { return };
    if let Ok(mut acd) = Acd::restore(snapshot) {
        let _ = acd.handle(Timestamp::from_secs(1_000_000), Input::Tick);
        let _ = acd.kpis(Timestamp::from_secs(1_000_001));
    }
});
