//! # agent-webkit-replay
//!
//! An [`AgentClientFactory`] that replays scripted scenarios, for offline UI work, tests and
//! benchmarks. The session's `model` names the scenario (`"read_allow"` or
//! `"fixture:read_allow"`; none → `echo`). Built in: the recorded fixture scenarios (shipped in
//! `scenarios/`), and the synthetic `echo`, `controls`, `crash` and `stream:N[:ms[:bytes]][:ts]`.
//! See this crate's README for the script format and the semantics of each scenario.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use agent_webkit_core::agent::SessionConfig;
//! use agent_webkit_core::registry::SessionRegistry;
//! use agent_webkit_replay::ReplayAgentFactory;
//!
//! let factory = ReplayAgentFactory::with_dir("./my-scenarios")?;
//! let registry = SessionRegistry::new(Arc::new(factory));
//! let session = registry
//!     .create(SessionConfig { model: Some("read_allow".into()), ..Default::default() })
//!     .await?;
//! session.submit_user_message("read the README".into())?;
//! # Ok(()) }
//! ```

mod agent;
mod scenario;
mod script;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agent_webkit_core::agent::{AgentClientFactory, AgentConnection, AgentContext, AgentError};
use async_trait::async_trait;

use crate::agent::LiveAgents;
use crate::scenario::{Scenario, StreamSpec, STREAM_GRAMMAR, SYNTHETIC};
pub use crate::script::{Script, ScriptError, Step};

/// The prefix accepted in front of a scenario name (`fixture:read_allow`).
pub const FIXTURE_PREFIX: &str = "fixture:";

/// The scenario played when the session has no model.
pub const DEFAULT_SCENARIO: &str = "echo";

/// The built-in fixture scenarios, shipped inside the binary.
const BUILTIN: &[(&str, &str)] = &[
    (
        "ask_user_question",
        include_str!("../scenarios/ask_user_question.jsonl"),
    ),
    (
        "deny_with_interrupt",
        include_str!("../scenarios/deny_with_interrupt.jsonl"),
    ),
    (
        "genui_render",
        include_str!("../scenarios/genui_render.jsonl"),
    ),
    (
        "image_attachment",
        include_str!("../scenarios/image_attachment.jsonl"),
    ),
    (
        "interrupt_mid_stream",
        include_str!("../scenarios/interrupt_mid_stream.jsonl"),
    ),
    (
        "mcp_status_change",
        include_str!("../scenarios/mcp_status_change.jsonl"),
    ),
    ("multi_tool", include_str!("../scenarios/multi_tool.jsonl")),
    ("multi_turn", include_str!("../scenarios/multi_turn.jsonl")),
    ("plain_qa", include_str!("../scenarios/plain_qa.jsonl")),
    ("read_allow", include_str!("../scenarios/read_allow.jsonl")),
    (
        "streaming_long",
        include_str!("../scenarios/streaming_long.jsonl"),
    ),
    ("tool_error", include_str!("../scenarios/tool_error.jsonl")),
    (
        "untrusted_markup",
        include_str!("../scenarios/untrusted_markup.jsonl"),
    ),
];

/// Failures loading scenario files.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A directory or file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A script is malformed (the error names the file and line).
    #[error(transparent)]
    Script(#[from] ScriptError),
}

/// Builds replay agents: each session plays the scenario its `model` names (see the crate
/// docs). Cheap to clone; clones share the scenarios and the [`live_agents`] count.
///
/// [`live_agents`]: ReplayAgentFactory::live_agents
#[derive(Debug, Clone)]
pub struct ReplayAgentFactory {
    scripts: BTreeMap<String, Arc<Script>>,
    live: LiveAgents,
}

impl Default for ReplayAgentFactory {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayAgentFactory {
    /// The built-in scenarios: the fixtures and the synthetic ones.
    pub fn new() -> Self {
        let scripts = BUILTIN
            .iter()
            .filter_map(|(name, text)| match Script::parse(name, text) {
                Ok(script) => Some(((*name).to_owned(), Arc::new(script))),
                Err(err) => {
                    // Unreachable: the built-ins are parsed by this crate's tests.
                    tracing::error!(error = %err, "built-in replay scenario is malformed");
                    None
                }
            })
            .collect();
        Self {
            scripts,
            live: LiveAgents::default(),
        }
    }

    /// The built-ins plus every `*.jsonl` file in `dir` (see [`load_dir`]).
    ///
    /// [`load_dir`]: ReplayAgentFactory::load_dir
    pub fn with_dir(dir: impl AsRef<Path>) -> Result<Self, ReplayError> {
        Self::new().load_dir(dir)
    }

    /// Adds every `*.jsonl` file in `dir` (not recursive). A scenario is named after its file
    /// stem and replaces a scenario of the same name (built-in or synthetic). Fails on an
    /// unreadable directory or file, or a malformed script (`path:line: reason`).
    pub fn load_dir(mut self, dir: impl AsRef<Path>) -> Result<Self, ReplayError> {
        let dir = dir.as_ref();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ReplayError::Io { path, source }
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            if path.extension().is_some_and(|ext| ext == "jsonl") && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            let Some(name) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
                continue;
            };
            let script = Script::parse(&path.display().to_string(), &text)?;
            tracing::info!(scenario = %name, path = %path.display(), turns = script.turns(), "loaded replay scenario");
            self.scripts.insert(name, Arc::new(script));
        }
        Ok(self)
    }

    /// Adds (or replaces) a scenario.
    pub fn with_script(mut self, name: impl Into<String>, script: Script) -> Self {
        self.scripts.insert(name.into(), Arc::new(script));
        self
    }

    /// Every scenario name, sorted, including the synthetic ones (`stream` as its pattern
    /// `stream:N[:ms[:bytes]]`).
    pub fn scenario_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .scripts
            .keys()
            .cloned()
            .chain(SYNTHETIC.iter().map(|s| (*s).to_owned()))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Number of replay agents (sessions) currently running, across clones of this factory.
    pub fn live_agents(&self) -> usize {
        self.live.count()
    }

    /// Resolves once exactly `count` replay agents are running (e.g. `0` after closing every
    /// session: proves no agent task outlived its session).
    pub async fn wait_for_live_agents(&self, count: usize) {
        self.live.wait_for(count).await;
    }

    /// The scenario a session `model` selects.
    fn resolve(&self, model: Option<&str>) -> Result<Scenario, AgentError> {
        let requested = model.unwrap_or(DEFAULT_SCENARIO);
        let name = requested.strip_prefix(FIXTURE_PREFIX).unwrap_or(requested);
        if let Some(script) = self.scripts.get(name) {
            return Ok(Scenario::Script(Arc::clone(script)));
        }
        match name {
            "echo" => Ok(Scenario::Echo),
            "controls" => Ok(Scenario::Controls),
            "crash" => Ok(Scenario::Crash),
            _ => match name.strip_prefix("stream:") {
                Some(spec) => StreamSpec::parse(spec)
                    .map(Scenario::Stream)
                    .map_err(|reason| {
                        AgentError::InvalidConfig(format!(
                            "invalid replay scenario {name:?}: {reason}; expected {STREAM_GRAMMAR}"
                        ))
                    }),
                None => Err(AgentError::InvalidConfig(format!(
                    "unknown replay scenario {name:?}; known scenarios: {}",
                    self.scenario_names().join(", ")
                ))),
            },
        }
    }
}

#[async_trait]
impl AgentClientFactory for ReplayAgentFactory {
    async fn create(&self, ctx: AgentContext) -> Result<AgentConnection, AgentError> {
        let scenario = match self.resolve(ctx.config.model.as_deref()) {
            Ok(scenario) => scenario,
            Err(err) => {
                tracing::info!(session_id = %ctx.session_id, error = %err, "replay agent not started");
                return Err(err);
            }
        };
        tracing::info!(
            session_id = %ctx.session_id,
            model = ctx.config.model.as_deref().unwrap_or(DEFAULT_SCENARIO),
            "replay agent starting"
        );
        Ok(agent::start(ctx, scenario, &self.live))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn every_builtin_parses() {
        for (name, text) in BUILTIN {
            let script = Script::parse(name, text).unwrap();
            assert!(script.turns() >= 1, "{name}");
        }
        assert_eq!(ReplayAgentFactory::new().scripts.len(), BUILTIN.len());
    }

    #[test]
    fn builtins_match_the_shipped_files() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
        assert_eq!(files, names, "every file in scenarios/ is embedded");
    }

    #[test]
    fn names_and_resolution() {
        let f = ReplayAgentFactory::new();
        let names = f.scenario_names();
        assert_eq!(names.len(), BUILTIN.len() + SYNTHETIC.len());
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(names.contains(&"stream:N[:ms[:bytes]]".to_owned()));
        assert!(matches!(f.resolve(None), Ok(Scenario::Echo)));
        assert!(matches!(
            f.resolve(Some("fixture:echo")),
            Ok(Scenario::Echo)
        ));
        assert!(matches!(
            f.resolve(Some("fixture:read_allow")),
            Ok(Scenario::Script(_))
        ));
        assert!(matches!(
            f.resolve(Some("stream:2:0:10")),
            Ok(Scenario::Stream(_))
        ));
        let Err(AgentError::InvalidConfig(msg)) = f.resolve(Some("nope")) else {
            panic!()
        };
        assert_eq!(
            msg,
            format!(
                "unknown replay scenario \"nope\"; known scenarios: {}",
                names.join(", ")
            )
        );
        let Err(AgentError::InvalidConfig(msg)) = f.resolve(Some("stream:x")) else {
            panic!()
        };
        assert!(msg.contains("expected stream:N[:ms[:bytes]][:ts]"), "{msg}");
        assert!(matches!(
            f.resolve(Some("stream:2:1:10:ts")),
            Ok(Scenario::Stream(StreamSpec {
                timestamps: true,
                ..
            }))
        ));
    }
}
