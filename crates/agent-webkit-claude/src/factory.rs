//! [`ClaudeAgentFactory`]: launches one CLI process per session and completes the
//! `initialize` handshake before handing the session its client and message stream
//! (docs/claude-cli-protocol.md §1, §3), or hands it a warm spare ([`crate::spares`]) when one
//! can serve its settings.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use agent_webkit_core::agent::slots::{AgentSlot, AgentSlots};
use agent_webkit_core::agent::{
    AgentClientFactory, AgentConnection, AgentContext, AgentError, AgentMessage,
};
use agent_webkit_core::store::SessionStore;
use async_trait::async_trait;
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::{mpsc, OnceCell};
use tokio::task::JoinHandle;

use crate::client::ClaudeClient;
use crate::control::{ControlError, Shared};
use crate::discover::find_cli;
use crate::mirror::MirrorBatcher;
use crate::options::{
    inherited_config_dir, initialize_request, launch_spec, session_cwd, ClaudeOptions,
    LaunchInputs, PERMISSION_MODES,
};
use crate::process::{CliProcess, LineReader};
use crate::reader::reader_loop;
use crate::rekey::Rekey;
use crate::resume::{self, ResumeDir};
use crate::spares::{Launcher, PoolOwner, SparePool, TakenSpare};
use crate::translate::Translator;
use crate::watchdog::Watchdog;

/// What clients are told when the CLI cannot be spawned (the reason is in the server log).
pub const START_FAILED: &str =
    "The Claude CLI could not be started; the reason is in the server log.";

/// What clients are told when the CLI does not complete its handshake (its output is in the
/// server log, redacted of configured secrets: it may print anything).
pub const HANDSHAKE_FAILED: &str =
    "The Claude CLI exited or failed during startup; the reason is in the server log.";

/// Capacity of the channel from the stdout reader to the session.
const MESSAGE_BUFFER: usize = 1024;

/// Builds one Claude CLI process per session.
#[derive(Debug, Clone)]
pub struct ClaudeAgentFactory {
    options: Arc<ClaudeOptions>,
    live: Arc<AtomicUsize>,
    watchdog: Arc<Watchdog>,
    spares: Option<Arc<PoolOwner>>,
}

impl ClaudeAgentFactory {
    /// A factory launching the CLI with `options`.
    pub fn new(options: ClaudeOptions) -> Self {
        for name in options.secret_env_names() {
            tracing::warn!(
                variable = name,
                "the configured CLI variable holds a secret value; it is not passed to the Claude CLI"
            );
        }
        Self {
            options: Arc::new(options),
            live: Arc::new(AtomicUsize::new(0)),
            watchdog: Arc::new(Watchdog::new()),
            spares: None,
        }
    }

    /// Keeps `count` warm spares: CLIs started and `initialize`d with the default launch
    /// options, replenished in the background (see [`crate::spares`]). A session in the
    /// default working directory, not resumed, takes one and skips the CLI's start-up; a model
    /// or permission mode other than the defaults is applied by control requests right after
    /// (`bypassPermissions` always starts a fresh CLI). Spares count in
    /// [`live_processes`](Self::live_processes) and, once a registry binds the factory
    /// ([`AgentClientFactory::bind_live_agent_slots`]), hold live-agent slots: they start
    /// only while a slot is free. The pool starts at that binding, or (a factory used on its
    /// own) at the first [`warm_spares_ready`](Self::warm_spares_ready) or session that could
    /// take a spare. Call within a Tokio runtime (without one no spares are kept); `0` keeps none. The spares are killed by
    /// [`shutdown_spares`](Self::shutdown_spares), or when the factory and its clones are dropped.
    pub fn with_warm_spares(mut self, count: usize) -> Self {
        // A previous pool closes when its last owner goes.
        self.spares = None;
        if count > 0 {
            self.spares = SparePool::start(
                Launcher {
                    options: Arc::clone(&self.options),
                    live: Arc::clone(&self.live),
                    watchdog: Arc::clone(&self.watchdog),
                },
                count,
            )
            .map(|pool| Arc::new(PoolOwner(pool)));
        }
        self
    }

    /// Idle warm spares.
    pub fn warm_spares(&self) -> usize {
        self.spares.as_ref().map_or(0, |pool| pool.0.len())
    }

    /// Process ids of the idle warm spares.
    pub fn warm_spare_pids(&self) -> Vec<u32> {
        self.spares
            .as_ref()
            .map_or_else(Vec::new, |pool| pool.0.pids())
    }

    /// Waits until at least `count` warm spares are idle (forever if fewer are kept).
    pub async fn warm_spares_ready(&self, count: usize) {
        match &self.spares {
            Some(pool) => pool.0.ready(count).await,
            None if count == 0 => {}
            None => std::future::pending().await,
        }
    }

    /// Kills up to `count` idle spares to free their slots under pressure, and pauses
    /// replenishing for [`RELEASE_HOLD_OFF`](crate::spares::RELEASE_HOLD_OFF); returns how many
    /// were killed.
    pub async fn release_spares(&self, count: usize) -> usize {
        match &self.spares {
            Some(pool) => pool.0.release(count).await,
            None => 0,
        }
    }

    /// Stops replenishing spares for good and kills the idle ones (sessions are not affected).
    pub async fn shutdown_spares(&self) {
        if let Some(pool) = &self.spares {
            pool.0.shutdown().await;
        }
    }

    /// Whether a warm spare can serve a new session with these settings.
    fn spare_for(&self, ctx: &AgentContext, cwd: &std::path::Path, mirror: bool) -> bool {
        let options = &self.options;
        let Some(pool) = &self.spares else {
            return false;
        };
        let mode = ctx.config.permission_mode.as_deref();
        // The CLI refuses to switch into bypassPermissions unless launched in it.
        let mode_ok = mode.is_none_or(|m| {
            m != "bypassPermissions" || options.permission_mode.as_deref() == Some(m)
        });
        // A spare runs with the server's file checkpointing and is no fork.
        let checkpointing_ok = options.file_checkpointing(&ctx.config)
            == options.file_checkpointing(&agent_webkit_core::agent::SessionConfig::default());
        ctx.resume.is_none()
            && ctx.config.fork.is_none()
            && checkpointing_ok
            && mode_ok
            && pool.0.serves(cwd, mirror)
    }

    /// Hands `spare` to the session of `ctx`: its transcript is filed under the session's id,
    /// then the session's model and permission mode are applied if they differ from the
    /// defaults the spare was started with.
    async fn adopt(
        &self,
        ctx: &AgentContext,
        spare: TakenSpare,
        store: Option<Arc<dyn SessionStore>>,
    ) -> Result<AgentConnection, AgentError> {
        let options = &self.options;
        let started = Instant::now();
        let shared = new_shared(options, ctx, spare.process, spare.hooks);
        let mut guard = StartGuard(Some(Arc::clone(&shared)));
        let batcher = store.map(|store| {
            let store: Arc<dyn SessionStore> = Arc::new(Rekey::new(
                store,
                &spare.cli_session_id,
                ctx.agent_session_id(),
            ));
            Arc::new(MirrorBatcher::new(
                store,
                &spare.config_dir,
                options.timeouts.store_append,
                &ctx.session_id,
            ))
        });
        let (tx, rx) = mpsc::channel(MESSAGE_BUFFER);
        let mut translator = Translator::for_session(options, &ctx.config);
        shared.mcp.wire(&mut translator, &tx);
        let reader = tokio::spawn(reader_loop(
            Arc::clone(&shared),
            spare.lines,
            tx,
            batcher,
            translator,
        ));
        if let Some(model) = ctx
            .config
            .model
            .as_deref()
            .filter(|m| options.model.as_deref() != Some(*m))
        {
            shared
                .request(
                    json!({"subtype": "set_model", "model": model}),
                    options.timeouts.control,
                )
                .await
                .map_err(|e| {
                    e.into_agent_error(&["not_found", "invalid_request", "model_not_found"])
                })?;
        }
        if let Some(mode) = ctx
            .config
            .permission_mode
            .as_deref()
            .filter(|m| options.permission_mode.as_deref() != Some(*m))
        {
            shared
                .request(
                    json!({"subtype": "set_permission_mode", "mode": mode}),
                    options.timeouts.control,
                )
                .await
                .map_err(|e| {
                    e.into_agent_error(&["not_found", "invalid_request", "invalid_mode"])
                })?;
        }
        crate::mcp::start_session_servers(&shared, &ctx.config).await?;
        if let Some(dir) = &ctx.config.attachments_dir {
            // What `--add-dir` gives a CLI started for the session (crate::options).
            // Not fatal: without it the agent asks before reading an attachment.
            if let Err(err) = shared
                .request(
                    crate::attachments::add_directory_request(dir),
                    options.timeouts.control,
                )
                .await
            {
                tracing::warn!(session_id = %ctx.session_id, error = ?err, "the warm spare did not take the attachment directory");
            }
        }
        tracing::info!(
            session_id = %ctx.session_id,
            agent_session_id = %spare.cli_session_id,
            pid = shared.process.pid(),
            spare_age_ms = spare.age.as_millis() as u64,
            ready_ms = started.elapsed().as_millis() as u64,
            "Claude CLI ready (warm spare)"
        );
        guard.0 = None;
        let checkpointing = options.file_checkpointing(&ctx.config);
        let mut conn = connection(options, shared, reader, rx, spare.info, checkpointing);
        // Results name the session as a CLI started for it would (and a resumed one does).
        let (from, to) = (spare.cli_session_id, ctx.agent_session_id().to_owned());
        conn.messages = Box::pin(conn.messages.map(move |mut message| {
            if let Ok(AgentMessage::Result(result)) = &mut message {
                if result.session_id == from {
                    result.session_id.clone_from(&to);
                }
            }
            message
        }));
        Ok(conn)
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
    /// Forks start from the source's transcript (materialized from the store, else the CLI's).
    fn can_fork(&self) -> bool {
        true
    }

    /// Resumable when the transcript is mirrored into a store (`resume` materialises it).
    fn can_resume(&self, store: Option<&Arc<dyn agent_webkit_core::store::SessionStore>>) -> bool {
        store.is_some() && !self.options.disable_mirror
    }

    async fn create(&self, ctx: AgentContext) -> Result<AgentConnection, AgentError> {
        let options = &self.options;
        if let Some(mode) = &ctx.config.permission_mode {
            check_mode(mode)?;
        }
        let store = ctx.store.clone().filter(|_| !options.disable_mirror);
        let cwd = session_cwd(options, &ctx.config);
        if let Some(pool) = self.spares.as_ref() {
            if let Some(spare) = pool.0.take_reserved(&ctx.session_id).await {
                return self.adopt(&ctx, spare, store).await;
            }
        }
        if self.spare_for(&ctx, &cwd, store.is_some()) {
            if let Some(pool) = self.spares.as_ref() {
                if let Some(spare) = pool.0.take().await {
                    return self.adopt(&ctx, spare, store).await;
                }
            }
        }
        let program = find_cli(options.cli_path.as_deref())
            .map_err(|e| AgentError::Unavailable(e.to_string()))?;
        if !cwd.is_dir() {
            return Err(AgentError::InvalidConfig(format!(
                "Working directory does not exist: {}",
                cwd.display()
            )));
        }
        // A fork (create only: a resumed fork continues its own transcript).
        let fork = match (&ctx.config.fork, &ctx.resume) {
            (Some(from), None) => Some(
                crate::fork::plan(
                    from,
                    store.as_ref(),
                    &cwd,
                    &inherited_config_dir(options),
                    options.timeouts.store_load,
                )
                .await?,
            ),
            _ => None,
        };
        let mut plan = match &fork {
            Some(fork) => resume::ResumePlan {
                session_id: ctx.agent_session_id().to_owned(),
                resume: Some(fork.source.clone()),
                dir: None,
            },
            None => {
                resume::plan(
                    ctx.agent_session_id(),
                    ctx.resume.as_deref(),
                    ctx.store.as_ref(),
                    &cwd,
                    &inherited_config_dir(options),
                    options.timeouts.store_load,
                )
                .await?
            }
        };
        let fork_args = fork.as_ref().map(|f| f.extra_args(ctx.agent_session_id()));
        if let Some(dir) = fork.and_then(|f| f.dir) {
            plan.dir = Some(dir);
        }
        let mut spec = launch_spec(
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
        if let Some(args) = fork_args {
            spec.args.extend(args);
        }
        // The request's trace context, as the Python SDK passes it (W3C `traceparent`).
        if let Some(traceparent) = agent_webkit_core::trace::current_traceparent() {
            spec.env.insert("TRACEPARENT".into(), traceparent.into());
        }
        let started = Instant::now();
        let (process, stdout) = match CliProcess::spawn(
            &spec,
            &ctx.session_id,
            Arc::clone(&self.live),
            &options.secrets,
            Arc::clone(&self.watchdog),
        ) {
            Ok(spawned) => spawned,
            Err(e) => {
                if let Some(dir) = plan.dir {
                    dir.remove().await;
                }
                tracing::error!(
                    session_id = %ctx.session_id,
                    program = %spec.program.display(),
                    error = %options.secrets.redact(&e.to_string()),
                    "cannot start the Claude CLI"
                );
                return Err(AgentError::StartFailed(START_FAILED.into()));
            }
        };
        let resumed = plan.dir.is_some();
        if let Some(dir) = plan.dir {
            process.attach_resume_dir(dir).await;
        }
        let (init, hooks) = initialize_request(&options.hooks);
        let shared = new_shared(options, &ctx, process, hooks);
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
        let mut translator = Translator::for_session(options, &ctx.config);
        shared.mcp.wire(&mut translator, &tx);
        let reader = tokio::spawn(reader_loop(
            Arc::clone(&shared),
            LineReader::new(stdout, options.line_limit()),
            tx,
            batcher,
            translator,
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
                let status = shared.process.kill().await;
                tracing::error!(
                    session_id = %ctx.session_id,
                    detail = %options.secrets.redact(&detail),
                    status = ?status,
                    stderr = %shared.process.stderr_tail(),
                    "the Claude CLI did not complete its initialize handshake"
                );
                return Err(AgentError::StartFailed(HANDSHAKE_FAILED.into()));
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
        crate::mcp::start_session_servers(&shared, &ctx.config).await?;
        guard.0 = None;
        Ok(connection(
            options,
            shared,
            reader,
            rx,
            info,
            options.file_checkpointing(&ctx.config),
        ))
    }

    fn spare_count(&self) -> usize {
        self.warm_spares()
    }

    /// Not ready while the CLI cannot be found or is not executable.
    fn check_ready(&self) -> Result<(), String> {
        find_cli(self.options.cli_path.as_deref())
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn reserve_spare(&self, ctx: &AgentContext) -> Option<AgentSlot> {
        let pool = self.spares.as_ref()?;
        if let Some(mode) = &ctx.config.permission_mode {
            check_mode(mode).ok()?;
        }
        let mirror = ctx.store.is_some() && !self.options.disable_mirror;
        let cwd = session_cwd(&self.options, &ctx.config);
        if !self.spare_for(ctx, &cwd, mirror) {
            return None;
        }
        pool.0.reserve(&ctx.session_id)
    }

    fn bind_live_agent_slots(&self, slots: Option<AgentSlots>) {
        if let Some(pool) = &self.spares {
            pool.0.bind(slots);
        }
    }

    async fn release_spare(&self) -> bool {
        self.release_spares(1).await == 1
    }
}

/// The state a session's client, reader and CLI-request tasks share.
fn new_shared(
    options: &ClaudeOptions,
    ctx: &AgentContext,
    process: Arc<CliProcess>,
    hooks: Vec<crate::options::HookSpec>,
) -> Arc<Shared> {
    Arc::new(Shared {
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
        background: Mutex::new(crate::background::BackgroundWork::default()),
        mcp: crate::mcp::McpReport::default(),
    })
}

/// The session's connection: the client over `shared` and the reader's message stream.
fn connection(
    options: &ClaudeOptions,
    shared: Arc<Shared>,
    reader: JoinHandle<()>,
    rx: mpsc::Receiver<Result<AgentMessage, AgentError>>,
    info: Value,
    checkpointing: bool,
) -> AgentConnection {
    let messages =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    AgentConnection {
        client: Arc::new(ClaudeClient {
            shared,
            reader: tokio::sync::Mutex::new(Some(reader)),
            disconnected: OnceCell::new(),
            graceful_exit: options.timeouts.graceful_exit,
            terminate: options.timeouts.terminate,
            server_info: info,
            checkpointing,
            sent: parking_lot::Mutex::new(Vec::new()),
        }),
        messages: Box::pin(messages),
    }
}

pub(crate) fn check_mode(mode: &str) -> Result<(), AgentError> {
    if PERMISSION_MODES.contains(&mode) {
        Ok(())
    } else {
        Err(AgentError::InvalidConfig(format!(
            "Unknown permission mode {mode:?}; expected one of {}",
            PERMISSION_MODES.join(", ")
        )))
    }
}
