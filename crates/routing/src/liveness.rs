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
}

impl<T: Copy + Sub<Output = Duration>> MissingNodes<T> {
    /// A judge that takes a node for lost once its record stayed missing `lost_after`.
    pub fn new(lost_after: Duration) -> Self {
        Self {
            since: HashMap::new(),
            lost_after,
        }
    }

    /// A check could not read the store: nobody could renew meanwhile, so absences count again
    /// from the next answer.
    pub fn store_failed(&mut self) {
        self.since.clear();
    }

    /// Forgets the nodes no longer watched.
    pub fn retain(&mut self, watched: impl Fn(&str) -> bool) {
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
        // Missing for 2 s, then renewed: never lost.
        assert!(!judge.check("b", false, at(0)));
        assert!(!judge.check("b", false, at(2)));
        assert!(!judge.check("b", true, at(3)));
        assert!(!judge.check("b", false, at(4)));
        // A failed check resets the count: missing from 4 to 8 with a failure at 6.
        judge.store_failed();
        assert!(!judge.check("b", false, at(7)));
        assert!(!judge.check("b", false, at(9)));
        assert!(judge.check("b", false, at(10)), "missing from 7 to 10");
        // Said once, then counted afresh.
        assert!(!judge.check("b", false, at(11)));
        judge.retain(|n| n != "b");
        assert!(!judge.check("b", false, at(20)));
    }
}
