//! Ownership: a session is visible only to the principal that owns it (and to admins); to
//! anyone else it is answered exactly like an unknown session, on every endpoint, so session
//! ids are no oracle.
//!
//! The owner of a session held here is [`Session::owner`](crate::session::Session::owner); of
//! one persisted but not held here (another host's, or this host's before a restart), the
//! stored record's, read *before* a take-over so that another principal's request neither
//! starts its agent nor learns that it is held elsewhere.

use super::principal::Principal;
use crate::registry::SessionRegistry;

/// Whether `principal` may see session `id`: `Ok(true)` also when no such session exists
/// (the caller then answers as for any unknown id); `Err` when the stored owner could not be
/// read (persistence down).
pub(crate) async fn may_see(
    registry: &SessionRegistry,
    principal: &Principal,
    id: &str,
) -> Result<bool, String> {
    if principal.admin {
        return Ok(true);
    }
    if let Some(session) = registry.get(id) {
        return Ok(principal.may_access(session.owner()));
    }
    let Some(failover) = registry.failover() else {
        return Ok(true);
    };
    if crate::session_id::validate(id).is_err() {
        return Ok(true);
    }
    match failover.persistence.load(id, 0).await {
        Ok(Some((record, _))) => Ok(principal.may_access(record.config().owner.as_deref())),
        Ok(None) => Ok(true),
        Err(err) => {
            tracing::warn!(session_id = id, error = %err, "could not read the session's owner");
            Err(err.to_string())
        }
    }
}
