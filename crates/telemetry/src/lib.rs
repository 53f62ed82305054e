//! Telemetry: one Prometheus registry per process and the tracing subscriber.
//!
//! Each feature owns its metrics: it registers them here under its own prefix at start-up and keeps the
//! handles. The HTTP edge (agent-desk) serves [`Telemetry::encode`] at `/metrics`. Labels never carry
//! personal data: only methods, codes, reasons, queue names.

use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// The process-wide metrics registry, shared by every feature.
#[derive(Clone, Default)]
pub struct Telemetry {
    registry: Arc<Mutex<Registry>>,
}

impl Telemetry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets a feature register its metrics under `prefix` (e.g. `sip`).
    pub fn register(&self, prefix: &str, f: impl FnOnce(&mut Registry)) {
        let mut registry = self.registry.lock();
        f(registry.sub_registry_with_prefix(prefix));
    }

    /// The OpenMetrics text exposition of every registered metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// Installs the global tracing subscriber. `filter` follows `RUST_LOG` syntax; the SIP stack's own
/// message dumps (which contain numbers and names) are held at `warn` unless the filter names it.
pub fn init_tracing(filter: &str, json: bool) {
    use tracing_subscriber::EnvFilter;
    let mut spec = filter.to_string();
    if !spec.contains("rsipstack") {
        spec.push_str(",rsipstack=warn");
    }
    let env_filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("info,rsipstack=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        // Colours only on a terminal: a log file or journal gets plain `key=value` text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless: keep the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn registered_metrics_appear_in_the_exposition() {
        let t = Telemetry::new();
        let c: Counter = Counter::default();
        t.register("sip", |r| r.register("requests", "SIP requests", c.clone()));
        c.inc();
        let text = t.encode();
        assert!(text.contains("sip_requests_total 1"), "{text}");
    }
}
