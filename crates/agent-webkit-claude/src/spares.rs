//! Warm spares: CLIs started and `initialize`d ahead of demand with the factory's default launch
//! options, so a new session whose settings they can serve skips the CLI's start-up.
//!
//! One background task keeps up to the target number of idle spares, starting one at a time. It
//! starts once the factory is bound to a registry's live-agent slots
//! ([`agent_webkit_core::agent::slots::AgentSlots`]) or first used on its own; when
//! live agents are bounded, each spare holds a slot from before its start until its process has
//! exited or it is handed to a session (which holds its own), and a spare starts only when a
//! slot is free — so sessions' agents plus spares never exceed the bound, and a session waiting
//! for a slot always gets it before the pool. It backs off after failures, pauses after
//! [`release_spares`](crate::ClaudeAgentFactory::release_spares) and stops for good on
//! [`shutdown_spares`](crate::ClaudeAgentFactory::shutdown_spares). While idle, a spare's
//! stdout is watched: if the CLI exits or says anything but keep-alives, the spare is discarded
//! (killed, never handed out). Taking one pops
//! it under the pool's lock — no spare goes to two sessions — and takes its stdout back from the
//! watcher. A registry bounding live agents first *reserves* a spare for the session it is
//! creating (`SparePool::reserve`): the spare's slot becomes the session's, so a create
//! served by a spare needs no slot of its own. Each spare runs under its own fresh CLI session
//! id (the session it will serve does not exist yet); the factory files its transcript under
//! the session's id (`rekey`).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_webkit_core::agent::slots::{AgentSlot, AgentSlots};
use agent_webkit_core::agent::SessionConfig;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::process::ChildStdout;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::discover::find_cli;
use crate::options::{
    initialize_request, launch_spec, session_cwd, ClaudeOptions, HookSpec, LaunchInputs, LaunchSpec,
};
use crate::process::{CliProcess, LineReader};
use crate::watchdog::Watchdog;

/// First pause after a spare failed to start; doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest pause between failed starts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long replenishing pauses after spares were released under pressure.
pub const RELEASE_HOLD_OFF: Duration = Duration::from_secs(30);

/// A spare taken from the pool: an `initialize`d CLI nobody has used yet.
pub(crate) struct TakenSpare {
    /// The process.
    pub(crate) process: Arc<CliProcess>,
    /// Its stdout, not read since the `initialize` response.
    pub(crate) lines: LineReader<ChildStdout>,
    /// The CLI's own session id (`--session-id`).
    pub(crate) cli_session_id: String,
    /// `CLAUDE_CONFIG_DIR` as the CLI sees it (mirror paths → store keys).
    pub(crate) config_dir: PathBuf,
    /// The `initialize` response.
    pub(crate) info: Value,
    /// Hook callback ids declared in `initialize`.
    pub(crate) hooks: Vec<HookSpec>,
    /// When it started (for the log).
    pub(crate) age: Duration,
}

/// An idle spare.
struct Spare {
    process: Arc<CliProcess>,
    cli_session_id: String,
    config_dir: PathBuf,
    info: Value,
    hooks: Vec<HookSpec>,
    started: Instant,
    stop: CancellationToken,
    watcher: JoinHandle<Option<LineReader<ChildStdout>>>,
    dead: Arc<AtomicBool>,
    /// Its live-agent slot (bounded registries); returned when the spare is dropped, which
    /// happens only after its process was killed or handed to a session.
    slot: Option<AgentSlot>,
}

/// What the pool needs to start CLIs (shared with the factory).
#[derive(Clone)]
pub(crate) struct Launcher {
    pub(crate) options: Arc<ClaudeOptions>,
    pub(crate) live: Arc<AtomicUsize>,
    pub(crate) watchdog: Arc<Watchdog>,
}

/// The pool of idle spares of one factory.
pub(crate) struct SparePool {
    target: usize,
    /// Working directory every spare runs in (the default one).
    cwd: PathBuf,
    /// Its real path, to match a session's canonicalised cwd.
    real_cwd: Option<PathBuf>,
    /// Whether spares mirror their transcript (`--session-mirror`).
    mirror: bool,
    idle: Mutex<VecDeque<Spare>>,
    /// Spares reserved for the create of a session (by session id), their slots handed to it.
    reserved: Mutex<std::collections::HashMap<String, Spare>>,
    /// Wakes the replenisher (a spare was taken, died, or the pool closed).
    wake: Notify,
    /// Number of idle spares, for waiters.
    ready: watch::Sender<usize>,
    /// Replenishing pauses until then (spares released under pressure).
    hold_until: Mutex<Option<Instant>>,
    /// The registry's live-agent slots (`None` inside: unbounded); unset until bound.
    slots: std::sync::OnceLock<Option<AgentSlots>>,
    /// Cancelled when the pool may start spares (bound, or first used on its own).
    active: CancellationToken,
    closed: CancellationToken,
    /// The replenishing task (awaited by `shutdown`, so no start outlives it).
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for SparePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SparePool")
            .field("target", &self.target)
            .field("idle", &self.idle.lock().len())
            .field("closed", &self.closed.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl SparePool {
    /// Starts a pool keeping `target` spares and its replenishing task (on the current Tokio
    /// runtime). `None` without a runtime (logged).
    pub(crate) fn start(launcher: Launcher, target: usize) -> Option<Arc<Self>> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("warm spares need a Tokio runtime; none are kept");
            return None;
        };
        let cwd = session_cwd(&launcher.options, &SessionConfig::default());
        let pool = Arc::new(Self {
            target,
            real_cwd: cwd.canonicalize().ok(),
            cwd,
            mirror: !launcher.options.disable_mirror,
            idle: Mutex::new(VecDeque::new()),
            reserved: Mutex::new(std::collections::HashMap::new()),
            wake: Notify::new(),
            ready: watch::Sender::new(0),
            hold_until: Mutex::new(None),
            slots: std::sync::OnceLock::new(),
            active: CancellationToken::new(),
            closed: CancellationToken::new(),
            task: Mutex::new(None),
        });
        let task = runtime.spawn(replenish(Arc::clone(&pool), launcher));
        *pool.task.lock() = Some(task);
        tracing::info!(target, "keeping warm Claude CLI spares");
        Some(pool)
    }

    /// Binds the pool to a registry's live-agent slots (the first binding wins) and lets it
    /// start spares. Spares started before (the factory used on its own first) each take a
    /// slot now, or are discarded when none is free.
    pub(crate) fn bind(&self, slots: Option<AgentSlots>) {
        if self.slots.set(slots).is_ok() {
            if let Some(Some(slots)) = self.slots.get() {
                if self.target >= slots.max() {
                    tracing::warn!(
                        warm_spares = self.target,
                        max_live_agents = slots.max(),
                        "warm spares share the live-agent slots: only as many are kept as the sessions' live agents leave free"
                    );
                }
                let unbound: Vec<Spare> = {
                    let mut idle = self.idle.lock();
                    for spare in idle.iter_mut().filter(|s| s.slot.is_none()) {
                        spare.slot = slots.try_take();
                    }
                    let (kept, unbound): (VecDeque<Spare>, VecDeque<Spare>) =
                        idle.drain(..).partition(|s| s.slot.is_some());
                    *idle = kept;
                    self.ready.send_replace(idle.len());
                    unbound.into()
                };
                discard_in_background(unbound);
            }
        }
        self.activate();
    }

    /// Lets the replenisher start spares (idempotent).
    pub(crate) fn activate(&self) {
        self.active.cancel();
    }

    /// Whether a spare can serve a session in `cwd` that mirrors (`mirror`) its transcript.
    pub(crate) fn serves(&self, cwd: &Path, mirror: bool) -> bool {
        mirror == self.mirror && (cwd == self.cwd || self.real_cwd.as_deref() == Some(cwd))
    }

    /// Takes one live spare, if any; each is handed out at most once.
    pub(crate) async fn take(&self) -> Option<TakenSpare> {
        self.activate();
        loop {
            let spare = {
                let mut idle = self.idle.lock();
                let spare = idle.pop_front();
                self.ready.send_replace(idle.len());
                spare
            }?;
            self.wake.notify_one();
            if let Some(taken) = hand_over(spare).await {
                return Some(taken);
            }
        }
    }

    /// Moves one idle spare aside for the create of session `session_id` and returns its
    /// slot (which the session keeps); `None` when no idle spare holds one.
    pub(crate) fn reserve(&self, session_id: &str) -> Option<AgentSlot> {
        self.activate();
        let mut spare = {
            let mut idle = self.idle.lock();
            let position = idle
                .iter()
                .position(|s| s.slot.is_some() && !s.dead.load(Ordering::Acquire))?;
            let spare = idle.remove(position)?;
            self.ready.send_replace(idle.len());
            spare
        };
        self.wake.notify_one();
        let slot = spare.slot.take();
        self.reserved.lock().insert(session_id.to_owned(), spare);
        slot
    }

    /// The spare reserved for session `session_id`, if it is still alive (a dead one is
    /// killed; the session then starts a CLI with the slot it already holds).
    pub(crate) async fn take_reserved(&self, session_id: &str) -> Option<TakenSpare> {
        let spare = self.reserved.lock().remove(session_id)?;
        hand_over(spare).await
    }

    /// Idle spares.
    pub(crate) fn len(&self) -> usize {
        self.idle.lock().len()
    }

    /// Process ids of the idle spares.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.idle
            .lock()
            .iter()
            .filter_map(|s| s.process.pid())
            .collect()
    }

    /// Waits until at least `n` spares are idle.
    pub(crate) async fn ready(&self, n: usize) {
        self.activate();
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|count| *count >= n).await;
    }

    /// Kills up to `n` idle spares (oldest first) and pauses replenishing for
    /// [`RELEASE_HOLD_OFF`]; returns how many were killed.
    pub(crate) async fn release(&self, n: usize) -> usize {
        let released: Vec<Spare> = {
            let mut idle = self.idle.lock();
            let n = n.min(idle.len());
            let released = idle.drain(..n).collect();
            self.ready.send_replace(idle.len());
            released
        };
        if !released.is_empty() {
            *self.hold_until.lock() = Some(Instant::now() + RELEASE_HOLD_OFF);
        }
        let count = released.len();
        for spare in released {
            discard(spare).await;
        }
        if count > 0 {
            tracing::info!(count, "warm spares released");
        }
        count
    }

    /// Stops replenishing for good and kills every idle spare, and one being started.
    pub(crate) async fn shutdown(&self) {
        self.closed.cancel();
        self.wake.notify_one();
        let mut all: Vec<Spare> = {
            let mut idle = self.idle.lock();
            let all = idle.drain(..).collect();
            self.ready.send_replace(0);
            all
        };
        all.extend(self.reserved.lock().drain().map(|(_, spare)| spare));
        for spare in all {
            discard(spare).await;
        }
        // A spare being started when the pool closed is discarded by the task itself.
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// The factory's handle on its pool (shared by its clones): when the last one is dropped the
/// pool closes — no more starts — and its idle spares are killed.
#[derive(Debug)]
pub(crate) struct PoolOwner(pub(crate) Arc<SparePool>);

impl Drop for PoolOwner {
    fn drop(&mut self) {
        let pool = &self.0;
        pool.closed.cancel();
        pool.wake.notify_one();
        let mut all: Vec<Spare> = pool.idle.lock().drain(..).collect();
        all.extend(pool.reserved.lock().drain().map(|(_, spare)| spare));
        pool.ready.send_replace(0);
        discard_in_background(all);
    }
}

/// Stops watching `spare` and hands it over, or kills it if it died while idle.
async fn hand_over(spare: Spare) -> Option<TakenSpare> {
    spare.stop.cancel();
    let lines = (&mut { spare.watcher }).await.ok().flatten();
    let exited = spare.process.wait_for(Duration::ZERO).await.is_some();
    match lines {
        Some(lines) if !exited && !spare.dead.load(Ordering::Acquire) => Some(TakenSpare {
            process: spare.process,
            lines,
            cli_session_id: spare.cli_session_id,
            config_dir: spare.config_dir,
            info: spare.info,
            hooks: spare.hooks,
            age: spare.started.elapsed(),
        }),
        _ => {
            tracing::info!(
                spare = %spare.cli_session_id,
                "warm spare died while waiting; discarded"
            );
            spare.process.kill().await;
            None
        }
    }
}

/// Discards `spares` on a task (each slot returns once its process has exited), or at once
/// without a runtime.
fn discard_in_background(spares: Vec<Spare>) {
    if spares.is_empty() {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                for spare in spares {
                    discard(spare).await;
                }
            });
        }
        // Dropping a spare kills its process (`kill_on_drop`).
        Err(_) => drop(spares),
    }
}

async fn discard(spare: Spare) {
    spare.stop.cancel();
    spare.process.close_stdin().await;
    spare.process.kill().await;
}

/// Keeps the pool at its target, one start at a time.
async fn replenish(pool: Arc<SparePool>, launcher: Launcher) {
    let mut backoff = FIRST_BACKOFF;
    tokio::select! {
        () = pool.closed.cancelled() => return,
        () = pool.active.cancelled() => {}
    }
    loop {
        if pool.closed.is_cancelled() {
            return;
        }
        let hold = *pool.hold_until.lock();
        if let Some(until) = hold.filter(|until| *until > Instant::now()) {
            tokio::select! {
                () = pool.closed.cancelled() => return,
                () = tokio::time::sleep_until(until) => continue,
            }
        }
        let wake = pool.wake.notified();
        if pool.len() >= pool.target {
            tokio::select! {
                () = pool.closed.cancelled() => return,
                () = wake => continue,
            }
        }
        // Bounded: a slot first, so sessions' agents + spares stay within the bound; sessions
        // waiting for a slot get it first.
        let slot = match pool.slots.get() {
            Some(Some(slots)) => {
                let slot = tokio::select! {
                    () = pool.closed.cancelled() => return,
                    slot = slots.take_when_free() => slot,
                };
                // Released under pressure meanwhile: that slot is not for a spare.
                if pool
                    .hold_until
                    .lock()
                    .is_some_and(|until| until > Instant::now())
                {
                    continue;
                }
                Some(slot)
            }
            _ => None,
        };
        match start_spare(&pool, &launcher, slot).await {
            Ok(mut spare) => {
                backoff = FIRST_BACKOFF;
                // Started before the pool was bound: it needs a slot like any other.
                if let (Some(Some(slots)), None) = (pool.slots.get(), &spare.slot) {
                    spare.slot = slots.try_take();
                    if spare.slot.is_none() {
                        discard(spare).await;
                        continue;
                    }
                }
                let refused = {
                    let mut idle = pool.idle.lock();
                    if pool.closed.is_cancelled() {
                        Some(spare)
                    } else {
                        idle.push_back(spare);
                        pool.ready.send_replace(idle.len());
                        None
                    }
                };
                if let Some(spare) = refused {
                    discard(spare).await;
                    return;
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "cannot start a warm Claude CLI spare");
                tokio::select! {
                    () = pool.closed.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Why a spare could not be started (logged only).
#[derive(Debug, thiserror::Error)]
enum SpareError {
    #[error("{0}")]
    Discover(#[from] crate::discover::DiscoverError),
    #[error("spawn failed: {0}")]
    Spawn(std::io::Error),
    #[error("initialize failed: {0}")]
    Handshake(String),
}

/// Starts one spare holding `slot` (dropped, after the process is gone, if it fails).
async fn start_spare(
    pool: &Arc<SparePool>,
    launcher: &Launcher,
    slot: Option<AgentSlot>,
) -> Result<Spare, SpareError> {
    let options = &launcher.options;
    let program = find_cli(options.cli_path.as_deref())?;
    let cli_session_id = uuid::Uuid::new_v4().to_string();
    let spec: LaunchSpec = launch_spec(
        options,
        program,
        &LaunchInputs {
            session_id: &cli_session_id,
            resume: None,
            config_dir: None,
            session: &SessionConfig::default(),
            mirror: pool.mirror,
        },
    );
    let started = Instant::now();
    let log_id = format!("spare-{cli_session_id}");
    let (process, stdout) = CliProcess::spawn(
        &spec,
        &log_id,
        Arc::clone(&launcher.live),
        &options.secrets,
        Arc::clone(&launcher.watchdog),
    )
    .map_err(SpareError::Spawn)?;
    let mut lines = LineReader::new(stdout, options.line_limit());
    let (init, hooks) = initialize_request(&options.hooks);
    let handshake = tokio::time::timeout(
        options.timeouts.initialize,
        handshake(&process, &mut lines, init),
    );
    let info = match handshake.await {
        Ok(Ok(info)) => info,
        outcome => {
            let detail = match outcome {
                Ok(Err(detail)) => detail,
                _ => "no response in time".to_owned(),
            };
            let status = process.kill().await;
            tracing::debug!(status = ?status, stderr = %process.stderr_tail(), "warm spare failed its handshake");
            return Err(SpareError::Handshake(options.secrets.redact(&detail)));
        }
    };
    let dead = Arc::new(AtomicBool::new(false));
    let stop = CancellationToken::new();
    let watcher = tokio::spawn(watch_idle(
        lines,
        stop.clone(),
        Arc::clone(&dead),
        Arc::clone(pool),
        log_id,
    ));
    tracing::info!(
        spare = %cli_session_id,
        pid = process.pid(),
        ready_ms = started.elapsed().as_millis() as u64,
        "warm Claude CLI spare ready"
    );
    Ok(Spare {
        process,
        cli_session_id,
        config_dir: spec.config_dir,
        info,
        hooks,
        started,
        stop,
        watcher,
        dead,
        slot,
    })
}

/// Sends `initialize` and reads stdout up to its response.
async fn handshake(
    process: &CliProcess,
    lines: &mut LineReader<ChildStdout>,
    request: Value,
) -> Result<Value, String> {
    let id = format!("req_spare_{}", uuid::Uuid::new_v4().simple());
    let frame = json!({"type": "control_request", "request_id": id, "request": request});
    process
        .send(frame.to_string())
        .await
        .map_err(|()| "stdin closed".to_owned())?;
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => return Err("the CLI exited".to_owned()),
            Err(err) => return Err(err.to_string()),
        };
        if ignorable(&line) {
            continue;
        }
        let frame: Value = serde_json::from_slice(line.trim_ascii())
            .map_err(|_| "a line that is not JSON".to_owned())?;
        let response = frame
            .get("response")
            .filter(|_| frame.get("type").and_then(Value::as_str) == Some("control_response"));
        match response {
            Some(r) if r.get("request_id").and_then(Value::as_str) == Some(id.as_str()) => {
                if r.get("subtype").and_then(Value::as_str) == Some("error") {
                    return Err(r
                        .get("error")
                        .and_then(Value::as_str)
                        .unwrap_or("rejected")
                        .to_owned());
                }
                return Ok(r.get("response").cloned().unwrap_or_else(|| json!({})));
            }
            _ => return Err("an unexpected frame before the initialize response".to_owned()),
        }
    }
}

/// Output an idle CLI may print that needs no one: blank lines, keep-alives, state changes.
fn ignorable(line: &[u8]) -> bool {
    let line = line.trim_ascii();
    if line.is_empty() {
        return true;
    }
    let Ok(frame) = serde_json::from_slice::<Value>(line) else {
        return false;
    };
    match frame.get("type").and_then(Value::as_str) {
        Some("keep_alive") => true,
        Some("system") => {
            frame.get("subtype").and_then(Value::as_str) == Some("session_state_changed")
        }
        _ => false,
    }
}

/// Reads an idle spare's stdout until it is taken (returns the reader) or the CLI says
/// something a session would need, or exits (marks it dead, returns `None`).
async fn watch_idle(
    mut lines: LineReader<ChildStdout>,
    stop: CancellationToken,
    dead: Arc<AtomicBool>,
    pool: Arc<SparePool>,
    log_id: String,
) -> Option<LineReader<ChildStdout>> {
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return Some(lines),
            line = lines.next_line() => match line {
                Ok(Some(line)) if ignorable(&line) => {}
                other => {
                    let why = match other {
                        Ok(None) => "exited",
                        Err(_) => "unreadable output",
                        Ok(Some(_)) => "unexpected output",
                    };
                    dead.store(true, Ordering::Release);
                    tracing::info!(session_id = %log_id, why, "idle warm spare is unusable; discarding it");
                    // Remove it from the pool (if still there) and let the replenisher replace it.
                    let found = {
                        let mut idle = pool.idle.lock();
                        let position = idle.iter().position(|s| Arc::ptr_eq(&s.dead, &dead));
                        let found = position.and_then(|p| idle.remove(p));
                        pool.ready.send_replace(idle.len());
                        found
                    };
                    if let Some(spare) = found {
                        spare.process.kill().await;
                    }
                    pool.wake.notify_one();
                    return None;
                }
            },
        }
    }
}
