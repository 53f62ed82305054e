//! Fuzz target: arbitrary JSON lines as router inputs (one per line, time advancing by the line number).
//! The router must accept or refuse each without panicking and keep its invariants.
#![no_main]

use acd::{Acd, AcdConfig, AgentConfig, Input, QueueConfig, QueueMembership, Strategy};
use domain::{AgentId, QueueId, Timestamp};
use libfuzzer_sys::fuzz_target;

fn router() -> Option<Acd> {
    let q = |s: &str| QueueId::new(s).ok();
    let mut ring = QueueConfig::new(q("ring")?);
    ring.strategy = Strategy::RingAll;
    let queues = vec![QueueConfig::new(q("support")?), ring];
    let agents = (0..4)
        .map(|i| {
            Some(AgentConfig {
                id: AgentId::new(format!("a{i}")).ok()?,
                skills: Default::default(),
                queues: vec![
                    QueueMembership { queue: q("support")?, rank: 1 },
                    QueueMembership { queue: q("ring")?, rank: 1 + (i % 2) },
                ],
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Acd::new(AcdConfig { queues, agents, random_seed: 3 }).ok()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Some(mut acd) = router() else { return };
    for (n, line) in text.lines().enumerate() {
        let Ok(input) = serde_json::from_str::<Input>(line) else { continue };
        let _ = acd.handle(Timestamp::from_secs(n as i64), input);
        acd.drain_outputs().for_each(drop);
        assert_eq!(acd.check_invariants(), Ok(()));
    }
});
