//! `bench`: benchmarks that print JSON. Each compares the platform with a baseline measured in the same
//! run on the same machine (Kamailio for SIP, a bare relay for media, ...), so the ratios mean something
//! on a shared, noisy machine where absolute figures drift.

mod acd;
mod cluster;
mod crm;
mod dialer;
mod load;
mod load_rtp;
mod media;
mod proc_stat;
mod sip;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "bench",
    about = "Benchmarks of the call-center platform (JSON output)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// SIPp UAC -> callcenter B2BUA -> SIPp UAS at fixed rates, beside the same path through Kamailio.
    Sip(sip::SipArgs),
    /// ACD router at 5,000 agents, beside a reference router written as one Redis Lua script.
    Acd(acd::AcdArgs),
    /// Bridged G.711 calls through the media engine, beside a bare UDP relay.
    Media(media::MediaArgs),
    /// Interaction events into PostgreSQL through the durable writer, beside one INSERT per event.
    Crm(crm::CrmArgs),
    /// The dialer's policy grid: predictive beside progressive, VICIdial-style and fixed ratios.
    Dialer(dialer::DialerArgs),
    /// The cluster-wide ACD router: three router processes and three nodes through Redis
    /// (decisions per second, enqueue-to-offer latency, failover time), beside the in-memory store.
    Cluster(cluster::ClusterArgs),
    /// The whole path under load: SIPp callers through the IVR (RFC 4733) into a queue, answered by SIPp
    /// agent phones, recorded and logged, against the release binary; beside a bare UDP relay.
    Load(load::LoadArgs),
    /// One router process of `bench cluster` (started by it).
    #[command(hide = true)]
    ClusterRouter(cluster::RouterArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sip(args) => sip::run(&args),
        Command::Acd(args) => acd::run(&args),
        Command::Media(args) => media::run(&args),
        Command::Crm(args) => crm::run(&args),
        Command::Dialer(args) => dialer::run(&args),
        Command::Cluster(args) => cluster::run(&args),
        Command::Load(args) => load::run(&args),
        Command::ClusterRouter(args) => cluster::run_router(&args),
    };
    match result {
        Ok(json) => {
            println!("{}", serde_json::to_string_pretty(&json).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}
