//! [`SessionActivity`]: what a session listing shows beyond the record (last activity, title,
//! usage totals, whether it ended), kept by the session and written with its event batches.
//!
//! The session updates one shared [`ActivityCell`] as things happen (an input, an agent
//! message, a `result`, the first user message); the event writer sends a snapshot along with
//! every batch it persists ([`SessionPersistence::append_batch`](super::SessionPersistence::append_batch)),
//! so keeping the listing current costs no write of its own. The values are absolute, so a
//! retried batch writes the same thing again.

use std::sync::atomic::{AtomicI64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::cost::{CostTotals, ProcessCounters};
use crate::models::UserContent;
use crate::store::{fold_session_summary, SessionKey};

/// Token and cost totals, summed over a session's `result` events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct UsageTotals {
    /// Sum of `usage.input_tokens`.
    pub input_tokens: u64,
    /// Sum of `usage.output_tokens`.
    pub output_tokens: u64,
    /// Sum of `usage.cache_creation_input_tokens`.
    pub cache_creation_input_tokens: u64,
    /// Sum of `usage.cache_read_input_tokens`.
    pub cache_read_input_tokens: u64,
    /// The agent's cost estimate over the session, USD: [`CostTotals::total_cost_usd`] (a
    /// result's `total_cost_usd` is cumulative per agent process, so it is not summed as is).
    pub total_cost_usd: f64,
    /// Number of `result` events (turns ended).
    pub turns: u64,
}

impl UsageTotals {
    /// Adds one `result` event's tokens (its `usage`, the turn's own) and counts the turn; the
    /// cost comes from [`CostTotals`].
    pub fn add_result(&mut self, result: &Map<String, Value>) {
        let usage = result.get("usage");
        let tokens = |name: &str| {
            usage
                .and_then(|u| u.get(name))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        self.input_tokens = self.input_tokens.saturating_add(tokens("input_tokens"));
        self.output_tokens = self.output_tokens.saturating_add(tokens("output_tokens"));
        self.cache_creation_input_tokens = self
            .cache_creation_input_tokens
            .saturating_add(tokens("cache_creation_input_tokens"));
        self.cache_read_input_tokens = self
            .cache_read_input_tokens
            .saturating_add(tokens("cache_read_input_tokens"));
        self.turns = self.turns.saturating_add(1);
    }
}

// Totals are sums of finite, non-negative numbers: equality is total in practice.
impl Eq for UsageTotals {}

/// What a listing shows about a session besides its [`SessionRecord`](super::SessionRecord).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionActivity {
    /// Last input or agent message, epoch ms (the listing's sort key).
    pub last_activity_ms: i64,
    /// The first prompt, as the store's summary fold computes it
    /// ([`fold_session_summary`]'s `first_prompt`); `None` before the first user message.
    pub title: Option<String>,
    /// Totals over the session's `result` events.
    pub usage: UsageTotals,
    /// The agent ended on its own (the log ends with `done`).
    pub ended: bool,
    /// The model as last set (`None`: the server's default).
    pub model: Option<String>,
    /// The permission mode as last set (`None`: the server's default).
    pub permission_mode: Option<String>,
    /// Usage and cost per model over the session (see [`CostTotals`]).
    #[serde(skip_serializing_if = "CostTotals::is_empty")]
    pub cost: CostTotals,
    /// The client's MCP servers as last replaced at runtime (`mcp_set_servers`; `None`: as
    /// created). Never shown in a listing: configs may hold secrets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp_servers: Option<Map<String, Value>>,
    /// MCP servers the client turned off (`mcp_toggle`), by name: off again in a new agent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mcp_disabled: Vec<String>,
}

impl SessionActivity {
    /// Activity of a session created from `record` that has done nothing yet.
    pub fn created(record: &super::SessionRecord) -> Self {
        Self {
            last_activity_ms: record.created_at_ms,
            model: record.model.clone(),
            permission_mode: record.permission_mode.clone(),
            ..Self::default()
        }
    }
}

/// The title the store's summary fold gives a transcript whose first user message is
/// `content` (`None` when the fold skips it, e.g. a slash command's output or an empty text).
pub(crate) fn title_of(content: &UserContent) -> Option<String> {
    let entry = serde_json::json!({
        "type": "user",
        "message": {"role": "user", "content": content},
    });
    let summary = fold_session_summary(None, &SessionKey::main("", ""), &[entry]);
    summary
        .data
        .get("first_prompt")
        .or_else(|| summary.data.get("command_fallback"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// A session's activity, shared by the session (which updates it) and its event writer
/// (which persists a snapshot with each batch).
#[derive(Debug, Default)]
pub(crate) struct ActivityCell {
    /// `last_activity_ms`, apart: touched on every agent message, without the lock.
    last_activity_ms: AtomicI64,
    inner: Mutex<SessionActivity>,
    /// The current agent process's counters at its last `result`.
    process: Mutex<ProcessCounters>,
}

impl ActivityCell {
    pub(crate) fn new(activity: SessionActivity) -> Self {
        Self {
            last_activity_ms: AtomicI64::new(activity.last_activity_ms),
            inner: Mutex::new(activity),
            process: Mutex::new(ProcessCounters::default()),
        }
    }

    pub(crate) fn snapshot(&self) -> SessionActivity {
        let mut activity = self.inner.lock().clone();
        activity.last_activity_ms = self.last_activity_ms.load(Ordering::Acquire);
        activity
    }

    /// Something happened now.
    pub(crate) fn touch(&self) {
        self.last_activity_ms
            .fetch_max(super::now_ms(), Ordering::AcqRel);
    }

    /// The client changed the model or the permission mode.
    pub(crate) fn settings(&self, model: Option<String>, permission_mode: Option<String>) {
        let mut activity = self.inner.lock();
        activity.model = model;
        activity.permission_mode = permission_mode;
    }

    /// The client replaced its MCP servers, or turned one off or on.
    pub(crate) fn mcp(&self, servers: Option<Map<String, Value>>, disabled: Vec<String>) {
        let mut activity = self.inner.lock();
        activity.mcp_servers = servers;
        activity.mcp_disabled = disabled;
    }

    /// The title `content` would give the session if it were its first titled message
    /// (`None`: it already has a title, or `content` gives none).
    pub(crate) fn title_candidate(&self, content: &UserContent) -> Option<String> {
        if self.inner.lock().title.is_some() {
            return None;
        }
        title_of(content)
    }

    /// Sets the title unless one was set meanwhile.
    pub(crate) fn set_title(&self, title: String) {
        let mut activity = self.inner.lock();
        if activity.title.is_none() {
            activity.title = Some(title);
        }
    }

    /// A `result` event's data (its fields other than `session_id` and `subtype`); returns the
    /// session's cost totals after it when it reported usage.
    pub(crate) fn result(&self, result: &Map<String, Value>) -> Option<CostTotals> {
        let mut process = self.process.lock();
        let mut activity = self.inner.lock();
        activity.usage.add_result(result);
        let reported = activity.cost.add_result(result, &mut process);
        activity.usage.total_cost_usd = activity.cost.total_cost_usd;
        reported.then(|| activity.cost.clone())
    }

    /// A new agent process runs the session (woken from hibernation): its counters start at 0.
    pub(crate) fn new_agent_process(&self) {
        *self.process.lock() = ProcessCounters::default();
    }

    pub(crate) fn ended(&self) {
        self.inner.lock().ended = true;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn usage_sums_results() {
        let mut usage = UsageTotals::default();
        let result = serde_json::json!({
            "total_cost_usd": 0.25,
            "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 2},
        });
        usage.add_result(result.as_object().unwrap());
        usage.add_result(result.as_object().unwrap());
        usage.add_result(&Map::new());
        assert_eq!(usage.input_tokens, 20);
        assert_eq!(usage.output_tokens, 10);
        assert_eq!(usage.cache_read_input_tokens, 4);
        assert_eq!(usage.cache_creation_input_tokens, 0);
        assert_eq!(usage.turns, 3);
    }

    #[test]
    fn title_follows_the_summary_fold() {
        assert_eq!(
            title_of(&UserContent::Text("hello\nworld".into())).as_deref(),
            Some("hello world")
        );
        let blocks = UserContent::Blocks(vec![
            serde_json::json!({"type": "image", "source": {}}),
            serde_json::json!({"type": "text", "text": "look at this"}),
        ]);
        assert_eq!(title_of(&blocks).as_deref(), Some("look at this"));
        assert_eq!(title_of(&UserContent::Text("   ".into())), None);
    }
}
