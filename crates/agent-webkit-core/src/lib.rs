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
//! - [`config`] — [`AppConfig`](config::AppConfig), what every adapter is built from.
//! - [`policy`] — what clients may choose (permission modes, models, rule destinations).
//! - [`limits`] — timeouts and caps against slow or greedy clients.
//! - [`listing`] — `GET /sessions` and `GET /sessions/{id}`: the sessions a caller may see.
//! - [`audit`] — who did what to which session (structured events, optional sinks).
//! - [`site`] — the hook for static pages beside the API (the web console), and their headers.
//! - CORS (`--cors-origin`) is answered inside [`http`], configured by [`config`].
//! - `openapi` (feature `openapi`) — the OpenAPI 3.1 document served at `/openapi.json`,
//!   generated from [`models`].
//!
//! ## The public API
//!
//! Every public item has exactly one path: its module's (`agent_webkit_core::http::Api`,
//! `agent_webkit_core::agent::AgentClient`, ...); the crate root holds only the modules and
//! [`PROTOCOL_VERSION`]. What a session is made of — its loop, the channel its permission handle
//! writes to, the event writer, the log's persistence sink — is crate-private
//! (`unreachable_pub` is denied). With the `testing` feature the crate also exports what other
//! crates' tests need: the conformance suites `store::run_session_store_conformance` and
//! `persist::run_persistence_conformance`, and `permission::PermissionHandle::detached`.

#![deny(unreachable_pub)]

pub mod agent;
pub mod audit;
pub mod auth;
pub mod config;
pub mod context_usage;
mod cors;
pub mod event_log;
pub mod http;
pub mod limits;
pub mod listing;
pub mod metrics;
pub mod models;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod permission;
pub mod persist;
pub mod policy;
pub mod readiness;
pub mod registry;
#[cfg(test)]
mod scripted;
pub mod session;
pub mod session_id;
pub mod site;
pub mod store;
pub mod trace;

/// The wire protocol version this crate speaks.
pub const PROTOCOL_VERSION: &str = "1.0";
