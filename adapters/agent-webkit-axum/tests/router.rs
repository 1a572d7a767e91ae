//! In-process tests of the axum glue: requests through the Router, mounting under a prefix,
//! and graceful shutdown through `serve`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use agent_webkit_axum::{create_app, serve};
use agent_webkit_core::auth::AuthConfig;
use agent_webkit_core::config::AppConfig;
use agent_webkit_core::http::Api;
use agent_webkit_replay::ReplayAgentFactory;
use agent_webkit_testkit::Client;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

fn config() -> AppConfig {
    AppConfig::new(Arc::new(ReplayAgentFactory::new())).with_auth(AuthConfig::with_token("t"))
}

async fn call(app: &Router, method: &str, uri: &str, body: &str) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", "Bearer t")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn router_serves_the_api() {
    let app = create_app(config()).unwrap();
    let (status, body) = call(&app, "POST", "/sessions", r#"{"model":"echo"}"#).await;
    assert_eq!(status, StatusCode::OK);
    let id = body["session_id"].as_str().unwrap().to_owned();
    let (status, _) = call(
        &app,
        "POST",
        &format!("/sessions/{id}/input"),
        r#"{"type":"user_message","content":"hi"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = call(&app, "POST", &format!("/sessions/{id}/input"), "{").await;
    assert_eq!(
        (status, body),
        (StatusCode::BAD_REQUEST, json!({"detail": "Invalid JSON"}))
    );
    let (status, _) = call(&app, "DELETE", &format!("/sessions/{id}"), "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn mounts_under_a_prefix() {
    let app = Router::new().nest("/api", create_app(config()).unwrap());
    let (status, body) = call(&app, "POST", "/api/sessions", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = call(&app, "POST", "/sessions", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[test]
fn missing_token_is_a_startup_error() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let config =
        AppConfig::new(Arc::new(ReplayAgentFactory::new())).with_auth(AuthConfig::default());
    let err = create_app(config).unwrap_err();
    assert!(err.to_string().contains("AGENT_WEBKIT_AUTH_TOKEN"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_shutdown_ends_streams_with_done() {
    let api = Api::new(config()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, api, async move {
        let _ = stop_rx.await;
    }));
    let client = Client::new(&base, Some("t"));
    let id = client.create(&json!({})).await.unwrap();
    let mut stream = client.stream(&id, None).await.unwrap();
    stream
        .next_event_within(Duration::from_secs(10))
        .await
        .unwrap();
    stop_tx.send(()).unwrap();
    let rest = stream
        .collect_to_end(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|f| f.event.as_str()).collect::<Vec<_>>(),
        ["done"]
    );
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stopped")
        .unwrap()
        .unwrap();
}
