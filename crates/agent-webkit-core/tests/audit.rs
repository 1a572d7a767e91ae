//! The audit trail, in process: each audited request, once it succeeded, reaches every
//! configured sink, and the default sink emits one `tracing` event under `agent_webkit::audit`
//! with the actor, session id, action and correlation id. The replay agent (`read_allow`)
//! drives a real permission prompt.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use agent_webkit_core::audit::{AuditEvent, AuditSink, AUDIT_TARGET};
use agent_webkit_core::auth::AuthConfig;
use agent_webkit_core::config::AppConfig;
use agent_webkit_core::http::Api;
use agent_webkit_testkit::replay::ReplayAgentFactory;
use bytes::Bytes;
use serde_json::{json, Value};

/// Keeps what it is given.
#[derive(Default)]
struct Captured(Mutex<Vec<AuditEvent>>);

impl AuditSink for Captured {
    fn record(&self, event: &AuditEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

/// A `tracing` subscriber that records the fields of events under the audit target.
#[derive(Default, Clone)]
struct Recorder(Arc<Mutex<Vec<BTreeMap<String, String>>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl tracing::Subscriber for Recorder {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target() == AUDIT_TARGET
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(fields);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

async fn call(api: &Api, method: &str, path: &str, body: Value) -> (u16, Value) {
    let headers = [
        ("authorization", "Bearer t"),
        ("content-type", "application/json"),
    ];
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    let r = api.handle(method, path, &headers, body).await;
    let json = serde_json::from_slice(r.body_bytes()).unwrap_or(Value::Null);
    (r.status, json)
}

#[tokio::test]
async fn audited_actions_reach_the_sinks_and_the_tracing_target() {
    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(recorder.clone());
    let captured = Arc::new(Captured::default());
    let mut config =
        AppConfig::new(Arc::new(ReplayAgentFactory::new())).with_auth(AuthConfig::with_token("t"));
    config.audit_sinks.push(captured.clone());
    let api = Api::new(config).unwrap();

    let (status, created) = call(&api, "POST", "/sessions", json!({"model": "read_allow"})).await;
    assert_eq!(status, 200, "{created}");
    let id = created["session_id"].as_str().unwrap().to_owned();
    let input = format!("/sessions/{id}/input");
    let (status, _) = call(
        &api,
        "POST",
        &input,
        json!({"type": "user_message", "content": "go"}),
    )
    .await;
    assert_eq!(status, 204);
    // The prompt, as GET /sessions/{id} shows it.
    let session = api.registry().get(&id).unwrap();
    let mut log = session.event_log().subscribe_from_start();
    let corr = loop {
        let batch = log.next_batch(16).await.unwrap().unwrap();
        if let Some(prompt) = batch
            .iter()
            .find(|e| e.kind().as_str() == "permission_request")
        {
            break prompt.data()["correlation_id"].as_str().unwrap().to_owned();
        }
    };
    // A refused answer is not audited; the accepted one is.
    let wrong =
        json!({"type": "permission_response", "correlation_id": "nope", "behavior": "allow"});
    assert_eq!(call(&api, "POST", &input, wrong).await.0, 409);
    let deny = json!({"type": "permission_response", "correlation_id": corr, "behavior": "deny"});
    assert_eq!(call(&api, "POST", &input, deny).await.0, 204);
    let mode = json!({"type": "set_permission_mode", "mode": "plan"});
    assert_eq!(call(&api, "POST", &input, mode).await.0, 204);
    assert_eq!(
        call(&api, "POST", &input, json!({"type": "interrupt"}))
            .await
            .0,
        204
    );
    assert_eq!(
        call(&api, "DELETE", &format!("/sessions/{id}"), Value::Null)
            .await
            .0,
        204
    );

    let events = captured.0.lock().unwrap().clone();
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "create",
            "deny",
            "set_permission_mode",
            "interrupt",
            "delete"
        ]
    );
    assert!(events
        .iter()
        .all(|e| e.session_id == id && e.actor.as_deref() == Some("token")));
    assert_eq!(events[1].correlation_id.as_deref(), Some(corr.as_str()));
    assert_eq!(events[0].detail.as_ref().unwrap()["model"], "read_allow");

    let traced = recorder.0.lock().unwrap().clone();
    let traced_actions: Vec<&str> = traced.iter().map(|f| f["action"].as_str()).collect();
    assert_eq!(traced_actions, actions, "{traced:?}");
    let deny = &traced[1];
    assert_eq!(deny["session_id"], id);
    assert_eq!(deny["actor"], "token");
    assert_eq!(deny["correlation_id"], corr);
    api.shutdown().await;
}
