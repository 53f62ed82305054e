//! Property tests: arbitrary event sequences never panic the interpreter and never break its contract
//! with the owner (timers, playback, the end), and arbitrary flow text never panics the loader.

// Test helpers outside #[test] functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use domain::{AgentId, CustomerId, Pii, Timestamp};
use ivr::*;
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

fn load(rel: &str) -> Arc<FlowSet> {
    Arc::new(load_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap())
}

fn demo() -> Arc<FlowSet> {
    static SET: OnceLock<Arc<FlowSet>> = OnceLock::new();
    Arc::clone(SET.get_or_init(|| load("../../ivr-scripts")))
}

fn pin_flow() -> Arc<FlowSet> {
    static SET: OnceLock<Arc<FlowSet>> = OnceLock::new();
    Arc::clone(SET.get_or_init(|| load("tests/golden")))
}

/// An abstract event; the request and timer ids are filled in from what the session asked for.
#[derive(Debug, Clone)]
enum Step {
    PromptFinished,
    Digit(char),
    FireTimer(usize),
    StaleTimer(u32),
    Lookup(u8),
    Webhook(bool),
    QueueState(u32),
    Position(u32),
    Answered,
    Rejected,
    AgentHungUp,
    CallerHungUp,
    Wait(u32),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => Just(Step::PromptFinished),
        8 => proptest::sample::select("0123456789*#".chars().collect::<Vec<_>>()).prop_map(Step::Digit),
        4 => (0usize..4).prop_map(Step::FireTimer),
        1 => (0u32..200).prop_map(Step::StaleTimer),
        2 => (0u8..3).prop_map(Step::Lookup),
        2 => any::<bool>().prop_map(Step::Webhook),
        1 => (0u32..3).prop_map(Step::QueueState),
        1 => (1u32..30).prop_map(Step::Position),
        1 => Just(Step::Answered),
        1 => Just(Step::Rejected),
        1 => Just(Step::AgentHungUp),
        1 => Just(Step::CallerHungUp),
        2 => (0u32..90_000).prop_map(Step::Wait),
    ]
}

/// Runs the steps and checks the owner-facing contract after every event.
fn run(set: Arc<FlowSet>, flow: &str, start: i64, steps: Vec<Step>, secret: Option<&str>) {
    let call = CallInfo {
        caller: Pii::new("+15550001".into()),
        called: Pii::new("+15550002".into()),
    };
    let mut session = IvrSession::new(set, flow, call).unwrap();
    let mut now = Timestamp::from_millis(start);
    let mut active_timers: Vec<TimerId> = Vec::new();
    let mut used_timers: BTreeSet<TimerId> = BTreeSet::new();
    let mut last_request = RequestId(0);
    let mut playing = false;
    let mut events = vec![IvrEvent::Started];
    let mut steps = steps.into_iter();
    while let Some(event) = events.pop() {
        if event == IvrEvent::PromptFinished && !playing {
            // The owner only reports the end of something it was playing.
        } else {
            if event == IvrEvent::PromptFinished {
                playing = false;
            }
            if let IvrEvent::TimerFired(id) = &event {
                active_timers.retain(|t| t != id);
            }
            let finished_before = session.outcome().is_some();
            let out = session.handle(now, event);
            if finished_before {
                assert!(out.is_empty(), "commands after the end: {out:?}");
            }
            for command in &out {
                match command {
                    IvrCommand::Play { .. } => {
                        assert!(!playing, "Play while playing without a StopPlayback");
                        playing = true;
                    }
                    IvrCommand::StopPlayback => {
                        assert!(playing, "StopPlayback with nothing playing");
                        playing = false;
                    }
                    IvrCommand::StartTimer { id, .. } => {
                        assert!(used_timers.insert(*id), "timer id reused");
                        active_timers.push(*id);
                    }
                    IvrCommand::CancelTimer { id } => {
                        assert!(
                            active_timers.contains(id),
                            "cancelled a timer that is not running"
                        );
                        active_timers.retain(|t| t != id);
                    }
                    IvrCommand::Lookup { request, .. }
                    | IvrCommand::Webhook { request, .. }
                    | IvrCommand::QueryQueue { request, .. } => last_request = *request,
                    IvrCommand::Log(log) => {
                        if let Some(secret) = secret {
                            let text = serde_json::to_string(&log.to_event_kind()).unwrap();
                            assert!(!text.contains(secret), "sensitive digits in a log step: {text}");
                        }
                    }
                    _ => {}
                }
            }
            if let Some(secret) = secret {
                // Text values only: numbers such as the version fingerprint may contain any digits, and
                // the caller's number is not the secret.
                let mut saved = serde_json::to_value(session.state()).unwrap();
                saved.as_object_mut().unwrap().remove("call");
                assert!(
                    !text_values(&saved).iter().any(|t| t.contains(secret)),
                    "sensitive digits in saved state"
                );
            }
            if session.outcome().is_some() {
                assert!(
                    active_timers.is_empty(),
                    "timers left running after the end: {active_timers:?}"
                );
                assert!(!playing, "still playing after the end");
            }
        }
        let Some(step) = steps.next() else { break };
        let next = match step {
            Step::PromptFinished => IvrEvent::PromptFinished,
            Step::Digit(c) => IvrEvent::Digit(c),
            Step::FireTimer(i) => match active_timers.get(i % active_timers.len().max(1)) {
                Some(id) => IvrEvent::TimerFired(*id),
                None => IvrEvent::PromptFinished,
            },
            Step::StaleTimer(n) => IvrEvent::TimerFired(TimerId(n + 1000)),
            Step::Lookup(kind) => IvrEvent::LookupResult {
                request: last_request,
                result: match kind {
                    0 => LookupResult::NotFound,
                    1 => LookupResult::Failed,
                    _ => LookupResult::Found(CustomerRecord {
                        id: CustomerId::new("c-1").unwrap(),
                        name: Pii::new("N".into()),
                        tier: "key".into(),
                        account_manager: Some(AgentId::new("am").unwrap()),
                        open_cases: 1,
                    }),
                },
            },
            Step::Webhook(ok) => IvrEvent::WebhookResult {
                request: last_request,
                result: if ok {
                    WebhookResult::Reply(Pii::new(serde_json::json!({"balance": 12, "verified": "yes"})))
                } else {
                    WebhookResult::Failed
                },
            },
            Step::QueueState(agents) => IvrEvent::QueueState {
                request: last_request,
                state: QueueSnapshot {
                    agents_available: agents,
                    waiting: 1,
                    estimated_wait: Duration::from_secs(30),
                },
            },
            Step::Position(p) => IvrEvent::QueueEvent(QueueEvent::Position {
                position: p,
                estimated_wait: Duration::from_secs(u64::from(p) * 40),
            }),
            Step::Answered => IvrEvent::QueueEvent(QueueEvent::AgentAnswered {
                agent: AgentId::new("a1").unwrap(),
            }),
            Step::Rejected => IvrEvent::QueueEvent(QueueEvent::Rejected),
            Step::AgentHungUp => IvrEvent::AgentHungUp,
            Step::CallerHungUp => IvrEvent::CallerHungUp,
            Step::Wait(ms) => {
                now = now + Duration::from_millis(u64::from(ms));
                IvrEvent::PromptFinished
            }
        };
        events.push(next);
    }
}

fn text_values(value: &serde_json::Value) -> Vec<String> {
    match value {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(items) => items.iter().flat_map(text_values).collect(),
        serde_json::Value::Object(map) => map
            .iter()
            .flat_map(|(k, v)| {
                let mut out = vec![k.clone()];
                out.extend(text_values(v));
                out
            })
            .collect(),
        _ => vec![],
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn demo_flow_keeps_its_contract(steps in proptest::collection::vec(step(), 0..60), start in 1_795_000_000_000i64..1_800_000_000_000) {
        run(demo(), "main", start, steps, None);
    }

    #[test]
    fn sensitive_pin_never_leaks(
        pin in "[0-9]{4}",
        steps in proptest::collection::vec(step(), 0..30),
    ) {
        let mut all: Vec<Step> = pin.chars().map(Step::Digit).collect();
        all.extend(steps);
        run(pin_flow(), "pin", 1_795_424_400_000, all, Some(&pin));
    }

    #[test]
    fn loader_never_panics_on_arbitrary_text(text in "\\PC{0,300}") {
        let sources = Sources {
            flows: vec![FlowSource { file: "main.toml".into(), text }],
            ..Sources::default()
        };
        let _ = compile(&sources);
    }

    #[test]
    fn loader_never_panics_on_mutated_demo(cut in 0usize..4000, insert in "[\\[\\]{}=\",a-z0-9 \\n.$#]{0,12}") {
        let text = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../ivr-scripts/main.toml")).unwrap();
        let at = text.char_indices().map(|(i, _)| i).take_while(|i| *i <= cut).last().unwrap_or(0);
        let mutated = format!("{}{}{}", &text[..at], insert, &text[at..]);
        let sources = Sources { flows: vec![FlowSource { file: "main.toml".into(), text: mutated }], ..Sources::default() };
        match compile(&sources) {
            Ok(_) => {}
            Err(errors) => {
                for error in errors {
                    prop_assert!(!error.message.is_empty());
                    prop_assert_eq!(error.file.as_str(), if error.file.starts_with("prompts") { error.file.as_str() } else { "main.toml" });
                }
            }
        }
    }
}
