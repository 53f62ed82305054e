//! Scenario tests on virtual time: one test per behaviour of a call, asserting what the session asks
//! its driver to do, line by line. Legs are numbered in the order the session asks for them.

// Helpers panic on bad literals by design, like the tests that call them.
#![allow(clippy::unwrap_used)]

mod common;

use call_session::{
    AgentCommand, AgentMedia, CampaignLink, CampaignWrapUp, Entry, Input, LegRef, Origin, Phase, RequestId,
    SuperviseMode, TransferTarget,
};
use common::*;
use domain::{CampaignId, LeadId, Pii, Timestamp};

const PHONE: Option<AgentMedia> = Some(AgentMedia::Phone);
const BROWSER: Option<AgentMedia> = Some(AgentMedia::Browser);

fn leg(n: u32) -> LegRef {
    LegRef(n)
}

fn number(n: &str) -> TransferTarget {
    TransferTarget::Number(call_session::DialNumber::try_from(n.to_string()).unwrap())
}

/// A queue call answered by a1's phone on leg 1, at 5 s.
fn talking_with_a1() -> World {
    let mut w = World::queue_call("support");
    w.at(0.0, Input::CallerAnswered);
    w.identified(0.1, None);
    w.offered(1.0, &[("a1", PHONE)]);
    w.at(1.1, Input::LegStarted { leg: leg(1) });
    w.at(
        5.0,
        Input::LegAnswered {
            leg: leg(1),
            usable: true,
        },
    );
    w
}

fn wrap_up(disposition: &str) -> AgentCommand {
    AgentCommand::WrapUp {
        disposition: disposition.into(),
        notes: Pii::new("notes".into()),
        campaign: CampaignWrapUp::default(),
    }
}

#[test]
fn a_direct_queue_call_is_identified_then_queued_with_its_tier_and_account_manager() {
    let mut w = World::queue_call("support");
    assert_eq!(w.log, ["log arrived"]);
    assert_eq!(w.at(0.0, Input::CallerAnswered), ["identify caller"]);
    assert_eq!(
        w.identified(0.3, Some(customer("key", 7, Some("a9")))),
        [
            "log customer_identified",
            "enqueue support p7 preferring a9",
            "log enqueued support p7"
        ]
    );
    assert!(matches!(w.s.phase(), Phase::Queued { .. }));
}

#[test]
fn a_phone_offer_rings_the_phone_and_shows_the_desktop_and_the_answer_connects() {
    let mut w = World::queue_call("support");
    w.at(0.0, Input::CallerAnswered);
    w.identified(0.1, None);
    assert_eq!(
        w.offered(1.0, &[("a1", PHONE)]),
        [
            "log offered a1",
            "desk offer a1",
            "ring a1 on leg 1 as callcenter"
        ]
    );
    assert_eq!(w.at(1.1, Input::LegStarted { leg: leg(1) }), Vec::<String>::new());
    assert_eq!(
        w.at(
            5.0,
            Input::LegAnswered {
                leg: leg(1),
                usable: true
            }
        ),
        [
            "stop playback",
            "bridge caller with leg 1",
            "acd accepted by a1",
            "log answered a1",
            "forget queue",
            "desk a1 Connected",
            "start recording"
        ]
    );
    assert!(matches!(w.s.phase(), Phase::Talking(t) if t.agent == a("a1")));
}

#[test]
fn an_offer_waits_for_the_callers_record_the_pop_needs_it() {
    let mut w = World::new(
        Origin::Inbound {
            entry: Entry::Queue(q("support")),
        },
        MONDAY_10,
    );
    w.at(0.0, Input::CallerAnswered);
    // The ACD could only offer once enqueued; an offer that races the lookup waits for it.
    w.identified(0.1, None);
    w.offered(0.2, &[("a1", PHONE)]);
    assert!(w.log.contains(&"ring a1 on leg 1 as callcenter".to_string()));
}

#[test]
fn accept_on_a_phone_offer_is_answer_on_phone_from_the_moment_it_is_offered() {
    let mut w = World::queue_call("support");
    w.at(0.0, Input::CallerAnswered);
    w.identified(0.1, None);
    w.offered(1.0, &[("a1", PHONE)]);
    // Before the INVITE is even out, and after the phone answered: the same answer.
    w.cmd(
        1.05,
        "a1",
        AgentCommand::Accept {
            sdp: Some("v=0".into()),
        },
    );
    assert_eq!(w.last_reply().unwrap(), "reply #1 answer_on_phone");
    w.at(
        2.0,
        Input::LegAnswered {
            leg: leg(1),
            usable: true,
        },
    );
    w.cmd(
        2.1,
        "a1",
        AgentCommand::Accept {
            sdp: Some("v=0".into()),
        },
    );
    assert_eq!(w.last_reply().unwrap(), "reply #2 answer_on_phone");
    w.assert_every_request_answered_once();
}

#[test]
fn a_browser_agent_accepts_with_the_softphone_and_is_answered_once_it_is_up() {
    let mut w = World::queue_call("support");
    w.at(0.0, Input::CallerAnswered);
    w.identified(0.1, None);
    assert_eq!(
        w.offered(1.0, &[("a1", BROWSER)]),
        ["log offered a1", "desk offer a1"]
    );
    assert_eq!(
        w.cmd(
            2.0,
            "a1",
            AgentCommand::Accept {
                sdp: Some("offer".into())
            }
        ),
        ["open browser of a1 on leg 1"]
    );
    // A second accept while the first is opening.
    w.cmd(
        2.1,
        "a1",
        AgentCommand::Accept {
            sdp: Some("offer".into()),
        },
    );
    assert_eq!(w.last_reply().unwrap(), "reply #2 already_accepting");
    let lines = w.at(
        2.5,
        Input::BrowserOpened {
            leg: leg(1),
            answer_sdp: "answer".into(),
        },
    );
    assert_eq!(
        &lines[..3],
        ["reply #1 ok", "desk media answer a1 answer", "stop playback"]
    );
    assert!(lines.contains(&"bridge caller with leg 1".to_string()));
    w.assert_every_request_answered_once();
}

#[test]
fn a_softphone_that_fails_to_open_keeps_the_offer_so_the_agent_can_try_again() {
    let mut w = World::queue_call("support");
    w.at(0.0, Input::CallerAnswered);
    w.identified(0.1, None);
    w.offered(1.0, &[("a1", BROWSER)]);
    w.cmd(2.0, "a1", AgentCommand::Accept { sdp: None });
    let refusal = call_session::Refusal::new("bad_sdp", "the browser brings its SDP offer");
    assert_eq!(
        w.at(2.1, Input::BrowserFailed { leg: leg(1), refusal }),
        ["reply #1 bad_sdp"]
    );
    w.cmd(
        3.0,
        "a1",
        AgentCommand::Accept {
            sdp: Some("offer".into()),
        },
    );
    assert!(w.log.contains(&"open browser of a1 on leg 2".to_string()));
}

#[test]
fn reject_gives_the_call_back_to_the_router_and_a_second_reject_is_refused() {
    let mut w = World::queue_call("support");
    w.at(0.0, Input::CallerAnswered);
    w.identified(0.1, None);
    w.offered(1.0, &[("a1", PHONE)]);
    assert_eq!(
        w.cmd(2.0, "a1", AgentCommand::Reject),
        [
            "hang up leg 1",
            "desk withdraw a1: rejected by the agent",
            "acd rejected by a1",
            "log offer_failed a1: rejected by the agent",
            "reply #1 ok"
        ]
    );
    w.cmd(2.1, "a1", AgentCommand::Reject);
    assert_eq!(w.last_reply().unwrap(), "reply #2 no_offer");
    // The phone's late answer belongs to nobody any more: it is hung up.
    assert_eq!(
        w.at(
            3.0,
            Input::LegAnswered {
                leg: leg(1),
                usable: true
            }
        ),
        ["hang up leg 1"]
    );
}

#[test]
fn rona_the_router_cancels_the_offer_and_the_phone_stops_ringing() {
    let mut w = World::queue_call("support");
    w.at(0.0, Input::CallerAnswered);
    w.identified(0.1, None);
    w.offered(1.0, &[("a1", PHONE)]);
    assert_eq!(
        w.at(
            16.0,
            Input::OfferCancelled {
                agent: a("a1"),
                reason: "NoAnswer".into()
            }
        ),
        [
            "hang up leg 1",
            "desk withdraw a1: NoAnswer",
            "log offer_failed a1: NoAnswer"
        ]
    );
    // Stale events of the cancelled ring are ignored.
    assert_eq!(
        w.at(
            16.1,
            Input::LegEnded {
                leg: leg(1),
                code: Some(487)
            }
        ),
        Vec::<String>::new()
    );
    assert!(matches!(w.s.phase(), Phase::Queued { offers, .. } if offers.is_empty()));
}

#[test]
fn an_unregistered_phone_fails_the_offer_and_the_router_hears_it() {
    let mut w = World::queue_call("support");
    w.at(0.0, Input::CallerAnswered);
    w.identified(0.1, None);
    w.offered(1.0, &[("a1", None)]);
    assert_eq!(
        w.at(
            1.1,
            Input::LegFailed {
                leg: leg(1),
                reason: "not registered".into()
            }
        ),
        [
            "desk withdraw a1: phone not registered",
            "acd rejected by a1",
            "log offer_failed a1: phone not registered"
        ]
    );
}

#[test]
fn ring_all_the_first_answer_wins_and_the_others_are_withdrawn() {
    let mut w = World::queue_call("support");
    w.at(0.0, Input::CallerAnswered);
    w.identified(0.1, None);
    w.offered(1.0, &[("a1", PHONE), ("a2", PHONE)]);
    let lines = w.at(
        3.0,
        Input::LegAnswered {
            leg: leg(2),
            usable: true,
        },
    );
    assert!(lines.contains(&"hang up leg 1".to_string()), "{lines:?}");
    assert!(lines.contains(&"desk withdraw a1: answered elsewhere".to_string()));
    assert!(lines.contains(&"acd accepted by a2".to_string()));
    // a1's phone answering a moment later is too late.
    assert_eq!(
        w.at(
            3.1,
            Input::LegAnswered {
                leg: leg(1),
                usable: true
            }
        ),
        ["hang up leg 1"]
    );
}

#[test]
fn hold_and_unhold_are_logged_shown_and_refused_when_they_make_no_sense() {
    let mut w = talking_with_a1();
    assert_eq!(
        w.cmd(10.0, "a1", AgentCommand::Hold),
        ["hold caller", "log held", "desk a1 Held", "reply #1 ok"]
    );
    w.cmd(11.0, "a1", AgentCommand::Hold);
    assert_eq!(w.last_reply().unwrap(), "reply #2 already_held");
    assert_eq!(
        w.cmd(20.0, "a1", AgentCommand::Unhold),
        ["resume caller", "log resumed", "desk a1 Connected", "reply #3 ok"]
    );
    w.cmd(21.0, "a1", AgentCommand::Unhold);
    assert_eq!(w.last_reply().unwrap(), "reply #4 not_held");
    w.cmd(22.0, "a2", AgentCommand::Hold);
    assert_eq!(w.last_reply().unwrap(), "reply #5 not_connected");
}

#[test]
fn mute_reaches_the_bridge_and_only_the_talking_agent_may_mute() {
    let mut w = talking_with_a1();
    assert_eq!(
        w.cmd(10.0, "a1", AgentCommand::Mute(true)),
        ["mute true", "reply #1 ok"]
    );
    w.cmd(11.0, "a2", AgentCommand::Mute(false));
    assert_eq!(w.last_reply().unwrap(), "reply #2 not_connected");
}

#[test]
fn a_blind_transfer_to_a_queue_starts_the_agents_wrap_up_at_once() {
    let mut w = talking_with_a1();
    w.cmd(
        10.0,
        "a1",
        AgentCommand::Transfer(TransferTarget::Queue(q("nowhere"))),
    );
    assert_eq!(w.last_reply().unwrap(), "reply #1 unknown_queue");
    assert_eq!(
        w.cmd(
            11.0,
            "a1",
            AgentCommand::Transfer(TransferTarget::Queue(q("sales")))
        ),
        [
            "stop recording",
            "hang up leg 1",
            "acd call ended",
            "desk a1 WrapUp",
            "log transferred queue:sales",
            "enqueue sales p0",
            "log enqueued sales p0",
            "reply #2 ok"
        ]
    );
    assert_eq!(
        w.s.wrap_ups().len(),
        1,
        "the transferring agent is in wrap-up now"
    );
    assert_eq!(
        w.at(
            11.2,
            Input::RecordingStopped {
                path: Some("r.wav".into())
            }
        ),
        ["log recording r.wav"]
    );
    // The form is saved while the caller waits for the next agent.
    assert_eq!(
        w.cmd(30.0, "a1", wrap_up("transferred")),
        [
            "log wrapped_up a1 transferred",
            "wrap-up done a1",
            "desk release a1",
            "reply #3 ok"
        ]
    );
}

#[test]
fn a_blind_transfer_to_a_named_agent_goes_through_the_queue_the_call_came_from() {
    let mut w = talking_with_a1();
    w.cmd(10.0, "a1", AgentCommand::Transfer(TransferTarget::Agent(a("a1"))));
    assert_eq!(w.last_reply().unwrap(), "reply #1 bad_target");
    let lines = w.cmd(11.0, "a1", AgentCommand::Transfer(TransferTarget::Agent(a("a2"))));
    assert!(
        lines.contains(&"enqueue support p0 preferring a2".to_string()),
        "{lines:?}"
    );
    assert!(lines.contains(&"log transferred agent:a2".to_string()));
}

#[test]
fn a_blind_transfer_to_a_number_answers_once_the_number_rings_and_bridges_on_answer() {
    let mut w = talking_with_a1();
    assert_eq!(
        w.cmd(10.0, "a1", AgentCommand::Transfer(number("+4930123456"))),
        ["dial sip:+4930123456@carrier.test:5060 on leg 2"]
    );
    let lines = w.at(10.2, Input::LegStarted { leg: leg(2) });
    assert_eq!(lines[0], "reply #1 ok");
    assert!(lines.contains(&"desk a1 WrapUp".to_string()), "{lines:?}");
    assert!(lines.contains(&"log transferred number:+4930123456".to_string()));
    assert_eq!(lines.last().unwrap(), "play hold music");
    assert_eq!(
        w.at(10.3, Input::RecordingStopped { path: None }),
        Vec::<String>::new()
    );
    assert_eq!(
        w.at(
            14.0,
            Input::LegAnswered {
                leg: leg(2),
                usable: true
            }
        ),
        ["stop playback", "bridge caller with leg 2"]
    );
    let end = w.at(
        60.0,
        Input::LegEnded {
            leg: leg(2),
            code: None,
        },
    );
    assert_eq!(end[0], "hang up caller");
    assert!(end.contains(&"log ended System: the transferred-to party hung up".to_string()));
}

#[test]
fn a_number_that_cannot_be_dialled_leaves_the_agent_on_the_call() {
    let mut w = talking_with_a1();
    w.cmd(10.0, "a1", AgentCommand::Transfer(number("+4930123456")));
    assert_eq!(
        w.at(
            10.2,
            Input::LegFailed {
                leg: leg(2),
                reason: "no route".into()
            }
        ),
        ["stop playback", "reply #1 unavailable"]
    );
    assert!(matches!(w.s.phase(), Phase::Talking(_)));
}

#[test]
fn a_transferred_caller_nobody_answers_for_goes_back_to_the_queue() {
    let mut w = talking_with_a1();
    w.cmd(10.0, "a1", AgentCommand::Transfer(number("+4930123456")));
    w.at(10.2, Input::LegStarted { leg: leg(2) });
    assert_eq!(
        w.at(
            40.0,
            Input::LegEnded {
                leg: leg(2),
                code: Some(480)
            }
        ),
        ["stop playback", "enqueue support p0", "log enqueued support p0"]
    );
}

#[test]
fn a_consultation_holds_the_caller_and_completing_it_hands_the_caller_over() {
    let mut w = talking_with_a1();
    w.cmd(
        9.0,
        "a1",
        AgentCommand::Consult(TransferTarget::Queue(q("sales"))),
    );
    assert_eq!(w.last_reply().unwrap(), "reply #1 bad_target");
    assert_eq!(
        w.cmd(10.0, "a1", AgentCommand::Consult(TransferTarget::Agent(a("a2")))),
        ["ring a2 on leg 2 as a1"]
    );
    w.cmd(10.1, "a1", AgentCommand::ConsultComplete);
    assert_eq!(w.last_reply().unwrap(), "reply #3 not_answered");
    assert_eq!(
        w.at(10.2, Input::LegStarted { leg: leg(2) }),
        ["reply #2 ok", "hold caller", "log held", "desk a1 Consulting"]
    );
    assert_eq!(
        w.at(
            15.0,
            Input::LegAnswered {
                leg: leg(2),
                usable: true
            }
        ),
        ["join consult leg 2"]
    );
    let lines = w.cmd(30.0, "a1", AgentCommand::ConsultComplete);
    assert_eq!(
        lines,
        [
            "leave consult",
            "stop recording",
            "hang up leg 1",
            "acd call ended",
            "desk a1 WrapUp",
            "log transferred consult:agent:a2",
            "stop playback",
            "bridge caller with leg 2",
            "log resumed",
            "reply #4 ok"
        ]
    );
    assert_eq!(w.s.wrap_ups().len(), 1, "wrap-up starts at the hand-over");
    w.assert_every_request_answered_once();
}

#[test]
fn cancelling_a_consultation_brings_the_caller_back() {
    let mut w = talking_with_a1();
    w.cmd(9.0, "a1", AgentCommand::ConsultCancel);
    assert_eq!(w.last_reply().unwrap(), "reply #1 not_consulting");
    w.cmd(10.0, "a1", AgentCommand::Consult(number("+4930999")));
    w.at(10.2, Input::LegStarted { leg: leg(2) });
    w.at(
        12.0,
        Input::LegAnswered {
            leg: leg(2),
            usable: true,
        },
    );
    assert_eq!(
        w.cmd(20.0, "a1", AgentCommand::ConsultCancel),
        [
            "leave consult",
            "hang up leg 2",
            "resume caller",
            "log resumed",
            "desk a1 Connected",
            "reply #3 ok"
        ]
    );
}

#[test]
fn a_supervisor_listens_whispers_barges_and_leaves() {
    let mut w = talking_with_a1();
    w.cmd(
        9.0,
        "a1",
        AgentCommand::Monitor {
            supervisor: a("a1"),
            mode: SuperviseMode::Listen,
            sdp: None,
        },
    );
    assert_eq!(w.last_reply().unwrap(), "reply #1 bad_target");
    assert_eq!(
        w.cmd(
            10.0,
            "a1",
            AgentCommand::Monitor {
                supervisor: a("s1"),
                mode: SuperviseMode::Listen,
                sdp: None
            }
        ),
        ["ring s1 on leg 2 as monitor"]
    );
    w.cmd(10.1, "a1", AgentCommand::MonitorMode(SuperviseMode::Whisper));
    assert_eq!(w.last_reply().unwrap(), "reply #3 not_monitoring");
    assert_eq!(w.at(10.2, Input::LegStarted { leg: leg(2) }), ["reply #2 ok"]);
    assert_eq!(
        w.at(
            12.0,
            Input::LegAnswered {
                leg: leg(2),
                usable: true
            }
        ),
        ["join monitor leg 2 listen", "log monitored s1 listen"]
    );
    assert_eq!(
        w.cmd(20.0, "a1", AgentCommand::MonitorMode(SuperviseMode::Whisper)),
        ["monitor mode whisper", "log monitored s1 whisper", "reply #4 ok"]
    );
    w.cmd(25.0, "a1", AgentCommand::MonitorMode(SuperviseMode::Barge));
    w.cmd(26.0, "a1", AgentCommand::Consult(TransferTarget::Agent(a("a2"))));
    assert_eq!(w.last_reply().unwrap(), "reply #6 already_monitored");
    assert_eq!(
        w.cmd(30.0, "a1", AgentCommand::StopMonitor),
        [
            "stop monitor",
            "hang up leg 2",
            "log monitored s1 stopped",
            "reply #7 ok"
        ]
    );
    w.cmd(31.0, "a1", AgentCommand::StopMonitor);
    assert_eq!(w.last_reply().unwrap(), "reply #8 not_monitoring");
    w.assert_every_request_answered_once();
}

#[test]
fn a_browser_supervisor_gets_the_answer_sdp_in_the_reply() {
    let mut w = talking_with_a1();
    assert_eq!(
        w.cmd(
            10.0,
            "a1",
            AgentCommand::Monitor {
                supervisor: a("s1"),
                mode: SuperviseMode::Barge,
                sdp: Some("o".into())
            }
        ),
        ["open browser of s1 on leg 2"]
    );
    assert_eq!(
        w.at(
            10.5,
            Input::BrowserOpened {
                leg: leg(2),
                answer_sdp: "ans".into()
            }
        ),
        [
            "join monitor leg 2 barge",
            "log monitored s1 barge",
            "reply #1 ok ans"
        ]
    );
    // The supervisor leaves with the agent.
    let lines = w.cmd(20.0, "a1", AgentCommand::Hangup);
    assert!(
        lines.starts_with(&["stop monitor".to_string(), "hang up leg 2".to_string()]),
        "{lines:?}"
    );
}

#[test]
fn a_caller_hanging_up_in_the_queue_is_abandoned_with_the_routers_position() {
    let mut w = World::queue_call("support");
    w.at(0.0, Input::CallerAnswered);
    w.identified(0.1, None);
    w.offered(1.0, &[("a1", PHONE)]);
    assert_eq!(
        w.at(8.0, Input::CallerHungUp),
        [
            "hang up leg 1",
            "desk withdraw a1: caller hung up",
            "abandon",
            "forget queue"
        ]
    );
    assert!(!w.s.is_ended(), "the end waits for the abandon's answer");
    assert_eq!(
        w.at(
            8.01,
            Input::Abandoned(Some(call_session::Abandonment {
                queue: q("support"),
                position: 0,
                waited_ms: 7900
            }))
        ),
        [
            "log abandoned at 0",
            "log ended Caller: caller hung up",
            "finished"
        ]
    );
    assert!(w.s.is_finished());
    w.cmd(9.0, "a1", AgentCommand::Hangup);
    assert_eq!(w.last_reply().unwrap(), "reply #1 call_ended");
}

#[test]
fn the_caller_hanging_up_ends_the_call_and_the_agent_goes_to_wrap_up() {
    let mut w = talking_with_a1();
    let lines = w.at(60.0, Input::CallerHungUp);
    assert_eq!(
        lines,
        [
            "stop recording",
            "hang up leg 1",
            "acd call ended",
            "desk a1 WrapUp"
        ]
    );
    // The recording's path is logged before the end.
    assert_eq!(
        w.at(
            60.1,
            Input::RecordingStopped {
                path: Some("c.wav".into())
            }
        ),
        ["log recording c.wav", "log ended Caller: caller hung up"]
    );
    assert!(w.s.is_ended() && !w.s.is_finished(), "a wrap-up is pending");
    // The agent's part is over: anything but the wrap-up is told the call ended.
    w.cmd(61.0, "a1", AgentCommand::Hold);
    assert_eq!(w.last_reply().unwrap(), "reply #1 call_ended");
    assert_eq!(
        w.cmd(70.0, "a1", wrap_up("resolved")),
        [
            "log wrapped_up a1 resolved",
            "wrap-up done a1",
            "desk release a1",
            "reply #2 ok",
            "finished"
        ]
    );
    assert!(w.s.is_finished());
}

#[test]
fn the_agent_hanging_up_ends_a_call_without_a_survey() {
    let mut w = talking_with_a1();
    w.cmd(10.0, "a2", AgentCommand::Hangup);
    assert_eq!(w.last_reply().unwrap(), "reply #1 not_connected");
    w.cmd(11.0, "a1", wrap_up("x"));
    assert_eq!(w.last_reply().unwrap(), "reply #2 not_in_wrap_up");
    let lines = w.cmd(20.0, "a1", AgentCommand::Hangup);
    assert!(lines.contains(&"reply #3 ok".to_string()), "{lines:?}");
    assert!(lines.contains(&"hang up caller".to_string()), "{lines:?}");
    w.at(20.1, Input::RecordingStopped { path: None });
    assert!(w.log.contains(&"log ended Agent: agent hung up".to_string()));
}

#[test]
fn an_unsaved_wrap_up_ends_with_its_window() {
    let mut w = talking_with_a1();
    w.at(
        20.0,
        Input::LegEnded {
            leg: leg(1),
            code: None,
        },
    );
    w.at(20.1, Input::RecordingStopped { path: None });
    assert_eq!(
        w.s.next_deadline(),
        Some(Timestamp::from_millis(MONDAY_10 + 20_000 + 15 * 60_000))
    );
    assert_eq!(
        w.at(20.0 + 15.0 * 60.0, Input::Tick),
        ["desk release a1", "finished"]
    );
}

#[test]
fn browser_media_lost_holds_the_caller_until_the_desktop_reattaches() {
    let mut w = World::queue_call("support");
    w.at(0.0, Input::CallerAnswered);
    w.identified(0.1, None);
    w.offered(1.0, &[("a1", BROWSER)]);
    w.cmd(
        2.0,
        "a1",
        AgentCommand::Accept {
            sdp: Some("o".into()),
        },
    );
    w.at(
        2.5,
        Input::BrowserOpened {
            leg: leg(1),
            answer_sdp: "a".into(),
        },
    );
    assert_eq!(
        w.at(30.0, Input::BrowserMediaLost { leg: leg(1) }),
        ["hold caller"]
    );
    assert_eq!(
        w.cmd(
            40.0,
            "a1",
            AgentCommand::Accept {
                sdp: Some("o2".into())
            }
        ),
        ["open browser of a1 on leg 2 attached to leg 1"]
    );
    assert_eq!(
        w.at(
            40.5,
            Input::BrowserOpened {
                leg: leg(2),
                answer_sdp: "a2".into()
            }
        ),
        ["resume caller", "desk media answer a1 a2", "reply #2 ok"]
    );
    w.assert_every_request_answered_once();
}

#[test]
fn browser_media_that_does_not_come_back_in_time_ends_the_agents_part() {
    let mut w = World::queue_call("support");
    w.at(0.0, Input::CallerAnswered);
    w.identified(0.1, None);
    w.offered(1.0, &[("a1", BROWSER)]);
    w.cmd(
        2.0,
        "a1",
        AgentCommand::Accept {
            sdp: Some("o".into()),
        },
    );
    w.at(
        2.5,
        Input::BrowserOpened {
            leg: leg(1),
            answer_sdp: "a".into(),
        },
    );
    w.at(30.0, Input::BrowserMediaLost { leg: leg(1) });
    let lines = w.at(60.0, Input::Tick);
    assert!(lines.contains(&"desk a1 WrapUp".to_string()), "{lines:?}");
    assert!(lines.contains(&"hang up caller".to_string()), "{lines:?}");
}

#[test]
fn the_demo_ivr_routes_a_caller_to_sales_and_the_survey_follows_the_agent() {
    let mut w = World::ivr_call(MONDAY_10);
    let lines = w.at(0.0, Input::CallerAnswered);
    assert!(lines.contains(&"play welcome".to_string()), "{lines:?}");
    let lines = w.at(3.0, Input::PlaybackFinished);
    assert!(lines.iter().any(|l| l.starts_with("ivr lookup")), "{lines:?}");
    let lines = w.at(
        3.2,
        Input::Ivr(ivr::IvrEvent::LookupResult {
            request: ivr::RequestId(1),
            result: ivr::LookupResult::NotFound,
        }),
    );
    assert!(
        lines.contains(&"play main-menu,menu-repeat,language-offer".to_string()),
        "{lines:?}"
    );
    let lines = w.at(5.0, Input::Digit('1'));
    assert!(lines.contains(&"enqueue sales p1".to_string()), "{lines:?}");
    w.offered(6.0, &[("a1", PHONE)]);
    w.identified(6.1, None);
    w.at(
        9.0,
        Input::LegAnswered {
            leg: leg(1),
            usable: true,
        },
    );
    // The agent hangs up; the caller stays for the survey (no end yet).
    let lines = w.cmd(60.0, "a1", AgentCommand::Hangup);
    assert!(lines.contains(&"desk a1 WrapUp".to_string()), "{lines:?}");
    assert!(lines.contains(&"play survey".to_string()), "{lines:?}");
    assert!(!w.s.is_ended());
    assert_eq!(
        w.s.wrap_ups().len(),
        1,
        "the wrap-up form comes at once, not after the survey"
    );
    w.at(60.1, Input::RecordingStopped { path: None });
    let lines = w.at(62.0, Input::Digit('5'));
    assert!(lines.contains(&"log survey".to_string()), "{lines:?}");
}

#[test]
fn after_hours_the_caller_leaves_a_voicemail_ended_by_hash() {
    let mut w = World::ivr_call(SUNDAY_10);
    w.at(0.0, Input::CallerAnswered);
    w.at(3.0, Input::PlaybackFinished);
    w.at(5.0, Input::Digit('1'));
    w.at(6.0, Input::PlaybackFinished);
    assert!(
        w.log
            .iter()
            .any(|l| l.starts_with("start voicemail voicemail-general-call-1")),
        "{:?}",
        w.log
    );
    assert_eq!(
        w.at(20.0, Input::Digit('#')),
        ["stop voicemail", "hang up caller", "delete ivr state"]
    );
    assert_eq!(
        w.at(
            20.1,
            Input::VoicemailStopped {
                path: Some("v.wav".into())
            }
        ),
        [
            "log voicemail general 14100ms",
            "log ended System: voicemail left",
            "finished"
        ]
    );
}

fn click_to_dial(media: AgentMedia, preview: bool) -> World {
    let mut w = World::new(
        Origin::ClickToDial {
            agent: a("a1"),
            number: Pii::new("+4930123456".into()),
            media,
            sdp: Some("o".into()),
            shown_as: "+4930000000".into(),
            request: RequestId(100),
            restore: Some(acd::Input::AgentReady { agent: a("a1") }),
            preview: preview.then(|| CampaignLink {
                campaign: CampaignId::new("spring").unwrap(),
                lead: LeadId::new("l1").unwrap(),
            }),
        },
        MONDAY_10,
    );
    w.requests.push(100);
    w
}

#[test]
fn click_to_dial_rings_the_agent_first_then_the_customer() {
    let mut w = click_to_dial(AgentMedia::Phone, false);
    assert_eq!(w.at(0.0, Input::Start), ["identify caller"]);
    assert_eq!(w.identified(0.2, None), ["ring a1 on leg 1 as +4915112345678"]);
    assert_eq!(
        w.at(0.3, Input::LegStarted { leg: leg(1) }),
        ["desk offer a1", "reply #100 ok"]
    );
    assert_eq!(
        w.at(
            3.0,
            Input::LegAnswered {
                leg: leg(1),
                usable: true
            }
        ),
        [
            "dial sip:+4915112345678@carrier.test:5060 on leg 2 (customer)",
            "desk a1 Dialing"
        ]
    );
    let lines = w.at(
        8.0,
        Input::LegAnswered {
            leg: leg(2),
            usable: true,
        },
    );
    assert!(
        lines.contains(&"bridge caller with leg 1".to_string()),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("acd")),
        "the router has the agent on the placed call already (the driver said so): {lines:?}"
    );
    let lines = w.cmd(60.0, "a1", AgentCommand::Hangup);
    assert!(
        lines.contains(&"acd call ended".to_string()),
        "the router hears the placed call ended: {lines:?}"
    );
    w.at(60.1, Input::RecordingStopped { path: None });
    assert_eq!(
        w.cmd(70.0, "a1", wrap_up("callback_agreed")),
        [
            "log wrapped_up a1 callback_agreed",
            "desk release a1",
            "acd a1 ready",
            "reply #2 ok",
            "finished"
        ]
    );
    w.assert_every_request_answered_once();
}

#[test]
fn a_placed_call_the_agent_cancels_while_the_customer_rings_puts_the_agent_back() {
    let mut w = click_to_dial(AgentMedia::Browser, true);
    w.at(0.0, Input::Start);
    assert_eq!(w.identified(0.2, None), ["open browser of a1 on leg 1"]);
    assert_eq!(
        w.at(
            0.4,
            Input::BrowserOpened {
                leg: leg(1),
                answer_sdp: "ans".into()
            }
        ),
        [
            "desk offer a1",
            "reply #100 ok",
            "desk media answer a1 ans",
            "dial sip:+4915112345678@carrier.test:5060 on leg 2 (customer)",
            "desk a1 Dialing"
        ]
    );
    assert_eq!(
        w.cmd(5.0, "a1", AgentCommand::Hangup),
        [
            "hang up leg 1",
            "hang up leg 2",
            "log dial_attempt no_answer",
            "desk release a1",
            "acd call ended",
            "acd a1 ready",
            "reply #1 ok",
            "log ended Agent: cancelled by the agent",
            "finished"
        ]
    );
    w.assert_every_request_answered_once();
}

#[test]
fn a_busy_customer_ends_a_placed_call_with_its_disposition() {
    let mut w = click_to_dial(AgentMedia::Phone, true);
    w.at(0.0, Input::Start);
    w.identified(0.2, None);
    w.at(0.3, Input::LegStarted { leg: leg(1) });
    w.at(
        3.0,
        Input::LegAnswered {
            leg: leg(1),
            usable: true,
        },
    );
    let lines = w.at(
        5.0,
        Input::LegEnded {
            leg: leg(2),
            code: Some(486),
        },
    );
    assert!(lines.contains(&"log dial_attempt busy".to_string()), "{lines:?}");
    assert!(lines.contains(&"log ended System: busy".to_string()), "{lines:?}");
}

#[test]
fn an_unreachable_agent_phone_refuses_the_dial_request() {
    let mut w = click_to_dial(AgentMedia::Phone, false);
    w.at(0.0, Input::Start);
    w.identified(0.2, None);
    let lines = w.at(
        0.3,
        Input::LegFailed {
            leg: leg(1),
            reason: "not registered".into(),
        },
    );
    assert_eq!(lines[0], "reply #100 phone_unreachable");
    // An error, not an offer: the desktop never showed the call.
    assert!(!w.log.iter().any(|l| l == "desk offer a1"), "{:?}", w.log);
    assert!(w.s.is_finished());
    w.assert_every_request_answered_once();
}

#[test]
fn a_callback_rings_the_agent_then_calls_the_customer_back() {
    let mut w = World::new(
        Origin::Callback {
            number: Pii::new("+4915112345678".into()),
            queue: q("sales"),
            first_seq: 0,
        },
        MONDAY_10,
    );
    assert_eq!(w.log, ["log arrived", "log enqueued sales p0"]);
    w.at(0.0, Input::Start);
    w.identified(0.0, None);
    assert_eq!(
        w.offered(30.0, &[("a1", PHONE)]),
        [
            "log offered a1",
            "desk offer a1",
            "ring a1 on leg 1 as +4915112345678"
        ]
    );
    assert_eq!(
        w.at(
            34.0,
            Input::LegAnswered {
                leg: leg(1),
                usable: true
            }
        ),
        [
            "acd accepted by a1",
            "forget queue",
            "dial sip:+4915112345678@carrier.test:5060 on leg 2 (customer)",
            "desk a1 Dialing"
        ]
    );
    let lines = w.at(
        40.0,
        Input::LegAnswered {
            leg: leg(2),
            usable: true,
        },
    );
    assert_eq!(lines[0], "settle callback done");
    assert!(
        !lines.iter().any(|l| l.starts_with("acd")),
        "accepted once: {lines:?}"
    );
}

#[test]
fn a_callback_customer_who_does_not_answer_settles_it_as_failed() {
    let mut w = World::new(
        Origin::Callback {
            number: Pii::new("+4915112345678".into()),
            queue: q("sales"),
            first_seq: 7,
        },
        MONDAY_10,
    );
    w.at(0.0, Input::Start);
    w.identified(0.0, None);
    w.offered(30.0, &[("a1", PHONE)]);
    w.at(
        34.0,
        Input::LegAnswered {
            leg: leg(1),
            usable: true,
        },
    );
    let lines = w.at(
        80.0,
        Input::LegEnded {
            leg: leg(2),
            code: Some(480),
        },
    );
    assert!(lines.contains(&"settle callback failed".to_string()), "{lines:?}");
    assert!(lines.contains(&"acd call ended".to_string()), "{lines:?}");
    assert!(
        lines.contains(&"log ended System: the customer did not answer".to_string()),
        "{lines:?}"
    );
}

#[test]
fn a_caller_who_accepts_a_callback_keeps_the_place_when_hanging_up() {
    let mut w = World::ivr_call(MONDAY_10);
    w.at(0.0, Input::CallerAnswered);
    w.at(3.0, Input::PlaybackFinished);
    w.at(
        3.2,
        Input::Ivr(ivr::IvrEvent::LookupResult {
            request: ivr::RequestId(1),
            result: ivr::LookupResult::NotFound,
        }),
    );
    w.at(5.0, Input::Digit('1'));
    // In the queue the caller presses the exit key and accepts the callback.
    w.at(10.0, Input::Digit('1'));
    w.at(12.0, Input::PlaybackFinished);
    w.at(13.0, Input::Digit('1'));
    w.at(15.0, Input::PlaybackFinished);
    w.at(16.0, Input::CallerHungUp);
    let log = w.log.join("\n");
    assert!(log.contains("log callback_requested"), "{log}");
    // Whoever hangs up first (the flow after its confirmation, or the caller), the place is kept.
    assert!(log.contains("keep place in sales for a callback"), "{log}");
    assert!(!log.contains("abandon"), "{log}");
}

fn campaign_call() -> World {
    let mut w = World::new(
        Origin::Campaign {
            link: CampaignLink {
                campaign: CampaignId::new("spring").unwrap(),
                lead: LeadId::new("l1").unwrap(),
            },
            queue: q("sales"),
            preferred: None,
            connect_by: Timestamp::from_millis(MONDAY_10 + 2_000),
            message: "prompts/identification.wav".into(),
            first_seq: 0,
        },
        MONDAY_10,
    );
    assert_eq!(
        w.at(0.0, Input::CallerAnswered),
        ["enqueue sales p9", "log enqueued sales p9"]
    );
    w
}

#[test]
fn a_campaign_call_without_an_agent_in_time_hears_the_message_and_counts_as_abandoned() {
    let mut w = campaign_call();
    w.identified(0.0, None);
    assert_eq!(
        w.at(2.0, Input::Tick),
        [
            "abandon",
            "forget queue",
            "campaign Abandoned",
            "play identification"
        ]
    );
    w.at(2.01, Input::Abandoned(None));
    let lines = w.at(9.0, Input::PlaybackFinished);
    assert!(
        lines.contains(&"log ended System: no agent in time: identification message played".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"log dial_attempt abandoned".to_string()),
        "{lines:?}"
    );
}

#[test]
fn a_campaign_call_connected_in_time_tells_the_campaign() {
    let mut w = campaign_call();
    // The first offer waits for the caller's record, as the screen pop needs it.
    assert_eq!(w.offered(0.5, &[("a1", PHONE)]), ["identify caller"]);
    w.identified(0.6, None);
    let lines = w.at(
        1.5,
        Input::LegAnswered {
            leg: leg(1),
            usable: true,
        },
    );
    assert!(
        lines.iter().any(|l| l.starts_with("campaign Connected")),
        "{lines:?}"
    );
    assert_eq!(
        w.s.next_deadline(),
        None,
        "the connect deadline no longer matters"
    );
    w.cmd(
        30.0,
        "a1",
        AgentCommand::WrapUp {
            disposition: "sale".into(),
            notes: Pii::new(String::new()),
            campaign: CampaignWrapUp {
                do_not_call: true,
                callback: None,
            },
        },
    );
    assert_eq!(w.last_reply().unwrap(), "reply #1 not_in_wrap_up");
}

#[test]
fn do_not_call_and_callbacks_are_refused_on_calls_of_no_campaign() {
    let mut w = talking_with_a1();
    w.at(10.0, Input::CallerHungUp);
    w.cmd(
        11.0,
        "a1",
        AgentCommand::WrapUp {
            disposition: "x".into(),
            notes: Pii::new(String::new()),
            campaign: CampaignWrapUp {
                do_not_call: true,
                callback: None,
            },
        },
    );
    assert_eq!(w.last_reply().unwrap(), "reply #1 not_campaign_call");
    assert_eq!(w.s.wrap_ups().len(), 1, "the form stays open");
}

#[test]
fn a_campaign_call_handed_over_by_the_dialer_continues_its_numbering_without_a_second_arrival() {
    let mut s = call_session::CallSession::new(
        domain::CallId::new("call-1").unwrap(),
        Timestamp::from_millis(MONDAY_10),
        Origin::Campaign {
            link: CampaignLink {
                campaign: CampaignId::new("spring").unwrap(),
                lead: LeadId::new("l1").unwrap(),
            },
            queue: q("sales"),
            preferred: None,
            connect_by: Timestamp::from_millis(MONDAY_10 + 2_000),
            message: "prompts/identification.wav".into(),
            // The dialer logged `arrived` (0) and the verdict (1).
            first_seq: 2,
        },
        Pii::new("+4915112345678".into()),
        Pii::new("801".into()),
        call_session::Settings::default(),
    )
    .unwrap();
    assert_eq!(s.poll_command(), None, "no second `arrived`");
    s.handle(Timestamp::from_millis(MONDAY_10), Input::CallerAnswered);
    let mut seqs = Vec::new();
    while let Some(c) = s.poll_command() {
        if let call_session::Command::Log(ev) = c {
            seqs.push(ev.seq);
        }
    }
    assert_eq!(seqs, [2], "`enqueued` follows the dialer's events");
}
