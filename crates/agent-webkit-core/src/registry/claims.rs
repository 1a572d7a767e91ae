//! Ids being created on this host: a caller-chosen session id is claimed before anything is
//! started for it, so of two concurrent creates of the same id exactly one goes on (the other
//! gets [`CreateError::Exists`](super::CreateError::Exists)); the claim ends when the create
//! does (by then the session is in the registry, or nothing was made).

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;

/// The ids claimed by creates in flight.
#[derive(Debug, Default)]
pub(super) struct IdClaims {
    ids: Arc<Mutex<HashSet<String>>>,
}

/// One claimed id; released on drop.
#[derive(Debug)]
pub(super) struct IdClaim {
    ids: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl IdClaims {
    /// Claims `id` unless a create in flight holds it or `taken(id)` (checked under the
    /// claims' lock, so no create can slip in between) says a session already has it.
    pub(super) fn claim(&self, id: &str, taken: impl FnOnce(&str) -> bool) -> Option<IdClaim> {
        let mut ids = self.ids.lock();
        if ids.contains(id) || taken(id) {
            return None;
        }
        ids.insert(id.to_owned());
        Some(IdClaim {
            ids: Arc::clone(&self.ids),
            id: id.to_owned(),
        })
    }
}

impl Drop for IdClaim {
    fn drop(&mut self) {
        self.ids.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_claim_per_id_until_released() {
        let claims = IdClaims::default();
        let first = claims.claim("a", |_| false);
        assert!(first.is_some());
        assert!(claims.claim("a", |_| false).is_none());
        assert!(claims.claim("b", |_| false).is_some());
        assert!(claims.claim("c", |_| true).is_none());
        drop(first);
        assert!(claims.claim("a", |_| false).is_some());
    }
}
