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

/// Which report `callcenter report` prints.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportKind {
    /// Per queue and interval: offered, answered, abandoned, service level, ASA, AHT, max wait.
    Interval,
    /// Per agent: handled, AHT, occupancy, not-ready time by reason.
    Agents,
    /// Post-call survey scores.
    Surveys,
}

/// Arguments of `callcenter report`.
#[derive(clap::Args)]
pub struct ReportArgs {
    #[arg(value_enum)]
    kind: ReportKind,
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Start, in hours before now.
    #[arg(long, default_value_t = 24)]
    hours: i64,
    /// Interval length in minutes: 15, 30 or 60.
    #[arg(long, default_value_t = 60)]
    interval: u32,
    /// Service-level threshold in seconds (interval report, answered within T / answered).
    #[arg(long, default_value_t = 20)]
    sl_seconds: i64,
    /// Print CSV instead of JSON.
    #[arg(long)]
    csv: bool,
}

/// `callcenter report`: historical reports from the CRM store, JSON or CSV.
pub async fn report(args: &ReportArgs) -> Result<(), String> {
    let config = Config::load(args.config.as_deref(), std::env::vars()).map_err(|e| e.to_string())?;
    let store = crm_store::CrmStore::connect(&config.crm.database_url)
        .await
        .map_err(|e| format!("crm: {e}"))?;
    let to = domain::Timestamp::now_utc();
    let from = to - std::time::Duration::from_secs(u64::try_from(args.hours.max(0)).unwrap_or(0) * 3600);
    let text = match args.kind {
        ReportKind::Interval => {
            let interval = match args.interval {
                15 => crm_store::reports::IntervalLength::Minutes15,
                30 => crm_store::reports::IntervalLength::Minutes30,
                60 => crm_store::reports::IntervalLength::Minutes60,
                other => return Err(format!("--interval {other}: use 15, 30 or 60")),
            };
            let spec = crm_store::reports::ServiceLevelSpec {
                formula: crm_store::reports::ServiceLevelFormula::AnsweredWithinOverAnswered,
                threshold_ms: args.sl_seconds * 1000,
            };
            let r = store
                .interval_report(from, to, interval, spec)
                .await
                .map_err(|e| e.to_string())?;
            if args.csv {
                r.to_csv().map_err(|e| e.to_string())?
            } else {
                json(&r)?
            }
        }
        ReportKind::Agents => {
            let r = store.agent_report(from, to).await.map_err(|e| e.to_string())?;
            if args.csv {
                r.to_csv().map_err(|e| e.to_string())?
            } else {
                json(&r)?
            }
        }
        ReportKind::Surveys => {
            let r = store.survey_report(from, to).await.map_err(|e| e.to_string())?;
            if args.csv {
                r.to_csv().map_err(|e| e.to_string())?
            } else {
                json(&r)?
            }
        }
    };
    println!("{text}");
    Ok(())
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, String> {
    serde_json::to_string_pretty(value).map_err(|e| e.to_string())
}
