//! `POST /sessions`, auth, routing, unknown sessions.

use reqwest::Method;
use serde_json::{json, Value};

use super::{Agent, Reply, Target};
use crate::Result;

/// `POST /sessions` without a body, with `{}`, with unknown fields and with `cwd`: 200 and
/// exactly `{"session_id":"<uuid v4>","protocol_version":"1.0"}`.
pub async fn check_create_with_and_without_body(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let work = server.work_dir().to_owned();
    let mut unknown = server.session_body(&target.echo_turn("x"));
    unknown["unknown_field"] = json!(1);
    unknown["another"] = json!({"nested": [true]});
    let bodies: Vec<Option<String>> = vec![
        None,
        Some("{}".into()),
        Some(unknown.to_string()),
        Some(json!({ "cwd": work }).to_string()),
    ];
    let mut ids = Vec::new();
    for body in bodies {
        let mut request = server.client.request(Method::POST, "/sessions");
        if let Some(body) = &body {
            request = request
                .header("content-type", "application/json")
                .body(body.clone());
        }
        let reply = Reply::read(request.send().await?).await?;
        ensure_eq!(
            reply.status,
            200,
            "create with body {body:?}: {}",
            reply.body
        );
        ensure_eq!(reply.header("content-type"), Some("application/json"));
        let id = reply.json()["session_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        ensure_eq!(
            reply.body,
            format!(r#"{{"session_id":"{id}","protocol_version":"1.0"}}"#),
            "create body"
        );
        let parts: Vec<&str> = id.split('-').collect();
        ensure_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            vec![8, 4, 4, 4, 12],
            "UUID shape of {id}"
        );
        ensure!(
            parts[2].starts_with('4') && id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()),
            "UUID v4: {id}"
        );
        ensure!(!ids.contains(&id), "session ids are unique");
        ids.push(id);
    }
    // Every created session is live.
    for id in &ids {
        let response = server.client.stream_raw(id, None).await?;
        ensure_eq!(response.status().as_u16(), 200, "stream of {id}");
    }
    Ok(())
}

/// Create bodies of the wrong shape are 400 with a precise `detail`; a `cwd` outside the
/// allowed roots or missing is 400 `invalid_cwd` (one uniform detail).
pub async fn check_create_rejects_bad_bodies(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let post = |body: &'static str| {
        server
            .client
            .request(Method::POST, "/sessions")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    Reply::read(post("{nope").await?)
        .await?
        .expect_error(400, &json!({"detail": "Invalid JSON"}))?;
    Reply::read(post(r#"{"model":5}"#).await?)
        .await?
        .expect_error(
            400,
            &json!({"detail": "Invalid field model: expected a string"}),
        )?;
    for body in [r#"{"cwd":["/"]}"#, r#"{"permission_mode":true}"#] {
        let detail = Reply::read(post(body).await?)
            .await?
            .expect_error_code(400, None)?;
        ensure!(detail.starts_with("Invalid field "), "{body}: {detail}");
    }
    for body in ["[1,2]", "\"text\"", "3"] {
        Reply::read(post(body).await?)
            .await?
            .expect_error_code(400, None)?;
    }
    let detail = Reply::read(post(r#"{"cwd":"/"}"#).await?)
        .await?
        .expect_error_code(400, Some("invalid_cwd"))?;
    ensure!(!detail.is_empty(), "a clear detail");
    let detail = Reply::read(post(r#"{"cwd":"/definitely/not/here"}"#).await?)
        .await?
        .expect_error_code(400, Some("invalid_cwd"))?;
    // One uniform answer (no filesystem oracle): see `check_uniform_invalid_cwd`.
    ensure!(!detail.contains("does not exist"), "{detail}");
    // Escaping the root through `..` is refused too.
    let escape = json!({"cwd": format!("{}/../..", server.work_dir())}).to_string();
    let reply = Reply::read(
        server
            .client
            .request(Method::POST, "/sessions")
            .body(escape)
            .send()
            .await?,
    )
    .await?;
    reply.expect_error_code(400, Some("invalid_cwd"))?;
    Ok(())
}

/// Replay only: an unknown scenario is a 400 whose `detail` lists the known ones.
pub async fn check_create_unknown_scenario(target: &Target) -> Result<()> {
    if target.agent != Agent::Replay {
        return target.skip(
            "check_create_unknown_scenario",
            "the model names a replay scenario only for the replay agent; the claude agent passes it to the CLI",
        );
    }
    let server = target.start(&[]).await?;
    let reply = Reply::read(server.client.create_raw(&json!({"model": "nope"})).await?).await?;
    let detail = reply.expect_error_code(400, Some("invalid_config"))?;
    ensure!(
        detail.contains("read_allow") && detail.contains("echo"),
        "{detail}"
    );
    Ok(())
}

/// `--max-sessions 2`: the third create is 503 with `Retry-After: 1`, `code: session_limit`;
/// a DELETE frees a slot.
pub async fn check_session_cap(target: &Target) -> Result<()> {
    let server = target.start(&["--max-sessions", "2"]).await?;
    let turn = target.echo_turn("x");
    let first = server.create(&turn).await?;
    server.create(&turn).await?;
    let reply = Reply::read(
        server
            .client
            .create_raw(&server.session_body(&turn))
            .await?,
    )
    .await?;
    reply.expect_error_code(503, Some("session_limit"))?;
    ensure_eq!(reply.header("retry-after"), Some("1"));
    ensure_eq!(server.client.delete(&first).await?, 204);
    server.create(&turn).await?;
    Ok(())
}

/// 401 for a missing token, a wrong token and another scheme (with `www-authenticate:
/// Bearer`), before any session lookup; the scheme is case-insensitive; `/healthz` needs no
/// token.
pub async fn check_auth_variants(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let anonymous = server.anonymous();
    let missing = Reply::read(anonymous.create_raw(&json!({})).await?).await?;
    missing.expect_error(401, &json!({"detail": "Missing bearer token"}))?;
    ensure_eq!(missing.header("www-authenticate"), Some("Bearer"));
    let wrong = server.client.with_token(Some("nope"));
    let reply = Reply::read(wrong.create_raw(&json!({})).await?).await?;
    reply.expect_error(401, &json!({"detail": "Invalid token"}))?;
    ensure_eq!(reply.header("www-authenticate"), Some("Bearer"));
    for header in [
        "Basic dXNlcjpwYXNz",
        "Token conformance-token",
        "Bearer",
        "",
    ] {
        let reply = Reply::read(
            anonymous
                .request(Method::POST, "/sessions")
                .header("authorization", header)
                .send()
                .await?,
        )
        .await?;
        ensure_eq!(reply.status, 401, "authorization: {header:?}");
        ensure_eq!(reply.header("www-authenticate"), Some("Bearer"));
        reply.expect_error_code(401, None)?;
    }
    // Auth is checked before the session lookup, on every endpoint.
    let id = server.create(&target.echo_turn("x")).await?;
    for client in [&anonymous, &wrong] {
        for (method, path) in [
            (Method::GET, format!("/sessions/{id}/stream")),
            (Method::GET, "/sessions/nope/stream".to_owned()),
            (Method::POST, format!("/sessions/{id}/input")),
            (Method::POST, "/sessions/nope/input".to_owned()),
            (Method::DELETE, format!("/sessions/{id}")),
            (Method::DELETE, "/sessions/nope".to_owned()),
            (Method::GET, "/sessions".to_owned()),
            (Method::GET, format!("/sessions/{id}")),
        ] {
            let reply = Reply::read(
                client
                    .request(method.clone(), &path)
                    .body(r#"{"type":"interrupt"}"#)
                    .send()
                    .await?,
            )
            .await?;
            ensure_eq!(reply.status, 401, "{method} {path}");
        }
    }
    // The session survived the unauthorised DELETEs; the scheme is case-insensitive.
    let stream = anonymous
        .request(Method::GET, &format!("/sessions/{id}/stream"))
        .header("authorization", format!("bearer {}", super::TOKEN))
        .send()
        .await?;
    ensure_eq!(stream.status().as_u16(), 200, "lower-case scheme on stream");
    drop(stream);
    let response = anonymous
        .request(Method::POST, &format!("/sessions/{id}/input"))
        .header("authorization", format!("bEaReR {}", super::TOKEN))
        .header("content-type", "application/json")
        .body(r#"{"type":"set_model","model":"m"}"#)
        .send()
        .await?;
    ensure_eq!(
        response.status().as_u16(),
        204,
        "mixed-case scheme on input"
    );
    let health = Reply::read(anonymous.request(Method::GET, "/healthz").send().await?).await?;
    ensure_eq!(health.status, 200);
    ensure_eq!(health.body, r#"{"status":"ok","protocol_version":"1.0"}"#);
    Ok(())
}

/// Unknown sessions are 404 `{"detail":"Session not found"}` on stream and input; DELETE of an
/// unknown id is 204; unknown routes 404; wrong methods 405 with `allow`.
pub async fn check_unknown_sessions_and_routes(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let c = &server.client;
    let not_found = json!({"detail": "Session not found"});
    Reply::read(c.stream_raw("nope", None).await?)
        .await?
        .expect_error(404, &not_found)?;
    Reply::read(c.stream_raw("nope", Some("3")).await?)
        .await?
        .expect_error(404, &not_found)?;
    Reply::read(c.input("nope", &json!({"type": "interrupt"})).await?)
        .await?
        .expect_error(404, &not_found)?;
    // The session lookup comes before the body is parsed.
    Reply::read(c.input_raw("nope", "{nope").await?)
        .await?
        .expect_error(404, &not_found)?;
    let delete = Reply::read(c.request(Method::DELETE, "/sessions/nope").send().await?).await?;
    ensure_eq!(delete.status, 204);
    ensure_eq!(delete.body, "", "204 has no body");
    for path in ["/nowhere", "/sessions/a/b/c", "/sessions/a/streams"] {
        let reply = Reply::read(c.request(Method::GET, path).send().await?).await?;
        reply.expect_error(404, &json!({"detail": "Not Found"}))?;
    }
    let cases: [(Method, &str, &str); 6] = [
        (Method::PUT, "/sessions", "GET, POST"),
        (Method::DELETE, "/sessions", "GET, POST"),
        (Method::POST, "/sessions/x", "GET, DELETE"),
        (Method::POST, "/sessions/x/stream", "GET"),
        (Method::GET, "/sessions/x/input", "POST"),
        (Method::POST, "/healthz", "GET"),
    ];
    for (method, path, allow) in cases {
        let reply = Reply::read(c.request(method.clone(), path).send().await?).await?;
        reply.expect_error(405, &json!({"detail": "Method Not Allowed"}))?;
        ensure_eq!(reply.header("allow"), Some(allow), "{method} {path}");
    }
    let health = Reply::read(c.request(Method::GET, "/healthz").send().await?).await?;
    ensure_eq!(health.status, 200);
    ensure_eq!(health.header("content-type"), Some("application/json"));
    let parsed: Value = health.json();
    ensure_eq!(parsed["status"], "ok");
    ensure_eq!(parsed["protocol_version"], "1.0");
    // An authorized caller also gets the agent counts (docs/protocol-extensions.md).
    ensure!(parsed["agents"]["live"].is_u64(), "{parsed}");
    Ok(())
}
