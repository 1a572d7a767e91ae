//! # agent-webkit-claude
//!
//! The Claude Code CLI bridge: implements the core's [`AgentClientFactory`] /
//! [`AgentClient`](agent_webkit_core::agent::AgentClient) by spawning the real `claude` executable and
//! speaking its stream-json control protocol exactly as the official Python Agent SDK 0.2.187
//! does with CLI 2.1.330 (see `claude-cli-protocol.md`). Rust has no official SDK; this crate is
//! ours.
//!
//! - [`options`] — [`ClaudeOptions`] and the command line / environment built from them.
//! - [`discover`] — finding the executable.
//! - [`process`] — the child process: process group, stdin writer, stdout lines, stderr tail,
//!   teardown.
//! - [`translate`] — CLI frames → normalised agent messages (deltas, accumulated assistant
//!   messages, tool results, results, MCP status).
//! - [`mirror`] — `transcript_mirror` frames → the configured `SessionStore`.
//! - [`project_key`] — the CLI's project directory name for a working directory.
//! - [`resume`] — resuming a session from the `SessionStore` (materialized transcript,
//!   `--resume=<id>`).
//! - [`client`] — [`ClaudeAgentFactory`] and the per-session client: handshake, control
//!   requests both ways, permission and hook prompts, turn accounting.
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

pub mod client;
pub mod discover;
pub mod mirror;
pub mod options;
pub mod process;
pub mod project_key;
pub mod resume;
pub mod translate;

pub use agent_webkit_core::agent::AgentClientFactory;
pub use client::{ClaudeAgentFactory, ClaudeClient};
pub use discover::{find_cli, DiscoverError, NOT_FOUND_HINT};
pub use options::{ClaudeOptions, HookSpec, SystemPrompt, Timeouts};
