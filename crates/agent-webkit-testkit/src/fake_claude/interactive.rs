//! Interactive mode: the stdin dispatcher, the host→CLI control requests and the turn queue.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{oneshot, watch, Notify};

use super::config::{Config, Resume, MODES, VERSION};
use super::out::{eprint, new_uuid, timestamp, Out};
use super::turn;

/// A host answer to a request the fake sent.
#[derive(Debug)]
pub(crate) enum Answer {
    /// `subtype: success`, with the inner `response` payload.
    Success(Value),
    /// `subtype: error`, with the `error` text.
    Error(String),
    /// The turn was interrupted while waiting (the request was withdrawn).
    Interrupted,
    /// stdin closed while waiting.
    Closed,
}

/// One unit of work for the turn runner.
pub(crate) enum Job {
    /// A host user message.
    User {
        text: String,
        content: Value,
        uuid: Option<String>,
    },
    /// A turn the CLI starts by itself (background task notification).
    SelfTurn,
}

enum Next {
    Run(Job, Option<String>, watch::Receiver<bool>),
    Finish,
    Wait,
}

struct Pending {
    tx: oneshot::Sender<Answer>,
}

pub(crate) struct Current {
    interrupt: watch::Sender<bool>,
}

/// Mutable session state.
pub(crate) struct State {
    pub model: String,
    pub mode: String,
    pub hooks: Value,
    queue: VecDeque<(Job, Option<String>)>,
    busy: bool,
    current: Option<Current>,
    /// An interrupt came while busy with no turn started yet (the message still queued): like
    /// CLI 2.1.330, the turn that starts next is aborted at once.
    interrupt_next: bool,
    pending: HashMap<String, Pending>,
    pub last_is_error: bool,
    eof: bool,
    pub total_cost: f64,
    pub total_api_ms: u64,
    pub result_index: u64,
    pub last_uuid: Option<String>,
    pub tool_counter: u64,
    pub last_prompt: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl State {
    /// Number of jobs waiting to run.
    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }
}

/// The whole fake: configuration, writer, state.
pub(crate) struct Fake {
    pub cfg: Config,
    pub out: Out,
    st: Mutex<State>,
    wake: Notify,
    pub hang: AtomicBool,
    /// A fork has rewritten the earlier transcript under its own id (first mirror frame).
    forked: AtomicBool,
}

impl Fake {
    pub(crate) fn new(cfg: Config, out: Out) -> Arc<Self> {
        let st = State {
            model: cfg.initial_model.clone(),
            mode: cfg
                .args
                .permission_mode
                .clone()
                .unwrap_or_else(|| "default".into()),
            hooks: Value::Null,
            queue: VecDeque::new(),
            busy: false,
            current: None,
            interrupt_next: false,
            pending: HashMap::new(),
            last_is_error: false,
            eof: false,
            total_cost: 0.0,
            total_api_ms: 0,
            result_index: 0,
            last_uuid: match &cfg.resume {
                Resume::Loaded(r) => r.last_uuid.clone(),
                _ => None,
            },
            tool_counter: 0,
            last_prompt: String::new(),
            input_tokens: 0,
            output_tokens: 0,
        };
        Arc::new(Self {
            cfg,
            out,
            st: Mutex::new(st),
            wake: Notify::new(),
            hang: AtomicBool::new(false),
            forked: AtomicBool::new(false),
        })
    }

    /// Locks the state (a poisoned lock is still usable: the fake never panics under it).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A `system` frame with `uuid` and `session_id`.
    pub(crate) fn system(&self, subtype: &str, extra: Value) -> Value {
        let mut frame = json!({"type": "system", "subtype": subtype});
        merge(&mut frame, extra);
        merge(
            &mut frame,
            json!({"uuid": new_uuid(), "session_id": self.cfg.session_id}),
        );
        frame
    }

    /// `system/session_state_changed` (host-only).
    pub(crate) fn state_frame(&self, state: &str) -> Value {
        json!({"type": "system", "subtype": "session_state_changed", "state": state,
               "sdk_host_only": true, "uuid": new_uuid(), "session_id": self.cfg.session_id})
    }

    /// `command_lifecycle` for a user message uuid.
    pub(crate) fn lifecycle(&self, command_uuid: &str, state: &str) -> Value {
        json!({"type": "command_lifecycle", "command_uuid": command_uuid, "state": state,
               "uuid": new_uuid(), "session_id": self.cfg.session_id})
    }

    /// Emits a `transcript_mirror` frame when `--session-mirror` is on. A resumed session
    /// mirrors only new entries (same file); a fork first writes the whole earlier transcript
    /// under its own session id, like the real CLI.
    pub(crate) fn mirror(&self, mut entries: Vec<Value>) {
        if self.cfg.args.fork_session && !self.forked.swap(true, Ordering::SeqCst) {
            if let Resume::Loaded(r) = &self.cfg.resume {
                let mut history: Vec<Value> = r.entries.clone();
                for e in &mut history {
                    if let Some(obj) = e.as_object_mut().filter(|o| o.contains_key("sessionId")) {
                        obj.insert("sessionId".into(), json!(self.cfg.session_id));
                    }
                }
                history.append(&mut entries);
                entries = history;
            }
        }
        if self.cfg.args.session_mirror && !entries.is_empty() {
            self.out.send(&json!({"type": "transcript_mirror",
                "filePath": self.cfg.transcript_path(), "entries": entries}));
        }
    }

    /// A transcript entry chained to the previous one (`parentUuid`).
    pub(crate) fn transcript_entry(&self, kind: &str, message: Value, extra: Value) -> Value {
        let uuid = new_uuid();
        let parent = {
            let mut st = self.lock();
            st.last_uuid.replace(uuid.clone())
        };
        let mut entry = json!({
            "parentUuid": parent, "isSidechain": false, "type": kind, "message": message,
            "uuid": uuid, "timestamp": timestamp(), "userType": "external",
            "entrypoint": self.cfg.entrypoint, "cwd": self.cfg.cwd,
            "sessionId": self.cfg.session_id, "version": VERSION, "gitBranch": "HEAD"});
        merge(&mut entry, extra);
        entry
    }

    /// Sends a CLI→host control request owned by the current turn and returns the receiver
    /// for its answer. Returns `Err(answer)` without sending when the turn is already
    /// interrupted or stdin is closed.
    pub(crate) fn request(
        &self,
        request: Value,
    ) -> Result<(String, oneshot::Receiver<Answer>), Answer> {
        let mut st = self.lock();
        if st.eof {
            return Err(Answer::Closed);
        }
        if st.current.as_ref().is_some_and(|c| *c.interrupt.borrow()) {
            return Err(Answer::Interrupted);
        }
        let id = new_uuid();
        let (tx, rx) = oneshot::channel();
        st.pending.insert(id.clone(), Pending { tx });
        self.out
            .send(&json!({"type": "control_request", "request_id": id, "request": request}));
        Ok((id, rx))
    }

    /// Withdraws a pending request with `control_cancel_request`; false if it was not pending.
    pub(crate) fn cancel_request(&self, id: &str) -> bool {
        let mut st = self.lock();
        if st.pending.remove(id).is_some() {
            self.out
                .send(&json!({"type": "control_cancel_request", "request_id": id}));
            true
        } else {
            false
        }
    }

    // ---------------------------------------------------------------- stdin side

    /// Reads stdin until EOF, dispatching every line.
    pub(crate) async fn read_stdin(self: Arc<Self>) {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        loop {
            let line = match lines.next_line().await {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(e) => {
                    eprint(&format!(
                        "Error parsing streaming input line (<unreadable>): SyntaxError: {e}"
                    ))
                    .await;
                    self.out.exit(1).await;
                }
            };
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(&line) {
                Ok(frame) => self.dispatch(frame),
                Err(e) => {
                    let shown: String = line.chars().take(200).collect();
                    eprint(&format!(
                        "Error parsing streaming input line ({shown}): SyntaxError: {e}"
                    ))
                    .await;
                    self.out.exit(1).await;
                }
            }
        }
        let mut st = self.lock();
        st.eof = true;
        for (_, p) in st.pending.drain() {
            let _ = p.tx.send(Answer::Closed);
        }
        drop(st);
        self.wake.notify_one();
    }

    fn dispatch(&self, frame: Value) {
        match frame.get("type").and_then(Value::as_str) {
            Some("control_request") => {
                let id = frame
                    .get("request_id")
                    .cloned()
                    .unwrap_or(Value::String(String::new()));
                let request = frame.get("request").cloned().unwrap_or(Value::Null);
                self.host_request(id, &request);
            }
            Some("control_response") => {
                let Some(resp) = frame.get("response") else {
                    return;
                };
                let id = resp
                    .get("request_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let Some(pending) = self.lock().pending.remove(id) else {
                    return; // unknown or withdrawn: ignored
                };
                let answer = if resp.get("subtype").and_then(Value::as_str) == Some("error") {
                    Answer::Error(
                        resp.get("error")
                            .and_then(Value::as_str)
                            .unwrap_or("unknown error")
                            .to_owned(),
                    )
                } else {
                    Answer::Success(resp.get("response").cloned().unwrap_or(json!({})))
                };
                let _ = pending.tx.send(answer);
            }
            Some("user") => self.enqueue(&frame),
            _ => {} // keep_alive, control_cancel_request, unknown: ignored
        }
    }

    fn enqueue(&self, frame: &Value) {
        let content = frame
            .get("message")
            .and_then(|m| m.get("content"))
            .cloned()
            .unwrap_or(Value::String(String::new()));
        let text = content_text(&content);
        let uuid = frame.get("uuid").and_then(Value::as_str).map(str::to_owned);
        let mut st = self.lock();
        if !st.busy {
            st.busy = true;
            self.out.send(&self.state_frame("running"));
        }
        if let Some(u) = &uuid {
            self.out.send(&self.lifecycle(u, "queued"));
        }
        st.queue.push_back((
            Job::User {
                text,
                content,
                uuid: uuid.clone(),
            },
            uuid,
        ));
        drop(st);
        self.wake.notify_one();
    }

    fn success(&self, id: &Value, payload: Value) -> Value {
        json!({"type": "control_response",
               "response": {"subtype": "success", "request_id": id, "response": payload}})
    }

    fn error(&self, id: &Value, error: &str, code: &str) -> Value {
        json!({"type": "control_response",
               "response": {"subtype": "error", "request_id": id, "error": error, "error_code": code}})
    }

    fn host_request(&self, id: Value, request: &Value) {
        let subtype = request
            .get("subtype")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match subtype {
            "initialize" => {
                let hooks = request.get("hooks").cloned().unwrap_or(Value::Null);
                let mut st = self.lock();
                let mut payload = json!({
                    "commands": [], "agents": [], "output_style": "default",
                    "available_output_styles": ["default"],
                    "models": [{"value": "default", "displayName": "Default", "description": "fake"}],
                    "account": {"apiKeySource": "ANTHROPIC_API_KEY"},
                    "pid": self.cfg.pid, "claude_code_version": VERSION,
                    "current_permission_mode": st.mode,
                    "hook_on_failure_supported": true, "fast_mode_state": "off",
                    "session_state": if st.busy { "running" } else { "idle" },
                    "capabilities": []});
                if !hooks.is_null() {
                    merge(&mut payload, json!({"hooks_applied": true}));
                }
                st.hooks = hooks;
                self.out.send(&self.success(&id, payload));
            }
            "interrupt" => {
                let mut st = self.lock();
                let still_queued: Vec<String> =
                    st.queue.iter().filter_map(|(_, u)| u.clone()).collect();
                let response = self.success(&id, json!({"still_queued": still_queued}));
                if st.current.is_some() {
                    // Withdraw what the turn waits on, answer, and only then wake the turn,
                    // so its abort frames come after the response.
                    let pending: Vec<(String, Pending)> = st.pending.drain().collect();
                    for (rid, _) in &pending {
                        self.out
                            .send(&json!({"type": "control_cancel_request", "request_id": rid}));
                    }
                    self.out.send(&response);
                    for (_, p) in pending {
                        let _ = p.tx.send(Answer::Interrupted);
                    }
                    if let Some(cur) = &st.current {
                        cur.interrupt.send_replace(true);
                    }
                } else {
                    // Busy with the message still queued: the CLI aborts its turn as it starts
                    // (an interrupt while idle is forgotten).
                    st.interrupt_next = st.busy && !st.queue.is_empty();
                    self.out.send(&response);
                }
            }
            "set_model" => {
                let requested = request.get("model").and_then(Value::as_str);
                if requested == Some("bad-model") {
                    self.out
                        .send(&self.error(&id, "Model 'bad-model' not found", "not_found"));
                    return;
                }
                let model = match requested {
                    None | Some("") | Some("default") => self.cfg.initial_model.clone(),
                    Some(m) => m.to_owned(),
                };
                self.lock().model = model.clone();
                self.out.send(&json!({"type": "user", "message": {"role": "user",
                    "content": format!("<local-command-stdout>Set model to `{model}`</local-command-stdout>")},
                    "session_id": self.cfg.session_id, "parent_tool_use_id": null,
                    "uuid": new_uuid(), "timestamp": timestamp(), "isReplay": true}));
                self.out.send(&self.success(&id, json!({"model": model})));
            }
            "set_permission_mode" => {
                let mode = request
                    .get("mode")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if MODES.contains(&mode) {
                    self.lock().mode = mode.to_owned();
                    self.out.send(&self.success(&id, json!({"mode": mode})));
                    self.out.send(
                        &self.system("status", json!({"status": null, "permissionMode": mode})),
                    );
                } else {
                    self.out.send(&self.error(
                        &id,
                        &format!(
                            "Cannot set permission mode: must be one of {}",
                            MODES.join(", ")
                        ),
                        "invalid_mode",
                    ));
                }
            }
            "stop_task" => self.out.send(&self.success(&id, json!({}))),
            other => self.out.send(&self.error(
                &id,
                &format!("Unsupported control request subtype: {other}"),
                "unsupported_request",
            )),
        }
    }

    // ---------------------------------------------------------------- turn side

    /// Runs queued jobs one at a time until stdin is closed and the queue is empty, then exits.
    pub(crate) async fn run_turns(self: Arc<Self>) {
        loop {
            let next = {
                let mut st = self.lock();
                match st.queue.pop_front() {
                    Some((job, uuid)) => {
                        let (tx, rx) = watch::channel(std::mem::take(&mut st.interrupt_next));
                        st.current = Some(Current { interrupt: tx });
                        Next::Run(job, uuid, rx)
                    }
                    None if st.eof => Next::Finish,
                    None => Next::Wait,
                }
            };
            let (job, uuid, irq) = match next {
                Next::Run(job, uuid, irq) => (job, uuid, irq),
                Next::Finish => break,
                Next::Wait => {
                    self.wake.notified().await;
                    continue;
                }
            };
            if let Some(u) = &uuid {
                self.out.send(&self.lifecycle(u, "started"));
            }
            let report = turn::run(&self, job, irq).await;
            let mut st = self.lock();
            st.current = None;
            if let Some(u) = &uuid {
                let state = if report.interrupted {
                    "cancelled"
                } else {
                    "completed"
                };
                self.out.send(&self.lifecycle(u, state));
            }
            if report.self_turn {
                st.queue.push_front((Job::SelfTurn, None));
            }
            if st.queue.is_empty() {
                st.busy = false;
                self.out.send(&self.state_frame("idle"));
            }
        }
        // stdin closed and nothing left to do.
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let (cost, api_ms, is_error) = {
            let st = self.lock();
            (st.total_cost, st.total_api_ms, st.last_is_error)
        };
        self.mirror(vec![
            json!({"type": "cost-state", "sessionId": self.cfg.session_id,
            "totalCostUSD": cost, "totalAPIDuration": api_ms,
            "totalAPIDurationWithoutRetries": api_ms, "totalToolDuration": 0,
            "totalLinesAdded": 0, "totalLinesRemoved": 0,
            "totalDuration": super::out::now_ms().saturating_sub(self.cfg.start_ms),
            "startTime": self.cfg.start_ms, "modelUsage": {}, "hasUnknownModelCost": false}),
        ]);
        self.out.exit(i32::from(is_error)).await;
    }
}

/// The text of a user message content: a string, or the concatenated `text` blocks.
pub(crate) fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// Copies the keys of `extra` (an object) into `target` (an object).
pub(crate) fn merge(target: &mut Value, extra: Value) {
    if let (Value::Object(t), Value::Object(e)) = (target, extra) {
        let e: Map<String, Value> = e;
        for (k, v) in e {
            t.insert(k, v);
        }
    }
}
