//! Versioned, idempotent schema migrations (`schema_migrations`), applied in one
//! `BEGIN IMMEDIATE` transaction so two processes opening the file at once apply each once.

use rusqlite::Connection;

use crate::SqliteError;

/// `(version, name, sql)`, in order. Never edit a released migration: append a new one.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "transcripts, entries, summaries",
        r#"
CREATE TABLE agent_webkit_transcripts (
    id          INTEGER PRIMARY KEY,
    project_key TEXT    NOT NULL,
    session_id  TEXT    NOT NULL,
    -- '' for the main transcript, else e.g. 'subagents/agent-1'.
    subpath     TEXT    NOT NULL DEFAULT '',
    -- Entries stored so far (the next entry's seq).
    next_seq    INTEGER NOT NULL DEFAULT 0,
    -- Last write, epoch ms (wall clock), strictly increasing per row.
    mtime_ms    INTEGER NOT NULL,
    -- The folded session summary's data (main transcripts only), JSON text.
    summary     TEXT,
    UNIQUE (project_key, session_id, subpath)
);

CREATE TABLE agent_webkit_entries (
    transcript_id INTEGER NOT NULL
        REFERENCES agent_webkit_transcripts (id) ON DELETE CASCADE,
    seq           INTEGER NOT NULL,
    -- The entry's string "uuid" (idempotency key), if any.
    uuid          TEXT,
    -- The entry as JSON text, exactly as serde_json wrote it.
    entry         TEXT    NOT NULL,
    PRIMARY KEY (transcript_id, seq)
) WITHOUT ROWID;

CREATE UNIQUE INDEX agent_webkit_entries_uuid
    ON agent_webkit_entries (transcript_id, uuid) WHERE uuid IS NOT NULL;
"#,
    ),
    (
        2,
        "session records, event logs, leases",
        r#"
CREATE TABLE agent_webkit_sessions (
    session_id          TEXT    PRIMARY KEY,
    -- The core's SessionRecord, as serde_json writes it.
    record              TEXT    NOT NULL,
    -- The host holding the lease, NULL when released.
    owner               TEXT,
    -- Lease end, epoch ms on this host's wall clock; 0 when released.
    lease_expires_at_ms INTEGER NOT NULL DEFAULT 0,
    created_at_ms       INTEGER NOT NULL
);

CREATE TABLE agent_webkit_session_events (
    session_id TEXT    NOT NULL
        REFERENCES agent_webkit_sessions (session_id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    event      TEXT    NOT NULL,
    -- The compact data JSON exactly as sent on the wire.
    data       TEXT    NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
"#,
    ),
    (
        3,
        "session owners and listing activity",
        r#"
-- The principal that owns the session (SessionRecord.owner), NULL under a shared token.
ALTER TABLE agent_webkit_sessions ADD COLUMN principal        TEXT;
-- Last input or agent message, epoch ms: the listing's sort key.
ALTER TABLE agent_webkit_sessions ADD COLUMN last_activity_ms INTEGER NOT NULL DEFAULT 0;
-- Highest event seq stored.
ALTER TABLE agent_webkit_sessions ADD COLUMN last_seq         INTEGER NOT NULL DEFAULT 0;
-- 1 once the agent ended on its own (its log ends with `done`).
ALTER TABLE agent_webkit_sessions ADD COLUMN ended            INTEGER NOT NULL DEFAULT 0;
-- The core's SessionActivity (title, usage totals) as JSON text; NULL before the first batch.
ALTER TABLE agent_webkit_sessions ADD COLUMN activity         TEXT;
UPDATE agent_webkit_sessions SET
    principal = json_extract(record, '$.owner'),
    last_activity_ms = created_at_ms,
    last_seq = COALESCE((SELECT max(e.seq) FROM agent_webkit_session_events e
                         WHERE e.session_id = agent_webkit_sessions.session_id), 0);
CREATE INDEX agent_webkit_sessions_activity
    ON agent_webkit_sessions (last_activity_ms DESC, session_id DESC);
CREATE INDEX agent_webkit_sessions_principal
    ON agent_webkit_sessions (principal, last_activity_ms DESC, session_id DESC);
"#,
    ),
];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i64 = 3;

/// Brings the schema up to [`SCHEMA_VERSION`] in one transaction.
pub(crate) fn migrate(conn: &Connection) -> Result<(), SqliteError> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    match apply(conn) {
        Ok(()) => {
            conn.execute_batch("COMMIT")?;
            Ok(())
        }
        Err(err) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(err)
        }
    }
}

fn apply(conn: &Connection) -> Result<(), SqliteError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version       INTEGER PRIMARY KEY,
             name          TEXT    NOT NULL,
             applied_at_ms INTEGER NOT NULL
         )",
    )?;
    let applied: Vec<i64> = conn
        .prepare("SELECT version FROM schema_migrations ORDER BY version")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    if let Some(newer) = applied
        .iter()
        .copied()
        .filter(|v| *v > SCHEMA_VERSION)
        .max()
    {
        tracing::warn!(
            database_version = newer,
            known_version = SCHEMA_VERSION,
            "sqlite session store: the schema is newer than this build; continuing"
        );
    }
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        conn.execute_batch(sql)
            .map_err(|source| SqliteError::Migration {
                version: *version,
                source: source.into(),
            })?;
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?1, ?2, ?3)",
            rusqlite::params![version, name, crate::now_ms()],
        )?;
        tracing::info!(version, name, "sqlite session store: migration applied");
    }
    Ok(())
}
