//! The ACD's live KPIs as Prometheus gauges (`acd_*`), refreshed by the ACD owner task (or, on a
//! cluster, from the KPIs its leader publishes), and whether this node leads the router. Labels are
//! queue names and agent states only.

use acd::KpiSnapshot;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueStateLabel {
    queue: String,
    state: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Gauges of every queue's live figures.
#[derive(Clone, Default)]
pub struct AcdMetrics {
    waiting: Family<QueueLabel, Gauge>,
    oldest_wait: Family<QueueLabel, FloatGauge>,
    estimated_wait: Family<QueueLabel, FloatGauge>,
    service_level: Family<QueueLabel, FloatGauge>,
    asa: Family<QueueLabel, FloatGauge>,
    abandon_rate: Family<QueueLabel, FloatGauge>,
    aht: Family<QueueLabel, FloatGauge>,
    agents: Family<QueueStateLabel, Gauge>,
}

impl AcdMetrics {
    /// Creates the gauges and registers them under `acd`.
    pub fn register(telemetry: &telemetry::Telemetry) -> Self {
        let m = Self::default();
        telemetry.register("acd", |r| {
            r.register("calls_waiting", "Calls waiting in the queue", m.waiting.clone());
            r.register(
                "oldest_wait_seconds",
                "Wait of the oldest waiting call",
                m.oldest_wait.clone(),
            );
            r.register(
                "estimated_wait_seconds",
                "Estimated wait of a new call",
                m.estimated_wait.clone(),
            );
            r.register(
                "service_level_ratio",
                "Service level by the queue's formula, this interval",
                m.service_level.clone(),
            );
            r.register(
                "asa_seconds",
                "Average speed of answer, this interval",
                m.asa.clone(),
            );
            r.register(
                "abandon_ratio",
                "Abandoned / queued, this interval",
                m.abandon_rate.clone(),
            );
            r.register(
                "aht_seconds",
                "Average handle time (talk + hold + wrap-up), this interval",
                m.aht.clone(),
            );
            r.register("agents", "Agents serving the queue, by state", m.agents.clone());
        });
        m
    }

    /// Publishes one snapshot.
    pub fn update(&self, kpis: &KpiSnapshot) {
        for q in &kpis.queues {
            let l = QueueLabel {
                queue: q.queue.to_string(),
            };
            self.waiting.get_or_create(&l).set(i64::from(q.waiting));
            self.oldest_wait
                .get_or_create(&l)
                .set(q.oldest_wait_ms.unwrap_or(0) as f64 / 1000.0);
            self.estimated_wait
                .get_or_create(&l)
                .set(q.estimated_wait_ms.unwrap_or(0) as f64 / 1000.0);
            if let Some(sl) = q.service_level {
                self.service_level.get_or_create(&l).set(sl);
            }
            if let Some(asa) = q.asa_ms {
                self.asa.get_or_create(&l).set(asa as f64 / 1000.0);
            }
            if let Some(ar) = q.abandon_rate {
                self.abandon_rate.get_or_create(&l).set(ar);
            }
            if let Some(aht) = q.aht_ms {
                self.aht.get_or_create(&l).set(aht as f64 / 1000.0);
            }
            for kind in acd::AgentStateKind::ALL {
                let n = q.agents_by_state.get(&kind).copied().unwrap_or(0);
                let label = QueueStateLabel {
                    queue: q.queue.to_string(),
                    state: kind.name().to_string(),
                };
                self.agents.get_or_create(&label).set(i64::from(n));
            }
        }
    }
}

/// Whether this node leads the cluster's ACD router (`acd_router_leading`, 1 or 0) and how often it
/// took the lead (`acd_router_takeovers`), from its candidate's status.
#[derive(Clone, Default)]
pub struct RouterLeadMetrics {
    leading: Gauge,
    takeovers: Gauge,
}

impl RouterLeadMetrics {
    /// Creates the gauges and registers them under `acd`.
    pub fn register(telemetry: &telemetry::Telemetry) -> Self {
        let m = Self::default();
        telemetry.register("acd", |r| {
            r.register(
                "router_leading",
                "1 while this node leads the cluster's ACD router",
                m.leading.clone(),
            );
            r.register(
                "router_takeovers",
                "Times this node's current candidate took the cluster's ACD router over",
                m.takeovers.clone(),
            );
        });
        m
    }

    /// Follows a candidate's status until it stops.
    pub fn follow(&self, mut status: tokio::sync::watch::Receiver<routing::LeaderStatus>) {
        let m = self.clone();
        tokio::spawn(async move {
            loop {
                let s = status.borrow_and_update().clone();
                m.leading.set(i64::from(s.leading));
                m.takeovers
                    .set(i64::try_from(s.stats.takeovers).unwrap_or(i64::MAX));
                if status.changed().await.is_err() {
                    m.leading.set(0);
                    break;
                }
            }
        });
    }
}
