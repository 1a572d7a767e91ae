//! Black-box tests of wire protocol 1.0 against the real server binary over TCP, driven by the
//! replay agent. Each test starts its own server on a free port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use agent_webkit_testkit::{Client, ServerProcess, SseFrame, SseStream};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_agent-webkit-server");
const TOKEN: &str = "test-token";
const T: Duration = Duration::from_secs(10);

async fn server(args: &[&str]) -> (ServerProcess, Client) {
    let mut all = vec!["--agent", "replay", "--token", TOKEN];
    all.extend_from_slice(args);
    let server = ServerProcess::spawn(BIN, &all).await.unwrap();
    let client = server.client(Some(TOKEN));
    (server, client)
}

async fn status_and_json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Creates a session with `model`, opens its stream, and sends one user message.
async fn start_turn(c: &Client, model: &str, content: &str) -> (String, SseStream) {
    let id = c.create(&json!({ "model": model })).await.unwrap();
    let stream = c.stream(&id, None).await.unwrap();
    let r = c
        .input(&id, &json!({"type": "user_message", "content": content}))
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    (id, stream)
}

fn events(frames: &[SseFrame]) -> Vec<&str> {
    frames.iter().map(|f| f.event.as_str()).collect()
}

fn assert_dense(frames: &[SseFrame], first: u64) {
    let ids: Vec<u64> = frames.iter().map(|f| f.id.unwrap()).collect();
    let expected: Vec<u64> = (first..first + ids.len() as u64).collect();
    assert_eq!(ids, expected, "seqs are dense and ordered");
}

#[tokio::test]
async fn create_with_and_without_body() {
    let (_s, c) = server(&[]).await;
    for body in [
        None,
        Some("{}"),
        Some(r#"{"model":"echo","unknown_field":1}"#),
    ] {
        let mut req = c.request(reqwest::Method::POST, "/sessions");
        if let Some(body) = body {
            req = req.body(body);
        }
        let response = req.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/json");
        let text = response.text().await.unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        let id = v["session_id"].as_str().unwrap();
        assert_eq!(
            text,
            format!(r#"{{"session_id":"{id}","protocol_version":"1.0"}}"#)
        );
        let uuid: Vec<&str> = id.split('-').collect();
        assert_eq!(
            uuid.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(uuid[2].starts_with('4'), "UUID v4");
    }
}

#[tokio::test]
async fn create_rejects_bad_bodies_and_configs() {
    let (_s, c) = server(&[]).await;
    let post = |body: &'static str| {
        c.request(reqwest::Method::POST, "/sessions")
            .body(body)
            .send()
    };
    let (status, body) = status_and_json(post("{nope").await.unwrap()).await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (400, Some("Invalid JSON"))
    );
    let (status, body) = status_and_json(post(r#"{"model":5}"#).await.unwrap()).await;
    assert_eq!(status, 400);
    assert_eq!(body["detail"], "Invalid field model: expected a string");
    let (status, body) = status_and_json(post(r#"{"model":"nope"}"#).await.unwrap()).await;
    assert_eq!(status, 400);
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("read_allow") && detail.contains("echo"),
        "{detail}"
    );
    let (status, body) = status_and_json(post(r#"{"cwd":"/"}"#).await.unwrap()).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_cwd")));
    let (status, body) =
        status_and_json(post(r#"{"cwd":"/definitely/not/here"}"#).await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(body["detail"].as_str().unwrap().contains("does not exist"));
    // A cwd inside the allowed root (the server's working directory) is fine.
    let (status, _) = status_and_json(post(r#"{"cwd":"."}"#).await.unwrap()).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn session_cap_is_503_with_retry_after() {
    let (_s, c) = server(&["--max-sessions", "2"]).await;
    let a = c.create(&json!({})).await.unwrap();
    c.create(&json!({})).await.unwrap();
    let response = c.create_raw(&json!({})).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let (_, body) = status_and_json(response).await;
    assert_eq!(body["code"], "session_limit");
    assert_eq!(c.delete(&a).await.unwrap(), 204);
    c.create(&json!({})).await.unwrap();
}

/// The README walk-through: create → stream → user message → permission → result → DELETE → done.
#[tokio::test]
async fn read_allow_end_to_end() {
    let (_s, c) = server(&[]).await;
    let id = c.create(&json!({"model": "read_allow"})).await.unwrap();
    let response = c.stream_raw(&id, None).await.unwrap();
    assert_eq!(response.status(), 200);
    let h = response.headers();
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-accel-buffering"], "no");
    let mut stream = agent_webkit_testkit::SseStream::new(response);
    let ready = stream.next_event_within(T).await.unwrap().unwrap();
    assert_eq!(
        ready.raw,
        format!("id: 1\nevent: session_ready\ndata: {{\"session_id\":\"{id}\",\"protocol_version\":\"1.0\"}}\n\n")
    );
    let r = c
        .input(
            &id,
            &json!({"type": "user_message", "content": "first line?"}),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let mut frames = vec![ready];
    frames.extend(stream.until("permission_request", T).await.unwrap());
    assert_eq!(
        events(&frames),
        [
            "session_ready",
            "message_complete",
            "tool_use",
            "permission_request"
        ]
    );
    let prompt = frames.last().unwrap().json();
    assert_eq!(prompt["correlation_id"], "tu_1");
    assert_eq!(prompt["tool_name"], "Read");
    let r = c
        .input(
            &id,
            &json!({"type": "permission_response", "correlation_id": "tu_1", "behavior": "allow"}),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    frames.extend(stream.until("result", T).await.unwrap());
    assert_eq!(
        events(&frames)[4..],
        ["tool_result", "message_complete", "result"]
    );
    assert_eq!(frames[4].json()["output"], "first line");
    assert_eq!(frames[6].json()["total_cost_usd"], 0.002);
    assert_eq!(c.delete(&id).await.unwrap(), 204);
    frames.extend(stream.collect_to_end(T).await.unwrap());
    assert_eq!(frames.last().unwrap().event, "done");
    assert_eq!(frames.last().unwrap().data, "{}");
    assert_dense(&frames, 1);
    // Gone afterwards.
    assert_eq!(c.stream_raw(&id, None).await.unwrap().status(), 404);
    assert_eq!(c.delete(&id).await.unwrap(), 204, "DELETE is idempotent");
}

#[tokio::test]
async fn keepalive_comment_while_idle() {
    let (_s, c) = server(&["--keepalive", "0.2"]).await;
    let id = c.create(&json!({})).await.unwrap();
    let mut stream = c.stream(&id, None).await.unwrap();
    assert_eq!(
        stream.next_frame().await.unwrap().unwrap().event,
        "session_ready"
    );
    let frame = tokio::time::timeout(T, stream.next_frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(frame.raw, ": keepalive\n\n");
}

#[tokio::test]
async fn resume_with_last_event_id() {
    let (_s, c) = server(&[]).await;
    let (id, mut live) = start_turn(&c, "stream:5", "go").await;
    let all = live.until("result", T).await.unwrap();
    assert_eq!(all.len(), 7); // session_ready + 5 message_complete + result
                              // Resume from 3: exactly 4..=7, then tails live.
    let mut resumed = c.stream(&id, Some("3")).await.unwrap();
    let replay = resumed.until("result", T).await.unwrap();
    assert_dense(&replay, 4);
    assert_eq!(
        replay.iter().map(|f| &f.raw).collect::<Vec<_>>(),
        all[3..].iter().map(|f| &f.raw).collect::<Vec<_>>()
    );
    c.input(&id, &json!({"type": "user_message", "content": "again"}))
        .await
        .unwrap();
    let next = resumed.next_event_within(T).await.unwrap().unwrap();
    assert_eq!(next.id, Some(8));
    // Empty header = from the start.
    let mut from_start = c.stream(&id, Some("")).await.unwrap();
    assert_eq!(
        from_start.next_event_within(T).await.unwrap().unwrap().id,
        Some(1)
    );
    // Malformed → 400.
    for bad in ["abc", "-1", "1.5"] {
        let (status, body) = status_and_json(c.stream_raw(&id, Some(bad)).await.unwrap()).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(
            body["detail"],
            "Last-Event-ID must be a non-negative integer"
        );
    }
    // Future → 412.
    let (status, body) = status_and_json(c.stream_raw(&id, Some("500")).await.unwrap()).await;
    assert_eq!(status, 412);
    assert_eq!(body["code"], "evicted");
}

#[tokio::test]
async fn evicted_cursor_is_412_before_any_stream_bytes() {
    let (_s, c) = server(&["--ring-size", "5"]).await;
    let id = c.create(&json!({"model": "stream:20"})).await.unwrap();
    c.input(&id, &json!({"type": "user_message", "content": "go"}))
        .await
        .unwrap();
    // The turn has finished once a cursor at its `result` (seq 22) is accepted: until then it
    // is "ahead of the last event" (412). A live subscriber could not wait for it here: with a
    // 5-event ring and an unpaced turn it may legitimately lag and be cut off.
    let start = tokio::time::Instant::now();
    loop {
        let status = c.stream_raw(&id, Some("22")).await.unwrap().status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 412);
        assert!(start.elapsed() < T, "the turn did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // 22 events, ring of 5: oldest is 18, so cursor 17 is fine and 16 is evicted.
    let response = c.stream_raw(&id, Some("16")).await.unwrap();
    assert_eq!(response.status(), 412);
    assert_eq!(response.headers()["content-type"], "application/json");
    let (_, body) = status_and_json(response).await;
    assert_eq!(
        body["detail"],
        "Last-Event-ID 16 evicted; oldest available is 18"
    );
    let mut ok = c.stream(&id, Some("17")).await.unwrap();
    assert_eq!(ok.next_event_within(T).await.unwrap().unwrap().id, Some(18));
}

#[tokio::test]
async fn concurrent_subscribers_see_identical_sequences() {
    let (_s, c) = server(&[]).await;
    let id = c.create(&json!({"model": "stream:50"})).await.unwrap();
    let mut subs = Vec::new();
    for _ in 0..50 {
        subs.push(c.stream(&id, None).await.unwrap());
    }
    let mut quitter = c.stream(&id, None).await.unwrap();
    quitter.next_event_within(T).await.unwrap();
    drop(quitter); // one subscriber leaving disturbs nobody
    c.input(&id, &json!({"type": "user_message", "content": "go"}))
        .await
        .unwrap();
    let mut all = Vec::new();
    for mut s in subs {
        let frames = s.until("result", T).await.unwrap();
        all.push(frames.into_iter().map(|f| f.raw).collect::<Vec<_>>());
    }
    assert_eq!(all[0].len(), 52);
    assert!(
        all.iter().all(|seq| seq == &all[0]),
        "byte-identical sequences"
    );
}

#[tokio::test]
async fn every_inbound_type_is_accepted_and_reaches_the_agent() {
    let (_s, c) = server(&[]).await;
    let id = c.create(&json!({"model": "controls"})).await.unwrap();
    let mut stream = c.stream(&id, None).await.unwrap();
    for body in [
        json!({"type": "set_model", "model": "m"}),
        json!({"type": "set_model", "model": null}),
        json!({"type": "set_permission_mode", "mode": "plan"}),
        json!({"type": "stop_task", "task_id": "t1"}),
        json!({"type": "interrupt"}),
        json!({"type": "user_message", "content": [{"type": "text", "text": "hi"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}),
    ] {
        let r = c.input(&id, &body).await.unwrap();
        assert_eq!(r.status(), 204, "{body}");
    }
    let frames = stream.until("result", T).await.unwrap();
    let complete = frames
        .iter()
        .find(|f| f.event == "message_complete")
        .unwrap();
    let text = complete.json()["message"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        text,
        r#"[["set_model","m"],["set_model",null],["set_permission_mode","plan"],["stop_task","t1"],["interrupt"]]"#
    );
}

#[tokio::test]
async fn echo_runs_one_turn_at_a_time() {
    let (_s, c) = server(&[]).await;
    let id = c.create(&json!({"model": "echo"})).await.unwrap();
    let mut stream = c.stream(&id, None).await.unwrap();
    for text in ["one", "two", "three"] {
        let r = c
            .input(&id, &json!({"type": "user_message", "content": text}))
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    let mut frames = Vec::new();
    for _ in 0..3 {
        frames.extend(stream.until("result", T).await.unwrap());
    }
    assert_eq!(
        events(&frames),
        [
            "session_ready",
            "message_complete",
            "result",
            "message_complete",
            "result",
            "message_complete",
            "result"
        ]
    );
    let texts: Vec<Value> = frames
        .iter()
        .filter(|f| f.event == "message_complete")
        .map(|f| f.json()["message"]["content"][0]["text"].clone())
        .collect();
    assert_eq!(texts, [json!("one"), json!("two"), json!("three")]);
    assert_eq!(frames[1].json()["message"]["model"], "echo");
}

#[tokio::test]
async fn input_validation_errors() {
    let (_s, c) = server(&[]).await;
    let id = c.create(&json!({})).await.unwrap();
    let cases: [(&str, &str); 12] = [
        ("{nope", "Invalid JSON"),
        ("[1,2]", "Body must be a JSON object"),
        ("{}", "Missing field: type"),
        (r#"{"type":"bogus"}"#, "Unknown message type: bogus"),
        (r#"{"type":"user_message"}"#, "Missing field: content"),
        (
            r#"{"type":"permission_response","behavior":"allow"}"#,
            "Missing field: correlation_id",
        ),
        (
            r#"{"type":"permission_response","correlation_id":"c"}"#,
            "Missing field: behavior",
        ),
        (
            r#"{"type":"permission_response","correlation_id":"c","behavior":"maybe"}"#,
            "Invalid field behavior: expected \"allow\" or \"deny\"",
        ),
        (
            r#"{"type":"permission_response","correlation_id":"c","behavior":"allow","interrupt":true}"#,
            "interrupt is only valid with behavior \"deny\"",
        ),
        (
            r#"{"type":"question_response","correlation_id":"c"}"#,
            "Missing field: answers",
        ),
        (r#"{"type":"set_permission_mode"}"#, "Missing field: mode"),
        (r#"{"type":"stop_task"}"#, "Missing field: task_id"),
    ];
    for (body, detail) in cases {
        let (status, v) = status_and_json(c.input_raw(&id, body).await.unwrap()).await;
        assert_eq!(
            (status, v["detail"].as_str()),
            (400, Some(detail)),
            "{body}"
        );
    }
}

#[tokio::test]
async fn unknown_sessions_routes_and_methods() {
    let (_s, c) = server(&[]).await;
    let (status, body) = status_and_json(c.stream_raw("nope", None).await.unwrap()).await;
    assert_eq!(
        (status, body),
        (404, json!({"detail": "Session not found"}))
    );
    let (status, body) = status_and_json(
        c.input("nope", &json!({"type": "interrupt"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body),
        (404, json!({"detail": "Session not found"}))
    );
    assert_eq!(c.delete("nope").await.unwrap(), 204);
    let r = c
        .request(reqwest::Method::GET, "/nowhere")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .request(reqwest::Method::GET, "/sessions")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let r = c
        .request(reqwest::Method::GET, "/healthz")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let anonymous = c.with_token(None);
    let r = anonymous
        .request(reqwest::Method::GET, "/healthz")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "health needs no token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_reply_wins_under_concurrency() {
    let (_s, c) = server(&[]).await;
    let (id, mut stream) = start_turn(&c, "read_allow", "go").await;
    stream.until("permission_request", T).await.unwrap();
    let reply =
        json!({"type": "permission_response", "correlation_id": "tu_1", "behavior": "allow"});
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let c = c.clone();
            let id = id.clone();
            let reply = reply.clone();
            tokio::spawn(async move { c.input(&id, &reply).await.unwrap().status().as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 204).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 19);
    let r = c
        .input(
            &id,
            &json!({"type": "permission_response", "correlation_id": "never", "behavior": "deny"}),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    stream.until("result", T).await.unwrap();
}

#[tokio::test]
async fn question_round_trip_and_kind_mismatch() {
    let (_s, c) = server(&[]).await;
    let (id, mut stream) = start_turn(&c, "fixture:ask_user_question", "ask me").await;
    let frames = stream.until("ask_user_question", T).await.unwrap();
    let q = frames.last().unwrap().json();
    assert_eq!(q["correlation_id"], "tu_q");
    assert_eq!(q["questions"]["questions"][0]["question"], "Pick a color");
    // A permission_response to a question is a conflict.
    let r = c
        .input(
            &id,
            &json!({"type": "permission_response", "correlation_id": "tu_q", "behavior": "allow"}),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = c
        .input(&id, &json!({"type": "question_response", "correlation_id": "tu_q", "answers": {"Pick a color": "red"}}))
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let rest = stream.until("result", T).await.unwrap();
    assert_eq!(events(&rest), ["message_complete", "result"]);
}

#[tokio::test]
async fn deny_with_interrupt_and_interrupt_mid_stream() {
    let (_s, c) = server(&[]).await;
    let (id, mut stream) = start_turn(&c, "deny_with_interrupt", "rm").await;
    stream.until("permission_request", T).await.unwrap();
    let r = c
        .input(&id, &json!({"type": "permission_response", "correlation_id": "tu_1", "behavior": "deny", "message": "no", "interrupt": true}))
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let rest = stream.until("result", T).await.unwrap();
    assert_eq!(rest.last().unwrap().json()["subtype"], "interrupted");

    // An interrupt ends a long turn at once with one `interrupted` result.
    let (id, mut stream) = start_turn(&c, "stream:1000:5", "go").await;
    stream.until("message_complete", T).await.unwrap();
    assert_eq!(
        c.input(&id, &json!({"type": "interrupt"}))
            .await
            .unwrap()
            .status(),
        204
    );
    let rest = stream.until("result", T).await.unwrap();
    assert_eq!(rest.last().unwrap().json()["subtype"], "interrupted");
    assert!(
        rest.len() < 900,
        "the turn ended early ({} events)",
        rest.len()
    );
    // The session still works: the next turn runs.
    c.input(&id, &json!({"type": "user_message", "content": "again"}))
        .await
        .unwrap();
    stream.until("message_complete", T).await.unwrap();
}

#[tokio::test]
async fn permission_withdrawn_on_interrupt_is_announced() {
    let (_s, c) = server(&[]).await;
    let (id, mut stream) = start_turn(&c, "read_allow", "go").await;
    stream.until("permission_request", T).await.unwrap();
    c.input(&id, &json!({"type": "interrupt"})).await.unwrap();
    let rest = stream.until("result", T).await.unwrap();
    assert_eq!(events(&rest), ["error", "result"]);
    let err = rest[0].json();
    assert_eq!(err["code"], "permission_cancelled");
    assert_eq!(err["correlation_id"], "tu_1");
    let r = c
        .input(
            &id,
            &json!({"type": "permission_response", "correlation_id": "tu_1", "behavior": "allow"}),
        )
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        409,
        "a withdrawn prompt can no longer be answered"
    );
}

#[tokio::test]
async fn body_limit_is_413() {
    let (_s, c) = server(&["--max-body-bytes", "1024"]).await;
    let id = c.create(&json!({})).await.unwrap();
    let big = format!(
        r#"{{"type":"user_message","content":"{}"}}"#,
        "x".repeat(2000)
    );
    let (status, body) = status_and_json(c.input_raw(&id, big.clone()).await.unwrap()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    let r = c
        .request(reqwest::Method::POST, "/sessions")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Chunked (no Content-Length) is limited while reading, too.
    let chunks: Vec<Result<String, std::io::Error>> =
        (0..20).map(|_| Ok("x".repeat(100))).collect();
    let r = c
        .input_raw(
            &id,
            reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let ok = format!(
        r#"{{"type":"user_message","content":"{}"}}"#,
        "x".repeat(900)
    );
    assert_eq!(c.input_raw(&id, ok).await.unwrap().status(), 204);
}

#[tokio::test]
async fn auth_variants() {
    let (s, c) = server(&[]).await;
    let anonymous = c.with_token(None);
    let r = anonymous.create_raw(&json!({})).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        status_and_json(r).await.1,
        json!({"detail": "Missing bearer token"})
    );
    let wrong = c.with_token(Some("nope"));
    let (status, body) = status_and_json(wrong.create_raw(&json!({})).await.unwrap()).await;
    assert_eq!((status, body), (401, json!({"detail": "Invalid token"})));
    let basic = anonymous
        .request(reqwest::Method::POST, "/sessions")
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    // Auth is checked before the session lookup.
    let r = wrong.stream_raw("nope", None).await.unwrap();
    assert_eq!(r.status(), 401);
    drop(s);

    let open = ServerProcess::spawn(BIN, &["--agent", "replay", "--no-auth"])
        .await
        .unwrap();
    assert_eq!(
        open.client(None)
            .create_raw(&json!({}))
            .await
            .unwrap()
            .status(),
        200
    );
    let legacy = ServerProcess::spawn_with_env(
        BIN,
        &["--agent", "replay"],
        &[("AGENT_WEBKIT_TOKEN", "old")],
    )
    .await
    .unwrap();
    assert_eq!(
        legacy
            .client(Some("old"))
            .create_raw(&json!({}))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        legacy
            .client(None)
            .create_raw(&json!({}))
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn auth_enabled_without_token_refuses_to_start() {
    let output = tokio::process::Command::new(BIN)
        .args(["--port", "0"])
        .env_remove("AGENT_WEBKIT_AUTH_TOKEN")
        .env_remove("AGENT_WEBKIT_TOKEN")
        .env_remove("AGENT_WEBKIT_NO_AUTH")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("AGENT_WEBKIT_AUTH_TOKEN"), "{stderr}");
}

#[tokio::test]
async fn backpressure_is_503_with_retry_after() {
    let (_s, c) = server(&[]).await;
    // Each turn takes ~2 s, so the queue cannot drain while we fill it.
    let id = c.create(&json!({"model": "stream:20:100"})).await.unwrap();
    let mut stream = c.stream(&id, None).await.unwrap();
    let msg = json!({"type": "user_message", "content": "go"});
    assert_eq!(c.input(&id, &msg).await.unwrap().status(), 204);
    // The first message has left the queue once its turn produces output.
    stream.until("message_complete", T).await.unwrap();
    for i in 0..128 {
        assert_eq!(
            c.input(&id, &msg).await.unwrap().status(),
            204,
            "message {i}"
        );
    }
    let r = c.input(&id, &msg).await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let (_, body) = status_and_json(r).await;
    assert_eq!(body["code"], "backpressure");
    assert!(body["detail"].as_str().unwrap().contains("128"));
    // Controls still work while the queue is full.
    assert_eq!(
        c.input(&id, &json!({"type": "interrupt"}))
            .await
            .unwrap()
            .status(),
        204
    );
}

#[tokio::test]
async fn delete_ends_every_stream_with_done() {
    let (_s, c) = server(&[]).await;
    let id = c.create(&json!({})).await.unwrap();
    let mut a = c.stream(&id, None).await.unwrap();
    let mut b = c.stream(&id, None).await.unwrap();
    a.next_event_within(T).await.unwrap();
    b.next_event_within(T).await.unwrap();
    assert_eq!(c.delete(&id).await.unwrap(), 204);
    for s in [&mut a, &mut b] {
        let rest = s.collect_to_end(T).await.unwrap();
        assert_eq!(events(&rest), ["done"]);
        assert_eq!(rest[0].id, Some(2));
    }
    assert_eq!(c.delete(&id).await.unwrap(), 204);
    let r = c.input(&id, &json!({"type": "interrupt"})).await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn crashed_agent_yields_error_then_done_and_is_removed() {
    let (_s, c) = server(&[]).await;
    let (id, mut stream) = start_turn(&c, "crash", "boom").await;
    let frames = stream.collect_to_end(T).await.unwrap();
    assert_eq!(events(&frames), ["session_ready", "error", "done"]);
    assert_eq!(frames[1].json()["code"], "agent_exited");
    assert!(frames[1].json()["message"]
        .as_str()
        .unwrap()
        .contains("crash"));
    assert_eq!(c.stream_raw(&id, None).await.unwrap().status(), 404);
}

/// Polls until the session is gone (stream answers 404), or the deadline passes. Each probe
/// that finds the session subscribes and leaves, which counts as activity, so probes are spaced
/// wider than the idle timeout (the reaper runs every idle_timeout / 4).
async fn wait_gone(c: &Client, id: &str) -> bool {
    let start = tokio::time::Instant::now();
    while start.elapsed() < T {
        if c.stream_raw(id, None).await.unwrap().status() == 404 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

#[tokio::test]
async fn idle_eviction_respects_live_subscribers() {
    let (_s, c) = server(&["--idle-timeout", "0.3"]).await;
    let lonely = c.create(&json!({})).await.unwrap();
    assert!(
        wait_gone(&c, &lonely).await,
        "an idle session without subscribers is evicted"
    );

    let watched = c.create(&json!({})).await.unwrap();
    let mut sub = c.stream(&watched, None).await.unwrap();
    sub.next_event_within(T).await.unwrap();
    // Bounded wait for something that must NOT happen: while subscribed, the session is not
    // evicted, so no `done` arrives within 4 idle timeouts.
    let ended = tokio::time::timeout(Duration::from_millis(1200), sub.next_event()).await;
    assert!(
        ended.is_err(),
        "no event (no done) while subscribed: {ended:?}"
    );
    // Still alive and accepting input.
    let r = c
        .input(&watched, &json!({"type": "set_model", "model": "m"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    drop(sub);
    assert!(
        wait_gone(&c, &watched).await,
        "evicted once the subscriber left"
    );
}

#[tokio::test]
async fn sigterm_ends_streams_with_done_and_exits_cleanly() {
    let (mut s, c) = server(&[]).await;
    let id = c.create(&json!({})).await.unwrap();
    let mut stream = c.stream(&id, None).await.unwrap();
    stream.next_event_within(T).await.unwrap();
    let status = s.terminate(T).await.unwrap().expect("exited in time");
    let rest = stream.collect_to_end(T).await.unwrap();
    assert_eq!(events(&rest), ["done"]);
    assert!(status.success(), "{status:?}");
}
