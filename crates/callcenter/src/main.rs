//! The `callcenter` binary: `serve` runs the platform, `check-config` validates a configuration.

mod config;

use clap::{Parser, Subcommand};
use config::Config;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

#[derive(Parser)]
#[command(name = "callcenter", version, about = "Open-source contact-center platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the platform. Without --config it runs the embedded default: in-memory state, SQLite
    /// under ./data and the demo IVR.
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file (with environment overrides) and exit 0 if it is good, 1 if not.
    CheckConfig { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match Config::load(Some(&file), std::env::vars()) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve { config } => {
            let config = match Config::load(config.as_deref(), std::env::vars()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            telemetry::init_tracing(&config.node.log, config.node.log_json);
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!("{e}");
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(config: Config) -> Result<(), String> {
    let telemetry = telemetry::Telemetry::new();
    let ready = Arc::new(AtomicBool::new(false));
    let shutdown = CancellationToken::new();

    let gateway = sip_gateway::Gateway::start(
        config.gateway(),
        Arc::new(sip_gateway::MemoryLocations::default()),
        Arc::new(sip_gateway::PassThrough),
        &telemetry,
    )
    .await
    .map_err(|e| e.to_string())?;

    let http = agent_desk::Http::new(telemetry.clone(), ready.clone());
    let (http_addr, http_task) = http
        .serve(config.http.listen, shutdown.clone())
        .await
        .map_err(|e| format!("http {}: {e}", config.http.listen))?;

    ready.store(true, Ordering::Release);
    info!(node = %config.node.name, sip = %gateway.local_addr(), http = %http_addr, "callcenter ready");
    // A line on stdout that scripts and tests can wait for.
    println!("callcenter ready sip={} http={}", gateway.local_addr(), http_addr);

    wait_for_signal().await;
    info!("draining: new calls get 503");
    ready.store(false, Ordering::Release);
    let left = gateway
        .drain(Duration::from_secs(config.node.shutdown_grace_secs))
        .await;
    if left > 0 {
        warn!(calls = left, "grace period over; ending remaining calls");
    }
    gateway.shutdown();
    shutdown.cancel();
    let _ = http_task.await;
    info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        // Without signal handlers the process can only be killed; wait forever.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
