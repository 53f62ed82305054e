//! Scenario tests on virtual time of calls placed by the platform: click-to-dial, preview dialing,
//! callbacks and campaign calls, asserting what the session asks its driver to do, line by line. Legs are numbered in
//! the order the session asks for them.

// Helpers panic on bad literals by design, like the tests that call them.
#![allow(clippy::unwrap_used)]

mod common;

use call_session::{AgentCommand, AgentMedia, CampaignLink, CampaignWrapUp, Input, Origin, RequestId};
use common::*;
use domain::{CampaignId, LeadId, Pii, Timestamp};

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
