//! [`run_persistence_conformance`]: the contracts every [`SessionPersistence`] must keep.

use std::time::Duration;

use super::{Lease, PersistError, SessionPersistence, SessionRecord};
use crate::agent::SessionConfig;
use crate::event_log::StoredEvent;

/// The first contract a persistence implementation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("persistence contract {contract:?} failed: {reason}")]
pub struct PersistenceFailure {
    /// Contract name.
    pub contract: &'static str,
    /// What went wrong.
    pub reason: String,
}

fn check(
    contract: &'static str,
    ok: bool,
    reason: impl Into<String>,
) -> Result<(), PersistenceFailure> {
    if ok {
        Ok(())
    } else {
        Err(PersistenceFailure {
            contract,
            reason: reason.into(),
        })
    }
}

fn backend(contract: &'static str) -> impl Fn(PersistError) -> PersistenceFailure {
    move |err| PersistenceFailure {
        contract,
        reason: format!("backend error: {err}"),
    }
}

fn ev(seq: u64) -> StoredEvent {
    StoredEvent {
        seq,
        event: "message_delta".into(),
        data: format!("{{\"n\":{seq}}}"),
    }
}

/// Checks the [`SessionPersistence`] contracts against `store` (ids are made unique with
/// `prefix`, so a shared database can be used). Returns how many contracts ran.
pub async fn run_persistence_conformance(
    store: &dyn SessionPersistence,
    prefix: &str,
) -> Result<usize, PersistenceFailure> {
    let lease = Duration::from_secs(30);
    let config = SessionConfig {
        model: Some("m".into()),
        permission_mode: Some("plan".into()),
        cwd: Some("/w".into()),
        tool_input_deltas: None,
        owner: None,
    };

    let c = "create_then_load";
    let id = format!("{prefix}-a");
    let record = SessionRecord::new(&id, "agent-a", &config);
    store
        .create(&record, "host-1", lease)
        .await
        .map_err(backend(c))?;
    let loaded = store.load(&id, 10).await.map_err(backend(c))?;
    check(
        c,
        loaded == Some((record.clone(), Vec::new())),
        format!("{loaded:?}"),
    )?;
    check(c, record.config() == config, "config round trip")?;
    let again = store.create(&record, "host-1", lease).await;
    check(
        c,
        matches!(again, Err(PersistError::Exists(_))),
        format!("{again:?}"),
    )?;

    let c = "events_in_order_idempotent_tail";
    let batch: Vec<StoredEvent> = (1..=5).map(ev).collect();
    store
        .append_events(&id, &batch[..3])
        .await
        .map_err(backend(c))?;
    store
        .append_events(&id, &batch[1..])
        .await
        .map_err(backend(c))?;
    let (_, events) = store
        .load(&id, 10)
        .await
        .map_err(backend(c))?
        .unwrap_or((record.clone(), Vec::new()));
    check(c, events == batch, format!("{events:?}"))?;
    let (_, tail) = store
        .load(&id, 2)
        .await
        .map_err(backend(c))?
        .unwrap_or((record.clone(), Vec::new()));
    check(c, tail == batch[3..], format!("tail: {tail:?}"))?;

    let c = "lease_exclusive_until_released";
    let held = store
        .acquire(&id, "host-2", lease)
        .await
        .map_err(backend(c))?;
    check(
        c,
        matches!(&held, Lease::HeldBy { owner, .. } if owner == "host-1"),
        format!("{held:?}"),
    )?;
    let mine = store
        .acquire(&id, "host-1", lease)
        .await
        .map_err(backend(c))?;
    check(c, mine == Lease::Acquired, format!("{mine:?}"))?;
    store.release(&id, "host-2").await.map_err(backend(c))?;
    let still = store
        .acquire(&id, "host-2", lease)
        .await
        .map_err(backend(c))?;
    check(
        c,
        matches!(still, Lease::HeldBy { .. }),
        "a non-owner cannot release",
    )?;
    store.release(&id, "host-1").await.map_err(backend(c))?;
    let taken = store
        .acquire(&id, "host-2", lease)
        .await
        .map_err(backend(c))?;
    check(c, taken == Lease::Acquired, format!("{taken:?}"))?;

    let c = "expired_lease_is_taken_over_and_renew_reports_loss";
    let short = Duration::from_millis(50);
    let id2 = format!("{prefix}-b");
    store
        .create(
            &SessionRecord::new(&id2, "agent-b", &config),
            "host-1",
            short,
        )
        .await
        .map_err(backend(c))?;
    let lost = store
        .renew("host-1", std::slice::from_ref(&id2), short)
        .await
        .map_err(backend(c))?;
    check(c, lost.is_empty(), format!("{lost:?}"))?;
    tokio::time::sleep(Duration::from_millis(120)).await;
    let taken = store
        .acquire(&id2, "host-2", lease)
        .await
        .map_err(backend(c))?;
    check(c, taken == Lease::Acquired, format!("{taken:?}"))?;
    let lost = store
        .renew("host-1", std::slice::from_ref(&id2), lease)
        .await
        .map_err(backend(c))?;
    check(c, lost == vec![id2.clone()], format!("{lost:?}"))?;

    let c = "delete_is_everywhere_and_idempotent";
    store.delete(&id).await.map_err(backend(c))?;
    store.delete(&id).await.map_err(backend(c))?;
    check(
        c,
        store.load(&id, 10).await.map_err(backend(c))?.is_none(),
        "still loads",
    )?;
    let gone = store
        .acquire(&id, "host-1", lease)
        .await
        .map_err(backend(c))?;
    check(c, gone == Lease::Gone, format!("{gone:?}"))?;
    store
        .append_events(&id, &[ev(9)])
        .await
        .map_err(backend(c))?;
    check(
        c,
        store.load(&id, 10).await.map_err(backend(c))?.is_none(),
        "append resurrected it",
    )?;
    let lost = store
        .renew("host-2", std::slice::from_ref(&id), lease)
        .await
        .map_err(backend(c))?;
    check(c, lost == vec![id], format!("{lost:?}"))?;
    store.delete(&id2).await.map_err(backend(c))?;
    Ok(5)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::persist::InMemoryPersistence;

    #[tokio::test]
    async fn in_memory_passes_the_contracts() {
        let store = InMemoryPersistence::new(100);
        assert_eq!(run_persistence_conformance(&store, "t").await.unwrap(), 5);
    }
}
