//! An embedded SQLite [`SessionStore`] and [`SessionPersistence`] in one database file, so a
//! single server keeps its sessions, transcripts and event logs across its own restarts.
//!
//! ```no_run
//! # async fn demo() -> Result<(), agent_webkit_sqlite::SqliteError> {
//! use agent_webkit_sqlite::SqliteSessionStore;
//! let store = SqliteSessionStore::open("/var/lib/agent-webkit/sessions.db")?;
//! let persistence = store.persistence(); // same file, same connection threads
//! # let _ = persistence; Ok(()) }
//! ```
//!
//! - The file is created `0600` (its directory `0700` when created here), in WAL mode, and its
//!   schema is created or migrated on open (see the crate README for the tables and the
//!   guarantees).
//! - Blocking SQLite work never runs on the async runtime: one writer thread commits whatever
//!   calls have queued up as **one transaction** (each call in its own savepoint, so one failed
//!   call does not undo the others), and reader threads serve loads from WAL snapshots. A call
//!   returns after its transaction committed.
//! - [`DataDir`] is what the server uses: a directory holding the database, an exclusive lock
//!   (one server per directory) and this host's id (kept across restarts, so a restarted
//!   server takes its own sessions' leases at once).
//!
//! [`SessionPersistence`]: agent_webkit_core::persist::SessionPersistence

mod data_dir;
mod db;
mod persistence;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use agent_webkit_core::store::{
    fold_session_summary, SessionKey, SessionListing, SessionStore, SessionSummary,
    StoreCapabilities, StoreError,
};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

pub use data_dir::{DataDir, DataDirError, DATABASE_FILE, HOST_ID_FILE, LOCK_FILE};
pub use db::{Durability, OpenOptions, DEFAULT_READER_MMAP, DEFAULT_WAL_LIMIT, WAL_HARD_FACTOR};
pub use persistence::{SqliteSessionPersistence, DEFAULT_MAX_EVENTS};
pub use schema::SCHEMA_VERSION;

/// What can go wrong with the SQLite database.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SqliteError {
    /// A file or directory could not be created or opened.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// SQLite failed on the database at `path`.
    #[error("{}: {source}", path.display())]
    AtPath {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Arc<rusqlite::Error>,
    },
    /// A statement failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] Arc<rusqlite::Error>),
    /// A schema migration failed.
    #[error("sqlite schema migration {version} failed: {source}")]
    Migration {
        /// The migration's version.
        version: i64,
        /// Why.
        #[source]
        source: Arc<rusqlite::Error>,
    },
    /// The database holds something this crate did not write.
    #[error("sqlite session store: unexpected data: {0}")]
    Corrupt(String),
    /// A checkpoint could not empty the write-ahead log: readers kept using it.
    #[error("sqlite: the WAL could not be truncated: readers kept using it")]
    WalBusy,
    /// The connection threads are gone (the process is shutting down).
    #[error("sqlite session store closed: {0}")]
    Closed(String),
}

impl From<rusqlite::Error> for SqliteError {
    fn from(err: rusqlite::Error) -> Self {
        Self::Sqlite(Arc::new(err))
    }
}

impl SqliteError {
    /// Names the database file in the error (for startup errors).
    pub(crate) fn at(self, path: &Path) -> Self {
        match self {
            Self::Sqlite(source) | Self::Migration { source, .. } => Self::AtPath {
                path: path.to_owned(),
                source,
            },
            other => other,
        }
    }

    /// Whether the disk (or the file system's quota) is full.
    pub fn is_disk_full(&self) -> bool {
        let sqlite = match self {
            Self::Sqlite(e)
            | Self::AtPath { source: e, .. }
            | Self::Migration { source: e, .. } => e,
            Self::Io { source, .. } => {
                return source.raw_os_error() == Some(28); // ENOSPC
            }
            _ => return false,
        };
        sqlite.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
    }
}

impl From<SqliteError> for StoreError {
    fn from(err: SqliteError) -> Self {
        StoreError::Backend(err.to_string())
    }
}

/// Milliseconds since the epoch (wall clock).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Creates `dir` (and missing parents) `0700`; an existing directory is left as it is.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates `file` `0600` if it does not exist (SQLite gives its `-wal` and `-shm` files the
/// database file's permissions).
pub(crate) fn private_file(file: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(file).map(drop)
}

/// A [`SessionStore`] in an SQLite file. Cheap to clone (the connection threads are shared).
#[derive(Clone, Debug)]
pub struct SqliteSessionStore {
    db: Arc<db::Db>,
}

impl SqliteSessionStore {
    /// Opens (creating it `0600` if needed) and migrates the database at `path`, with the
    /// default [`OpenOptions`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SqliteError> {
        Self::open_with(path, OpenOptions::default())
    }

    /// [`open`](Self::open) with explicit options.
    pub fn open_with(path: impl AsRef<Path>, options: OpenOptions) -> Result<Self, SqliteError> {
        Ok(Self {
            db: db::Db::open(path.as_ref(), options)?,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// After every write queued before it, copies the write-ahead log into the database file
    /// and truncates it to zero bytes (writes wait meanwhile). Call it at a clean stop, so the
    /// next start does not have to read the WAL; the store stays usable.
    pub async fn checkpoint(&self) -> Result<(), SqliteError> {
        self.db.checkpoint_truncate().await
    }

    /// A [`SqliteSessionPersistence`] on the same file and connection threads.
    pub fn persistence(&self) -> SqliteSessionPersistence {
        SqliteSessionPersistence::new(Arc::clone(&self.db))
    }

    async fn write<T, F>(
        &self,
        what: &'static str,
        key: &SessionKey,
        op: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, SqliteError> + Send + 'static,
    {
        self.db.write(op).await.map_err(|err| log(what, key, err))
    }

    async fn read<T, F>(&self, what: &'static str, key: &SessionKey, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, SqliteError> + Send + 'static,
    {
        self.db.read(op).await.map_err(|err| log(what, key, err))
    }
}

fn log(what: &str, key: &SessionKey, err: SqliteError) -> StoreError {
    tracing::warn!(
        project_key = %key.project_key,
        session_id = %key.session_id,
        error = %err,
        "sqlite session store: {what} failed"
    );
    StoreError::from(err)
}

fn check_key(key: &SessionKey) -> Result<String, StoreError> {
    match key.subpath.as_deref() {
        Some("") => Err(StoreError::InvalidKey("subpath must not be empty".into())),
        Some(sub) => Ok(sub.to_owned()),
        None => Ok(String::new()),
    }
}

/// Drops repeats of a uuid within the batch (the first wins, as in the reference store).
fn prepare_batch(input: Vec<Value>) -> Result<Vec<(Option<String>, String, Value)>, StoreError> {
    let mut seen = std::collections::HashSet::new();
    let mut batch = Vec::with_capacity(input.len());
    for entry in input {
        let uuid = entry.get("uuid").and_then(Value::as_str).map(str::to_owned);
        if let Some(u) = &uuid {
            if !seen.insert(u.clone()) {
                continue;
            }
        }
        let text = serde_json::to_string(&entry)
            .map_err(|e| StoreError::Backend(format!("entry not serialisable: {e}")))?;
        batch.push((uuid, text, entry));
    }
    Ok(batch)
}

/// The append, in the writer's transaction: bump the transcript row (mtime strictly
/// increasing), insert the entries skipping known uuids, fold the summary over what was
/// inserted (main keys).
fn append_on(
    conn: &Connection,
    key: &SessionKey,
    subpath: &str,
    batch: Vec<(Option<String>, String, Value)>,
) -> Result<(), SqliteError> {
    let (id, mut next_seq, mtime, summary): (i64, i64, i64, Option<String>) = conn
        .prepare_cached(
            "INSERT INTO agent_webkit_transcripts AS t (project_key, session_id, subpath, mtime_ms)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (project_key, session_id, subpath) DO UPDATE
                 SET mtime_ms = max(excluded.mtime_ms, t.mtime_ms + 1)
             RETURNING id, next_seq, mtime_ms, summary",
        )?
        .query_row(
            params![key.project_key, key.session_id, subpath, now_ms()],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO agent_webkit_entries (transcript_id, seq, uuid, entry)
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
    )?;
    let mut added = Vec::with_capacity(batch.len());
    for (uuid, text, entry) in batch {
        if insert.execute(params![id, next_seq, uuid, text])? == 1 {
            next_seq += 1;
            added.push(entry);
        }
    }
    let summary = if key.is_main() {
        let prev = match summary {
            None => None,
            Some(text) => match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(data)) => Some(SessionSummary {
                    session_id: key.session_id.clone(),
                    mtime,
                    data,
                }),
                _ => {
                    return Err(SqliteError::Corrupt(format!(
                        "summary of {}/{} is not a JSON object",
                        key.project_key, key.session_id
                    )))
                }
            },
        };
        let folded = fold_session_summary(prev.as_ref(), key, &added);
        Some(Value::Object(folded.data).to_string())
    } else {
        None
    };
    conn.prepare_cached(
        "UPDATE agent_webkit_transcripts SET next_seq = ?2, summary = coalesce(?3, summary)
         WHERE id = ?1",
    )?
    .execute(params![id, next_seq, summary])?;
    Ok(())
}

fn parse_entry(text: &str) -> Result<Value, SqliteError> {
    serde_json::from_str(text)
        .map_err(|e| SqliteError::Corrupt(format!("stored entry is not JSON: {e}")))
}

#[async_trait]
impl SessionStore for SqliteSessionStore {
    async fn append(&self, key: &SessionKey, entries: Vec<Value>) -> Result<(), StoreError> {
        let subpath = check_key(key)?;
        let batch = prepare_batch(entries)?;
        let owned = key.clone();
        self.write("append", key, move |conn| {
            append_on(conn, &owned, &subpath, batch)
        })
        .await
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Vec<Value>>, StoreError> {
        let subpath = check_key(key)?;
        let owned = key.clone();
        self.read("load", key, move |conn| {
            let id: Option<i64> = conn
                .prepare_cached(
                    "SELECT id FROM agent_webkit_transcripts
                     WHERE project_key = ?1 AND session_id = ?2 AND subpath = ?3",
                )?
                .query_row(params![owned.project_key, owned.session_id, subpath], |r| {
                    r.get(0)
                })
                .optional()?;
            let Some(id) = id else {
                return Ok(None);
            };
            let mut stmt = conn.prepare_cached(
                "SELECT entry FROM agent_webkit_entries WHERE transcript_id = ?1 ORDER BY seq",
            )?;
            let mut rows = stmt.query(params![id])?;
            let mut entries = Vec::new();
            while let Some(row) = rows.next()? {
                let text: String = row.get(0)?;
                entries.push(parse_entry(&text)?);
            }
            Ok(Some(entries))
        })
        .await
    }

    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities::ALL
    }

    async fn list_sessions(&self, project_key: &str) -> Result<Vec<SessionListing>, StoreError> {
        let key = SessionKey::main(project_key, "");
        let project = project_key.to_owned();
        self.read("list_sessions", &key, move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT session_id, mtime_ms FROM agent_webkit_transcripts
                 WHERE project_key = ?1 AND subpath = ''",
            )?;
            let rows = stmt.query_map(params![project], |row| {
                Ok(SessionListing {
                    session_id: row.get(0)?,
                    mtime: row.get(1)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn list_session_summaries(
        &self,
        project_key: &str,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        let key = SessionKey::main(project_key, "");
        let project = project_key.to_owned();
        self.read("list_session_summaries", &key, move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT session_id, mtime_ms, summary FROM agent_webkit_transcripts
                 WHERE project_key = ?1 AND subpath = '' AND summary IS NOT NULL",
            )?;
            let rows = stmt.query_map(params![project], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (session_id, mtime, text) = row?;
                let Ok(Value::Object(data)) = serde_json::from_str::<Value>(&text) else {
                    return Err(SqliteError::Corrupt(format!(
                        "summary of {project}/{session_id} is not a JSON object"
                    )));
                };
                out.push(SessionSummary {
                    session_id,
                    mtime,
                    data,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), StoreError> {
        let subpath = check_key(key)?;
        let owned = key.clone();
        self.write("delete", key, move |conn| {
            // A main key (subpath '') takes every row of the session; entries cascade.
            conn.prepare_cached(
                "DELETE FROM agent_webkit_transcripts
                 WHERE project_key = ?1 AND session_id = ?2 AND (?3 = '' OR subpath = ?3)",
            )?
            .execute(params![owned.project_key, owned.session_id, subpath])?;
            Ok(())
        })
        .await
    }

    async fn list_subkeys(&self, key: &SessionKey) -> Result<Vec<String>, StoreError> {
        check_key(key)?;
        let owned = key.clone();
        self.read("list_subkeys", key, move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT subpath FROM agent_webkit_transcripts
                 WHERE project_key = ?1 AND session_id = ?2 AND subpath <> ''
                 ORDER BY subpath",
            )?;
            let rows = stmt.query_map(params![owned.project_key, owned.session_id], |row| {
                row.get(0)
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }
}
