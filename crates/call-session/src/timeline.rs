//! The interaction timeline of one call: numbers each step so `(interaction, seq)` is unique and
//! gap-free, which makes the CRM writer's replay idempotent. Pure.

use domain::{InteractionEvent, InteractionEventKind, InteractionId, Timestamp};

/// Hands out the next event of one interaction.
#[derive(Debug, Clone)]
pub struct Timeline {
    interaction: InteractionId,
    next_seq: u32,
}

impl Timeline {
    pub fn new(interaction: InteractionId) -> Self {
        Self {
            interaction,
            next_seq: 0,
        }
    }

    /// A timeline taken up again by a new process after a restart: its numbers start at `first_seq`,
    /// above any the earlier process could have used, so nothing it logged is overwritten or lost.
    pub fn resuming(interaction: InteractionId, first_seq: u32) -> Self {
        Self {
            interaction,
            next_seq: first_seq,
        }
    }

    /// The interaction this timeline belongs to.
    pub fn interaction(&self) -> &InteractionId {
        &self.interaction
    }

    /// The number the next event gets.
    pub fn next_seq(&self) -> u32 {
        self.next_seq
    }

    /// The next event, stamped `at`.
    pub fn event(&mut self, at: Timestamp, kind: InteractionEventKind) -> InteractionEvent {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        InteractionEvent {
            interaction: self.interaction.clone(),
            seq,
            at,
            kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_start_at_zero_without_gaps() {
        let mut t = Timeline::new(InteractionId::new("i1").unwrap());
        let a = t.event(Timestamp::from_millis(1), InteractionEventKind::Held);
        let b = t.event(Timestamp::from_millis(2), InteractionEventKind::Resumed);
        assert_eq!((a.seq, b.seq), (0, 1));
        assert_eq!(b.interaction.as_str(), "i1");
    }
}
