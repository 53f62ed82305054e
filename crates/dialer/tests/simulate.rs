//! End-to-end checks of the simulator on short shifts (fast in debug builds).

use dialer::pacing::PolicySpec;
use dialer::sim::grid::{cell_scenario, named_shapes};
use dialer::sim::{Report, Scenario, Shape, ValidScenario, simulate};

fn shape(name: &str, agents: u32, live: f64, talk: f64, hours: f64) -> ValidScenario {
    let shapes = named_shapes().expect("committed shapes parse");
    let base = shapes.into_iter().find(|s| s.name == name).expect("shape exists");
    let mut v = cell_scenario(&base, agents, live, talk).expect("cell is valid");
    v.scenario.shift_hours = hours;
    v.scenario.validate().expect("shorter shift is valid")
}

#[test]
fn same_seed_same_report_and_progressive_never_abandons() {
    let s = shape("stationary", 10, 0.3, 60.0, 1.0);
    let a = simulate(&s, &PolicySpec::Progressive, 7);
    let b = simulate(&s, &PolicySpec::Progressive, 7);
    assert_eq!(a, b);
    assert!(a.connects > 50, "{a:?}");
    assert_eq!(a.abandons, 0);
    // Fixed ratio 1.0 is progressive: identical decisions on identical outcomes.
    let fixed = simulate(&s, &PolicySpec::FixedRatio { ratio: 1.0 }, 7);
    assert_eq!(fixed.occupancy, a.occupancy);
    assert_eq!(fixed.dials, a.dials);
}

#[test]
fn common_random_numbers_give_every_policy_the_same_leads() {
    // Lead n has the same outcome under every policy, so two policies that dial a similar number of leads
    // see almost the same share of people; independent streams would differ by sampling noise.
    let s = shape("stationary", 20, 0.3, 60.0, 1.0);
    let prog = simulate(&s, &PolicySpec::Progressive, 3);
    let pred = simulate(&s, &"predictive".parse().unwrap(), 3);
    let share = |r: &Report| r.human_verdicts as f64 / r.dials as f64;
    assert!(
        (share(&prog) - share(&pred)).abs() < 0.05,
        "{} vs {}",
        share(&prog),
        share(&pred)
    );
    assert!((share(&prog) - 0.3).abs() < 0.05);
}

#[test]
fn predictive_beats_progressive_within_the_abandonment_cap() {
    let s = shape("stationary", 20, 0.3, 60.0, 1.0);
    let prog = simulate(&s, &PolicySpec::Progressive, 11);
    let pred = simulate(&s, &"predictive".parse().unwrap(), 11);
    assert!(
        pred.occupancy > prog.occupancy + 0.05,
        "predictive {} progressive {}",
        pred.occupancy,
        prog.occupancy
    );
    assert!(pred.abandon_rate <= 0.03, "abandon rate {}", pred.abandon_rate);
    // UK counts estimated false positives on top of the US abandons.
    assert!(pred.abandon_rate_uk > pred.abandon_rate_us);
}

#[test]
fn breaks_and_lunch_take_agents_away() {
    let rolling = shape("rolling_breaks", 10, 0.3, 60.0, 8.0);
    let r = simulate(&rolling, &PolicySpec::Progressive, 1);
    // Two 15-minute breaks for each of 10 agents: 5 agent-hours, give or take calls that delay a break.
    assert!((r.break_agent_hours - 5.0).abs() < 0.3, "{}", r.break_agent_hours);
    let lunch = shape("lunch_step", 10, 0.3, 60.0, 8.0);
    let l = simulate(&lunch, &PolicySpec::Progressive, 1);
    assert!((l.break_agent_hours - 5.0).abs() < 0.3, "{}", l.break_agent_hours);
    assert!(l.staffed_agent_hours < 80.0 - 4.5);
}

#[test]
fn answer_rate_halving_makes_people_scarcer_per_dial() {
    let mut s = shape("answer_halving", 10, 0.6, 60.0, 2.0);
    // Halve an hour into this two-hour shift.
    s.scenario.shape = Shape::AnswerHalving {
        at_hour: 1.0,
        factor: 0.5,
    };
    let s = s.scenario.validate().unwrap();
    let r = simulate(&s, &PolicySpec::Progressive, 5);
    let flat = shape("stationary", 10, 0.6, 60.0, 2.0);
    let f = simulate(&flat, &PolicySpec::Progressive, 5);
    assert!(
        r.dials_per_connect > f.dials_per_connect * 1.2,
        "{} vs {}",
        r.dials_per_connect,
        f.dials_per_connect
    );
}

#[test]
fn no_agents_no_dials() {
    let s = Scenario::from_toml("name = \"empty\"\nagents = 0\nshift_hours = 1.0\n").unwrap();
    for policy in ["progressive", "vicidial", "predictive", "fixed:3"] {
        let r = simulate(&s, &policy.parse().unwrap(), 1);
        assert_eq!(r.dials, 0, "{policy}");
    }
}

#[test]
fn uk_rules_make_the_predictive_policy_hold_the_stricter_rate() {
    let mut s = shape("stationary", 20, 0.3, 60.0, 1.0);
    s.scenario.compliance.rules = dialer::compliance::RuleSet::Uk;
    let uk = s.scenario.clone().validate().unwrap();
    let us = shape("stationary", 20, 0.3, 60.0, 1.0);
    let policy: PolicySpec = "predictive".parse().unwrap();
    let under_uk = simulate(&uk, &policy, 4);
    let under_us = simulate(&us, &policy, 4);
    // Same outcomes, but the UK count includes estimated false positives, so the policy dials less.
    assert!(under_uk.abandon_rate_uk < under_us.abandon_rate_uk);
    assert!(under_uk.abandons < under_us.abandons);
    assert_eq!(under_uk.abandon_rate, under_uk.abandon_rate_uk);
}
