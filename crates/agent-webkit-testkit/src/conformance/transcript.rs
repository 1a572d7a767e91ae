//! A scripted exchange recorded with byte-level detail, for comparing adapters.

use reqwest::Method;
use serde_json::json;

use super::{Agent, Reply, Server, Target, T};
use crate::{Result, SseFrame, SseStream, TestkitError};

/// Response headers whose values are part of the contract (or would betray buffering).
const HEADERS: &[&str] = &[
    "content-type",
    "cache-control",
    "x-accel-buffering",
    "retry-after",
    "www-authenticate",
    "allow",
    "content-encoding",
];

#[derive(Clone, Copy)]
enum Framing {
    Length,
    Chunked,
}

struct Recorder {
    lines: Vec<String>,
    sessions: Vec<String>,
    root: String,
}

impl Recorder {
    fn normalise(&self, text: &str) -> String {
        let mut out = text.replace(&self.root, "<root>");
        for (i, id) in self.sessions.iter().enumerate() {
            out = out.replace(id, &format!("<session-{i}>"));
        }
        out
    }

    fn session(&mut self, id: &str) {
        if !self.sessions.iter().any(|s| s == id) {
            self.sessions.push(id.to_owned());
        }
    }

    fn line(&mut self, text: String) {
        let text = self.normalise(&text);
        self.lines.push(text);
    }

    fn head(&mut self, label: &str, response: &reqwest::Response) {
        let mut line = format!("{label} -> {}", response.status().as_u16());
        for name in HEADERS {
            for value in response.headers().get_all(*name) {
                line.push_str(&format!(
                    " | {name}: {}",
                    String::from_utf8_lossy(value.as_bytes())
                ));
            }
        }
        self.line(line);
    }

    async fn reply(&mut self, label: &str, response: reqwest::Response) -> Result<Reply> {
        self.head(label, &response);
        let reply = Reply::read(response).await?;
        if let Some(id) = reply.json()["session_id"].as_str() {
            self.session(id);
        }
        self.line(format!("  body {:?}", reply.body));
        Ok(reply)
    }

    async fn stream(&mut self, label: &str, response: reqwest::Response) -> Result<SseStream> {
        self.head(label, &response);
        if response.status() != 200 {
            let body = response.text().await?;
            self.line(format!("  body {body:?}"));
            return Err(TestkitError::Unexpected(format!("{label}: {body}")));
        }
        Ok(SseStream::new(response))
    }

    /// A request over a raw connection: records the response and what the connection did
    /// afterwards.
    async fn raw(
        &mut self,
        server: &Server,
        label: &str,
        path: &str,
        framing: Framing,
        body: &[u8],
    ) -> Result<()> {
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: conformance\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\n",
            super::TOKEN
        );
        let mut payload = Vec::new();
        match framing {
            Framing::Length => {
                head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
                payload.extend_from_slice(body);
            }
            Framing::Chunked => {
                head.push_str("Transfer-Encoding: chunked\r\n\r\n");
                for chunk in body.chunks(100) {
                    payload.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    payload.extend_from_slice(chunk);
                    payload.extend_from_slice(b"\r\n");
                }
                payload.extend_from_slice(b"0\r\n\r\n");
            }
        }
        let (response, after) =
            super::raw_exchange(&server.process.base_url, &head, &payload).await?;
        let mut line = format!("{label} (raw) -> {}", response.status);
        for name in HEADERS.iter().chain(["connection"].iter()) {
            if let Some(value) = response.header(name) {
                line.push_str(&format!(" | {name}: {value}"));
            }
        }
        self.line(line);
        self.line(format!("  body {:?}", response.body));
        self.line(format!("  then the connection is {after}"));
        Ok(())
    }

    fn frames(&mut self, label: &str, frames: &[SseFrame]) {
        for frame in frames {
            self.line(format!("  {label} {:?}", frame.raw));
        }
    }
}

async fn post_raw(server: &Server, path: &str, body: Option<&str>) -> Result<reqwest::Response> {
    let mut request = server.client.request(Method::POST, path);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    Ok(request.send().await?)
}

/// Runs one scripted exchange (auth, routing, create, stream, every input type and error,
/// resume, keepalive, limits, backpressure, session cap, crash, DELETE) against a fresh replay
/// server and returns its transcript: one line per response (status, the headers that
/// matter, body) and one per SSE frame (exact bytes), with session ids and the
/// temporary root normalised. Two adapters that answer identically produce identical
/// transcripts.
pub async fn transcript(target: &Target) -> Result<Vec<String>> {
    if target.agent != Agent::Replay {
        return Err(TestkitError::Unexpected(
            "transcripts need the replay agent (the fake CLI's ids and timings vary)".into(),
        ));
    }
    let server = target
        .start(&[
            "--keepalive",
            "0.3",
            "--max-body-bytes",
            "4096",
            "--max-sessions",
            "6",
        ])
        .await?;
    let root = std::path::Path::new(server.work_dir())
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut rec = Recorder {
        lines: Vec::new(),
        sessions: Vec::new(),
        root,
    };
    let c = server.client.clone();
    let anonymous = server.anonymous();
    let wrong = c.with_token(Some("wrong"));
    let work = server.work_dir().to_owned();

    // Routing and auth.
    rec.reply(
        "GET /healthz (anonymous)",
        anonymous.request(Method::GET, "/healthz").send().await?,
    )
    .await?;
    rec.reply(
        "POST /sessions (anonymous)",
        anonymous.create_raw(&json!({})).await?,
    )
    .await?;
    rec.reply(
        "POST /sessions (wrong token)",
        wrong.create_raw(&json!({})).await?,
    )
    .await?;
    rec.reply(
        "POST /sessions (Basic)",
        anonymous
            .request(Method::POST, "/sessions")
            .header("authorization", "Basic dXNlcjpwYXNz")
            .send()
            .await?,
    )
    .await?;
    rec.reply(
        "GET /sessions/nope/stream (wrong token)",
        wrong.stream_raw("nope", None).await?,
    )
    .await?;
    for (method, path) in [
        (Method::GET, "/nowhere"),
        (Method::GET, "/sessions"),
        (Method::POST, "/healthz"),
        (Method::POST, "/sessions/x/stream"),
        (Method::GET, "/sessions/x/input"),
        (Method::PUT, "/sessions/x"),
    ] {
        rec.reply(
            &format!("{method} {path}"),
            c.request(method.clone(), path).send().await?,
        )
        .await?;
    }
    rec.reply(
        "GET /sessions/nope/stream",
        c.stream_raw("nope", None).await?,
    )
    .await?;
    rec.reply(
        "POST /sessions/nope/input",
        c.input("nope", &json!({"type": "interrupt"})).await?,
    )
    .await?;
    rec.reply(
        "DELETE /sessions/nope",
        c.request(Method::DELETE, "/sessions/nope").send().await?,
    )
    .await?;

    // Create.
    let mut created = Vec::new();
    for body in [None, Some("{}"), Some(r#"{"model":"echo","unknown":[1]}"#)] {
        let reply = rec
            .reply(
                &format!("POST /sessions {body:?}"),
                post_raw(&server, "/sessions", body).await?,
            )
            .await?;
        created.extend(reply.json()["session_id"].as_str().map(str::to_owned));
    }
    for body in [
        "{nope",
        r#"{"model":5}"#,
        "[1]",
        r#"{"model":"nope"}"#,
        r#"{"cwd":"/"}"#,
        r#"{"cwd":"/definitely/not/here"}"#,
    ] {
        rec.reply(
            &format!("POST /sessions {body}"),
            post_raw(&server, "/sessions", Some(body)).await?,
        )
        .await?;
    }
    let big = format!(r#"{{"model":"{}"}}"#, "x".repeat(5000));
    rec.raw(
        &server,
        "POST /sessions (5 KB)",
        "/sessions",
        Framing::Length,
        big.as_bytes(),
    )
    .await?;
    for id in &created {
        rec.reply(
            "DELETE /sessions/<created>",
            c.request(Method::DELETE, &format!("/sessions/{id}"))
                .send()
                .await?,
        )
        .await?;
    }

    // A permission round trip, with every input error on the way.
    let a = c
        .create(&json!({"model": "read_allow", "cwd": work}))
        .await?;
    rec.session(&a);
    let mut sa = rec
        .stream("GET /sessions/A/stream", c.stream_raw(&a, None).await?)
        .await?;
    let first = super::next_event(&mut sa).await?;
    rec.frames("A", &[first]);
    rec.reply(
        "POST input A user_message",
        c.input(
            &a,
            &json!({"type": "user_message", "content": "first line?"}),
        )
        .await?,
    )
    .await?;
    let frames = sa.until("permission_request", T).await?;
    rec.frames("A", &frames);
    for body in [
        "{nope",
        "[1]",
        "{}",
        r#"{"type":"bogus"}"#,
        r#"{"type":"user_message"}"#,
        r#"{"type":"user_message","content":5}"#,
        r#"{"type":"permission_response","behavior":"allow"}"#,
        r#"{"type":"permission_response","correlation_id":"tu_1"}"#,
        r#"{"type":"permission_response","correlation_id":"tu_1","behavior":"maybe"}"#,
        r#"{"type":"permission_response","correlation_id":"tu_1","behavior":"allow","interrupt":true}"#,
        r#"{"type":"question_response","correlation_id":"tu_1"}"#,
        r#"{"type":"set_permission_mode"}"#,
        r#"{"type":"stop_task"}"#,
        r#"{"type":"hook_decision_response","correlation_id":"h"}"#,
        r#"{"type":"permission_response","correlation_id":"never","behavior":"deny"}"#,
        r#"{"type":"question_response","correlation_id":"tu_1","answers":{}}"#,
        r#"{"type":"hook_decision_response","correlation_id":"h","decision":{}}"#,
    ] {
        rec.reply(
            &format!("POST input A {body}"),
            c.input_raw(&a, body).await?,
        )
        .await?;
    }
    let allow =
        json!({"type": "permission_response", "correlation_id": "tu_1", "behavior": "allow"});
    rec.reply("POST input A allow", c.input(&a, &allow).await?)
        .await?;
    rec.reply("POST input A allow again", c.input(&a, &allow).await?)
        .await?;
    let frames = sa.until("result", T).await?;
    rec.frames("A", &frames);

    // Resume.
    let mut resumed = rec
        .stream(
            "GET /sessions/A/stream Last-Event-ID: 3",
            c.stream_raw(&a, Some("3")).await?,
        )
        .await?;
    let frames = resumed.until("result", T).await?;
    rec.frames("A resumed", &frames);
    drop(resumed);
    for cursor in ["abc", "", "999"] {
        let response = c.stream_raw(&a, Some(cursor)).await?;
        if response.status() == 200 {
            let mut stream = rec
                .stream(&format!("GET A stream Last-Event-ID: {cursor:?}"), response)
                .await?;
            let first = super::next_event(&mut stream).await?;
            rec.frames("A from start", &[first]);
        } else {
            rec.reply(&format!("GET A stream Last-Event-ID: {cursor:?}"), response)
                .await?;
        }
    }

    // A question.
    let q = c
        .create(&json!({"model": "ask_user_question", "cwd": work}))
        .await?;
    rec.session(&q);
    let mut sq = rec
        .stream("GET /sessions/Q/stream", c.stream_raw(&q, None).await?)
        .await?;
    c.input(&q, &json!({"type": "user_message", "content": "ask me"}))
        .await?;
    let frames = sq.until("ask_user_question", T).await?;
    rec.frames("Q", &frames);
    let answer = json!({"type": "question_response", "correlation_id": "tu_q",
                        "answers": {"Pick a color": "red"}});
    rec.reply(
        "POST input Q permission_response",
        c.input(
            &q,
            &json!({"type": "permission_response", "correlation_id": "tu_q", "behavior": "allow"}),
        )
        .await?,
    )
    .await?;
    rec.reply("POST input Q answer", c.input(&q, &answer).await?)
        .await?;
    let frames = sq.until("result", T).await?;
    rec.frames("Q", &frames);

    // Echo: keepalive, controls, blocks, limits.
    let e = c.create(&json!({"model": "echo", "cwd": work})).await?;
    rec.session(&e);
    let mut se = rec
        .stream("GET /sessions/E/stream", c.stream_raw(&e, None).await?)
        .await?;
    for _ in 0..2 {
        let frame = tokio::time::timeout(T, se.next_frame())
            .await
            .map_err(|_| TestkitError::Timeout("keepalive".into()))??
            .ok_or_else(|| TestkitError::Unexpected("stream ended".into()))?;
        rec.frames("E", &[frame]);
    }
    for body in [
        json!({"type": "set_model", "model": "m2"}),
        json!({"type": "set_model", "model": null}),
        json!({"type": "set_permission_mode", "mode": "plan"}),
        json!({"type": "stop_task", "task_id": "t1"}),
        json!({"type": "interrupt"}),
        json!({"type": "user_message", "content": "hello"}),
        json!({"type": "user_message", "content": [{"type": "text", "text": "hi"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}),
    ] {
        rec.reply(&format!("POST input E {body}"), c.input(&e, &body).await?)
            .await?;
    }
    for _ in 0..2 {
        let frames = se.until("result", T).await?;
        rec.frames("E", &frames);
    }
    let path = format!("/sessions/{e}/input");
    let chunk = format!(r#"{{"type":"interrupt","x":"{}"}}"#, "x".repeat(5000));
    rec.raw(
        &server,
        "POST input E 5 KB",
        &path,
        Framing::Length,
        chunk.as_bytes(),
    )
    .await?;
    rec.raw(
        &server,
        "POST input E chunked 5 KB",
        &path,
        Framing::Chunked,
        chunk.as_bytes(),
    )
    .await?;

    // Backpressure.
    let l = c
        .create(&json!({"model": "stream:100000:5", "cwd": work}))
        .await?;
    rec.session(&l);
    let mut sl = c.stream(&l, None).await?;
    let go = json!({"type": "user_message", "content": "go"});
    c.input(&l, &go).await?;
    sl.until("message_complete", T).await?;
    let mut accepted = 0;
    for _ in 0..128 {
        if c.input(&l, &go).await?.status() == 204 {
            accepted += 1;
        }
    }
    rec.line(format!("queued while a turn runs: {accepted}"));
    rec.reply("POST input L (queue full)", c.input(&l, &go).await?)
        .await?;
    rec.reply(
        "POST input L interrupt",
        c.input(&l, &json!({"type": "interrupt"})).await?,
    )
    .await?;
    drop(sl);

    // Session cap: A, Q, E, L are live; the cap is 6.
    let mut extra = Vec::new();
    loop {
        let response = c.create_raw(&json!({"cwd": work})).await?;
        if response.status() != 200 {
            rec.line(format!("created before the cap: {}", extra.len()));
            rec.reply("POST /sessions (cap)", response).await?;
            break;
        }
        let reply = Reply::read(response).await?;
        extra.extend(reply.json()["session_id"].as_str().map(str::to_owned));
        if extra.len() > 6 {
            return Err(TestkitError::Unexpected("no session cap".into()));
        }
    }
    for id in &extra {
        c.delete(id).await?;
    }

    // A crash.
    let x = c.create(&json!({"model": "crash", "cwd": work})).await?;
    rec.session(&x);
    let mut sx = rec
        .stream("GET /sessions/X/stream", c.stream_raw(&x, None).await?)
        .await?;
    c.input(&x, &json!({"type": "user_message", "content": "boom"}))
        .await?;
    let frames = sx.collect_to_end(T).await?;
    rec.frames("X", &frames);
    let mut replay = rec
        .stream(
            "GET /sessions/X/stream (ended)",
            c.stream_raw(&x, None).await?,
        )
        .await?;
    let frames = replay.collect_to_end(T).await?;
    rec.frames("X (ended)", &frames);
    rec.reply(
        "POST input X (ended)",
        c.input(&x, &json!({"type": "interrupt"})).await?,
    )
    .await?;

    // DELETE ends the live streams.
    for (name, id, stream) in [("A", &a, &mut sa), ("E", &e, &mut se)] {
        rec.reply(
            &format!("DELETE /sessions/{name}"),
            c.request(Method::DELETE, &format!("/sessions/{id}"))
                .send()
                .await?,
        )
        .await?;
        let frames = stream.collect_to_end(T).await?;
        rec.frames(name, &frames);
        rec.reply(
            &format!("POST input {name} (deleted)"),
            c.input(id, &json!({"type": "interrupt"})).await?,
        )
        .await?;
    }
    rec.line(format!("sessions seen: {}", rec.sessions.len()));
    Ok(rec.lines)
}
