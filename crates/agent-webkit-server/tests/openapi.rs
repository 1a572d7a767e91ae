//! The OpenAPI document against reality: `/openapi.json` serves the generated document, and
//! every response the conformance suite gets from the server (replay agent, both adapters),
//! recorded by a transparent tap, is documented — its path, method and status — and its JSON
//! body and every SSE event validate against the document's schemas. Validation is strict:
//! an object schema that does not say otherwise admits no property it does not list, so a field
//! the server sends but the document lacks fails here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use agent_webkit_testkit::conformance::{self, Agent, Target};
use agent_webkit_testkit::tap::{Exchange, Recording};
use agent_webkit_testkit::ServerProcess;
use futures_util::StreamExt;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");

#[tokio::test]
async fn served_document_is_the_generated_one() {
    let server = ServerProcess::spawn(BIN, &["--agent", "replay", "--token", "t"])
        .await
        .unwrap();
    let response = reqwest::get(format!("{}/openapi.json", server.base_url))
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "no auth needed");
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let served: Value = response.json().await.unwrap();
    assert_eq!(served, agent_webkit_core::openapi::document());
    assert_eq!(served["openapi"], "3.1.0");
    if let Ok(path) = std::env::var("AGENT_WEBKIT_OPENAPI_OUT") {
        std::fs::write(path, serde_json::to_string_pretty(&served).unwrap()).unwrap();
    }
}

/// The checks run with a recording tap: every check of the suite (`with_conformance_checks!`,
/// the list `tests/conformance.rs` expands too).
type Check =
    for<'a> fn(&'a Target) -> futures_util::future::BoxFuture<'a, agent_webkit_testkit::Result<()>>;

macro_rules! checks {
    ($($check:ident),* $(,)?) => {
        vec![$((stringify!($check), (|t| Box::pin(conformance::$check(t))) as Check)),*]
    };
}

fn all_checks() -> Vec<(&'static str, Check)> {
    agent_webkit_testkit::with_conformance_checks!(checks!())
}

/// Runs every check against `framework` with the replay agent behind a recording tap.
async fn record(framework: &str) -> Vec<Exchange> {
    let recording = Recording::new();
    let target = Target::new(BIN, framework, Agent::Replay).with_recording(Arc::clone(&recording));
    let target = &target;
    let failures: Vec<String> = futures_util::stream::iter(all_checks())
        .map(|(name, check)| async move {
            check(target)
                .await
                .err()
                .map(|err| format!("{name}: {err}"))
        })
        .buffer_unordered(2)
        .filter_map(|failure| async move { failure })
        .collect()
        .await;
    assert!(
        failures.is_empty(),
        "conformance checks failed behind the tap on {framework}:\n{}",
        failures.join("\n")
    );
    recording.exchanges()
}

/// The document with strict objects: every object schema listing `properties` without
/// saying anything about others admits none.
fn strict(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(strict);
        }
        Value::Array(items) => items.iter_mut().for_each(strict),
        _ => {}
    }
}

/// Validates instances against schemas of the document (by JSON pointer into it).
struct Validators {
    components: Value,
    cache: HashMap<String, jsonschema::Validator>,
}

impl Validators {
    fn new(doc: &Value) -> Self {
        let mut components = doc["components"].clone();
        strict(&mut components);
        Self {
            components,
            cache: HashMap::new(),
        }
    }

    /// Checks `instance` against `schema` (a schema object from the document, `$ref`s into
    /// `#/components/...` allowed).
    fn check(&mut self, schema: &Value, instance: &Value) -> Result<(), String> {
        let key = schema.to_string();
        if !self.cache.contains_key(&key) {
            let mut strict_schema = schema.clone();
            strict(&mut strict_schema);
            let root = json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "allOf": [strict_schema],
                "components": self.components,
            });
            let validator = jsonschema::validator_for(&root).map_err(|e| e.to_string())?;
            self.cache.insert(key.clone(), validator);
        }
        let validator = &self.cache[&key];
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// The document's path template matching `path`, if any.
fn template<'a>(doc: &'a Value, path: &str) -> Option<&'a str> {
    let segments: Vec<&str> = path.split('/').collect();
    doc["paths"]
        .as_object()?
        .keys()
        .map(String::as_str)
        .find(|t| {
            let parts: Vec<&str> = t.split('/').collect();
            parts.len() == segments.len()
                && parts.iter().zip(&segments).all(|(p, s)| {
                    (p.starts_with('{') && p.ends_with('}') && !s.is_empty()) || p == s
                })
        })
}

/// What a recorded run saw, for the summary.
#[derive(Default)]
struct Seen {
    operations: BTreeMap<String, usize>,
    events: BTreeMap<String, usize>,
    skipped: Vec<String>,
}

/// Checks one exchange against the document; returns what is wrong.
fn check_exchange(
    doc: &Value,
    validators: &mut Validators,
    exchange: &Exchange,
    seen: &mut Seen,
) -> Vec<String> {
    let what = format!(
        "{} {} -> {}",
        exchange.method, exchange.path, exchange.status
    );
    if exchange.method == "?" {
        // A request whose head never completed (slow-header checks): nothing to match.
        seen.skipped.push(what);
        return Vec::new();
    }
    let error_body = json!({"$ref": "#/components/schemas/ErrorBody"});
    let json_body = || serde_json::from_slice::<Value>(&exchange.body);
    let mut problems = Vec::new();
    let Some(path) = template(doc, &exchange.path) else {
        // Unknown routes: 404 with the error body.
        if exchange.status != 404 {
            problems.push(format!("{what}: undocumented path"));
        } else if let Err(e) = json_body()
            .map_err(|e| e.to_string())
            .and_then(|body| validators.check(&error_body, &body))
        {
            problems.push(format!("{what}: 404 body: {e}"));
        }
        seen.operations.insert("(unknown path) 404".into(), 0);
        return problems;
    };
    let method = exchange.method.to_ascii_lowercase();
    let Some(operation) = doc["paths"][path].get(&method) else {
        // Another method: 405 with the error body, or a CORS preflight (204, no body).
        let preflight = method == "options" && exchange.status == 204 && exchange.body.is_empty();
        if !preflight {
            if exchange.status != 405 {
                problems.push(format!("{what}: undocumented method"));
            } else if let Err(e) = json_body()
                .map_err(|e| e.to_string())
                .and_then(|body| validators.check(&error_body, &body))
            {
                problems.push(format!("{what}: 405 body: {e}"));
            }
        }
        *seen
            .operations
            .entry(format!("({method} {path}) {}", exchange.status))
            .or_default() += 1;
        return problems;
    };
    *seen
        .operations
        .entry(format!("{method} {path} {}", exchange.status))
        .or_default() += 1;
    let Some(response) = operation["responses"].get(exchange.status.to_string()) else {
        problems.push(format!("{what}: status not documented for {method} {path}"));
        return problems;
    };
    let media = exchange.media_type().unwrap_or("");
    let Some(content) = response.get("content") else {
        if !exchange.body.is_empty() {
            problems.push(format!("{what}: documented without a body, got {media}"));
        }
        return problems;
    };
    let Some(schema) = content.get(media).map(|c| &c["schema"]) else {
        problems.push(format!("{what}: media type {media:?} not documented"));
        return problems;
    };
    if media == "text/event-stream" {
        for frame in exchange.sse_frames() {
            if frame.is_comment() {
                continue;
            }
            let data: Value = match serde_json::from_str(&frame.data) {
                Ok(data) => data,
                Err(e) => {
                    problems.push(format!(
                        "{what}: event {} data is not JSON: {e}",
                        frame.event
                    ));
                    continue;
                }
            };
            let mut instance = json!({"event": frame.event, "data": data});
            if let Some(id) = frame.id {
                instance["id"] = json!(id);
            }
            *seen.events.entry(frame.event.clone()).or_default() += 1;
            if let Err(e) = validators.check(schema, &instance) {
                problems.push(format!(
                    "{what}: event {}: {e}\n    {}",
                    frame.event, frame.data
                ));
            }
        }
        return problems;
    }
    if media != "application/json" {
        // Documented media type, not JSON (metrics text, an HTML page): nothing to validate.
        return problems;
    }
    if !exchange.complete {
        seen.skipped.push(format!("{what} (body cut)"));
        return problems;
    }
    match json_body() {
        Ok(body) => {
            if let Err(e) = validators.check(schema, &body) {
                problems.push(format!(
                    "{what}: body: {e}\n    {}",
                    String::from_utf8_lossy(&exchange.body)
                ));
            }
        }
        Err(e) => problems.push(format!("{what}: body is not JSON ({e})")),
    }
    problems
}

/// The two recorded runs take turns: each already runs checks two at a time, as many as the
/// conformance suite on a 2-core machine.
static ONE_RUN_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn conformance_matches_document(framework: &str) {
    let _turn = ONE_RUN_AT_A_TIME.lock().await;
    let doc = agent_webkit_core::openapi::document();
    let exchanges = record(framework).await;
    let mut validators = Validators::new(&doc);
    let mut seen = Seen::default();
    let mut problems = Vec::new();
    for exchange in &exchanges {
        problems.extend(check_exchange(&doc, &mut validators, exchange, &mut seen));
    }
    eprintln!(
        "{framework}: {} responses, {} SSE events checked against the document",
        exchanges.len(),
        seen.events.values().sum::<usize>()
    );
    eprintln!("  operations: {:?}", seen.operations);
    eprintln!("  events: {:?}", seen.events);
    eprintln!(
        "  not matched (incomplete requests / cut bodies): {:?}",
        seen.skipped
    );
    problems.sort();
    problems.dedup();
    assert!(
        problems.is_empty(),
        "{} responses do not match the OpenAPI document on {framework}:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // The run did exercise the document (the replay agent sends whole messages: no
    // message_delta; its schema is checked in strict_validation_refuses_undocumented_fields).
    for event in [
        "session_ready",
        "message_complete",
        "tool_use",
        "tool_result",
        "permission_request",
        "ask_user_question",
        "result",
        "error",
        "done",
    ] {
        assert!(seen.events.contains_key(event), "no {event} recorded");
    }
    assert!(exchanges.len() > 300, "{} responses", exchanges.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_conformance_responses_match_the_document() {
    conformance_matches_document("axum").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_conformance_responses_match_the_document() {
    conformance_matches_document("actix").await;
}

/// The endpoints the conformance suite does not reach — readiness (ready and not), metrics, the
/// console's pages and config, the listing's refusals — recorded the same way and checked
/// against the document.
#[tokio::test]
async fn operational_and_console_responses_match_the_document() {
    let recording = Recording::new();
    let quiet = [("RUST_LOG", "warn")];
    let ready = ServerProcess::spawn_with_env(BIN, &["--agent", "replay", "--token", "t"], &quiet)
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("openapi-no-cli-{}", std::process::id()));
    let missing_cli = dir.join("claude").display().to_string();
    let not_ready = ServerProcess::spawn_with_env(
        BIN,
        &[
            "--agent",
            "claude",
            "--token",
            "t",
            "--store",
            "memory",
            "--claude-path",
            &missing_cli,
        ],
        &quiet,
    )
    .await
    .unwrap();
    for (server, requests) in [
        (
            &ready,
            &[
                ("/readyz", None),
                ("/metrics", Some("t")),
                ("/metrics", None),
                ("/", None),
                ("/console/app.js", None),
                ("/console/console.css", None),
                ("/console/icon.svg", None),
                ("/console/config.json", None),
                ("/console/nope.js", None),
                ("/sessions?limit=0", Some("t")),
                ("/sessions?state=busy", Some("t")),
                ("/sessions?limit=2&state=idle,ended", Some("t")),
                ("/sessions", None),
                ("/sessions/00000000-0000-4000-8000-000000000000", Some("t")),
            ][..],
        ),
        (&not_ready, &[("/readyz", None)][..]),
    ] {
        let tap = agent_webkit_testkit::tap::Tap::start(&server.base_url, Arc::clone(&recording))
            .await
            .unwrap();
        let client = agent_webkit_testkit::Client::new(&tap.base_url, None);
        for (path, token) in requests {
            let response = client
                .with_token(*token)
                .request(reqwest::Method::GET, path)
                .send()
                .await
                .unwrap();
            response.bytes().await.unwrap();
        }
    }
    let doc = agent_webkit_core::openapi::document();
    let mut validators = Validators::new(&doc);
    let mut seen = Seen::default();
    let exchanges = recording.exchanges();
    let problems: Vec<String> = exchanges
        .iter()
        .flat_map(|exchange| check_exchange(&doc, &mut validators, exchange, &mut seen))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let seen: Vec<&str> = seen.operations.keys().map(String::as_str).collect();
    for operation in [
        "get /readyz 200",
        "get /readyz 503",
        "get /metrics 200",
        "get /metrics 401",
        "get / 200",
        "get /console/{file} 200",
        "get /console/{file} 404",
        "get /console/config.json 200",
        "get /sessions 200",
        "get /sessions 400",
        "get /sessions 401",
        "get /sessions/{id} 404",
    ] {
        assert!(
            seen.contains(&operation),
            "{operation} not recorded: {seen:?}"
        );
    }
}

/// The validator is strict: a field the document does not list fails.
#[test]
fn strict_validation_refuses_undocumented_fields() {
    let doc = agent_webkit_core::openapi::document();
    let mut validators = Validators::new(&doc);
    let error = json!({"$ref": "#/components/schemas/ErrorBody"});
    assert!(validators
        .check(&error, &json!({"detail": "x", "code": "y"}))
        .is_ok());
    assert!(validators
        .check(&error, &json!({"detail": "x", "extra": 1}))
        .is_err());
    assert!(validators.check(&error, &json!({"code": "y"})).is_err());
    let sse = json!({"$ref": "#/components/schemas/ServerSentEvent"});
    assert!(validators
        .check(&sse, &json!({"event": "done", "id": 3, "data": {}}))
        .is_ok());
    assert!(validators
        .check(&sse, &json!({"event": "nope", "id": 3, "data": {}}))
        .is_err());
    assert!(validators
        .check(
            &sse,
            &json!({"event": "message_delta", "id": 3, "data": {"message_id": "m"}})
        )
        .is_err());
}
