//! Prometheus metrics: one process-wide set, fed by one-line calls from the rest of core, and
//! rendered in the Prometheus text format (0.0.4) by [`render`].
//!
//! Counters and histograms are bumped where things happen (`turn_finished`,
//! `event_appended`, ...). Gauges that describe the present (sessions by state, live agents,
//! warm spares, subscribers, the agents' memory) are sampled from a [`SessionRegistry`] when
//! the metrics are rendered, so nothing has to keep them in step. No label carries a session
//! id: label values come from small fixed sets (route templates, statuses, outcomes). Every
//! metric is listed with its type and labels in `docs/operations.md`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::agent::AgentMessage;
use crate::registry::SessionRegistry;
use crate::session::AgentState;

mod memory;
mod timed_store;

pub(crate) use timed_store::TimedStore;

/// The `Content-Type` of what [`render`] returns.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric's name starts with this.
const PREFIX: &str = "agent_webkit";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

fn outcome(ok: bool) -> OutcomeLabels {
    OutcomeLabels {
        outcome: if ok { "ok" } else { "error" },
    }
}

/// Latency buckets in seconds, 1 ms to ~65 s.
fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 17,
    ))
}

/// Turn-length buckets in seconds, 50 ms to ~27 min.
fn turn_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.05, 2.0, 16,
    ))
}

struct Metrics {
    registry: Registry,
    http_responses: Family<HttpLabels, Counter>,
    http_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    agent_starts: Family<OutcomeLabels, Counter>,
    agent_start_seconds: Histogram,
    turns: Family<OutcomeLabels, Counter>,
    turn_seconds: Histogram,
    first_delta_seconds: Histogram,
    events: Counter,
    sse_bytes: Counter,
    lagged_cut: Counter,
    persist_writes: Family<OutcomeLabels, Counter>,
    persist_write_seconds: Histogram,
    store_writes: Family<OutcomeLabels, Counter>,
    store_write_seconds: Histogram,
    sessions: Family<StateLabels, Gauge>,
    live_agents: Gauge,
    warm_spares: Gauge,
    subscribers: Gauge,
    agent_memory: Gauge,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let m = Self {
            registry: Registry::default(),
            http_responses: Family::default(),
            http_seconds: Family::new_with_constructor(latency_histogram),
            agent_starts: Family::default(),
            agent_start_seconds: latency_histogram(),
            turns: Family::default(),
            turn_seconds: turn_histogram(),
            first_delta_seconds: latency_histogram(),
            events: Counter::default(),
            sse_bytes: Counter::default(),
            lagged_cut: Counter::default(),
            persist_writes: Family::default(),
            persist_write_seconds: latency_histogram(),
            store_writes: Family::default(),
            store_write_seconds: latency_histogram(),
            sessions: Family::default(),
            live_agents: Gauge::default(),
            warm_spares: Gauge::default(),
            subscribers: Gauge::default(),
            agent_memory: Gauge::default(),
        };
        let r = &mut registry;
        r.register(
            "http_responses",
            "HTTP responses by method, route template and status",
            m.http_responses.clone(),
        );
        r.register(
            "http_response_seconds",
            "Time to produce an HTTP response (for SSE: until the stream starts), by route",
            m.http_seconds.clone(),
        );
        r.register(
            "agent_starts",
            "Agent starts (new sessions, take-overs and wake-ups) by outcome",
            m.agent_starts.clone(),
        );
        r.register(
            "agent_start_seconds",
            "Time for an agent to start (for the Claude CLI: spawn to initialize answered)",
            m.agent_start_seconds.clone(),
        );
        r.register(
            "turns",
            "Finished turns by outcome (ok: the agent's result; error: the query failed)",
            m.turns.clone(),
        );
        r.register(
            "turn_seconds",
            "Turn length, user message sent to the agent until its result",
            m.turn_seconds.clone(),
        );
        r.register(
            "first_delta_seconds",
            "Time from a user message being sent to the agent to its first output (a streamed delta, or a whole message from an agent that does not stream)",
            m.first_delta_seconds.clone(),
        );
        r.register(
            "events_appended",
            "Events appended to sessions' event logs",
            m.events.clone(),
        );
        r.register(
            "sse_bytes_written",
            "Bytes handed to the HTTP server for SSE streams",
            m.sse_bytes.clone(),
        );
        r.register(
            "lagged_subscribers_cut",
            "SSE streams ended with error {code: evicted} because the reader fell behind",
            m.lagged_cut.clone(),
        );
        r.register(
            "persist_writes",
            "Event-log batch writes to the failover persistence, by outcome (each attempt)",
            m.persist_writes.clone(),
        );
        r.register(
            "persist_write_seconds",
            "Latency of one event-log batch write to the failover persistence",
            m.persist_write_seconds.clone(),
        );
        r.register(
            "store_writes",
            "Transcript appends to the session store, by outcome",
            m.store_writes.clone(),
        );
        r.register(
            "store_write_seconds",
            "Latency of one transcript append to the session store",
            m.store_write_seconds.clone(),
        );
        r.register(
            "sessions",
            "Sessions held by this server, by state (live, hibernated, ended)",
            m.sessions.clone(),
        );
        r.register(
            "live_agents",
            "Sessions' live agents (running or starting)",
            m.live_agents.clone(),
        );
        r.register(
            "warm_spares",
            "Idle warm spare agents",
            m.warm_spares.clone(),
        );
        r.register(
            "subscribers",
            "Connected SSE subscribers",
            m.subscribers.clone(),
        );
        r.register(
            "agent_memory_bytes",
            "Resident memory of this server's child process trees (the agents' CLIs and what they run), sampled from /proc",
            m.agent_memory.clone(),
        );
        Self { registry, ..m }
    }
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// The Prometheus text of every metric, with the gauges sampled from `registry` now.
pub async fn render(registry: &SessionRegistry) -> String {
    let m = metrics();
    let (mut live, mut hibernated, mut ended, mut subscribers) = (0i64, 0i64, 0i64, 0i64);
    for id in registry.ids() {
        let Some(session) = registry.get(&id) else {
            continue;
        };
        subscribers += i64::try_from(session.subscriber_count()).unwrap_or(i64::MAX);
        if session.has_ended() {
            ended += 1;
        } else if session.agent_state() == AgentState::Hibernated {
            hibernated += 1;
        } else {
            live += 1;
        }
    }
    for (state, n) in [("live", live), ("hibernated", hibernated), ("ended", ended)] {
        m.sessions.get_or_create(&StateLabels { state }).set(n);
    }
    m.live_agents.set(live);
    m.warm_spares
        .set(i64::try_from(registry.warm_spares()).unwrap_or(i64::MAX));
    m.subscribers.set(subscribers);
    let memory = tokio::task::spawn_blocking(memory::children_rss_bytes)
        .await
        .unwrap_or(0);
    m.agent_memory
        .set(i64::try_from(memory).unwrap_or(i64::MAX));
    let mut out = String::new();
    if let Err(err) = prometheus_client::encoding::prometheus_text::encode(&mut out, &m.registry) {
        tracing::warn!(error = %err, "metrics could not be rendered");
    }
    out
}

/// An HTTP response: `route` is the route template (never a session id).
pub(crate) fn http_response(method: &str, route: &'static str, status: u16, took: Duration) {
    let m = metrics();
    m.http_responses
        .get_or_create(&HttpLabels {
            method: known_method(method),
            route,
            status,
        })
        .inc();
    m.http_seconds
        .get_or_create(&RouteLabels { route })
        .observe(took.as_secs_f64());
}

/// The method as a label from a fixed set (anything else is `other`).
fn known_method(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        _ => "other",
    }
}

/// Awaits an agent start (`Ok(Ok(_))`: the agent is ready) and counts it.
pub(crate) async fn timed_agent_start<T, E, F>(
    start: impl std::future::Future<Output = Result<Result<T, E>, F>>,
) -> Result<Result<T, E>, F> {
    let started = Instant::now();
    let outcome = start.await;
    agent_started(started.elapsed(), matches!(outcome, Ok(Ok(_))));
    outcome
}

/// An agent start finished (`ok`: the agent is ready).
fn agent_started(took: Duration, ok: bool) {
    let m = metrics();
    m.agent_starts.get_or_create(&outcome(ok)).inc();
    if ok {
        m.agent_start_seconds.observe(took.as_secs_f64());
    }
}

/// One event appended to a session's log.
pub(crate) fn event_appended() {
    metrics().events.inc();
}

/// `n` bytes handed to the HTTP server for an SSE stream.
pub(crate) fn sse_bytes(n: usize) {
    metrics().sse_bytes.inc_by(n as u64);
}

/// A subscriber's stream was ended because it lagged behind.
pub(crate) fn lagged_subscriber_cut() {
    metrics().lagged_cut.inc();
}

/// One attempt to write a batch of events to the failover persistence.
pub(crate) fn persist_write(took: Duration, ok: bool) {
    let m = metrics();
    m.persist_writes.get_or_create(&outcome(ok)).inc();
    m.persist_write_seconds.observe(took.as_secs_f64());
}

/// One transcript append to the session store.
fn store_write(took: Duration, ok: bool) {
    let m = metrics();
    m.store_writes.get_or_create(&outcome(ok)).inc();
    m.store_write_seconds.observe(took.as_secs_f64());
}

/// More queued trace contexts than a session's inbound queue can hold are dropped, oldest
/// first.
const MAX_QUEUED_CONTEXTS: usize = 256;

/// A session's turn clock: when its current turn started and whether a delta has been seen
/// since, for `turn_seconds` and `first_delta_seconds`; and the turn's tracing span.
#[derive(Debug, Default)]
pub(crate) struct TurnClock {
    started: Mutex<Option<(Instant, tracing::Span)>>,
    /// Set at the first output of the turn (so later deltas cost one atomic load).
    delta_seen: AtomicBool,
    /// The trace context of each queued user message (when traces are exported), oldest
    /// first: the turn it starts is a child of the request that sent it.
    queued: Mutex<VecDeque<Option<String>>>,
}

impl TurnClock {
    /// A user message is being queued (called in the request that sends it).
    pub(crate) fn queued(&self) {
        let mut queued = self.queued.lock();
        if queued.len() >= MAX_QUEUED_CONTEXTS {
            queued.pop_front();
        }
        queued.push_back(crate::trace::capture());
    }

    /// The message just queued was refused.
    pub(crate) fn unqueue(&self) {
        self.queued.lock().pop_back();
    }

    /// A user message was handed to the agent: a turn starts (a span `turn` with the
    /// session id, in the trace of the request that sent the message).
    pub(crate) fn started(&self, session_id: &str) {
        let span = tracing::info_span!("turn", session_id = %session_id);
        if let Some(traceparent) = self.queued.lock().pop_front().flatten() {
            crate::trace::set_remote_parent(&span, &traceparent);
        }
        *self.started.lock() = Some((Instant::now(), span));
        self.delta_seen.store(false, Ordering::Release);
    }

    /// The agent sent a message; the first output of an open turn (a delta, or a whole
    /// message from an agent that does not stream) is timed.
    pub(crate) fn agent_message(&self, message: &AgentMessage) {
        if self.delta_seen.load(Ordering::Acquire)
            || !matches!(
                message,
                AgentMessage::Delta { .. } | AgentMessage::Assistant(_)
            )
        {
            return;
        }
        if let Some((at, _)) = &*self.started.lock() {
            if !self.delta_seen.swap(true, Ordering::AcqRel) {
                let took = at.elapsed();
                metrics().first_delta_seconds.observe(took.as_secs_f64());
            }
        }
    }

    /// The open turn (if any) ended: its result (`ok`) or a failed query.
    pub(crate) fn finished(&self, ok: bool) {
        let Some((at, span)) = self.started.lock().take() else {
            return;
        };
        self.delta_seen.store(true, Ordering::Release);
        let m = metrics();
        m.turns.get_or_create(&outcome(ok)).inc();
        m.turn_seconds.observe(at.elapsed().as_secs_f64());
        span.in_scope(|| tracing::debug!(ok, "turn finished"));
    }
}
