//! [`ContextUsage`]: how full a session's context window is, as its agent estimates it
//! (`GET /sessions/{id}/context`, answered by [`AgentClient::context_usage`](crate::agent::AgentClient::context_usage)).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The context-window usage an agent reports (its own estimate, not the model's count).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ContextUsage {
    /// The model whose window this is.
    pub model: Option<String>,
    /// Tokens in the context now (the sum of `categories`).
    pub total_tokens: u64,
    /// The model's context window.
    pub max_tokens: u64,
    /// `total_tokens` as a percentage of `max_tokens`, as the agent rounds it.
    pub percentage: f64,
    /// What the context holds (system prompt, tools, messages...), each counted in
    /// `total_tokens`.
    pub categories: Vec<ContextCategory>,
    /// The token usage the model API reported for the agent's last call (`null` before the
    /// first): `input_tokens`, `output_tokens`, `cache_read_input_tokens`,
    /// `cache_creation_input_tokens`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub last_api_usage: Value,
}

/// One part of the context.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ContextCategory {
    /// What it is, as the agent names it (`System tools`, `Messages`...).
    pub name: String,
    /// Its tokens.
    pub tokens: u64,
}

/// The body of `GET /sessions/{id}/context`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ContextResponse {
    /// The session.
    pub session_id: String,
    /// The usage.
    #[serde(flatten)]
    pub usage: ContextUsage,
    /// Always `true`: these are the agent's estimates.
    pub estimated: bool,
}
