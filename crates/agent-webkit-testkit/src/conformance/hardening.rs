//! Hardening: the operator's client policy (permission modes, models, permission-rule
//! destinations), one uniform answer for unusable `cwd`s, CORS, subscriber and inbound-byte
//! caps, body and header read timeouts, the connection cap and the shutdown drain deadline.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use super::{next_event, Agent, Reply, Target, T};
use crate::{Result, TestkitError};

/// The permission modes a default server lets clients choose.
const PROMPTING: &str = "default, acceptEdits, plan";

/// Creates with `body`, returning the reply.
async fn create_reply(server: &super::Server, body: &Value) -> Result<Reply> {
    Reply::read(server.client.create_raw(body).await?).await
}

/// Permission modes: by default only the prompting modes, at create and at
/// `set_permission_mode` (400 `permission_mode_not_allowed` naming the allowed modes); the
/// server's own `--claude-permission-mode` and `--allow-permission-mode` extend it.
pub async fn check_permission_mode_policy(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let turn = target.echo_turn("hi");
    for mode in ["bypassPermissions", "dontAsk", "auto"] {
        let mut body = server.session_body(&turn);
        body["permission_mode"] = json!(mode);
        let detail = create_reply(&server, &body)
            .await?
            .expect_error_code(400, Some("permission_mode_not_allowed"))?;
        ensure!(detail.contains(PROMPTING), "{mode}: {detail}");
    }
    let mut body = server.session_body(&turn);
    body["permission_mode"] = json!("plan");
    let id = server.client.create(&body).await?;
    let bypass = json!({"type": "set_permission_mode", "mode": "bypassPermissions"});
    let detail = server
        .input(&id, &bypass)
        .await?
        .expect_error_code(400, Some("permission_mode_not_allowed"))?;
    ensure!(detail.contains(PROMPTING), "{detail}");
    let plan = json!({"type": "set_permission_mode", "mode": "acceptEdits"});
    ensure_eq!(
        server.input(&id, &plan).await?.status,
        204,
        "an allowed mode"
    );
    drop(server);

    // The server's own default mode is always allowed; the operator's list replaces the default.
    let server = target
        .start(&[
            "--claude-permission-mode",
            "bypassPermissions",
            "--allow-permission-mode",
            "plan,dontAsk",
        ])
        .await?;
    for (mode, allowed) in [
        ("bypassPermissions", true),
        ("dontAsk", true),
        ("plan", true),
        ("default", false),
        ("auto", false),
    ] {
        let mut body = server.session_body(&turn);
        body["permission_mode"] = json!(mode);
        let reply = create_reply(&server, &body).await?;
        if allowed {
            ensure_eq!(reply.status, 200, "{mode}: {}", reply.body);
        } else {
            reply.expect_error_code(400, Some("permission_mode_not_allowed"))?;
        }
    }
    Ok(())
}

/// `--allow-model`: other models are 400 `model_not_allowed` at create and at `set_model`
/// (`set_model` with `null`, back to the default, stays allowed).
pub async fn check_model_policy(target: &Target) -> Result<()> {
    let turn = target.echo_turn("hi");
    let allowed = turn.model.clone().unwrap_or_else(|| "sonnet".to_owned());
    let server = target.start(&["--allow-model", &allowed]).await?;
    let detail = create_reply(
        &server,
        &json!({"cwd": server.work_dir(), "model": "opus-x"}),
    )
    .await?
    .expect_error_code(400, Some("model_not_allowed"))?;
    ensure!(detail.contains(&allowed), "{detail}");
    let id = server.create(&turn).await?;
    server
        .input(&id, &json!({"type": "set_model", "model": "opus-x"}))
        .await?
        .expect_error_code(400, Some("model_not_allowed"))?;
    for model in [json!(allowed), Value::Null] {
        let reply = server
            .input(&id, &json!({"type": "set_model", "model": model}))
            .await?;
        ensure_eq!(reply.status, 204, "set_model {model}: {}", reply.body);
    }
    Ok(())
}

/// `updated_permissions`: `session` rules pass; settings-file destinations (and a missing
/// one, and a `setMode` to a refused mode) are 400 `permission_destination_not_allowed` /
/// `permission_mode_not_allowed`, leaving the prompt pending; `--allow-settings-permission-rules`
/// lets settings destinations through.
pub async fn check_permission_rules_policy(target: &Target) -> Result<()> {
    let rule = |destination: &str| {
        json!({"type": "addRules", "rules": [{"toolName": "Bash"}], "behavior": "allow",
               "destination": destination})
    };
    let server = target.start(&[]).await?;
    let (id, mut stream) = server.start_turn(&target.permission_turn()).await?;
    let corr = prompt(&mut stream).await?;
    let answer = |updates: Value| {
        json!({"type": "permission_response", "correlation_id": corr, "behavior": "allow",
               "updated_permissions": updates})
    };
    for destination in ["userSettings", "projectSettings", "localSettings"] {
        let detail = server
            .input(&id, &answer(json!([rule("session"), rule(destination)])))
            .await?
            .expect_error_code(400, Some("permission_destination_not_allowed"))?;
        ensure!(detail.contains(destination), "{detail}");
    }
    server
        .input(
            &id,
            &answer(json!([{"type": "addRules", "rules": [], "behavior": "allow"}])),
        )
        .await?
        .expect_error_code(400, Some("permission_destination_not_allowed"))?;
    server
        .input(
            &id,
            &answer(
                json!([{"type": "setMode", "mode": "bypassPermissions", "destination": "session"}]),
            ),
        )
        .await?
        .expect_error_code(400, Some("permission_mode_not_allowed"))?;
    let reply = server.input(&id, &answer(json!([rule("session")]))).await?;
    ensure_eq!(
        reply.status,
        204,
        "a session rule (the prompt was still pending): {}",
        reply.body
    );
    stream.until("result", T).await?;
    drop(server);

    let server = target.start(&["--allow-settings-permission-rules"]).await?;
    let (id, mut stream) = server.start_turn(&target.permission_turn()).await?;
    let corr = prompt(&mut stream).await?;
    let reply = server
        .input(
            &id,
            &json!({"type": "permission_response", "correlation_id": corr, "behavior": "allow",
                    "updated_permissions": [rule("localSettings")]}),
        )
        .await?;
    ensure_eq!(reply.status, 204, "allowed by the operator: {}", reply.body);
    stream.until("result", T).await?;
    Ok(())
}

async fn prompt(stream: &mut crate::SseStream) -> Result<String> {
    let frames = stream.until("permission_request", T).await?;
    frames
        .last()
        .and_then(|f| f.json()["correlation_id"].as_str().map(str::to_owned))
        .ok_or_else(|| TestkitError::Unexpected("no correlation_id".into()))
}

/// Any `cwd` a client may not use gets the same 400 body: missing, a file, outside the
/// roots, `..` escapes — no filesystem oracle.
pub async fn check_uniform_invalid_cwd(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let work = server.work_dir().to_owned();
    std::fs::write(format!("{work}/file.txt"), b"x")?;
    let mut bodies = Vec::new();
    for cwd in [
        format!("{work}/missing"),
        format!("{work}/file.txt"),
        format!("{work}/../../.."),
        "/".to_owned(),
        "/definitely/not/here".to_owned(),
        "/etc".to_owned(),
    ] {
        let reply = create_reply(&server, &json!({ "cwd": cwd })).await?;
        reply.expect_error_code(400, Some("invalid_cwd"))?;
        bodies.push(reply.body);
    }
    ensure!(
        bodies.iter().all(|b| *b == bodies[0]),
        "one uniform body: {bodies:?}"
    );
    ensure!(!bodies[0].contains(&work), "no path in {}", bodies[0]);
    Ok(())
}

/// CORS: off by default (a preflight is 405 without CORS headers); with `--cors-origin`, the
/// preflight is 204 with the allowed methods and headers, and every response to that origin
/// (the SSE stream included) carries `Access-Control-Allow-Origin`; other origins get none.
pub async fn check_cors(target: &Target) -> Result<()> {
    const ORIGIN: &str = "https://app.example";
    let preflight = |server: &super::Server, origin: &'static str| {
        server
            .anonymous()
            .request(Method::OPTIONS, "/sessions")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let server = target.start(&[]).await?;
    let reply = Reply::read(preflight(&server, ORIGIN).await?).await?;
    ensure_eq!(reply.status, 405, "CORS off: {}", reply.body);
    ensure_eq!(reply.header("access-control-allow-origin"), None);
    drop(server);

    let server = target.start(&["--cors-origin", ORIGIN]).await?;
    let reply = Reply::read(preflight(&server, ORIGIN).await?).await?;
    ensure_eq!(reply.status, 204, "preflight: {}", reply.body);
    ensure_eq!(reply.header("access-control-allow-origin"), Some(ORIGIN));
    let methods = reply.header("access-control-allow-methods").unwrap_or("");
    ensure!(
        methods.contains("POST") && methods.contains("GET"),
        "{methods}"
    );
    let headers = reply
        .header("access-control-allow-headers")
        .unwrap_or("")
        .to_ascii_lowercase();
    for name in ["authorization", "content-type", "last-event-id"] {
        ensure!(headers.contains(name), "{name} in {headers}");
    }
    let reply = Reply::read(preflight(&server, "https://evil.example").await?).await?;
    ensure_eq!(
        reply.header("access-control-allow-origin"),
        None,
        "other origin"
    );

    let turn = target.echo_turn("hi");
    let response = server
        .client
        .request(Method::POST, "/sessions")
        .header("origin", ORIGIN)
        .json(&server.session_body(&turn))
        .send()
        .await?;
    let reply = Reply::read(response).await?;
    ensure_eq!(reply.status, 200, "{}", reply.body);
    ensure_eq!(reply.header("access-control-allow-origin"), Some(ORIGIN));
    let id = reply.json()["session_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let stream = server
        .client
        .request(Method::GET, &format!("/sessions/{id}/stream"))
        .header("origin", ORIGIN)
        .send()
        .await?;
    ensure_eq!(stream.status().as_u16(), 200);
    ensure_eq!(
        stream
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some(ORIGIN),
        "SSE response"
    );
    let unauthorized = server
        .anonymous()
        .request(Method::GET, &format!("/sessions/{id}/stream"))
        .header("origin", ORIGIN)
        .send()
        .await?;
    ensure_eq!(unauthorized.status().as_u16(), 401);
    ensure_eq!(
        unauthorized
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some(ORIGIN),
        "a browser can read the 401"
    );
    Ok(())
}

/// Subscriber caps: past `--max-subscribers-per-session` a stream is 429 `subscriber_limit`,
/// past `--max-subscribers` 503 `subscriber_capacity`, both with `Retry-After`; a closed
/// stream frees its slot (at the latest when the next keepalive finds the client gone).
pub async fn check_subscriber_caps(target: &Target) -> Result<()> {
    let server = target
        // Some servers (actix) notice a gone client only when writing to it: a short keepalive
        // makes that write come soon.
        .start(&[
            "--max-subscribers-per-session",
            "2",
            "--max-subscribers",
            "3",
            "--keepalive",
            "0.2",
        ])
        .await?;
    let turn = target.echo_turn("hi");
    let a = server.create(&turn).await?;
    let b = server.create(&turn).await?;
    let a1 = server.client.stream(&a, None).await?;
    let _a2 = server.client.stream(&a, None).await?;
    let reply = Reply::read(server.client.stream_raw(&a, None).await?).await?;
    reply.expect_error_code(429, Some("subscriber_limit"))?;
    ensure_eq!(reply.header("retry-after"), Some("1"));
    let _b1 = server.client.stream(&b, None).await?;
    let reply = Reply::read(server.client.stream_raw(&b, None).await?).await?;
    reply.expect_error_code(503, Some("subscriber_capacity"))?;
    ensure_eq!(reply.header("retry-after"), Some("1"));
    drop(a1);
    let deadline = Instant::now() + T;
    loop {
        let response = server.client.stream_raw(&b, None).await?;
        if response.status() == 200 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "a closed stream never freed its slot"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// `--max-inbound-bytes`: queued user messages past the byte budget are 503
/// `backpressure_bytes` with `Retry-After: 1` (well before the count limit).
pub async fn check_inbound_bytes_limit(target: &Target) -> Result<()> {
    let server = target.start(&["--max-inbound-bytes", "3000"]).await?;
    let turn = target.long_turn();
    let (id, mut stream) = server.start_turn(&turn).await?;
    next_event(&mut stream).await?; // session_ready
    next_event(&mut stream).await?; // the first message has left the queue
    let big = json!({"type": "user_message", "content": "x".repeat(1000)});
    for i in 0..3 {
        let reply = server.input(&id, &big).await?;
        ensure_eq!(reply.status, 204, "queued message {i}: {}", reply.body);
    }
    let reply = server.input(&id, &big).await?;
    let detail = reply.expect_error_code(503, Some("backpressure_bytes"))?;
    ensure_eq!(reply.header("retry-after"), Some("1"));
    ensure!(detail.contains("3000"), "{detail}");
    ensure_eq!(
        server
            .input(&id, &json!({"type": "interrupt"}))
            .await?
            .status,
        204
    );
    Ok(())
}

/// `--body-read-timeout`: a body that stops arriving is 408 `body_timeout` (and the
/// connection is closed), well before the client gives up.
pub async fn check_body_read_timeout(target: &Target) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let server = target.start(&["--body-read-timeout", "1"]).await?;
    let addr = server
        .process
        .base_url
        .trim_start_matches("http://")
        .to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await?;
    let head = format!(
        "POST /sessions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"cwd\":",
        super::TOKEN
    );
    tcp.write_all(head.as_bytes()).await?;
    let started = Instant::now();
    let text = read_until_close(&mut tcp, T).await?;
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "answered after {:?}",
        started.elapsed()
    );
    ensure!(text.starts_with("HTTP/1.1 408"), "{text}");
    ensure!(text.contains("\"code\":\"body_timeout\""), "{text}");
    Ok(())
}

/// Reads until the server closes the connection (or `within` passes: an error).
async fn read_until_close(tcp: &mut tokio::net::TcpStream, within: Duration) -> Result<String> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(within, read)
        .await
        .map_err(|_| TestkitError::Timeout("the server to close the connection".into()))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Opens `n` connections that each send `prefix` (part of a request) and stop.
async fn half_sent_with(addr: &str, n: usize, prefix: &[u8]) -> Result<Vec<tokio::net::TcpStream>> {
    use tokio::io::AsyncWriteExt;
    let mut open = Vec::with_capacity(n);
    for _ in 0..n {
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.write_all(prefix).await?;
        open.push(tcp);
    }
    Ok(open)
}

/// Opens `n` connections that each send half a header block and stop.
async fn half_sent(addr: &str, n: usize) -> Result<Vec<tokio::net::TcpStream>> {
    half_sent_with(addr, n, b"GET /healthz HTTP/1.1\r\nHost: loc").await
}

/// `--header-read-timeout`: connections that send half a header, nothing at all, or part of
/// the HTTP/2 preface are closed within the timeout (pre-auth slowloris), and the server
/// keeps answering others.
pub async fn check_slow_headers_closed(target: &Target) -> Result<()> {
    let server = target.start(&["--header-read-timeout", "1"]).await?;
    let addr = server
        .process
        .base_url
        .trim_start_matches("http://")
        .to_owned();
    let mut open = half_sent(&addr, 40).await?;
    open.extend(half_sent_with(&addr, 5, b"").await?);
    open.extend(half_sent_with(&addr, 5, b"PRI * HTTP/2.0\r\n").await?);
    let started = Instant::now();
    for tcp in &mut open {
        read_until_close(tcp, Duration::from_secs(8)).await?;
    }
    ensure!(
        started.elapsed() < Duration::from_secs(8),
        "closed after {:?}",
        started.elapsed()
    );
    let health = server
        .anonymous()
        .request(Method::GET, "/healthz")
        .send()
        .await?;
    ensure_eq!(health.status().as_u16(), 200);
    Ok(())
}

/// `--max-connections`: past the cap a new connection is not served until one closes.
pub async fn check_connection_cap(target: &Target) -> Result<()> {
    let server = target
        .start(&["--max-connections", "4", "--header-read-timeout", "60"])
        .await?;
    let addr = server
        .process
        .base_url
        .trim_start_matches("http://")
        .to_owned();
    let open = half_sent(&addr, 4).await?;
    // Let the server take all four before the fifth arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = reqwest::Client::new();
    let url = format!("{}/healthz", server.process.base_url);
    let blocked = tokio::time::timeout(Duration::from_millis(1500), client.get(&url).send()).await;
    ensure!(
        blocked.is_err(),
        "a fifth connection was served past the cap"
    );
    drop(open);
    let reply = tokio::time::timeout(T, client.get(&url).send())
        .await
        .map_err(|_| TestkitError::Timeout("served once a slot was free".into()))??;
    ensure_eq!(reply.status().as_u16(), 200);
    Ok(())
}

/// `--shutdown-drain`: SIGTERM with half-sent requests open still exits within the drain
/// deadline (they are dropped), instead of waiting for the clients.
pub async fn check_shutdown_drain(target: &Target) -> Result<()> {
    if target.agent == Agent::FakeClaude {
        // The drain is the web layer's; one agent is enough.
        return target.skip("check_shutdown_drain", "agent-independent");
    }
    let mut server = target
        .start(&["--shutdown-drain", "1", "--header-read-timeout", "120"])
        .await?;
    let addr = server
        .process
        .base_url
        .trim_start_matches("http://")
        .to_owned();
    let _open = half_sent(&addr, 20).await?;
    let started = Instant::now();
    let status = server.process.terminate(Duration::from_secs(8)).await?;
    ensure!(
        status.is_some(),
        "still running {:?} after SIGTERM",
        started.elapsed()
    );
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "exited after {:?}",
        started.elapsed()
    );
    Ok(())
}
