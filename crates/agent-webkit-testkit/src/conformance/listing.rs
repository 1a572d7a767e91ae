//! `GET /sessions` and `GET /sessions/{id}` (docs/protocol-extensions.md): the listing's fields
//! and states, the detail's pending prompts and `last_seq`, pagination under concurrent creates.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::{json, Value};

use super::input::permission_prompt;
use super::{Reply, Server, Target, T};
use crate::{Result, TestkitError};

/// `GET path` with the server's token.
async fn get(server: &Server, path: &str) -> Result<Reply> {
    Reply::read(server.client.request(Method::GET, path).send().await?).await
}

/// `GET path`, which must answer 200 with JSON.
async fn get_json(server: &Server, path: &str) -> Result<Value> {
    let reply = get(server, path).await?;
    ensure_eq!(reply.status, 200, "GET {path}: {}", reply.body);
    ensure_eq!(reply.header("content-type"), Some("application/json"));
    Ok(reply.json())
}

fn entry<'a>(page: &'a Value, id: &str) -> Result<&'a Value> {
    page["sessions"]
        .as_array()
        .and_then(|s| s.iter().find(|e| e["session_id"] == id))
        .ok_or_else(|| TestkitError::Unexpected(format!("{id} not listed in {page}")))
}

/// The listing shows an idle session with its title and usage, and a session waiting on a
/// permission prompt, newest activity first; `?state=` filters; the detail of the waiting one
/// carries the prompt exactly as the stream sent it and the `last_seq` to resume from; once
/// answered (with the detail's correlation id) it is idle with no prompts. Unknown ids are 404,
/// a bad query 400 `invalid_query`, and both endpoints need the token.
pub async fn check_list_and_detail(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let echo = target.echo_turn("hello listing");
    let (idle, mut idle_stream) = server.start_turn(&echo).await?;
    idle_stream.until("result", T).await?;
    let (waiting, mut stream) = server.start_turn(&target.permission_turn()).await?;
    let corr = permission_prompt(&mut stream).await?;

    let page = get_json(&server, "/sessions").await?;
    let ids: Vec<&str> = page["sessions"]
        .as_array()
        .map(|s| s.iter().filter_map(|e| e["session_id"].as_str()).collect())
        .unwrap_or_default();
    ensure_eq!(
        ids,
        vec![waiting.as_str(), idle.as_str()],
        "newest activity first"
    );
    ensure_eq!(page["next_cursor"], Value::Null, "one page");
    let first = entry(&page, &idle)?;
    ensure_eq!(first["state"], "idle", "{first}");
    ensure_eq!(first["title"], "hello listing", "{first}");
    ensure_eq!(first["usage"]["turns"], 1, "{first}");
    ensure_eq!(first["pending_prompts"], 0, "{first}");
    ensure!(
        first["cwd"].as_str().is_some_and(|c| c.ends_with("work")),
        "cwd: {first}"
    );
    ensure_eq!(first["model"], json!(echo.model), "{first}");
    for field in ["created_at", "last_activity_at"] {
        ensure!(
            first[field].as_i64().is_some_and(|t| t > 0),
            "{field}: {first}"
        );
    }
    let second = entry(&page, &waiting)?;
    ensure_eq!(second["state"], "waiting", "{second}");
    ensure_eq!(second["pending_prompts"], 1, "{second}");

    let filtered = get_json(&server, "/sessions?state=waiting").await?;
    ensure_eq!(
        filtered["sessions"].as_array().map(Vec::len),
        Some(1),
        "{filtered}"
    );
    entry(&filtered, &waiting)?;

    // The detail: the prompt as the stream sent it, and where to resume.
    let mut replay = server.client.stream(&waiting, Some("0")).await?;
    let frames = replay.until("permission_request", T).await?;
    let sent = frames
        .last()
        .ok_or_else(|| TestkitError::Unexpected("no permission_request".into()))?;
    let detail = get_json(&server, &format!("/sessions/{waiting}")).await?;
    ensure_eq!(detail["state"], "waiting", "{detail}");
    let prompts = detail["prompts"].as_array().cloned().unwrap_or_default();
    ensure_eq!(prompts.len(), 1, "{detail}");
    ensure_eq!(prompts[0]["event"], "permission_request");
    ensure_eq!(prompts[0]["seq"].as_u64(), sent.id, "the prompt's seq");
    ensure_eq!(
        prompts[0]["data"],
        sent.json(),
        "the prompt's data as streamed"
    );
    ensure_eq!(prompts[0]["data"]["correlation_id"], corr.as_str());
    let last_seq = detail["last_seq"].as_u64().unwrap_or(0);
    ensure!(
        last_seq >= sent.id.unwrap_or(u64::MAX),
        "last_seq {last_seq} covers the prompt"
    );
    // A client that reloads answers from the detail and resumes after `last_seq`.
    let mut resumed = server
        .client
        .stream(&waiting, Some(&last_seq.to_string()))
        .await?;
    let allow = json!({"type": "permission_response", "correlation_id": corr, "behavior": "allow"});
    ensure_eq!(server.input(&waiting, &allow).await?.status, 204);
    let after = resumed.until("result", T).await?;
    ensure!(
        after.iter().all(|f| f.id.is_some_and(|id| id > last_seq)),
        "resumed after last_seq"
    );
    ensure!(
        !after.iter().any(|f| f.event == "permission_request"),
        "the prompt is not replayed"
    );
    let detail = get_json(&server, &format!("/sessions/{waiting}")).await?;
    ensure_eq!(detail["state"], "idle", "{detail}");
    ensure_eq!(detail["prompts"], json!([]), "{detail}");
    ensure_eq!(detail["pending_prompts"], 0, "{detail}");

    let not_found = json!({"detail": "Session not found"});
    get(&server, "/sessions/nope")
        .await?
        .expect_error(404, &not_found)?;
    get(&server, "/sessions/00000000-0000-4000-8000-000000000000")
        .await?
        .expect_error(404, &not_found)?;
    for bad in ["limit=0", "limit=x", "cursor=zz", "state=busy"] {
        get(&server, &format!("/sessions?{bad}"))
            .await?
            .expect_error_code(400, Some("invalid_query"))?;
    }
    for path in ["/sessions".to_owned(), format!("/sessions/{idle}")] {
        let reply = Reply::read(
            server
                .anonymous()
                .request(Method::GET, &path)
                .send()
                .await?,
        )
        .await?;
        ensure_eq!(reply.status, 401, "GET {path} without the token");
    }
    // A deleted session leaves the listing.
    ensure_eq!(server.client.delete(&idle).await?, 204);
    let page = get_json(&server, "/sessions").await?;
    ensure!(
        entry(&page, &idle).is_err(),
        "deleted session still listed: {page}"
    );
    Ok(())
}

/// Paging with `?limit=` while other sessions are being created: every session that existed
/// before the first page appears exactly once, no session appears twice, and each page is in
/// newest-activity-first order.
pub async fn check_list_pagination_under_concurrent_creates(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let turn = target.echo_turn("page me");
    let mut before = HashSet::new();
    for _ in 0..12 {
        before.insert(server.create(&turn).await?);
    }
    let creator = {
        let client = server.client.clone();
        let body = server.session_body(&turn);
        tokio::spawn(async move {
            let mut made = Vec::new();
            for _ in 0..12 {
                made.push(client.create(&body).await?);
            }
            Ok::<_, TestkitError>(made)
        })
    };
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let path = match &cursor {
            Some(c) => format!("/sessions?limit=5&cursor={c}"),
            None => "/sessions?limit=5".to_owned(),
        };
        let page = get_json(&server, &path).await?;
        let entries = page["sessions"].as_array().cloned().unwrap_or_default();
        ensure!(entries.len() <= 5, "limit honoured: {page}");
        let keys: Vec<(i64, String)> = entries
            .iter()
            .map(|e| {
                (
                    e["last_activity_at"].as_i64().unwrap_or(0),
                    e["session_id"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        ensure!(
            keys.windows(2).all(|w| w[0] > w[1]),
            "page in newest-first order: {keys:?}"
        );
        seen.extend(keys.into_iter().map(|(_, id)| id));
        // Let the creator interleave with the pages.
        tokio::task::yield_now().await;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let made = creator
        .await
        .map_err(|e| TestkitError::Unexpected(e.to_string()))??;
    let unique: HashSet<&String> = seen.iter().collect();
    ensure_eq!(
        unique.len(),
        seen.len(),
        "no session listed twice: {seen:?}"
    );
    for id in &before {
        ensure!(
            seen.contains(id),
            "{id} (created before paging) missing from {seen:?}"
        );
    }
    // Everything is listed once the creates are done.
    let all = get_json(&server, "/sessions?limit=200").await?;
    let listed: HashSet<&str> = all["sessions"]
        .as_array()
        .map(|s| s.iter().filter_map(|e| e["session_id"].as_str()).collect())
        .unwrap_or_default();
    for id in before.iter().chain(&made) {
        ensure!(
            listed.contains(id.as_str()),
            "{id} missing after the creates"
        );
    }
    Ok(())
}
