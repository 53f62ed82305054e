//! The location service: where each registered user can be reached. Behind a trait so the bindings
//! can live in process memory (one node) or in the shared state store (many nodes).

use domain::Timestamp;
use parking_lot::Mutex;
use std::collections::HashMap;

/// One registered contact of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The Contact URI the user registered.
    pub contact: String,
    pub expires_at: Timestamp,
    pub call_id: String,
    pub cseq: u32,
    /// Where the REGISTER came from (`ip:port`), for NAT-aware delivery.
    pub source: String,
}

/// Stores bindings per address-of-record (the user name).
#[async_trait::async_trait]
pub trait Locations: Send + Sync {
    /// Adds or refreshes a binding (same contact URI replaces).
    async fn upsert(&self, aor: &str, binding: Binding, now: Timestamp);
    /// Removes one contact.
    async fn remove(&self, aor: &str, contact: &str);
    /// Removes every contact of the user.
    async fn remove_all(&self, aor: &str);
    /// Live bindings at `now`; expired ones are dropped.
    async fn lookup(&self, aor: &str, now: Timestamp) -> Vec<Binding>;
}

/// Bindings in process memory: the embedded default.
#[derive(Default)]
pub struct MemoryLocations {
    map: Mutex<HashMap<String, Vec<Binding>>>,
}

#[async_trait::async_trait]
impl Locations for MemoryLocations {
    async fn upsert(&self, aor: &str, binding: Binding, _now: Timestamp) {
        let mut map = self.map.lock();
        let list = map.entry(aor.to_string()).or_default();
        list.retain(|b| b.contact != binding.contact);
        list.push(binding);
    }

    async fn remove(&self, aor: &str, contact: &str) {
        if let Some(list) = self.map.lock().get_mut(aor) {
            list.retain(|b| b.contact != contact);
        }
    }

    async fn remove_all(&self, aor: &str) {
        self.map.lock().remove(aor);
    }

    async fn lookup(&self, aor: &str, now: Timestamp) -> Vec<Binding> {
        let mut map = self.map.lock();
        let Some(list) = map.get_mut(aor) else {
            return Vec::new();
        };
        list.retain(|b| b.expires_at > now);
        list.clone()
    }
}

/// Bindings in the shared state store: in Redis they survive a restart and every node sees them.
pub struct StateLocations {
    store: state_store::StateStore,
}

impl StateLocations {
    pub fn new(store: state_store::StateStore) -> Self {
        Self { store }
    }
}

fn aor(user: &str) -> Option<state_store::Aor> {
    state_store::Aor::new(user).ok()
}

#[async_trait::async_trait]
impl Locations for StateLocations {
    async fn upsert(&self, user: &str, binding: Binding, now: Timestamp) {
        let Some(aor) = aor(user) else { return };
        let source = binding
            .source
            .parse()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        let stored = state_store::Binding {
            contact: binding.contact,
            expires_at: binding.expires_at,
            call_id: binding.call_id,
            cseq: binding.cseq,
            source,
            transport: state_store::Transport::Udp,
        };
        if let Err(e) = self.store.upsert_binding(&aor, stored, now).await {
            tracing::warn!(error = %e, "registration not stored");
        }
    }

    async fn remove(&self, user: &str, contact: &str) {
        if let Some(aor) = aor(user) {
            let _ = self.store.remove_binding(&aor, contact).await;
        }
    }

    async fn remove_all(&self, user: &str) {
        if let Some(aor) = aor(user) {
            let _ = self.store.remove_all_bindings(&aor).await;
        }
    }

    async fn lookup(&self, user: &str, now: Timestamp) -> Vec<Binding> {
        let Some(aor) = aor(user) else { return Vec::new() };
        match self.store.live_bindings(&aor, now).await {
            Ok(list) => list
                .into_iter()
                .map(|b| Binding {
                    contact: b.contact,
                    expires_at: b.expires_at,
                    call_id: b.call_id,
                    cseq: b.cseq,
                    source: b.source.to_string(),
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "registrations unavailable");
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(contact: &str, expires_ms: i64) -> Binding {
        Binding {
            contact: contact.into(),
            expires_at: Timestamp::from_millis(expires_ms),
            call_id: "c".into(),
            cseq: 1,
            source: "127.0.0.1:5062".into(),
        }
    }

    #[tokio::test]
    async fn bindings_expire_refresh_and_remove() {
        check(&MemoryLocations::default()).await;
        check(&StateLocations::new(state_store::StateStore::memory())).await;
    }

    async fn check(l: &dyn Locations) {
        l.upsert("1001", binding("sip:1001@a", 1000), Timestamp::ZERO)
            .await;
        l.upsert("1001", binding("sip:1001@b", 5000), Timestamp::ZERO)
            .await;
        l.upsert("1001", binding("sip:1001@a", 3000), Timestamp::ZERO)
            .await;
        assert_eq!(l.lookup("1001", Timestamp::from_millis(2000)).await.len(), 2);
        assert_eq!(l.lookup("1001", Timestamp::from_millis(4000)).await.len(), 1);
        l.remove("1001", "sip:1001@b").await;
        assert!(l.lookup("1001", Timestamp::from_millis(0)).await.is_empty());
        l.upsert("1002", binding("sip:1002@a", 1000), Timestamp::ZERO)
            .await;
        l.remove_all("1002").await;
        assert!(l.lookup("1002", Timestamp::ZERO).await.is_empty());
    }
}
