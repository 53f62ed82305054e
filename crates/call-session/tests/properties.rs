//! Random input sequences on every origin: the session never panics, keeps its invariants after
//! every input (at most one agent talks, an offered agent never talks, nobody talks while in
//! wrap-up), answers every desktop request exactly once, and by the end has hung up or seen the end
//! of every leg it asked for.

// Helpers panic on bad literals by design, like the tests that call them.
#![allow(clippy::unwrap_used)]

mod common;

use call_session::{
    AgentCommand, AgentMedia, CampaignLink, CampaignWrapUp, Command, Entry, Input, LegRef, Origin, Refusal,
    RequestId, SuperviseMode, TransferTarget,
};
use common::*;
use domain::{CallId, CampaignId, LeadId, Pii, Timestamp};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn agent() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("a1"), Just("a2"), Just("s1")]
}

fn media() -> impl Strategy<Value = Option<AgentMedia>> {
    prop_oneof![
        Just(None),
        Just(Some(AgentMedia::Phone)),
        Just(Some(AgentMedia::Browser))
    ]
}

fn target() -> impl Strategy<Value = TransferTarget> {
    prop_oneof![
        Just(TransferTarget::Queue(q("sales"))),
        Just(TransferTarget::Queue(q("nowhere"))),
        agent().prop_map(|x| TransferTarget::Agent(a(x))),
        Just(TransferTarget::Number(
            call_session::DialNumber::try_from("+4930123".to_string()).unwrap()
        )),
    ]
}

fn command() -> impl Strategy<Value = AgentCommand> {
    let mode = prop_oneof![
        Just(SuperviseMode::Listen),
        Just(SuperviseMode::Whisper),
        Just(SuperviseMode::Barge)
    ];
    prop_oneof![
        proptest::option::of(Just("sdp".to_string())).prop_map(|sdp| AgentCommand::Accept { sdp }),
        Just(AgentCommand::Reject),
        Just(AgentCommand::Hangup),
        Just(AgentCommand::Hold),
        Just(AgentCommand::Unhold),
        any::<bool>().prop_map(AgentCommand::Mute),
        target().prop_map(AgentCommand::Transfer),
        target().prop_map(AgentCommand::Consult),
        Just(AgentCommand::ConsultComplete),
        Just(AgentCommand::ConsultCancel),
        (
            agent(),
            mode.clone(),
            proptest::option::of(Just("sdp".to_string()))
        )
            .prop_map(|(s, mode, sdp)| {
                AgentCommand::Monitor {
                    supervisor: a(s),
                    mode,
                    sdp,
                }
            }),
        mode.prop_map(AgentCommand::MonitorMode),
        Just(AgentCommand::StopMonitor),
        any::<bool>().prop_map(|dnc| AgentCommand::WrapUp {
            disposition: "done".into(),
            notes: Pii::new(String::new()),
            campaign: CampaignWrapUp {
                do_not_call: dnc,
                callback: None,
            },
        }),
    ]
}

fn input() -> impl Strategy<Value = Input> {
    let leg = (1u32..10).prop_map(LegRef);
    prop_oneof![
        Just(Input::Start),
        Just(Input::CallerAnswered),
        Just(Input::CallerHungUp),
        prop_oneof![Just('1'), Just('2'), Just('#'), Just('0')].prop_map(Input::Digit),
        Just(Input::PlaybackFinished),
        Just(Input::NothingToPlay),
        Just(Input::CallerMediaTimeout),
        proptest::option::of(Just(customer("key", 5, Some("a2")))).prop_map(Input::CallerIdentified),
        proptest::collection::vec((agent(), media()), 1..3).prop_map(|agents| {
            let names: Vec<&str> = agents.iter().map(|(x, _)| *x).collect();
            Input::Offered {
                offer: offer(names),
                media: agents.iter().map(|(x, m)| (a(x), *m)).collect(),
            }
        }),
        agent().prop_map(|x| Input::OfferCancelled {
            agent: a(x),
            reason: "NoAnswer".into()
        }),
        Just(Input::QueuePosition {
            position: 2,
            estimated_wait_secs: Some(30)
        }),
        Just(Input::Overflowed {
            target: "voicemail".into()
        }),
        Just(Input::Abandoned(None)),
        leg.clone().prop_map(|leg| Input::LegStarted { leg }),
        leg.clone().prop_map(|leg| Input::LegFailed {
            leg,
            reason: "x".into()
        }),
        (leg.clone(), any::<bool>()).prop_map(|(leg, usable)| Input::LegAnswered { leg, usable }),
        (leg.clone(), proptest::option::of(Just(486u16)))
            .prop_map(|(leg, code)| Input::LegEnded { leg, code }),
        leg.clone().prop_map(|leg| Input::BrowserOpened {
            leg,
            answer_sdp: "ans".into()
        }),
        leg.clone().prop_map(|leg| Input::BrowserFailed {
            leg,
            refusal: Refusal::new("bad_sdp", "x")
        }),
        leg.prop_map(|leg| Input::BrowserMediaLost { leg }),
        Just(Input::RecordingStopped { path: None }),
        Just(Input::VoicemailStopped { path: None }),
        Just(Input::VoicemailFailed),
        (agent(), command()).prop_map(|(x, command)| Input::Command {
            request: RequestId(0),
            agent: a(x),
            command,
        }),
        Just(Input::Tick),
    ]
}

fn origin(kind: u8) -> (Origin, i64) {
    match kind {
        0 => (
            Origin::Inbound {
                entry: Entry::Queue(q("support")),
            },
            MONDAY_10,
        ),
        1 | 5 => {
            let session = ivr::IvrSession::new(
                flows(),
                "main",
                ivr::CallInfo {
                    caller: Pii::new("+4915112345678".into()),
                    called: Pii::new("801".into()),
                },
            )
            .unwrap();
            (
                Origin::Inbound {
                    entry: Entry::Ivr(Box::new(session)),
                },
                if kind == 5 { SUNDAY_10 } else { MONDAY_10 },
            )
        }
        2 => (
            Origin::ClickToDial {
                agent: a("a1"),
                number: Pii::new("+4930123456".into()),
                media: AgentMedia::Phone,
                sdp: None,
                shown_as: "+4930000000".into(),
                request: RequestId(1_000_000),
                restore: Some(acd::Input::AgentReady { agent: a("a1") }),
                preview: None,
            },
            MONDAY_10,
        ),
        3 => (
            Origin::Callback {
                number: Pii::new("+4915112345678".into()),
                queue: q("sales"),
                first_seq: 0,
            },
            MONDAY_10,
        ),
        _ => (
            Origin::Campaign {
                link: CampaignLink {
                    campaign: CampaignId::new("c").unwrap(),
                    lead: LeadId::new("l").unwrap(),
                },
                queue: q("sales"),
                preferred: None,
                connect_by: Timestamp::from_millis(MONDAY_10 + 2_000),
                message: "m.wav".into(),
                first_seq: 0,
            },
            MONDAY_10,
        ),
    }
}

/// Drives a session with `inputs`, numbering requests; returns replies counted per request.
fn run(kind: u8, inputs: Vec<(u16, Input)>) -> Result<(), TestCaseError> {
    let (origin, t0) = origin(kind);
    let mut s = call_session::CallSession::new(
        CallId::new("call-1").unwrap(),
        Timestamp::from_millis(t0),
        origin,
        Pii::new("+4915112345678".into()),
        Pii::new("801".into()),
        settings(),
    )
    .unwrap();
    let mut now = t0;
    let mut next_request = 1u64;
    let mut sent: Vec<u64> = Vec::new();
    if kind == 2 {
        sent.push(1_000_000);
    }
    let mut replies: BTreeMap<u64, u32> = BTreeMap::new();
    let mut pending_closes = 0u32;
    let drain = |s: &mut call_session::CallSession, replies: &mut BTreeMap<u64, u32>, closes: &mut u32| {
        while let Some(c) = s.poll_command() {
            match c {
                Command::Reply { request, .. } => *replies.entry(request.0).or_default() += 1,
                Command::StopRecording | Command::StopVoicemail | Command::Abandon => *closes += 1,
                _ => {}
            }
        }
    };
    for (delay, input) in inputs {
        now += i64::from(delay) * 100;
        let input = match input {
            Input::Command { agent, command, .. } => {
                let request = next_request;
                next_request += 1;
                sent.push(request);
                Input::Command {
                    request: RequestId(request),
                    agent,
                    command,
                }
            }
            other => other,
        };
        s.handle(Timestamp::from_millis(now), input);
        drain(&mut s, &mut replies, &mut pending_closes);
        prop_assert!(s.check_invariants().is_ok(), "{:?}", s.check_invariants());
        for (r, n) in &replies {
            prop_assert!(*n <= 1, "request #{r} answered {n} times");
        }
    }
    // Bring the call to its end: the caller hangs up, outstanding answers come in, time passes.
    s.handle(Timestamp::from_millis(now), Input::CallerHungUp);
    for _ in 0..4 {
        drain(&mut s, &mut replies, &mut pending_closes);
        s.handle(
            Timestamp::from_millis(now),
            Input::RecordingStopped { path: None },
        );
        s.handle(
            Timestamp::from_millis(now),
            Input::VoicemailStopped { path: None },
        );
        s.handle(Timestamp::from_millis(now), Input::Abandoned(None));
    }
    let legs: Vec<LegRef> = s.open_legs().collect();
    for leg in legs {
        s.handle(Timestamp::from_millis(now), Input::LegEnded { leg, code: None });
    }
    now += 3_600_000;
    s.handle(Timestamp::from_millis(now), Input::Tick);
    drain(&mut s, &mut replies, &mut pending_closes);
    prop_assert!(
        s.is_finished(),
        "the call and its wrap-ups are over: {:?}",
        s.phase()
    );
    prop_assert_eq!(s.open_legs().count(), 0);
    prop_assert!(s.check_invariants().is_ok(), "{:?}", s.check_invariants());
    for r in sent {
        prop_assert_eq!(
            replies.get(&r).copied().unwrap_or(0),
            1,
            "request #{} answered once",
            r
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_inputs_never_panic_keep_the_invariants_and_answer_every_request_once(
        kind in 0u8..6,
        inputs in proptest::collection::vec((0u16..50, input()), 0..60),
    ) {
        run(kind, inputs)?;
    }
}
