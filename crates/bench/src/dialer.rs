//! `bench dialer`: the dialer's benchmark grid (team size x live answer rate x talk time x shift shape),
//! each cell running the predictive policy beside progressive, the VICIdial-style baseline and fixed ratios
//! on the same seeds, so the comparison is between policies on identical lead outcomes. Prints the grid
//! summary, one compact row per cell, and the policy ratios (predictive over each baseline).

use dialer::sim::grid::{CellReport, GridConfig, run_grid};
use serde_json::{Value, json};
use std::time::Instant;

#[derive(clap::Args)]
pub struct DialerArgs {
    /// Replications per cell and policy.
    #[arg(long, default_value_t = 30)]
    replications: u32,
    /// Only the quick subset of the grid (corners, two shapes).
    #[arg(long)]
    quick: bool,
    /// Team sizes (agents), replacing the grid's.
    #[arg(long, value_delimiter = ',')]
    agents: Vec<u32>,
    /// Live answer probabilities, replacing the grid's.
    #[arg(long, value_delimiter = ',')]
    live_answer: Vec<f64>,
    /// Mean talk times in seconds, replacing the grid's.
    #[arg(long, value_delimiter = ',')]
    talk_mean_s: Vec<f64>,
    /// Shift shapes by name (stationary, rolling_breaks, lunch_step, answer_halving), replacing the grid's.
    #[arg(long, value_delimiter = ',')]
    shapes: Vec<String>,
    /// Worker threads (cells are independent).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Include every policy's full summary per cell (fixed ratios too), not just the compact row.
    #[arg(long)]
    full: bool,
}

impl DialerArgs {
    /// A tiny grid for tests: one cell, few replications.
    #[cfg(test)]
    fn tiny() -> Self {
        Self {
            replications: 2,
            quick: false,
            agents: vec![5],
            live_answer: vec![0.3],
            talk_mean_s: vec![60.0],
            shapes: vec!["stationary".into()],
            threads: 1,
            full: false,
        }
    }
}

fn config(args: &DialerArgs) -> Result<GridConfig, String> {
    let mut config = if args.quick {
        GridConfig::quick()
    } else {
        GridConfig::benchmark()
    }
    .map_err(|e| format!("dialer grid: {e}"))?;
    config.replications = args.replications.max(1);
    config.threads = args.threads.max(1);
    if !args.agents.is_empty() {
        config.agents.clone_from(&args.agents);
    }
    if !args.live_answer.is_empty() {
        config.live_answer.clone_from(&args.live_answer);
    }
    if !args.talk_mean_s.is_empty() {
        config.talk_mean_s.clone_from(&args.talk_mean_s);
    }
    if !args.shapes.is_empty() {
        config.shapes.retain(|s| args.shapes.contains(&s.name));
        if config.shapes.is_empty() {
            return Err(format!("no shape among {:?}", args.shapes));
        }
    }
    Ok(config)
}

/// Ratio that stays readable in JSON when the denominator is zero.
fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

fn cell_row(c: &CellReport) -> Value {
    json!({
        "shape": c.shape,
        "agents": c.agents,
        "live_answer": c.live_answer,
        "talk_mean_s": c.talk_mean_s,
        "predictive_abandon_rate": c.predictive.abandon_rate,
        "predictive_share_over_cap": c.predictive.share_over_cap,
        "occupancy_predictive": c.predictive.occupancy,
        "occupancy_progressive": c.progressive.occupancy,
        "occupancy_vicidial": c.vicidial.occupancy,
        "vicidial_abandon_rate": c.vicidial.abandon_rate,
        "best_fixed_policy": c.best_fixed.as_ref().map(|b| b.policy.clone()),
        "occupancy_best_fixed": c.best_fixed.as_ref().map(|b| b.occupancy),
        "gap_to_best_fixed": c.gap_to_best_fixed,
        "occupancy_predictive_over_progressive": ratio(c.predictive.occupancy, c.progressive.occupancy),
        "occupancy_predictive_over_vicidial": ratio(c.predictive.occupancy, c.vicidial.occupancy),
        "predictive_compliant": c.predictive_compliant,
        "beats_progressive": c.beats_progressive,
        "beats_vicidial": c.beats_vicidial,
    })
}

pub fn run(args: &DialerArgs) -> Result<Value, String> {
    let config = config(args)?;
    let started = Instant::now();
    let report = run_grid(&config).map_err(|e| format!("dialer grid: {e}"))?;
    let elapsed_s = started.elapsed().as_secs_f64();
    let s = &report.summary;
    let cells: Vec<Value> = if args.full {
        report
            .cells
            .iter()
            .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
            .collect()
    } else {
        report.cells.iter().map(cell_row).collect()
    };
    Ok(json!({
        "benchmark": "dialer",
        "replications": config.replications,
        "grid": {
            "agents": config.agents,
            "live_answer": config.live_answer,
            "talk_mean_s": config.talk_mean_s,
            "shapes": config.shapes.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
            "fixed_ratios": config.fixed_ratios,
        },
        "elapsed_s": elapsed_s,
        "machine_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "summary": s,
        "ratios": {
            "mean_occupancy_predictive_over_progressive":
                ratio(s.mean_occupancy_predictive, s.mean_occupancy_progressive),
            "mean_occupancy_predictive_over_vicidial":
                ratio(s.mean_occupancy_predictive, s.mean_occupancy_vicidial),
        },
        "cells": cells,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cell_reports_summary_ratios_and_row() {
        let json = run(&DialerArgs::tiny()).unwrap();
        assert_eq!(json["benchmark"], "dialer");
        assert_eq!(json["summary"]["cells"], 1);
        assert_eq!(json["summary"]["replications"], 2);
        let cells = json["cells"].as_array().unwrap();
        assert_eq!(cells.len(), 1);
        let occupancy = cells[0]["occupancy_predictive"].as_f64().unwrap();
        assert!(occupancy > 0.0 && occupancy <= 1.0, "occupancy {occupancy}");
        let abandon = cells[0]["predictive_abandon_rate"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&abandon));
        assert!(
            json["ratios"]["mean_occupancy_predictive_over_progressive"]
                .as_f64()
                .unwrap()
                > 0.0
        );
    }

    #[test]
    fn unknown_shape_is_refused() {
        let mut args = DialerArgs::tiny();
        args.shapes = vec!["nope".into()];
        assert!(run(&args).is_err());
    }
}
