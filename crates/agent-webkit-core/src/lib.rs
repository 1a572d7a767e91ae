//! # agent-webkit-core
//!
//! The framework-agnostic engine of agent-webkit: drive long-lived agent sessions (Claude Code)
//! over HTTP + Server-Sent Events, per wire protocol 1.0.
//!
//! - [`models`] — wire types: inbound messages, outbound events, create bodies.
//! - [`event_log`] — the per-session ring of events, serialised once, shared by subscribers.
//! - [`permission`] — pending permission prompts and questions; first reply wins.
//! - [`agent`] — the traits an agent implements (the Claude CLI bridge, the replay agent).
//! - [`session`] / [`registry`] — one live session; the set of them, with idle eviction.
//! - [`store`] — the `SessionStore` trait for transcripts, with an in-memory implementation.
//! - [`persist`] — `SessionPersistence`: session records, event logs and ownership leases for
//!   cross-host failover.
//! - [`auth`] — bearer tokens.
//! - [`http`] — the HTTP behaviour itself, framework-free; see its docs for the adapter contract.
//! - [`config`] — [`AppConfig`], what every adapter is built from.
//! - [`policy`] — what clients may choose (permission modes, models, rule destinations).
//! - [`limits`] — timeouts and caps against slow or greedy clients.
//! - [`cors`] — cross-origin access for browser apps on other origins.

pub mod agent;
pub mod auth;
pub mod config;
pub mod cors;
pub mod event_log;
pub mod http;
pub mod limits;
pub mod models;
pub mod permission;
pub mod persist;
pub mod policy;
pub mod registry;
pub mod session;
pub mod store;

/// The wire protocol version this crate speaks.
pub const PROTOCOL_VERSION: &str = "1.0";

pub use agent::{
    AgentClient, AgentClientFactory, AgentConnection, AgentContext, AgentError, AgentMessage,
    AgentMessageStream, AssistantMessage, SessionConfig, TurnResult,
};
pub use auth::AuthConfig;
pub use config::{AppConfig, ConfigError};
pub use event_log::{EventLog, LoggedEvent, SubscribeError, Subscription};
pub use http::{Api, ApiResponse, BodyError, RequestBody, RequestHeaders, ResponseBody};
pub use limits::ServerLimits;
pub use models::{EventKind, InboundMessage, OutboundEvent, UserContent};
pub use permission::{PermissionDecision, PermissionHandle, PermissionRouter};
pub use policy::ClientPolicy;
pub use registry::{RegistryConfig, SessionRegistry};
pub use session::Session;
pub use store::{InMemorySessionStore, SessionStore};
