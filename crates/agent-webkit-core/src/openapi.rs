//! The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json` (feature `openapi`).
//!
//! Generated, not written: every body and event payload schema is derived from the wire types
//! in [`crate::models`] (`utoipa::ToSchema`, their doc comments as descriptions), and the
//! paths come from `endpoints()`, one entry per endpoint. The SSE stream is described as
//! `text/event-stream` whose schema `ServerSentEvent` is a `oneOf` of one frame per
//! [`EventKind`] (`event` name, `id` seq, `data` payload schema), mapped by an exhaustive
//! `match`, so a new event kind does not compile until it has a schema.
//!
//! To document a new endpoint, add one entry to `endpoints()`:
//! `Op::get("/sessions/{id}", "getSession", "One session").auth().json::<SessionDetail>(200, "The session").errors(&[401, 404])`
//! (derive `ToSchema` on its body types, behind `cfg_attr(feature = "openapi", ...)`), or
//! `.text(200, &["text/plain"], "…")` for a body that is not JSON (metrics, an HTML page).

use std::sync::OnceLock;

use bytes::Bytes;
use serde_json::{json, Map, Value};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

use crate::attachments::{Attachment, AttachmentList};
use crate::listing::{SessionDetail, SessionPage, DEFAULT_LIMIT, MAX_LIMIT};
use crate::models::{
    ApiRetryData, AskUserQuestionData, CreateSessionRequest, CreateSessionResponse, DoneData,
    ErrorBody, ErrorData, EventKind, HealthResponse, HookDecisionRequestData, InboundMessage,
    McpStatusChangeData, MessageCompleteData, MessageDeltaData, PermissionRequestData, ResultData,
    SessionReadyData, ToolResultData, ToolUseData,
};
use crate::readiness::{NotReadyBody, ReadyBody};
use crate::site::{ConsoleConfig, CONTENT_SECURITY_POLICY};
use crate::PROTOCOL_VERSION;

type Schemas = Vec<(String, RefOr<Schema>)>;
/// Adds a type's schema (and the schemas it refers to) to the components.
type Register = fn(&mut Schemas);

fn register<T: ToSchema>(schemas: &mut Schemas) {
    schemas.push((T::name().into_owned(), T::schema()));
    T::schemas(schemas);
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// Every endpoint of the API, one entry each (see the module docs).
fn endpoints() -> Vec<Op> {
    vec![
        Op::post("/sessions", "createSession", "Create a session (its agent is started before the answer)")
            .auth()
            .body::<CreateSessionRequest>(false)
            .json::<CreateSessionResponse>(200, "The new session; subscribe to its stream next")
            .errors(&[400, 401, 403, 408, 409, 413, 429, 502, 503]),
        Op::get("/sessions", "listSessions", "The sessions the caller may see, newest activity first (keyset pages)")
            .auth()
            .query("limit", json!({"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}), "Page size")
            .query("cursor", json!({"type": "string"}), "A previous page's `next_cursor` (opaque)")
            .query("state", json!({"type": "string"}), "Only sessions in these states (comma-separated or repeated): `idle`, `running`, `waiting`, `hibernated`, `remote`, `ended`")
            .json::<SessionPage>(200, "One page; continue while `next_cursor` is not null")
            .errors(&[400, 401, 503]),
        Op::get("/sessions/{id}", "getSession", "One session with its pending prompts (another principal's is answered like an unknown one)")
            .auth()
            .json::<SessionDetail>(200, "The session")
            .errors(&[401, 404, 503]),
        Op::get("/sessions/{id}/stream", "streamSession", "Subscribe to a session's events (Server-Sent Events), from the start of the ring or after `Last-Event-ID`")
            .auth()
            .last_event_id()
            .sse(200)
            .errors(&[400, 401, 403, 404, 412, 429, 502, 503]),
        Op::post("/sessions/{id}/input", "sendInput", "Send one inbound message (a user turn, a control, or the answer to a prompt)")
            .auth()
            .body::<InboundMessage>(true)
            .empty(204, "Accepted (queued, applied or answered)")
            .any_json(200, "`mcp_set_servers` on a live agent: its account `{added, removed, errors}`; `rewind` (ours): what was (dry run: would be) restored, a `RewoundData`")
            .errors(&[400, 401, 403, 404, 408, 409, 413, 501, 502, 503, 504]),
        Op::get("/sessions/{id}/context", "getContextUsage", "The context-window usage the agent estimates now (a hibernated session is woken for it)")
            .auth()
            .json::<crate::context_usage::ContextResponse>(200, "The agent's estimate")
            .errors(&[401, 403, 404, 409, 501, 502, 503, 504]),
        Op::get("/sessions/{id}/mcp", "getSessionMcp", "The session's MCP servers and their status (never a config: env, headers, URLs stay on the server)")
            .auth()
            .json::<crate::mcp::status::McpStatusResponse>(200, "The servers")
            .errors(&[401, 404, 409, 501, 502, 503, 504]),
        Op::delete("/sessions/{id}", "deleteSession", "End a session everywhere (its streams end with `done`); unknown ids, and another principal's sessions (left alone), too")
            .auth()
            .empty(204, "Deleted")
            .errors(&[401, 503]),
        Op::post("/sessions/{id}/attachments", "uploadAttachment", "Upload a file the session's agent can read (the raw body is the file; read with the attachment limit, not the general body limit)")
            .auth()
            .parameter(json!({"name": "name", "in": "query", "required": true, "description": "The file name: a base name (no `/` or `\\`, no leading `.`, no control characters, at most 200 bytes), percent-encoded; a name the session already holds gets a `-N` suffix", "schema": {"type": "string"}}))
            .raw_body()
            .json::<Attachment>(201, "Stored")
            .errors(&[400, 401, 404, 408, 409, 413, 501, 503]),
        Op::get("/sessions/{id}/attachments", "listAttachments", "The session's attachments, oldest first")
            .auth()
            .json::<AttachmentList>(200, "The attachments")
            .errors(&[401, 404, 501, 503]),
        Op::delete("/sessions/{id}/attachments/{attachment_id}", "deleteAttachment", "Delete one attachment")
            .auth()
            .empty(204, "Deleted")
            .errors(&[401, 404, 501, 503]),
        Op::get("/healthz", "health", "Liveness (no auth); agent counts for a caller that passes auth")
            .json::<HealthResponse>(200, "The server is up"),
        Op::get("/readyz", "ready", "Readiness (no auth): whether a working session can be created now (cached 1 s)")
            .json::<ReadyBody>(200, "Ready")
            .json::<NotReadyBody>(503, "Not ready: draining, the agent cannot start, or the session database does not answer"),
        Op::get("/metrics", "metrics", "Prometheus metrics (text format 0.0.4)")
            .auth()
            .text(200, &["text/plain"], "The metrics")
            .errors(&[401]),
        Op::get("/openapi.json", "openapi", "This document (no auth)")
            .any_json(200, "The OpenAPI 3.1 document"),
        Op::get("/", "console", "The web console page (no auth; 404 with `--no-console`)")
            .static_file()
            .text(200, &["text/html"], "The page")
            .errors(&[404]),
        Op::get("/console/config.json", "consoleConfig", "What the console page learns about the server (no auth; 404 with `--no-console`)")
            .static_file()
            .json::<ConsoleConfig>(200, "The agent and, for the replay agent, its scenario names")
            .errors(&[404]),
        Op::get("/console/{file}", "consoleAsset", "The console's scripts, style sheet and icon (no auth; 404 with `--no-console`)")
            .static_file()
            .text(200, &["text/javascript", "text/css", "image/svg+xml"], "The file")
            .errors(&[404]),
    ]
}

/// The payload schema of each event's `data`.
fn event_payload(kind: EventKind) -> (&'static str, Register) {
    match kind {
        EventKind::SessionReady => ("SessionReadyData", register::<SessionReadyData>),
        EventKind::MessageDelta => ("MessageDeltaData", register::<MessageDeltaData>),
        EventKind::MessageComplete => ("MessageCompleteData", register::<MessageCompleteData>),
        EventKind::ToolUse => ("ToolUseData", register::<ToolUseData>),
        EventKind::ToolResult => ("ToolResultData", register::<ToolResultData>),
        EventKind::PermissionRequest => {
            ("PermissionRequestData", register::<PermissionRequestData>)
        }
        EventKind::AskUserQuestion => ("AskUserQuestionData", register::<AskUserQuestionData>),
        EventKind::HookDecisionRequest => (
            "HookDecisionRequestData",
            register::<HookDecisionRequestData>,
        ),
        EventKind::Result => ("ResultData", register::<ResultData>),
        EventKind::Error => ("ErrorData", register::<ErrorData>),
        EventKind::McpStatusChange => ("McpStatusChangeData", register::<McpStatusChangeData>),
        EventKind::Done => ("DoneData", register::<DoneData>),
        EventKind::ApiRetry => ("ApiRetryData", register::<ApiRetryData>),
        EventKind::Usage => ("UsageData", register::<crate::models::UsageData>),
        EventKind::UserMessage => (
            "UserMessageData",
            register::<crate::models::anchors::UserMessageData>,
        ),
        EventKind::Rewound => (
            "RewoundData",
            register::<crate::models::anchors::RewoundData>,
        ),
    }
}

/// What an error status means on this API (the `code`s are in docs/protocol-extensions.md).
fn status_description(status: u16) -> &'static str {
    match status {
        400 => "Bad request: malformed body or field, refused by the client policy (`permission_mode_not_allowed`, `model_not_allowed`, `permission_destination_not_allowed`), `invalid_cwd`, a bad `Last-Event-ID`, a listing query it cannot use (`invalid_query`), `invalid_attachment_name`, or a user message naming an attachment the session does not hold (`unknown_attachment`)",
        401 => "Missing or wrong bearer token, or a refused JWT (`www-authenticate: Bearer`)",
        403 => "`permission_mode_forbidden`: a permission mode the caller's token does not allow (create, `set_permission_mode`, a `setMode` update); `take_over_refused`: this server's policy refuses a session stored by another",
        404 => "No such session (never existed, deleted, removed after its retention, or another principal's); for a static page: no such file, or `--no-console`",
        408 => "`body_timeout`: the body did not arrive in time (the connection is closed)",
        409 => "`conflict` (prompt not pending: first reply wins), `session_ended`, `agent_exited`, or `too_many_attachments`",
        412 => "`evicted`: `Last-Event-ID` is not in the ring any more (or is beyond the last event)",
        413 => "`payload_too_large`: the body is over the limit; `attachment_too_large`: an upload over the attachment limit (nothing stored)",
        429 => "`subscriber_limit`: the session has its most subscribers (`Retry-After`); `quota_exceeded`: the caller has its most sessions (no `Retry-After`: delete one)",
        501 => "`unsupported`: the agent cannot do this",
        502 => "The agent failed: `agent_start_failed`, `agent_error`",
        503 => "Refused for now, nothing was done: `session_limit`, `at_capacity`, `shutting_down`, `persistence_unavailable`, `agent_unavailable`, `session_owned_elsewhere`, `backpressure`, `backpressure_bytes`, `subscriber_capacity` (`Retry-After` where a retry can help)",
        504 => "`agent_timeout`: the agent did not answer a control request in time",
        _ => "Error",
    }
}

/// One operation under construction.
struct Op {
    method: &'static str,
    path: &'static str,
    operation: Map<String, Value>,
    schemas: Vec<Register>,
}

impl Op {
    fn new(method: &'static str, path: &'static str, id: &str, summary: &str) -> Self {
        let mut operation = Map::new();
        operation.insert("operationId".into(), json!(id));
        operation.insert("summary".into(), json!(summary));
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
            })
            .collect();
        if !params.is_empty() {
            operation.insert("parameters".into(), Value::Array(params));
        }
        operation.insert("responses".into(), json!({}));
        Self {
            method,
            path,
            operation,
            schemas: Vec::new(),
        }
    }

    fn get(path: &'static str, id: &str, summary: &str) -> Self {
        Self::new("get", path, id, summary)
    }

    fn post(path: &'static str, id: &str, summary: &str) -> Self {
        Self::new("post", path, id, summary)
    }

    fn delete(path: &'static str, id: &str, summary: &str) -> Self {
        Self::new("delete", path, id, summary)
    }

    /// Needs the bearer token.
    fn auth(mut self) -> Self {
        self.operation
            .insert("security".into(), json!([{ "bearer": [] }]));
        self
    }

    /// A JSON request body of type `T`.
    fn body<T: ToSchema>(mut self, required: bool) -> Self {
        self.schemas.push(register::<T>);
        self.operation.insert(
            "requestBody".into(),
            json!({
                "required": required,
                "content": {"application/json": {"schema": schema_ref(&T::name())}},
            }),
        );
        self
    }

    /// A raw request body of any media type (an uploaded file).
    fn raw_body(mut self) -> Self {
        self.operation.insert(
            "requestBody".into(),
            json!({
                "required": true,
                "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
            }),
        );
        self
    }

    fn response(mut self, status: u16, response: Value) -> Self {
        if let Some(Value::Object(responses)) = self.operation.get_mut("responses") {
            responses.insert(status.to_string(), response);
        }
        self
    }

    /// A JSON response of type `T`.
    fn json<T: ToSchema>(mut self, status: u16, description: &str) -> Self {
        self.schemas.push(register::<T>);
        let content = json!({"application/json": {"schema": schema_ref(&T::name())}});
        self.response(
            status,
            json!({"description": description, "content": content}),
        )
    }

    /// A JSON response of any shape.
    fn any_json(self, status: u16, description: &str) -> Self {
        let content = json!({"application/json": {"schema": {"type": "object"}}});
        self.response(
            status,
            json!({"description": description, "content": content}),
        )
    }

    /// A response of other media types (`text/plain` metrics, `text/html` pages), any body.
    fn text(self, status: u16, media: &[&str], description: &str) -> Self {
        let content: Map<String, Value> = media
            .iter()
            .map(|m| ((*m).to_owned(), json!({"schema": {"type": "string"}})))
            .collect();
        self.response(
            status,
            json!({"description": description, "content": content}),
        )
    }

    /// A response without a body.
    fn empty(self, status: u16, description: &str) -> Self {
        self.response(status, json!({ "description": description }))
    }

    /// Error responses (body [`ErrorBody`]).
    fn errors(mut self, statuses: &[u16]) -> Self {
        self.schemas.push(register::<ErrorBody>);
        for &status in statuses {
            let content = json!({"application/json": {"schema": schema_ref("ErrorBody")}});
            self = self.response(
                status,
                json!({"description": status_description(status), "content": content}),
            );
        }
        self
    }

    /// Adds a parameter.
    fn parameter(mut self, parameter: Value) -> Self {
        match self.operation.get_mut("parameters") {
            Some(Value::Array(params)) => params.push(parameter),
            _ => {
                self.operation
                    .insert("parameters".into(), Value::Array(vec![parameter]));
            }
        }
        self
    }

    /// An optional query parameter.
    fn query(self, name: &str, schema: Value, description: &str) -> Self {
        self.parameter(json!({
            "name": name,
            "in": "query",
            "required": false,
            "description": description,
            "schema": schema,
        }))
    }

    /// The `Last-Event-ID` request header.
    fn last_event_id(self) -> Self {
        self.parameter(json!({
            "name": "Last-Event-ID",
            "in": "header",
            "required": false,
            "description": "Resume after this seq (the `id` of the last event received); absent or empty: from the start of the ring",
            "schema": {"type": "string", "pattern": "^\\s*[0-9]*\\s*$"},
        }))
    }

    /// A static file of the web console: served with a Content-Security-Policy and the other
    /// security headers (`docs/protocol-extensions.md`), no auth.
    fn static_file(mut self) -> Self {
        self.operation.insert(
            "description".into(),
            json!(format!(
                "Served with `content-security-policy: {CONTENT_SECURITY_POLICY}`, `x-content-type-options: nosniff`, `x-frame-options: DENY`, `referrer-policy: no-referrer`, `cache-control: no-cache`. Other methods: 404."
            )),
        );
        self
    }

    /// An SSE stream of [`EventKind`] frames (component `ServerSentEvent`).
    fn sse(self, status: u16) -> Self {
        let content = json!({"text/event-stream": {"schema": schema_ref("ServerSentEvent")}});
        self.response(
            status,
            json!({
                "description": "The session's events as Server-Sent Events: `id: <seq>`, `event: <name>`, one `data:` line of compact JSON. Comment frames (`: keepalive`) keep the connection open. The last event is `done` (a server shutting down hands the session off: the stream ends without it; reconnect with `Last-Event-ID`).",
                "content": content,
            }),
        )
    }
}

/// The `ServerSentEvent` component: one frame schema per event kind.
fn server_sent_event(schemas: &mut Schemas) -> Value {
    let frames: Vec<Value> = EventKind::ALL
        .into_iter()
        .map(|kind| {
            let (name, add) = event_payload(kind);
            add(schemas);
            json!({
                "title": kind.as_str(),
                "type": "object",
                "required": ["event", "data"],
                "properties": {
                    "id": {"type": "integer", "minimum": 1, "description": "The event's seq (dense per session). Absent only on the `error {code: evicted}` frame that ends a lagging subscriber's stream."},
                    "event": {"const": kind.as_str()},
                    "data": schema_ref(name),
                },
            })
        })
        .collect();
    json!({
        "description": "One SSE frame: the `event` name, its `id` (seq) and its `data` (JSON).",
        "oneOf": frames,
    })
}

/// A `#[serde(flatten)]` field derives as `allOf: [<flattened type>, <own fields>]`; the
/// document shows such a type as the one object it is on the wire (the flattened type's fields
/// and its own), so that a schema admitting no unlisted property stays usable.
fn merge_flattened(components: &mut Map<String, Value>) {
    let names: Vec<String> = components.keys().cloned().collect();
    for name in names {
        let Some(parts) = components[&name].get("allOf").and_then(Value::as_array) else {
            continue;
        };
        let mut properties = Map::new();
        let mut required: Vec<Value> = Vec::new();
        let mut mergeable = true;
        for part in parts {
            let part = match part["$ref"].as_str() {
                Some(target) => target
                    .strip_prefix("#/components/schemas/")
                    .and_then(|target| components.get(target)),
                None => Some(part),
            };
            match part {
                Some(part) if part["type"] == "object" && part.get("properties").is_some() => {
                    if let Some(own) = part["properties"].as_object() {
                        properties.extend(own.clone());
                    }
                    if let Some(own) = part["required"].as_array() {
                        required.extend(own.iter().cloned());
                    }
                }
                _ => mergeable = false,
            }
        }
        if mergeable {
            let description = components[&name]["description"].clone();
            components.insert(
                name,
                json!({
                    "type": "object",
                    "description": description,
                    "required": required,
                    "properties": properties,
                }),
            );
        }
    }
}

/// Builds the document.
pub fn document() -> Value {
    let mut schemas: Schemas = Vec::new();
    let mut paths = Map::new();
    for op in endpoints() {
        for add in &op.schemas {
            add(&mut schemas);
        }
        let item = paths
            .entry(op.path)
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(item) = item {
            item.insert(op.method.into(), Value::Object(op.operation));
        }
    }
    let sse = server_sent_event(&mut schemas);
    let mut components = Map::new();
    for (name, schema) in schemas {
        if !components.contains_key(&name) {
            components.insert(name, serde_json::to_value(schema).unwrap_or(Value::Null));
        }
    }
    components.insert("ServerSentEvent".into(), sse);
    merge_flattened(&mut components);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "agent-webkit",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!("Drive long-lived Claude Code agent sessions over HTTP + Server-Sent Events: wire protocol {PROTOCOL_VERSION} and this server's extensions (docs/protocol-extensions.md). Any route answers 404 `{{\"detail\":\"Not Found\"}}` when unknown and 405 (with `allow`) for a method it does not take; CORS preflights are answered when `--cors-origin` allows the origin."),
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    })
}

/// [`document`] serialised once, shared by every request.
pub fn document_bytes() -> Bytes {
    static DOCUMENT: OnceLock<Bytes> = OnceLock::new();
    DOCUMENT
        .get_or_init(|| Bytes::from(serde_json::to_vec(&document()).unwrap_or_default()))
        .clone()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Every `$ref` resolves, and every event kind has a frame.
    #[test]
    fn refs_resolve_and_every_event_is_described() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = piece.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "dangling $ref {name}");
        }
        let frames = doc["components"]["schemas"]["ServerSentEvent"]["oneOf"]
            .as_array()
            .unwrap();
        assert_eq!(frames.len(), EventKind::ALL.len());
        assert_eq!(doc["openapi"], "3.1.0");
        // A flattened type is one object on the wire, and in the document.
        let detail = &schemas["SessionDetail"];
        assert_eq!(detail["type"], "object", "{detail}");
        for field in [
            "session_id",
            "usage",
            "pending_prompts",
            "last_seq",
            "prompts",
        ] {
            assert!(
                detail["properties"].get(field).is_some(),
                "{field}: {detail}"
            );
        }
        let input = &schemas["InboundMessage"];
        for ty in [
            "user_message",
            "interrupt",
            "permission_response",
            "question_response",
            "set_permission_mode",
            "set_model",
            "stop_task",
            "hook_decision_response",
        ] {
            assert!(
                input.to_string().contains(&format!("\"{ty}\"")),
                "{ty}: {input}"
            );
        }
    }
}
