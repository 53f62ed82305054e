//! The CRM writer's figures as `crm_*` metrics (the writer owns its metrics): read from the writer's own counters at each scrape,
//! so the durable path counts nothing twice and pays nothing per event for them.

use crate::EventWriter;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Serves the writer's counters to the registry.
struct WriterCollector(EventWriter);

impl std::fmt::Debug for WriterCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriterCollector")
    }
}

impl Collector for WriterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.stats();
        let counters: [(&str, &str, u64); 7] = [
            (
                "events_durable",
                "Interaction events acknowledged as durable in the outbox or journal",
                s.durable,
            ),
            (
                "events_committed",
                "Interaction events written to SQL by this node",
                s.committed,
            ),
            (
                "outbox_appends",
                "Group commits into the journal or the shared outbox",
                s.journal_syncs,
            ),
            ("batches", "SQL batches committed", s.batches),
            (
                "batch_retries",
                "SQL batch attempts that failed and were retried",
                s.batch_retries,
            ),
            (
                "events_dead_lettered",
                "Events the database refused as data, kept in the dead-letter file",
                s.dead_lettered,
            ),
            (
                "events_replayed",
                "Journal events replayed into SQL at start",
                s.replayed,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        let seconds = ConstCounter::new(s.batch_write_micros as f64 / 1e6);
        seconds.encode(encoder.encode_descriptor(
            "batch_write_seconds",
            "Time spent writing batches to SQL, retries included",
            None,
            seconds.metric_type(),
        )?)?;
        // Acknowledged here and not yet in SQL; with the shared outbox another node may write them.
        let backlog =
            ConstGauge::new(i64::try_from(s.durable.saturating_sub(s.committed)).unwrap_or(i64::MAX));
        backlog.encode(encoder.encode_descriptor(
            "events_unwritten",
            "Events this node acknowledged minus those it wrote to SQL",
            None,
            backlog.metric_type(),
        )?)
    }
}

/// Registers the writer's metrics under `crm`.
pub fn register(telemetry: &telemetry::Telemetry, writer: EventWriter) {
    telemetry.register("crm", |r| r.register_collector(Box::new(WriterCollector(writer))));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CrmStore, WriterConfig};
    use domain::{InteractionEvent, InteractionEventKind, InteractionId, Timestamp};

    #[tokio::test]
    async fn the_writers_counters_are_scraped() {
        let dir = tempfile::tempdir().unwrap();
        let store = CrmStore::connect(&format!("sqlite:{}", dir.path().join("m.db").display()))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let (writer, task) = EventWriter::start(store, WriterConfig::new(dir.path().join("j")))
            .await
            .unwrap();
        let telemetry = telemetry::Telemetry::new();
        register(&telemetry, writer.clone());
        for seq in 0..3 {
            writer
                .append(InteractionEvent {
                    interaction: InteractionId::new("m-1").unwrap(),
                    seq,
                    at: Timestamp::from_millis(i64::from(seq)),
                    kind: InteractionEventKind::Held,
                })
                .await
                .unwrap();
        }
        writer.committed().wait_for(|c| *c == 3).await.unwrap();
        let text = telemetry.encode();
        assert!(text.contains("crm_events_durable_total 3"), "{text}");
        assert!(text.contains("crm_events_committed_total 3"), "{text}");
        assert!(text.contains("crm_events_unwritten 0"), "{text}");
        assert!(text.contains("crm_batch_write_seconds_total"), "{text}");
        task.shutdown().await.unwrap();
    }
}
