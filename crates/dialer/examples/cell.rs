//! Runs one scenario file under several policies on the same seeds and prints each policy's summary:
//! `cargo run --release -p dialer --example cell -- SCENARIO.toml REPLICATIONS [policy ...]`
//! (policies: progressive, vicidial, predictive, fixed:RATIO; default the first three).

use dialer::pacing::PolicySpec;
use dialer::sim::{Scenario, simulate_replications};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .ok_or("usage: cell SCENARIO.toml [REPLICATIONS] [POLICY ...]")?;
    let scenario = Scenario::from_toml(&std::fs::read_to_string(path)?)?;
    let replications = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let names: Vec<String> = if args.len() > 2 {
        args[2..].to_vec()
    } else {
        vec!["progressive".into(), "vicidial".into(), "predictive".into()]
    };
    for name in names {
        let policy: PolicySpec = name.parse()?;
        let (summary, _) = simulate_replications(&scenario, &policy, 1, replications);
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}
