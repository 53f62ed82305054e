//! `bench cluster`: the cluster-wide ACD router on this machine through Redis. Three router
//! processes (this binary, `bench cluster-router`, one leads and two stand by) and three nodes (router
//! clients in this process, each with its own Redis connections). Measured:
//! - **decisions per second**: callers waiting on every node, agents logging in; each offer is
//!   answered and the call ended at once by the node holding it, so every decision travels node ->
//!   Redis -> leader -> Redis -> node. Beside it, the same run on the in-memory store (leader and nodes
//!   in this process): what the Redis transport costs.
//! - **enqueue-to-offer latency** at a fixed arrival rate (200 calls/s): from a node's `enqueue` to
//!   the offer reaching that node. The leader is always another process, so every caller is on a
//!   node that is not the leader.
//! - **failover time**: the leading process killed with SIGKILL, a caller enqueued at that instant;
//!   time until that caller's offer arrives from the new leader. Repeated; the killed process is
//!   started again as a standby each time. Callers keep arriving meanwhile.
//! - **double offers** (a phone asked to carry a second call) and **lost callers** (never offered).

use routing::protocol::LEADER_LEASE;
use routing::{ClientConfig, Clock, LeaderConfig, QueueNotice, RouterClient, spawn_leader};
use serde_json::{Value, json};
use state_store::{StateConfig, StateStore};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use acd::{AcdConfig, AgentConfig, CallRequest, Input, QueueConfig, QueueMembership};
use domain::{AgentId, CallId, QueueId};

#[derive(clap::Args)]
pub struct ClusterArgs {
    /// Redis to run against (a fresh key prefix is used and deleted afterwards); default: `REDIS_URL`.
    #[arg(long)]
    redis: Option<String>,
    /// Router processes (one leads, the others stand by).
    #[arg(long, default_value_t = 3)]
    routers: usize,
    /// Nodes (router clients), each with its own connections.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Agents (spread over 10 queues, each serving two).
    #[arg(long, default_value_t = 500)]
    agents: usize,
    /// Callers in the decisions-per-second phase.
    #[arg(long, default_value_t = 20_000)]
    throughput_calls: usize,
    /// Arrivals per second in the latency phase.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 10)]
    latency_secs: u64,
    /// Leaders killed in the failover phase.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Arrivals per second while leaders are killed.
    #[arg(long, default_value_t = 20)]
    failover_rate: u32,
}

/// A router process: `bench cluster-router`. Leads or stands by until its standard input closes.
#[derive(clap::Args)]
pub struct RouterArgs {
    #[arg(long)]
    redis: String,
    #[arg(long)]
    prefix: String,
    /// The ACD configuration as JSON.
    #[arg(long)]
    config: std::path::PathBuf,
    #[arg(long)]
    name: String,
}

const QUEUES: usize = 10;

fn queue_id(i: usize) -> QueueId {
    QueueId::new(format!("q{}", i % QUEUES)).expect("letters and digits make a queue id")
}

fn agent_id(i: usize) -> Result<AgentId, String> {
    AgentId::new(format!("agent{i}")).map_err(|e| e.to_string())
}

fn call_id(prefix: &str, i: usize) -> Result<CallId, String> {
    CallId::new(format!("{prefix}{i}")).map_err(|e| e.to_string())
}

fn acd_config(agents: usize) -> Result<AcdConfig, String> {
    Ok(AcdConfig {
        queues: (0..QUEUES).map(|i| QueueConfig::new(queue_id(i))).collect(),
        agents: (0..agents)
            .map(|i| {
                Ok(AgentConfig {
                    id: agent_id(i)?,
                    skills: Default::default(),
                    queues: vec![
                        QueueMembership {
                            queue: queue_id(i),
                            rank: 1,
                        },
                        QueueMembership {
                            queue: queue_id(i + 1),
                            rank: 2,
                        },
                    ],
                })
            })
            .collect::<Result<_, String>>()?,
        random_seed: 7,
    })
}

/// Runs one router candidate until standard input closes (the bench ended or died).
pub fn run_router(args: &RouterArgs) -> Result<Value, String> {
    let config: AcdConfig = serde_json::from_slice(&std::fs::read(&args.config).map_err(|e| e.to_string())?)
        .map_err(|e| format!("router config: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let store = StateStore::connect(&StateConfig::redis(&args.redis, &args.prefix))
            .await
            .map_err(|e| e.to_string())?;
        let leader = spawn_leader(store, LeaderConfig::new(&args.name, config), Clock::system());
        // Standard input closing means the bench is gone: hand over and leave.
        let _ = tokio::task::spawn_blocking(|| {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                if line.is_err() {
                    break;
                }
            }
        })
        .await;
        leader.stop().await;
        Ok(json!({ "router": args.name }))
    })
}

/// A router process; killed (SIGKILL) when dropped.
struct RouterProc {
    name: String,
    child: Child,
}

impl RouterProc {
    fn start(name: &str, redis: &str, prefix: &str, config: &std::path::Path) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let child = Command::new(exe)
            .args([
                "cluster-router",
                "--redis",
                redis,
                "--prefix",
                prefix,
                "--name",
                name,
            ])
            .arg("--config")
            .arg(config)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("router process: {e}"))?;
        Ok(Self {
            name: name.to_string(),
            child,
        })
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RouterProc {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.flush();
        }
        self.kill();
    }
}

/// What the agents' phones carry, and double offers counted.
#[derive(Default)]
struct Phones {
    carrying: parking_lot::Mutex<HashMap<AgentId, CallId>>,
    doubles: AtomicU64,
}

/// One served call: enqueue-to-offer latency.
struct Served {
    latency: Duration,
}

/// Enqueues a call and answers its first offer: accepted, held `hold`, ended.
fn serve(
    node: &RouterClient,
    call: CallId,
    queue: QueueId,
    hold: Duration,
    phones: Arc<Phones>,
    done: mpsc::UnboundedSender<Served>,
) {
    let enqueued = Instant::now();
    let mut notices = node.enqueue(CallRequest::new(call.clone(), queue));
    let node = node.clone();
    tokio::spawn(async move {
        let offer = loop {
            match notices.recv().await {
                Some(QueueNotice::Offer(o)) => break o,
                Some(_) => continue,
                None => return,
            }
        };
        let latency = enqueued.elapsed();
        let Some(agent) = offer.agents.first().cloned() else {
            return;
        };
        if phones
            .carrying
            .lock()
            .insert(agent.clone(), call.clone())
            .is_some()
        {
            phones.doubles.fetch_add(1, Ordering::Relaxed);
        }
        node.input(Input::OfferAccepted {
            call: call.clone(),
            agent: agent.clone(),
        });
        if !hold.is_zero() {
            tokio::time::sleep(hold).await;
        }
        phones.carrying.lock().remove(&agent);
        node.input(Input::CallEnded { call: call.clone() });
        node.forget(call);
        let _ = done.send(Served { latency });
    });
}

/// Waits for `n` served calls; gives up when none arrives for `quiet`. Returns the latencies.
async fn collect(done: &mut mpsc::UnboundedReceiver<Served>, n: usize, quiet: Duration) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(quiet, done.recv()).await {
            Ok(Some(s)) => out.push(s.latency),
            _ => break,
        }
    }
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    let us: Vec<u64> = sorted
        .iter()
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .collect();
    crate::acd::percentile(&us, p) as f64 / 1e3
}

async fn start_nodes(open: &dyn Fn() -> StateConfig, n: usize) -> Result<Vec<RouterClient>, String> {
    let mut nodes = Vec::new();
    for i in 0..n {
        let store = StateStore::connect(&open()).await.map_err(|e| e.to_string())?;
        let cfg = ClientConfig {
            request_timeout: Duration::from_secs(30),
            ..ClientConfig::new(format!("node{i}"))
        };
        nodes.push(
            RouterClient::start(store, cfg, Clock::system())
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(nodes)
}

/// Callers waiting on every node, then every agent logging in: decisions per second until all are
/// served. Returns the figures and the number of callers never offered.
async fn throughput(
    nodes: &[RouterClient],
    calls: usize,
    agents: usize,
    phones: &Arc<Phones>,
    tag: &str,
) -> Result<(Value, u64), String> {
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let enqueue_start = Instant::now();
    for i in 0..calls {
        let node = &nodes[i % nodes.len()];
        serve(
            node,
            call_id(tag, i)?,
            queue_id(i),
            Duration::ZERO,
            phones.clone(),
            done_tx.clone(),
        );
    }
    for node in nodes {
        node.save_now().await;
    }
    let enqueued_in = enqueue_start.elapsed();
    let start = Instant::now();
    for i in 0..agents {
        nodes[i % nodes.len()].input(Input::AgentLogin { agent: agent_id(i)? });
    }
    let served = collect(&mut done, calls, Duration::from_secs(30)).await;
    let elapsed = start.elapsed();
    let lost = (calls - served.len()) as u64;
    Ok((
        json!({
            "callers": calls,
            "agents": agents,
            "enqueue_per_sec": (calls as f64 / enqueued_in.as_secs_f64()).round(),
            "decisions": served.len(),
            "seconds": (elapsed.as_secs_f64() * 1e3).round() / 1e3,
            "decisions_per_sec": (served.len() as f64 / elapsed.as_secs_f64()).round(),
        }),
        lost,
    ))
}

/// The same throughput phase with leader and nodes in this process on the in-memory store.
async fn in_memory_throughput(args: &ClusterArgs, config: &AcdConfig) -> Result<Value, String> {
    let store = StateStore::memory();
    let leader = spawn_leader(
        store.clone(),
        LeaderConfig::new("memory", config.clone()),
        Clock::system(),
    );
    // The memory store is per process: the nodes share the leader's.
    let mut nodes = Vec::new();
    for i in 0..args.nodes {
        nodes.push(
            RouterClient::start(
                store.clone(),
                ClientConfig::new(format!("node{i}")),
                Clock::system(),
            )
            .await
            .map_err(|e| e.to_string())?,
        );
    }
    let phones = Arc::new(Phones::default());
    let (figures, lost) = throughput(&nodes, args.throughput_calls, args.agents, &phones, "m").await?;
    leader.stop().await;
    Ok(
        json!({ "figures": figures, "lost_callers": lost, "double_offers": phones.doubles.load(Ordering::Relaxed) }),
    )
}

/// The router process holding the lease now, by the holder name it wrote.
fn leader_index(redis: &redis::Client, prefix: &str, routers: &[RouterProc]) -> Option<usize> {
    let mut conn = redis.get_connection_with_timeout(Duration::from_secs(2)).ok()?;
    let holder: Option<String> = redis::cmd("HGET")
        .arg(format!("{prefix}:lease:{LEADER_LEASE}"))
        .arg("holder")
        .query(&mut conn)
        .ok()?;
    let holder = holder?;
    routers
        .iter()
        .position(|r| holder.split('.').next() == Some(r.name.as_str()))
}

fn delete_prefix(redis: &redis::Client, prefix: &str) {
    let Ok(mut conn) = redis.get_connection() else {
        return;
    };
    let pattern = format!("{prefix}:*");
    let keys: Vec<String> = match redis::cmd("KEYS").arg(&pattern).query(&mut conn) {
        Ok(k) => k,
        Err(_) => return,
    };
    for chunk in keys.chunks(500) {
        let _: Result<i64, _> = redis::cmd("DEL").arg(chunk).query(&mut conn);
    }
}

pub fn run(args: &ClusterArgs) -> Result<Value, String> {
    let url = match &args.redis {
        Some(url) => url.clone(),
        None => std::env::var("REDIS_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .ok_or("give --redis or set REDIS_URL")?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let prefix = format!("bench-cluster-{}-{nanos}", std::process::id());
    let redis = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
    let result = rt.block_on(run_phases(args, &url, &prefix, &redis));
    delete_prefix(&redis, &prefix);
    result
}

async fn run_phases(
    args: &ClusterArgs,
    url: &str,
    prefix: &str,
    redis: &redis::Client,
) -> Result<Value, String> {
    let config = acd_config(args.agents)?;
    let baseline = in_memory_throughput(args, &config).await?;

    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config_path = dir.path().join("acd.json");
    std::fs::write(
        &config_path,
        serde_json::to_vec(&config).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let mut routers = Vec::new();
    for i in 0..args.routers.max(2) {
        routers.push(RouterProc::start(
            &format!("router{i}"),
            url,
            prefix,
            &config_path,
        )?);
    }
    let state = || StateConfig::redis(url, prefix);
    let nodes = start_nodes(&state, args.nodes.max(1)).await?;
    let phones = Arc::new(Phones::default());
    let mut lost = 0u64;

    // 1. Decisions per second.
    let (decisions, lost_here) = throughput(&nodes, args.throughput_calls, args.agents, &phones, "t").await?;
    lost += lost_here;

    // 2. Enqueue-to-offer latency at a fixed rate; each call held 100 ms.
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let calls = usize::try_from(u64::from(args.rate) * args.latency_secs).unwrap_or(0);
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..calls {
        tick.tick().await;
        serve(
            &nodes[i % nodes.len()],
            call_id("l", i)?,
            queue_id(i),
            Duration::from_millis(100),
            phones.clone(),
            done_tx.clone(),
        );
    }
    let mut latencies = collect(&mut done, calls, Duration::from_secs(30)).await;
    lost += (calls - latencies.len()) as u64;
    latencies.sort();

    // 3. Failover: kill the leading process, enqueue a caller at that instant, time its offer.
    let (bg_tx, mut bg_done) = mpsc::unbounded_channel();
    let background_sent = Arc::new(AtomicU64::new(0));
    let background = {
        let nodes = nodes.clone();
        let phones = phones.clone();
        let sent = background_sent.clone();
        let rate = args.failover_rate.max(1);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
            for i in 0usize.. {
                tick.tick().await;
                let Ok(call) = call_id("b", i) else { break };
                serve(
                    &nodes[i % nodes.len()],
                    call,
                    queue_id(i),
                    Duration::from_millis(200),
                    phones.clone(),
                    bg_tx.clone(),
                );
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let (probe_tx, mut probes) = mpsc::unbounded_channel();
    let mut failovers = Vec::new();
    for k in 0..args.kills {
        let deadline = Instant::now() + Duration::from_secs(10);
        let idx = loop {
            if let Some(i) = leader_index(redis, prefix, &routers) {
                break i;
            }
            if Instant::now() > deadline {
                return Err("no router took the lease".to_string());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        routers[idx].kill();
        let killed_at = Instant::now();
        serve(
            &nodes[k % nodes.len()],
            call_id("p", k)?,
            queue_id(k),
            Duration::ZERO,
            phones.clone(),
            probe_tx.clone(),
        );
        match tokio::time::timeout(Duration::from_secs(30), probes.recv()).await {
            Ok(Some(_)) => failovers.push(killed_at.elapsed()),
            _ => lost += 1,
        }
        let name = routers[idx].name.clone();
        routers[idx] = RouterProc::start(&name, url, prefix, &config_path)?;
        // Let the restarted process connect and stand by before the next kill.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    background.abort();
    let _ = background.await;
    let background_calls = usize::try_from(background_sent.load(Ordering::SeqCst)).unwrap_or(0);
    let bg_served = collect(&mut bg_done, background_calls, Duration::from_secs(30))
        .await
        .len();
    lost += background_calls.saturating_sub(bg_served) as u64;
    failovers.sort();
    let failover_samples: Vec<f64> = failovers.iter().map(|d| (ms(*d) * 10.0).round() / 10.0).collect();

    let repeated: u64 = nodes
        .iter()
        .map(|n| n.stats().repeated_offers.load(Ordering::Relaxed))
        .sum();
    let decisions_per_sec = decisions["decisions_per_sec"].as_f64().unwrap_or(0.0);
    let memory_per_sec = baseline["figures"]["decisions_per_sec"].as_f64().unwrap_or(0.0);
    Ok(json!({
        "setup": {
            "router_processes": routers.len(),
            "nodes": nodes.len(),
            "agents": args.agents,
            "queues": QUEUES,
            "lease_ttl_ms": 2000,
            "note": "nodes are router clients in the bench process, each with its own Redis connections; routers are separate processes (one leads)",
        },
        "decisions": decisions,
        "decisions_in_memory_baseline": baseline,
        "redis_over_memory": if memory_per_sec > 0.0 { (decisions_per_sec / memory_per_sec * 1000.0).round() / 1000.0 } else { 0.0 },
        "enqueue_to_offer": {
            "rate_per_sec": args.rate,
            "callers": calls,
            "p50_ms": percentile_ms(&latencies, 0.5),
            "p99_ms": percentile_ms(&latencies, 0.99),
            "max_ms": latencies.last().map_or(0.0, |d| ms(*d)),
        },
        "failover": {
            "kills": args.kills,
            "recovered": failovers.len(),
            "p50_ms": percentile_ms(&failovers, 0.5),
            "p99_ms": percentile_ms(&failovers, 0.99),
            "max_ms": failovers.last().map_or(0.0, |d| ms(*d)),
            "samples_ms": failover_samples,
            "background_callers": background_calls,
        },
        "double_offers": phones.doubles.load(Ordering::Relaxed),
        "repeated_offers_dropped": repeated,
        "lost_callers": lost,
        "goals": {
            "decisions_per_sec": 20000,
            "enqueue_to_offer_p99_ms": 20,
            "failover_p99_ms": 3000,
            "double_offers": 0,
            "lost_callers": 0,
        },
    }))
}
