//! The `callcenter` binary: `serve` runs the platform, `check-config` validates a configuration.

mod config;
mod open_files;
mod retention;
mod tools;

use clap::{Parser, Subcommand};
use config::Config;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// mimalloc instead of the system allocator: per-thread free lists, no arena lock shared by the
/// runtime's workers (glibc malloc was 22 % of the node's CPU under SIP load, see
/// docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// IVR flows.
    Ivr {
        #[command(subcommand)]
        command: IvrCommand,
    },
    /// Apply the CRM database migrations (serve applies them too).
    Migrate {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Erlang C staffing: agents needed for a call volume and a service-level target.
    Erlang(tools::ErlangArgs),
    /// Historical reports from the CRM store (JSON, or CSV with --csv).
    Report(tools::ReportArgs),
    /// Outbound dialer tools.
    Dialer {
        #[command(subcommand)]
        command: DialerCommand,
    },
}

#[derive(Subcommand)]
enum IvrCommand {
    /// Validate a directory of flows and their prompts; every problem names file, line and node.
    Check { dir: PathBuf },
}

#[derive(Subcommand)]
enum DialerCommand {
    /// Run the pacing simulator on a scenario.
    Simulate(tools::SimulateArgs),
}

fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Ivr {
            command: IvrCommand::Check { dir },
        } => tools::ivr_check(&dir),
        Command::Erlang(args) => report(tools::erlang(&args)),
        Command::Dialer {
            command: DialerCommand::Simulate(args),
        } => report(tools::simulate(&args)),
        Command::Report(args) => match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => report(rt.block_on(tools::report(&args))),
            Err(e) => report(Err(e.to_string())),
        },
        Command::Migrate { config } => {
            let config = match Config::load(config.as_deref(), std::env::vars()) {
                Ok(c) => c,
                Err(e) => return report(Err(e.to_string())),
            };
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => report(rt.block_on(tools::migrate(&config))),
                Err(e) => report(Err(e.to_string())),
            }
        }
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

    // Live state: registrations now; presence and queues as they move to the store.
    let state = state_store::StateStore::connect(&config.state_store())
        .await
        .map_err(|e| format!("state store ({:?}): {e}", config.state.backend))?;

    // CRM store and the durable interaction writer.
    if let Some(path) = config.crm.database_url.strip_prefix("sqlite:") {
        let path = path.trim_start_matches("//");
        if let Some(dir) = std::path::Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            // Private (0700), like the database in it.
            crm_store::files::create_private_dir(dir)
                .map_err(|e| format!("crm database folder {}: {e}", dir.display()))?;
        }
    }
    let crm = crm_store::CrmStore::connect(&config.crm.database_url)
        .await
        .map_err(|e| format!("crm: {e}"))?;
    crm.migrate().await.map_err(|e| format!("crm migrations: {e}"))?;
    let writer_config = crm_store::WriterConfig::new(&config.crm.journal_dir);
    let (writer, writer_task) = if config.crm_uses_stream_outbox() {
        let outbox = adapters::StreamOutbox::new(state.clone(), &config.node.name)
            .await
            .map_err(|e| format!("crm outbox stream: {e}"))?;
        info!("interaction events go through the state store's stream");
        crm_store::EventWriter::start_with_outbox(crm.clone(), writer_config, Arc::new(outbox))
            .await
            .map_err(|e| format!("crm outbox: {e}"))?
    } else {
        crm_store::EventWriter::start(crm.clone(), writer_config)
            .await
            .map_err(|e| format!("crm journal {}: {e}", config.crm.journal_dir.display()))?
    };

    crm_store::metrics::register(&telemetry, writer.clone());

    // Media engine, IVR flows, ACD.
    let open_files = open_files::raise_to_hard_limit();
    let keep_bound_pairs = open_files::kept_port_pairs(open_files);
    info!(
        open_files = ?open_files,
        keep_bound_pairs, "free RTP port pairs that may keep their sockets bound (the range may hold fewer)"
    );
    let media = media::engine::MediaEngine::new(media::engine::MediaConfig {
        bind_ip: config.rtp.bind_ip,
        port_min: config.rtp.port_min,
        port_max: config.rtp.port_max,
        media_timeout: Duration::from_secs(config.rtp.media_timeout_secs),
        recordings_dir: config.rtp.recordings_dir.clone(),
        unconfirmed_send_limit: media::engine::UnconfirmedSendLimit {
            packets: config.rtp.unconfirmed_send_packets,
            duration: Duration::from_millis(config.rtp.unconfirmed_send_ms),
        },
        keep_bound_pairs,
        ..media::engine::MediaConfig::default()
    })
    .map_err(|e| format!("media: {e}"))?;
    media.metrics().register(&telemetry);
    let flows = ivr::load_dir(&config.ivr.scripts_dir).map_err(|errors| {
        format!(
            "IVR flows in {}:\n{}",
            config.ivr.scripts_dir.display(),
            ivr::render_errors(&errors)
        )
    })?;
    let flows = Arc::new(ivr::FlowSetHandle::new(flows));
    // The ACD: the cluster's router (every node a candidate for its lease, reached through the
    // store), or this process's own, continuing from the state it saved (on Redis it survives the
    // restart).
    let acd_metrics = call_control::kpi_metrics::AcdMetrics::register(&telemetry);
    let mut leader = None;
    let resumed = if config.cluster.enabled {
        let (resumed, candidate) = join_cluster(&config, &state, &crm, acd_metrics).await?;
        let lead = call_control::kpi_metrics::RouterLeadMetrics::register(&telemetry);
        lead.follow(candidate.status());
        leader = Some((candidate, lead));
        resumed
    } else {
        call_control::resume_acd(
            config.acd.clone(),
            config.agents.ready_on_start,
            Some(acd_metrics),
            state.clone(),
            &crm,
            &config.node.name,
        )
        .await
        .map_err(|e| format!("acd: {e}"))?
    };
    let acd = resumed.acd.clone();
    let anchor = Arc::new(adapters::EngineAnchor::new(media.clone()));
    let desks = call_control::DeskHub::new();
    if let Some(node) = acd.cluster_node() {
        // Desktops on any node: this node's call events reach them, their commands come back.
        desks
            .join_cluster(state.clone(), node)
            .await
            .map_err(|e| format!("desk relay: {e}"))?;
    }
    let webrtc = if config.webrtc.enabled {
        let endpoint = media::webrtc::WebRtcEndpoint::new(media::webrtc::WebRtcConfig {
            bind_ip: config.webrtc.bind_ip,
            port: config.webrtc.port,
            advertise_ip: config.webrtc.advertise_ip,
            ..media::webrtc::WebRtcConfig::default()
        })
        .map_err(|e| format!("webrtc: {e}"))?;
        endpoint.metrics().register(&telemetry);
        info!(addr = %endpoint.candidate_addr(), "browser softphone media ready");
        Some(endpoint)
    } else {
        None
    };
    // In a cluster, the calls this node carries are kept in the store, so that if it dies the
    // router's leader ends them in the CRM; this node's leader does the same for others.
    let appender: Arc<dyn call_control::EventSink> =
        Arc::new(crm_store::OrderedAppender::start(writer.clone()));
    let events: Arc<dyn call_control::EventSink> = match (acd.cluster_node(), &leader) {
        (Some(node), Some((candidate, _))) => {
            call_control::live_calls::sweep_while_leading(
                state.clone(),
                appender.clone(),
                node.clone(),
                candidate.status(),
                &telemetry,
            );
            Arc::new(call_control::live_calls::LiveCalls::start(
                appender,
                state.clone(),
                node,
            ))
        }
        _ => appender,
    };
    let calls = call_control::CallControl::new(
        &config.node.name,
        call_control::Services {
            media,
            flows: flows.clone(),
            crm: crm.clone(),
            acd: acd.clone(),
            events,
            state: state.clone(),
            desks: desks.clone(),
            hold_music: config.desk.hold_music.clone(),
            webrtc,
            outbound: config.outbound_trunk(),
        },
        config.rtp.record_calls,
    );
    calls.set_queue_audio(config.queue_audio.clone());
    if let Some(path) = &config.ivr.webhook_ca_certificates {
        let pem = std::fs::read(path)
            .map_err(|e| format!("ivr.webhook_ca_certificates {}: {e}", path.display()))?;
        let client = call_control::webhook::client(Some(&pem))
            .map_err(|e| format!("ivr.webhook_ca_certificates {}: {e}", path.display()))?;
        calls.set_webhook_client(client);
    }

    let gateway = Arc::new(
        sip_gateway::Gateway::start_with_state(
            config.gateway(),
            Arc::new(sip_gateway::StateLocations::new(state.clone())),
            anchor,
            &telemetry,
            state.clone(),
        )
        .await
        .map_err(|e| e.to_string())?,
    );
    gateway.set_inbound_handler(Arc::new(calls.clone()));
    calls.attach_gateway(gateway.clone());
    calls.take_back(resumed.callbacks);

    let campaigns = start_campaigns(&config, &calls, &crm, &telemetry).await?;

    let auth = agent_desk::Auth::new(
        crm.clone(),
        state.clone(),
        agent_desk::AuthConfig {
            session_ttl: Duration::from_secs(config.desk.session_ttl_secs),
            max_failures: config.desk.max_login_failures,
            lockout: Duration::from_secs(config.desk.lockout_secs),
            max_lockout: Duration::from_secs(config.desk.max_lockout_secs),
            failure_window: Duration::from_secs(config.desk.login_failure_window_secs),
            source_max_failures: config.desk.source_max_login_failures,
            user_max_failures: config.desk.user_max_login_failures,
            hash_workers: config.desk.login_hash_workers,
            hash_queue: config.desk.login_hash_queue,
        },
    )
    .map_err(|e| format!("desk accounts: {e}"))?;
    for user in &config.desk.users {
        let id = domain::AgentId::new(&user.id).map_err(|e| format!("desk.user {}: {e}", user.id))?;
        let created = auth
            .seed_user(
                &id,
                &user.name,
                user.role,
                &user.password,
                domain::Timestamp::now_utc(),
            )
            .await
            .map_err(|e| format!("desk.user {}: {e}", user.id))?;
        if created {
            info!(user = %id, role = user.role.as_str(), "desk account created");
        }
    }
    let edge = agent_desk::EdgeConfig {
        trusted_proxies: config.http.trusted_proxies.clone(),
        allowed_origins: config.http.allowed_origins.clone(),
    };
    let mut http = agent_desk::Http::new(telemetry.clone(), ready.clone()).with_edge(edge);
    if let Some(tls) = &config.http.tls {
        let server =
            agent_desk::tls::server_config(&tls.cert, &tls.key).map_err(|e| format!("http.tls: {e}"))?;
        http = http.with_tls(server);
    }
    // Supervisors: wallboard thresholds, recordings playback, agent-state history in the CRM.
    let supervision = Arc::new(agent_desk::supervision::Supervision::new(
        config.desk.wallboard.clone(),
        Some(config.rtp.recordings_dir.clone()),
    ));
    let history = agent_desk::supervision::spawn_state_history(
        acd.clone(),
        crm.clone(),
        supervision.clone(),
        shutdown.clone(),
    );
    let demo_token = config
        .desk
        .demo_services
        .then(agent_desk::demo::new_service_token);
    let http = http
        .with_supervision(supervision)
        .with_desk(agent_desk::DeskServices {
            crm: crm.clone(),
            state: state.clone(),
            acd,
            desks: desks.clone(),
            auth,
            calls: Some(calls.clone()),
            demo_services: config.desk.demo_services,
            // For the node's own IVR: its webhooks to a path on this server present it.
            demo_token: demo_token.clone(),
            campaigns,
            customers: customer_policy(&config.desk),
            desktop: Arc::new(desktop_settings(&config)?),
        });
    let (http_addr, http_task) = http
        .serve(config.http.listen, shutdown.clone())
        .await
        .map_err(|e| format!("http {}: {e}", config.http.listen))?;
    calls.set_own_http(call_control::webhook::OwnHttp::new(http_addr, demo_token));

    let retention_task = (config.crm.retention_days > 0).then(|| {
        retention::spawn(
            crm.clone(),
            config.crm.retention_days,
            config.rtp.recordings_dir.clone(),
            shutdown.clone(),
        )
    });

    let mut signals = Signals::install().map_err(|e| format!("signal handlers: {e}"))?;
    ready.store(true, Ordering::Release);
    info!(node = %config.node.name, sip = %gateway.local_addr(), http = %http_addr, "callcenter ready");
    // A line on stdout that scripts and tests can wait for.
    println!("callcenter ready sip={} http={}", gateway.local_addr(), http_addr);

    while let Signal::Reload = signals.next().await {
        match flows.reload(&config.ivr.scripts_dir) {
            Ok(set) => info!(flows = %set.summary(), "IVR flows reloaded"),
            Err(errors) => warn!(
                "IVR reload refused, the running flows stay:\n{}",
                ivr::render_errors(&errors)
            ),
        }
    }
    info!("draining: new calls get 503");
    gateway.start_draining();
    ready.store(false, Ordering::Release);
    if let Some((candidate, lead)) = leader.take() {
        // Leadership goes first, so routing never waits on a node on its way out.
        let again = hand_over(candidate, &config, &state).await;
        lead.follow(again.status());
        leader = Some((again, lead));
    }
    let left = gateway
        .drain(Duration::from_secs(config.node.shutdown_grace_secs))
        .await;
    if left > 0 {
        warn!(calls = left, "grace period over; ending remaining calls");
    }
    gateway.shutdown();
    // Its calls are over: nothing is relayed to this node any more.
    desks.leave_cluster().await;
    resumed.acd.shutdown().await;
    if let Some((candidate, _)) = leader {
        candidate.stop().await;
    }
    shutdown.cancel();
    let _ = http_task.await;
    let _ = history.await;
    if let Some(task) = retention_task {
        let _ = task.await;
    }
    if let Err(e) = writer_task.shutdown().await {
        warn!(error = %e, "interaction writer did not shut down cleanly");
    }
    info!("stopped");
    Ok(())
}

/// The leader candidate's tuning from `[cluster]`.
fn leader_config(config: &Config) -> routing::LeaderConfig {
    let mut cfg = routing::LeaderConfig::new(config.node.name.clone(), config.acd.clone());
    cfg.lease_ttl = Duration::from_millis(config.cluster.lease_ttl_ms);
    cfg.renew_every = cfg.lease_ttl / 5;
    cfg
}

/// Joins the cluster: starts this node's candidate for the router's lease and its client, takes
/// back the callbacks no live node holds, and logs in the agents ready at start.
async fn join_cluster(
    config: &Config,
    state: &state_store::StateStore,
    crm: &crm_store::CrmStore,
    metrics: call_control::kpi_metrics::AcdMetrics,
) -> Result<(call_control::Resumed, routing::LeaderHandle), String> {
    let clock = routing::Clock::system();
    let candidate = routing::spawn_leader(state.clone(), leader_config(config), clock.clone());
    let mut client = routing::ClientConfig::new(config.node.name.clone());
    client.liveness_ttl = Duration::from_millis(config.cluster.liveness_ttl_ms);
    // Renewed often whatever the TTL: a record renewed just before a stall lasts the whole TTL.
    client.liveness_every = (client.liveness_ttl / 3).min(Duration::from_secs(1));
    let client = routing::RouterClient::start(state.clone(), client, clock)
        .await
        .map_err(|e| format!("cluster router: {e}"))?;
    info!(node = %client.node(), "joined the cluster's router");
    let resumed = call_control::join_cluster(client, crm).await;
    resumed.acd.feed_metrics(metrics);
    if config.agents.ready_on_start {
        resumed.acd.log_in(config.acd.agents.iter().map(|a| a.id.clone()));
    }
    Ok((resumed, candidate))
}

/// Hands the router's leadership over at the start of a drain: the candidate releases the lease
/// (after a last snapshot) and stands aside while another node takes it; this node stands by again
/// afterwards, so a lone node still routes its own draining calls.
async fn hand_over(
    candidate: routing::LeaderHandle,
    config: &Config,
    state: &state_store::StateStore,
) -> routing::LeaderHandle {
    let was_leading = candidate.status().borrow().leading;
    candidate.stop().await;
    if was_leading {
        info!("router leadership handed over");
        let mut cfg = leader_config(config);
        // Others try every 200 ms: give them the first tries.
        cfg.standby_poll = cfg.lease_ttl;
        let again = routing::Leader::new(state.clone(), cfg, routing::Clock::system());
        tokio::time::sleep(Duration::from_millis(config.cluster.lease_ttl_ms)).await;
        return routing::LeaderHandle::spawn(again);
    }
    routing::spawn_leader(state.clone(), leader_config(config), routing::Clock::system())
}

/// Imports each `[[campaign]]`'s leads file the first time (when the CRM store has none for it yet),
/// saves the campaign and starts its runner (which dials while it holds the campaign's lease).
async fn start_campaigns(
    config: &Config,
    calls: &call_control::CallControl,
    crm: &crm_store::CrmStore,
    telemetry: &telemetry::Telemetry,
) -> Result<Vec<call_control::CampaignHandle>, String> {
    if config.campaigns.is_empty() {
        return Ok(Vec::new());
    }
    let metrics = call_control::DialerMetrics::register(telemetry);
    let mut handles = Vec::new();
    for campaign in &config.campaigns {
        let spec = campaign
            .spec(&config.acd)
            .map_err(|e| format!("campaign {}: {}", campaign.id, e.join("; ")))?;
        let now = domain::Timestamp::now_utc();
        let id = spec.id.clone();
        let stored = crm
            .lead_statuses(&id)
            .await
            .map_err(|e| format!("campaign {id}: {e}"))?;
        if let (Some(path), true) = (&campaign.leads, stored.is_empty()) {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("campaign {id}: leads {}: {e}", path.display()))?;
            let report = crm
                .import_leads_csv(&id, &text, "config", now)
                .await
                .map_err(|e| format!("campaign {id}: leads import: {e}"))?;
            // Problems can quote cells (numbers, names): only their count and rows are logged.
            let rows: Vec<u64> = report.problems.iter().map(|p| p.row).collect();
            info!(campaign = %id, imported = report.imported, rejected_rows = report.rejected_rows, ?rows, "leads imported");
        }
        // The configured state applies when the campaign is created; after that a supervisor's
        // pause, resume or stop, kept by the store, survives restarts.
        let existing = crm
            .campaign(&id)
            .await
            .map_err(|e| format!("campaign {id}: {e}"))?;
        let state = match (existing.as_ref(), spec.start) {
            (Some(c), _) => c.status.clone(),
            (None, dialer::campaign::CampaignState::Running) => "running".into(),
            (None, dialer::campaign::CampaignState::Paused) => "paused".into(),
            (None, dialer::campaign::CampaignState::Stopped) => "finished".into(),
        };
        let mode = match spec.mode {
            dialer::campaign::CampaignMode::Preview => crm_store::DialMode::Preview,
            dialer::campaign::CampaignMode::Progressive => crm_store::DialMode::Progressive,
            dialer::campaign::CampaignMode::Predictive => crm_store::DialMode::Predictive,
            dialer::campaign::CampaignMode::Agentless => crm_store::DialMode::Agentless,
        };
        crm.save_campaign(
            &crm_store::Campaign {
                id: id.clone(),
                name: spec.name.clone(),
                mode,
                queue: spec.queue.clone(),
                status: state.clone(),
                max_abandon_rate: spec.rules.max_abandon_rate,
            },
            "config",
            now,
        )
        .await
        .map_err(|e| format!("campaign {id}: {e}"))?;
        // The runner loads the leads, with their progress, once it holds the campaign's lease.
        info!(campaign = %id, leads = stored.len(), state, "campaign starting");
        handles.push(calls.start_campaign(spec, metrics.clone()));
    }
    Ok(handles)
}

enum Signal {
    Reload,
    Stop,
}

/// The process's signal handlers, installed once before the node reports ready, so no signal sent
/// after that line is lost or falls back to its default action (SIGHUP would end the process).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop,
            _ = self.int.recv() => Signal::Stop,
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}

/// The desk's customer-data rules from `[desk]`.
fn customer_policy(desk: &config::DeskConfig) -> agent_desk::access::CustomerPolicy {
    let role = |p: &config::RolePermissions| agent_desk::access::RolePolicy {
        read_any_customer: p.read_any_customer,
        full_numbers: p.full_numbers,
    };
    agent_desk::access::CustomerPolicy {
        agent: role(&desk.roles.agent),
        supervisor: role(&desk.roles.supervisor),
        admin: role(&desk.roles.admin),
        lookups_burst: desk.customer_lookups_burst,
        lookups_per_sec: desk.customer_lookups_per_sec,
    }
}

/// What the agent desktop offers: `[desk]` dispositions and not-ready reasons, and each agent's
/// queues from `[acd]`.
fn desktop_settings(config: &config::Config) -> Result<agent_desk::protocol::DesktopSettings, String> {
    for reason in &config.desk.not_ready_reasons {
        acd::ReasonCode::new(reason.clone()).map_err(|e| format!("desk.not_ready_reasons: {e}"))?;
    }
    let lists = std::iter::once(&config.desk.dispositions).chain(config.desk.dispositions_by.values());
    for code in lists.flatten() {
        let code = code.trim();
        if code.is_empty() || code.len() > agent_desk::protocol::MAX_DISPOSITION_LEN {
            return Err(format!(
                "desk.dispositions: {code:?} must be 1-{} characters",
                agent_desk::protocol::MAX_DISPOSITION_LEN
            ));
        }
    }
    Ok(agent_desk::protocol::DesktopSettings {
        dispositions: config.desk.dispositions.clone(),
        dispositions_by: config.desk.dispositions_by.clone(),
        not_ready_reasons: config.desk.not_ready_reasons.clone(),
        agent_names: config
            .desk
            .users
            .iter()
            .map(|u| (u.id.clone(), u.name.clone()))
            .collect(),
        agent_queues: config
            .acd
            .agents
            .iter()
            .map(|a| (a.id.clone(), a.queues.iter().map(|m| m.queue.clone()).collect()))
            .collect(),
    })
}
