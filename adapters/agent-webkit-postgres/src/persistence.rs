//! [`SessionPersistence`] in PostgreSQL: session records, bounded event logs and ownership
//! leases on the database clock, for cross-host failover (see the crate README).

use std::time::Duration;

use agent_webkit_core::event_log::StoredEvent;
use agent_webkit_core::persist::{
    Lease, ListQuery, ListedSession, PersistError, SessionActivity, SessionPersistence,
    SessionRecord,
};
use async_trait::async_trait;
use deadpool_postgres::{Object, Pool};
use serde_json::Value;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::{connect_pool, migrate_pool, run_on_pool, PgStoreError, PoolOptions};

/// Events kept per session unless [`PgSessionPersistence::with_max_events`] says otherwise.
pub const DEFAULT_MAX_EVENTS: usize = 10_000;

/// Longest lease honoured (longer ones are cut to this): keeps timestamps in range.
const MAX_LEASE_MS: i64 = 10 * 365 * 24 * 3600 * 1000;

/// How often `acquire` re-reads a lease that changed between its update and its read.
const ACQUIRE_ROUNDS: usize = 4;

const CREATE_SQL: &str = "
INSERT INTO agent_webkit_sessions
    (session_id, record, owner, lease_expires_at, principal, last_activity_ms)
VALUES ($1, $2, $3, clock_timestamp() + $4::bigint * interval '1 millisecond', $5, $6)
ON CONFLICT (session_id) DO NOTHING
RETURNING 1";

/// After a retried `create` found the row: is it the one the lost first attempt wrote?
const CREATED_BY_US_SQL: &str = "
SELECT record = $2 AND owner IS NOT DISTINCT FROM $3
FROM agent_webkit_sessions WHERE session_id = $1";

/// One statement: drops events older than the newest `$5` (counting the stored ones and the
/// batch by seq), inserts the rest of the batch unless the session is gone (the foreign key
/// catches a concurrent delete), skips seqs already stored, and prunes what fell out.
const APPEND_SQL: &str = "
WITH batch AS (
    SELECT u.seq, u.event, u.data
    FROM unnest($2::bigint[], $3::text[], $4::text[]) AS u(seq, event, data)
), bound AS (
    SELECT GREATEST(
        (SELECT max(seq) FROM batch),
        (SELECT max(seq) FROM agent_webkit_session_events WHERE session_id = $1)
    ) - $5::bigint AS cutoff
), ins AS (
    INSERT INTO agent_webkit_session_events (session_id, seq, event, data)
    SELECT $1, b.seq, b.event, b.data
    FROM batch b, bound
    WHERE b.seq > bound.cutoff
      AND EXISTS (SELECT 1 FROM agent_webkit_sessions WHERE session_id = $1)
    ORDER BY b.seq
    ON CONFLICT (session_id, seq) DO NOTHING
    RETURNING 1
), pruned AS (
    DELETE FROM agent_webkit_session_events
    WHERE session_id = $1 AND seq <= (SELECT cutoff FROM bound)
    RETURNING 1
), activity AS (
    UPDATE agent_webkit_sessions SET
        last_seq = GREATEST(last_seq, (SELECT max(seq) FROM batch)),
        last_activity_ms = COALESCE($6::bigint, last_activity_ms),
        ended = COALESCE($7::boolean, ended),
        activity = COALESCE($8::jsonb, activity)
    WHERE session_id = $1
    RETURNING 1
)
SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM pruned)";

/// The events after seq `$2`, oldest first, at most `$3` (the primary key's range).
const LOAD_EVENTS_SQL: &str = "
SELECT seq, event, data FROM agent_webkit_session_events
WHERE session_id = $1 AND seq > $2
ORDER BY seq
LIMIT $3";

/// What [`listed`] reads, in its order; the lease holder only while its lease is live.
const LISTED_COLUMNS: &str = "record, activity, last_activity_ms, ended, last_seq,
    CASE WHEN lease_expires_at > clock_timestamp() THEN owner END";

/// A page of sessions, newest activity first, after the keyset cursor `($3, $4)`.
fn list_sql() -> String {
    format!(
        "SELECT {LISTED_COLUMNS} FROM agent_webkit_sessions
         WHERE ($1::text IS NULL OR principal = $1)
           AND (NOT ended OR last_activity_ms >= $2)
           AND ($3::bigint IS NULL
                OR (last_activity_ms, session_id COLLATE \"C\") < ($3, $4::text COLLATE \"C\"))
         ORDER BY last_activity_ms DESC, session_id COLLATE \"C\" DESC
         LIMIT $5"
    )
}

/// A row of [`LISTED_COLUMNS`] as the core's [`ListedSession`].
fn listed(row: &tokio_postgres::Row) -> Result<ListedSession, PgStoreError> {
    let record: Value = row.try_get(0)?;
    let record: SessionRecord = serde_json::from_value(record)
        .map_err(|e| PgStoreError::Corrupt(format!("session record: {e}")))?;
    let mut activity = match row.try_get::<_, Option<Value>>(1)? {
        Some(json) => serde_json::from_value(json).map_err(|e| {
            PgStoreError::Corrupt(format!("activity of session {:?}: {e}", record.session_id))
        })?,
        None => SessionActivity::created(&record),
    };
    activity.last_activity_ms = row.try_get(2)?;
    activity.ended = row.try_get(3)?;
    Ok(ListedSession {
        record,
        activity,
        last_seq: u64::try_from(row.try_get::<_, i64>(4)?).unwrap_or(0),
        lease_holder: row.try_get(5)?,
    })
}

/// The record and the newest `$2` events as three arrays in seq order: one row, or none.
const LOAD_SQL: &str = "
SELECT s.record, e.seqs, e.events, e.datas
FROM agent_webkit_sessions s
CROSS JOIN LATERAL (
    SELECT array_agg(t.seq ORDER BY t.seq) AS seqs,
           array_agg(t.event ORDER BY t.seq) AS events,
           array_agg(t.data ORDER BY t.seq) AS datas
    FROM (
        SELECT seq, event, data FROM agent_webkit_session_events
        WHERE session_id = s.session_id
        ORDER BY seq DESC
        LIMIT $2
    ) t
) e
WHERE s.session_id = $1";

/// The conditional takeover: the row lock makes concurrent callers queue, and each one
/// re-checks the condition against the winner's committed row, so exactly one wins.
const ACQUIRE_SQL: &str = "
UPDATE agent_webkit_sessions
SET owner = $2, lease_expires_at = clock_timestamp() + $3::bigint * interval '1 millisecond'
WHERE session_id = $1
  AND (owner IS NULL OR owner = $2 OR lease_expires_at <= clock_timestamp())
RETURNING 1";

/// Pipelined right behind [`ACQUIRE_SQL`] (a later statement, so a later snapshot): who holds
/// the lease now, until when, and whether that is a live lease of someone else.
const HOLDER_SQL: &str = "
SELECT owner,
       CASE WHEN isfinite(lease_expires_at)
            THEN (extract(epoch FROM lease_expires_at) * 1000)::bigint
            ELSE 0 END,
       owner IS NOT NULL AND owner <> $2 AND lease_expires_at > clock_timestamp()
FROM agent_webkit_sessions WHERE session_id = $1";

const RENEW_SQL: &str = "
UPDATE agent_webkit_sessions
SET lease_expires_at = clock_timestamp() + $3::bigint * interval '1 millisecond'
WHERE session_id = ANY($2::text[]) AND owner = $1
RETURNING session_id";

const RELEASE_SQL: &str = "
UPDATE agent_webkit_sessions SET owner = NULL, lease_expires_at = '-infinity'
WHERE session_id = $1 AND owner = $2";

const DELETE_SQL: &str = "DELETE FROM agent_webkit_sessions WHERE session_id = $1";

/// A [`SessionPersistence`] in PostgreSQL. Cheap to clone (the pool is shared).
///
/// Tables `agent_webkit_sessions` and `agent_webkit_session_events` (schema migration 2);
/// lease times are on the database's clock; each session keeps its newest
/// [`DEFAULT_MAX_EVENTS`] events (see [`PgSessionPersistence::with_max_events`]).
#[derive(Clone)]
pub struct PgSessionPersistence {
    pool: Pool,
    op_timeout: Duration,
    max_events: i64,
}

impl std::fmt::Debug for PgSessionPersistence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PgSessionPersistence")
            .field("pool_size", &status.size)
            .field("pool_max_size", &status.max_size)
            .field("op_timeout", &self.op_timeout)
            .field("max_events", &self.max_events)
            .finish()
    }
}

fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis())
        .unwrap_or(i64::MAX)
        .min(MAX_LEASE_MS)
}

/// PostgreSQL text cannot hold NUL: such an id or owner can never have been stored.
fn storable(text: &str) -> bool {
    !text.contains('\0')
}

fn is_fk_violation(err: &PgStoreError) -> bool {
    matches!(err, PgStoreError::Postgres(e) if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION))
}

impl PgSessionPersistence {
    /// Connects to `dsn` (as [`crate::PgSessionStore::connect`] does: same pool settings) and
    /// creates or migrates the schema.
    pub async fn connect(dsn: &str, options: PoolOptions) -> Result<Self, PgStoreError> {
        Self::from_pool(connect_pool(dsn, options).await?).await
    }

    /// Uses an existing pool (its connections' `search_path` picks the schema); creates or
    /// migrates the schema first. A `PgSessionStore` can share its pool instead:
    /// [`crate::PgSessionStore::persistence`].
    pub async fn from_pool(pool: Pool) -> Result<Self, PgStoreError> {
        migrate_pool(&pool).await?;
        Ok(Self::with_migrated_pool(pool))
    }

    pub(crate) fn with_migrated_pool(pool: Pool) -> Self {
        Self {
            pool,
            op_timeout: crate::DEFAULT_OP_TIMEOUT,
            max_events: i64::try_from(DEFAULT_MAX_EVENTS).unwrap_or(i64::MAX),
        }
    }

    /// Keeps only the newest `max_events` events of each session (by seq; at least 1; default
    /// [`DEFAULT_MAX_EVENTS`]). Must be at least the server's replay ring size, or a host
    /// taking a session over replays less than the old host could.
    pub fn with_max_events(mut self, max_events: usize) -> Self {
        self.max_events = i64::try_from(max_events.max(1)).unwrap_or(i64::MAX);
        self
    }

    /// Bounds every call (including its one reconnect retry); past it the call fails with
    /// [`PersistError::Backend`] and a write may or may not have landed. Default 30 s.
    pub fn with_op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// The underlying pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Runs `op(connection, attempt)` with the store's reconnect-once retry and op timeout;
    /// failures are logged and become [`PersistError::Backend`] with context.
    async fn run<T, F, Fut>(
        &self,
        what: &'static str,
        session_id: &str,
        op: F,
    ) -> Result<T, PersistError>
    where
        F: Fn(Object, u32) -> Fut,
        Fut: std::future::Future<Output = Result<T, PgStoreError>>,
    {
        let on_retry = |err: &PgStoreError| {
            tracing::info!(
                session_id,
                error = %err,
                "postgres session persistence: {what}: connection lost, retrying on a fresh one"
            );
        };
        run_on_pool(&self.pool, self.op_timeout, on_retry, op)
            .await
            .map_err(|err| {
                tracing::warn!(
                    session_id,
                    error = %err,
                    "postgres session persistence: {what} failed"
                );
                PersistError::Backend(format!("{what} of session {session_id:?}: {err}"))
            })
    }
}

#[async_trait]
impl SessionPersistence for PgSessionPersistence {
    async fn create(
        &self,
        record: &SessionRecord,
        owner: &str,
        lease: Duration,
    ) -> Result<(), PersistError> {
        let session_id = record.session_id.as_str();
        if !storable(session_id) || !storable(owner) {
            return Err(PersistError::Backend(format!(
                "create of session {session_id:?}: ids and owners must not contain NUL"
            )));
        }
        let json = serde_json::to_value(record)
            .map_err(|e| PersistError::Backend(format!("create of session {session_id:?}: {e}")))?;
        let ms = lease_ms(lease);
        let (principal, created) = (record.owner.as_deref(), record.created_at_ms);
        let created = self
            .run("create", session_id, |client, attempt| {
                let json = &json;
                async move {
                    let stmt = client.prepare_cached(CREATE_SQL).await?;
                    let params: [&(dyn ToSql + Sync); 6] =
                        [&session_id, json, &owner, &ms, &principal, &created];
                    if client.query_opt(&stmt, &params).await?.is_some() {
                        return Ok(true);
                    }
                    if attempt > 1 {
                        // The first attempt's connection died: it may have committed the row.
                        let check = client.prepare_cached(CREATED_BY_US_SQL).await?;
                        let params: [&(dyn ToSql + Sync); 3] = [&session_id, json, &owner];
                        if let Some(row) = client.query_opt(&check, &params).await? {
                            return Ok(row.try_get::<_, Option<bool>>(0)? == Some(true));
                        }
                    }
                    Ok(false)
                }
            })
            .await?;
        if !created {
            return Err(PersistError::Exists(record.session_id.clone()));
        }
        tracing::debug!(session_id, owner, "postgres session persistence: created");
        Ok(())
    }

    async fn append_batch(
        &self,
        session_id: &str,
        events: &[StoredEvent],
        activity: Option<&SessionActivity>,
    ) -> Result<(), PersistError> {
        if events.is_empty() || !storable(session_id) {
            return Ok(());
        }
        let last_activity = activity.map(|a| a.last_activity_ms);
        let ended = activity.map(|a| a.ended);
        let activity = activity
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| {
                PersistError::Backend(format!("activity of session {session_id:?}: {e}"))
            })?;
        let mut seqs = Vec::with_capacity(events.len());
        for event in events {
            seqs.push(i64::try_from(event.seq).map_err(|_| {
                PersistError::Backend(format!(
                    "append_events of session {session_id:?}: seq {} is out of range",
                    event.seq
                ))
            })?);
        }
        let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
        let datas: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
        let max_events = self.max_events;
        let counts = self
            .run("append_events", session_id, |client, _| {
                let (seqs, names, datas) = (&seqs, &names, &datas);
                let (last_activity, ended, activity) = (&last_activity, &ended, &activity);
                async move {
                    let stmt = client.prepare_cached(APPEND_SQL).await?;
                    let params: [&(dyn ToSql + Sync); 8] = [
                        &session_id,
                        seqs,
                        names,
                        datas,
                        &max_events,
                        last_activity,
                        ended,
                        activity,
                    ];
                    match client.query_one(&stmt, &params).await {
                        Ok(row) => Ok(Some((row.try_get::<_, i64>(0)?, row.try_get::<_, i64>(1)?))),
                        Err(e) => {
                            let err = PgStoreError::from(e);
                            // The session was deleted while the batch was being inserted.
                            if is_fk_violation(&err) {
                                Ok(None)
                            } else {
                                Err(err)
                            }
                        }
                    }
                }
            })
            .await?;
        match counts {
            Some((inserted, pruned)) => tracing::trace!(
                session_id,
                batch = events.len(),
                inserted,
                pruned,
                "postgres session persistence: events appended"
            ),
            None => tracing::debug!(
                session_id,
                batch = events.len(),
                "postgres session persistence: append to a session deleted meanwhile ignored"
            ),
        }
        Ok(())
    }

    async fn load(
        &self,
        session_id: &str,
        tail: usize,
    ) -> Result<Option<(SessionRecord, Vec<StoredEvent>)>, PersistError> {
        if !storable(session_id) {
            return Ok(None);
        }
        let limit = i64::try_from(tail).unwrap_or(i64::MAX);
        self.run("load", session_id, |client, _| async move {
            let stmt = client.prepare_cached(LOAD_SQL).await?;
            let Some(row) = client.query_opt(&stmt, &[&session_id, &limit]).await? else {
                return Ok(None);
            };
            let record: Value = row.try_get(0)?;
            let record: SessionRecord = serde_json::from_value(record).map_err(|e| {
                PgStoreError::Corrupt(format!("record of session {session_id:?}: {e}"))
            })?;
            let seqs: Vec<i64> = row.try_get::<_, Option<_>>(1)?.unwrap_or_default();
            let names: Vec<String> = row.try_get::<_, Option<_>>(2)?.unwrap_or_default();
            let datas: Vec<String> = row.try_get::<_, Option<_>>(3)?.unwrap_or_default();
            if names.len() != seqs.len() || datas.len() != seqs.len() {
                return Err(PgStoreError::Corrupt(format!(
                    "events of session {session_id:?}: array lengths differ"
                )));
            }
            let mut events = Vec::with_capacity(seqs.len());
            for ((seq, event), data) in seqs.into_iter().zip(names).zip(datas) {
                let seq = u64::try_from(seq).map_err(|_| {
                    PgStoreError::Corrupt(format!("session {session_id:?}: negative seq {seq}"))
                })?;
                events.push(StoredEvent { seq, event, data });
            }
            Ok(Some((record, events)))
        })
        .await
    }

    async fn load_events(
        &self,
        session_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, PersistError> {
        if !storable(session_id) || limit == 0 {
            return Ok(Vec::new());
        }
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run("load_events", session_id, |client, _| async move {
            let stmt = client.prepare_cached(LOAD_EVENTS_SQL).await?;
            let rows = client.query(&stmt, &[&session_id, &after, &limit]).await?;
            let mut events = Vec::with_capacity(rows.len());
            for row in rows {
                let seq: i64 = row.try_get(0)?;
                let seq = u64::try_from(seq).map_err(|_| {
                    PgStoreError::Corrupt(format!("session {session_id:?}: negative seq {seq}"))
                })?;
                events.push(StoredEvent {
                    seq,
                    event: row.try_get(1)?,
                    data: row.try_get(2)?,
                });
            }
            Ok(events)
        })
        .await
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<ListedSession>, PersistError> {
        let owner = query.owner.as_deref().filter(|o| storable(o));
        if query.owner.is_some() && owner.is_none() {
            return Ok(Vec::new());
        }
        let (before_ms, before_id) = match &query.before {
            Some((ms, id)) if storable(id) => (Some(*ms), Some(id.as_str())),
            Some(_) => return Ok(Vec::new()),
            None => (None, None),
        };
        let ended_since = query.ended_since_ms;
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let sql = list_sql();
        self.run("list", "", |client, _| {
            let sql = &sql;
            async move {
                let stmt = client.prepare_cached(sql).await?;
                let params: [&(dyn ToSql + Sync); 5] =
                    [&owner, &ended_since, &before_ms, &before_id, &limit];
                let rows = client.query(&stmt, &params).await?;
                rows.iter().map(listed).collect()
            }
        })
        .await
    }

    async fn get(&self, session_id: &str) -> Result<Option<ListedSession>, PersistError> {
        if !storable(session_id) {
            return Ok(None);
        }
        let sql =
            format!("SELECT {LISTED_COLUMNS} FROM agent_webkit_sessions WHERE session_id = $1");
        self.run("get", session_id, |client, _| {
            let sql = &sql;
            async move {
                let stmt = client.prepare_cached(sql).await?;
                match client.query_opt(&stmt, &[&session_id]).await? {
                    Some(row) => Ok(Some(listed(&row)?)),
                    None => Ok(None),
                }
            }
        })
        .await
    }

    async fn acquire(
        &self,
        session_id: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Lease, PersistError> {
        if !storable(session_id) {
            return Ok(Lease::Gone);
        }
        if !storable(owner) {
            return Err(PersistError::Backend(format!(
                "acquire of session {session_id:?}: owners must not contain NUL"
            )));
        }
        let ms = lease_ms(lease);
        let outcome = self
            .run("acquire", session_id, |client, _| async move {
                let (take, holder) = tokio::try_join!(
                    client.prepare_cached(ACQUIRE_SQL),
                    client.prepare_cached(HOLDER_SQL)
                )?;
                let take_params: [&(dyn ToSql + Sync); 3] = [&session_id, &owner, &ms];
                let holder_params: [&(dyn ToSql + Sync); 2] = [&session_id, &owner];
                for _ in 0..ACQUIRE_ROUNDS {
                    // Pipelined: one round trip; each statement commits on its own.
                    let (taken, now) = tokio::try_join!(
                        client.query_opt(&take, &take_params),
                        client.query_opt(&holder, &holder_params)
                    )?;
                    if taken.is_some() {
                        return Ok(Some(Lease::Acquired));
                    }
                    let Some(now) = now else {
                        return Ok(Some(Lease::Gone));
                    };
                    let live: bool = now.try_get(2)?;
                    if let (true, Some(holder)) = (live, now.try_get::<_, Option<String>>(0)?) {
                        return Ok(Some(Lease::HeldBy {
                            owner: holder,
                            expires_at_ms: now.try_get(1)?,
                        }));
                    }
                    // Released or expired between the update and the read: try again.
                }
                Ok(None)
            })
            .await?;
        let lease = outcome.ok_or_else(|| {
            PersistError::Backend(format!(
                "acquire of session {session_id:?}: the lease kept changing hands"
            ))
        })?;
        tracing::debug!(session_id, owner, outcome = ?lease, "postgres session persistence: acquire");
        Ok(lease)
    }

    async fn renew(
        &self,
        owner: &str,
        session_ids: &[String],
        lease: Duration,
    ) -> Result<Vec<String>, PersistError> {
        if session_ids.is_empty() {
            return Ok(Vec::new());
        }
        if !storable(owner) {
            return Err(PersistError::Backend(
                "renew: owners must not contain NUL".into(),
            ));
        }
        // Sorted and unique: rows are locked in key order either way; keeps the array small.
        let mut ids: Vec<&str> = session_ids
            .iter()
            .map(String::as_str)
            .filter(|id| storable(id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let ms = lease_ms(lease);
        let renewed: std::collections::HashSet<String> = self
            .run("renew", "", |client, _| {
                let ids = &ids;
                async move {
                    let stmt = client.prepare_cached(RENEW_SQL).await?;
                    let rows = client.query(&stmt, &[&owner, ids, &ms]).await?;
                    rows.iter()
                        .map(|row| row.try_get::<_, String>(0).map_err(PgStoreError::from))
                        .collect()
                }
            })
            .await?;
        let lost: Vec<String> = session_ids
            .iter()
            .filter(|id| !renewed.contains(id.as_str()))
            .cloned()
            .collect();
        for session_id in &lost {
            tracing::info!(
                session_id = session_id.as_str(),
                owner,
                "postgres session persistence: lease lost (deleted or taken over)"
            );
        }
        Ok(lost)
    }

    async fn release(&self, session_id: &str, owner: &str) -> Result<(), PersistError> {
        if !storable(session_id) || !storable(owner) {
            return Ok(());
        }
        self.run("release", session_id, |client, _| async move {
            let stmt = client.prepare_cached(RELEASE_SQL).await?;
            client.execute(&stmt, &[&session_id, &owner]).await?;
            Ok(())
        })
        .await?;
        tracing::debug!(session_id, owner, "postgres session persistence: released");
        Ok(())
    }

    async fn delete(&self, session_id: &str) -> Result<(), PersistError> {
        if !storable(session_id) {
            return Ok(());
        }
        self.run("delete", session_id, |client, _| async move {
            let stmt = client.prepare_cached(DELETE_SQL).await?;
            client.execute(&stmt, &[&session_id]).await?;
            Ok(())
        })
        .await?;
        tracing::debug!(session_id, "postgres session persistence: deleted");
        Ok(())
    }
}
