//! The live campaign driver on virtual time: scenarios of single decisions, and a simulated day in
//! which agents take the people the driver dials, checked against its invariants (never more lines
//! than allowed, never a lead dialled twice at once, every lead saved before it is dialled, every
//! attempt accounted for).

// Helpers panic on bad literals by design, like the tests that call them.
#![allow(clippy::unwrap_used)]

use dialer::campaign::{
    CallingWindow, Campaign, CampaignMode, CampaignState, Disposition, LeadStatus, NewLead, RetryPolicy,
};
use dialer::compliance::{AbandonLedger, ComplianceRules};
use dialer::driver::{CampaignDriver, Command, Count, DriverSettings, Left, Report, Save, WrapUpWish};
use dialer::pacing::{AgentActivity, AgentView, DialResult, PolicySpec};
use domain::{AgentId, CampaignId, LeadId, Pii, Timestamp};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// 14:00 UTC on a July day: 10:00 in New York, inside the calling window.
const T0: i64 = 1_782_907_200_000 + 2 * 3_600_000;

fn at(secs: f64) -> Timestamp {
    Timestamp::from_millis(T0 + (secs * 1000.0) as i64)
}

fn agent(id: &str) -> AgentId {
    AgentId::new(id).unwrap()
}

fn lead(id: &str) -> LeadId {
    LeadId::new(id).unwrap()
}

fn driver(mode: CampaignMode, pacing: PolicySpec, leads: usize, max_lines: u32) -> CampaignDriver {
    let mut campaign = Campaign::new(
        CampaignId::new("spring").unwrap(),
        mode,
        CallingWindow::us_default(),
        RetryPolicy::default(),
        ComplianceRules::us(),
    );
    for i in 0..leads {
        campaign
            .add_lead(
                NewLead {
                    id: lead(&format!("l{i:03}")),
                    phone: Pii::new(format!("+1212555{i:04}")),
                    time_zone: Some("America/New_York".into()),
                },
                at(0.0),
            )
            .unwrap();
    }
    campaign.resume().unwrap();
    CampaignDriver::new(
        campaign,
        pacing.build(),
        AbandonLedger::new(ComplianceRules::us()),
        DriverSettings {
            mode,
            max_lines,
            preview_skip: Duration::from_secs(3600),
        },
    )
}

fn ready(n: usize) -> Vec<AgentView> {
    (0..n)
        .map(|_| AgentView {
            activity: AgentActivity::Ready,
            since: at(0.0),
        })
        .collect()
}

fn commands(d: &mut CampaignDriver) -> Vec<Command> {
    std::iter::from_fn(|| d.poll_command()).collect()
}

/// One line per command, for assertions.
fn lines(commands: &[Command]) -> Vec<String> {
    commands
        .iter()
        .map(|c| match c {
            Command::Save(Save::Lead { lead, last, .. }) => {
                format!("save {} {:?} {last:?}", lead.id, lead.status)
            }
            Command::Save(Save::Status(s)) => format!("status {s:?}"),
            Command::Save(Save::DoNotCall { agent, .. }) => format!("do not call (asked of {agent})"),
            Command::Place(r) => format!("place {}", r.lead),
            Command::EndPreview { agent, reason } => format!("end preview {agent} {reason:?}"),
            Command::Count(c) => format!("count {c:?}"),
        })
        .collect()
}

const NO_DNC: &[&str] = &[];

fn dnc() -> HashSet<String> {
    NO_DNC.iter().map(|s| s.to_string()).collect()
}

#[test]
fn progressive_dials_one_line_per_free_agent_and_saves_each_lead_before_it_goes_out() {
    let mut d = driver(CampaignMode::Progressive, PolicySpec::Progressive, 5, 10);
    let n = d.dials_wanted(at(0.0), &ready(2));
    assert_eq!(n, 2);
    d.place(at(0.0), n, &dnc(), &|_| true);
    assert_eq!(
        lines(&commands(&mut d)),
        [
            "save l000 InProgress None",
            "count Dial",
            "place l000",
            "save l001 InProgress None",
            "count Dial",
            "place l001"
        ]
    );
    // Both still ringing: the same two agents are covered.
    assert_eq!(d.dials_wanted(at(1.0), &ready(2)), 0);
    assert_eq!(d.stats(at(1.0)).lines_active, 2);
}

#[test]
fn the_line_limit_caps_every_policy() {
    let mut d = driver(
        CampaignMode::Predictive,
        PolicySpec::FixedRatio { ratio: 3.0 },
        50,
        4,
    );
    assert_eq!(d.dials_wanted(at(0.0), &ready(3)), 4);
    let mut agentless = driver(CampaignMode::Agentless, PolicySpec::Progressive, 50, 6);
    assert_eq!(
        agentless.dials_wanted(at(0.0), &[]),
        6,
        "agentless fills its lines"
    );
}

#[test]
fn over_the_abandonment_cap_only_free_agents_are_dialled_for() {
    let mut d = driver(
        CampaignMode::Predictive,
        PolicySpec::FixedRatio { ratio: 3.0 },
        50,
        50,
    );
    let n = d.dials_wanted(at(0.0), &ready(1));
    assert_eq!(n, 3);
    d.place(at(0.0), n, &dnc(), &|_| true);
    commands(&mut d);
    // All three answer as people; nobody takes two of them: abandoned.
    for (i, l) in ["l000", "l001", "l002"].into_iter().enumerate() {
        d.report(
            at(5.0),
            Report::Resolved {
                lead: lead(l),
                dialed_at: at(0.0),
                result: DialResult::Human,
            },
        );
        d.report(at(5.0), Report::Waiting { lead: lead(l) });
        if i == 0 {
            d.report(
                at(6.0),
                Report::Connected {
                    lead: lead(l),
                    waited: Duration::from_secs(1),
                },
            );
        } else {
            d.report(at(7.0), Report::Abandoned { lead: lead(l) });
            d.report(
                at(15.0),
                Report::Finished {
                    lead: lead(l),
                    disposition: Disposition::Abandoned,
                },
            );
        }
    }
    let stats = d.stats(at(16.0));
    assert!(stats.abandon_rate > 0.03, "{}", stats.abandon_rate);
    assert_eq!((stats.counts.connects, stats.counts.abandons), (1, 2));
    // Two agents free, one line still in use: the ratio would dial six, the cap allows two.
    assert_eq!(d.dials_wanted(at(16.0), &ready(2)), 2);
}

#[test]
fn a_paused_campaign_dials_nothing_and_its_status_is_saved() {
    let mut d = driver(CampaignMode::Progressive, PolicySpec::Progressive, 5, 10);
    assert_eq!(d.control(|c| c.pause()), Ok(CampaignState::Paused));
    assert_eq!(lines(&commands(&mut d)), ["status Paused"]);
    assert_eq!(d.dials_wanted(at(0.0), &ready(3)), 0);
    d.control(|c| {
        c.stop();
        Ok(())
    })
    .unwrap();
    assert!(d.is_done(), "stopped with nothing running");
    commands(&mut d);
    assert!(
        d.control(|c| c.resume()).is_err(),
        "a stopped campaign stays stopped"
    );
    assert!(commands(&mut d).is_empty(), "a refused change saves nothing");
}

#[test]
fn a_wrap_up_quicker_than_the_attempts_end_is_applied_once_that_is_recorded() {
    let mut d = driver(CampaignMode::Progressive, PolicySpec::Progressive, 1, 10);
    d.place(at(0.0), 1, &dnc(), &|_| true);
    commands(&mut d);
    let wish = WrapUpWish {
        do_not_call: true,
        callback: None,
    };
    d.report(
        at(60.0),
        Report::WrappedUp {
            lead: lead("l000"),
            agent: agent("a1"),
            wish,
        },
    );
    assert!(commands(&mut d).is_empty(), "deferred while the attempt runs");
    d.report(
        at(61.0),
        Report::Finished {
            lead: lead("l000"),
            disposition: Disposition::Completed,
        },
    );
    assert_eq!(
        lines(&commands(&mut d)),
        [
            "count Outcome(Completed)",
            "save l000 Done Some(Completed)",
            "do not call (asked of a1)",
            "save l000 Blocked None"
        ]
    );
    assert_eq!(d.stats(at(62.0)).lines_active, 0);
}

#[test]
fn a_callback_wish_schedules_the_lead_again_for_the_agent() {
    let mut d = driver(CampaignMode::Progressive, PolicySpec::Progressive, 1, 10);
    d.place(at(0.0), 1, &dnc(), &|_| true);
    d.report(
        at(61.0),
        Report::Finished {
            lead: lead("l000"),
            disposition: Disposition::Completed,
        },
    );
    commands(&mut d);
    d.report(
        at(70.0),
        Report::WrappedUp {
            lead: lead("l000"),
            agent: agent("a1"),
            wish: WrapUpWish {
                do_not_call: false,
                callback: Some((at(7200.0), true)),
            },
        },
    );
    let l = d.campaign().lead(&lead("l000")).unwrap();
    assert_eq!(l.status, LeadStatus::Pending);
    assert_eq!(
        l.callback.as_ref().and_then(|c| c.agent.clone()),
        Some(agent("a1"))
    );
    // Not before its time, and then only while a1 is ready.
    d.place(at(100.0), 1, &dnc(), &|_| true);
    assert!(!lines(&commands(&mut d)).iter().any(|l| l.starts_with("place")));
    d.place(at(7300.0), 1, &dnc(), &|a| a == &agent("a2"));
    assert!(!lines(&commands(&mut d)).iter().any(|l| l.starts_with("place")));
    d.place(at(7300.0), 1, &dnc(), &|a| a == &agent("a1"));
    assert!(lines(&commands(&mut d)).contains(&"place l000".to_string()));
}

#[test]
fn a_preview_agent_who_leaves_gives_the_lead_back_and_a_skip_puts_it_off() {
    let mut d = driver(CampaignMode::Preview, PolicySpec::Progressive, 2, 10);
    assert!(d.previews_wanted());
    let r = d.reserve_preview(at(0.0), &dnc(), &agent("a1")).unwrap();
    assert_eq!(r.lead, lead("l000"));
    d.previewing(agent("a1"), r);
    // News older than the preview (a1 becoming ready, heard only now) changes nothing...
    d.agent_changed(&agent("a1"), at(0.0), Left::Other, false);
    assert_eq!(lines(&commands(&mut d)), Vec::<String>::new());
    assert!(d.is_previewing(&agent("a1")));
    // ...the preview's own start is heard, then a1 went ready again (or logged out): the lead goes
    // back at once.
    d.agent_changed(&agent("a1"), at(0.0), Left::Other, true);
    d.agent_changed(&agent("a1"), at(5.0), Left::Other, false);
    assert_eq!(
        lines(&commands(&mut d)),
        ["end preview a1 Some(\"you are no longer previewing\")"]
    );
    let again = d.reserve_preview(at(6.0), &dnc(), &agent("a2")).unwrap();
    assert_eq!(again.lead, lead("l000"), "offered again at once");
    d.previewing(agent("a2"), again);
    assert!(
        d.take_preview(&agent("a2"), &lead("l001")).is_none(),
        "not the lead shown"
    );
    let p = d.take_preview(&agent("a2"), &lead("l000")).unwrap();
    d.skip(at(10.0), &agent("a2"), &p);
    assert_eq!(
        lines(&commands(&mut d)),
        ["save l000 Pending None", "end preview a2 None"]
    );
    let next = d.reserve_preview(at(11.0), &dnc(), &agent("a2")).unwrap();
    assert_eq!(next.lead, lead("l001"), "the skipped lead waits for its time");
    // Placed by the agent: counted as a dial, the preview is over.
    d.previewing(agent("a2"), next);
    let p = d.take_preview(&agent("a2"), &lead("l001")).unwrap();
    d.report(
        at(12.0),
        Report::PreviewPlaced {
            lead: p.lead.clone(),
            agent: agent("a2"),
        },
    );
    assert_eq!(
        lines(&commands(&mut d)),
        ["end preview a2 None", "count Dial", "save l001 InProgress None"]
    );
    assert_eq!(d.stats(at(12.0)).lines_active, 1);
}

#[test]
fn numbers_on_the_do_not_call_list_are_never_dialled_and_their_leads_are_saved_closed() {
    let mut d = driver(CampaignMode::Progressive, PolicySpec::Progressive, 3, 10);
    let listed: HashSet<String> = ["+12125550001".to_string()].into();
    d.place(at(0.0), 3, &listed, &|_| true);
    let out = lines(&commands(&mut d));
    assert!(!out.contains(&"place l001".to_string()), "{out:?}");
    assert!(out.contains(&"save l001 Blocked None".to_string()), "{out:?}");
}

/// A simulated morning: agents take the people the driver dials; every attempt is reported the way
/// the runner reports it. Each second the driver is asked how many to dial.
#[test]
fn a_simulated_morning_keeps_every_invariant_and_works_through_the_leads() {
    for pacing in [PolicySpec::Progressive, PolicySpec::FixedRatio { ratio: 1.8 }] {
        simulate(pacing);
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Agent {
    Ready(f64),
    Talking(f64),
    Wrapping(f64),
}

fn simulate(pacing: PolicySpec) {
    const LEADS: usize = 60;
    const AGENTS: usize = 4;
    const MAX_LINES: u32 = 8;
    let mut d = driver(CampaignMode::Predictive, pacing, LEADS, MAX_LINES);
    let mut agents: Vec<Agent> = vec![Agent::Ready(0.0); AGENTS];
    // Scheduled reports, by time (ms) and order.
    let mut due: BTreeMap<(i64, u64), Report> = BTreeMap::new();
    let mut seq = 0u64;
    let mut schedule = |due: &mut BTreeMap<(i64, u64), Report>, t: f64, r: Report| {
        seq += 1;
        due.insert(((t * 1000.0) as i64, seq), r);
    };
    let mut in_flight: HashSet<LeadId> = HashSet::new();
    let mut saved_dialling: HashSet<LeadId> = HashSet::new();
    let mut waiting: Vec<(LeadId, f64)> = Vec::new();
    let mut placed = 0u64;
    let mut finished = 0u64;
    for step in 0..(3 * 3600) {
        let now = f64::from(step);
        // Reports due by now, in order.
        while let Some((&(t, s), _)) = due.iter().next() {
            if t > (now * 1000.0) as i64 {
                break;
            }
            let r = due.remove(&(t, s)).unwrap();
            if let Report::Finished { lead, .. } = &r {
                in_flight.remove(lead);
                finished += 1;
            }
            if let Report::Waiting { lead } = &r {
                waiting.push((lead.clone(), t as f64 / 1000.0));
            }
            d.report(at(t as f64 / 1000.0), r);
        }
        // Free agents take waiting people (connect within 2 s, or the person is abandoned).
        waiting.retain(|(l, since)| {
            if now - since > 2.0 {
                schedule(&mut due, now, Report::Abandoned { lead: l.clone() });
                schedule(
                    &mut due,
                    now + 8.0,
                    Report::Finished {
                        lead: l.clone(),
                        disposition: Disposition::Abandoned,
                    },
                );
                return false;
            }
            let Some(i) = agents.iter().position(|a| matches!(a, Agent::Ready(_))) else {
                return true;
            };
            agents[i] = Agent::Talking(now);
            schedule(
                &mut due,
                now,
                Report::Connected {
                    lead: l.clone(),
                    waited: Duration::from_secs_f64(now - since),
                },
            );
            schedule(
                &mut due,
                now + 90.0,
                Report::Finished {
                    lead: l.clone(),
                    disposition: Disposition::Completed,
                },
            );
            false
        });
        for (i, a) in agents.iter_mut().enumerate() {
            let name = agent(&format!("a{i}"));
            match *a {
                Agent::Talking(since) if now - since >= 90.0 => {
                    *a = Agent::Wrapping(now);
                    d.agent_changed(&name, at(now), Left::Talk, false);
                }
                Agent::Wrapping(since) if now - since >= 20.0 => {
                    *a = Agent::Ready(now);
                    d.agent_changed(&name, at(now), Left::WrapUp, false);
                }
                _ => {}
            }
        }
        let views: Vec<AgentView> = agents
            .iter()
            .map(|a| match *a {
                Agent::Ready(s) => AgentView {
                    activity: AgentActivity::Ready,
                    since: at(s),
                },
                Agent::Talking(s) => AgentView {
                    activity: AgentActivity::OnCall,
                    since: at(s),
                },
                Agent::Wrapping(s) => AgentView {
                    activity: AgentActivity::WrapUp,
                    since: at(s),
                },
            })
            .collect();
        let n = d.dials_wanted(at(now), &views);
        d.place(at(now), n, &dnc(), &|_| true);
        for c in commands(&mut d) {
            match c {
                Command::Save(Save::Lead { lead, attempt_at, .. })
                    if lead.status == LeadStatus::InProgress =>
                {
                    assert!(attempt_at.is_some());
                    saved_dialling.insert(lead.id);
                }
                Command::Place(r) => {
                    assert!(
                        saved_dialling.remove(&r.lead),
                        "{} saved before it is dialled",
                        r.lead
                    );
                    assert!(
                        in_flight.insert(r.lead.clone()),
                        "{} dialled twice at once",
                        r.lead
                    );
                    placed += 1;
                    // Every third number is busy, the rest answer as people after 6 s of ringing.
                    let busy = r.lead.as_str().ends_with(['0', '3', '6', '9']);
                    let result = if busy { DialResult::Busy } else { DialResult::Human };
                    schedule(
                        &mut due,
                        now + 6.0,
                        Report::Resolved {
                            lead: r.lead.clone(),
                            dialed_at: at(now),
                            result,
                        },
                    );
                    if busy {
                        schedule(
                            &mut due,
                            now + 6.0,
                            Report::Finished {
                                lead: r.lead,
                                disposition: Disposition::Busy,
                            },
                        );
                    } else {
                        schedule(&mut due, now + 6.0, Report::Waiting { lead: r.lead });
                    }
                }
                Command::Count(Count::Dial) | Command::Count(_) | Command::Save(_) => {}
                Command::EndPreview { .. } => panic!("no previews in a predictive campaign"),
            }
        }
        let stats = d.stats(at(now));
        assert!(stats.lines_active <= MAX_LINES, "{stats:?}");
        assert_eq!(
            u64::from(stats.lines_active),
            placed - finished,
            "every attempt accounted for"
        );
        assert_eq!(stats.counts.dials, placed);
    }
    let stats = d.stats(at(3.0 * 3600.0));
    assert_eq!(stats.lines_active, 0, "{stats:?}");
    assert_eq!(stats.leads.pending, 0, "worked through: {stats:?}");
    assert!(
        stats.counts.connects > 0 && stats.counts.dials >= LEADS as u64,
        "{stats:?}"
    );
}

#[test]
fn agent_news_older_than_a_preview_does_not_take_it_back() {
    let mut d = driver(CampaignMode::Preview, PolicySpec::Progressive, 2, 10);
    let r = d.reserve_preview(at(0.0), &dnc(), &agent("a1")).unwrap();
    d.previewing(agent("a1"), r);
    let p = d.take_preview(&agent("a1"), &lead("l000")).unwrap();
    d.skip(at(1.0), &agent("a1"), &p);
    let r = d.reserve_preview(at(2.0), &dnc(), &agent("a1")).unwrap();
    d.previewing(agent("a1"), r);
    let _ = commands(&mut d);
    // Heard only now, in their order: into the first preview, ready after the skip, into the second.
    d.agent_changed(&agent("a1"), at(0.0), Left::Other, true);
    d.agent_changed(&agent("a1"), at(1.0), Left::Other, false);
    assert!(d.is_previewing(&agent("a1")), "the second preview stays");
    assert_eq!(lines(&commands(&mut d)), Vec::<String>::new());
    d.agent_changed(&agent("a1"), at(2.0), Left::Other, true);
    d.agent_changed(&agent("a1"), at(3.0), Left::Other, false);
    assert!(
        !d.is_previewing(&agent("a1")),
        "a change after its start takes it back"
    );
    // Changes missed (a lagging subscriber): the next one that is not previewing ends a preview.
    let r = d.reserve_preview(at(4.0), &dnc(), &agent("a1")).unwrap();
    d.previewing(agent("a1"), r);
    d.agent_changes_missed();
    d.agent_changed(&agent("a1"), at(5.0), Left::Other, false);
    assert!(!d.is_previewing(&agent("a1")));
}
