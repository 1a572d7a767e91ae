//! [`PgAuditSink`]: audit events in the `agent_webkit_audit` table (schema migration 4), written
//! in the background from a bounded queue, with a retention prune.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_webkit_core::audit::{AuditEvent, AuditSink};
use deadpool_postgres::Pool;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;

use crate::{migrate_pool, PgStoreError};

/// Events queued at most; beyond it new events are dropped (and counted in the log).
pub const DEFAULT_AUDIT_QUEUE: usize = 4096;
/// Most events written in one statement.
const BATCH: usize = 256;
/// How often rows older than the retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How long a failing batch is retried before it is dropped (with an error in the log).
const RETRY_BUDGET: Duration = Duration::from_secs(30);

const INSERT_SQL: &str = "
INSERT INTO agent_webkit_audit (at, actor, session_id, action, correlation_id, detail, host_id)
SELECT to_timestamp(u.at_ms / 1000.0), u.actor, u.session_id, u.action, u.correlation_id,
       u.detail, $7
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[])
     AS u(at_ms, actor, session_id, action, correlation_id, detail)";

const PRUNE_SQL: &str =
    "DELETE FROM agent_webkit_audit WHERE at < now() - $1::bigint * interval '1 second'";

/// Settings of a [`PgAuditSink`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditOptions {
    /// Rows older than this are deleted (at start, then hourly); `None`: kept forever.
    pub retention: Option<Duration>,
    /// Events queued at most (default [`DEFAULT_AUDIT_QUEUE`]).
    pub queue: usize,
    /// Stored in each row's `host_id`.
    pub host_id: Option<String>,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            retention: Some(Duration::from_secs(90 * 24 * 3600)),
            queue: DEFAULT_AUDIT_QUEUE,
            host_id: None,
        }
    }
}

/// An [`AuditSink`] writing to PostgreSQL. `record` only queues (never blocks); a background
/// task writes what has queued up in one statement, retrying a failed batch for a while; when
/// the queue is full, events are dropped and the count logged. Dropping the sink ends the task
/// after it has written what was queued.
#[derive(Debug)]
pub struct PgAuditSink {
    queue: mpsc::Sender<AuditEvent>,
    dropped: Arc<AtomicU64>,
}

impl PgAuditSink {
    /// Migrates the schema on `pool` (a no-op when a store or persistence already did), then
    /// starts the writer and the retention prune. Call inside a Tokio runtime.
    pub async fn start(pool: Pool, options: AuditOptions) -> Result<Self, PgStoreError> {
        migrate_pool(&pool).await?;
        let (queue, rx) = mpsc::channel(options.queue.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(write_loop(pool.clone(), rx, options.host_id.clone()));
        if let Some(retention) = options.retention {
            let weak = queue.downgrade();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(PRUNE_EVERY);
                loop {
                    tick.tick().await;
                    if weak.upgrade().is_none() {
                        return;
                    }
                    prune(&pool, retention).await;
                }
            });
        }
        Ok(Self { queue, dropped })
    }
}

impl AuditSink for PgAuditSink {
    fn record(&self, event: &AuditEvent) {
        if self.queue.try_send(event.clone()).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n,
                    session_id = %event.session_id,
                    "postgres audit: queue full or writer gone; events dropped (they are still in the tracing log)"
                );
            }
        }
    }
}

async fn prune(pool: &Pool, retention: Duration) {
    let secs = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
    let outcome = async {
        let client = pool.get().await?;
        Ok::<_, PgStoreError>(client.execute(PRUNE_SQL, &[&secs]).await?)
    }
    .await;
    match outcome {
        Ok(n) => tracing::debug!(deleted = n, "postgres audit: retention prune"),
        Err(err) => tracing::warn!(error = %err, "postgres audit: retention prune failed"),
    }
}

async fn write_loop(pool: Pool, mut rx: mpsc::Receiver<AuditEvent>, host: Option<String>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            match insert(&pool, &batch, host.as_deref()).await {
                Ok(()) => break,
                Err(err) if started.elapsed() < RETRY_BUDGET => {
                    tracing::warn!(error = %err, count = batch.len(), "postgres audit: write failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(err) => {
                    tracing::error!(error = %err, count = batch.len(), "postgres audit: write failed past the retry budget; events dropped (they are still in the tracing log)");
                    break;
                }
            }
        }
        batch.clear();
    }
}

/// PostgreSQL text cannot hold NUL (a client may send one in an id): replaced, so one bad
/// event never costs its whole batch.
fn text(value: &str) -> Cow<'_, str> {
    if value.contains('\0') {
        Cow::Owned(value.replace('\0', "\u{fffd}"))
    } else {
        Cow::Borrowed(value)
    }
}

async fn insert(pool: &Pool, batch: &[AuditEvent], host: Option<&str>) -> Result<(), PgStoreError> {
    let at: Vec<i64> = batch.iter().map(|e| e.at_ms).collect();
    let actor: Vec<Option<Cow<'_, str>>> =
        batch.iter().map(|e| e.actor.as_deref().map(text)).collect();
    let session: Vec<Cow<'_, str>> = batch.iter().map(|e| text(&e.session_id)).collect();
    let action: Vec<&str> = batch.iter().map(|e| e.action.as_str()).collect();
    let correlation: Vec<Option<Cow<'_, str>>> = batch
        .iter()
        .map(|e| e.correlation_id.as_deref().map(text))
        .collect();
    let detail: Vec<Option<&Value>> = batch.iter().map(|e| e.detail.as_ref()).collect();
    let client = pool.get().await?;
    let stmt = client.prepare_cached(INSERT_SQL).await?;
    let params: [&(dyn ToSql + Sync); 7] =
        [&at, &actor, &session, &action, &correlation, &detail, &host];
    client.execute(&stmt, &params).await?;
    Ok(())
}
