//! `GET /sessions` without persistence (`--store memory`): the registry alone, sorted in
//! memory, paged with the same cursor; the detail of a session waiting on a prompt.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;

use agent_webkit_core::auth::AuthConfig;
use agent_webkit_core::config::AppConfig;
use agent_webkit_core::http::Api;
use agent_webkit_testkit::replay::ReplayAgentFactory;
use bytes::Bytes;
use serde_json::{json, Value};

async fn call(api: &Api, method: &str, path: &str, body: Value) -> (u16, Value) {
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    let r = api.handle(method, path, &[], body).await;
    let json = serde_json::from_slice(r.body_bytes()).unwrap_or(Value::Null);
    (r.status, json)
}

#[tokio::test]
async fn the_registry_alone_is_listed_and_paged() {
    let config =
        AppConfig::new(Arc::new(ReplayAgentFactory::new())).with_auth(AuthConfig::disabled());
    assert!(config.failover.is_none());
    let api = Api::new(config).unwrap();
    let mut ids = HashSet::new();
    for _ in 0..7 {
        let (status, created) = call(&api, "POST", "/sessions", json!({"model": "echo"})).await;
        assert_eq!(status, 200);
        ids.insert(created["session_id"].as_str().unwrap().to_owned());
    }
    let (_, waiting) = call(&api, "POST", "/sessions", json!({"model": "read_allow"})).await;
    let waiting = waiting["session_id"].as_str().unwrap().to_owned();
    let msg = json!({"type": "user_message", "content": "first line?"});
    assert_eq!(
        call(&api, "POST", &format!("/sessions/{waiting}/input"), msg)
            .await
            .0,
        204
    );
    let session = api.registry().get(&waiting).unwrap();
    let mut log = session.event_log().subscribe_from_start();
    let prompt = loop {
        let batch = log.next_batch(16).await.unwrap().unwrap();
        if let Some(p) = batch
            .iter()
            .find(|e| e.kind().as_str() == "permission_request")
        {
            break p.clone();
        }
    };

    let mut seen = Vec::new();
    let mut path = "/sessions?limit=3".to_owned();
    loop {
        let (status, page) = call(&api, "GET", &path, Value::Null).await;
        assert_eq!(status, 200, "{page}");
        let entries = page["sessions"].as_array().unwrap();
        assert!(entries.len() <= 3);
        seen.extend(
            entries
                .iter()
                .map(|e| e["session_id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/sessions?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 8, "{seen:?}");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 8, "{seen:?}");
    assert!(ids.iter().all(|id| seen.contains(id)));

    let (_, filtered) = call(&api, "GET", "/sessions?state=waiting", Value::Null).await;
    let only: Vec<&str> = filtered["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(only, [waiting.as_str()]);

    let (status, detail) = call(&api, "GET", &format!("/sessions/{waiting}"), Value::Null).await;
    assert_eq!(status, 200);
    assert_eq!(detail["state"], "waiting");
    assert_eq!(detail["title"], "first line?");
    assert_eq!(detail["prompts"][0]["seq"], prompt.seq());
    assert_eq!(detail["prompts"][0]["data"], prompt.data());
    assert!(detail["last_seq"].as_u64().unwrap() >= prompt.seq());
    api.shutdown().await;
}
