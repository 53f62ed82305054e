//! When a node counts as lost. Every node renews its liveness record (`acd-nodes/<node>`) every
//! second; a record that is missing means the node stopped, unless nobody could renew: while the
//! store does not answer (an outage, a failover, a starved host) every record lapses, the live
//! nodes' too, and once it answers again a live node renews within its own period. So a node is
//! lost only when its record stayed missing for a while, check after check, with the store
//! answering every one. The router's leader, each node's desk relay and the sweep that ends lost
//! calls in the CRM judge alike through [`MissingNodes`].

use std::collections::HashMap;
use std::ops::Sub;
use std::time::Duration;

/// How long a record must stay missing, with the store answering, before its node is lost: a few
/// renewal periods.
pub const NODE_LOST_AFTER: Duration = Duration::from_secs(3);

/// The nodes whose record every check since some time found missing. `T` is the caller's clock
/// (a timestamp, or an instant of a runtime whose time a test may pause).
#[derive(Debug)]
pub struct MissingNodes<T> {
    since: HashMap<String, T>,
    lost_after: Duration,
    /// When the last round of checks began.
    last_round: Option<T>,
}

impl<T: Copy + Sub<Output = Duration>> MissingNodes<T> {
    /// A judge that takes a node for lost once its record stayed missing `lost_after`.
    pub fn new(lost_after: Duration) -> Self {
        Self {
            since: HashMap::new(),
            lost_after,
            last_round: None,
        }
    }

    /// A check could not read the store: nobody could renew meanwhile, so absences count again
    /// from the next answer.
    pub fn store_failed(&mut self) {
        self.since.clear();
    }

    /// Begins a round of checks at `now` and forgets the nodes no longer `watched`. A round that
    /// comes `lost_after` or more after the last one starts the count afresh: whatever held the
    /// checks back (a store that failed, a starved host) may have held the renewals back too.
    pub fn begin_round(&mut self, now: T, watched: impl Fn(&str) -> bool) {
        if self.last_round.is_some_and(|last| now - last >= self.lost_after) {
            self.since.clear();
        }
        self.last_round = Some(now);
        self.since.retain(|node, _| watched(node));
    }

    /// Records what one check of `node`'s record read at `now`; true when the node is lost (it is
    /// then forgotten, so it is said once).
    pub fn check(&mut self, node: &str, alive: bool, now: T) -> bool {
        if alive {
            self.since.remove(node);
            return false;
        }
        let since = *self.since.entry(node.to_owned()).or_insert(now);
        let lost = now - since >= self.lost_after;
        if lost {
            self.since.remove(node);
        }
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_node_is_lost_only_once_missing_long_enough_with_every_check_answered() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut judge = MissingNodes::new(Duration::from_secs(3));
        let mut check = |alive: bool, s: u64| {
            judge.begin_round(at(s), |_| true);
            judge.check("b", alive, at(s))
        };
        // Missing for 2 s, then renewed: never lost.
        assert!(!check(false, 0));
        assert!(!check(false, 2));
        assert!(!check(true, 3));
        assert!(!check(false, 4));
        // Checks 3 s apart (something held them back) count afresh.
        assert!(!check(false, 7));
        assert!(!check(false, 9));
        assert!(check(false, 10), "missing from 7 to 10");
        // Said once, then counted afresh.
        assert!(!check(false, 11));
        assert!(!check(false, 13));
        // A failed check resets the count too.
        judge.store_failed();
        judge.begin_round(at(14), |_| true);
        assert!(!judge.check("b", false, at(14)));
        judge.begin_round(at(16), |_| true);
        assert!(!judge.check("b", false, at(16)), "missing from 14, not from 11");
        // A node no longer watched is forgotten.
        judge.begin_round(at(17), |n| n != "b");
        judge.begin_round(at(18), |_| true);
        assert!(!judge.check("b", false, at(18)));
        judge.begin_round(at(20), |_| true);
        assert!(!judge.check("b", false, at(20)), "missing from 18");
    }
}
