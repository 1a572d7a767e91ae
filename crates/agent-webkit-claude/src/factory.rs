//! [`ClaudeAgentFactory`]: launches one CLI process per session and completes the
//! `initialize` handshake before handing the session its client and message stream
//! (docs/claude-cli-protocol.md §1, §3).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use agent_webkit_core::agent::{AgentClientFactory, AgentConnection, AgentContext, AgentError};
use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::{mpsc, OnceCell};

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
use crate::resume::{self, ResumeDir};
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
            Translator::for_options(options),
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
