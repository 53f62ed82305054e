//! The benchmark grid: every combination of team size, live answer probability, talk time and shift shape,
//! generated from the committed shape scenarios in `crates/dialer/scenarios/`. Each cell runs the
//! predictive policy, progressive, the VICIdial-style baseline and a set of fixed ratios on the same seeds
//! (so on the same lead outcomes), and reports whether the predictive policy meets the goal and how far it
//! is from the best fixed ratio chosen with hindsight.

use super::report::Summary;
use super::scenario::{Scenario, ScenarioError, ValidScenario};
use super::simulate_replications;
use crate::pacing::{PolicySpec, PredictiveConfig, VicidialConfig};
use serde::Serialize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The committed shape scenarios, embedded so the grid runs from any working directory.
pub const SHAPE_FILES: [(&str, &str); 4] = [
    ("stationary.toml", include_str!("../../scenarios/stationary.toml")),
    (
        "rolling_breaks.toml",
        include_str!("../../scenarios/rolling_breaks.toml"),
    ),
    ("lunch_step.toml", include_str!("../../scenarios/lunch_step.toml")),
    (
        "answer_halving.toml",
        include_str!("../../scenarios/answer_halving.toml"),
    ),
];

/// Parses the committed shape scenarios.
pub fn named_shapes() -> Result<Vec<Scenario>, ScenarioError> {
    SHAPE_FILES
        .iter()
        .map(|(_, text)| Scenario::from_toml(text).map(|v| v.scenario))
        .collect()
}

/// The base scenario with one cell's parameters. The other dial outcomes (machine, busy) keep their share of
/// what is not a live answer.
pub fn cell_scenario(
    base: &Scenario,
    agents: u32,
    live_answer: f64,
    talk_mean_s: f64,
) -> Result<ValidScenario, ScenarioError> {
    let mut s = base.clone();
    let rest_before = 1.0 - s.leads.live_answer;
    let rest_after = 1.0 - live_answer;
    let scale = if rest_before > 0.0 {
        rest_after / rest_before
    } else {
        0.0
    };
    s.leads.machine *= scale;
    s.leads.busy *= scale;
    s.leads.live_answer = live_answer;
    s.agents = agents;
    s.handling.talk_mean_s = talk_mean_s;
    s.name = format!("{}/a{agents}/p{live_answer}/t{talk_mean_s}", base.name);
    s.validate()
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GridConfig {
    pub agents: Vec<u32>,
    pub live_answer: Vec<f64>,
    pub talk_mean_s: Vec<f64>,
    /// Shape scenarios (base of each cell); by default the committed files.
    pub shapes: Vec<Scenario>,
    pub replications: u32,
    pub first_seed: u64,
    /// Fixed ratios tried per cell to find the best one with hindsight (ratio 1.0, progressive, is always
    /// a candidate).
    pub fixed_ratios: Vec<f64>,
    /// Largest share of replications allowed over the cap (0.05).
    pub max_share_over: f64,
    pub predictive: PredictiveConfig,
    pub vicidial: VicidialConfig,
    /// Worker threads (cells are independent).
    pub threads: usize,
}

impl GridConfig {
    /// The full benchmark grid: 3 x 3 x 3 x 4 = 108 cells, 30 replications each.
    pub fn benchmark() -> Result<Self, ScenarioError> {
        Ok(Self {
            agents: vec![5, 20, 100],
            live_answer: vec![0.1, 0.3, 0.6],
            talk_mean_s: vec![60.0, 180.0, 600.0],
            shapes: named_shapes()?,
            replications: 30,
            first_seed: 1,
            fixed_ratios: vec![1.05, 1.1, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0],
            max_share_over: 0.05,
            predictive: PredictiveConfig::default(),
            vicidial: VicidialConfig::default(),
            threads: 2,
        })
    }
}

impl GridConfig {
    /// A small subset for a quick look (corners of the grid, two shapes, 3 replications).
    pub fn quick() -> Result<Self, ScenarioError> {
        let mut config = Self::benchmark()?;
        config.agents = vec![5, 20];
        config.live_answer = vec![0.1, 0.6];
        config.talk_mean_s = vec![60.0, 600.0];
        config
            .shapes
            .retain(|s| s.name == "stationary" || s.name == "answer_halving");
        config.replications = 3;
        Ok(config)
    }
}

/// One cell's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellReport {
    pub shape: String,
    pub agents: u32,
    pub live_answer: f64,
    pub talk_mean_s: f64,
    pub predictive: Summary,
    pub progressive: Summary,
    pub vicidial: Summary,
    pub fixed: Vec<Summary>,
    /// The fixed ratio with the highest occupancy among those meeting the abandonment goal in this cell.
    pub best_fixed: Option<Summary>,
    /// Predictive occupancy minus the best fixed ratio's (negative: the hindsight ratio did better).
    pub gap_to_best_fixed: Option<f64>,
    pub predictive_compliant: bool,
    pub beats_progressive: bool,
    pub beats_vicidial: bool,
}

/// Totals over the grid.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GridSummary {
    pub cells: usize,
    pub replications: u32,
    pub predictive_compliant_cells: usize,
    pub beats_progressive_cells: usize,
    pub beats_vicidial_cells: usize,
    pub predictive_mean_abandon_rate: f64,
    pub predictive_worst_share_over_cap: f64,
    pub mean_occupancy_predictive: f64,
    pub mean_occupancy_progressive: f64,
    pub mean_occupancy_vicidial: f64,
    pub mean_gap_to_best_fixed: f64,
    pub vicidial_compliant_cells: usize,
    /// Every cell compliant and beating both baselines.
    pub goal_met: bool,
}

/// The grid's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GridReport {
    pub cells: Vec<CellReport>,
    pub summary: GridSummary,
}

struct CellSpec {
    shape: usize,
    agents: u32,
    live_answer: f64,
    talk_mean_s: f64,
}

/// Runs one cell.
pub fn run_cell(
    config: &GridConfig,
    base: &Scenario,
    agents: u32,
    live_answer: f64,
    talk_mean_s: f64,
) -> Result<CellReport, ScenarioError> {
    let scenario = cell_scenario(base, agents, live_answer, talk_mean_s)?;
    let cap = scenario.rules.max_abandon_rate;
    let run =
        |spec: PolicySpec| simulate_replications(&scenario, &spec, config.first_seed, config.replications).0;
    let predictive = run(PolicySpec::Predictive(config.predictive.clone()));
    let progressive = run(PolicySpec::Progressive);
    let vicidial = run(PolicySpec::Vicidial(config.vicidial.clone()));
    let fixed: Vec<Summary> = config
        .fixed_ratios
        .iter()
        .map(|&ratio| run(PolicySpec::FixedRatio { ratio }))
        .collect();
    let best_fixed = std::iter::once(&progressive)
        .chain(fixed.iter())
        .filter(|s| s.compliant(cap, config.max_share_over))
        .max_by(|a, b| a.occupancy.total_cmp(&b.occupancy))
        .cloned();
    let predictive_compliant = predictive.compliant(cap, config.max_share_over);
    Ok(CellReport {
        shape: base.name.clone(),
        agents,
        live_answer,
        talk_mean_s,
        gap_to_best_fixed: best_fixed.as_ref().map(|b| predictive.occupancy - b.occupancy),
        beats_progressive: predictive.occupancy > progressive.occupancy,
        beats_vicidial: predictive.occupancy > vicidial.occupancy,
        predictive_compliant,
        predictive,
        progressive,
        vicidial,
        fixed,
        best_fixed,
    })
}

/// Runs the whole grid.
pub fn run_grid(config: &GridConfig) -> Result<GridReport, ScenarioError> {
    let mut specs = Vec::new();
    for shape in 0..config.shapes.len() {
        for &agents in &config.agents {
            for &live_answer in &config.live_answer {
                for &talk_mean_s in &config.talk_mean_s {
                    specs.push(CellSpec {
                        shape,
                        agents,
                        live_answer,
                        talk_mean_s,
                    });
                }
            }
        }
    }
    // Validate every cell up front so a bad grid fails before hours of simulation.
    for spec in &specs {
        if let Some(base) = config.shapes.get(spec.shape) {
            cell_scenario(base, spec.agents, spec.live_answer, spec.talk_mean_s)?;
        }
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Result<CellReport, ScenarioError>)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..config.threads.max(1) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(spec) = specs.get(index) else { break };
                    let Some(base) = config.shapes.get(spec.shape) else {
                        continue;
                    };
                    let cell = run_cell(config, base, spec.agents, spec.live_answer, spec.talk_mean_s);
                    if let Ok(mut r) = results.lock() {
                        r.push((index, cell));
                    }
                }
            });
        }
    });
    let mut results = results
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    results.sort_by_key(|(index, _)| *index);
    let cells = results
        .into_iter()
        .map(|(_, cell)| cell)
        .collect::<Result<Vec<_>, _>>()?;
    let summary = summarize(&cells, config.replications);
    Ok(GridReport { cells, summary })
}

fn summarize(cells: &[CellReport], replications: u32) -> GridSummary {
    let n = cells.len().max(1) as f64;
    let mean = |f: &dyn Fn(&CellReport) -> f64| cells.iter().map(f).sum::<f64>() / n;
    let gaps: Vec<f64> = cells.iter().filter_map(|c| c.gap_to_best_fixed).collect();
    let count = |f: &dyn Fn(&CellReport) -> bool| cells.iter().filter(|c| f(c)).count();
    let all = |f: &dyn Fn(&CellReport) -> bool| cells.iter().all(f);
    GridSummary {
        cells: cells.len(),
        replications,
        predictive_compliant_cells: count(&|c| c.predictive_compliant),
        beats_progressive_cells: count(&|c| c.beats_progressive),
        beats_vicidial_cells: count(&|c| c.beats_vicidial),
        predictive_mean_abandon_rate: mean(&|c| c.predictive.abandon_rate),
        predictive_worst_share_over_cap: cells
            .iter()
            .map(|c| c.predictive.share_over_cap)
            .fold(0.0, f64::max),
        mean_occupancy_predictive: mean(&|c| c.predictive.occupancy),
        mean_occupancy_progressive: mean(&|c| c.progressive.occupancy),
        mean_occupancy_vicidial: mean(&|c| c.vicidial.occupancy),
        mean_gap_to_best_fixed: if gaps.is_empty() {
            0.0
        } else {
            gaps.iter().sum::<f64>() / gaps.len() as f64
        },
        vicidial_compliant_cells: count(&|c| c.vicidial.compliant(0.03, 0.05)),
        goal_met: !cells.is_empty()
            && all(&|c| c.predictive_compliant && c.beats_progressive && c.beats_vicidial),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_shapes_parse_and_cells_rescale_the_other_outcomes() {
        let shapes = named_shapes().unwrap();
        let names: Vec<&str> = shapes.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["stationary", "rolling_breaks", "lunch_step", "answer_halving"]
        );
        let cell = cell_scenario(&shapes[0], 100, 0.6, 600.0).unwrap();
        let leads = &cell.scenario.leads;
        assert_eq!(
            (
                cell.scenario.agents,
                leads.live_answer,
                cell.scenario.handling.talk_mean_s
            ),
            (100, 0.6, 600.0)
        );
        // Machine and busy keep their share of the remaining 40%: 0.2 and 0.08 of 70% before.
        assert!((leads.machine - 0.2 * 0.4 / 0.7).abs() < 1e-12);
        assert!((leads.busy - 0.08 * 0.4 / 0.7).abs() < 1e-12);
        assert_eq!(GridConfig::benchmark().unwrap().shapes.len() * 27, 108);
    }

    #[test]
    fn a_tiny_grid_runs_and_reports_every_policy() {
        let mut config = GridConfig::benchmark().unwrap();
        config.shapes.truncate(1);
        config.shapes[0].shift_hours = 0.5;
        config.agents = vec![6];
        config.live_answer = vec![0.3];
        config.talk_mean_s = vec![60.0];
        config.fixed_ratios = vec![1.5, 2.5];
        config.replications = 2;
        let report = run_grid(&config).unwrap();
        assert_eq!(report.cells.len(), 1);
        let cell = &report.cells[0];
        assert_eq!(cell.fixed.len(), 2);
        assert_eq!(cell.predictive.replications, 2);
        // Progressive never abandons, so a hindsight-best fixed ratio always exists.
        assert!(cell.best_fixed.is_some());
        assert_eq!(report.summary.cells, 1);
        let json = serde_json::to_value(&report).unwrap();
        assert!(json["cells"][0]["predictive"]["occupancy"].as_f64().unwrap() > 0.0);
    }
}
