//! [`run_persistence_conformance`]: the contracts every [`SessionPersistence`] must keep.

use std::time::Duration;

use super::{
    Lease, ListQuery, PersistError, SessionActivity, SessionPersistence, SessionRecord, UsageTotals,
};
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
        owner: Some("alice".into()),
        ..SessionConfig::default()
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

    let c = "load_events_range";
    for (after, limit, want) in [
        (0, 10, &batch[..]),
        (2, 2, &batch[2..4]),
        (4, 10, &batch[4..]),
    ] {
        let got = store
            .load_events(&id, after, limit)
            .await
            .map_err(backend(c))?;
        check(
            c,
            got == want,
            format!("after {after}, limit {limit}: {got:?}"),
        )?;
    }
    let none = store.load_events(&id, 5, 10).await.map_err(backend(c))?;
    check(c, none.is_empty(), format!("after the last: {none:?}"))?;
    let unknown = store
        .load_events(&format!("{prefix}-nobody"), 0, 10)
        .await
        .map_err(backend(c))?;
    check(
        c,
        unknown.is_empty(),
        format!("unknown session: {unknown:?}"),
    )?;

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

    listing(store, prefix, lease).await?;
    Ok(7)
}

/// `list` / `get` / `append_batch`'s activity: owners, the keyset order, ended sessions.
async fn listing(
    store: &dyn SessionPersistence,
    prefix: &str,
    lease: Duration,
) -> Result<(), PersistenceFailure> {
    let c = "list_keyset_owner_activity";
    // A time far in the future keeps these sessions ahead of anything else in a shared database.
    let base = 4_000_000_000_000_i64 + i64::from(prefix.bytes().map(u32::from).sum::<u32>()) * 1000;
    let owner = format!("{prefix}-owner");
    let mut ids = Vec::new();
    for i in 0..5_i64 {
        let id = format!("{prefix}-l{i}");
        let config = crate::agent::SessionConfig {
            model: Some(format!("m{i}")),
            owner: Some(if i == 2 {
                format!("{prefix}-other")
            } else {
                owner.clone()
            }),
            ..Default::default()
        };
        let mut record = SessionRecord::new(&id, &id, &config);
        record.created_at_ms = base;
        store
            .create(&record, "host-1", lease)
            .await
            .map_err(backend(c))?;
        let created = store.get(&id).await.map_err(backend(c))?;
        check(
            c,
            created.as_ref().is_some_and(|l| {
                l.record == record
                    && l.activity == SessionActivity::created(&record)
                    && l.last_seq == 0
                    && l.lease_holder.as_deref() == Some("host-1")
            }),
            format!("after create: {created:?}"),
        )?;
        // Sessions 3 and 4 share an activity time: the id breaks the tie.
        let activity = SessionActivity {
            last_activity_ms: base + 10 * i.min(3),
            title: Some(format!("title {i}")),
            usage: UsageTotals {
                input_tokens: 7,
                total_cost_usd: 0.5,
                turns: 1,
                ..Default::default()
            },
            ended: i == 0,
            model: Some("changed".into()),
            permission_mode: Some("plan".into()),
            // Per-model cost rides in the activity JSON (no column of its own).
            cost: crate::persist::CostTotals {
                total_cost_usd: 0.5,
                by_model: [(
                    "claude-x".to_owned(),
                    crate::persist::ModelCost {
                        input_tokens: 7,
                        output_tokens: 3,
                        cost_usd: 0.5,
                        ..Default::default()
                    },
                )]
                .into(),
            },
            // So do the client's MCP settings made at runtime.
            mcp_servers: Some(
                [("beta".to_owned(), serde_json::json!({"command": "b"}))]
                    .into_iter()
                    .collect(),
            ),
            mcp_disabled: vec!["ops".into()],
        };
        store
            .append_batch(&id, &[ev(1), ev(2)], Some(&activity))
            .await
            .map_err(backend(c))?;
        // Without activity: the events land, the activity stays.
        store
            .append_batch(&id, &[ev(3)], None)
            .await
            .map_err(backend(c))?;
        let got = store.get(&id).await.map_err(backend(c))?;
        check(
            c,
            got.as_ref()
                .is_some_and(|l| l.activity == activity && l.last_seq == 3),
            format!("after append: {got:?}"),
        )?;
        ids.push(id);
    }
    // Newest first: l4 and l3 (same time, larger id first), l1, l0 (ended); l2 is another owner's.
    let mine = |before: Option<(i64, String)>, limit: usize, ended_since_ms: i64| ListQuery {
        owner: Some(owner.clone()),
        before,
        limit,
        ended_since_ms,
    };
    let names = |page: &[super::ListedSession]| -> Vec<String> {
        page.iter().map(|l| l.record.session_id.clone()).collect()
    };
    let first = store.list(&mine(None, 2, 0)).await.map_err(backend(c))?;
    check(
        c,
        names(&first) == [ids[4].clone(), ids[3].clone()],
        format!("first page: {:?}", names(&first)),
    )?;
    let last = first
        .last()
        .map(|l| (l.activity.last_activity_ms, l.record.session_id.clone()));
    let second = store.list(&mine(last, 10, 0)).await.map_err(backend(c))?;
    check(
        c,
        names(&second) == [ids[1].clone(), ids[0].clone()],
        format!("second page: {:?}", names(&second)),
    )?;
    let recent = store
        .list(&mine(None, 10, base + 1))
        .await
        .map_err(backend(c))?;
    check(
        c,
        !names(&recent).contains(&ids[0]),
        "an ended session older than ended_since_ms is left out",
    )?;
    let everyone = ListQuery {
        owner: None,
        before: Some((base + 1000, String::new())),
        limit: 10,
        ended_since_ms: 0,
    };
    let all = store.list(&everyone).await.map_err(backend(c))?;
    check(
        c,
        ids.iter().all(|id| names(&all).contains(id)),
        format!("no owner filter: {:?}", names(&all)),
    )?;
    store.release(&ids[1], "host-1").await.map_err(backend(c))?;
    let released = store.get(&ids[1]).await.map_err(backend(c))?;
    check(
        c,
        released.is_some_and(|l| l.lease_holder.is_none()),
        "a released lease has no holder",
    )?;
    for id in &ids {
        store.delete(id).await.map_err(backend(c))?;
    }
    check(
        c,
        store.get(&ids[0]).await.map_err(backend(c))?.is_none(),
        "get after delete",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::persist::InMemoryPersistence;

    #[tokio::test]
    async fn in_memory_passes_the_contracts() {
        let store = InMemoryPersistence::new(100);
        assert_eq!(run_persistence_conformance(&store, "t").await.unwrap(), 7);
    }
}
