//! One replay agent: its command side ([`ReplayClient`]), its task ([`Agent`]) and its message
//! stream.
//!
//! The client forwards `query` and `interrupt` to the task over one ordered, unbounded command
//! channel (so an interrupt sent after a query always sees that query's turn), and records the
//! other controls in [`Shared`] state. The task owns the script cursor and sends
//! [`AgentMessage`]s over a bounded channel whose receiver is the session's
//! [`AgentMessageStream`](agent_webkit_core::agent::AgentMessageStream). Every await inside a
//! turn watches the command channel, so an interrupt is noticed while sending, sleeping in a
//! `delay` or waiting for a permission decision.
//!
//! The task ends when the client disconnects or is dropped, when the stream is dropped, or when
//! the scenario ends the agent (`crash`). A [`LiveGuard`] counts it while it runs.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use agent_webkit_core::agent::{
    AgentClient, AgentConnection, AgentContext, AgentError, AgentMessage, AssistantMessage,
    TurnResult,
};
use agent_webkit_core::models::UserContent;
use agent_webkit_core::permission::{PermissionDecision, PermissionError, PermissionHandle};
use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::scenario::{Scenario, StreamSpec};
use crate::script::{Script, Step};

/// Messages buffered between the agent task and the session.
const OUTBOX_CAPACITY: usize = 256;

/// `stream` turns without a pause yield to the scheduler every this many messages.
const YIELD_EVERY: u64 = 64;

/// The words `stream` messages are padded with: the distinct words of the classic lorem-ipsum
/// paragraph, lowercase ASCII (so any byte prefix of a text is valid UTF-8). Picked per event by
/// [`stream_text`]'s generator, so texts differ from event to event and do not flatter
/// compression. `VOCAB` in `bench/python/fake_agent.py` is the same list, in the same order.
const VOCAB: [&str; 63] = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
    "aliquip",
    "ex",
    "ea",
    "commodo",
    "consequat",
    "duis",
    "aute",
    "irure",
    "in",
    "reprehenderit",
    "voluptate",
    "velit",
    "esse",
    "cillum",
    "eu",
    "fugiat",
    "nulla",
    "pariatur",
    "excepteur",
    "sint",
    "occaecat",
    "cupidatat",
    "non",
    "proident",
    "sunt",
    "culpa",
    "qui",
    "officia",
    "deserunt",
    "mollit",
    "anim",
    "id",
    "est",
    "laborum",
];

/// Seed offset of the word generator (`x0 = index ^ WORD_SEED`).
const WORD_SEED: u64 = 0x9E37_79B9_7F4A_7C15;
/// Multiplier and increment of the word generator (Knuth's MMIX 64-bit LCG).
const LCG_MUL: u64 = 6_364_136_223_846_793_005;
const LCG_INC: u64 = 1_442_695_040_888_963_407;

/// The message of the `crash` scenario's error.
pub(crate) const CRASH_MESSAGE: &str =
    "replay scenario \"crash\": the agent crashed after the first user message";

/// Counts running agent tasks; shared by clones of a factory.
#[derive(Debug, Clone)]
pub(crate) struct LiveAgents(Arc<watch::Sender<usize>>);

impl Default for LiveAgents {
    fn default() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }
}

impl LiveAgents {
    pub(crate) fn count(&self) -> usize {
        *self.0.borrow()
    }

    pub(crate) async fn wait_for(&self, count: usize) {
        let mut rx = self.0.subscribe();
        // The sender lives in `self`, so the wait cannot fail.
        let _ = rx.wait_for(|n| *n == count).await;
    }

    fn enter(&self) -> LiveGuard {
        self.0.send_modify(|n| *n += 1);
        LiveGuard(Arc::clone(&self.0))
    }
}

/// Held by an agent task while it runs.
struct LiveGuard(Arc<watch::Sender<usize>>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// What the client tells the task, in order.
enum Command {
    Query(UserContent),
    Interrupt,
}

/// State the client writes and the task reads.
#[derive(Debug)]
struct Shared {
    /// The current model (`set_model`); `echo` reports it.
    model: Mutex<Option<String>>,
    /// Control calls since the last `controls` reply.
    controls: Mutex<Vec<Value>>,
}

/// Starts the agent task of one session and returns its connection.
pub(crate) fn start(ctx: AgentContext, scenario: Scenario, live: &LiveAgents) -> AgentConnection {
    let AgentContext {
        session_id,
        config,
        permissions,
        store: _,
        resume: _,
    } = ctx;
    let (command_tx, command_rx) = mpsc::unbounded_channel();
    let (out_tx, mut out_rx) = mpsc::channel(OUTBOX_CAPACITY);
    let stop = CancellationToken::new();
    let shared = Arc::new(Shared {
        model: Mutex::new(config.model),
        controls: Mutex::new(Vec::new()),
    });
    let client = ReplayClient {
        session_id: session_id.clone(),
        commands: command_tx,
        shared: Arc::clone(&shared),
        stop: stop.clone(),
        records_controls: scenario.records_controls(),
    };
    let span = tracing::info_span!(parent: None, "replay_agent", session_id = %session_id, scenario = scenario.label());
    let watch_closed = out_tx.clone();
    let agent = Agent {
        inbox: Inbox {
            session_id: session_id.clone(),
            commands: command_rx,
            queued: VecDeque::new(),
            turn_open: false,
            interrupt_queued: false,
        },
        session_id,
        scenario,
        permissions,
        shared,
        out: out_tx,
        turn: 0,
        cursor: 0,
    };
    let guard = live.enter();
    let task_stop = stop.clone();
    tokio::spawn(
        async move {
            let _guard = guard;
            let session_id = agent.session_id.clone();
            tokio::select! {
                biased;
                () = task_stop.cancelled() => {
                    tracing::debug!(session_id = %session_id, "replay agent disconnected");
                }
                () = watch_closed.closed() => {
                    tracing::debug!(session_id = %session_id, "message stream dropped; replay agent stops");
                }
                () = agent.run() => {
                    tracing::debug!(session_id = %session_id, "replay agent ended");
                }
            }
        }
        .instrument(span),
    );
    // Ends as soon as the agent is disconnected, and when the task ends (its sender drops).
    let messages = futures_util::stream::poll_fn(move |cx| {
        if stop.is_cancelled() {
            Poll::Ready(None)
        } else {
            out_rx.poll_recv(cx)
        }
    });
    AgentConnection {
        client: Arc::new(client),
        messages: Box::pin(messages),
    }
}

/// The command side of a replay agent.
struct ReplayClient {
    session_id: String,
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    records_controls: bool,
}

impl ReplayClient {
    fn live(&self) -> Result<(), AgentError> {
        if self.stop.is_cancelled() || self.commands.is_closed() {
            Err(AgentError::Disconnected)
        } else {
            Ok(())
        }
    }

    fn send(&self, command: Command) -> Result<(), AgentError> {
        self.commands
            .send(command)
            .map_err(|_| AgentError::Disconnected)
    }

    fn record(&self, call: impl FnOnce() -> Value) {
        if self.records_controls {
            self.shared.controls.lock().push(call());
        }
    }
}

#[async_trait]
impl AgentClient for ReplayClient {
    async fn query(&self, content: UserContent) -> Result<(), AgentError> {
        self.live()?;
        self.send(Command::Query(content))
    }

    async fn interrupt(&self) -> Result<(), AgentError> {
        self.live()?;
        tracing::debug!(session_id = %self.session_id, "interrupt");
        self.record(|| json!(["interrupt"]));
        self.send(Command::Interrupt)
    }

    async fn set_permission_mode(&self, mode: &str) -> Result<(), AgentError> {
        self.live()?;
        tracing::debug!(session_id = %self.session_id, mode, "set_permission_mode");
        self.record(|| json!(["set_permission_mode", mode]));
        Ok(())
    }

    async fn set_model(&self, model: Option<&str>) -> Result<(), AgentError> {
        self.live()?;
        tracing::debug!(session_id = %self.session_id, model, "set_model");
        self.record(|| json!(["set_model", model]));
        *self.shared.model.lock() = model.map(str::to_owned);
        Ok(())
    }

    async fn stop_task(&self, task_id: &str) -> Result<(), AgentError> {
        self.live()?;
        tracing::debug!(session_id = %self.session_id, task_id, "stop_task");
        self.record(|| json!(["stop_task", task_id]));
        Ok(())
    }

    async fn disconnect(&self) -> Result<(), AgentError> {
        if !self.stop.is_cancelled() {
            tracing::debug!(session_id = %self.session_id, "disconnect");
            self.stop.cancel();
        }
        Ok(())
    }
}

impl Drop for ReplayClient {
    fn drop(&mut self) {
        // Nobody can drive the agent any more: stop its task.
        self.stop.cancel();
    }
}

/// Why a turn stopped early.
enum Stop {
    /// The client interrupted the running turn.
    Interrupted,
    /// The agent must end (client gone, stream gone, session closed, `crash`).
    Ended,
}

/// The task's view of the command channel.
struct Inbox {
    session_id: String,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Queries received while a turn was still playing.
    queued: VecDeque<UserContent>,
    /// Whether a turn is running and has not sent its result yet (interrupts end it).
    turn_open: bool,
    /// An interrupt arrived while the next turn was queued: it ends that turn at once.
    interrupt_queued: bool,
}

impl Inbox {
    /// The next user message, and whether its turn was already interrupted. `None` once the
    /// client is gone.
    async fn next_query(&mut self) -> Option<(UserContent, bool)> {
        if let Some(content) = self.queued.pop_front() {
            return Some((content, std::mem::take(&mut self.interrupt_queued)));
        }
        loop {
            match self.commands.recv().await? {
                Command::Query(content) => return Some((content, false)),
                Command::Interrupt => self.idle_interrupt(),
            }
        }
    }

    fn idle_interrupt(&mut self) {
        if self.queued.is_empty() {
            tracing::debug!(session_id = %self.session_id, "interrupt with no running turn: ignored");
        } else {
            self.interrupt_queued = true;
        }
    }

    /// Awaits `fut` while handling commands: queries are queued; an interrupt stops the wait
    /// when a turn is running (or queued, see `interrupt_queued`) and is ignored otherwise.
    async fn guard<F: Future + Unpin>(&mut self, fut: &mut F) -> Result<F::Output, Stop> {
        loop {
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    None => return Err(Stop::Ended),
                    Some(Command::Query(content)) => self.queued.push_back(content),
                    Some(Command::Interrupt) if self.turn_open => return Err(Stop::Interrupted),
                    Some(Command::Interrupt) if !self.queued.is_empty() => {
                        // The running turn (from the session's view) is the queued one: drop
                        // what is left of the current script segment and end that turn at once.
                        self.interrupt_queued = true;
                        return Err(Stop::Interrupted);
                    }
                    Some(Command::Interrupt) => self.idle_interrupt(),
                },
                output = &mut *fut => return Ok(output),
            }
        }
    }
}

/// The task that plays one session's scenario.
struct Agent {
    session_id: String,
    scenario: Scenario,
    permissions: PermissionHandle,
    shared: Arc<Shared>,
    out: mpsc::Sender<Result<AgentMessage, AgentError>>,
    inbox: Inbox,
    /// Number of user messages received.
    turn: u64,
    /// Index of the next script step.
    cursor: usize,
}

impl Agent {
    async fn run(mut self) {
        if let Scenario::Script(script) = &self.scenario {
            // Steps before the first expect_user_query play at once, outside any turn.
            let script = Arc::clone(script);
            match self.play_steps(&script).await {
                Ok(()) => {}
                // The first turn was interrupted while queued: drop the rest of the preamble.
                Err(Stop::Interrupted) => {
                    self.skip_rest_of_turn();
                }
                Err(Stop::Ended) => return,
            }
        }
        while let Some((content, interrupted)) = self.inbox.next_query().await {
            self.turn += 1;
            self.inbox.turn_open = true;
            tracing::debug!(session_id = %self.session_id, turn = self.turn, "turn started");
            let outcome = if interrupted {
                self.skip_turn_start();
                Err(Stop::Interrupted)
            } else {
                self.play_turn(content).await
            };
            let outcome = match outcome {
                Err(Stop::Interrupted) => self.end_interrupted_turn().await,
                other => other,
            };
            if let Err(Stop::Ended) = outcome {
                return;
            }
            self.inbox.turn_open = false;
        }
    }

    /// For scripts: moves past the `expect_user_query` that starts the next turn, if any.
    fn skip_turn_start(&mut self) {
        if let Scenario::Script(script) = &self.scenario {
            if let Some(Step::ExpectUserQuery) = script.steps().get(self.cursor) {
                self.cursor += 1;
            }
        }
    }

    async fn play_turn(&mut self, content: UserContent) -> Result<(), Stop> {
        match self.scenario.clone() {
            Scenario::Echo => {
                let model = self.shared.model.lock().clone();
                self.emit(AgentMessage::Assistant(AssistantMessage {
                    id: format!("msg_echo_{}", self.turn),
                    content: into_blocks(content),
                    model,
                    stop_reason: Some("end_turn".into()),
                }))
                .await?;
                self.emit_result(self.result("success")).await
            }
            Scenario::Controls => {
                let calls = std::mem::take(&mut *self.shared.controls.lock());
                let model = self.shared.model.lock().clone();
                self.emit(AgentMessage::Assistant(AssistantMessage {
                    id: format!("msg_controls_{}", self.turn),
                    content: vec![text_block(Value::Array(calls).to_string())],
                    model,
                    stop_reason: Some("end_turn".into()),
                }))
                .await?;
                self.emit_result(self.result("success")).await
            }
            Scenario::Crash => {
                tracing::info!(session_id = %self.session_id, "replay scenario \"crash\": crashing");
                self.send(Err(AgentError::Exited(CRASH_MESSAGE.into())))
                    .await?;
                Err(Stop::Ended)
            }
            Scenario::Stream(spec) => self.stream_turn(spec).await,
            Scenario::Script(script) => {
                if let Some(Step::ExpectUserQuery) = script.steps().get(self.cursor) {
                    self.cursor += 1;
                    self.play_steps(&script).await
                } else {
                    self.exhausted(&script).await
                }
            }
        }
    }

    /// Plays script steps from the cursor up to the next `expect_user_query`.
    async fn play_steps(&mut self, script: &Script) -> Result<(), Stop> {
        while let Some(step) = script.steps().get(self.cursor) {
            match step {
                Step::ExpectUserQuery => break,
                Step::Outbound(AgentMessage::Result(result)) => {
                    let mut result = result.clone();
                    if result.session_id.is_empty() {
                        result.session_id.clone_from(&self.session_id);
                    }
                    self.emit_result(result).await?;
                }
                Step::Outbound(message) => self.emit(message.clone()).await?,
                Step::Delay(delay) => {
                    let mut sleep = pin!(tokio::time::sleep(*delay));
                    self.inbox.guard(&mut sleep).await?;
                }
                Step::Callback {
                    tool_name,
                    input,
                    context,
                    correlation_id,
                } => self.ask(tool_name, input, context, correlation_id).await?,
            }
            // Only after the step completed: an interrupted step is skipped with the rest.
            self.cursor += 1;
        }
        Ok(())
    }

    /// Asks for a permission and waits; any decision continues the script.
    async fn ask(
        &mut self,
        tool_name: &str,
        input: &Value,
        context: &Value,
        correlation_id: &str,
    ) -> Result<(), Stop> {
        let session_id = &self.session_id;
        let mut ask =
            pin!(self
                .permissions
                .can_use_tool(tool_name, input.clone(), context.clone()));
        match self.inbox.guard(&mut ask).await {
            Ok(Ok(decision)) => {
                let behavior = match decision {
                    PermissionDecision::Allow { .. } => "allow",
                    PermissionDecision::Deny { .. } => "deny",
                };
                tracing::debug!(session_id = %session_id, correlation_id, behavior, "permission decided");
                Ok(())
            }
            Ok(Err(PermissionError::SessionClosed)) => {
                tracing::debug!(session_id = %session_id, correlation_id, "session closed during a prompt");
                Err(Stop::Ended)
            }
            Ok(Err(err)) => {
                tracing::warn!(
                    session_id = %session_id,
                    correlation_id,
                    error = %err,
                    "prompt ended without a decision; the script continues"
                );
                Ok(())
            }
            Err(Stop::Interrupted) => {
                // Withdraw while the prompt is still registered (dropping `ask` would remove it
                // silently), so clients are told to stop showing it.
                self.permissions.cancel(correlation_id, "interrupted");
                Err(Stop::Interrupted)
            }
            Err(Stop::Ended) => Err(Stop::Ended),
        }
    }

    /// For scripts: moves the cursor to the next `expect_user_query`; returns the first result
    /// skipped on the way.
    fn skip_rest_of_turn(&mut self) -> Option<TurnResult> {
        let Scenario::Script(script) = &self.scenario else {
            return None;
        };
        let mut scripted = None;
        while let Some(step) = script.steps().get(self.cursor) {
            match step {
                Step::ExpectUserQuery => break,
                Step::Outbound(AgentMessage::Result(result)) if scripted.is_none() => {
                    scripted = Some(result.clone());
                }
                _ => {}
            }
            self.cursor += 1;
        }
        scripted
    }

    /// Ends an interrupted turn: skips the rest of it and, unless it already sent its result,
    /// emits one `interrupted` result (the scripted one if the turn had one, else one with the
    /// scripted or the agent's session id).
    async fn end_interrupted_turn(&mut self) -> Result<(), Stop> {
        let scripted = self.skip_rest_of_turn();
        if !self.inbox.turn_open {
            // The interrupt targeted the queued next turn; this one already ended.
            return Ok(());
        }
        tracing::debug!(session_id = %self.session_id, turn = self.turn, "turn interrupted");
        let mut result = match scripted {
            Some(result) if result.subtype == "interrupted" => result,
            Some(result) => TurnResult::new(result.session_id, "interrupted"),
            None => TurnResult::new("", "interrupted"),
        };
        if result.session_id.is_empty() {
            result.session_id.clone_from(&self.session_id);
        }
        result.ends_turn = true;
        // Later interrupts find no running turn.
        self.inbox.turn_open = false;
        self.emit(AgentMessage::Result(result)).await
    }

    async fn exhausted(&mut self, script: &Script) -> Result<(), Stop> {
        tracing::info!(
            session_id = %self.session_id,
            turn = self.turn,
            "replay scenario exhausted"
        );
        self.emit(AgentMessage::Error {
            code: "scenario_exhausted".into(),
            message: format!(
                "the replay scenario has {} scripted turn(s) and no turn left for user message {}",
                script.turns(),
                self.turn
            ),
        })
        .await?;
        let mut result = self.result("error_during_execution");
        result.extra.insert("is_error".into(), Value::Bool(true));
        self.emit_result(result).await
    }

    async fn stream_turn(&mut self, spec: StreamSpec) -> Result<(), Stop> {
        let model = self.shared.model.lock().clone();
        // Paced on an absolute schedule (event i at start + (i-1)·interval), so timer
        // granularity does not slow the rate down: a late event is followed by on-time ones.
        let start = tokio::time::Instant::now();
        for i in 1..=spec.count {
            if i > 1 {
                if spec.interval.is_zero() {
                    if i % YIELD_EVERY == 0 {
                        tokio::task::yield_now().await;
                    }
                } else {
                    let due = start
                        + spec
                            .interval
                            .saturating_mul(u32::try_from(i - 1).unwrap_or(u32::MAX));
                    let mut pause = pin!(tokio::time::sleep_until(due));
                    self.inbox.guard(&mut pause).await?;
                }
            }
            // Taken right before the message goes to the session (`ts` scenarios only).
            let emitted_us = spec.timestamps.then(unix_micros);
            self.emit(AgentMessage::Assistant(AssistantMessage {
                id: format!("msg_stream_{}_{i}", self.turn),
                content: vec![text_block(stream_text(i, spec.bytes, emitted_us))],
                model: model.clone(),
                stop_reason: (i == spec.count).then(|| "end_turn".to_owned()),
            }))
            .await?;
        }
        self.emit_result(self.result("success")).await
    }

    fn result(&self, subtype: &str) -> TurnResult {
        TurnResult::new(self.session_id.clone(), subtype)
    }

    /// Emits a turn's result. The first one of a running turn ends it; any other (a second
    /// result, or one outside a turn) is sent with `ends_turn: false`.
    async fn emit_result(&mut self, mut result: TurnResult) -> Result<(), Stop> {
        result.ends_turn = self.inbox.turn_open;
        self.emit(AgentMessage::Result(result)).await?;
        self.inbox.turn_open = false;
        Ok(())
    }

    async fn emit(&mut self, message: AgentMessage) -> Result<(), Stop> {
        self.send(Ok(message)).await
    }

    async fn send(&mut self, item: Result<AgentMessage, AgentError>) -> Result<(), Stop> {
        // Fast path (benchmarks push 100k messages): no command to handle and room to send.
        let item = if self.inbox.commands.is_empty() {
            match self.out.try_send(item) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(Stop::Ended),
                Err(mpsc::error::TrySendError::Full(item)) => item,
            }
        } else {
            item
        };
        let mut send = pin!(self.out.send(item));
        match self.inbox.guard(&mut send).await? {
            Ok(()) => Ok(()),
            Err(_) => Err(Stop::Ended),
        }
    }
}

fn text_block(text: String) -> Value {
    json!({"type": "text", "text": text})
}

/// The user's content as blocks, without copying them.
fn into_blocks(content: UserContent) -> Vec<Value> {
    match content {
        UserContent::Text(text) => vec![text_block(text)],
        UserContent::Blocks(blocks) => blocks,
    }
}

/// Wall-clock time in microseconds since the Unix epoch (0 if the clock is before it).
fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The text of `stream` message `index`: the prefix `chunk <index>` (plus ` t=<emitted_us>` when
/// stamped), then — when `bytes` is longer than the prefix — words appended as `" " + word`
/// until the text reaches `bytes`, cut to exactly `bytes` bytes. A prefix longer than `bytes` is
/// returned whole.
///
/// The words come from [`VOCAB`], picked by a 64-bit LCG seeded with the index (not the stamp):
/// `x = index ^ WORD_SEED`, then per word `x = x * LCG_MUL + LCG_INC (mod 2^64)` and
/// `VOCAB[(x >> 33) % VOCAB.len()]`. `stream_text` in `bench/python/fake_agent.py` is the same
/// function, byte for byte (a test below compares them when python3 is available).
fn stream_text(index: u64, bytes: usize, emitted_us: Option<u64>) -> String {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(bytes.max(48) + 16);
    let _ = write!(text, "chunk {index}");
    if let Some(t) = emitted_us {
        let _ = write!(text, " t={t}");
    }
    if text.len() < bytes {
        let mut x = index ^ WORD_SEED;
        while text.len() < bytes {
            x = x.wrapping_mul(LCG_MUL).wrapping_add(LCG_INC);
            // The remainder is below VOCAB.len(), so the cast cannot truncate.
            let word = VOCAB[((x >> 33) % VOCAB.len() as u64) as usize];
            text.push(' ');
            text.push_str(word);
        }
        // Every byte is ASCII, so any length is a char boundary.
        text.truncate(bytes);
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn stream_text_sizes() {
        assert_eq!(stream_text(7, 0, None), "chunk 7");
        assert_eq!(stream_text(7, 3, None), "chunk 7");
        assert_eq!(stream_text(12, 8, None), "chunk 12");
        assert_eq!(stream_text(12, 8, Some(5)), "chunk 12 t=5");
        for bytes in [9, 10, 100, 1000, 4096] {
            let text = stream_text(12, bytes, None);
            assert_eq!(text.len(), bytes);
            assert!(text.starts_with("chunk 12 "), "{text}");
            assert!(text.is_ascii());
            let stamped = stream_text(12, bytes.max(40), Some(1_700_000_000_123_456));
            assert_eq!(stamped.len(), bytes.max(40));
            assert!(
                stamped.starts_with("chunk 12 t=1700000000123456 "),
                "{stamped}"
            );
        }
    }

    #[test]
    fn stream_text_pinned() {
        // Pinned outputs: the Python fake agent must produce exactly these too.
        assert_eq!(
            stream_text(1, 60, None),
            "chunk 1 proident mollit in dolor aute ullamco laboris aute a"
        );
        assert_eq!(
            stream_text(2, 60, None),
            "chunk 2 amet officia nulla eu sed sed fugiat sed labore et e"
        );
        assert_eq!(
            stream_text(3, 64, Some(1_700_000_000_000_000)),
            "chunk 3 t=1700000000000000 est officia minim non anim officia re"
        );
        // Every word is from the vocabulary, and the text differs from event to event.
        let text = stream_text(99, 4096, None);
        for word in text.split(' ').skip(2).take(500) {
            assert!(VOCAB.contains(&word), "{word:?}");
        }
        let distinct: std::collections::HashSet<String> = (1..=1000)
            .map(|i| stream_text(i, 200, None)["chunk 1000".len()..].to_owned())
            .collect();
        assert_eq!(distinct.len(), 1000, "every padding differs");
    }

    #[test]
    fn vocab_is_distinct_lowercase_ascii() {
        let distinct: std::collections::HashSet<&str> = VOCAB.iter().copied().collect();
        assert_eq!(distinct.len(), VOCAB.len());
        assert!(VOCAB
            .iter()
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase())));
    }

    /// `bench/python/fake_agent.py` must produce the same texts (and accept the same
    /// scenarios): the benchmark compares servers fed the same payload. Skipped (with a
    /// message) when python3 is not installed.
    #[test]
    fn python_fake_agent_matches() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/python");
        let cases: Vec<(u64, usize, Option<u64>)> = vec![
            (1, 0, None),
            (1, 5, None),
            (7, 200, None),
            (12, 8, Some(5)),
            (123_456, 200, None),
            (99_999, 200, Some(1_700_000_000_123_456)),
            (3, 4096, None),
            (u64::MAX, 300, None),
            (0, 77, Some(0)),
            (100_000, 201, Some(u64::MAX)),
        ];
        let specs: Vec<&str> = ["5", "3:10:100", "10000:1:200:ts", "4:ts", "4:2:ts"]
            .into_iter()
            .chain(crate::scenario::BAD_STREAM_SPECS.iter().copied())
            .collect();
        let script = "import json, sys\n\
             sys.path.insert(0, sys.argv[1])\n\
             import fake_agent as f\n\
             texts = [f.stream_text(i, b, t) for i, b, t in json.loads(sys.argv[2])]\n\
             def spec(s):\n\
             \x20   try:\n\
             \x20       sc = f.parse_scenario('stream:' + s)\n\
             \x20       return [sc.count, round(sc.interval * 1000), sc.bytes, sc.timestamps]\n\
             \x20   except ValueError:\n\
             \x20       return None\n\
             specs = [spec(s) for s in json.loads(sys.argv[3])]\n\
             print(json.dumps([texts, specs]))\n";
        let output = std::process::Command::new("python3")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .arg("-c")
            .arg(script)
            .arg(&dir)
            .arg(serde_json::to_string(&cases).unwrap())
            .arg(serde_json::to_string(&specs).unwrap())
            .output();
        let output = match output {
            Ok(output) => output,
            Err(e) => {
                eprintln!("python_fake_agent_matches: SKIPPED, cannot run python3: {e}");
                return;
            }
        };
        assert!(
            output.status.success(),
            "python3 failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        /// (count, ms, bytes, timestamps), or `None` when rejected.
        type Parsed = Option<(u64, u64, usize, bool)>;
        let (texts, parsed): (Vec<String>, Vec<Parsed>) =
            serde_json::from_slice(&output.stdout).unwrap();
        for ((index, bytes, stamp), python) in cases.iter().zip(&texts) {
            assert_eq!(
                &stream_text(*index, *bytes, *stamp),
                python,
                "stream_text({index}, {bytes}, {stamp:?})"
            );
        }
        for (spec, python) in specs.iter().zip(&parsed) {
            let rust = StreamSpec::parse(spec).ok().map(|s| {
                (
                    s.count,
                    u64::try_from(s.interval.as_millis()).unwrap(),
                    s.bytes,
                    s.timestamps,
                )
            });
            assert_eq!(&rust, python, "stream:{spec}");
        }
    }

    #[tokio::test]
    async fn live_agents_counts_guards() {
        let live = LiveAgents::default();
        let a = live.enter();
        let b = live.enter();
        assert_eq!(live.count(), 2);
        drop(a);
        assert_eq!(live.count(), 1);
        let waiter = {
            let live = live.clone();
            tokio::spawn(async move { live.wait_for(0).await })
        };
        drop(b);
        waiter.await.unwrap();
        assert_eq!(live.count(), 0);
    }
}
