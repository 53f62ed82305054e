//! Offline commands: IVR checks, CRM migrations, Erlang C staffing, dialer simulation.

use crate::config::Config;
use std::path::Path;
use std::process::ExitCode;

/// `callcenter ivr check DIR`: prints a summary and exits 0, or prints every problem and exits 1.
pub fn ivr_check(dir: &Path) -> ExitCode {
    match ivr::check_dir(dir) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("{problems}");
            ExitCode::FAILURE
        }
    }
}

/// `callcenter migrate`: applies the CRM schema migrations of the configured database.
pub async fn migrate(config: &Config) -> Result<(), String> {
    let store = crm_store::CrmStore::connect(&config.crm.database_url)
        .await
        .map_err(|e| format!("crm: {e}"))?;
    store.migrate().await.map_err(|e| format!("migrations: {e}"))?;
    println!("migrations applied");
    Ok(())
}

/// Arguments of `callcenter erlang`.
#[derive(clap::Args)]
pub struct ErlangArgs {
    /// Calls offered per hour.
    #[arg(long)]
    calls_per_hour: f64,
    /// Average handle time in seconds (talk + hold + wrap-up).
    #[arg(long)]
    aht: f64,
    /// Service-level target, "PERCENT/SECONDS".
    #[arg(long, default_value = "80/20")]
    target: String,
    /// Highest acceptable occupancy, 0-1.
    #[arg(long)]
    max_occupancy: Option<f64>,
    /// Share of paid time not on the phones (breaks, absence), 0-1.
    #[arg(long, default_value_t = 0.0)]
    shrinkage: f64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `callcenter erlang`: agents needed, and predicted service level, ASA and occupancy around it.
pub fn erlang(args: &ErlangArgs) -> Result<(), String> {
    let target: acd::ServiceLevelTarget = args.target.parse().map_err(|e| format!("--target: {e}"))?;
    let work =
        acd::erlang::Workload::new(args.calls_per_hour, 3600.0, args.aht).map_err(|e| e.to_string())?;
    let plan = acd::erlang::required_agents(&work, target, args.max_occupancy, args.shrinkage)
        .map_err(|e| e.to_string())?;
    let low = plan.agents.saturating_sub(3).max(1);
    let table = acd::erlang::staffing_table(&work, f64::from(target.within_secs), low..=plan.agents + 3);
    if args.json {
        let doc = serde_json::json!({
            "traffic_erlangs": work.traffic(),
            "target": { "percent": target.percent, "within_secs": target.within_secs },
            "agents_needed": plan.agents,
            "agents_scheduled": plan.scheduled,
            "shrinkage": args.shrinkage,
            "table": table,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    println!(
        "traffic {:.2} Erlang; target {}% in {} s; agents needed {}; scheduled with {:.0}% shrinkage {}",
        work.traffic(),
        target.percent,
        target.within_secs,
        plan.agents,
        args.shrinkage * 100.0,
        plan.scheduled
    );
    println!(
        "{:>7} {:>9} {:>9} {:>9} {:>10}",
        "agents", "P(wait)", "SL", "ASA (s)", "occupancy"
    );
    for row in table {
        println!(
            "{:>7} {:>8.1}% {:>8.1}% {:>9.1} {:>9.1}%{}",
            row.agents,
            row.probability_of_wait * 100.0,
            row.service_level * 100.0,
            row.asa_secs,
            row.occupancy * 100.0,
            if row.agents == plan.agents {
                "  <- needed"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// Arguments of `callcenter dialer simulate`.
#[derive(clap::Args)]
pub struct SimulateArgs {
    /// Scenario file (TOML), e.g. crates/dialer/scenarios/*.toml.
    #[arg(long)]
    scenario: std::path::PathBuf,
    /// Pacing policy: progressive, fixed:RATIO, vicidial, predictive.
    #[arg(long, default_value = "predictive")]
    policy: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print JSON (the full report).
    #[arg(long)]
    json: bool,
}

/// `callcenter dialer simulate`: one replication of a scenario under a policy.
pub fn simulate(args: &SimulateArgs) -> Result<(), String> {
    let text =
        std::fs::read_to_string(&args.scenario).map_err(|e| format!("{}: {e}", args.scenario.display()))?;
    let scenario =
        dialer::sim::Scenario::from_toml(&text).map_err(|e| format!("{}: {e}", args.scenario.display()))?;
    let policy: dialer::pacing::PolicySpec = args.policy.parse().map_err(|e| format!("--policy: {e}"))?;
    let report = dialer::sim::simulate(&scenario, &policy, args.seed);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    println!(
        "{} under {} (seed {}): {} agents, {} dials, {} connects\n  abandonment {:.2}% (US {:.2}%, UK {:.2}%; worst 24 h US {:.2}%)\n  occupancy {:.1}%, talk {:.1} min per agent-hour, {:.1} dials per connect",
        report.scenario,
        report.policy,
        report.seed,
        report.agents,
        report.dials,
        report.connects,
        report.abandon_rate * 100.0,
        report.abandon_rate_us * 100.0,
        report.abandon_rate_uk * 100.0,
        report.worst_24h_us * 100.0,
        report.occupancy * 100.0,
        report.talk_minutes_per_agent_hour,
        report.dials_per_connect
    );
    Ok(())
}
