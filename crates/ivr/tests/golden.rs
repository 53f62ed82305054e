//! Golden tests of the interpreter: flows driven by scripted events at chosen instants, compared with
//! the exact command sequence they must produce (in the compact form of `IvrCommand`'s `Display`).

// Test helpers outside #[test] functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use domain::{AgentId, CustomerId, Pii, Timestamp};
use ivr::*;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Monday 2026-11-23 10:00 in Berlin (09:00 UTC): the demo's business hours.
const MONDAY_10_BERLIN: i64 = 1_795_424_400_000;
/// Monday 2026-11-23 21:00 in Berlin: after hours.
const MONDAY_21_BERLIN: i64 = 1_795_464_000_000;

fn demo() -> Arc<FlowSet> {
    Arc::new(load_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../ivr-scripts")).unwrap())
}

fn golden_set() -> Arc<FlowSet> {
    Arc::new(load_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")).unwrap())
}

fn call() -> CallInfo {
    CallInfo {
        caller: Pii::new("+4930555000111".into()),
        called: Pii::new("+4930999".into()),
    }
}

struct Driver {
    session: IvrSession,
    now: Timestamp,
    commands: Vec<IvrCommand>,
}

impl Driver {
    fn new(set: Arc<FlowSet>, flow: &str, at: i64) -> Self {
        Self {
            session: IvrSession::new(set, flow, call()).unwrap(),
            now: Timestamp::from_millis(at),
            commands: vec![],
        }
    }
    fn after(&mut self, d: Duration) -> &mut Self {
        self.now = self.now + d;
        self
    }
    /// Sends an event and returns the commands as text.
    fn send(&mut self, event: IvrEvent) -> Vec<String> {
        let out = self.session.handle(self.now, event);
        let text = out.iter().map(ToString::to_string).collect();
        self.commands = out;
        text
    }
    fn timer(&self, n: usize) -> TimerId {
        let ids: Vec<TimerId> = self
            .commands
            .iter()
            .filter_map(|c| match c {
                IvrCommand::StartTimer { id, .. } => Some(*id),
                _ => None,
            })
            .collect();
        ids[n]
    }
    fn request(&self) -> RequestId {
        self.commands
            .iter()
            .find_map(|c| match c {
                IvrCommand::Lookup { request, .. }
                | IvrCommand::Webhook { request, .. }
                | IvrCommand::QueryQueue { request, .. } => Some(*request),
                _ => None,
            })
            .unwrap()
    }
}

/// Saved state as JSON, without the version fingerprint and counters (numbers that may hold any digits).
fn saved_without_numbers(session: &IvrSession) -> String {
    let mut saved = serde_json::to_value(session.state()).unwrap();
    let object = saved.as_object_mut().unwrap();
    object.remove("flow_set_version");
    object.remove("next_id");
    saved.to_string()
}

/// Drives the demo from the start to the main menu prompt for an unknown caller.
fn to_main_menu(d: &mut Driver) {
    d.send(IvrEvent::Started);
    d.send(IvrEvent::PromptFinished);
    let request = d.request();
    d.send(IvrEvent::LookupResult {
        request,
        result: LookupResult::NotFound,
    });
}

#[test]
fn sales_call_with_announcements_agent_and_survey() {
    let mut d = Driver::new(demo(), "main", MONDAY_10_BERLIN);
    assert_eq!(
        d.send(IvrEvent::Started),
        ["log node main/welcome", "play welcome"]
    );
    assert_eq!(
        d.send(IvrEvent::PromptFinished),
        [
            "log node main/hours",
            "log node main/identify",
            "lookup 1 caller",
            "timer 2 2s"
        ]
    );
    assert_eq!(
        d.send(IvrEvent::LookupResult {
            request: RequestId(1),
            result: LookupResult::NotFound
        }),
        [
            "cancel 2",
            "log crm not_found",
            "log node main/standard",
            "log node main/main_menu",
            "play main-menu,menu-repeat,language-offer barge-in"
        ]
    );
    // The caller knows the menu and presses 1 during the prompt.
    assert_eq!(
        d.send(IvrEvent::Digit('1')),
        [
            "stop",
            "log node main/sales key=1",
            "enqueue sales priority=1 skills=\"sales\"",
            "timer 3 45s",
            "timer 4 1m"
        ]
    );
    let announce = d.timer(0);
    assert!(
        d.send(IvrEvent::QueueEvent(QueueEvent::Position {
            position: 3,
            estimated_wait: Duration::from_secs(150)
        }))
        .is_empty()
    );
    d.after(Duration::from_secs(45));
    assert_eq!(
        d.send(IvrEvent::TimerFired(announce)),
        [
            "play queue-position,num-3,queue-wait,num-3,minutes barge-in",
            "timer 5 45s"
        ]
    );
    assert!(d.send(IvrEvent::PromptFinished).is_empty());
    // Keys other than the exit key do nothing while waiting.
    assert!(d.send(IvrEvent::Digit('7')).is_empty());
    d.after(Duration::from_secs(5));
    let agent = AgentId::new("alice").unwrap();
    assert_eq!(
        d.send(IvrEvent::QueueEvent(QueueEvent::AgentAnswered {
            agent: agent.clone()
        })),
        ["cancel 4", "cancel 5"]
    );
    assert_eq!(d.session.state().phase, Phase::Connected { agent });
    // Stale timers and keys during the conversation are ignored.
    assert!(d.send(IvrEvent::TimerFired(announce)).is_empty());
    assert!(d.send(IvrEvent::Digit('1')).is_empty());
    d.after(Duration::from_secs(120));
    assert_eq!(
        d.send(IvrEvent::AgentHungUp),
        ["log node main/survey", "play survey barge-in"]
    );
    assert_eq!(d.send(IvrEvent::PromptFinished), ["timer 6 6s"]);
    assert_eq!(
        d.send(IvrEvent::Digit('5')),
        [
            "cancel 6",
            "log survey 5",
            "log node main/goodbye key=5",
            "play goodbye"
        ]
    );
    assert_eq!(d.send(IvrEvent::PromptFinished), ["hangup completed"]);
    assert_eq!(
        d.session.outcome(),
        Some(&Outcome::HungUp {
            reason: "completed".into()
        })
    );
    assert!(
        d.send(IvrEvent::Digit('1')).is_empty(),
        "a finished session ignores everything"
    );
}

#[test]
fn vip_caller_gets_priority_and_their_account_manager() {
    let mut d = Driver::new(demo(), "main", MONDAY_10_BERLIN);
    d.send(IvrEvent::Started);
    d.send(IvrEvent::PromptFinished);
    let record = CustomerRecord {
        id: CustomerId::new("c-42").unwrap(),
        name: Pii::new("Ada Lovelace".into()),
        tier: "key".into(),
        account_manager: Some(AgentId::new("bob").unwrap()),
        open_cases: 2,
    };
    let request = d.request();
    assert_eq!(
        d.send(IvrEvent::LookupResult {
            request,
            result: LookupResult::Found(record)
        }),
        [
            "cancel 2",
            "log customer c-42 tier=key",
            "log crm found",
            "log node main/vip_check",
            "log node main/vip",
            "log node main/vip_greeting",
            "play welcome-key-customer barge-in"
        ]
    );
    // The key customer is greeted as one, then hears the menu.
    assert_eq!(
        d.send(IvrEvent::PromptFinished),
        [
            "log node main/main_menu",
            "play main-menu,menu-repeat,language-offer barge-in"
        ]
    );
    d.send(IvrEvent::PromptFinished);
    assert_eq!(
        d.send(IvrEvent::Digit('0')),
        [
            "cancel 3",
            "log node main/operator key=0",
            "enqueue operator priority=9 preferred=bob"
        ]
    );
    // The customer's name is personal data: kept, but never printed.
    assert_eq!(
        d.session.state().vars.get("customer.name"),
        Some(&Value::Personal(Pii::new("Ada Lovelace".into())))
    );
    assert!(!format!("{:?}", d.session.state()).contains("Ada"));
}

#[test]
fn after_hours_silence_ends_in_voicemail() {
    let mut d = Driver::new(demo(), "main", MONDAY_21_BERLIN);
    d.send(IvrEvent::Started);
    assert_eq!(
        d.send(IvrEvent::PromptFinished),
        [
            "log node main/hours",
            "log node main/after_hours",
            "play closed,after-hours-menu barge-in"
        ]
    );
    assert_eq!(d.send(IvrEvent::PromptFinished), ["timer 1 5s"]);
    assert_eq!(
        d.send(IvrEvent::TimerFired(TimerId(1))),
        ["play closed,after-hours-menu barge-in"]
    );
    assert_eq!(d.send(IvrEvent::PromptFinished), ["timer 2 5s"]);
    assert_eq!(
        d.send(IvrEvent::TimerFired(TimerId(2))),
        ["log node main/voicemail", "play leave-message"]
    );
    // No barge-in on the voicemail greeting.
    assert!(d.send(IvrEvent::Digit('1')).is_empty());
    assert_eq!(d.send(IvrEvent::PromptFinished), ["voicemail general 2m"]);
    assert_eq!(d.session.outcome(), Some(&Outcome::Voicemail));
}

#[test]
fn holidays_are_after_hours_even_on_a_weekday() {
    // Thursday 2026-12-24 10:00 in Berlin, a holiday of the demo calendar.
    let mut d = Driver::new(demo(), "main", 1_798_102_800_000);
    d.send(IvrEvent::Started);
    let out = d.send(IvrEvent::PromptFinished);
    assert_eq!(out[1], "log node main/after_hours");
}

#[test]
fn emergency_transfer_after_hours() {
    let mut d = Driver::new(demo(), "main", MONDAY_21_BERLIN);
    d.send(IvrEvent::Started);
    d.send(IvrEvent::PromptFinished);
    assert_eq!(
        d.send(IvrEvent::Digit('9')),
        ["stop", "log node main/emergency key=9", "play emergency"]
    );
    assert_eq!(
        d.send(IvrEvent::PromptFinished),
        ["transfer sip:emergency@pbx.example.com"]
    );
    assert_eq!(d.session.outcome(), Some(&Outcome::Transferred));
}

#[test]
fn star_repeats_the_main_menu_and_the_caller_chooses_after_it() {
    let mut d = Driver::new(demo(), "main", MONDAY_10_BERLIN);
    to_main_menu(&mut d);
    assert_eq!(d.send(IvrEvent::PromptFinished), ["timer 3 6s"]);
    assert_eq!(
        d.send(IvrEvent::Digit('*')),
        [
            "cancel 3",
            "log node main/main_menu key=*",
            "play main-menu,menu-repeat,language-offer barge-in"
        ]
    );
    d.send(IvrEvent::PromptFinished);
    assert_eq!(
        d.send(IvrEvent::Digit('0')),
        [
            "cancel 4",
            "log node main/operator key=0",
            "enqueue operator priority=1"
        ]
    );
}

#[test]
fn nine_switches_the_demo_to_chinese_and_back() {
    let set = demo();
    let mut d = Driver::new(set.clone(), "main", MONDAY_10_BERLIN);
    to_main_menu(&mut d);
    d.send(IvrEvent::PromptFinished);
    assert_eq!(
        d.send(IvrEvent::Digit('9')),
        [
            "cancel 3",
            "log node main/switch_language key=9",
            "log node main/speak_chinese",
            "log node main/main_menu",
            "play main-menu,menu-repeat,language-offer barge-in"
        ]
    );
    assert_eq!(d.session.state().language, "zh-CN");
    // The same names, the Chinese recordings; the offer is said in the language it offers.
    let path = |name: &str, language: &str| {
        set.prompt_in(name, language)
            .map(|p| p.path.display().to_string())
            .unwrap_or_default()
    };
    assert!(path("main-menu", "zh-CN").ends_with("prompts/zh-CN/main-menu.wav"));
    assert!(path("language-offer", "zh-CN").ends_with("prompts/zh-CN/language-offer.wav"));
    assert!(path("main-menu", "en").ends_with("prompts/main-menu.wav"));
    d.send(IvrEvent::PromptFinished);
    d.send(IvrEvent::Digit('9'));
    assert_eq!(d.session.state().language, "en");
}

#[test]
fn invalid_keys_until_retries_are_exhausted() {
    let mut d = Driver::new(demo(), "main", MONDAY_10_BERLIN);
    to_main_menu(&mut d);
    assert_eq!(d.send(IvrEvent::PromptFinished), ["timer 3 6s"]);
    assert_eq!(
        d.send(IvrEvent::Digit('7')),
        [
            "cancel 3",
            "play invalid,main-menu,menu-repeat,language-offer barge-in"
        ]
    );
    assert_eq!(
        d.send(IvrEvent::Digit('8')),
        [
            "stop",
            "play invalid,main-menu,menu-repeat,language-offer barge-in"
        ]
    );
    assert_eq!(d.send(IvrEvent::PromptFinished), ["timer 4 6s"]);
    // Silence counts as a try too, with its own prompt.
    assert_eq!(
        d.send(IvrEvent::TimerFired(TimerId(4))),
        ["log node main/operator", "enqueue operator priority=1"]
    );
}

#[test]
fn menu_timeout_replays_with_the_no_input_prompt() {
    let mut d = Driver::new(demo(), "main", MONDAY_10_BERLIN);
    to_main_menu(&mut d);
    d.send(IvrEvent::PromptFinished);
    assert_eq!(
        d.send(IvrEvent::TimerFired(TimerId(3))),
        ["play no-input,main-menu,menu-repeat,language-offer barge-in"]
    );
    // A timer that already fired is stale.
    assert!(d.send(IvrEvent::TimerFired(TimerId(3))).is_empty());
}

#[test]
fn callback_offer_after_a_minute_keeps_the_place_in_line() {
    let mut d = Driver::new(demo(), "main", MONDAY_10_BERLIN);
    to_main_menu(&mut d);
    d.send(IvrEvent::Digit('1'));
    let offer = d.timer(1);
    d.after(Duration::from_secs(60));
    assert_eq!(
        d.send(IvrEvent::TimerFired(offer)),
        ["play callback-offer barge-in"]
    );
    // The caller declines first: back to waiting, no second Enqueue, no second offer timer.
    assert_eq!(
        d.send(IvrEvent::Digit('1')),
        [
            "stop",
            "cancel 3",
            "log node main/sales_callback key=1",
            "play callback-question barge-in"
        ]
    );
    assert_eq!(d.send(IvrEvent::PromptFinished), ["timer 5 5s"]);
    assert_eq!(
        d.send(IvrEvent::Digit('2')),
        ["cancel 5", "log node main/sales key=2", "timer 6 45s"]
    );
    // Then accepts.
    d.send(IvrEvent::Digit('1'));
    assert_eq!(
        d.send(IvrEvent::Digit('1')),
        ["stop", "callback sales", "play callback-confirmed"]
    );
    let number = d.commands.iter().find_map(|c| match c {
        IvrCommand::RequestCallback { number, .. } => Some(number.expose().clone()),
        _ => None,
    });
    assert_eq!(number.as_deref(), Some("+4930555000111"));
    assert_eq!(d.send(IvrEvent::PromptFinished), ["hangup callback"]);
    assert_eq!(d.session.outcome(), Some(&Outcome::Callback));
}

#[test]
fn leaving_the_queue_for_another_node_says_so() {
    let mut d = Driver::new(demo(), "main", MONDAY_10_BERLIN);
    to_main_menu(&mut d);
    d.send(IvrEvent::Digit('1'));
    assert_eq!(
        d.send(IvrEvent::QueueEvent(QueueEvent::Rejected)),
        [
            "cancel 3",
            "cancel 4",
            "log node main/voicemail",
            "play leave-message"
        ]
    );
    assert!(d.session.state().queue.is_none());
}

#[test]
fn caller_hangs_up_mid_prompt() {
    let mut d = Driver::new(demo(), "main", MONDAY_10_BERLIN);
    d.send(IvrEvent::Started);
    assert_eq!(d.send(IvrEvent::CallerHungUp), ["stop"]);
    assert_eq!(d.session.outcome(), Some(&Outcome::CallerHungUp));
    assert!(d.send(IvrEvent::PromptFinished).is_empty());
}

#[test]
fn caller_hangs_up_while_waiting_for_the_crm() {
    let mut d = Driver::new(demo(), "main", MONDAY_10_BERLIN);
    d.send(IvrEvent::Started);
    d.send(IvrEvent::PromptFinished);
    assert_eq!(d.send(IvrEvent::CallerHungUp), ["cancel 2"]);
    assert!(
        d.send(IvrEvent::LookupResult {
            request: RequestId(1),
            result: LookupResult::NotFound
        })
        .is_empty()
    );
}

#[test]
fn slow_crm_times_out_and_a_late_answer_is_ignored() {
    let mut d = Driver::new(demo(), "main", MONDAY_10_BERLIN);
    d.send(IvrEvent::Started);
    d.send(IvrEvent::PromptFinished);
    d.after(Duration::from_secs(2));
    assert_eq!(
        d.send(IvrEvent::TimerFired(TimerId(2))),
        [
            "log crm timeout",
            "log node main/standard",
            "log node main/main_menu",
            "play main-menu,menu-repeat,language-offer barge-in"
        ]
    );
    assert!(
        d.send(IvrEvent::LookupResult {
            request: RequestId(1),
            result: LookupResult::NotFound
        })
        .is_empty()
    );
}

#[test]
fn account_balance_collects_looks_up_and_reads_the_number() {
    let mut d = Driver::new(demo(), "main", MONDAY_10_BERLIN);
    to_main_menu(&mut d);
    assert_eq!(
        d.send(IvrEvent::Digit('3')),
        [
            "stop",
            "log node main/account_number key=3",
            "play enter-account barge-in"
        ]
    );
    assert_eq!(d.send(IvrEvent::PromptFinished), ["timer 3 8s"]);
    assert_eq!(d.send(IvrEvent::Digit('1')), ["cancel 3", "timer 4 4s"]);
    for key in "23456".chars() {
        d.send(IvrEvent::Digit(key));
    }
    assert_eq!(
        d.send(IvrEvent::Digit('#')),
        [
            "cancel 9",
            "log digits account=***",
            "log node main/account_lookup",
            "lookup 10 account",
            "timer 11 3s"
        ]
    );
    match &d.commands[3] {
        IvrCommand::Lookup {
            key: LookupKey::AccountNumber(n),
            ..
        } => assert_eq!(n.expose(), "123456"),
        other => panic!("{other:?}"),
    }
    let found = CustomerRecord {
        id: CustomerId::new("c-7").unwrap(),
        name: Pii::new("Grace".into()),
        tier: "normal".into(),
        account_manager: None,
        open_cases: 0,
    };
    assert_eq!(
        d.send(IvrEvent::LookupResult {
            request: RequestId(10),
            result: LookupResult::Found(found)
        }),
        [
            "cancel 11",
            "log customer c-7 tier=normal",
            "log crm found",
            "log node main/balance",
            "webhook 12 /demo/balance",
            "timer 13 2s"
        ]
    );
    let IvrCommand::Webhook { body, .. } = &d.commands[4] else {
        panic!()
    };
    assert_eq!(
        body.expose(),
        &serde_json::json!({"account": "123456", "customer.id": "c-7"})
    );
    let reply = Pii::new(serde_json::json!({"balance": 142, "extra": "ignored"}));
    assert_eq!(
        d.send(IvrEvent::WebhookResult {
            request: RequestId(12),
            result: WebhookResult::Reply(reply)
        }),
        [
            "cancel 13",
            "log webhook ok",
            "log node main/say_balance",
            "play balance-is,num-1,num-hundred,num-40,num-2,euros barge-in"
        ]
    );
}

#[test]
fn webhook_reply_without_the_declared_field_takes_the_error_branch() {
    let mut d = Driver::new(demo(), "main", MONDAY_10_BERLIN);
    to_main_menu(&mut d);
    d.send(IvrEvent::Digit('3'));
    for key in "123456#".chars() {
        d.send(IvrEvent::Digit(key));
    }
    let found = CustomerRecord {
        id: CustomerId::new("c-7").unwrap(),
        name: Pii::new("Grace".into()),
        tier: "normal".into(),
        account_manager: None,
        open_cases: 0,
    };
    let request = d.request();
    d.send(IvrEvent::LookupResult {
        request,
        result: LookupResult::Found(found),
    });
    let request = d.request();
    let reply = Pii::new(serde_json::json!({"saldo": 1}));
    let out = d.send(IvrEvent::WebhookResult {
        request,
        result: WebhookResult::Reply(reply),
    });
    assert_eq!(
        out[1..],
        [
            "log webhook bad_reply",
            "log node main/balance_unavailable",
            "play balance-unavailable"
        ]
    );
}

#[test]
fn collect_rejects_short_input_then_gives_up() {
    let mut d = Driver::new(demo(), "main", MONDAY_10_BERLIN);
    to_main_menu(&mut d);
    d.send(IvrEvent::Digit('3'));
    d.send(IvrEvent::PromptFinished);
    d.send(IvrEvent::Digit('1'));
    // Inter-digit timeout ends the input; one digit is too short for the 6-10 digit pattern.
    assert_eq!(
        d.send(IvrEvent::TimerFired(TimerId(4))),
        ["play invalid,enter-account barge-in"]
    );
    d.send(IvrEvent::PromptFinished);
    // First-digit timeout: nothing typed at all.
    assert_eq!(
        d.send(IvrEvent::TimerFired(TimerId(5))),
        ["play enter-account barge-in"]
    );
    d.send(IvrEvent::PromptFinished);
    d.send(IvrEvent::Digit('#'));
    assert!(!d.session.state().vars.contains_key("account"));
    assert_eq!(
        d.commands.last().map(ToString::to_string).as_deref(),
        Some("enqueue operator priority=1")
    );
}

#[test]
fn goto_continues_in_the_support_flow() {
    let mut d = Driver::new(demo(), "main", MONDAY_10_BERLIN);
    to_main_menu(&mut d);
    assert_eq!(
        d.send(IvrEvent::Digit('2')),
        [
            "stop",
            "log node main/support key=2",
            "log node support/support_menu",
            "play support-menu barge-in"
        ]
    );
    assert_eq!(
        d.send(IvrEvent::Digit('2')),
        [
            "stop",
            "log node support/billing key=2",
            "enqueue support priority=1 skills=\"billing\"",
            "timer 3 45s",
            "timer 4 1m"
        ]
    );
}

#[test]
fn sensitive_digits_are_masked_everywhere_and_recording_paused() {
    let mut d = Driver::new(golden_set(), "pin", MONDAY_10_BERLIN);
    assert_eq!(
        d.send(IvrEvent::Started),
        ["log node pin/pin", "pause-recording", "play menu barge-in"]
    );
    d.send(IvrEvent::Digit('4'));
    d.send(IvrEvent::Digit('3'));
    d.send(IvrEvent::Digit('2'));
    // Saved state during entry holds no digits.
    let saved = saved_without_numbers(&d.session);
    assert!(!saved.contains("432"), "{saved}");
    let debug = format!("{:?}", d.session);
    assert!(
        debug.contains("digits: Pii(***)"),
        "digits typed so far are masked in Debug: {debug}"
    );
    assert_eq!(
        d.send(IvrEvent::Digit('1')),
        [
            "cancel 3",
            "log digits pin=**** sensitive",
            "resume-recording",
            "log node pin/verify",
            "webhook 4 https://bank.example/verify",
            "timer 5 3s"
        ]
    );
    // The webhook asked for the PIN explicitly, so it gets it.
    let IvrCommand::Webhook { body, .. } = &d.commands[4] else {
        panic!()
    };
    assert_eq!(body.expose()["pin"], "4321");
    // Nowhere else: not in the log step, not in saved state, not in Debug output.
    let IvrCommand::Log(log) = &d.commands[1] else {
        panic!()
    };
    assert!(!format!("{:?}", log.to_event_kind()).contains("4321"));
    assert!(
        !serde_json::to_string(&log.to_event_kind())
            .unwrap()
            .contains("4321")
    );
    let saved = saved_without_numbers(&d.session);
    assert!(!saved.contains("4321"), "{saved}");
    assert!(format!("{:?}", d.session).contains("secrets: {\"pin\": Pii(***)}"));
    assert_eq!(d.session.state().vars.get("pin"), Some(&Value::Secret));
}

#[test]
fn caller_hanging_up_during_sensitive_entry_resumes_recording() {
    let mut d = Driver::new(golden_set(), "pin", MONDAY_10_BERLIN);
    d.send(IvrEvent::Started);
    d.send(IvrEvent::PromptFinished);
    assert_eq!(d.send(IvrEvent::CallerHungUp), ["cancel 1", "resume-recording"]);
}

#[test]
fn branch_reads_queue_state_and_the_webhook_reply() {
    let mut d = Driver::new(golden_set(), "pin", MONDAY_10_BERLIN);
    d.send(IvrEvent::Started);
    for key in "4321".chars() {
        d.send(IvrEvent::Digit(key));
    }
    let request = d.request();
    let reply = Pii::new(serde_json::json!({"verified": "yes"}));
    assert_eq!(
        d.send(IvrEvent::WebhookResult {
            request,
            result: WebhookResult::Reply(reply)
        }),
        [
            "cancel 5",
            "log webhook ok",
            "log node pin/check",
            "query 6 support",
            "timer 7 2s"
        ]
    );
    let snapshot = QueueSnapshot {
        agents_available: 2,
        waiting: 0,
        estimated_wait: Duration::ZERO,
    };
    assert_eq!(
        d.send(IvrEvent::QueueState {
            request: RequestId(6),
            state: snapshot
        }),
        ["cancel 7", "log node pin/agent", "play hello"]
    );
    assert_eq!(d.send(IvrEvent::PromptFinished), ["transfer +15551234"]);
}

#[test]
fn branch_decides_without_queue_state_when_it_does_not_come() {
    let mut d = Driver::new(golden_set(), "pin", MONDAY_10_BERLIN);
    d.send(IvrEvent::Started);
    for key in "4321".chars() {
        d.send(IvrEvent::Digit(key));
    }
    let request = d.request();
    let reply = Pii::new(serde_json::json!({"verified": "yes"}));
    d.send(IvrEvent::WebhookResult {
        request,
        result: WebhookResult::Reply(reply),
    });
    d.after(Duration::from_secs(2));
    assert_eq!(
        d.send(IvrEvent::TimerFired(TimerId(7))),
        ["log node pin/busy", "log node pin/bye", "play bye"]
    );
    // The set node switched the language, so the Spanish recording (G.711 mu-law) plays.
    assert_eq!(d.session.state().language, "es");
    let IvrCommand::Play { prompts, .. } = d.commands.last().unwrap() else {
        panic!()
    };
    assert!(
        prompts[0].path.ends_with("prompts/es/bye.wav"),
        "{:?}",
        prompts[0].path
    );
}

#[test]
fn wrong_pin_twice_is_exhausted() {
    let mut d = Driver::new(golden_set(), "pin", MONDAY_10_BERLIN);
    d.send(IvrEvent::Started);
    assert_eq!(d.send(IvrEvent::Digit('#')), ["stop", "play bye,menu barge-in"]);
    assert_eq!(
        d.send(IvrEvent::Digit('#')),
        ["stop", "resume-recording", "log node pin/bye", "play bye"]
    );
    assert_eq!(d.send(IvrEvent::PromptFinished), ["hangup done"]);
}

#[test]
fn saved_state_restores_and_continues_identically() {
    let set = demo();
    let mut a = Driver::new(Arc::clone(&set), "main", MONDAY_10_BERLIN);
    to_main_menu(&mut a);
    let json = serde_json::to_string(a.session.state()).unwrap();
    let restored: IvrState = serde_json::from_str(&json).unwrap();
    let mut b = Driver {
        session: IvrSession::restore(set, restored).unwrap(),
        now: a.now,
        commands: vec![],
    };
    for event in [
        IvrEvent::PromptFinished,
        IvrEvent::Digit('9'),
        IvrEvent::Digit('1'),
    ] {
        assert_eq!(a.send(event.clone()), b.send(event));
    }
    assert_eq!(a.session.state(), b.session.state());
}

#[test]
fn restore_refuses_another_version() {
    let mut state = Driver::new(demo(), "main", MONDAY_10_BERLIN)
        .session
        .state()
        .clone();
    state.flow_set_version ^= 1;
    assert_eq!(
        IvrSession::restore(demo(), state).unwrap_err(),
        SessionError::VersionMismatch
    );
    assert!(matches!(
        IvrSession::new(demo(), "nope", call()),
        Err(SessionError::UnknownFlow(_))
    ));
}

#[test]
fn log_steps_map_to_interaction_events() {
    use domain::InteractionEventKind as K;
    let node = IvrLog::NodeEntered {
        flow: "main".into(),
        node: "sales".into(),
        key: Some('1'),
    };
    assert_eq!(
        node.to_event_kind(),
        K::IvrNode {
            flow: "main".into(),
            node: "sales".into(),
            key: Some('1')
        }
    );
    assert_eq!(
        IvrLog::SurveyAnswered { score: 4 }.to_event_kind(),
        K::Survey { score: 4 }
    );
    let done = IvrLog::LookupDone {
        what: "crm".into(),
        outcome: "found".into(),
    };
    assert_eq!(
        done.to_event_kind(),
        K::LookupDone {
            what: "crm".into(),
            outcome: "found".into()
        }
    );
}

#[test]
fn prompts_fall_back_to_the_default_recording() {
    let set = golden_set();
    assert!(
        set.prompt_in("bye", "es")
            .unwrap()
            .path
            .ends_with("prompts/es/bye.wav")
    );
    assert!(
        set.prompt_in("hello", "es")
            .unwrap()
            .path
            .ends_with("prompts/hello.wav")
    );
    assert!(set.prompt_in("nope", "es").is_none());
}
