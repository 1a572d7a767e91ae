//! # agent-webkit-claude
//!
//! The Claude Code CLI bridge: implements the core's [`AgentClientFactory`] /
//! [`AgentClient`](agent_webkit_core::agent::AgentClient) by spawning the real `claude` executable and
//! speaking its stream-json control protocol exactly as the official Python Agent SDK 0.2.187
//! does with CLI 2.1.330 (what the bridge relies on: `docs/claude-cli-protocol.md`). Rust has
//! no official SDK; this crate is ours.
//!
//! - [`options`] — [`ClaudeOptions`] and the command line / environment built from them.
//! - [`discover`] — finding the executable.
//! - [`env`](mod@env) — the CLI's environment: what is inherited, what never is, secret redaction.
//! - [`process`] — the child process: process group, stdin writer, stdout lines, stderr tail,
//!   teardown.
//! - [`translate`] — CLI frames → normalised agent messages (deltas, accumulated assistant
//!   messages, tool results, results, MCP status).
//! - [`watchdog`] — kills every CLI's process group when the server dies, even by SIGKILL.
//! - [`mirror`] — `transcript_mirror` frames → the configured `SessionStore`.
//! - [`project_key`] — the CLI's project directory name for a working directory.
//! - [`resume`] — resuming a session from the `SessionStore` (materialized transcript,
//!   `--resume=<id>`).
//! - [`factory`] — [`ClaudeAgentFactory`]: launch and `initialize` handshake.
//! - [`spares`] — warm spares: CLIs started ahead of demand, taken by new sessions.
//! - `rekey` (private) — files a spare's transcript under the session that took it.
//! - [`mcp`] — MCP servers at runtime (status, toggle, reconnect, replace) and their
//!   status reports.
//! - [`client`] — [`ClaudeClient`], the command side of a session (user messages, interrupt,
//!   `set_*`, disconnect).
//! - `control` (private) — state shared per session; host → CLI control requests.
//! - `cli_requests` (private) — CLI → host requests: permission and hook prompts.
//! - `reader` (private) — the stdout reader routing every frame.
//! - `background` (private) — background tasks the CLI still runs between turns (no hibernation
//!   meanwhile).
//!
//! ```no_run
//! use std::sync::Arc;
//! use agent_webkit_claude::{ClaudeAgentFactory, ClaudeOptions};
//! use agent_webkit_core::config::AppConfig;
//!
//! let factory = ClaudeAgentFactory::new(ClaudeOptions {
//!     model: Some("claude-sonnet-4-5".into()),
//!     ..ClaudeOptions::default()
//! });
//! let config = AppConfig::new(Arc::new(factory));
//! # let _ = config;
//! ```

mod attachments;
mod background;
mod cli_requests;
pub mod client;
mod context;
mod control;
pub mod discover;
pub mod env;
pub mod factory;
pub mod failure;
pub mod fork;
pub mod mcp;
pub mod mirror;
pub mod options;
pub mod process;
pub mod project_key;
mod reader;
mod rekey;
pub mod resume;
mod rewind;
pub mod spares;
pub mod translate;
pub mod watchdog;

pub use agent_webkit_core::agent::AgentClientFactory;
pub use client::ClaudeClient;
pub use discover::{find_cli, DiscoverError, NOT_FOUND_HINT};
pub use env::Secrets;
pub use factory::ClaudeAgentFactory;
pub use options::{ClaudeOptions, HookSpec, SystemPrompt, Timeouts};
