//! Versioned, idempotent schema migrations (`schema_migrations`), serialized across hosts by a
//! transaction-scoped advisory lock.

use tokio_postgres::Client;

use crate::PgStoreError;

/// Key of the `pg_advisory_xact_lock` taken around migrations (`"agent-webkit"` as bytes).
const MIGRATION_LOCK: i64 = 0x6167_656e_742d_776b;

/// `(version, name, sql)`, in order. Never edit a released migration: append a new one.
pub(crate) const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "transcripts, entries, summaries",
        r#"
CREATE TABLE agent_webkit_transcripts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_key text   NOT NULL,
    session_id  text   NOT NULL,
    -- '' for the main transcript, else e.g. 'subagents/agent-1'.
    subpath     text   NOT NULL DEFAULT '',
    -- Highest entry sequence number handed out so far (append order).
    next_seq    bigint NOT NULL DEFAULT 0,
    -- Last write, epoch ms on the database clock, strictly increasing per row.
    mtime_ms    bigint NOT NULL,
    -- The folded session summary's data (main transcripts only), kept verbatim.
    summary     json,
    CONSTRAINT agent_webkit_transcripts_key UNIQUE (project_key, session_id, subpath)
);

CREATE TABLE agent_webkit_entries (
    transcript_id bigint NOT NULL
        REFERENCES agent_webkit_transcripts (id) ON DELETE CASCADE,
    seq           bigint NOT NULL,
    -- The entry's string "uuid" (idempotency key), if any.
    uuid          text,
    -- The entry; `raw` instead only for entries jsonb cannot hold (a \u0000 in a string).
    entry         jsonb,
    raw           json,
    PRIMARY KEY (transcript_id, seq),
    CONSTRAINT agent_webkit_entries_body CHECK ((entry IS NULL) <> (raw IS NULL))
);

CREATE UNIQUE INDEX agent_webkit_entries_uuid
    ON agent_webkit_entries (transcript_id, uuid) WHERE uuid IS NOT NULL;
"#,
    ),
    (
        2,
        "failover persistence: session records, event logs, leases",
        r#"
CREATE TABLE agent_webkit_sessions (
    session_id       text        PRIMARY KEY,
    -- The core's SessionRecord, as serde_json writes it.
    record           jsonb       NOT NULL,
    -- The host holding the lease, NULL when released.
    owner            text,
    -- Lease end on the database clock; '-infinity' when released.
    lease_expires_at timestamptz NOT NULL DEFAULT '-infinity',
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE agent_webkit_session_events (
    session_id text   NOT NULL
        REFERENCES agent_webkit_sessions (session_id) ON DELETE CASCADE,
    seq        bigint NOT NULL,
    event      text   NOT NULL,
    -- The compact data JSON exactly as sent on the wire (text: kept byte for byte).
    data       text   NOT NULL,
    PRIMARY KEY (session_id, seq)
);
"#,
    ),
    (
        3,
        "session owners and listing activity",
        r#"
ALTER TABLE agent_webkit_sessions
    -- The principal that owns the session (SessionRecord.owner), NULL under a shared token.
    ADD COLUMN principal        text,
    -- Last input or agent message, epoch ms (the writing host's clock): the listing's sort key.
    ADD COLUMN last_activity_ms bigint  NOT NULL DEFAULT 0,
    -- Highest event seq stored.
    ADD COLUMN last_seq         bigint  NOT NULL DEFAULT 0,
    -- The agent ended on its own (its log ends with `done`).
    ADD COLUMN ended            boolean NOT NULL DEFAULT false,
    -- The core's SessionActivity (title, usage totals); NULL before the first event batch.
    ADD COLUMN activity         jsonb;
UPDATE agent_webkit_sessions s SET
    principal = s.record->>'owner',
    last_activity_ms = COALESCE((s.record->>'created_at_ms')::bigint, 0),
    last_seq = COALESCE((SELECT max(e.seq) FROM agent_webkit_session_events e
                         WHERE e.session_id = s.session_id), 0);
CREATE INDEX agent_webkit_sessions_activity
    ON agent_webkit_sessions (last_activity_ms DESC, (session_id COLLATE "C") DESC);
CREATE INDEX agent_webkit_sessions_principal
    ON agent_webkit_sessions (principal, last_activity_ms DESC, (session_id COLLATE "C") DESC);
"#,
    ),
    (
        4,
        "audit log",
        r#"
CREATE TABLE agent_webkit_audit (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- When the action succeeded (the serving host's clock).
    at             timestamptz NOT NULL,
    -- The principal (JWT sub), 'token' under the shared token, NULL with auth disabled.
    actor          text,
    session_id     text        NOT NULL,
    -- create, delete, approve, deny, answer, hook_decision, interrupt, set_model,
    -- set_permission_mode.
    action         text        NOT NULL,
    -- The prompt answered (approve, deny, answer, hook_decision).
    correlation_id text,
    -- Small action-specific facts (new model or mode, create settings); never tool input.
    detail         jsonb,
    -- The host that served the request.
    host_id        text
);
CREATE INDEX agent_webkit_audit_at ON agent_webkit_audit (at);
CREATE INDEX agent_webkit_audit_session ON agent_webkit_audit (session_id, at);
"#,
    ),
];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = 4;

/// Brings the schema (in the connection's `search_path`) up to [`SCHEMA_VERSION`]: one
/// transaction, under an advisory lock, so concurrent hosts apply each migration exactly once.
pub(crate) async fn migrate(client: &mut Client) -> Result<(), PgStoreError> {
    let tx = client.transaction().await.map_err(PgStoreError::from)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer     PRIMARY KEY,
             name       text        NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let applied: Vec<i32> = tx
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.try_get::<_, i32>(0))
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
            "postgres session store: the schema is newer than this build; continuing"
        );
    }
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql)
            .await
            .map_err(|source| PgStoreError::Migration {
                version: *version,
                source,
            })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        tracing::info!(version, name, "postgres session store: migration applied");
    }
    tx.commit().await?;
    Ok(())
}
