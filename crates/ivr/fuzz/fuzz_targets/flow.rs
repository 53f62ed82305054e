//! Fuzz target: arbitrary text as a flow file through the loader; it must return a set or errors, never
//! panic, and every error must name the file.
#![no_main]

use ivr::{FlowSource, Sources, compile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let sources = Sources {
        flows: vec![FlowSource { file: "main.toml".into(), text: text.to_string() }],
        ..Sources::default()
    };
    if let Err(errors) = compile(&sources) {
        assert!(errors.iter().all(|e| !e.file.is_empty() && !e.message.is_empty()));
    }
});
