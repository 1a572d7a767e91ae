//! Per-principal session quotas: how many sessions a JWT principal may hold at once on this
//! host (`AuthConfig::max_sessions_per_principal`, lowered by the `max_sessions` claim).
//!
//! A create reserves a place before its agent starts and keeps it until the session is in the
//! registry, so concurrent creates of one principal cannot overshoot. Counted: this host's
//! sessions owned by the principal that have not ended (hibernated ones count).

use std::collections::HashMap;

use parking_lot::Mutex;

use super::principal::Principal;
use crate::registry::SessionRegistry;

/// The quota is reached (HTTP 429, code `quota_exceeded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Session quota reached: at most {0} concurrent sessions for this user; delete one first")]
pub(crate) struct QuotaExceeded(pub(crate) usize);

/// Creates in flight per principal.
#[derive(Debug, Default)]
pub(crate) struct Quotas {
    in_flight: Mutex<HashMap<String, usize>>,
}

/// A place reserved for one create; released when dropped (the session, if created, is in the
/// registry by then and counts there).
pub(crate) struct QuotaPermit<'a> {
    quotas: &'a Quotas,
    sub: Option<String>,
}

impl Drop for QuotaPermit<'_> {
    fn drop(&mut self) {
        let Some(sub) = self.sub.take() else { return };
        let mut in_flight = self.quotas.in_flight.lock();
        if let Some(n) = in_flight.get_mut(&sub) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                in_flight.remove(&sub);
            }
        }
    }
}

impl Quotas {
    /// Reserves a place for a create by `principal` under `server_default`.
    pub(crate) fn reserve(
        &self,
        principal: &Principal,
        server_default: Option<usize>,
        registry: &SessionRegistry,
    ) -> Result<QuotaPermit<'_>, QuotaExceeded> {
        let (Some(limit), Some(sub)) = (principal.session_limit(server_default), &principal.sub)
        else {
            return Ok(QuotaPermit {
                quotas: self,
                sub: None,
            });
        };
        let mut in_flight = self.in_flight.lock();
        let live = registry
            .ids()
            .iter()
            .filter_map(|id| registry.get(id))
            .filter(|s| s.owner() == Some(sub.as_str()) && !s.has_ended() && !s.is_closed())
            .count();
        let pending = in_flight.get(sub).copied().unwrap_or(0);
        if live + pending >= limit {
            return Err(QuotaExceeded(limit));
        }
        *in_flight.entry(sub.clone()).or_insert(0) += 1;
        Ok(QuotaPermit {
            quotas: self,
            sub: Some(sub.clone()),
        })
    }
}
