//! Fuzz target: arbitrary WebSocket text frames from an agent's desktop and from a wallboard. Each is
//! parsed into a request or refused with a message the client is told; none may panic.
#![no_main]

use agent_desk::protocol::{AgentRequest, SupervisorRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(refused) = AgentRequest::parse(text) {
        assert!(!refused.message.is_empty());
    }
    if let Err(refused) = SupervisorRequest::parse(text) {
        assert!(!refused.message.is_empty());
    }
});
