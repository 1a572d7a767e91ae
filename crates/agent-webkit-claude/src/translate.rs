//! CLI stdout frames → the core's [`AgentMessage`]s (docs/claude-cli-protocol.md §2).
//!
//! - `stream_event` text deltas → `Delta` (token streaming); thinking and tool-input
//!   (`input_json_delta`) deltas only when enabled (the published React reducer appends each of
//!   them as a block of its own until `message_complete`).
//! - `assistant` frames arrive one per content block with a shared `message.id`; clients
//!   *replace* a message's content on `message_complete`, so an `Assistant` must carry every
//!   block of its id. Consecutive frames of one id are therefore coalesced and emitted once,
//!   when the message ends: at its `message_stop`, at the first frame that is neither one of
//!   its frames nor one of its stream events, or when the reader calls [`Translator::flush`]
//!   (a control request arrives — a `tool_use` precedes its permission prompt —, or EOF).
//!   Emitting one `Assistant` per frame would make the output quadratic in the message's size.
//! - `user` frames → `User` (the session emits one `tool_result` per tool_result block).
//! - `result` → `Result` with every field the CLI gave, in its order.
//! - `system/init` → `McpStatus` for each MCP server whose status is new or changed.
//! - `system/api_retry` → `ApiRetry`, plus `Error{authentication_failed}` at the first retry
//!   caused by authentication, with a request to interrupt the turn (retrying cannot fix it);
//!   a failed turn's `result` is preceded by an `Error` with a stable code ([`crate::failure`]).

use std::collections::HashMap;

use agent_webkit_core::agent::{AgentMessage, AssistantMessage, SessionConfig, TurnResult};
use agent_webkit_core::models::ApiRetryData;
use serde_json::{json, Map, Value};

use crate::failure::{self, AUTHENTICATION_FAILED};
use crate::options::ClaudeOptions;

/// Frame translation state for one CLI process.
#[derive(Debug, Default)]
pub struct Translator {
    /// Forward thinking deltas.
    pub thinking_deltas: bool,
    /// Forward tool-input (`input_json_delta`) deltas.
    pub tool_input_deltas: bool,
    /// This turn's authentication failure was already reported (at a retry).
    auth_reported: bool,
    /// The turn should be interrupted (see [`Translator::take_interrupt`]).
    interrupt: bool,
    /// The latest rate-limit reset time the CLI reported (`rate_limit_event`).
    rate_limit_resets_at: Option<Value>,
    /// Blocks seen so far per assistant message id (cleared at each `result`).
    blocks: HashMap<String, Vec<Value>>,
    /// The assistant message whose frames are being coalesced, not yet emitted.
    pending: Option<Pending>,
    /// The message id of the stream currently open.
    stream_message: Option<String>,
    /// (message id, block index) → (tool_use_id, tool name) for input deltas.
    tool_blocks: HashMap<(String, u64), (String, String)>,
    /// Last reported status per MCP server (shared with the runtime reports, `crate::mcp`).
    mcp: crate::mcp::McpStatuses,
}

/// What is kept of the coalesced message besides its blocks: the latest frame's fields.
#[derive(Debug)]
struct Pending {
    id: String,
    model: Option<String>,
    stop_reason: Option<String>,
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

impl Translator {
    /// A translator; `thinking_deltas` forwards thinking chunks.
    pub fn new(thinking_deltas: bool) -> Self {
        Self {
            thinking_deltas,
            ..Self::default()
        }
    }

    /// Shares the record of reported MCP statuses with the runtime reports.
    pub(crate) fn share_mcp_statuses(&mut self, statuses: crate::mcp::McpStatuses) {
        self.mcp = statuses;
    }

    /// A translator configured from the bridge's options and the session's create options
    /// (`tool_input_deltas` overrides the server default).
    pub fn for_session(options: &ClaudeOptions, session: &SessionConfig) -> Self {
        Self {
            thinking_deltas: options.thinking_deltas,
            tool_input_deltas: session
                .tool_input_deltas
                .unwrap_or(options.tool_input_deltas),
            ..Self::default()
        }
    }

    /// Whether the last frames asked for the running turn to be interrupted (an
    /// authentication failure the CLI would otherwise retry for minutes); resets the request.
    pub fn take_interrupt(&mut self) -> bool {
        std::mem::take(&mut self.interrupt)
    }

    /// Translates one frame (already routed: not a control or mirror frame). `result` frames
    /// come back with `ends_turn: false`; the caller decides.
    pub fn translate(&mut self, frame: &Value, fallback_session_id: &str) -> Vec<AgentMessage> {
        let mut out = Vec::new();
        match str_field(frame, "type") {
            Some("stream_event") => {
                let (message, stop) = self.stream_event_message(frame);
                let within_pending =
                    message.is_some() && message == self.pending.as_ref().map(|p| p.id.clone());
                if !within_pending {
                    out.extend(self.flush());
                }
                out.extend(self.stream_event(frame));
                if stop {
                    out.extend(self.flush());
                }
            }
            Some("assistant") => out.extend(self.assistant(frame)),
            other => {
                out.extend(self.flush());
                match other {
                    Some("user") => out.extend(user(frame)),
                    Some("result") => {
                        self.blocks.clear();
                        self.tool_blocks.clear();
                        self.stream_message = None;
                        let resets_at = self.rate_limit_resets_at.as_ref();
                        if let Some((code, message)) = failure::of_result(frame, resets_at) {
                            if !(code == AUTHENTICATION_FAILED && self.auth_reported) {
                                out.push(AgentMessage::Error {
                                    code: code.into(),
                                    message,
                                });
                            }
                        }
                        self.auth_reported = false;
                        out.push(AgentMessage::Result(result(frame, fallback_session_id)));
                    }
                    Some("system") if str_field(frame, "subtype") == Some("init") => {
                        out.extend(self.init(frame));
                    }
                    Some("system") if str_field(frame, "subtype") == Some("api_retry") => {
                        out.extend(self.api_retry(frame));
                    }
                    Some("rate_limit_event") => {
                        self.rate_limit_resets_at = frame
                            .get("rate_limit_info")
                            .and_then(|info| info.get("resetsAt"))
                            .filter(|v| !v.is_null())
                            .cloned();
                    }
                    _ => {}
                }
            }
        }
        out
    }

    /// Emits the coalesced assistant message, if any: every block of its id so far.
    pub fn flush(&mut self) -> Option<AgentMessage> {
        let pending = self.pending.take()?;
        let content = self.blocks.get(&pending.id).cloned().unwrap_or_default();
        Some(AgentMessage::Assistant(AssistantMessage {
            id: pending.id,
            content,
            model: pending.model,
            stop_reason: pending.stop_reason,
        }))
    }

    /// The message a stream event belongs to, and whether it ends it (`message_stop`).
    fn stream_event_message(&self, frame: &Value) -> (Option<String>, bool) {
        let Some(event) = frame.get("event") else {
            return (None, false);
        };
        let kind = str_field(event, "type");
        let id = match kind {
            Some("message_start") => event
                .get("message")
                .and_then(|m| str_field(m, "id"))
                .or_else(|| str_field(frame, "api_message_id"))
                .map(str::to_owned),
            _ => str_field(frame, "api_message_id")
                .map(str::to_owned)
                .or_else(|| self.stream_message.clone()),
        };
        (id, kind == Some("message_stop"))
    }

    fn stream_event(&mut self, frame: &Value) -> Option<AgentMessage> {
        let event = frame.get("event")?;
        let frame_message = str_field(frame, "api_message_id").map(str::to_owned);
        match str_field(event, "type")? {
            "message_start" => {
                let id = event
                    .get("message")
                    .and_then(|m| str_field(m, "id"))
                    .map(str::to_owned)
                    .or(frame_message);
                self.stream_message = id;
                None
            }
            "content_block_start" => {
                let block = event.get("content_block")?;
                if str_field(block, "type") == Some("tool_use") {
                    let message = frame_message.or_else(|| self.stream_message.clone())?;
                    let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
                    self.tool_blocks.insert(
                        (message, index),
                        (
                            str_field(block, "id").unwrap_or_default().to_owned(),
                            str_field(block, "name").unwrap_or_default().to_owned(),
                        ),
                    );
                }
                None
            }
            "content_block_delta" => {
                let message_id = frame_message.or_else(|| self.stream_message.clone())?;
                let delta = event.get("delta")?;
                let out = match str_field(delta, "type")? {
                    "text_delta" => json!({"type": "text", "text": str_field(delta, "text")?}),
                    "input_json_delta" if self.tool_input_deltas => {
                        let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let (id, name) = self
                            .tool_blocks
                            .get(&(message_id.clone(), index))
                            .cloned()
                            .unwrap_or_default();
                        json!({
                            "type": "input_json_delta",
                            "tool_use_id": id,
                            "name": name,
                            "partial_json": str_field(delta, "partial_json")?,
                        })
                    }
                    "thinking_delta" if self.thinking_deltas => {
                        json!({"type": "thinking", "thinking": str_field(delta, "thinking")?})
                    }
                    _ => return None,
                };
                Some(AgentMessage::Delta {
                    message_id,
                    delta: out,
                })
            }
            _ => None,
        }
    }

    /// Adds one frame's blocks to its message; emits the previous message if this one differs.
    fn assistant(&mut self, frame: &Value) -> Option<AgentMessage> {
        let message = frame.get("message")?;
        let id = str_field(message, "id")?.to_owned();
        let previous = match &self.pending {
            Some(p) if p.id != id => self.flush(),
            _ => None,
        };
        let new_blocks = message
            .get("content")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let blocks = self.blocks.entry(id.clone()).or_default();
        for block in new_blocks {
            // A tool_use block re-sent under the same id replaces the earlier copy.
            let same_tool = |b: &Value| {
                str_field(b, "type") == Some("tool_use")
                    && str_field(b, "id").is_some()
                    && str_field(b, "id") == str_field(&block, "id")
            };
            if let Some(existing) = blocks.iter_mut().find(|b| same_tool(b)) {
                *existing = block;
            } else {
                blocks.push(block);
            }
        }
        // Keep memory bounded if a CLI never ends its turn.
        if self.blocks.len() > 64 {
            let keep = id.clone();
            self.blocks.retain(|k, _| *k == keep);
        }
        self.pending = Some(Pending {
            id,
            model: str_field(message, "model").map(str::to_owned),
            stop_reason: str_field(message, "stop_reason").map(str::to_owned),
        });
        previous
    }

    fn api_retry(&mut self, frame: &Value) -> Vec<AgentMessage> {
        let number = |key: &str| frame.get(key).and_then(Value::as_u64);
        let retry = ApiRetryData {
            attempt: number("attempt").unwrap_or(0),
            max_retries: number("max_retries").unwrap_or(0),
            retry_delay_ms: number("retry_delay_ms").unwrap_or(0),
            error_status: number("error_status"),
            error: str_field(frame, "error").map(str::to_owned),
        };
        let unfixable = failure::retry_is_unfixable(&retry) && !self.auth_reported;
        let mut out = vec![AgentMessage::ApiRetry(retry)];
        if unfixable {
            self.auth_reported = true;
            self.interrupt = true;
            out.push(AgentMessage::Error {
                code: AUTHENTICATION_FAILED.into(),
                message: failure::AUTHENTICATION_MESSAGE.into(),
            });
        }
        out
    }

    fn init(&mut self, frame: &Value) -> Vec<AgentMessage> {
        let Some(servers) = frame.get("mcp_servers").and_then(Value::as_array) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for server in servers {
            let (Some(name), Some(status)) =
                (str_field(server, "name"), str_field(server, "status"))
            else {
                continue;
            };
            let mut known = self.mcp.lock();
            if known.get(name).map(String::as_str) != Some(status) {
                known.insert(name.to_owned(), status.to_owned());
                out.push(AgentMessage::McpStatus {
                    server_name: name.to_owned(),
                    status: status.to_owned(),
                });
            }
        }
        out
    }
}

fn user(frame: &Value) -> Option<AgentMessage> {
    let content = frame.get("message")?.get("content")?.as_array()?;
    let tool_results: Vec<Value> = content
        .iter()
        .filter(|b| str_field(b, "type") == Some("tool_result"))
        .cloned()
        .collect();
    if tool_results.is_empty() {
        return None;
    }
    Some(AgentMessage::User {
        content: tool_results,
    })
}

fn result(frame: &Value, fallback_session_id: &str) -> TurnResult {
    let session_id = str_field(frame, "session_id").unwrap_or(fallback_session_id);
    let subtype = str_field(frame, "subtype").unwrap_or("success");
    let mut result = TurnResult::new(session_id, subtype);
    result.ends_turn = false;
    if let Value::Object(map) = frame {
        result.extra = map
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "type" | "subtype" | "session_id"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Map<String, Value>>();
    }
    result
}

/// The user-message uuids a `result` frame reports (`user_message_uuids`, else
/// `user_message_uuid`).
pub fn result_user_uuids(frame: &Value) -> Vec<String> {
    if let Some(list) = frame.get("user_message_uuids").and_then(Value::as_array) {
        return list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
    }
    str_field(frame, "user_message_uuid")
        .map(|u| vec![u.to_owned()])
        .unwrap_or_default()
}

/// Whether a `result` frame belongs to a turn the CLI started on its own (task notifications,
/// wakeups), per its `origin.kind`.
pub fn is_self_started(frame: &Value) -> bool {
    frame
        .get("origin")
        .and_then(|o| str_field(o, "kind"))
        .is_some_and(|kind| kind != "human")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn assistant_frame(id: &str, block: Value) -> Value {
        json!({"type":"assistant","message":{"id":id,"model":"m","content":[block],"stop_reason":null}})
    }

    fn only_assistant(out: Vec<AgentMessage>) -> AssistantMessage {
        match <[AgentMessage; 1]>::try_from(out) {
            Ok([AgentMessage::Assistant(a)]) => a,
            Ok(other) => panic!("{other:?}"),
            Err(out) => panic!("{out:?}"),
        }
    }

    #[test]
    fn frames_of_one_message_are_coalesced_until_it_ends() {
        let mut t = Translator::new(false);
        let text = assistant_frame("m1", json!({"type":"text","text":"hi"}));
        let tool = assistant_frame(
            "m1",
            json!({"type":"tool_use","id":"tu","name":"Bash","input":{}}),
        );
        assert!(t.translate(&text, "s").is_empty());
        // Its own stream events do not end it...
        let delta = json!({"type":"stream_event","api_message_id":"m1","event":
            {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"x"}}});
        assert_eq!(t.translate(&delta, "s").len(), 1);
        assert!(t.translate(&tool, "s").is_empty());
        // ...a new message does, and carries every block of the old one.
        let a = only_assistant(t.translate(
            &assistant_frame("m2", json!({"type":"text","text":"x"})),
            "s",
        ));
        assert_eq!(a.id, "m1");
        assert_eq!(a.content.len(), 2);
        assert_eq!(a.content[1]["type"], "tool_use");
        // message_stop, any other frame, or an explicit flush (control request, EOF) end one.
        let stop =
            json!({"type":"stream_event","api_message_id":"m2","event":{"type":"message_stop"}});
        assert_eq!(only_assistant(t.translate(&stop, "s")).id, "m2");
        assert!(t.flush().is_none());
        t.translate(
            &assistant_frame("m3", json!({"type":"text","text":"y"})),
            "s",
        );
        assert_eq!(only_assistant(t.flush().into_iter().collect()).id, "m3");
        t.translate(
            &assistant_frame("m4", json!({"type":"text","text":"z"})),
            "s",
        );
        let out = t.translate(&json!({"type":"result","subtype":"success"}), "s");
        assert!(
            matches!(&out[..], [AgentMessage::Assistant(a), AgentMessage::Result(_)] if a.id == "m4")
        );
    }

    #[test]
    fn a_message_of_many_frames_is_emitted_once() {
        let mut t = Translator::new(false);
        for n in 0..1500 {
            let frame = assistant_frame("m1", json!({"type":"text","text":format!("block {n}")}));
            assert!(
                t.translate(&frame, "s").is_empty(),
                "frame {n} emitted early"
            );
        }
        let last = only_assistant(t.flush().into_iter().collect());
        assert_eq!(last.content.len(), 1500);
    }

    #[test]
    fn deltas_carry_message_and_tool_ids() {
        let mut t = Translator::new(false);
        let ev = |e: Value| json!({"type":"stream_event","event":e,"api_message_id":"m1"});
        assert!(t
            .translate(
                &ev(json!({"type":"message_start","message":{"id":"m1"}})),
                "s"
            )
            .is_empty());
        let d = t.translate(
            &ev(json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"He"}})),
            "s",
        );
        assert_eq!(
            d,
            vec![AgentMessage::Delta {
                message_id: "m1".into(),
                delta: json!({"type":"text","text":"He"})
            }]
        );
        t.translate(
            &ev(json!({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"tu1","name":"Bash","input":{}}})),
            "s",
        );
        let input_delta = ev(
            json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"co"}}),
        );
        // Off by default: the published React reducer would render each one as a block.
        assert!(t.translate(&input_delta, "s").is_empty());
        t.tool_input_deltas = true;
        let d = t.translate(&input_delta, "s");
        assert_eq!(
            d,
            vec![AgentMessage::Delta {
                message_id: "m1".into(),
                delta: json!({"type":"input_json_delta","tool_use_id":"tu1","name":"Bash","partial_json":"{\"co"})
            }]
        );
        let thinking = ev(
            json!({"type":"content_block_delta","index":2,"delta":{"type":"thinking_delta","thinking":"hmm"}}),
        );
        assert!(t.translate(&thinking, "s").is_empty());
        let mut t2 = Translator::new(true);
        assert_eq!(t2.translate(&thinking, "s").len(), 1);
    }

    #[test]
    fn result_keeps_every_field_in_order() {
        let mut t = Translator::new(false);
        let frame = json!({"duration_api_ms":1,"type":"result","subtype":"success","is_error":false,"session_id":"abc","total_cost_usd":0.5,"usage":{"x":1}});
        let out = t.translate(&frame, "fallback");
        let AgentMessage::Result(r) = &out[0] else {
            panic!()
        };
        assert_eq!(r.session_id, "abc");
        assert_eq!(r.subtype, "success");
        assert_eq!(
            r.extra.keys().collect::<Vec<_>>(),
            ["duration_api_ms", "is_error", "total_cost_usd", "usage"]
        );
        assert!(!r.ends_turn);
        assert!(!is_self_started(&frame));
        assert!(is_self_started(
            &json!({"type":"result","origin":{"kind":"task-notification"}})
        ));
    }

    #[test]
    fn mcp_status_only_on_change() {
        let mut t = Translator::new(false);
        let init = |status: &str| json!({"type":"system","subtype":"init","mcp_servers":[{"name":"fs","status":status}]});
        assert_eq!(t.translate(&init("connected"), "s").len(), 1);
        assert!(t.translate(&init("connected"), "s").is_empty());
        assert_eq!(
            t.translate(&init("failed"), "s"),
            vec![AgentMessage::McpStatus {
                server_name: "fs".into(),
                status: "failed".into()
            }]
        );
    }

    #[test]
    fn user_frames_forward_tool_results_only() {
        let mut t = Translator::new(false);
        let interrupted = json!({"type":"user","message":{"role":"user","content":[{"type":"text","text":"[Request interrupted by user]"}]}});
        assert!(t.translate(&interrupted, "s").is_empty());
        let tr = json!({"type":"user","message":{"role":"user","content":[{"tool_use_id":"t","type":"tool_result","content":"ok"}]}});
        assert_eq!(t.translate(&tr, "s").len(), 1);
    }

    fn retry(status: u64, error: &str, attempt: u64) -> Value {
        json!({"type":"system","subtype":"api_retry","attempt":attempt,"max_retries":10,
               "retry_delay_ms":581,"error_status":status,"error":error,"session_id":"s","uuid":"u"})
    }

    #[test]
    fn retries_are_forwarded_and_authentication_failures_reported_once() {
        let mut t = Translator::new(false);
        let out = t.translate(&retry(529, "overloaded", 1), "s");
        assert_eq!(
            out,
            vec![AgentMessage::ApiRetry(ApiRetryData {
                attempt: 1,
                max_retries: 10,
                retry_delay_ms: 581,
                error_status: Some(529),
                error: Some("overloaded".into()),
            })]
        );
        assert!(!t.take_interrupt());
        let out = t.translate(&retry(401, "authentication_failed", 1), "s");
        assert!(
            matches!(&out[..], [AgentMessage::ApiRetry(_), AgentMessage::Error { code, .. }] if code == "authentication_failed"),
            "{out:?}"
        );
        assert!(t.take_interrupt());
        assert!(!t.take_interrupt());
        // Later retries of the same turn, and its result, do not repeat the error.
        assert_eq!(
            t.translate(&retry(401, "authentication_failed", 2), "s")
                .len(),
            1
        );
        assert!(!t.take_interrupt());
        let result = json!({"type":"result","subtype":"success","is_error":true,
            "api_error_status":401,"api_error_type":"authentication_error","result":"Failed"});
        assert!(matches!(
            &t.translate(&result, "s")[..],
            [AgentMessage::Result(_)]
        ));
        // The next turn reports again.
        let out = t.translate(&result, "s");
        assert!(
            matches!(&out[..], [AgentMessage::Error { code, .. }, AgentMessage::Result(_)] if code == "authentication_failed"),
            "{out:?}"
        );
    }

    #[test]
    fn rate_limit_reset_comes_from_the_rate_limit_event() {
        let mut t = Translator::new(false);
        let event = json!({"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1900000000}});
        assert!(t.translate(&event, "s").is_empty());
        let result = json!({"type":"result","subtype":"success","is_error":true,
            "api_error_status":429,"api_error_type":"rate_limit_error","result":"API Error: Request rejected (429)"});
        let out = t.translate(&result, "s");
        let [AgentMessage::Error { code, message }, AgentMessage::Result(r)] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(code, "rate_limited");
        assert!(message.contains("1900000000"), "{message}");
        assert_eq!(r.extra["api_error_status"], 429);
    }
}
