//! Test backends: every repository test runs once on SQLite (a temp file) and once on PostgreSQL when
//! `DATABASE_URL` is set, each in a fresh database or schema so parallel tests never collide.

#![allow(dead_code, clippy::unwrap_used)]

use crm_store::CrmStore;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// Where one test's database lives; cloneable into a child process through [`Target::to_env`].
#[derive(Debug, Clone)]
pub enum Target {
    Sqlite { path: PathBuf },
    Postgres { url: String, schema: String },
}

/// A unique name for this process and call.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The backends to run a test on: SQLite always, PostgreSQL when `DATABASE_URL` is set.
pub fn targets(test: &str, dir: &std::path::Path) -> Vec<Target> {
    let mut targets = vec![Target::Sqlite {
        path: dir.join(format!("{}.db", unique("crm"))),
    }];
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            targets.push(Target::Postgres {
                url,
                schema: unique("crm_test"),
            });
        }
        _ => {
            // Written straight to stderr, past the test harness's capture, so the skip is always seen.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "{test}: PostgreSQL SKIPPED (DATABASE_URL is not set); ran on SQLite only"
            );
        }
    }
    targets
}

impl Target {
    /// Connects and migrates.
    pub async fn store(&self) -> CrmStore {
        let store = match self {
            Target::Sqlite { path } => CrmStore::connect(&format!("sqlite:{}", path.display()))
                .await
                .unwrap(),
            Target::Postgres { url, schema } => CrmStore::connect_in_schema(url, schema).await.unwrap(),
        };
        store.migrate().await.unwrap();
        store
    }

    /// Removes the PostgreSQL schema (the SQLite file goes with its temp folder).
    pub async fn cleanup(&self) {
        if let Target::Postgres { url, schema } = self {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE"
            )))
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
        }
    }

    /// A short label for assertion messages.
    pub fn label(&self) -> &'static str {
        match self {
            Target::Sqlite { .. } => "sqlite",
            Target::Postgres { .. } => "postgres",
        }
    }

    /// Environment variables that let a child process reach the same database.
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        match self {
            Target::Sqlite { path } => vec![("CRM_TEST_SQLITE", path.display().to_string())],
            Target::Postgres { url, schema } => {
                vec![
                    ("CRM_TEST_PG_URL", url.clone()),
                    ("CRM_TEST_PG_SCHEMA", schema.clone()),
                ]
            }
        }
    }

    /// The target described by [`Target::to_env`] in this process's environment.
    pub fn from_env() -> Option<Target> {
        if let Ok(path) = std::env::var("CRM_TEST_SQLITE") {
            return Some(Target::Sqlite { path: path.into() });
        }
        let url = std::env::var("CRM_TEST_PG_URL").ok()?;
        let schema = std::env::var("CRM_TEST_PG_SCHEMA").ok()?;
        Some(Target::Postgres { url, schema })
    }
}

/// Builders of events for tests.
pub mod ev {
    use domain::*;

    pub fn id(s: &str) -> InteractionId {
        InteractionId::new(s).unwrap()
    }

    pub fn at(interaction: &str, seq: u32, ms: i64, kind: InteractionEventKind) -> InteractionEvent {
        InteractionEvent {
            interaction: id(interaction),
            seq,
            at: Timestamp::from_millis(ms),
            kind,
        }
    }

    pub fn arrived(from: &str) -> InteractionEventKind {
        InteractionEventKind::Arrived {
            channel: Channel::Voice,
            direction: Direction::Inbound,
            from: Pii::new(from.to_string()),
            to: Pii::new("+18005550199".to_string()),
        }
    }

    pub fn enqueued(queue: &str) -> InteractionEventKind {
        InteractionEventKind::Enqueued {
            queue: QueueId::new(queue).unwrap(),
            priority: 10,
        }
    }

    pub fn answered(agent: &str) -> InteractionEventKind {
        InteractionEventKind::Answered {
            agent: AgentId::new(agent).unwrap(),
        }
    }

    pub fn ended() -> InteractionEventKind {
        InteractionEventKind::Ended {
            by: EndedBy::Caller,
            reason: "hangup".into(),
            quality: None,
        }
    }

    pub fn abandoned(queue: &str, waited_ms: u64) -> InteractionEventKind {
        InteractionEventKind::Abandoned {
            queue: QueueId::new(queue).unwrap(),
            position: 1,
            waited_ms,
        }
    }

    pub fn wrapped(agent: &str, disposition: &str) -> InteractionEventKind {
        InteractionEventKind::WrappedUp {
            agent: AgentId::new(agent).unwrap(),
            disposition: disposition.into(),
            notes: Pii::new("notes".into()),
        }
    }

    /// A whole answered call: arrives at `t0`, queued 1 s later, waits `wait_ms`, talks `talk_ms`,
    /// wraps up 5 s. Seqs 0..=4.
    pub fn answered_call(
        interaction: &str,
        from: &str,
        queue: &str,
        agent: &str,
        t0: i64,
        wait_ms: i64,
        talk_ms: i64,
    ) -> Vec<InteractionEvent> {
        let q = t0 + 1_000;
        let a = q + wait_ms;
        let e = a + talk_ms;
        vec![
            at(interaction, 0, t0, arrived(from)),
            at(interaction, 1, q, enqueued(queue)),
            at(interaction, 2, a, answered(agent)),
            at(interaction, 3, e, ended()),
            at(interaction, 4, e + 5_000, wrapped(agent, "resolved")),
        ]
    }

    /// A call abandoned after `wait_ms` in `queue`. Seqs 0..=3.
    pub fn abandoned_call(
        interaction: &str,
        from: &str,
        queue: &str,
        t0: i64,
        wait_ms: i64,
    ) -> Vec<InteractionEvent> {
        let q = t0 + 1_000;
        vec![
            at(interaction, 0, t0, arrived(from)),
            at(interaction, 1, q, enqueued(queue)),
            at(interaction, 2, q + wait_ms, abandoned(queue, wait_ms as u64)),
            at(interaction, 3, q + wait_ms, ended()),
        ]
    }
}
