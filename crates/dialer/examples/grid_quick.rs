//! A quick look at the benchmark grid, for iterating on the pacing policy in release mode:
//! `cargo run --release -p dialer --example grid_quick -- [replications] [agents,..] [live,..] [talk,..] [shapes]`
//! e.g. `... -- 5 20,100 0.1,0.6 60,600 stationary,answer_halving [report.json]`. Prints one line per cell,
//! and writes the whole report as JSON when a sixth argument names a file.
// Timing from outside the core: the clock is read here, never in the crate itself.
#![allow(clippy::disallowed_methods)]

use dialer::sim::grid::{GridConfig, run_grid};

fn list<T: std::str::FromStr>(arg: Option<&String>, default: Vec<T>) -> Vec<T> {
    arg.map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut config = GridConfig::benchmark()?;
    config.replications = args.first().and_then(|s| s.parse().ok()).unwrap_or(5);
    config.agents = list(args.get(1), config.agents);
    config.live_answer = list(args.get(2), config.live_answer);
    config.talk_mean_s = list(args.get(3), config.talk_mean_s);
    if let Some(shapes) = args.get(4) {
        let wanted: Vec<&str> = shapes.split(',').collect();
        config.shapes.retain(|s| wanted.contains(&s.name.as_str()));
    }
    let started = std::time::Instant::now();
    let report = run_grid(&config)?;
    println!(
        "{:<15} {:>4} {:>4} {:>4} | {:>6} {:>6} {:>5} {:>6} | {:>6} {:>6} {:>6} | {:>6} {:>5} {:>6}",
        "shape",
        "agts",
        "live",
        "talk",
        "P.abn%",
        "P.over",
        "P.occ",
        "P.tmh",
        "prog",
        "vici",
        "v.abn%",
        "bestfx",
        "ratio",
        "gap"
    );
    for c in &report.cells {
        let best = c.best_fixed.as_ref();
        println!(
            "{:<15} {:>4} {:>4} {:>4} | {:>6.2} {:>6.2} {:>5.3} {:>6.1} | {:>6.3} {:>6.3} {:>6.2} | {:>6.3} {:>5} {:>+6.3} {}",
            c.shape,
            c.agents,
            c.live_answer,
            c.talk_mean_s,
            c.predictive.abandon_rate * 100.0,
            c.predictive.share_over_cap,
            c.predictive.occupancy,
            c.predictive.talk_minutes_per_agent_hour,
            c.progressive.occupancy,
            c.vicidial.occupancy,
            c.vicidial.abandon_rate * 100.0,
            best.map_or(0.0, |b| b.occupancy),
            best.map_or("-".to_string(), |b| b
                .policy
                .trim_start_matches("fixed:")
                .to_string()),
            c.gap_to_best_fixed.unwrap_or(0.0),
            if c.predictive_compliant && c.beats_progressive && c.beats_vicidial {
                "ok"
            } else {
                "MISS"
            },
        );
    }
    println!("{}", serde_json::to_string_pretty(&report.summary)?);
    if let Some(path) = args.get(5) {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    eprintln!("elapsed {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}
