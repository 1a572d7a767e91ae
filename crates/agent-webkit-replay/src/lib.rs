//! # agent-webkit-replay
//!
//! An [`AgentClientFactory`] that replays scripted scenarios, for offline UI work, tests and
//! benchmarks. The session's `model` names the scenario (`"read_allow"` or
//! `"fixture:read_allow"`; none → `echo`). Built in: the recorded fixture scenarios (shipped in
//! `scenarios/`), and the synthetic `echo`, `controls`, `crash` and `stream:N[:ms[:bytes]]`.
//! See this crate's README for the script format and the semantics of each scenario.

mod script;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agent_webkit_core::agent::{
    AgentClient, AgentClientFactory, AgentConnection, AgentContext, AgentError, AgentMessage,
    AssistantMessage, TurnResult,
};
use agent_webkit_core::models::UserContent;
use agent_webkit_core::permission::PermissionHandle;
use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use script::{Script, ScriptError, Step};

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
];

const SYNTHETIC: &[&str] = &["controls", "crash", "echo", "stream:N[:ms[:bytes]]"];

/// Scenario directory loading failures.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A directory or file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A script is malformed.
    #[error(transparent)]
    Script(#[from] ScriptError),
}

/// Builds replay agents (see the crate docs).
#[derive(Debug, Clone)]
pub struct ReplayAgentFactory {
    scripts: BTreeMap<String, Arc<Script>>,
}

impl Default for ReplayAgentFactory {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayAgentFactory {
    /// The built-in scenarios.
    pub fn new() -> Self {
        let scripts = BUILTIN
            .iter()
            .filter_map(|(name, text)| match Script::parse(name, text) {
                Ok(script) => Some(((*name).to_owned(), Arc::new(script))),
                Err(err) => {
                    tracing::error!(error = %err, "built-in scenario is malformed");
                    None
                }
            })
            .collect();
        Self { scripts }
    }

    /// The built-ins plus every `*.jsonl` in `dir` (name = file stem; overrides a built-in).
    pub fn with_dir(dir: impl AsRef<Path>) -> Result<Self, ReplayError> {
        let dir = dir.as_ref();
        let io = |path: &Path, source| ReplayError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut factory = Self::new();
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| io(dir, e))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|ext| ext == "jsonl"))
            .collect();
        entries.sort();
        for path in entries {
            let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let script = Script::parse(&path.display().to_string(), &text)?;
            factory.scripts.insert(name, Arc::new(script));
        }
        Ok(factory)
    }

    /// Adds (or replaces) a scenario.
    pub fn with_script(mut self, name: &str, script: Script) -> Self {
        self.scripts.insert(name.to_owned(), Arc::new(script));
        self
    }

    /// Every scenario name, sorted (synthetic ones included, `stream` as its pattern).
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

    fn scenario(&self, model: Option<&str>) -> Result<Scenario, AgentError> {
        let name = model.unwrap_or("echo");
        let name = name.strip_prefix("fixture:").unwrap_or(name);
        if let Some(script) = self.scripts.get(name) {
            return Ok(Scenario::Script(Arc::clone(script)));
        }
        match name {
            "echo" => Ok(Scenario::Echo),
            "controls" => Ok(Scenario::Controls),
            "crash" => Ok(Scenario::Crash),
            _ if name.starts_with("stream:") => parse_stream(name).ok_or_else(|| {
                AgentError::InvalidConfig(format!(
                    "invalid replay scenario {name:?}: expected stream:N[:ms[:bytes]]"
                ))
            }),
            _ => Err(AgentError::InvalidConfig(format!(
                "unknown replay scenario {name:?}; known scenarios: {}",
                self.scenario_names().join(", ")
            ))),
        }
    }
}

fn parse_stream(name: &str) -> Option<Scenario> {
    let mut parts = name.strip_prefix("stream:")?.split(':');
    let count = parts.next()?.parse().ok()?;
    let ms = parts.next().map(str::parse).transpose().ok()?.unwrap_or(0);
    let bytes = parts.next().map(str::parse).transpose().ok()?.unwrap_or(0);
    if parts.next().is_some() {
        return None;
    }
    Some(Scenario::Stream {
        count,
        interval: Duration::from_millis(ms),
        bytes,
    })
}

#[derive(Debug, Clone)]
enum Scenario {
    Script(Arc<Script>),
    Echo,
    Controls,
    Crash,
    Stream {
        count: u64,
        interval: Duration,
        bytes: usize,
    },
}

#[async_trait]
impl AgentClientFactory for ReplayAgentFactory {
    async fn create(&self, ctx: AgentContext) -> Result<AgentConnection, AgentError> {
        let scenario = self.scenario(ctx.config.model.as_deref())?;
        let (query_tx, query_rx) = mpsc::unbounded_channel();
        let (out_tx, out_rx) = mpsc::channel(64);
        let (interrupt_tx, interrupt_rx) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            model: Mutex::new(ctx.config.model.clone()),
            controls: Mutex::new(Vec::new()),
        });
        let stop = CancellationToken::new();
        let agent = ReplayTask {
            session_id: ctx.session_id.clone(),
            scenario,
            permissions: ctx.permissions,
            shared: Arc::clone(&shared),
            out: out_tx,
            interrupts: interrupt_rx,
            turn: 0,
        };
        let task_stop = stop.clone();
        let span = tracing::debug_span!("replay_agent", session_id = %ctx.session_id);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                tokio::select! {
                    () = task_stop.cancelled() => {}
                    () = agent.run(query_rx) => {}
                }
            },
            span,
        ));
        let messages = futures_util::stream::unfold(out_rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(AgentConnection {
            client: Arc::new(ReplayClient {
                queries: query_tx,
                interrupts: interrupt_tx,
                shared,
                stop,
            }),
            messages: Box::pin(messages),
        })
    }
}

struct Shared {
    model: Mutex<Option<String>>,
    controls: Mutex<Vec<Value>>,
}

/// The command side of a replay agent.
struct ReplayClient {
    queries: mpsc::UnboundedSender<UserContent>,
    interrupts: watch::Sender<u64>,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl ReplayClient {
    fn live(&self) -> Result<(), AgentError> {
        if self.stop.is_cancelled() {
            Err(AgentError::Disconnected)
        } else {
            Ok(())
        }
    }

    fn record(&self, call: Value) {
        self.shared.controls.lock().push(call);
    }
}

#[async_trait]
impl AgentClient for ReplayClient {
    async fn query(&self, content: UserContent) -> Result<(), AgentError> {
        self.live()?;
        self.queries
            .send(content)
            .map_err(|_| AgentError::Disconnected)
    }

    async fn interrupt(&self) -> Result<(), AgentError> {
        self.live()?;
        self.record(json!(["interrupt"]));
        self.interrupts.send_modify(|n| *n += 1);
        Ok(())
    }

    async fn set_permission_mode(&self, mode: &str) -> Result<(), AgentError> {
        self.live()?;
        self.record(json!(["set_permission_mode", mode]));
        Ok(())
    }

    async fn set_model(&self, model: Option<&str>) -> Result<(), AgentError> {
        self.live()?;
        self.record(json!(["set_model", model]));
        *self.shared.model.lock() = model.map(str::to_owned);
        Ok(())
    }

    async fn stop_task(&self, task_id: &str) -> Result<(), AgentError> {
        self.live()?;
        self.record(json!(["stop_task", task_id]));
        Ok(())
    }

    async fn disconnect(&self) -> Result<(), AgentError> {
        self.stop.cancel();
        Ok(())
    }
}

/// The per-session task that plays the scenario.
struct ReplayTask {
    session_id: String,
    scenario: Scenario,
    permissions: PermissionHandle,
    shared: Arc<Shared>,
    out: mpsc::Sender<Result<AgentMessage, AgentError>>,
    interrupts: watch::Receiver<u64>,
    turn: u64,
}

/// The receiving side is gone: stop playing.
struct Gone;

impl ReplayTask {
    async fn emit(&self, message: AgentMessage) -> Result<(), Gone> {
        self.out.send(Ok(message)).await.map_err(|_| Gone)
    }

    fn result(&self, subtype: &str) -> AgentMessage {
        AgentMessage::Result(TurnResult::new(self.session_id.clone(), subtype))
    }

    async fn run(mut self, mut queries: mpsc::UnboundedReceiver<UserContent>) {
        let mut cursor = 0usize;
        while let Some(content) = queries.recv().await {
            self.turn += 1;
            self.interrupts.borrow_and_update();
            if let Scenario::Crash = self.scenario {
                let _ = self
                    .out
                    .send(Err(AgentError::Exited(
                        "replay scenario \"crash\": the agent crashed after the first user message"
                            .into(),
                    )))
                    .await;
                return;
            }
            self.skip_to_turn(&mut cursor);
            let prompt: Mutex<Option<String>> = Mutex::new(None);
            let mut interrupts = self.interrupts.clone();
            let outcome = {
                let turn = self.play_turn(content, &mut cursor, &prompt);
                tokio::pin!(turn);
                let outcome = tokio::select! {
                    outcome = &mut turn => Some(outcome),
                    _ = interrupts.changed() => None,
                };
                if outcome.is_none() {
                    if let Some(id) = prompt.lock().take() {
                        self.permissions.cancel(&id, "interrupted");
                    }
                }
                outcome
            };
            match outcome {
                Some(Ok(())) => {}
                Some(Err(Gone)) => return,
                None => {
                    tracing::debug!(turn = self.turn, "turn interrupted");
                    let session_id = self
                        .finish_interrupted_turn(&mut cursor)
                        .unwrap_or_else(|| self.session_id.clone());
                    let result = AgentMessage::Result(TurnResult::new(session_id, "interrupted"));
                    if self.emit(result).await.is_err() {
                        return;
                    }
                }
            }
            self.interrupts = interrupts;
        }
    }

    /// For scripts: moves past the `expect_user_query` that starts this turn.
    fn skip_to_turn(&self, cursor: &mut usize) {
        let Scenario::Script(script) = &self.scenario else {
            return;
        };
        while let Some(step) = script.steps.get(*cursor) {
            *cursor += 1;
            if matches!(step, Step::ExpectUserQuery) {
                break;
            }
        }
    }

    /// After an interrupt: skips the rest of the scripted turn; returns its result's session id.
    fn finish_interrupted_turn(&self, cursor: &mut usize) -> Option<String> {
        let Scenario::Script(script) = &self.scenario else {
            return None;
        };
        let mut session_id = None;
        while let Some(step) = script.steps.get(*cursor) {
            match step {
                Step::ExpectUserQuery => break,
                Step::Outbound(AgentMessage::Result(r)) => session_id = Some(r.session_id.clone()),
                _ => {}
            }
            *cursor += 1;
        }
        session_id
    }

    async fn play_turn(
        &self,
        content: UserContent,
        cursor: &mut usize,
        prompt: &Mutex<Option<String>>,
    ) -> Result<(), Gone> {
        match &self.scenario {
            Scenario::Echo => {
                let model = self.shared.model.lock().clone();
                self.emit(AgentMessage::Assistant(AssistantMessage {
                    id: format!("msg_echo_{}", self.turn),
                    content: content.to_blocks(),
                    model,
                    stop_reason: Some("end_turn".into()),
                }))
                .await?;
                self.emit(self.result("success")).await
            }
            Scenario::Controls => {
                let calls = std::mem::take(&mut *self.shared.controls.lock());
                let text = Value::Array(calls).to_string();
                let model = self.shared.model.lock().clone();
                self.emit(AgentMessage::Assistant(AssistantMessage {
                    id: format!("msg_controls_{}", self.turn),
                    content: vec![json!({"type": "text", "text": text})],
                    model,
                    stop_reason: Some("end_turn".into()),
                }))
                .await?;
                self.emit(self.result("success")).await
            }
            Scenario::Crash => Ok(()),
            Scenario::Stream {
                count,
                interval,
                bytes,
            } => {
                let padding = "x".repeat(*bytes);
                for i in 0..*count {
                    if i > 0 && !interval.is_zero() {
                        tokio::time::sleep(*interval).await;
                    } else if i % 64 == 63 {
                        tokio::task::yield_now().await;
                    }
                    let model = self.shared.model.lock().clone();
                    self.emit(AgentMessage::Assistant(AssistantMessage {
                        id: format!("msg_stream_{}_{i}", self.turn),
                        content: vec![
                            json!({"type": "text", "text": format!("chunk {i} {padding}")}),
                        ],
                        model,
                        stop_reason: None,
                    }))
                    .await?;
                }
                self.emit(self.result("success")).await
            }
            Scenario::Script(script) => {
                if *cursor >= script.steps.len() {
                    self.emit(AgentMessage::Error {
                        code: "scenario_exhausted".into(),
                        message: "the replay scenario has no more turns".into(),
                    })
                    .await?;
                    let mut result =
                        TurnResult::new(self.session_id.clone(), "error_during_execution");
                    result.extra.insert("is_error".into(), Value::Bool(true));
                    return self.emit(AgentMessage::Result(result)).await;
                }
                while let Some(step) = script.steps.get(*cursor) {
                    match step {
                        Step::ExpectUserQuery => break,
                        Step::Outbound(message) => self.emit(message.clone()).await?,
                        Step::Delay(delay) => tokio::time::sleep(*delay).await,
                        Step::Callback {
                            tool_name,
                            input,
                            context,
                        } => {
                            let id = context
                                .get("tool_use_id")
                                .and_then(Value::as_str)
                                .map(str::to_owned);
                            *prompt.lock() = id;
                            let decision = self
                                .permissions
                                .can_use_tool(tool_name, input.clone(), context.clone())
                                .await;
                            *prompt.lock() = None;
                            if let Err(err) = decision {
                                tracing::debug!(error = %err, "permission prompt ended without a decision");
                                return Err(Gone);
                            }
                        }
                    }
                    *cursor += 1;
                }
                Ok(())
            }
        }
    }
}
