//! Session listing and detail (`GET /sessions`, `GET /sessions/{id}`): the sessions a caller
//! may see, newest activity first, from this host's registry merged with the persisted ones.
//!
//! With persistence (the SQLite default, or PostgreSQL) every session is stored, so the stored
//! rows give the order: keyset pages on `(last_activity_ms, session_id)` descending, the
//! activity being what the session's event writer wrote with its last batch. A session this
//! host holds is shown with its live state, pending prompts, model and mode over its row; one
//! that exists only in persistence (hibernated by a restart or a hand-off, or held by another
//! host) from its stored record and activity. Without persistence the registry is sorted in
//! memory. The cursor is opaque to clients.
//!
//! Who sees what is decided in one place, [`Caller`], by the rule every session endpoint uses
//! ([`Principal::may_access`]): a JWT principal sees the sessions it owns, an admin sees all,
//! the shared token (or no auth) sees the sessions created without a JWT — every session on a
//! server with no JWT keys configured.

mod cursor;
mod query;

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::auth::principal::Principal;
use crate::persist::{ListQuery, ListedSession, PersistError, UsageTotals};
use crate::registry::SessionRegistry;
use crate::session::{AgentState, Session};

pub use query::{ListRequest, QueryError, DEFAULT_LIMIT, MAX_LIMIT};

/// Most persistence pages one listing request reads while it skips sessions held here or
/// filtered out by state; past it the page ends early with a cursor where the scan stopped.
const MAX_SCAN_ROUNDS: usize = 8;

/// Who is asking: decides which sessions a listing shows and whose detail is visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller<'a> {
    /// The principal (JWT `sub`); `None` under the shared token or with auth disabled, which
    /// sees the sessions created that way (every session, when no JWT is configured).
    pub principal: Option<&'a str>,
    /// Sees every session whatever its owner.
    pub admin: bool,
}

impl<'a> Caller<'a> {
    /// Sees every session (an embedder listing for itself).
    pub const EVERYONE: Caller<'static> = Caller {
        principal: None,
        admin: true,
    };

    /// The caller a request's principal is: the same rule as every other session endpoint
    /// ([`Principal::may_access`]).
    pub fn of(principal: &'a Principal) -> Caller<'a> {
        Caller {
            principal: principal.sub.as_deref(),
            admin: principal.admin,
        }
    }

    /// The owner a listing is restricted to in the store's query (`None`: no restriction in
    /// the query; [`Caller::sees`] still filters the rows).
    pub fn owner_filter(&self) -> Option<&str> {
        if self.admin {
            None
        } else {
            self.principal
        }
    }

    /// Whether this caller may see a session owned by `owner`.
    pub fn sees(&self, owner: Option<&str>) -> bool {
        self.admin || owner == self.principal
    }
}

/// Where a session is, as a listing shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Live agent, no turn running, nothing pending.
    Idle,
    /// A turn is running (or the agent is being woken for one).
    Running,
    /// A prompt (permission, question, hook decision) waits for the user.
    Waiting,
    /// No agent runs: stopped while quiet, or not held by any live host (after a restart or a
    /// hand-off); the next request resumes it.
    Hibernated,
    /// Held by another live host; its turn state is not known here.
    Remote,
    /// The agent ended on its own; readable (its stream replays to `done`) until the ended
    /// retention passes.
    Ended,
}

impl SessionState {
    /// Every state, in the order above.
    pub const ALL: [SessionState; 6] = [
        SessionState::Idle,
        SessionState::Running,
        SessionState::Waiting,
        SessionState::Hibernated,
        SessionState::Remote,
        SessionState::Ended,
    ];

    /// The wire name (`idle`, `running`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Idle => "idle",
            SessionState::Running => "running",
            SessionState::Waiting => "waiting",
            SessionState::Hibernated => "hibernated",
            SessionState::Remote => "remote",
            SessionState::Ended => "ended",
        }
    }
}

/// One session in a listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionInfo {
    /// Session id.
    pub session_id: String,
    /// Creation time, epoch ms.
    pub created_at: i64,
    /// Last input or agent message, epoch ms (the sort key).
    pub last_activity_at: i64,
    /// See [`SessionState`].
    pub state: SessionState,
    /// Current model (`None`: the server's default).
    pub model: Option<String>,
    /// Current permission mode (`None`: the server's default).
    pub permission_mode: Option<String>,
    /// Working directory.
    pub cwd: Option<String>,
    /// The first prompt, as the store's summary fold computes it.
    pub title: Option<String>,
    /// Totals over the session's `result` events.
    pub usage: UsageTotals,
    /// Prompts waiting for the user (`None` for [`SessionState::Remote`]: not known here).
    pub pending_prompts: Option<usize>,
    /// The owning principal (`None` under a shared token).
    pub owner: Option<String>,
}

/// A pending prompt's event, as the stream sent it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PendingPrompt {
    /// `permission_request`, `ask_user_question` or `hook_decision_request`.
    pub event: String,
    /// Its seq (the SSE `id`).
    pub seq: u64,
    /// Its data, with its `correlation_id`.
    pub data: Value,
}

/// One session in detail (`GET /sessions/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionDetail {
    /// What the listing shows.
    #[serde(flatten)]
    pub info: SessionInfo,
    /// The last seq of its stream: resume with `Last-Event-ID: <last_seq>` to get what
    /// follows without replaying the log.
    pub last_seq: u64,
    /// The prompts waiting for the user, in seq order (`None` for
    /// [`SessionState::Remote`]). Each was sent at or before `last_seq`.
    pub prompts: Option<Vec<PendingPrompt>>,
    /// Extension: usage and cost per model over the whole session, as the agent estimated
    /// them (see [`crate::persist::CostTotals`]).
    pub cost: crate::persist::CostTotals,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionPage {
    /// The sessions, newest activity first.
    pub sessions: Vec<SessionInfo>,
    /// Pass as `?cursor=` for the next page; `None` on the last page. A page may hold fewer
    /// than `limit` sessions and still have a next one (a state filter skipped many).
    pub next_cursor: Option<String>,
}

/// Why a listing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    /// The persistence backend failed (HTTP 503 `persistence_unavailable`).
    #[error("Session persistence unavailable: {0}")]
    Persistence(#[from] PersistError),
}

type Key = (i64, String);

fn key_of(info: &SessionInfo) -> Key {
    (info.last_activity_at, info.session_id.clone())
}

fn below(key: &Key, cursor: Option<&Key>) -> bool {
    cursor.is_none_or(|c| key < c)
}

/// The state of a session held here.
fn live_state(session: &Session) -> SessionState {
    if session.has_ended() {
        return SessionState::Ended;
    }
    match session.agent_state() {
        AgentState::Hibernated => SessionState::Hibernated,
        AgentState::Waking => SessionState::Running,
        AgentState::Live if session.router().pending_count() > 0 => SessionState::Waiting,
        AgentState::Live if session.turn_running() => SessionState::Running,
        AgentState::Live => SessionState::Idle,
    }
}

fn live_info(session: &Session) -> SessionInfo {
    let meta = session.meta();
    let settings = session.settings();
    let activity = session.activity();
    let state = live_state(session);
    let pending = match state {
        SessionState::Hibernated | SessionState::Ended => 0,
        _ => session.router().pending_count(),
    };
    SessionInfo {
        session_id: session.id().to_owned(),
        created_at: meta.created_at_ms,
        last_activity_at: activity.last_activity_ms,
        state,
        model: settings.model,
        permission_mode: settings.permission_mode,
        cwd: meta.cwd.clone(),
        title: activity.title,
        usage: activity.usage,
        pending_prompts: Some(pending),
        owner: meta.owner.clone(),
    }
}

/// A session only in persistence, as this host (`host_id`) sees it.
fn stored_info(row: ListedSession, host_id: &str) -> SessionInfo {
    let state = if row.activity.ended {
        SessionState::Ended
    } else {
        match &row.lease_holder {
            Some(holder) if holder != host_id => SessionState::Remote,
            _ => SessionState::Hibernated,
        }
    };
    let record = row.record;
    SessionInfo {
        session_id: record.session_id,
        created_at: record.created_at_ms,
        last_activity_at: row.activity.last_activity_ms,
        state,
        model: row.activity.model,
        permission_mode: row.activity.permission_mode,
        cwd: record.cwd,
        title: row.activity.title,
        usage: row.activity.usage,
        pending_prompts: (state != SessionState::Remote).then_some(0),
        owner: record.owner,
    }
}

fn held_here(registry: &SessionRegistry) -> HashMap<String, Arc<Session>> {
    registry
        .ids()
        .into_iter()
        .filter_map(|id| registry.get(&id).map(|s| (id, s)))
        .collect()
}

/// The oldest last activity an ended session may have and still be listed.
fn ended_since(registry: &SessionRegistry) -> i64 {
    let retention = i64::try_from(registry.config().ended_retention.as_millis()).unwrap_or(0);
    crate::persist::now_ms().saturating_sub(retention)
}

/// One page of the sessions `caller` may see (see the module docs).
pub async fn list_sessions(
    registry: &SessionRegistry,
    caller: &Caller<'_>,
    request: &ListRequest,
) -> Result<SessionPage, ListError> {
    let limit = request.limit;
    let wanted = |state: SessionState| request.states.is_empty() || request.states.contains(&state);
    let local = held_here(registry);
    let Some(failover) = registry.failover() else {
        // Everything is here: sort in memory.
        let mut all: Vec<SessionInfo> = local
            .values()
            .filter(|s| caller.sees(s.meta().owner.as_deref()))
            .map(|s| live_info(s))
            .filter(|i| wanted(i.state) && below(&key_of(i), request.cursor.as_ref()))
            .collect();
        all.sort_by_key(|i| std::cmp::Reverse(key_of(i)));
        return Ok(page_of(all, limit, None));
    };
    // Every session is persisted (those held here too): persistence gives the order and the
    // keys; a session held here shows its live state over its stored row.
    let mut found = Vec::new();
    let mut cursor = request.cursor.clone();
    let mut rounds = 0;
    let scan_stop = loop {
        let query = ListQuery {
            owner: caller.owner_filter().map(str::to_owned),
            before: cursor.clone(),
            limit: limit + 1,
            ended_since_ms: ended_since(registry),
        };
        let rows = failover.persistence.list(&query).await?;
        let exhausted = rows.len() < query.limit;
        for row in rows {
            let key = (row.activity.last_activity_ms, row.record.session_id.clone());
            cursor = Some(key.clone());
            if !caller.sees(row.record.owner.as_deref()) {
                continue;
            }
            let info = match local.get(&row.record.session_id) {
                Some(session) => SessionInfo {
                    // The stored activity is the sort key.
                    last_activity_at: key.0,
                    ..live_info(session)
                },
                None => stored_info(row, &failover.host_id),
            };
            if wanted(info.state) {
                found.push(info);
            }
        }
        rounds += 1;
        if exhausted || found.len() > limit {
            break None;
        }
        if rounds >= MAX_SCAN_ROUNDS {
            break cursor;
        }
    };
    Ok(page_of(found, limit, scan_stop))
}

/// The first `limit` of `sorted`, with the cursor after the last one when more follow, or
/// `scan_stop` (where reading stopped early) otherwise.
fn page_of(mut sorted: Vec<SessionInfo>, limit: usize, scan_stop: Option<Key>) -> SessionPage {
    let next_cursor = if sorted.len() > limit {
        sorted.truncate(limit);
        sorted.last().map(|i| cursor::encode(&key_of(i)))
    } else {
        scan_stop.as_ref().map(cursor::encode)
    };
    SessionPage {
        sessions: sorted,
        next_cursor,
    }
}

/// The session `id` in detail, or `None` when it does not exist or `caller` may not see it
/// (the two are indistinguishable, so a listing is no oracle).
pub async fn session_detail(
    registry: &SessionRegistry,
    caller: &Caller<'_>,
    id: &str,
) -> Result<Option<SessionDetail>, ListError> {
    if let Some(session) = registry.get(id) {
        if !caller.sees(session.meta().owner.as_deref()) {
            return Ok(None);
        }
        // The last seq first, then the prompts: a prompt announced after `last_seq` may show
        // in both (clients key prompts by correlation id), but none is in neither.
        let last_seq = session.event_log().last_seq();
        let prompts = if session.has_ended() {
            Vec::new()
        } else {
            session
                .router()
                .pending_events()
                .into_iter()
                .filter(|e| e.seq <= last_seq)
                .map(|e| PendingPrompt {
                    data: serde_json::from_str(&e.data).unwrap_or(Value::Null),
                    event: e.event,
                    seq: e.seq,
                })
                .collect()
        };
        return Ok(Some(SessionDetail {
            info: live_info(&session),
            last_seq,
            prompts: Some(prompts),
            cost: session.activity().cost,
        }));
    }
    let Some(failover) = registry.failover() else {
        return Ok(None);
    };
    if crate::session_id::validate(id).is_err() {
        return Ok(None);
    }
    let Some(row) = failover.persistence.get(id).await? else {
        return Ok(None);
    };
    if !caller.sees(row.record.owner.as_deref())
        || (row.activity.ended && row.activity.last_activity_ms < ended_since(registry))
    {
        return Ok(None);
    }
    let last_seq = row.last_seq;
    let cost = row.activity.cost.clone();
    let info = stored_info(row, &failover.host_id);
    // Not live anywhere: a take-over withdraws the prompts of the turn that was running, so
    // none can be answered. Held elsewhere: not known here.
    let prompts = (info.state != SessionState::Remote).then(Vec::new);
    Ok(Some(SessionDetail {
        info,
        last_seq,
        prompts,
        cost,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_see_what_they_own() {
        assert!(Caller::EVERYONE.sees(None));
        assert!(Caller::EVERYONE.sees(Some("alice")));
        let shared = Caller {
            principal: None,
            admin: false,
        };
        assert!(shared.sees(None));
        assert!(!shared.sees(Some("alice")));
        assert_eq!(shared.owner_filter(), None);
        let alice = Caller {
            principal: Some("alice"),
            admin: false,
        };
        assert!(alice.sees(Some("alice")));
        assert!(!alice.sees(Some("bob")));
        assert!(!alice.sees(None));
        assert_eq!(alice.owner_filter(), Some("alice"));
        let admin = Caller {
            principal: Some("root"),
            admin: true,
        };
        assert!(admin.sees(Some("bob")));
        assert_eq!(admin.owner_filter(), None);
    }
}
