//! Folding the event timeline into the one-row-per-interaction summary. Pure: the writer loads the
//! current row, applies each newly stored event in order, and writes the row back in the same
//! transaction, so a replayed event (already stored) is never folded twice.
//!
//! The row is always the fold of the interaction's stored events in `seq` order, whatever order
//! batches arrive in: new events that all come after everything stored are folded on top of the
//! row; otherwise (an event overtook another on its way, a batch was split, a node replays late)
//! the row is folded again from every stored event ([`fold_interaction`]).

use crate::phone::{CountryCode, normalize_phone};
use domain::{Channel, Direction, EndedBy, InteractionEvent, InteractionEventKind};

/// Longest IVR path kept; a looping menu must not grow a row without bound.
const MAX_IVR_PATH: usize = 2000;

/// The `interactions` row, column for column. Times are ms since the epoch, durations ms.
/// `Debug` masks the personal columns (numbers, notes, recording path).
#[derive(Clone, Default, PartialEq, sqlx::FromRow)]
pub struct InteractionRow {
    pub id: String,
    pub channel: Option<String>,
    pub direction: Option<String>,
    pub customer_id: Option<String>,
    pub caller_number: Option<String>,
    pub called_number: Option<String>,
    pub arrived_at: Option<i64>,
    pub queued_at: Option<i64>,
    pub offered_at: Option<i64>,
    pub answered_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub wrapped_at: Option<i64>,
    pub ivr_path: String,
    pub queue_id: Option<String>,
    pub priority: Option<i64>,
    pub wait_ms: Option<i64>,
    pub agent_id: Option<String>,
    pub talk_ms: Option<i64>,
    pub hold_ms: i64,
    pub held_since: Option<i64>,
    pub wrap_ms: Option<i64>,
    pub ended_by: Option<String>,
    pub end_reason: Option<String>,
    pub abandoned: bool,
    pub disposition: Option<String>,
    pub notes: Option<String>,
    pub recording_path: Option<String>,
    pub survey_score: Option<i64>,
    pub mos: Option<f64>,
    pub routing_explanation: Option<String>,
    pub campaign_id: Option<String>,
    pub lead_id: Option<String>,
    pub dial_outcome: Option<String>,
    pub last_seq: i64,
    pub masked_at: Option<i64>,
}

impl std::fmt::Debug for InteractionRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let masked = |v: &Option<String>| if v.is_some() { "Some(***)" } else { "None" };
        f.debug_struct("InteractionRow")
            .field("id", &self.id)
            .field("channel", &self.channel)
            .field("direction", &self.direction)
            .field("customer_id", &self.customer_id)
            .field("caller_number", &format_args!("{}", masked(&self.caller_number)))
            .field("called_number", &format_args!("{}", masked(&self.called_number)))
            .field("arrived_at", &self.arrived_at)
            .field("queued_at", &self.queued_at)
            .field("offered_at", &self.offered_at)
            .field("answered_at", &self.answered_at)
            .field("ended_at", &self.ended_at)
            .field("wrapped_at", &self.wrapped_at)
            .field("ivr_path", &self.ivr_path)
            .field("queue_id", &self.queue_id)
            .field("priority", &self.priority)
            .field("wait_ms", &self.wait_ms)
            .field("agent_id", &self.agent_id)
            .field("talk_ms", &self.talk_ms)
            .field("hold_ms", &self.hold_ms)
            .field("held_since", &self.held_since)
            .field("wrap_ms", &self.wrap_ms)
            .field("ended_by", &self.ended_by)
            .field("end_reason", &self.end_reason)
            .field("abandoned", &self.abandoned)
            .field("disposition", &self.disposition)
            .field("notes", &format_args!("{}", masked(&self.notes)))
            .field(
                "recording_path",
                &format_args!("{}", masked(&self.recording_path)),
            )
            .field("survey_score", &self.survey_score)
            .field("mos", &self.mos)
            .field("routing_explanation", &self.routing_explanation)
            .field("campaign_id", &self.campaign_id)
            .field("lead_id", &self.lead_id)
            .field("dial_outcome", &self.dial_outcome)
            .field("last_seq", &self.last_seq)
            .field("masked_at", &self.masked_at)
            .finish()
    }
}

/// Whether the events a batch newly stored for an interaction can be folded on top of its stored
/// row: they all come after every event folded into it (`first_new_seq` is the lowest new one). A
/// row whose payloads retention masked cannot be folded again and always takes them on top.
pub fn folds_on_top(row: Option<&InteractionRow>, first_new_seq: u32) -> bool {
    match row {
        None => true,
        Some(r) => r.masked_at.is_some() || i64::from(first_new_seq) > r.last_seq,
    }
}

/// Folds one interaction's newly stored events (`new`, in seq order) into its row. `stored` is every
/// stored event of the interaction in seq order, new ones included; it is read only when the new
/// events do not all come after the stored row ([`folds_on_top`]), and then the row is folded anew
/// from it. `on_new` sees each new event with the row as folded up to and including it.
pub fn fold_interaction(
    id: &str,
    existing: Option<InteractionRow>,
    new: &[&InteractionEvent],
    stored: impl FnOnce() -> Vec<InteractionEvent>,
    country: CountryCode,
    mut on_new: impl FnMut(&InteractionEvent, &InteractionRow),
) -> InteractionRow {
    let first_new = new.iter().map(|e| e.seq).min().unwrap_or(u32::MAX);
    if folds_on_top(existing.as_ref(), first_new) {
        let mut row = existing.unwrap_or_else(|| InteractionRow::new(id));
        for e in new {
            row.apply(e, country);
            on_new(e, &row);
        }
        return row;
    }
    let fresh: std::collections::HashSet<u32> = new.iter().map(|e| e.seq).collect();
    let mut all = stored();
    all.sort_by_key(|e| e.seq);
    let mut row = InteractionRow::new(id);
    for e in &all {
        row.apply(e, country);
        if fresh.contains(&e.seq) {
            on_new(e, &row);
        }
    }
    row
}

/// The column list of [`InteractionRow`], in field order, for generated SQL.
pub const INTERACTION_COLUMNS: [&str; 35] = [
    "id",
    "channel",
    "direction",
    "customer_id",
    "caller_number",
    "called_number",
    "arrived_at",
    "queued_at",
    "offered_at",
    "answered_at",
    "ended_at",
    "wrapped_at",
    "ivr_path",
    "queue_id",
    "priority",
    "wait_ms",
    "agent_id",
    "talk_ms",
    "hold_ms",
    "held_since",
    "wrap_ms",
    "ended_by",
    "end_reason",
    "abandoned",
    "disposition",
    "notes",
    "recording_path",
    "survey_score",
    "mos",
    "routing_explanation",
    "campaign_id",
    "lead_id",
    "dial_outcome",
    "last_seq",
    "masked_at",
];

/// Stored name of a channel.
pub fn channel_name(c: Channel) -> &'static str {
    match c {
        Channel::Voice => "voice",
        Channel::Callback => "callback",
    }
}

/// Stored name of a direction.
pub fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    }
}

/// Stored name of who ended a call.
pub fn ended_by_name(e: EndedBy) -> &'static str {
    match e {
        EndedBy::Caller => "caller",
        EndedBy::Agent => "agent",
        EndedBy::System => "system",
        EndedBy::Timeout => "timeout",
        EndedBy::Error => "error",
    }
}

fn ms_between(later: i64, earlier: i64) -> i64 {
    later.saturating_sub(earlier).max(0)
}

fn number_for_storage(raw: &str, country: CountryCode) -> String {
    normalize_phone(raw, country)
        .map(|n| n.into_string())
        .unwrap_or_else(|_| raw.to_string())
}

impl InteractionRow {
    /// An empty row for an interaction seen for the first time.
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_string(),
            ..Self::default()
        }
    }

    /// Applies one event. Events of one interaction are applied in `seq` order.
    pub fn apply(&mut self, event: &InteractionEvent, country: CountryCode) {
        let at = event.at.as_millis();
        self.last_seq = self.last_seq.max(i64::from(event.seq));
        match &event.kind {
            InteractionEventKind::Arrived {
                channel,
                direction,
                from,
                to,
            } => {
                self.channel = Some(channel_name(*channel).to_string());
                self.direction = Some(direction_name(*direction).to_string());
                self.caller_number = Some(number_for_storage(from.expose(), country));
                self.called_number = Some(number_for_storage(to.expose(), country));
                self.arrived_at = Some(self.arrived_at.map_or(at, |a| a.min(at)));
            }
            InteractionEventKind::CustomerIdentified { customer, .. } => {
                self.customer_id = Some(customer.to_string());
            }
            InteractionEventKind::IvrNode { flow, node, key } => {
                let step = match key {
                    Some(k) => format!("{flow}/{node}({k})"),
                    None => format!("{flow}/{node}"),
                };
                if self.ivr_path.len() + step.len() < MAX_IVR_PATH {
                    if !self.ivr_path.is_empty() {
                        self.ivr_path.push_str(" > ");
                    }
                    self.ivr_path.push_str(&step);
                }
            }
            InteractionEventKind::Enqueued { queue, priority } => {
                self.queue_id = Some(queue.to_string());
                self.priority = Some(i64::from(*priority));
                self.queued_at = Some(at);
            }
            InteractionEventKind::Offered { explanation, .. } => {
                self.offered_at.get_or_insert(at);
                self.routing_explanation = Some(explanation.clone());
            }
            InteractionEventKind::Answered { agent } => {
                self.answered_at = Some(at);
                self.agent_id = Some(agent.to_string());
                if let Some(queued) = self.queued_at {
                    self.wait_ms = Some(ms_between(at, queued));
                }
            }
            InteractionEventKind::Held => {
                self.held_since.get_or_insert(at);
            }
            InteractionEventKind::Resumed => {
                if let Some(since) = self.held_since.take() {
                    self.hold_ms = self.hold_ms.saturating_add(ms_between(at, since));
                }
            }
            InteractionEventKind::Abandoned { queue, waited_ms, .. } => {
                self.abandoned = true;
                self.queue_id = Some(queue.to_string());
                self.wait_ms = Some(i64::try_from(*waited_ms).unwrap_or(i64::MAX));
            }
            InteractionEventKind::Recording { path } | InteractionEventKind::Voicemail { path, .. } => {
                self.recording_path = Some(path.clone());
            }
            // A call ends once: the first end in seq order stands. A later one is the end a
            // surviving node wrote for a lost node (seq `NODE_LOST_SEQ`, after everything the node
            // wrote) while the node's own end was still on its way.
            InteractionEventKind::Ended { .. } if self.ended_at.is_some() => {}
            InteractionEventKind::Ended { by, reason, quality } => {
                if let Some(since) = self.held_since.take() {
                    self.hold_ms = self.hold_ms.saturating_add(ms_between(at, since));
                }
                self.ended_at = Some(at);
                self.ended_by = Some(ended_by_name(*by).to_string());
                self.end_reason = Some(reason.clone());
                if let Some(q) = quality {
                    self.mos = Some(q.mos);
                }
                if let Some(answered) = self.answered_at {
                    self.talk_ms = Some(ms_between(at, answered).saturating_sub(self.hold_ms).max(0));
                }
            }
            InteractionEventKind::WrappedUp {
                agent,
                disposition,
                notes,
            } => {
                self.wrapped_at = Some(at);
                self.disposition = Some(disposition.clone());
                self.notes = Some(notes.expose().clone());
                if self.agent_id.is_none() {
                    self.agent_id = Some(agent.to_string());
                }
                if let Some(ended) = self.ended_at {
                    self.wrap_ms = Some(ms_between(at, ended));
                }
            }
            InteractionEventKind::Survey { score } => {
                self.survey_score = Some(i64::from(*score));
            }
            InteractionEventKind::DialAttempt {
                campaign,
                lead,
                outcome,
            } => {
                self.campaign_id = Some(campaign.to_string());
                self.lead_id = Some(lead.to_string());
                self.dial_outcome = Some(outcome.clone());
            }
            InteractionEventKind::DigitsCollected { .. }
            | InteractionEventKind::LookupDone { .. }
            | InteractionEventKind::OfferFailed { .. }
            | InteractionEventKind::Transferred { .. }
            | InteractionEventKind::Monitored { .. }
            | InteractionEventKind::Overflowed { .. }
            | InteractionEventKind::CallbackRequested { .. } => {}
        }
    }
}

/// The event as it may be stored anywhere (journal or SQL): sensitive collected digits masked.
pub fn masked_for_storage(mut event: InteractionEvent) -> InteractionEvent {
    if let InteractionEventKind::DigitsCollected {
        digits,
        sensitive: true,
        ..
    } = &mut event.kind
    {
        *digits = domain::Pii::new("*".repeat(digits.expose().chars().count()));
    }
    event
}

/// Removes NUL characters from every string of an event: PostgreSQL rejects them in TEXT and JSONB,
/// and one such event would otherwise block its whole batch. Only called for the rare event whose
/// JSON has a `\u0000` escape.
pub fn without_nul_chars(event: InteractionEvent) -> InteractionEvent {
    fn clean(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(s) => s.retain(|c| c != '\0'),
            serde_json::Value::Array(items) => items.iter_mut().for_each(clean),
            serde_json::Value::Object(map) => map.values_mut().for_each(clean),
            _ => {}
        }
    }
    let Ok(mut value) = serde_json::to_value(&event) else {
        return event;
    };
    clean(&mut value);
    serde_json::from_value(value).unwrap_or(event)
}

/// The JSON payload stored for an event. Sensitive collected digits (card numbers, PINs) are masked
/// here, before anything reaches a disk, whatever the caller did.
pub fn stored_payload(event: &InteractionEvent) -> String {
    let masked;
    let kind = match &event.kind {
        InteractionEventKind::DigitsCollected {
            variable,
            digits,
            sensitive: true,
        } => {
            masked = InteractionEventKind::DigitsCollected {
                variable: variable.clone(),
                digits: domain::Pii::new("*".repeat(digits.expose().chars().count())),
                sensitive: true,
            };
            &masked
        }
        kind => kind,
    };
    // Serialising these plain enums cannot fail; `null` would still be valid JSON for the column.
    serde_json::to_string(kind).unwrap_or_else(|_| "null".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{AgentId, InteractionId, Pii, QualityReport, QueueId, Timestamp};

    fn ev(seq: u32, at: i64, kind: InteractionEventKind) -> InteractionEvent {
        InteractionEvent {
            interaction: InteractionId::new("i-1").unwrap(),
            seq,
            at: Timestamp::from_millis(at),
            kind,
        }
    }

    #[test]
    fn a_whole_call_folds_into_its_row() {
        let agent = AgentId::new("alice").unwrap();
        let events = [
            ev(
                0,
                1_000,
                InteractionEventKind::Arrived {
                    channel: Channel::Voice,
                    direction: Direction::Inbound,
                    from: Pii::new("(415) 555-0100".into()),
                    to: Pii::new("+18005550199".into()),
                },
            ),
            ev(
                1,
                2_000,
                InteractionEventKind::IvrNode {
                    flow: "main".into(),
                    node: "menu".into(),
                    key: None,
                },
            ),
            ev(
                2,
                3_000,
                InteractionEventKind::IvrNode {
                    flow: "main".into(),
                    node: "billing".into(),
                    key: Some('2'),
                },
            ),
            ev(
                3,
                4_000,
                InteractionEventKind::Enqueued {
                    queue: QueueId::new("billing").unwrap(),
                    priority: 10,
                },
            ),
            ev(
                4,
                9_000,
                InteractionEventKind::Offered {
                    agent: agent.clone(),
                    explanation: "longest idle".into(),
                },
            ),
            ev(5, 10_000, InteractionEventKind::Answered { agent: agent.clone() }),
            ev(6, 20_000, InteractionEventKind::Held),
            ev(7, 25_000, InteractionEventKind::Resumed),
            ev(
                8,
                70_000,
                InteractionEventKind::Ended {
                    by: EndedBy::Caller,
                    reason: "bye".into(),
                    quality: Some(QualityReport {
                        loss: 0.0,
                        jitter_ms: 3.0,
                        mos: 4.3,
                    }),
                },
            ),
            ev(
                9,
                85_000,
                InteractionEventKind::WrappedUp {
                    agent,
                    disposition: "resolved".into(),
                    notes: Pii::new("paid".into()),
                },
            ),
            ev(10, 90_000, InteractionEventKind::Survey { score: 5 }),
        ];
        let mut row = InteractionRow::new("i-1");
        for e in &events {
            row.apply(e, CountryCode::NANP);
        }
        assert_eq!(row.caller_number.as_deref(), Some("+14155550100"));
        assert_eq!(row.ivr_path, "main/menu > main/billing(2)");
        assert_eq!(row.wait_ms, Some(6_000));
        assert_eq!(row.hold_ms, 5_000);
        assert_eq!(row.talk_ms, Some(55_000));
        assert_eq!(row.wrap_ms, Some(15_000));
        assert_eq!(row.ended_by.as_deref(), Some("caller"));
        assert_eq!(row.agent_id.as_deref(), Some("alice"));
        assert_eq!(row.mos, Some(4.3));
        assert_eq!(row.survey_score, Some(5));
        assert_eq!(row.last_seq, 10);
        assert!(!row.abandoned);
    }

    #[test]
    fn hold_open_at_the_end_counts_as_hold() {
        let mut row = InteractionRow::new("i-1");
        row.apply(
            &ev(
                0,
                0,
                InteractionEventKind::Answered {
                    agent: AgentId::new("a").unwrap(),
                },
            ),
            CountryCode::NANP,
        );
        row.apply(&ev(1, 10_000, InteractionEventKind::Held), CountryCode::NANP);
        row.apply(
            &ev(
                2,
                30_000,
                InteractionEventKind::Ended {
                    by: EndedBy::Agent,
                    reason: String::new(),
                    quality: None,
                },
            ),
            CountryCode::NANP,
        );
        assert_eq!(row.hold_ms, 20_000);
        assert_eq!(row.talk_ms, Some(10_000));
        assert_eq!(row.held_since, None);
    }

    #[test]
    fn a_lost_nodes_end_closes_an_open_call_and_never_overrides_the_nodes_own_end() {
        let lost = |at| {
            ev(
                domain::NODE_LOST_SEQ,
                at,
                InteractionEventKind::Ended {
                    by: EndedBy::System,
                    reason: domain::NODE_LOST_REASON.into(),
                    quality: None,
                },
            )
        };
        let answered = ev(
            0,
            0,
            InteractionEventKind::Answered {
                agent: AgentId::new("a").unwrap(),
            },
        );
        // The node died mid-call: the surviving node's end closes the row.
        let mut open = InteractionRow::new("i-1");
        open.apply(&answered, CountryCode::NANP);
        open.apply(&lost(9_000), CountryCode::NANP);
        assert_eq!(open.end_reason.as_deref(), Some("node_lost"));
        assert_eq!((open.ended_at, open.talk_ms), (Some(9_000), Some(9_000)));
        // The node wrote its own end before it died: that one stands.
        let own = ev(
            1,
            5_000,
            InteractionEventKind::Ended {
                by: EndedBy::Caller,
                reason: "bye".into(),
                quality: None,
            },
        );
        let mut ended = InteractionRow::new("i-1");
        for e in [&answered, &own, &lost(9_000)] {
            ended.apply(e, CountryCode::NANP);
        }
        assert_eq!(ended.end_reason.as_deref(), Some("bye"));
        assert_eq!((ended.ended_at, ended.talk_ms), (Some(5_000), Some(5_000)));
    }

    #[test]
    fn sensitive_digits_are_masked_in_the_payload() {
        let e = ev(
            0,
            0,
            InteractionEventKind::DigitsCollected {
                variable: "card".into(),
                digits: Pii::new("4111111111111111".into()),
                sensitive: true,
            },
        );
        let payload = stored_payload(&e);
        assert!(!payload.contains("4111"), "{payload}");
        assert!(payload.contains("****************"));
        let masked = masked_for_storage(e);
        assert!(!serde_json::to_string(&masked).unwrap().contains("4111"));
        let plain = ev(
            1,
            0,
            InteractionEventKind::DigitsCollected {
                variable: "account".into(),
                digits: Pii::new("12345".into()),
                sensitive: false,
            },
        );
        assert_eq!(
            masked_for_storage(plain.clone()),
            plain,
            "only sensitive digits are masked"
        );
    }

    #[test]
    fn nul_characters_are_removed_from_every_string() {
        let e = ev(
            0,
            0,
            InteractionEventKind::Ended {
                by: EndedBy::Error,
                reason: "bad\0 byte".into(),
                quality: None,
            },
        );
        let clean = without_nul_chars(e);
        assert!(matches!(clean.kind, InteractionEventKind::Ended { ref reason, .. } if reason == "bad byte"));
    }

    fn arbitrary_kind() -> impl proptest::strategy::Strategy<Value = InteractionEventKind> {
        use proptest::prelude::*;
        prop_oneof![
            Just(InteractionEventKind::Held),
            Just(InteractionEventKind::Resumed),
            Just(InteractionEventKind::Answered {
                agent: AgentId::new("a").unwrap()
            }),
            Just(InteractionEventKind::Enqueued {
                queue: QueueId::new("q").unwrap(),
                priority: 1
            }),
            Just(InteractionEventKind::Ended {
                by: EndedBy::Caller,
                reason: String::new(),
                quality: None
            }),
            (0u64..100_000).prop_map(|w| InteractionEventKind::Abandoned {
                queue: QueueId::new("q").unwrap(),
                position: 1,
                waited_ms: w
            }),
            Just(InteractionEventKind::WrappedUp {
                agent: AgentId::new("a").unwrap(),
                disposition: "x".into(),
                notes: Pii::new(String::new())
            }),
            "[a-z]{1,8}".prop_map(|n| InteractionEventKind::IvrNode {
                flow: "f".into(),
                node: n,
                key: None
            }),
        ]
    }

    #[test]
    fn the_rows_debug_masks_numbers_and_notes() {
        let mut row = InteractionRow::new("i-1");
        row.caller_number = Some("+14155550100".into());
        row.called_number = Some("+18005550199".into());
        row.notes = Some("card ends 4242".into());
        let text = format!("{row:?}");
        for secret in ["4155550100", "8005550199", "4242"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(text.contains("caller_number: Some(***)"), "{text}");
    }

    /// A store of one interaction's events and its row, written batch by batch as the SQL writer
    /// does: duplicates skipped, new events folded by [`fold_interaction`].
    fn store_in_batches(batches: &[Vec<InteractionEvent>]) -> InteractionRow {
        let mut stored: std::collections::BTreeMap<u32, InteractionEvent> = Default::default();
        let mut row: Option<InteractionRow> = None;
        for batch in batches {
            let mut new: Vec<&InteractionEvent> = Vec::new();
            for e in batch {
                if !stored.contains_key(&e.seq) && !new.iter().any(|n| n.seq == e.seq) {
                    new.push(e);
                }
            }
            if new.is_empty() {
                continue;
            }
            new.sort_by_key(|e| e.seq);
            for e in &new {
                stored.insert(e.seq, (*e).clone());
            }
            let all: Vec<InteractionEvent> = stored.values().cloned().collect();
            row = Some(fold_interaction(
                "i-1",
                row.take(),
                &new,
                || all,
                CountryCode::NANP,
                |_, _| {},
            ));
        }
        row.unwrap_or_else(|| InteractionRow::new("i-1"))
    }

    proptest::proptest! {
        #[test]
        fn the_row_does_not_depend_on_the_order_batches_arrive_in(
            steps in proptest::collection::vec((arbitrary_kind(), 0i64..1_000_000), 1..30),
            order in proptest::collection::vec(proptest::num::usize::ANY, 30),
            cuts in proptest::collection::vec(1usize..5, 1..30),
            replay in proptest::bool::ANY,
        ) {
            let mut events: Vec<InteractionEvent> = steps
                .into_iter()
                .enumerate()
                .map(|(seq, (kind, at))| ev(seq as u32, at, kind))
                .collect();
            events.sort_by_key(|e| e.at);
            for (seq, e) in events.iter_mut().enumerate() {
                e.seq = seq as u32;
            }
            let mut reference = InteractionRow::new("i-1");
            for e in &events {
                reference.apply(e, CountryCode::NANP);
            }
            // A random interleaving: each event swapped with a random later one.
            let mut shuffled = events.clone();
            for i in 0..shuffled.len() {
                let j = i + order[i % order.len()] % (shuffled.len() - i);
                shuffled.swap(i, j);
            }
            // Split into batches of random sizes; with `replay`, each batch repeats the previous one.
            let mut batches: Vec<Vec<InteractionEvent>> = Vec::new();
            let mut rest = shuffled.as_slice();
            let mut cut = cuts.iter().cycle();
            while !rest.is_empty() {
                let n = (*cut.next().unwrap_or(&1)).min(rest.len());
                let (part, tail) = rest.split_at(n);
                let mut batch = part.to_vec();
                if replay && let Some(previous) = batches.last() {
                    batch.extend(previous.iter().cloned());
                }
                batches.push(batch);
                rest = tail;
            }
            proptest::prop_assert_eq!(store_in_batches(&batches), reference);
        }

        #[test]
        fn folded_durations_are_never_negative(
            steps in proptest::collection::vec((arbitrary_kind(), -1_000i64..1_000_000), 0..40)
        ) {
            let mut row = InteractionRow::new("i-1");
            for (seq, (kind, at)) in steps.into_iter().enumerate() {
                row.apply(&ev(seq as u32, at, kind), CountryCode::NANP);
            }
            proptest::prop_assert!(row.hold_ms >= 0);
            proptest::prop_assert!(row.talk_ms.unwrap_or(0) >= 0);
            proptest::prop_assert!(row.wrap_ms.unwrap_or(0) >= 0);
            proptest::prop_assert!(row.wait_ms.unwrap_or(0) >= 0);
            proptest::prop_assert!(row.ivr_path.len() < MAX_IVR_PATH);
        }
    }
}
