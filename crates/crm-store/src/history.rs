//! Agent-state history: every state an agent was in, with its reason and its start and end, kept in
//! `agent_states` for the agent report (login, ready, not ready by reason, ringing, on call, wrap-up,
//! occupancy).
//!
//! ```text
//! ACD state change (agent, state, reason, at) --> StateHistory (pure: one open span per agent)
//!                                                   |  closes the previous span at `at`, opens the new one
//!                                                   v
//!                                   AgentStateRecorder --> agent_states (upsert by agent + start)
//! ```
//!
//! The open span is written too, ending "now", and extended by [`AgentStateRecorder::extend_open`]
//! on a timer, so a report of the day so far sees the state an agent is in, and a crash loses at most
//! one timer period of it. Rows are keyed by (agent, start): every node of a cluster may record the
//! same change (each hears the router's agent events) and the rows come out the same, written once.
//! A change that repeats the state and reason the agent is already in is not a new span.

use crate::error::Result;
use crate::reports::AgentStateSpan;
use crate::store::{BeginWrite, CrmStore, with_pool};
use domain::{AgentId, Timestamp};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Mutex;

/// The state names the history stores (the ACD's kinds, snake case).
pub const STATE_NAMES: [&str; 6] = [
    "logged_out",
    "available",
    "not_ready",
    "reserved",
    "on_call",
    "wrap_up",
];

#[derive(Debug, Clone, PartialEq, Eq)]
struct Open {
    state: String,
    reason: Option<String>,
    since: i64,
}

/// The pure part: which span each agent is in. Time comes in with every change.
#[derive(Debug, Default, Clone)]
pub struct StateHistory {
    open: HashMap<AgentId, Open>,
}

impl StateHistory {
    /// An agent's state as found at start (a live snapshot): opens its span without closing one.
    /// Returns the open span to write (it may already be stored; the write is idempotent).
    pub fn seed(
        &mut self,
        agent: &AgentId,
        state: &str,
        reason: Option<&str>,
        since: Timestamp,
        now: Timestamp,
    ) -> AgentStateSpan {
        let open = Open {
            state: state.to_string(),
            reason: reason.map(str::to_string),
            since: since.as_millis(),
        };
        let span = span_of(agent, &open, now.as_millis().max(open.since));
        self.open.insert(agent.clone(), open);
        span
    }

    /// A change: the spans to write, the previous one closed at `at` and the new one open (ending at
    /// `at` for now). Nothing when the agent is already in this state for this reason. A change
    /// older than the open span's start (out of order) is ignored.
    pub fn observe(
        &mut self,
        agent: &AgentId,
        state: &str,
        reason: Option<&str>,
        at: Timestamp,
    ) -> Vec<AgentStateSpan> {
        let at = at.as_millis();
        let mut out = Vec::with_capacity(2);
        if let Some(open) = self.open.get(agent) {
            if open.state == state && open.reason.as_deref() == reason {
                return out;
            }
            if at < open.since {
                return out;
            }
            out.push(span_of(agent, open, at));
        }
        let open = Open {
            state: state.to_string(),
            reason: reason.map(str::to_string),
            since: at,
        };
        out.push(span_of(agent, &open, at));
        self.open.insert(agent.clone(), open);
        out
    }

    /// Every open span, ending at `now` (never before its start).
    pub fn open_spans(&self, now: Timestamp) -> Vec<AgentStateSpan> {
        let mut spans: Vec<_> = self
            .open
            .iter()
            .map(|(agent, open)| span_of(agent, open, now.as_millis().max(open.since)))
            .collect();
        spans.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        spans
    }

    /// The state an agent is in, if known.
    pub fn state_of(&self, agent: &AgentId) -> Option<(&str, Option<&str>, Timestamp)> {
        self.open.get(agent).map(|o| {
            (
                o.state.as_str(),
                o.reason.as_deref(),
                Timestamp::from_millis(o.since),
            )
        })
    }
}

fn span_of(agent: &AgentId, open: &Open, end: i64) -> AgentStateSpan {
    AgentStateSpan {
        agent_id: agent.as_str().to_string(),
        state: open.state.clone(),
        reason: open.reason.clone(),
        started_at: open.since,
        ended_at: end,
    }
}

/// Writes agents' state history to the store. Cheap to clone; one per node.
#[derive(Clone)]
pub struct AgentStateRecorder {
    store: CrmStore,
    history: Arc<Mutex<StateHistory>>,
}

impl AgentStateRecorder {
    pub fn new(store: CrmStore) -> Self {
        Self {
            store,
            history: Arc::new(Mutex::new(StateHistory::default())),
        }
    }

    /// See [`StateHistory::seed`].
    pub async fn seed(
        &self,
        agent: &AgentId,
        state: &str,
        reason: Option<&str>,
        since: Timestamp,
        now: Timestamp,
    ) -> Result<()> {
        let span = self.history.lock().await.seed(agent, state, reason, since, now);
        self.store.record_agent_spans(&[span]).await
    }

    /// Records a change (see [`StateHistory::observe`]).
    pub async fn observe(
        &self,
        agent: &AgentId,
        state: &str,
        reason: Option<&str>,
        at: Timestamp,
    ) -> Result<()> {
        // The lock is held across the write so two changes of one agent land in order.
        let mut history = self.history.lock().await;
        let spans = history.observe(agent, state, reason, at);
        if spans.is_empty() {
            return Ok(());
        }
        self.store.record_agent_spans(&spans).await
    }

    /// Extends every open span to `now` (called on a timer).
    pub async fn extend_open(&self, now: Timestamp) -> Result<()> {
        let history = self.history.lock().await;
        let spans = history.open_spans(now);
        self.store.record_agent_spans(&spans).await
    }

    /// The state an agent is in, as far as this recorder knows.
    pub async fn state_of(&self, agent: &AgentId) -> Option<(String, Option<String>, Timestamp)> {
        self.history
            .lock()
            .await
            .state_of(agent)
            .map(|(s, r, t)| (s.to_string(), r.map(str::to_string), t))
    }
}

impl CrmStore {
    /// Writes state spans in one transaction; a span already stored for the same agent and start is
    /// replaced (its end moves on, its state is the same one).
    pub async fn record_agent_spans(&self, spans: &[AgentStateSpan]) -> Result<()> {
        if spans.is_empty() {
            return Ok(());
        }
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            for span in spans {
                sqlx::query(
                    "INSERT INTO agent_states (agent_id, state, reason, started_at, ended_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (agent_id, started_at) DO UPDATE SET state = excluded.state, reason = excluded.reason, \
                     ended_at = CASE WHEN excluded.ended_at > agent_states.ended_at THEN excluded.ended_at ELSE agent_states.ended_at END",
                )
                .bind(span.agent_id.clone())
                .bind(span.state.clone())
                .bind(span.reason.clone())
                .bind(span.started_at)
                .bind(span.ended_at)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The state spans overlapping `[from, to)`, by agent then start.
    pub async fn agent_state_spans(&self, from: Timestamp, to: Timestamp) -> Result<Vec<AgentStateSpan>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_as::<_, AgentStateSpan>(
                "SELECT agent_id, state, reason, started_at, ended_at FROM agent_states \
                 WHERE started_at < $2 AND ended_at >= $1 ORDER BY agent_id, started_at",
            )
            .bind(from.as_millis())
            .bind(to.as_millis())
            .fetch_all(pool)
            .await?
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str) -> AgentId {
        AgentId::new(id).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_change_closes_the_open_span_and_opens_the_next() {
        let mut h = StateHistory::default();
        let a = agent("a");
        let first = h.observe(&a, "available", None, Timestamp::from_millis(1_000));
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].started_at, first[0].ended_at), (1_000, 1_000));
        assert!(
            h.observe(&a, "available", None, Timestamp::from_millis(2_000))
                .is_empty()
        );
        let next = h.observe(&a, "not_ready", Some("lunch"), Timestamp::from_millis(5_000));
        assert_eq!(next.len(), 2);
        assert_eq!(
            (next[0].state.as_str(), next[0].started_at, next[0].ended_at),
            ("available", 1_000, 5_000)
        );
        assert_eq!(
            (next[1].reason.as_deref(), next[1].started_at),
            (Some("lunch"), 5_000)
        );
        // Another reason is another span.
        assert_eq!(
            h.observe(&a, "not_ready", Some("break"), Timestamp::from_millis(6_000))
                .len(),
            2
        );
        // Out of order: ignored.
        assert!(
            h.observe(&a, "available", None, Timestamp::from_millis(10))
                .is_empty()
        );
        let open = h.open_spans(Timestamp::from_millis(9_000));
        assert_eq!((open[0].started_at, open[0].ended_at), (6_000, 9_000));
    }

    #[test]
    fn a_seeded_state_is_closed_by_the_next_change() {
        let mut h = StateHistory::default();
        let a = agent("a");
        let seeded = h.seed(
            &a,
            "on_call",
            None,
            Timestamp::from_millis(100),
            Timestamp::from_millis(400),
        );
        assert_eq!((seeded.started_at, seeded.ended_at), (100, 400));
        let spans = h.observe(&a, "wrap_up", None, Timestamp::from_millis(700));
        assert_eq!(
            (spans[0].state.as_str(), spans[0].started_at, spans[0].ended_at),
            ("on_call", 100, 700)
        );
    }
}
