//! One turn: `system/init`, the directive steps, the `result`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::{oneshot, watch};

use super::config::{Resume, VERSION};
use super::directives::{self, Directive};
use super::interactive::{merge, Answer, Fake, Job};
use super::out::{eprint, hex, new_uuid, timestamp};

/// The text the CLI substitutes for a deny with `interrupt:true` / an interrupted tool.
pub(crate) const REJECT_TEXT: &str = "The user doesn't want to proceed with this tool use. The tool use was rejected (eg. if it was a file edit, the new_string was NOT written to the file). STOP what you are doing and wait for the user to tell you how to proceed.";
const INTERRUPT_MARKER: &str = "[Request interrupted by user]";
const COST_PER_CALL: f64 = 0.0105;

/// What the runner needs to know after a turn.
pub(crate) struct Report {
    pub interrupted: bool,
    pub self_turn: bool,
}

/// Why a turn stopped early.
enum Stop {
    Aborted(&'static str),
    ApiError,
}

struct Msg {
    id: String,
    request_id: String,
    blocks: Vec<Value>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tool {
    Bash,
    Read,
    Ask,
}

enum Decision {
    Allow {
        input: Value,
        source: &'static str,
    },
    Deny {
        message: String,
        source: &'static str,
    },
    DenyInterrupt,
    Failed(String),
    Cancelled,
    Interrupted,
}

struct Turn<'a> {
    f: &'a Fake,
    irq: watch::Receiver<bool>,
    user_uuid: Option<String>,
    mark_stream: bool,
    mark_assistant: bool,
    started: Instant,
    api_calls: u64,
    api_ms: u64,
    denials: Vec<Value>,
    last_text: String,
    model: String,
    mode: String,
    input_tokens: u64,
    output_tokens: u64,
    partial: bool,
    self_turn: bool,
    host_interrupted: bool,
}

/// Runs one job to its `result`.
pub(crate) async fn run(f: &Arc<Fake>, job: Job, irq: watch::Receiver<bool>) -> Report {
    let (model, mode) = {
        let st = f.lock();
        (st.model.clone(), st.mode.clone())
    };
    let (text, content, uuid, origin) = match job {
        Job::User {
            text,
            content,
            uuid,
        } => (text, Some(content), uuid, None),
        Job::SelfTurn => (
            String::new(),
            None,
            None,
            Some(json!({"kind": "task-notification"})),
        ),
    };
    let mut t = Turn {
        f,
        irq,
        mark_stream: uuid.is_some(),
        mark_assistant: uuid.is_some(),
        user_uuid: uuid,
        started: Instant::now(),
        api_calls: 0,
        api_ms: 0,
        denials: Vec::new(),
        last_text: String::new(),
        model,
        mode,
        input_tokens: 0,
        output_tokens: 0,
        partial: f.cfg.args.include_partial_messages,
        self_turn: false,
        host_interrupted: false,
    };
    t.init_frame();
    if let Some(content) = &content {
        f.lock().last_prompt = text.clone();
        let now = timestamp();
        let user = f.transcript_entry(
            "user",
            json!({"role": "user", "content": content}),
            json!({"permissionMode": t.mode, "promptSource": "sdk"}),
        );
        f.mirror(vec![
            json!({"type": "queue-operation", "operation": "enqueue", "timestamp": now,
                   "sessionId": f.cfg.session_id, "content": text}),
            json!({"type": "queue-operation", "operation": "dequeue", "timestamp": now,
                   "sessionId": f.cfg.session_id}),
            user,
        ]);
    }
    let outcome = if origin.is_some() {
        t.text_message(vec!["background task finished".into()], None)
            .await
    } else {
        t.steps(&text).await
    };
    t.finish(outcome, origin);
    Report {
        interrupted: t.host_interrupted,
        self_turn: t.self_turn,
    }
}

impl Turn<'_> {
    fn sid(&self) -> &str {
        &self.f.cfg.session_id
    }

    fn send(&self, frame: &Value) {
        self.f.out.send(frame);
    }

    fn interrupted(&self) -> bool {
        *self.irq.borrow()
    }

    /// Resolves when the turn is interrupted (never if the runner dropped the sender).
    async fn until_interrupted(irq: &mut watch::Receiver<bool>) {
        if irq.wait_for(|v| *v).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Sleeps `d`; true when interrupted meanwhile.
    async fn sleep(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = Self::until_interrupted(&mut self.irq) => true,
        }
    }

    /// Waits for the host's answer to a request.
    async fn wait(&mut self, rx: oneshot::Receiver<Answer>) -> Answer {
        tokio::select! {
            answer = rx => answer.unwrap_or(Answer::Closed),
            _ = Self::until_interrupted(&mut self.irq) => Answer::Interrupted,
        }
    }

    /// Sends a request and waits for its answer.
    async fn ask(&mut self, request: Value) -> Answer {
        match self.f.request(request) {
            Ok((_, rx)) => self.wait(rx).await,
            Err(answer) => answer,
        }
    }

    fn uuid_marks(&self) -> Value {
        match &self.user_uuid {
            Some(u) => json!({"user_message_uuid": u, "user_message_uuids": [u]}),
            None => json!({}),
        }
    }

    fn init_frame(&self) {
        let cfg = &self.f.cfg;
        let mut extra = json!({
            "cwd": cfg.cwd, "session_id": cfg.session_id,
            "tools": ["Task", "AskUserQuestion", "Bash", "Edit", "Read", "Write", "WebFetch", "WebSearch"],
            "mcp_servers": cfg.mcp_servers, "model": self.model, "permissionMode": self.mode,
            "slash_commands": [], "terminal_slash_commands": [], "apiKeySource": "ANTHROPIC_API_KEY",
            "claude_code_version": VERSION, "output_style": "default",
            "agents": ["general-purpose"], "skills": [], "plugins": [],
            "capabilities": ["interrupt_receipt_v1", "msg_lifecycle_v1", "ask_user_question_unanswered_v1"],
            "analytics_disabled": true, "product_feedback_disabled": true, "served_by_anthropic": false,
            "uuid": new_uuid(), "memory_paths": {"auto": cfg.memory_dir()},
            "original_cwd": cfg.cwd, "additional_directories": cfg.args.add_dirs,
            "fast_mode_state": "off", "fast_mode_disabled_reason": "sdk_opt_in_required",
            "per_turn_effort_active": true, "ultrathink_available": false,
            "ultrathink_typed_raises": false, "view_mode": "default"});
        if let Some(u) = &self.user_uuid {
            merge(&mut extra, json!({"user_message_uuids": [u]}));
        }
        let mut frame = json!({"type": "system", "subtype": "init"});
        merge(&mut frame, extra);
        self.send(&frame);
    }

    // ------------------------------------------------------------------ steps

    async fn steps(&mut self, text: &str) -> Result<(), Stop> {
        if self.interrupted() {
            // Interrupted before it started (see `State::interrupt_next`).
            return Err(self.interrupted_between_steps());
        }
        let list = directives::parse(text);
        if list.is_empty() {
            return self.echo(text).await;
        }
        for d in &list {
            if self.interrupted() {
                return Err(self.interrupted_between_steps());
            }
            self.step(d).await?;
        }
        if !list.iter().any(Directive::replies) {
            if self.interrupted() {
                return Err(self.interrupted_between_steps());
            }
            self.echo(text).await?;
        }
        Ok(())
    }

    fn interrupted_between_steps(&mut self) -> Stop {
        self.host_interrupted = true;
        self.interrupt_marker();
        Stop::Aborted("aborted_streaming")
    }

    async fn echo(&mut self, text: &str) -> Result<(), Stop> {
        let reply = match &self.f.cfg.resume {
            Resume::Loaded(r) => format!(
                "echo: {text} (resumed: {} earlier messages)",
                r.prior_messages
            ),
            _ => format!("echo: {text}"),
        };
        self.text_message(split3(&reply), None).await
    }

    async fn step(&mut self, d: &Directive) -> Result<(), Stop> {
        match d {
            Directive::Bash(cmd) => {
                let input = json!({"command": cmd, "description": format!("Run {cmd}")});
                self.tool(Tool::Bash, input, "I'll run that.", "done with bash", None)
                    .await
            }
            Directive::Read(path) => {
                let input = json!({"file_path": path});
                self.tool(
                    Tool::Read,
                    input,
                    "I'll read that file.",
                    "done with read",
                    None,
                )
                .await
            }
            Directive::Ask { question, options } => {
                let options: Vec<Value> = options
                    .iter()
                    .map(|o| json!({"label": o, "description": ""}))
                    .collect();
                let input = json!({"questions": [{"question": question, "header": "Question",
                    "options": options, "multiSelect": false}]});
                self.tool(
                    Tool::Ask,
                    input,
                    "I have a question.",
                    "done with ask",
                    None,
                )
                .await
            }
            Directive::Cancel => {
                let input =
                    json!({"command": "echo cancel-me", "description": "Run echo cancel-me"});
                self.tool(
                    Tool::Bash,
                    input,
                    "I'll run that.",
                    "done with cancel",
                    Some(Duration::from_millis(100)),
                )
                .await
            }
            Directive::Slow(n) => {
                let chunks = (1..=*n).map(|i| format!("word{i} ")).collect();
                self.text_message(chunks, Some(Duration::from_millis(50)))
                    .await
            }
            Directive::Huge(n) => self.text_message(split3(&"x".repeat(*n)), None).await,
            Directive::Blocks(n) => {
                // One message of N small text blocks: N `assistant` frames under one id.
                let mut msg = self.begin_message();
                for index in 0..*n {
                    self.text_block(&mut msg, index, vec![format!("block {index}. ")], None)
                        .await?;
                }
                self.end_message(&msg, "end_turn");
                Ok(())
            }
            Directive::SelfTurn => {
                self.self_turn = true;
                Ok(())
            }
            Directive::UnknownRequest => {
                let request = json!({"subtype": "elicitation", "mcp_server_name": "fake",
                    "message": "The fake CLI asks the host for input", "mode": "form",
                    "requested_schema": {"type": "object", "properties": {}}});
                let answered = match self.ask(request).await {
                    Answer::Success(_) => "success".to_owned(),
                    Answer::Error(e) => e,
                    Answer::Closed => "stream closed".to_owned(),
                    Answer::Interrupted => {
                        self.host_interrupted = true;
                        self.interrupt_marker();
                        return Err(Stop::Aborted("aborted_tools"));
                    }
                };
                let reply = format!("host answered elicitation with: {answered}");
                self.text_message(split3(&reply), None).await
            }
            Directive::Crash => {
                eprint("fatal: simulated crash").await;
                self.f.out.exit(3).await
            }
            Directive::Garbage => {
                self.f.out.raw("{this is not json".into());
                Ok(())
            }
            Directive::Stderr(kib) => {
                let line = format!("{:<63}\n", "fake-claude: filler stderr line");
                let chunk = line.repeat(16); // 1 KiB
                let mut err = tokio::io::stderr();
                for _ in 0..*kib {
                    let _ = err.write_all(chunk.as_bytes()).await;
                }
                let _ = err.flush().await;
                Ok(())
            }
            Directive::Hang => {
                self.f.hang.store(true, Ordering::SeqCst);
                Ok(())
            }
            Directive::ApiError => self.api_error(),
            Directive::AuthRetry => self.auth_retry().await,
            Directive::Background(task_id) => {
                self.send(&json!({"type": "system", "subtype": "task_started",
                    "task_id": task_id, "description": "a background shell",
                    "task_type": "local_bash", "is_backgrounded": true,
                    "uuid": uuid::Uuid::new_v4().to_string(), "session_id": self.sid()}));
                Ok(())
            }
            Directive::BackgroundDone(task_id) => {
                self.send(&json!({"type": "system", "subtype": "task_notification",
                    "task_id": task_id, "status": "completed", "output_file": "",
                    "summary": "done", "uuid": uuid::Uuid::new_v4().to_string(),
                    "session_id": self.sid()}));
                Ok(())
            }
        }
    }

    // --------------------------------------------------------------- messages

    fn stream(&mut self, msg: &Msg, event: Value, extra: Value) {
        if !self.partial {
            return;
        }
        let mut frame = json!({"type": "stream_event", "event": event, "session_id": self.sid(),
            "parent_tool_use_id": null, "uuid": new_uuid()});
        merge(&mut frame, extra);
        merge(&mut frame, json!({"api_message_id": msg.id}));
        self.send(&frame);
    }

    fn usage(&self) -> Value {
        json!({"input_tokens": 100 + self.input_tokens, "output_tokens": 1,
               "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
    }

    fn begin_message(&mut self) -> Msg {
        self.api_calls += 1;
        self.send(&self.f.system("status", json!({"status": "requesting"})));
        let msg = Msg {
            id: format!("msg_fake_{}", hex(20)),
            request_id: format!("req_fake_{}", hex(20)),
            blocks: Vec::new(),
        };
        let start = json!({"type": "message_start", "message": {"id": msg.id, "type": "message",
            "role": "assistant", "model": self.model, "content": [], "stop_reason": null,
            "stop_sequence": null, "usage": self.usage()}});
        let mut extra = json!({"ttft_ms": 5});
        if self.mark_stream && self.partial {
            self.mark_stream = false;
            merge(&mut extra, self.uuid_marks());
        }
        self.stream(&msg, start, extra);
        msg
    }

    fn assistant(&mut self, msg: &Msg, block: &Value, extra: Value) {
        let mut frame = json!({"type": "assistant", "message": {"id": msg.id, "type": "message",
            "role": "assistant", "model": self.model, "content": [block], "stop_reason": null,
            "stop_sequence": null, "usage": self.usage(), "context_management": null},
            "parent_tool_use_id": null, "session_id": self.sid(), "uuid": new_uuid(),
            "timestamp": timestamp(), "request_id": msg.request_id});
        if self.mark_assistant {
            self.mark_assistant = false;
            merge(&mut frame, self.uuid_marks());
        }
        merge(&mut frame, extra);
        self.send(&frame);
    }

    /// Streams one text block; on interrupt emits the aborted frames and returns the stop.
    async fn text_block(
        &mut self,
        msg: &mut Msg,
        index: usize,
        chunks: Vec<String>,
        delay: Option<Duration>,
    ) -> Result<(), Stop> {
        self.stream(
            msg,
            json!({"type": "content_block_start", "index": index,
                   "content_block": {"type": "text", "text": ""}}),
            json!({}),
        );
        let mut text = String::new();
        for chunk in chunks {
            if let Some(d) = delay {
                if self.sleep(d).await {
                    return Err(self.abort_streaming(msg, index, text));
                }
            }
            text.push_str(&chunk);
            self.stream(
                msg,
                json!({"type": "content_block_delta", "index": index,
                       "delta": {"type": "text_delta", "text": chunk}}),
                json!({}),
            );
        }
        let block = json!({"type": "text", "text": text});
        self.assistant(msg, &block, json!({}));
        msg.blocks.push(block);
        self.stream(
            msg,
            json!({"type": "content_block_stop", "index": index}),
            json!({}),
        );
        self.last_text = text;
        Ok(())
    }

    fn abort_streaming(&mut self, msg: &Msg, index: usize, text: String) -> Stop {
        self.host_interrupted = true;
        let block = json!({"type": "text", "text": text});
        self.assistant(msg, &block, json!({"aborted": true}));
        let entry = self.f.transcript_entry(
            "assistant",
            json!({"id": msg.id, "type": "message", "role": "assistant", "model": self.model,
                   "content": [block], "stop_reason": null, "stop_sequence": null}),
            json!({"requestId": msg.request_id}),
        );
        self.f.mirror(vec![entry]);
        self.interrupt_marker();
        self.stream(
            msg,
            json!({"type": "content_block_stop", "index": index}),
            json!({}),
        );
        self.stream(
            msg,
            json!({"type": "message_delta", "context_management": null,
                   "delta": {"container": null, "stop_details": null, "stop_reason": null, "stop_sequence": null},
                   "usage": {"input_tokens": 100, "output_tokens": 1,
                             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}),
            json!({}),
        );
        self.stream(
            msg,
            json!({"type": "message_stop"}),
            json!({"abandoned_blocks": {"api_message_id": msg.id, "from_block_index": index + 1}}),
        );
        Stop::Aborted("aborted_streaming")
    }

    fn tool_use_block(&mut self, msg: &mut Msg, index: usize, id: &str, name: &str, input: &Value) {
        self.stream(
            msg,
            json!({"type": "content_block_start", "index": index,
                   "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
            json!({}),
        );
        self.stream(
            msg,
            json!({"type": "content_block_delta", "index": index,
                   "delta": {"type": "input_json_delta", "partial_json": input.to_string()}}),
            json!({}),
        );
        let block = json!({"type": "tool_use", "id": id, "name": name, "input": input});
        self.assistant(msg, &block, json!({}));
        msg.blocks.push(block);
        self.stream(
            msg,
            json!({"type": "content_block_stop", "index": index}),
            json!({}),
        );
    }

    fn end_message(&mut self, msg: &Msg, stop_reason: &str) {
        let output_tokens = 10 * msg.blocks.len() as u64;
        self.input_tokens += 100;
        self.output_tokens += output_tokens;
        self.api_ms += 5;
        {
            let mut st = self.f.lock();
            st.total_cost += COST_PER_CALL;
            st.total_api_ms += 5;
            st.input_tokens += 100;
            st.output_tokens += output_tokens;
        }
        self.stream(
            msg,
            json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                   "usage": {"output_tokens": output_tokens}}),
            json!({}),
        );
        self.stream(msg, json!({"type": "message_stop"}), json!({}));
        let entries: Vec<Value> = msg
            .blocks
            .iter()
            .map(|block| {
                self.f.transcript_entry(
                    "assistant",
                    json!({"id": msg.id, "type": "message", "role": "assistant", "model": self.model,
                           "content": [block], "stop_reason": stop_reason, "stop_sequence": null}),
                    json!({"requestId": msg.request_id}),
                )
            })
            .collect();
        self.f.mirror(entries);
    }

    async fn text_message(
        &mut self,
        chunks: Vec<String>,
        delay: Option<Duration>,
    ) -> Result<(), Stop> {
        let mut msg = self.begin_message();
        self.text_block(&mut msg, 0, chunks, delay).await?;
        self.end_message(&msg, "end_turn");
        Ok(())
    }

    fn user_frame(&self, content: Value, extra: Value) -> Value {
        let mut frame = json!({"type": "user", "message": {"role": "user", "content": content},
            "parent_tool_use_id": null, "session_id": self.sid(), "uuid": new_uuid(),
            "timestamp": timestamp()});
        merge(&mut frame, extra);
        frame
    }

    fn interrupt_marker(&mut self) {
        let content = json!([{"type": "text", "text": INTERRUPT_MARKER}]);
        self.send(&self.user_frame(content.clone(), json!({})));
        let entry = self.f.transcript_entry(
            "user",
            json!({"role": "user", "content": content}),
            json!({}),
        );
        self.f.mirror(vec![entry]);
    }

    fn api_error(&mut self) -> Result<(), Stop> {
        self.api_calls += 1;
        let text = "API Error: 400 fake: scripted bad request";
        self.send(
            &json!({"type": "assistant", "message": {"id": new_uuid(), "container": null,
            "model": "<synthetic>", "role": "assistant", "stop_reason": "stop_sequence",
            "stop_sequence": "", "type": "message",
            "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0},
            "content": [{"type": "text", "text": text}], "context_management": null},
            "parent_tool_use_id": null, "session_id": self.sid(), "uuid": new_uuid(),
            "timestamp": timestamp(), "error": "unknown", "is_api_error_message": true,
            "api_error_status": 400, "api_error_type": "invalid_request_error"}),
        );
        self.last_text = text.to_owned();
        Err(Stop::ApiError)
    }

    /// A rejected key as the real CLI handles it: an `api_retry` frame per failed call, then
    /// the retry's backoff (0.6 s doubling, 10 retries); an interrupt ends the turn at once.
    async fn auth_retry(&mut self) -> Result<(), Stop> {
        let mut delay = 600u64;
        for attempt in 1..=10u64 {
            self.api_calls += 1;
            self.send(&self.f.system(
                "api_retry",
                json!({"attempt": attempt, "max_retries": 10, "retry_delay_ms": delay,
                       "error_status": 401, "error": "authentication_failed"}),
            ));
            if self.sleep(Duration::from_millis(delay)).await {
                self.host_interrupted = true;
                self.interrupt_marker();
                return Err(Stop::Aborted("aborted_streaming"));
            }
            delay *= 2;
        }
        self.last_text = "Failed to authenticate. API Error: 401 fake".to_owned();
        Err(Stop::ApiError)
    }

    // ------------------------------------------------------------------ tools

    async fn tool(
        &mut self,
        tool: Tool,
        input: Value,
        intro: &str,
        done: &str,
        cancel_after: Option<Duration>,
    ) -> Result<(), Stop> {
        let name = match tool {
            Tool::Bash => "Bash",
            Tool::Read => "Read",
            Tool::Ask => "AskUserQuestion",
        };
        let tool_id = {
            let mut st = self.f.lock();
            st.tool_counter += 1;
            format!("toolu_fake_{}", st.tool_counter)
        };
        let mut msg = self.begin_message();
        self.text_block(&mut msg, 0, vec![intro.to_owned()], None)
            .await?;
        self.tool_use_block(&mut msg, 1, &tool_id, name, &input);
        self.end_message(&msg, "tool_use");

        let decision = self
            .decide(tool, name, &input, &tool_id, cancel_after)
            .await;
        let denial = json!({"tool_name": name, "tool_use_id": tool_id, "tool_input": input});
        let reject_meta = json!({"decision": "reject", "source": "user_reject"});
        match decision {
            Decision::Allow {
                input: used,
                source,
            } => {
                let (content, is_error, result) = self.execute(tool, &used);
                let meta = json!({"decision": "accept", "source": source});
                self.tool_result(&tool_id, &content, is_error, result, meta);
            }
            Decision::Deny { message, source } => {
                self.denials.push(denial);
                let meta = json!({"decision": "reject", "source": source});
                self.tool_result(
                    &tool_id,
                    &message,
                    Some(true),
                    json!(format!("Error: {message}")),
                    meta,
                );
            }
            Decision::Failed(error) => {
                self.denials.push(denial);
                let text = format!("Tool permission request failed: Error: {error}");
                self.tool_result(
                    &tool_id,
                    &text,
                    Some(true),
                    json!(format!("Error: {text}")),
                    reject_meta,
                );
            }
            Decision::Cancelled => {
                let text = "Tool permission request was cancelled";
                self.tool_result(
                    &tool_id,
                    text,
                    Some(true),
                    json!(format!("Error: {text}")),
                    reject_meta,
                );
            }
            Decision::DenyInterrupt | Decision::Interrupted => {
                if matches!(decision, Decision::Interrupted) {
                    self.host_interrupted = true;
                }
                self.denials.push(denial);
                self.tool_result(
                    &tool_id,
                    REJECT_TEXT,
                    Some(true),
                    json!(format!("Error: {REJECT_TEXT}")),
                    reject_meta,
                );
                self.interrupt_marker();
                return Err(Stop::Aborted("aborted_tools"));
            }
        }
        if self.interrupted() {
            return Err(self.interrupted_between_steps());
        }
        self.text_message(split3(done), None).await
    }

    fn matching_hooks(&self, tool_name: &str) -> Vec<String> {
        let hooks = self.f.lock().hooks.clone();
        let Some(matchers) = hooks.get("PreToolUse").and_then(Value::as_array) else {
            return Vec::new();
        };
        matchers
            .iter()
            .filter(|m| match m.get("matcher").and_then(Value::as_str) {
                None | Some("") | Some("*") => true,
                Some(pattern) => pattern.split('|').any(|p| p.trim() == tool_name),
            })
            .flat_map(|m| {
                m.get("hookCallbackIds")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|id| id.as_str().map(str::to_owned))
            .collect()
    }

    async fn decide(
        &mut self,
        tool: Tool,
        name: &str,
        input: &Value,
        tool_id: &str,
        cancel_after: Option<Duration>,
    ) -> Decision {
        for callback_id in self.matching_hooks(name) {
            let request = json!({"subtype": "hook_callback", "callback_id": callback_id,
                "input": {"session_id": self.sid(), "transcript_path": self.f.cfg.transcript_path(),
                          "cwd": self.f.cfg.cwd, "permission_mode": self.mode,
                          "hook_event_name": "PreToolUse", "tool_name": name,
                          "tool_input": input, "tool_use_id": tool_id},
                "tool_use_id": tool_id});
            match self.ask(request).await {
                Answer::Success(output) => {
                    let specific = output.get("hookSpecificOutput");
                    let decision = specific
                        .and_then(|s| s.get("permissionDecision"))
                        .and_then(Value::as_str);
                    match decision {
                        Some("deny") => {
                            let reason = specific
                                .and_then(|s| s.get("permissionDecisionReason"))
                                .and_then(Value::as_str)
                                .unwrap_or("Blocked by PreToolUse hook");
                            return Decision::Deny {
                                message: reason.to_owned(),
                                source: "hook",
                            };
                        }
                        Some("allow") => {
                            let used = specific
                                .and_then(|s| s.get("updatedInput"))
                                .filter(|v| v.is_object())
                                .cloned()
                                .unwrap_or_else(|| input.clone());
                            return Decision::Allow {
                                input: used,
                                source: "hook",
                            };
                        }
                        _ => {}
                    }
                }
                Answer::Interrupted => return Decision::Interrupted,
                Answer::Error(_) | Answer::Closed => {}
            }
        }

        self.send(&self.f.state_frame("requires_action"));
        let mut request = json!({"subtype": "can_use_tool", "tool_name": name, "display_name": name,
            "input": input});
        match tool {
            Tool::Bash => {
                let cmd = input.get("command").cloned().unwrap_or(Value::Null);
                merge(
                    &mut request,
                    json!({"description": input.get("description").cloned().unwrap_or(Value::Null),
                    "permission_suggestions": [{"type": "addRules",
                        "rules": [{"toolName": "Bash", "ruleContent": cmd}],
                        "behavior": "allow", "destination": "localSettings"}]}),
                );
            }
            Tool::Read => {
                let path = input
                    .get("file_path")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let dir = self
                    .f
                    .cfg
                    .resolve(path)
                    .parent()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                merge(
                    &mut request,
                    json!({"description": path,
                    "permission_suggestions": [{"type": "addDirectories", "directories": [dir],
                        "destination": "session"}]}),
                );
            }
            Tool::Ask => merge(&mut request, json!({"requires_user_interaction": true})),
        }
        merge(&mut request, json!({"tool_use_id": tool_id}));
        let (request_id, rx) = match self.f.request(request) {
            Ok(pair) => pair,
            Err(answer) => {
                if !matches!(answer, Answer::Interrupted) {
                    self.send(&self.f.state_frame("running"));
                }
                return self.decision_from(answer, input);
            }
        };
        let answer = match cancel_after {
            Some(delay) => {
                if self.sleep(delay).await {
                    Answer::Interrupted
                } else {
                    // Withdraw it, answered or not: a late answer is ignored.
                    if !self.f.cancel_request(&request_id) {
                        self.send(
                            &json!({"type": "control_cancel_request", "request_id": request_id}),
                        );
                    }
                    drop(rx);
                    self.send(&self.f.state_frame("running"));
                    return Decision::Cancelled;
                }
            }
            None => self.wait(rx).await,
        };
        if !matches!(answer, Answer::Interrupted) {
            self.send(&self.f.state_frame("running"));
        }
        self.decision_from(answer, input)
    }

    fn decision_from(&self, answer: Answer, input: &Value) -> Decision {
        match answer {
            Answer::Success(resp) => match resp.get("behavior").and_then(Value::as_str) {
                Some("allow") => Decision::Allow {
                    input: resp
                        .get("updatedInput")
                        .filter(|v| v.is_object())
                        .cloned()
                        .unwrap_or_else(|| input.clone()),
                    source: "user_temporary",
                },
                Some("deny") if resp.get("interrupt").and_then(Value::as_bool) == Some(true) => {
                    Decision::DenyInterrupt
                }
                Some("deny") => Decision::Deny {
                    message: resp
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("Permission denied")
                        .to_owned(),
                    source: "user_reject",
                },
                _ => Decision::Failed(format!("Invalid permission response: {resp}")),
            },
            Answer::Error(e) => Decision::Failed(e),
            Answer::Closed => Decision::Failed("Stream closed".into()),
            Answer::Interrupted => Decision::Interrupted,
        }
    }

    /// Runs an allowed tool: (tool_result content, is_error key, tool_use_result).
    fn execute(&self, tool: Tool, input: &Value) -> (String, Option<bool>, Value) {
        match tool {
            Tool::Bash => {
                let cmd = input
                    .get("command")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let out = format!("ran: {cmd}");
                let result = json!({"stdout": out, "stderr": "", "interrupted": false,
                                    "isImage": false, "noOutputExpected": false});
                (out, Some(false), result)
            }
            Tool::Read => {
                let path = input
                    .get("file_path")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let full = self.f.cfg.resolve(path);
                match std::fs::read_to_string(&full) {
                    Ok(content) => {
                        let lines = content.split('\n').count();
                        let result = json!({"type": "text", "file": {
                            "filePath": full.to_string_lossy(), "content": content,
                            "numLines": lines, "startLine": 1, "totalLines": lines}});
                        (content, None, result)
                    }
                    Err(e) => {
                        let text = format!(
                            "<tool_use_error>Cannot read {}: {e}</tool_use_error>",
                            full.display()
                        );
                        let result = json!(format!("Error: {text}"));
                        (text, Some(true), result)
                    }
                }
            }
            Tool::Ask => {
                let questions = input.get("questions").cloned().unwrap_or(json!([]));
                let answers = input
                    .get("answers")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                let pairs: Vec<String> = answers
                    .iter()
                    .map(|(q, a)| {
                        let a = match a {
                            Value::String(s) => s.clone(),
                            Value::Array(items) => items
                                .iter()
                                .map(|i| i.as_str().map(str::to_owned).unwrap_or(i.to_string()))
                                .collect::<Vec<_>>()
                                .join(","),
                            other => other.to_string(),
                        };
                        format!("\"{q}\"=\"{a}\"")
                    })
                    .collect();
                let text = if pairs.is_empty() {
                    "The user did not answer the questions.".to_owned()
                } else {
                    format!(
                        "Your questions have been answered: {}. You can now continue with these answers in mind.",
                        pairs.join(", ")
                    )
                };
                let result = json!({"questions": questions, "answers": answers});
                (text, None, result)
            }
        }
    }

    fn tool_result(
        &mut self,
        tool_id: &str,
        content: &str,
        is_error: Option<bool>,
        tool_use_result: Value,
        decision: Value,
    ) {
        let mut block = json!({"tool_use_id": tool_id, "type": "tool_result", "content": content});
        if let Some(is_error) = is_error {
            merge(&mut block, json!({"is_error": is_error}));
        }
        let frame = self.user_frame(
            json!([block]),
            json!({"tool_use_result": tool_use_result,
                   "tool_result_meta": [{"id": tool_id, "permission_decision": decision}]}),
        );
        self.send(&frame);
        let entry = self.f.transcript_entry(
            "user",
            json!({"role": "user", "content": [block]}),
            json!({"toolUseResult": tool_use_result}),
        );
        self.f.mirror(vec![entry]);
    }

    // ----------------------------------------------------------------- result

    fn finish(&mut self, outcome: Result<(), Stop>, origin: Option<Value>) {
        let (total_cost, queued, result_index, in_tok, out_tok) = {
            let mut st = self.f.lock();
            let index = st.result_index;
            st.result_index += 1;
            (
                st.total_cost,
                st.queued(),
                index,
                st.input_tokens,
                st.output_tokens,
            )
        };
        let usage = json!({"input_tokens": self.input_tokens, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0, "output_tokens": self.output_tokens,
            "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
            "service_tier": "standard"});
        let model_usage = json!({self.model.clone(): {"inputTokens": in_tok, "outputTokens": out_tok,
            "cacheReadInputTokens": 0, "cacheCreationInputTokens": 0, "webSearchRequests": 0,
            "costUSD": total_cost, "contextWindow": 200000, "maxOutputTokens": 32000}});
        let mut frame = json!({"type": "result",
            "duration_ms": self.started.elapsed().as_millis() as u64,
            "duration_api_ms": self.api_ms, "num_turns": self.api_calls,
            "session_id": self.sid(), "total_cost_usd": total_cost, "usage": usage,
            "modelUsage": model_usage, "permission_denials": self.denials,
            "fast_mode_state": "off", "uuid": new_uuid(),
            "queued_turn_count": queued, "result_index": result_index});
        let is_error = match outcome {
            Ok(()) => {
                merge(
                    &mut frame,
                    json!({"subtype": "success", "is_error": false, "result": self.last_text,
                           "stop_reason": "end_turn", "terminal_reason": "completed",
                           "api_error_status": null}),
                );
                false
            }
            Err(Stop::Aborted(reason)) => {
                merge(
                    &mut frame,
                    json!({"subtype": "error_during_execution", "is_error": true,
                           "stop_reason": null, "terminal_reason": reason,
                           "errors": [format!("[ede_diagnostic] result_type=user last_content_type=n/a stop_reason=null ({reason})")]}),
                );
                true
            }
            Err(Stop::ApiError) => {
                merge(
                    &mut frame,
                    json!({"subtype": "success", "is_error": true, "result": self.last_text,
                           "stop_reason": "stop_sequence", "terminal_reason": "api_error",
                           "api_error_status": 400, "api_error_type": "invalid_request_error"}),
                );
                true
            }
        };
        merge(&mut frame, self.uuid_marks());
        if let Some(origin) = origin {
            merge(&mut frame, json!({"origin": origin}));
        }
        self.send(&frame);
        let (last_prompt, leaf) = {
            let mut st = self.f.lock();
            st.last_is_error = is_error;
            (st.last_prompt.clone(), st.last_uuid.clone())
        };
        self.f.mirror(vec![
            json!({"type": "last-prompt", "lastPrompt": last_prompt,
            "leafUuid": leaf, "sessionId": self.sid()}),
        ]);
    }
}

/// Splits `text` into 3 pieces on char boundaries (fewer when it is shorter than 3 chars).
fn split3(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() < 3 {
        return vec![text.to_owned()];
    }
    let n = chars.len();
    let a = n / 3;
    let b = 2 * n / 3;
    vec![
        chars[..a].iter().collect(),
        chars[a..b].iter().collect(),
        chars[b..].iter().collect(),
    ]
}
