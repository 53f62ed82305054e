//! A handle that confirms a leg's dialog (the ACK of our answer ends its unconfirmed sending budget)
//! from the signalling side, without keeping the leg alive.

use super::LegShared;

/// Confirms a leg's dialog from elsewhere ([`super::RtpLeg::confirmer`]); holds no reference that keeps the leg
/// (its socket and port) alive.
#[derive(Clone)]
pub struct LegConfirmer {
    pub(super) shared: std::sync::Weak<LegShared>,
}

impl std::fmt::Debug for LegConfirmer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegConfirmer").finish_non_exhaustive()
    }
}

impl LegConfirmer {
    /// [`super::RtpLeg::confirm`] on the leg, if it still exists.
    pub fn confirm(&self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.out.lock().budget.confirm();
        }
    }
}
