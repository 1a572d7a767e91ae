//! A PostgreSQL [`SessionStore`]: transcripts, listings and session summaries that any host
//! can read, so any host can resume any session.
//!
//! ```no_run
//! # async fn demo() -> Result<(), agent_webkit_postgres::PgStoreError> {
//! use agent_webkit_postgres::{PgSessionStore, PoolOptions};
//! let store = PgSessionStore::connect(
//!     "postgres://agent:secret@db.internal/agent_webkit",
//!     PoolOptions { min_size: 1, max_size: 10 },
//! )
//! .await?;
//! # let _ = store; Ok(()) }
//! ```
//!
//! The schema is created or migrated on connect (see the crate README for the tables and the
//! guarantees). Every optional method is implemented ([`StoreCapabilities::ALL`]).
//!
//! [`PgSessionPersistence`] is the core's `SessionPersistence` for cross-host failover
//! (session records, bounded event logs, leases on the database clock); build it with
//! [`PgSessionPersistence::connect`] or share a store's pool with
//! [`PgSessionStore::persistence`].
//!
//! - `append` is one statement for a subagent key (one round trip) and one transaction of two
//!   pipelined round trips for a main key (entries + the summary fold, under the transcript
//!   row's lock). It returns only after the commit, so an acknowledged append survives a crash.
//! - A connection the server dropped is replaced: a call that fails because its connection is
//!   gone drops the pool's idle connections and is retried once on a fresh one, and the pool
//!   never hands out a connection it knows to be closed.

mod audit;
mod persistence;
mod schema;

use std::time::Duration;

use agent_webkit_core::store::{
    fold_session_summary, SessionKey, SessionListing, SessionStore, SessionSummary,
    StoreCapabilities, StoreError,
};
use async_trait::async_trait;
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use serde_json::Value;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

pub use audit::{AuditOptions, PgAuditSink, DEFAULT_AUDIT_QUEUE};
pub use deadpool_postgres;
pub use persistence::{PgSessionPersistence, DEFAULT_MAX_EVENTS};
pub use schema::SCHEMA_VERSION;

/// Connection pool sizing for [`PgSessionStore::connect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// Connections opened (and checked) at connect time; idle ones stay pooled.
    pub min_size: usize,
    /// Most connections open at once.
    pub max_size: usize,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            min_size: 1,
            max_size: 10,
        }
    }
}

/// What can go wrong talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum PgStoreError {
    /// The DSN or pool settings are unusable.
    #[error("invalid postgres configuration: {0}")]
    Config(String),
    /// No connection could be had from the pool.
    #[error("postgres pool: {}", describe_pool(.0))]
    Pool(#[from] PoolError),
    /// A statement failed.
    #[error("postgres: {}", describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// A schema migration failed.
    #[error("postgres schema migration {version} failed: {}", describe(.source))]
    Migration {
        /// The migration's version.
        version: i32,
        /// Why.
        source: tokio_postgres::Error,
    },
    /// The database holds something this store did not write.
    #[error("postgres session store: unexpected data: {0}")]
    Corrupt(String),
    /// The key cannot be stored (PostgreSQL text cannot hold NUL; `subpath` must not be empty).
    #[error("invalid session key: {0}")]
    InvalidKey(String),
    /// The operation did not finish within the store's timeout.
    #[error("postgres session store timed out after {0:?}")]
    Timeout(Duration),
}

impl PgStoreError {
    /// Whether the connection was lost (the operation may be retried on a fresh one).
    pub fn is_connection_lost(&self) -> bool {
        match self {
            Self::Postgres(e) => connection_lost(e),
            _ => false,
        }
    }
}

impl From<PgStoreError> for StoreError {
    fn from(err: PgStoreError) -> Self {
        match err {
            PgStoreError::Timeout(_) | PgStoreError::Pool(PoolError::Timeout(_)) => {
                StoreError::Timeout
            }
            PgStoreError::InvalidKey(reason) => StoreError::InvalidKey(reason),
            other => StoreError::Backend(other.to_string()),
        }
    }
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            text
        }
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

fn describe_pool(e: &PoolError) -> String {
    match e {
        PoolError::Backend(inner) => describe(inner),
        other => other.to_string(),
    }
}

fn connection_lost(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        return code.code().starts_with("08")
            || [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
            ]
            .contains(code);
    }
    std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

pub(crate) const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds a pool for `dsn` and opens `min_size` connections (which checks the DSN).
pub(crate) async fn connect_pool(dsn: &str, options: PoolOptions) -> Result<Pool, PgStoreError> {
    let mut config: tokio_postgres::Config = dsn
        .parse()
        .map_err(|e: tokio_postgres::Error| PgStoreError::Config(describe(&e)))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    if config.get_application_name().is_none() {
        config.application_name("agent-webkit");
    }
    if options.max_size == 0 {
        return Err(PgStoreError::Config("max_size must be at least 1".into()));
    }
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(options.max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(DEFAULT_OP_TIMEOUT))
        .create_timeout(Some(Duration::from_secs(15)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| PgStoreError::Config(e.to_string()))?;
    // Open `min_size` connections at once (this also checks the DSN); they stay pooled.
    let warm = options.min_size.clamp(1, options.max_size);
    let opened = futures_util::future::try_join_all((0..warm).map(|_| pool.get())).await?;
    drop(opened);
    Ok(pool)
}

/// Creates or migrates the schema on one of `pool`'s connections.
pub(crate) async fn migrate_pool(pool: &Pool) -> Result<(), PgStoreError> {
    let mut client = pool.get().await?;
    let pg: &mut tokio_postgres::Client = &mut client;
    schema::migrate(pg).await
}

/// A [`SessionStore`] in PostgreSQL. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct PgSessionStore {
    pool: Pool,
    op_timeout: Duration,
}

impl std::fmt::Debug for PgSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PgSessionStore")
            .field("pool_size", &status.size)
            .field("pool_max_size", &status.max_size)
            .field("op_timeout", &self.op_timeout)
            .finish()
    }
}

impl PgSessionStore {
    /// Connects to `dsn` (a `postgres://` URL or `key=value` string), opens `min_size`
    /// connections and creates or migrates the schema (in the connection's `search_path`).
    pub async fn connect(dsn: &str, options: PoolOptions) -> Result<Self, PgStoreError> {
        Self::from_pool(connect_pool(dsn, options).await?).await
    }

    /// Uses an existing pool (its connections' `search_path` picks the schema); creates or
    /// migrates the schema first.
    pub async fn from_pool(pool: Pool) -> Result<Self, PgStoreError> {
        migrate_pool(&pool).await?;
        Ok(Self {
            pool,
            op_timeout: DEFAULT_OP_TIMEOUT,
        })
    }

    /// Bounds every store call (including its one reconnect retry); past it the call fails
    /// with [`StoreError::Timeout`] and the write may or may not have landed. Default 30 s.
    pub fn with_op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// The underlying pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A [`PgSessionPersistence`] sharing this store's pool (the schema is already migrated).
    pub fn persistence(&self) -> PgSessionPersistence {
        PgSessionPersistence::with_migrated_pool(self.pool.clone())
    }

    /// Runs `op` on a pooled connection; retries once on a fresh connection when the first
    /// one turns out to be dead; bounds everything by the op timeout.
    async fn run<T, F, Fut>(
        &self,
        what: &'static str,
        key: (&str, &str),
        op: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(Object) -> Fut,
        Fut: std::future::Future<Output = Result<T, PgStoreError>>,
    {
        let on_retry = |err: &PgStoreError| {
            tracing::info!(
                project_key = key.0,
                session_id = key.1,
                error = %err,
                "postgres session store: {what}: connection lost, retrying on a fresh one"
            );
        };
        run_on_pool(&self.pool, self.op_timeout, on_retry, |client, _| {
            op(client)
        })
        .await
        .map_err(|err| {
            tracing::warn!(
                project_key = key.0,
                session_id = key.1,
                error = %err,
                "postgres session store: {what} failed"
            );
            StoreError::from(err)
        })
    }
}

/// Runs `op(connection, attempt)` on a pooled connection; when the first attempt fails
/// because its connection is dead, drops the pool's idle connections, calls `on_retry` and
/// retries once (`attempt` 2) on a fresh one; bounds everything by `op_timeout`.
pub(crate) async fn run_on_pool<T, F, Fut>(
    pool: &Pool,
    op_timeout: Duration,
    on_retry: impl Fn(&PgStoreError),
    op: F,
) -> Result<T, PgStoreError>
where
    F: Fn(Object, u32) -> Fut,
    Fut: std::future::Future<Output = Result<T, PgStoreError>>,
{
    let attempts = async {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let client = pool.get().await?;
            match op(client, attempt).await {
                Err(err) if attempt == 1 && err.is_connection_lost() => {
                    // The server went away (restart, failover, terminated backends): the idle
                    // connections opened before are as dead as this one, even if their
                    // driver tasks have not noticed yet.
                    drop(pool.retain(|_, _| false));
                    on_retry(&err);
                }
                other => return other,
            }
        }
    };
    match tokio::time::timeout(op_timeout, attempts).await {
        Ok(result) => result,
        Err(_) => Err(PgStoreError::Timeout(op_timeout)),
    }
}

fn check_key(key: &SessionKey) -> Result<&str, PgStoreError> {
    let has_nul = key.project_key.contains('\0')
        || key.session_id.contains('\0')
        || key.subpath.as_deref().is_some_and(|s| s.contains('\0'));
    if has_nul {
        return Err(PgStoreError::InvalidKey("keys must not contain NUL".into()));
    }
    match key.subpath.as_deref() {
        Some("") => Err(PgStoreError::InvalidKey("subpath must not be empty".into())),
        Some(sub) => Ok(sub),
        None => Ok(""),
    }
}

/// Upserts the transcript row (its lock serializes appends to one key until commit), reserves
/// `$4` sequence numbers, inserts the entries in order skipping known uuids, and returns the
/// row id, the stamp, the previous summary and the ordinals (1-based) actually inserted.
const APPEND_SQL: &str = "
WITH t AS (
    INSERT INTO agent_webkit_transcripts AS t (project_key, session_id, subpath, next_seq, mtime_ms)
    VALUES ($1, $2, $3, $4, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)
    ON CONFLICT (project_key, session_id, subpath) DO UPDATE
        SET next_seq = t.next_seq + EXCLUDED.next_seq,
            mtime_ms = GREATEST(EXCLUDED.mtime_ms, t.mtime_ms + 1)
    RETURNING t.id, t.next_seq - $4 AS base, t.mtime_ms, t.summary
), ins AS (
    INSERT INTO agent_webkit_entries (transcript_id, seq, uuid, entry, raw)
    SELECT t.id, t.base + u.ord, u.uuid, u.entry, u.raw
    FROM t, unnest($5::text[], $6::jsonb[], $7::json[]) WITH ORDINALITY AS u(uuid, entry, raw, ord)
    ORDER BY u.ord
    ON CONFLICT (transcript_id, uuid) WHERE uuid IS NOT NULL DO NOTHING
    RETURNING seq
)
SELECT t.id, t.mtime_ms, t.summary,
       ARRAY(SELECT ins.seq - t.base FROM ins ORDER BY ins.seq) AS inserted
FROM t";

const SET_SUMMARY_SQL: &str = "UPDATE agent_webkit_transcripts SET summary = $2 WHERE id = $1";

const LOAD_SQL: &str = "
SELECT e.entry, e.raw
FROM agent_webkit_transcripts t
LEFT JOIN agent_webkit_entries e ON e.transcript_id = t.id
WHERE t.project_key = $1 AND t.session_id = $2 AND t.subpath = $3
ORDER BY e.seq";

/// A batch ready for storage: the entries, their idempotency keys, and for each whether it
/// goes to `raw` (json, kept as text) because jsonb cannot hold it (a `\u0000` in a string).
struct Batch {
    entries: Vec<Value>,
    uuids: Vec<Option<String>>,
    raw: Vec<bool>,
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Drops repeats of a uuid within the batch (the first wins, as in the reference store).
fn prepare_batch(input: Vec<Value>) -> Batch {
    let mut seen = std::collections::HashSet::new();
    let mut batch = Batch {
        entries: Vec::with_capacity(input.len()),
        uuids: Vec::with_capacity(input.len()),
        raw: Vec::with_capacity(input.len()),
    };
    for entry in input {
        let uuid = entry
            .get("uuid")
            .and_then(Value::as_str)
            .map(|u| u.replace('\0', "\\u0000"));
        if let Some(u) = &uuid {
            if !seen.insert(u.clone()) {
                continue;
            }
        }
        batch.raw.push(has_nul(&entry));
        batch.uuids.push(uuid);
        batch.entries.push(entry);
    }
    batch
}

/// A connection in the middle of a transaction: unless [`Tx::finish`] is reached, dropping it
/// (an error, a timeout, a cancelled future) discards the connection, which rolls back.
struct Tx(Option<Object>);

impl Tx {
    fn client(&self) -> Result<&Object, PgStoreError> {
        self.0
            .as_ref()
            .ok_or_else(|| PgStoreError::Corrupt("transaction already finished".into()))
    }
    fn finish(mut self) -> Option<Object> {
        self.0.take()
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(Object::take(client));
        }
    }
}

async fn append_on(
    client: Object,
    key: &SessionKey,
    subpath: &str,
    batch: &Batch,
) -> Result<(), PgStoreError> {
    let append = client.prepare_cached(APPEND_SQL).await?;
    let n = i64::try_from(batch.entries.len())
        .map_err(|_| PgStoreError::Config("batch too large".into()))?;
    let uuids: Vec<Option<&str>> = batch.uuids.iter().map(Option::as_deref).collect();
    let pick = |want_raw: bool| -> Vec<Option<&Value>> {
        batch
            .entries
            .iter()
            .zip(&batch.raw)
            .map(|(entry, raw)| (*raw == want_raw).then_some(entry))
            .collect()
    };
    let (bodies, raws) = (pick(false), pick(true));
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
        &key.project_key,
        &key.session_id,
        &subpath,
        &n,
        &uuids,
        &bodies,
        &raws,
    ];
    if !key.is_main() {
        // One statement, autocommit: one round trip.
        client.query_one(&append, &params).await?;
        return Ok(());
    }
    let set_summary = client.prepare_cached(SET_SUMMARY_SQL).await?;
    let tx = Tx(Some(client));
    let c = tx.client()?;
    let (_, row) = tokio::try_join!(c.batch_execute("BEGIN"), c.query_one(&append, &params))?;
    let id: i64 = row.try_get(0)?;
    let mtime: i64 = row.try_get(1)?;
    let prev: Option<Value> = row.try_get(2)?;
    let inserted: Vec<i64> = row.try_get(3)?;
    let prev = match prev {
        None => None,
        Some(Value::Object(data)) => Some(SessionSummary {
            session_id: key.session_id.clone(),
            mtime,
            data,
        }),
        Some(other) => {
            return Err(PgStoreError::Corrupt(format!(
                "summary of {}/{} is not an object: {other}",
                key.project_key, key.session_id
            )))
        }
    };
    let summary = if inserted.len() == batch.entries.len() {
        fold_session_summary(prev.as_ref(), key, &batch.entries)
    } else {
        // Some were already stored (a retried batch): fold only what this call added.
        let added: Vec<Value> = inserted
            .iter()
            .filter_map(|ord| usize::try_from(*ord - 1).ok())
            .filter_map(|i| batch.entries.get(i).cloned())
            .collect();
        fold_session_summary(prev.as_ref(), key, &added)
    };
    let data = Value::Object(summary.data);
    let summary_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&id, &data];
    tokio::try_join!(
        c.execute(&set_summary, &summary_params),
        c.batch_execute("COMMIT")
    )?;
    // Committed: the connection is clean again and goes back to the pool.
    drop(tx.finish());
    Ok(())
}

#[async_trait]
impl SessionStore for PgSessionStore {
    async fn append(&self, key: &SessionKey, entries: Vec<Value>) -> Result<(), StoreError> {
        let ids = (key.project_key.as_str(), key.session_id.as_str());
        let subpath = check_key(key).map_err(StoreError::from)?;
        let batch = prepare_batch(entries);
        self.run("append", ids, |client| {
            append_on(client, key, subpath, &batch)
        })
        .await
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Vec<Value>>, StoreError> {
        let ids = (key.project_key.as_str(), key.session_id.as_str());
        let subpath = check_key(key).map_err(StoreError::from)?;
        self.run("load", ids, |client| async move {
            let stmt = client.prepare_cached(LOAD_SQL).await?;
            let rows = client
                .query(&stmt, &[&key.project_key, &key.session_id, &subpath])
                .await?;
            if rows.is_empty() {
                return Ok(None);
            }
            let mut entries = Vec::with_capacity(rows.len());
            for row in rows {
                let entry: Option<Value> = row.try_get(0)?;
                let raw: Option<Value> = row.try_get(1)?;
                if let Some(value) = entry.or(raw) {
                    entries.push(value);
                }
            }
            Ok(Some(entries))
        })
        .await
    }

    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities::ALL
    }

    async fn list_sessions(&self, project_key: &str) -> Result<Vec<SessionListing>, StoreError> {
        check_key(&SessionKey::main(project_key, "")).map_err(StoreError::from)?;
        self.run("list_sessions", (project_key, ""), |client| async move {
            let stmt = client
                .prepare_cached(
                    "SELECT session_id, mtime_ms FROM agent_webkit_transcripts
                     WHERE project_key = $1 AND subpath = ''",
                )
                .await?;
            let rows = client.query(&stmt, &[&project_key]).await?;
            rows.iter()
                .map(|row| {
                    Ok(SessionListing {
                        session_id: row.try_get(0)?,
                        mtime: row.try_get(1)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn list_session_summaries(
        &self,
        project_key: &str,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        check_key(&SessionKey::main(project_key, "")).map_err(StoreError::from)?;
        self.run(
            "list_session_summaries",
            (project_key, ""),
            |client| async move {
                let stmt = client
                    .prepare_cached(
                        "SELECT session_id, mtime_ms, summary FROM agent_webkit_transcripts
                         WHERE project_key = $1 AND subpath = '' AND summary IS NOT NULL",
                    )
                    .await?;
                let rows = client.query(&stmt, &[&project_key]).await?;
                rows.iter()
                    .map(|row| {
                        let session_id: String = row.try_get(0)?;
                        let data = match row.try_get::<_, Value>(2)? {
                            Value::Object(data) => data,
                            _ => {
                                return Err(PgStoreError::Corrupt(format!(
                                    "summary of {project_key}/{session_id} is not an object"
                                )))
                            }
                        };
                        Ok(SessionSummary {
                            session_id,
                            mtime: row.try_get(1)?,
                            data,
                        })
                    })
                    .collect()
            },
        )
        .await
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), StoreError> {
        let ids = (key.project_key.as_str(), key.session_id.as_str());
        let subpath = check_key(key).map_err(StoreError::from)?;
        self.run("delete", ids, |client| async move {
            // A main key (subpath '') takes every row of the session; entries cascade.
            let stmt = client
                .prepare_cached(
                    "DELETE FROM agent_webkit_transcripts
                     WHERE project_key = $1 AND session_id = $2 AND ($3 = '' OR subpath = $3)",
                )
                .await?;
            client
                .execute(&stmt, &[&key.project_key, &key.session_id, &subpath])
                .await?;
            Ok(())
        })
        .await
    }

    async fn list_subkeys(&self, key: &SessionKey) -> Result<Vec<String>, StoreError> {
        let ids = (key.project_key.as_str(), key.session_id.as_str());
        check_key(key).map_err(StoreError::from)?;
        self.run("list_subkeys", ids, |client| async move {
            let stmt = client
                .prepare_cached(
                    "SELECT subpath FROM agent_webkit_transcripts
                     WHERE project_key = $1 AND session_id = $2 AND subpath <> ''
                     ORDER BY subpath COLLATE \"C\"",
                )
                .await?;
            let rows = client
                .query(&stmt, &[&key.project_key, &key.session_id])
                .await?;
            rows.iter()
                .map(|row| row.try_get(0).map_err(PgStoreError::from))
                .collect()
        })
        .await
    }
}
