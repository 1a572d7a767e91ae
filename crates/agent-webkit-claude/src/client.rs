//! [`ClaudeAgentFactory`] / the per-session client: one CLI process per session, the
//! `initialize` handshake, the stdout reader that routes every frame (claude-cli-protocol.md
//! §2.2), host → CLI control requests matched by id, and CLI → host requests (`can_use_tool`,
//! `hook_callback`, anything else refused) each in its own task.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_webkit_core::agent::{
    AgentClient, AgentClientFactory, AgentConnection, AgentContext, AgentError, AgentMessage,
};
use agent_webkit_core::models::UserContent;
use agent_webkit_core::permission::PermissionHandle;
use agent_webkit_core::permission::{PermissionDecision, PermissionError};
use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use tokio::process::ChildStdout;
use tokio::sync::{mpsc, oneshot, OnceCell};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::discover::find_cli;
use crate::mirror::{MirrorBatcher, MirrorError};
use crate::options::{
    inherited_config_dir, initialize_request, launch_spec, session_cwd, ClaudeOptions, HookSpec,
    LaunchInputs, PERMISSION_MODES,
};
use crate::process::{CliProcess, LineReader};
use crate::resume::{self, ResumeDir};
use crate::translate::{is_self_started, result_user_uuids, Translator};

/// Capacity of the channel from the stdout reader to the session.
const MESSAGE_BUFFER: usize = 1024;

/// Builds one Claude CLI process per session.
#[derive(Debug, Clone)]
pub struct ClaudeAgentFactory {
    options: Arc<ClaudeOptions>,
    live: Arc<AtomicUsize>,
}

impl ClaudeAgentFactory {
    /// A factory launching the CLI with `options`.
    pub fn new(options: ClaudeOptions) -> Self {
        Self {
            options: Arc::new(options),
            live: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The options sessions are launched with.
    pub fn options(&self) -> &ClaudeOptions {
        &self.options
    }

    /// CLI processes started by this factory and not yet reaped.
    pub fn live_processes(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }
}

/// Kills a half-started process if `create` fails or is cancelled.
struct StartGuard(Option<Arc<Shared>>);

impl Drop for StartGuard {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            shared.abandon();
        }
    }
}

#[async_trait]
impl AgentClientFactory for ClaudeAgentFactory {
    async fn create(&self, ctx: AgentContext) -> Result<AgentConnection, AgentError> {
        let options = &self.options;
        if let Some(mode) = &ctx.config.permission_mode {
            check_mode(mode)?;
        }
        let program = find_cli(options.cli_path.as_deref())
            .map_err(|e| AgentError::Unavailable(e.to_string()))?;
        let store = ctx.store.clone().filter(|_| !options.disable_mirror);
        let cwd = session_cwd(options, &ctx.config);
        if !cwd.is_dir() {
            return Err(AgentError::InvalidConfig(format!(
                "Working directory does not exist: {}",
                cwd.display()
            )));
        }
        let plan = resume::plan(
            &ctx.session_id,
            ctx.resume.as_deref(),
            ctx.store.as_ref(),
            &cwd,
            &inherited_config_dir(options),
            options.timeouts.store_load,
        )
        .await?;
        let spec = launch_spec(
            options,
            program,
            &LaunchInputs {
                session_id: &plan.session_id,
                resume: plan.resume.as_deref(),
                config_dir: plan.dir.as_ref().map(ResumeDir::path),
                session: &ctx.config,
                mirror: store.is_some(),
            },
        );
        let started = Instant::now();
        let (process, stdout) =
            match CliProcess::spawn(&spec, &ctx.session_id, Arc::clone(&self.live)) {
                Ok(spawned) => spawned,
                Err(e) => {
                    if let Some(dir) = plan.dir {
                        dir.remove().await;
                    }
                    return Err(AgentError::StartFailed(format!(
                        "cannot start the Claude CLI {}: {e}",
                        spec.program.display()
                    )));
                }
            };
        let resumed = plan.dir.is_some();
        if let Some(dir) = plan.dir {
            process.attach_resume_dir(dir).await;
        }
        let (init, hooks) = initialize_request(&options.hooks);
        let shared = Arc::new(Shared {
            session_id: ctx.session_id.clone(),
            process,
            permissions: ctx.permissions.clone(),
            hooks,
            control_timeout: options.timeouts.control,
            counter: AtomicU64::new(0),
            pending: Mutex::new(HashMap::new()),
            cli_requests: Mutex::new(HashMap::new()),
            awaiting: Mutex::new(VecDeque::new()),
            closing: AtomicBool::new(false),
            dead: Mutex::new(None),
        });
        let mut guard = StartGuard(Some(Arc::clone(&shared)));
        let batcher = store.map(|store| {
            Arc::new(MirrorBatcher::new(
                store,
                &spec.config_dir,
                options.timeouts.store_append,
                &ctx.session_id,
            ))
        });
        let (tx, rx) = mpsc::channel(MESSAGE_BUFFER);
        let reader = tokio::spawn(reader_loop(
            Arc::clone(&shared),
            LineReader::new(stdout, options.line_limit()),
            tx,
            batcher,
            Translator::new(options.thinking_deltas),
        ));
        let info = match shared.request(init, options.timeouts.initialize).await {
            Ok(info) => info,
            Err(err) => {
                let detail = match err {
                    ControlError::Rejected { error, .. } => error,
                    ControlError::Agent(err) => err.to_string(),
                };
                // Reap it now (deleting a resume directory) rather than in the background.
                guard.0 = None;
                shared.closing.store(true, Ordering::Release);
                shared.process.kill().await;
                return Err(AgentError::StartFailed(format!(
                    "the Claude CLI did not complete its initialize handshake: {detail}"
                )));
            }
        };
        let cli_version = info
            .get("claude_code_version")
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .to_owned();
        tracing::info!(
            session_id = %ctx.session_id,
            pid = shared.process.pid(),
            cli_version,
            ready_ms = started.elapsed().as_millis() as u64,
            resume = plan.resume.as_deref(),
            materialized = resumed,
            "Claude CLI ready"
        );
        guard.0 = None;
        let messages =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
            );
        Ok(AgentConnection {
            client: Arc::new(ClaudeClient {
                shared,
                reader: tokio::sync::Mutex::new(Some(reader)),
                disconnected: OnceCell::new(),
                graceful_exit: options.timeouts.graceful_exit,
                terminate: options.timeouts.terminate,
                server_info: info,
            }),
            messages: Box::pin(messages),
        })
    }
}

fn check_mode(mode: &str) -> Result<(), AgentError> {
    if PERMISSION_MODES.contains(&mode) {
        Ok(())
    } else {
        Err(AgentError::InvalidConfig(format!(
            "Unknown permission mode {mode:?}; expected one of {}",
            PERMISSION_MODES.join(", ")
        )))
    }
}

/// A host → CLI control request that did not succeed.
#[derive(Debug)]
enum ControlError {
    /// The CLI answered with an error response.
    Rejected { error: String, code: Option<String> },
    /// No answer (process gone, timeout, stdin closed).
    Agent(AgentError),
}

impl ControlError {
    fn into_agent_error(self, invalid_codes: &[&str]) -> AgentError {
        match self {
            ControlError::Rejected { error, code } => match code.as_deref() {
                Some(code) if invalid_codes.contains(&code) => AgentError::InvalidConfig(error),
                Some("unsupported_request") => AgentError::Unsupported("this control request"),
                _ => AgentError::Rejected(error),
            },
            ControlError::Agent(err) => err,
        }
    }
}

struct CliRequest {
    token: CancellationToken,
    correlation_id: Option<String>,
}

/// State shared by the client, the stdout reader and the CLI-request tasks.
struct Shared {
    session_id: String,
    process: Arc<CliProcess>,
    permissions: PermissionHandle,
    hooks: Vec<HookSpec>,
    control_timeout: Duration,
    counter: AtomicU64,
    /// Host → CLI requests waiting for their response.
    pending: Mutex<HashMap<String, oneshot::Sender<Result<Value, ControlError>>>>,
    /// CLI → host requests being handled.
    cli_requests: Mutex<HashMap<String, CliRequest>>,
    /// Uuids of user messages whose `result` the session waits for.
    awaiting: Mutex<VecDeque<String>>,
    /// The session asked us to stop.
    closing: AtomicBool,
    /// Why the process is gone (set once stdout ended).
    dead: Mutex<Option<String>>,
}

impl Shared {
    fn next_request_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::AcqRel) + 1;
        let random = uuid::Uuid::new_v4().simple().to_string();
        format!("req_{n}_{}", &random[..8])
    }

    fn dead_error(&self) -> Option<AgentError> {
        self.dead.lock().clone().map(AgentError::Exited)
    }

    async fn write(&self, frame: &Value) -> Result<(), AgentError> {
        if let Some(err) = self.dead_error() {
            return Err(err);
        }
        self.process
            .send(frame.to_string())
            .await
            .map_err(|()| self.dead_error().unwrap_or(AgentError::Disconnected))
    }

    /// Sends a control request and waits for its response payload.
    async fn request(&self, request: Value, timeout: Duration) -> Result<Value, ControlError> {
        let id = self.next_request_id();
        let subtype = request
            .get("subtype")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id.clone(), tx);
        let frame = json!({"type": "control_request", "request_id": id, "request": request});
        if let Err(err) = self.write(&frame).await {
            self.pending.lock().remove(&id);
            return Err(ControlError::Agent(err));
        }
        tracing::debug!(session_id = %self.session_id, request_id = %id, subtype, "control request sent");
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(ControlError::Agent(
                self.dead_error().unwrap_or(AgentError::Disconnected),
            )),
            Err(_) => {
                self.pending.lock().remove(&id);
                tracing::warn!(session_id = %self.session_id, request_id = %id, subtype, "control request timed out");
                let cancel = json!({"type": "control_cancel_request", "request_id": id});
                let _ = self.write(&cancel).await;
                Err(ControlError::Agent(AgentError::Timeout(timeout)))
            }
        }
    }

    fn resolve_response(&self, frame: &Value) {
        let Some(response) = frame.get("response") else {
            return;
        };
        let Some(id) = response.get("request_id").and_then(Value::as_str) else {
            return;
        };
        let Some(waiter) = self.pending.lock().remove(id) else {
            tracing::debug!(session_id = %self.session_id, request_id = id, "response for a request nobody waits on");
            return;
        };
        let outcome = if response.get("subtype").and_then(Value::as_str) == Some("error") {
            Err(ControlError::Rejected {
                error: response
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .to_owned(),
                code: response
                    .get("error_code")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            })
        } else {
            Ok(response
                .get("response")
                .cloned()
                .unwrap_or_else(|| json!({})))
        };
        let _ = waiter.send(outcome);
    }

    /// Decides whether a `result` frame ends the turn the session waits on.
    fn ends_turn(&self, frame: &Value) -> bool {
        let mut awaiting = self.awaiting.lock();
        let uuids = result_user_uuids(frame);
        if let Some(pos) = awaiting.iter().position(|u| uuids.contains(u)) {
            awaiting.remove(pos);
            return true;
        }
        if is_self_started(frame) {
            return false;
        }
        awaiting.pop_front().is_some()
    }

    fn spawn_cli_request(self: &Arc<Self>, frame: &Value) {
        let Some(request_id) = frame.get("request_id").and_then(Value::as_str) else {
            tracing::warn!(session_id = %self.session_id, "control_request without request_id ignored");
            return;
        };
        let request_id = request_id.to_owned();
        let request = frame.get("request").cloned().unwrap_or(Value::Null);
        let subtype = request
            .get("subtype")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let correlation_id = match subtype.as_str() {
            "can_use_tool" => Some(
                request
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .unwrap_or(&request_id)
                    .to_owned(),
            ),
            "hook_callback" => Some(request_id.clone()),
            _ => None,
        };
        let token = CancellationToken::new();
        self.cli_requests.lock().insert(
            request_id.clone(),
            CliRequest {
                token: token.clone(),
                correlation_id: correlation_id.clone(),
            },
        );
        tracing::debug!(session_id = %self.session_id, request_id, subtype, correlation_id, "CLI request");
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            let outcome = tokio::select! {
                biased;
                () = token.cancelled() => None,
                outcome = shared.handle_cli_request(&subtype, request, correlation_id) => outcome,
            };
            shared.cli_requests.lock().remove(&request_id);
            let Some(outcome) = outcome else {
                tracing::debug!(session_id = %shared.session_id, request_id, "CLI request withdrawn; not answered");
                return;
            };
            let response = match outcome {
                Ok(payload) => json!({"type": "control_response", "response": {
                    "subtype": "success", "request_id": request_id, "response": payload}}),
                Err(error) => json!({"type": "control_response", "response": {
                    "subtype": "error", "request_id": request_id, "error": error}}),
            };
            if let Err(err) = shared.write(&response).await {
                tracing::debug!(session_id = %shared.session_id, request_id, error = %err, "could not answer a CLI request");
            }
        });
    }

    /// `None`: withdrawn, do not answer. `Some(Err)`: answer with an error response.
    async fn handle_cli_request(
        &self,
        subtype: &str,
        request: Value,
        correlation_id: Option<String>,
    ) -> Option<Result<Value, String>> {
        match subtype {
            "can_use_tool" => self.can_use_tool(request).await,
            "hook_callback" => {
                self.hook_callback(request, correlation_id.unwrap_or_default())
                    .await
            }
            "mcp_message" => {
                let server = request
                    .get("server_name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let id = request
                    .get("message")
                    .and_then(|m| m.get("id"))
                    .cloned()
                    .unwrap_or(Value::Null);
                Some(Ok(json!({"mcp_response": {"jsonrpc": "2.0", "id": id,
                    "error": {"code": -32601, "message": format!("Server '{server}' not found")}}})))
            }
            other => {
                tracing::info!(session_id = %self.session_id, subtype = other, "refusing unsupported CLI request");
                Some(Err(format!("Unsupported control request subtype: {other}")))
            }
        }
    }

    async fn can_use_tool(&self, request: Value) -> Option<Result<Value, String>> {
        let tool_name = request
            .get("tool_name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let input = request.get("input").cloned().unwrap_or_else(|| json!({}));
        let mut context = Map::new();
        if let Some(id) = request.get("tool_use_id") {
            context.insert("tool_use_id".into(), id.clone());
        }
        for (from, to) in [
            ("permission_suggestions", "suggestions"),
            ("blocked_path", "blocked_path"),
            ("decision_reason", "decision_reason"),
            ("title", "title"),
            ("display_name", "display_name"),
            ("description", "description"),
            ("agent_id", "agent_id"),
        ] {
            if let Some(value) = request.get(from).filter(|v| !v.is_null()) {
                context.insert(to.into(), value.clone());
            }
        }
        let decision = self
            .permissions
            .can_use_tool(&tool_name, input.clone(), Value::Object(context))
            .await;
        match decision {
            Ok(PermissionDecision::Allow {
                updated_input,
                updated_permissions,
            }) => {
                let mut out = json!({
                    "behavior": "allow",
                    "updatedInput": updated_input.map(Value::Object).unwrap_or(input),
                });
                if let Some(perms) = updated_permissions {
                    out["updatedPermissions"] = Value::Array(perms);
                }
                Some(Ok(out))
            }
            Ok(PermissionDecision::Deny { message, interrupt }) => {
                let mut out = json!({"behavior": "deny", "message": message});
                if interrupt {
                    out["interrupt"] = Value::Bool(true);
                }
                Some(Ok(out))
            }
            Err(PermissionError::Cancelled(_)) => None,
            Err(err) => Some(Err(err.to_string())),
        }
    }

    async fn hook_callback(
        &self,
        request: Value,
        correlation_id: String,
    ) -> Option<Result<Value, String>> {
        let callback_id = request
            .get("callback_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let hook = callback_id
            .strip_prefix("hook_")
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| self.hooks.get(n));
        let Some(hook) = hook else {
            return Some(Err(format!("No hook callback found for ID: {callback_id}")));
        };
        let input = request.get("input").cloned().unwrap_or_else(|| json!({}));
        let event = input
            .get("hook_event_name")
            .and_then(Value::as_str)
            .unwrap_or(&hook.event)
            .to_owned();
        let decision = self
            .permissions
            .hook_decision(&correlation_id, &event, input);
        tokio::pin!(decision);
        tokio::select! {
            outcome = &mut decision => match outcome {
                Ok(decision) => Some(Ok(Value::Object(decision))),
                Err(PermissionError::Cancelled(_)) => None,
                Err(err) => Some(Err(err.to_string())),
            },
            () = tokio::time::sleep(hook.timeout) => {
                // Nobody answered: withdraw it from clients and give no opinion.
                self.permissions.cancel(&correlation_id, "hook decision timed out");
                Some(Ok(json!({})))
            }
        }
    }

    fn cancel_cli_request(&self, request_id: &str) {
        let Some(request) = self.cli_requests.lock().remove(request_id) else {
            return;
        };
        if let Some(correlation_id) = &request.correlation_id {
            if self
                .permissions
                .cancel(correlation_id, "withdrawn by the Claude CLI")
            {
                tracing::info!(session_id = %self.session_id, correlation_id, "prompt withdrawn by the CLI");
            }
        }
        request.token.cancel();
    }

    /// Marks the process gone: fails waiting host requests and stops CLI-request tasks.
    fn mark_dead(&self, reason: String) {
        *self.dead.lock() = Some(reason.clone());
        let waiters: Vec<_> = self.pending.lock().drain().collect();
        for (_, waiter) in waiters {
            let _ = waiter.send(Err(ControlError::Agent(AgentError::Exited(reason.clone()))));
        }
        let requests: Vec<_> = self.cli_requests.lock().drain().collect();
        for (_, request) in requests {
            request.token.cancel();
        }
    }

    /// Synchronous last resort when the client is dropped without `disconnect`.
    fn abandon(&self) {
        self.closing.store(true, Ordering::Release);
        let process = Arc::clone(&self.process);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                process.kill().await;
            });
        }
    }
}

async fn reader_loop(
    shared: Arc<Shared>,
    mut lines: LineReader<ChildStdout>,
    tx: mpsc::Sender<Result<AgentMessage, AgentError>>,
    batcher: Option<Arc<MirrorBatcher>>,
    mut translator: Translator,
) {
    let failure: Option<String> = loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                let line = line.trim_ascii();
                if line.is_empty() {
                    continue;
                }
                if line.first() != Some(&b'{') {
                    tracing::debug!(session_id = %shared.session_id, line = %String::from_utf8_lossy(line), "non-JSON stdout line skipped");
                    continue;
                }
                let frame: Value = match serde_json::from_slice(line) {
                    Ok(frame) => frame,
                    Err(err) => {
                        break Some(format!(
                            "the Claude CLI printed a line that is not valid JSON ({err})"
                        ))
                    }
                };
                dispatch(&shared, frame, &tx, batcher.as_ref(), &mut translator).await;
            }
            Ok(None) => break None,
            Err(err) => break Some(format!("unreadable output from the Claude CLI: {err}")),
        }
    };
    if failure.is_some() {
        shared.process.kill().await;
    }
    if let Some(batcher) = &batcher {
        report_mirror_errors(&shared, &tx, batcher.drain().await).await;
    }
    let closing = shared.closing.load(Ordering::Acquire);
    let status = if closing {
        None
    } else {
        shared.process.wait_for(Duration::from_secs(2)).await
    };
    let stderr = shared.process.stderr_tail();
    let mut reason = match (&failure, status) {
        (Some(failure), _) => failure.clone(),
        (None, Some(status)) => format!("the Claude CLI exited ({status})"),
        (None, None) => "the Claude CLI closed its output".to_owned(),
    };
    if !stderr.is_empty() {
        reason.push_str(": ");
        reason.push_str(&stderr);
    }
    shared.mark_dead(reason.clone());
    if !closing {
        tracing::warn!(session_id = %shared.session_id, reason = %reason, "Claude CLI ended unexpectedly");
        let _ = tx.send(Err(AgentError::Exited(reason))).await;
    }
}

async fn dispatch(
    shared: &Arc<Shared>,
    frame: Value,
    tx: &mpsc::Sender<Result<AgentMessage, AgentError>>,
    batcher: Option<&Arc<MirrorBatcher>>,
    translator: &mut Translator,
) {
    let kind = frame
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match kind {
        "control_response" => shared.resolve_response(&frame),
        "control_request" => shared.spawn_cli_request(&frame),
        "control_cancel_request" => {
            if let Some(id) = frame.get("request_id").and_then(Value::as_str) {
                shared.cancel_cli_request(id);
            }
        }
        "transcript_mirror" => {
            let Some(batcher) = batcher else { return };
            let path = frame.get("filePath").and_then(Value::as_str);
            let entries = frame.get("entries").and_then(Value::as_array);
            let (Some(path), Some(entries)) = (path, entries) else {
                tracing::warn!(session_id = %shared.session_id, "malformed transcript_mirror frame ignored");
                return;
            };
            if batcher.enqueue(path.to_owned(), entries.clone()) {
                let (batcher, tx, shared) = (Arc::clone(batcher), tx.clone(), Arc::clone(shared));
                tokio::spawn(async move {
                    let errors = batcher.drain().await;
                    report_mirror_errors(&shared, &tx, errors).await;
                });
            }
        }
        "keep_alive" => {}
        "system"
            if frame.get("subtype").and_then(Value::as_str) == Some("session_state_changed") =>
        {
            tracing::trace!(session_id = %shared.session_id, state = ?frame.get("state"), "CLI state");
        }
        _ => {
            let is_result = kind == "result";
            if is_result {
                // The store has the turn before any client sees its end (SDK semantics).
                if let Some(batcher) = batcher {
                    report_mirror_errors(shared, tx, batcher.drain().await).await;
                }
            }
            for mut message in translator.translate(&frame, &shared.session_id) {
                if let AgentMessage::Result(result) = &mut message {
                    result.ends_turn = shared.ends_turn(&frame);
                    tracing::debug!(session_id = %shared.session_id, subtype = %result.subtype, ends_turn = result.ends_turn, "turn result");
                }
                let _ = tx.send(Ok(message)).await;
            }
        }
    }
}

async fn report_mirror_errors(
    shared: &Shared,
    tx: &mpsc::Sender<Result<AgentMessage, AgentError>>,
    errors: Vec<MirrorError>,
) {
    for error in errors {
        let key = error
            .key
            .map(|k| match k.subpath {
                Some(sub) => format!("{}/{}/{sub}", k.project_key, k.session_id),
                None => format!("{}/{}", k.project_key, k.session_id),
            })
            .unwrap_or_else(|| "?".into());
        tracing::warn!(session_id = %shared.session_id, key, error = %error.error, "transcript mirror failed");
        let _ = tx
            .send(Ok(AgentMessage::Error {
                code: "mirror_error".into(),
                message: format!(
                    "Could not mirror the transcript to the session store ({key}): {}",
                    error.error
                ),
            }))
            .await;
    }
}

/// The command side of one session's CLI.
pub struct ClaudeClient {
    shared: Arc<Shared>,
    reader: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    disconnected: OnceCell<()>,
    graceful_exit: Duration,
    terminate: Duration,
    server_info: Value,
}

impl std::fmt::Debug for ClaudeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaudeClient")
            .field("session_id", &self.shared.session_id)
            .field("pid", &self.shared.process.pid())
            .finish_non_exhaustive()
    }
}

impl ClaudeClient {
    /// The CLI's `initialize` response (commands, models, account, version, pid...).
    pub fn server_info(&self) -> &Value {
        &self.server_info
    }

    /// The CLI's process id.
    pub fn pid(&self) -> Option<u32> {
        self.shared.process.pid()
    }

    async fn control(&self, request: Value, invalid_codes: &[&str]) -> Result<Value, AgentError> {
        if self.shared.closing.load(Ordering::Acquire) {
            return Err(AgentError::Disconnected);
        }
        self.shared
            .request(request, self.shared.control_timeout)
            .await
            .map_err(|e| e.into_agent_error(invalid_codes))
    }
}

impl Drop for ClaudeClient {
    fn drop(&mut self) {
        if self.disconnected.get().is_none() {
            self.shared.abandon();
        }
    }
}

#[async_trait]
impl AgentClient for ClaudeClient {
    async fn query(&self, content: UserContent) -> Result<(), AgentError> {
        let uuid = uuid::Uuid::new_v4().to_string();
        let content = match content {
            UserContent::Text(text) => Value::String(text),
            UserContent::Blocks(blocks) => Value::Array(blocks),
        };
        let frame = json!({
            "type": "user",
            "message": {"role": "user", "content": content},
            "parent_tool_use_id": null,
            "session_id": "default",
            "uuid": uuid,
        });
        self.shared.awaiting.lock().push_back(uuid.clone());
        if let Err(err) = self.shared.write(&frame).await {
            self.shared.awaiting.lock().retain(|u| *u != uuid);
            return Err(err);
        }
        tracing::debug!(session_id = %self.shared.session_id, message_uuid = %uuid, "user message sent");
        Ok(())
    }

    async fn interrupt(&self) -> Result<(), AgentError> {
        self.control(json!({"subtype": "interrupt"}), &[]).await?;
        Ok(())
    }

    async fn set_permission_mode(&self, mode: &str) -> Result<(), AgentError> {
        check_mode(mode)?;
        self.control(
            json!({"subtype": "set_permission_mode", "mode": mode}),
            &["not_found", "invalid_request", "invalid_mode"],
        )
        .await?;
        Ok(())
    }

    async fn set_model(&self, model: Option<&str>) -> Result<(), AgentError> {
        self.control(
            json!({"subtype": "set_model", "model": model}),
            &["not_found", "invalid_request", "model_not_found"],
        )
        .await?;
        Ok(())
    }

    async fn stop_task(&self, task_id: &str) -> Result<(), AgentError> {
        self.control(json!({"subtype": "stop_task", "task_id": task_id}), &[])
            .await?;
        Ok(())
    }

    async fn disconnect(&self) -> Result<(), AgentError> {
        self.disconnected
            .get_or_init(|| async {
                let shared = &self.shared;
                shared.closing.store(true, Ordering::Release);
                let started = Instant::now();
                // A running turn would keep the CLI busy after stdin closes: interrupt it first.
                if !shared.awaiting.lock().is_empty() {
                    let interrupt = shared.request(json!({"subtype": "interrupt"}), Duration::from_secs(2));
                    if let Err(err) = interrupt.await {
                        tracing::debug!(session_id = %shared.session_id, error = ?err, "interrupt before close failed");
                    }
                }
                // Close stdin: the CLI finishes writing (transcript tail entries) and exits.
                shared.process.close_stdin().await;
                let mut reader = self.reader.lock().await;
                if let Some(handle) = reader.as_mut() {
                    // The reader drains stdout to EOF and flushes the mirror one last time.
                    if tokio::time::timeout(self.graceful_exit, &mut *handle)
                        .await
                        .is_ok()
                    {
                        *reader = None;
                    }
                }
                let left = self.graceful_exit.saturating_sub(started.elapsed());
                let status = shared.process.terminate(left, self.terminate).await;
                if let Some(handle) = reader.take() {
                    // Output ends with the process; give the final flush a moment, then stop.
                    let abort = handle.abort_handle();
                    if tokio::time::timeout(Duration::from_secs(2), handle).await.is_err() {
                        abort.abort();
                        tracing::warn!(session_id = %shared.session_id, "stdout reader did not finish; stopped");
                    }
                }
                tracing::info!(
                    session_id = %shared.session_id,
                    status = ?status,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "Claude CLI disconnected"
                );
            })
            .await;
        Ok(())
    }
}
