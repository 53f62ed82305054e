//! The discrete-event simulator: scenarios, the engine, reports, and the benchmark grid.

mod engine;
pub mod grid;
mod report;
mod scenario;

pub use engine::simulate;
pub use report::{Report, Summary};
pub use scenario::{AmdModel, HandlingModel, LeadModel, Scenario, ScenarioError, Shape, ValidScenario};

/// Runs `replications` seeds (`first_seed`, `first_seed + 1`, ...) and summarises them.
pub fn simulate_replications(
    scenario: &ValidScenario,
    policy: &crate::pacing::PolicySpec,
    first_seed: u64,
    replications: u32,
) -> (Summary, Vec<Report>) {
    let reports: Vec<Report> = (0..u64::from(replications))
        .map(|r| simulate(scenario, policy, first_seed.wrapping_add(r)))
        .collect();
    let summary = Summary::of(&policy.to_string(), &reports, scenario.rules.max_abandon_rate);
    (summary, reports)
}
