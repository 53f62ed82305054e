//! Fuzz target: arbitrary text as an uploaded customers or leads CSV. Every row is either imported or
//! reported as a problem naming its row (a row that exists); nothing panics.
#![no_main]

use crm_store::CountryCode;
use crm_store::import::{parse_customers_csv, parse_leads_csv};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // No more rows than line breaks of either kind, plus one.
    let rows = text.bytes().filter(|b| *b == b'\n' || *b == b'\r').count() as u64 + 1;
    let (customers, problems) = parse_customers_csv(text, CountryCode::default());
    assert!(customers.iter().all(|(row, _)| *row <= rows));
    assert!(problems.iter().all(|p| p.row <= rows));
    let (_leads, problems) = parse_leads_csv(text, CountryCode::default());
    assert!(problems.iter().all(|p| p.row <= rows));
});
