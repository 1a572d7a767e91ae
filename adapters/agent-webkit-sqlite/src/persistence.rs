//! [`SqliteSessionPersistence`]: the core's `SessionPersistence` in the SQLite file — session
//! records, bounded event logs and leases on this host's wall clock.

use std::sync::Arc;
use std::time::Duration;

use agent_webkit_core::event_log::StoredEvent;
use agent_webkit_core::persist::{
    Lease, ListQuery, ListedSession, PersistError, SessionActivity, SessionPersistence,
    SessionRecord,
};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use crate::db::Db;
use crate::{now_ms, SqliteError};

/// Events kept per session by default (the newest ones).
pub const DEFAULT_MAX_EVENTS: usize = 10_000;

/// [`SessionPersistence`] in an SQLite file (see the crate README). Build it with
/// [`SqliteSessionStore::persistence`](crate::SqliteSessionStore::persistence); cheap to clone.
///
/// Leases are on this host's wall clock: the file is used by one server at a time (see
/// [`DataDir`](crate::DataDir)), so there is no other clock to agree with.
#[derive(Clone, Debug)]
pub struct SqliteSessionPersistence {
    db: Arc<Db>,
    max_events: i64,
}

fn lease_end(lease: Duration) -> i64 {
    now_ms().saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
}

fn seq(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl SqliteSessionPersistence {
    pub(crate) fn new(db: Arc<Db>) -> Self {
        Self {
            db,
            max_events: i64::try_from(DEFAULT_MAX_EVENTS).unwrap_or(i64::MAX),
        }
    }

    /// Keeps the newest `max_events` events per session (at least 1). Must be at least the
    /// server's replay ring size.
    pub fn with_max_events(mut self, max_events: usize) -> Self {
        self.max_events = i64::try_from(max_events.max(1)).unwrap_or(i64::MAX);
        self
    }

    async fn write<T, F>(&self, what: &str, id: &str, op: F) -> Result<T, PersistError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, SqliteError> + Send + 'static,
    {
        self.db.write(op).await.map_err(|err| fail(what, id, &err))
    }

    async fn read<T, F>(&self, what: &str, id: &str, op: F) -> Result<T, PersistError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, SqliteError> + Send + 'static,
    {
        self.db.read(op).await.map_err(|err| fail(what, id, &err))
    }
}

fn fail(what: &str, id: &str, err: &SqliteError) -> PersistError {
    tracing::warn!(session_id = %id, error = %err, "sqlite session persistence: {what} failed");
    PersistError::Backend(format!("{what} of session \"{id}\": {err}"))
}

/// The columns [`listed`] reads, in its order.
const LISTED_COLUMNS: &str =
    "record, activity, last_activity_ms, ended, last_seq, owner, lease_expires_at_ms";

/// A row of [`LISTED_COLUMNS`] as the core's [`ListedSession`].
fn listed(row: &rusqlite::Row<'_>) -> Result<ListedSession, SqliteError> {
    let record: String = row.get(0)?;
    let record: SessionRecord = serde_json::from_str(&record)
        .map_err(|e| SqliteError::Corrupt(format!("session record: {e}")))?;
    let mut activity = match row.get::<_, Option<String>>(1)? {
        Some(text) => serde_json::from_str(&text).map_err(|e| {
            SqliteError::Corrupt(format!(
                "activity of session \"{}\": {e}",
                record.session_id
            ))
        })?,
        None => SessionActivity::created(&record),
    };
    activity.last_activity_ms = row.get(2)?;
    activity.ended = row.get::<_, i64>(3)? != 0;
    let last_seq = u64::try_from(row.get::<_, i64>(4)?).unwrap_or(0);
    let holder: Option<String> = row.get(5)?;
    let expires_at_ms: i64 = row.get(6)?;
    Ok(ListedSession {
        record,
        activity,
        last_seq,
        lease_holder: holder.filter(|_| expires_at_ms > now_ms()),
    })
}

/// Who holds the lease now: `Gone`, `Acquired` (it is `owner`'s) or `HeldBy`.
fn holder(conn: &Connection, id: &str, owner: &str) -> Result<Lease, SqliteError> {
    let row: Option<(Option<String>, i64)> = conn
        .prepare_cached(
            "SELECT owner, lease_expires_at_ms FROM agent_webkit_sessions WHERE session_id = ?1",
        )?
        .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match row {
        None => Lease::Gone,
        Some((Some(holder), expires_at_ms)) if holder != owner && expires_at_ms > now_ms() => {
            Lease::HeldBy {
                owner: holder,
                expires_at_ms,
            }
        }
        Some(_) => Lease::Acquired,
    })
}

#[async_trait]
impl SessionPersistence for SqliteSessionPersistence {
    async fn create(
        &self,
        record: &SessionRecord,
        owner: &str,
        lease: Duration,
    ) -> Result<(), PersistError> {
        let id = record.session_id.clone();
        let text = serde_json::to_string(record)
            .map_err(|e| PersistError::Backend(format!("record of session \"{id}\": {e}")))?;
        let (owner, created) = (owner.to_owned(), record.created_at_ms);
        let principal = record.owner.clone();
        let key = id.clone();
        let inserted = self
            .write("create", &id, move |conn| {
                Ok(conn
                    .prepare_cached(
                        "INSERT INTO agent_webkit_sessions
                             (session_id, record, owner, lease_expires_at_ms, created_at_ms,
                              principal, last_activity_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5) ON CONFLICT DO NOTHING",
                    )?
                    .execute(params![
                        key,
                        text,
                        owner,
                        lease_end(lease),
                        created,
                        principal
                    ])?)
            })
            .await?;
        if inserted == 0 {
            return Err(PersistError::Exists(id));
        }
        Ok(())
    }

    async fn append_batch(
        &self,
        session_id: &str,
        events: &[StoredEvent],
        activity: Option<&SessionActivity>,
    ) -> Result<(), PersistError> {
        let Some(newest_in_batch) = events.iter().map(|e| seq(e.seq)).max() else {
            return Ok(());
        };
        let id = session_id.to_owned();
        let events = events.to_vec();
        let activity = match activity {
            Some(a) => Some((
                a.last_activity_ms,
                a.ended,
                serde_json::to_string(a).map_err(|e| {
                    PersistError::Backend(format!("activity of session \"{session_id}\": {e}"))
                })?,
            )),
            None => None,
        };
        let max_events = self.max_events;
        self.write("append_events", session_id, move |conn| {
            let exists = conn
                .prepare_cached("SELECT 1 FROM agent_webkit_sessions WHERE session_id = ?1")?
                .query_row(params![id], |_| Ok(()))
                .optional()?
                .is_some();
            if !exists {
                // Unknown or deleted: a no-op, never a resurrection.
                return Ok(());
            }
            let newest_stored: Option<i64> = conn
                .prepare_cached(
                    "SELECT max(seq) FROM agent_webkit_session_events WHERE session_id = ?1",
                )?
                .query_row(params![id], |r| r.get(0))?;
            let cutoff = newest_stored
                .unwrap_or(0)
                .max(newest_in_batch)
                .saturating_sub(max_events);
            let mut insert = conn.prepare_cached(
                "INSERT INTO agent_webkit_session_events (session_id, seq, event, data)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            )?;
            for event in &events {
                let n = seq(event.seq);
                if n > cutoff {
                    insert.execute(params![id, n, event.event, event.data])?;
                }
            }
            if cutoff > 0 {
                conn.prepare_cached(
                    "DELETE FROM agent_webkit_session_events WHERE session_id = ?1 AND seq <= ?2",
                )?
                .execute(params![id, cutoff])?;
            }
            conn.prepare_cached(
                "UPDATE agent_webkit_sessions SET last_seq = max(last_seq, ?2) WHERE session_id = ?1",
            )?
            .execute(params![id, newest_in_batch])?;
            if let Some((last_activity_ms, ended, json)) = activity {
                conn.prepare_cached(
                    "UPDATE agent_webkit_sessions
                     SET last_activity_ms = ?2, ended = ?3, activity = ?4 WHERE session_id = ?1",
                )?
                .execute(params![id, last_activity_ms, ended, json])?;
            }
            Ok(())
        })
        .await
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<ListedSession>, PersistError> {
        let owner = query.owner.clone();
        let (before_ms, before_id) = match &query.before {
            Some((ms, id)) => (Some(*ms), Some(id.clone())),
            None => (None, None),
        };
        let (ended_since, limit) = (
            query.ended_since_ms,
            i64::try_from(query.limit).unwrap_or(i64::MAX),
        );
        self.read("list", "", move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {LISTED_COLUMNS} FROM agent_webkit_sessions
                 WHERE (?1 IS NULL OR principal = ?1)
                   AND (ended = 0 OR last_activity_ms >= ?2)
                   AND (?3 IS NULL OR (last_activity_ms, session_id) < (?3, ?4))
                 ORDER BY last_activity_ms DESC, session_id DESC
                 LIMIT ?5"
            ))?;
            let mut rows = stmt.query(params![owner, ended_since, before_ms, before_id, limit])?;
            let mut page = Vec::new();
            while let Some(row) = rows.next()? {
                page.push(listed(row)?);
            }
            Ok(page)
        })
        .await
    }

    async fn get(&self, session_id: &str) -> Result<Option<ListedSession>, PersistError> {
        let id = session_id.to_owned();
        self.read("get", session_id, move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {LISTED_COLUMNS} FROM agent_webkit_sessions WHERE session_id = ?1"
            ))?;
            let mut rows = stmt.query(params![id])?;
            match rows.next()? {
                Some(row) => Ok(Some(listed(row)?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn load(
        &self,
        session_id: &str,
        tail: usize,
    ) -> Result<Option<(SessionRecord, Vec<StoredEvent>)>, PersistError> {
        let id = session_id.to_owned();
        let tail = i64::try_from(tail).unwrap_or(i64::MAX);
        self.read("load", session_id, move |conn| {
            let record: Option<String> = conn
                .prepare_cached("SELECT record FROM agent_webkit_sessions WHERE session_id = ?1")?
                .query_row(params![id], |r| r.get(0))
                .optional()?;
            let Some(record) = record else {
                return Ok(None);
            };
            let record: SessionRecord = serde_json::from_str(&record)
                .map_err(|e| SqliteError::Corrupt(format!("record of session \"{id}\": {e}")))?;
            let mut stmt = conn.prepare_cached(
                "SELECT seq, event, data FROM agent_webkit_session_events
                 WHERE session_id = ?1 ORDER BY seq DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![id, tail], |r| {
                Ok(StoredEvent {
                    seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                    event: r.get(1)?,
                    data: r.get(2)?,
                })
            })?;
            let mut events: Vec<StoredEvent> = rows.collect::<Result<_, _>>()?;
            events.reverse();
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
        let id = session_id.to_owned();
        let (after, limit) = (seq(after_seq), i64::try_from(limit).unwrap_or(i64::MAX));
        self.read("load_events", session_id, move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, event, data FROM agent_webkit_session_events
                 WHERE session_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![id, after, limit], |r| {
                Ok(StoredEvent {
                    seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                    event: r.get(1)?,
                    data: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn acquire(
        &self,
        session_id: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Lease, PersistError> {
        let (id, owner) = (session_id.to_owned(), owner.to_owned());
        self.write("acquire", session_id, move |conn| {
            // The writer is the only writer: checking then updating is atomic.
            let lease_now = holder(conn, &id, &owner)?;
            if lease_now == Lease::Acquired {
                conn.prepare_cached(
                    "UPDATE agent_webkit_sessions SET owner = ?2, lease_expires_at_ms = ?3
                     WHERE session_id = ?1",
                )?
                .execute(params![id, owner, lease_end(lease)])?;
            }
            Ok(lease_now)
        })
        .await
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
        let (owner, ids) = (owner.to_owned(), session_ids.to_vec());
        let first = ids[0].clone();
        self.write("renew", &first, move |conn| {
            let mut renew = conn.prepare_cached(
                "UPDATE agent_webkit_sessions SET lease_expires_at_ms = ?3
                 WHERE session_id = ?1 AND owner = ?2",
            )?;
            let until = lease_end(lease);
            let mut lost = Vec::new();
            for id in ids {
                if renew.execute(params![id, owner, until])? == 0 {
                    lost.push(id);
                }
            }
            Ok(lost)
        })
        .await
    }

    async fn release(&self, session_id: &str, owner: &str) -> Result<(), PersistError> {
        let (id, owner) = (session_id.to_owned(), owner.to_owned());
        self.write("release", session_id, move |conn| {
            conn.prepare_cached(
                "UPDATE agent_webkit_sessions SET owner = NULL, lease_expires_at_ms = 0
                 WHERE session_id = ?1 AND owner = ?2",
            )?
            .execute(params![id, owner])?;
            Ok(())
        })
        .await
    }

    async fn delete(&self, session_id: &str) -> Result<(), PersistError> {
        let id = session_id.to_owned();
        self.write("delete", session_id, move |conn| {
            conn.prepare_cached("DELETE FROM agent_webkit_sessions WHERE session_id = ?1")?
                .execute(params![id])?;
            Ok(())
        })
        .await
    }
}
