//! `POST /sessions/{id}/input`: every inbound type, validation, conflicts, limits, queueing.

use serde_json::{json, Value};

use super::{agent_output, complete_text, events, next_event, Agent, Reply, Server, Target, T};
use crate::{Result, SseFrame, TestkitError};

fn find<'a>(frames: &'a [SseFrame], event: &str) -> Result<&'a SseFrame> {
    frames
        .iter()
        .find(|f| f.event == event)
        .ok_or_else(|| TestkitError::Unexpected(format!("no {event} in {:?}", events(frames))))
}

fn last_json(frames: &[SseFrame]) -> Value {
    frames.last().map(SseFrame::json).unwrap_or(Value::Null)
}

/// `user_message` with a string and with content blocks (text + base64 image): 204, and each
/// runs a turn that ends with `result`.
pub async fn check_user_message_string_and_blocks(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let turn = target.echo_turn("plain text");
    let (id, mut stream) = server.start_turn(&turn).await?;
    let frames = stream.until("result", T).await?;
    let complete = find(&frames, "message_complete")?;
    ensure_eq!(
        complete_text(complete),
        Some(target.echo_reply("plain text"))
    );
    let blocks = json!({"type": "user_message", "content": [
        {"type": "text", "text": "look at this"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "iVBORw0KGgo="}}]});
    let reply = server.input(&id, &blocks).await?;
    ensure_eq!(reply.status, 204, "blocks: {}", reply.body);
    ensure_eq!(reply.body, "", "204 has no body");
    let frames = stream.until("result", T).await?;
    let text = complete_text(find(&frames, "message_complete")?).unwrap_or_default();
    ensure!(
        text.contains("look at this"),
        "the blocks reached the agent: {text:?}"
    );
    Ok(())
}

/// `set_model` (string and null), `set_permission_mode`, `stop_task` and `interrupt` without
/// a running turn are 204, and the session keeps working.
pub async fn check_controls_accepted(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let turn = target.echo_turn("after controls");
    let (id, mut stream) = server.open(&turn).await?;
    for body in [
        json!({"type": "set_model", "model": "claude-x"}),
        json!({"type": "set_model", "model": null}),
        json!({"type": "set_model"}),
        json!({"type": "set_permission_mode", "mode": "plan"}),
        json!({"type": "set_permission_mode", "mode": "default"}),
        json!({"type": "stop_task", "task_id": "t1"}),
        json!({"type": "interrupt"}),
        json!({"type": "interrupt", "extra": "ignored"}),
    ] {
        let reply = server.input(&id, &body).await?;
        ensure_eq!(reply.status, 204, "{body}: {}", reply.body);
    }
    server.send(&id, &turn).await?;
    let frames = stream.until("result", T).await?;
    ensure_eq!(
        complete_text(find(&frames, "message_complete")?),
        Some(target.echo_reply("after controls"))
    );
    Ok(())
}

/// Replay only: control messages reach the agent in order (the `controls` scenario reports
/// them).
pub async fn check_controls_reach_agent(target: &Target) -> Result<()> {
    if target.agent != Agent::Replay {
        return target.skip(
            "check_controls_reach_agent",
            "only the replay `controls` scenario reports the control calls it received; the fake CLI's are covered by the bridge tests",
        );
    }
    let server = target.start(&[]).await?;
    let id = server
        .client
        .create(&json!({"model": "controls", "cwd": server.work_dir()}))
        .await?;
    let mut stream = server.client.stream(&id, None).await?;
    for body in [
        json!({"type": "set_model", "model": "m"}),
        json!({"type": "set_model", "model": null}),
        json!({"type": "set_permission_mode", "mode": "plan"}),
        json!({"type": "stop_task", "task_id": "t1"}),
        json!({"type": "interrupt"}),
        json!({"type": "user_message", "content": "report"}),
    ] {
        let reply = server.input(&id, &body).await?;
        ensure_eq!(reply.status, 204, "{body}");
    }
    let frames = stream.until("result", T).await?;
    ensure_eq!(
        complete_text(find(&frames, "message_complete")?).as_deref(),
        Some(
            r#"[["set_model","m"],["set_model",null],["set_permission_mode","plan"],["stop_task","t1"],["interrupt"]]"#
        )
    );
    Ok(())
}

/// Waits for the turn's `permission_request` and checks its shape; returns its correlation id.
pub(super) async fn permission_prompt(stream: &mut crate::SseStream) -> Result<String> {
    let frames = stream.until("permission_request", T).await?;
    let prompt = last_json(&frames);
    let corr = prompt["correlation_id"]
        .as_str()
        .ok_or_else(|| TestkitError::Unexpected(format!("no correlation_id: {prompt}")))?
        .to_owned();
    ensure!(prompt["tool_name"].is_string(), "tool_name: {prompt}");
    ensure!(prompt["input"].is_object(), "input: {prompt}");
    ensure!(prompt.get("context").is_some(), "context: {prompt}");
    let tool_use = find(&frames, "tool_use")?.json();
    ensure_eq!(
        tool_use["tool_use_id"].as_str(),
        Some(corr.as_str()),
        "correlation_id is the tool_use_id"
    );
    ensure_eq!(tool_use["tool_name"], prompt["tool_name"]);
    Ok(corr)
}

/// `permission_response` allow: 204, the tool runs (`tool_result` for the same id), the turn
/// ends; a second answer is 409.
pub async fn check_permission_allow(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let (id, mut stream) = server.start_turn(&target.permission_turn()).await?;
    let corr = permission_prompt(&mut stream).await?;
    let allow = json!({"type": "permission_response", "correlation_id": corr, "behavior": "allow",
                       "updated_permissions": []});
    let reply = server.input(&id, &allow).await?;
    ensure_eq!(reply.status, 204, "allow: {}", reply.body);
    server
        .input(&id, &allow)
        .await?
        .expect_error_code(409, Some("conflict"))?;
    let frames = stream.until("result", T).await?;
    let result = find(&frames, "tool_result")?.json();
    ensure_eq!(result["tool_use_id"].as_str(), Some(corr.as_str()));
    ensure_eq!(result["is_error"], json!(false));
    Ok(())
}

/// `permission_response` deny (with `message`): 204 and the turn ends; deny with
/// `interrupt: true` aborts the turn (an interrupted `result`).
pub async fn check_permission_deny(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let (id, mut stream) = server.start_turn(&target.permission_turn()).await?;
    let corr = permission_prompt(&mut stream).await?;
    let deny = json!({"type": "permission_response", "correlation_id": corr, "behavior": "deny",
                      "message": "not now"});
    ensure_eq!(server.input(&id, &deny).await?.status, 204);
    stream.until("result", T).await?;

    let (id, mut stream) = server.start_turn(&target.deny_interrupt_turn()).await?;
    let corr = permission_prompt(&mut stream).await?;
    let deny = json!({"type": "permission_response", "correlation_id": corr, "behavior": "deny",
                      "message": "no", "interrupt": true});
    ensure_eq!(server.input(&id, &deny).await?.status, 204);
    let frames = stream.until("result", T).await?;
    ensure_eq!(
        last_json(&frames)["subtype"].as_str(),
        Some(target.interrupted_subtype()),
        "deny+interrupt aborts the turn"
    );
    Ok(())
}

/// `ask_user_question` → `question_response`: 204 and the turn ends; a `permission_response`
/// to a question and a second answer are 409.
pub async fn check_question_round_trip(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let (id, mut stream) = server.start_turn(&target.question_turn()).await?;
    let frames = stream.until("ask_user_question", T).await?;
    let ask = last_json(&frames);
    let corr = ask["correlation_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let tool_use = find(&frames, "tool_use")?.json();
    ensure_eq!(tool_use["tool_use_id"].as_str(), Some(corr.as_str()));
    ensure_eq!(tool_use["tool_name"], json!("AskUserQuestion"));
    let question = &ask["questions"]["questions"][0];
    let text = question["question"].as_str().unwrap_or_default().to_owned();
    let option = question["options"][0]["label"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    ensure!(
        !text.is_empty() && !option.is_empty(),
        "questions is the AskUserQuestion input: {ask}"
    );
    let wrong_kind =
        json!({"type": "permission_response", "correlation_id": corr, "behavior": "allow"});
    server
        .input(&id, &wrong_kind)
        .await?
        .expect_error_code(409, Some("conflict"))?;
    let answer = json!({"type": "question_response", "correlation_id": corr,
                        "answers": {text: option}});
    ensure_eq!(server.input(&id, &answer).await?.status, 204);
    server
        .input(&id, &answer)
        .await?
        .expect_error_code(409, Some("conflict"))?;
    let rest = stream.until("result", T).await?;
    ensure!(
        rest.iter().any(|f| f.event == "message_complete"),
        "the turn continued: {:?}",
        events(&rest)
    );
    Ok(())
}

/// `hook_decision_response` (ours): 409 when nothing is pending; 400 when `decision` is
/// missing or not an object.
pub async fn check_hook_decision_response(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let id = server.create(&target.echo_turn("x")).await?;
    server
        .input(
            &id,
            &json!({"type": "hook_decision_response", "correlation_id": "nope", "decision": {}}),
        )
        .await?
        .expect_error_code(409, Some("conflict"))?;
    let cases = [
        (
            json!({"type": "hook_decision_response", "correlation_id": "c"}),
            "Missing field: decision",
        ),
        (
            json!({"type": "hook_decision_response", "correlation_id": "c", "decision": "yes"}),
            "Invalid field decision: expected an object",
        ),
        (
            json!({"type": "hook_decision_response", "decision": {}}),
            "Missing field: correlation_id",
        ),
    ];
    for (body, detail) in cases {
        server
            .input(&id, &body)
            .await?
            .expect_error(400, &json!({ "detail": detail }))?;
    }
    Ok(())
}

/// Every malformed input is 400 with the exact `{"detail": ...}` body.
pub async fn check_input_validation_errors(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let id = server.create(&target.echo_turn("x")).await?;
    let cases: &[(&str, &str)] = &[
        ("{nope", "Invalid JSON"),
        ("", "Invalid JSON"),
        ("[1,2]", "Body must be a JSON object"),
        ("\"interrupt\"", "Body must be a JSON object"),
        ("null", "Body must be a JSON object"),
        ("{}", "Missing field: type"),
        (r#"{"type":5}"#, "Missing field: type"),
        (r#"{"type":"bogus"}"#, "Unknown message type: bogus"),
        (r#"{"type":"user_message"}"#, "Missing field: content"),
        (
            r#"{"type":"user_message","content":5}"#,
            "Invalid field content: expected a string or an array of content blocks",
        ),
        (
            r#"{"type":"user_message","content":[1]}"#,
            "Invalid field content: expected content blocks (objects with a string \"type\")",
        ),
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
            r#"{"type":"permission_response","correlation_id":"c","behavior":"deny","interrupt":"yes"}"#,
            "Invalid field interrupt: expected a boolean",
        ),
        (
            r#"{"type":"permission_response","correlation_id":"c","behavior":"allow","updated_input":[]}"#,
            "Invalid field updated_input: expected an object",
        ),
        (
            r#"{"type":"permission_response","correlation_id":"c","behavior":"allow","updated_permissions":{}}"#,
            "Invalid field updated_permissions: expected an array",
        ),
        (
            r#"{"type":"question_response","correlation_id":"c"}"#,
            "Missing field: answers",
        ),
        (r#"{"type":"set_permission_mode"}"#, "Missing field: mode"),
        (
            r#"{"type":"set_model","model":5}"#,
            "Invalid field model: expected a string",
        ),
        (r#"{"type":"stop_task"}"#, "Missing field: task_id"),
    ];
    for (body, detail) in cases {
        let reply = Reply::read(server.client.input_raw(&id, *body).await?).await?;
        reply
            .expect_error(400, &json!({ "detail": detail }))
            .map_err(|e| TestkitError::Unexpected(format!("body {body:?}: {e}")))?;
    }
    // The session is unharmed.
    ensure_eq!(
        server
            .input(&id, &json!({"type": "interrupt"}))
            .await?
            .status,
        204
    );
    Ok(())
}

/// 20 concurrent replies to one prompt: exactly one 204, nineteen 409 `conflict`; a reply to
/// a prompt that was never asked is 409.
pub async fn check_first_reply_wins(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let (id, mut stream) = server.start_turn(&target.permission_turn()).await?;
    let corr = permission_prompt(&mut stream).await?;
    let reply = json!({"type": "permission_response", "correlation_id": corr, "behavior": "allow"});
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let client = server.client.clone();
            let id = id.clone();
            let reply = reply.clone();
            tokio::spawn(async move { Reply::read(client.input(&id, &reply).await?).await })
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(
            task.await
                .map_err(|e| TestkitError::Unexpected(format!("task: {e}")))??,
        );
    }
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    ensure_eq!(
        statuses.iter().filter(|s| **s == 204).count(),
        1,
        "{statuses:?}"
    );
    for reply in replies.iter().filter(|r| r.status != 204) {
        reply.expect_error_code(409, Some("conflict"))?;
    }
    let never = json!({"type": "permission_response", "correlation_id": "never-asked",
                       "behavior": "deny"});
    server
        .input(&id, &never)
        .await?
        .expect_error_code(409, Some("conflict"))?;
    let never = json!({"type": "question_response", "correlation_id": "never-asked",
                       "answers": {}});
    server
        .input(&id, &never)
        .await?
        .expect_error_code(409, Some("conflict"))?;
    stream.until("result", T).await?;
    Ok(())
}

/// An interrupt while a permission prompt is pending withdraws it (`error
/// permission_cancelled` with its `correlation_id`), ends the turn, and a later answer is 409.
pub async fn check_permission_withdrawn_on_interrupt(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let (id, mut stream) = server.start_turn(&target.permission_turn()).await?;
    let corr = permission_prompt(&mut stream).await?;
    ensure_eq!(
        server
            .input(&id, &json!({"type": "interrupt"}))
            .await?
            .status,
        204
    );
    let rest = stream.until("result", T).await?;
    let error = find(&rest, "error")?.json();
    ensure_eq!(error["code"], json!("permission_cancelled"), "{error}");
    ensure_eq!(error["correlation_id"].as_str(), Some(corr.as_str()));
    ensure!(error["message"].is_string(), "message: {error}");
    let allow = json!({"type": "permission_response", "correlation_id": corr, "behavior": "allow"});
    server
        .input(&id, &allow)
        .await?
        .expect_error_code(409, Some("conflict"))?;
    Ok(())
}

/// Interrupts session `id` and reads `stream` to the turn's `result`, which must be the
/// interrupted one and come early (within 500 events of a long turn); returns what was read.
async fn interrupt_turn(
    server: &Server,
    target: &Target,
    id: &str,
    stream: &mut crate::SseStream,
) -> Result<Vec<SseFrame>> {
    ensure_eq!(
        server
            .input(id, &json!({"type": "interrupt"}))
            .await?
            .status,
        204
    );
    let frames = stream.until("result", T).await?;
    ensure_eq!(
        last_json(&frames)["subtype"].as_str(),
        Some(target.interrupted_subtype())
    );
    ensure!(
        frames.len() < 500,
        "the turn ended early ({} events)",
        frames.len()
    );
    Ok(frames)
}

/// An interrupt ends a long turn at once with one interrupted `result`, and does not clear
/// queued messages: the next queued turn starts afterwards.
pub async fn check_interrupt_ends_long_turn(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let turn = target.long_turn();
    let (id, mut stream) = server.start_turn(&turn).await?;
    next_event(&mut stream).await?; // session_ready
    agent_output(&mut stream).await?; // the agent is in the turn
    server.send(&id, &turn).await?; // queued behind the running turn
    interrupt_turn(&server, target, &id, &mut stream).await?;
    // The queued message now runs.
    let next = agent_output(&mut stream).await?;
    ensure!(
        next.event != "done" && next.event != "error",
        "the queued turn runs: {}",
        next.raw
    );
    interrupt_turn(&server, target, &id, &mut stream).await?;
    Ok(())
}

/// An interrupt sent right after the message — before the agent has started its turn, let
/// alone produced anything — still ends that turn (with the interrupted `result`), and only
/// that one: the next message's turn runs.
pub async fn check_interrupt_right_after_the_message_ends_its_turn(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let turn = target.long_turn();
    let (id, mut stream) = server.start_turn(&turn).await?;
    interrupt_turn(&server, target, &id, &mut stream).await?;
    // The same turn again runs: ten events and no `result` yet (an interrupt left over would
    // have ended it at once), until interrupted in turn.
    server.send(&id, &turn).await?;
    for _ in 0..10 {
        let frame = agent_output(&mut stream).await?;
        ensure!(
            !matches!(frame.event.as_str(), "result" | "done" | "error"),
            "the next turn runs: {}",
            frame.raw
        );
    }
    interrupt_turn(&server, target, &id, &mut stream).await?;
    Ok(())
}

/// Queued user messages run one turn at a time, in order: each turn's reply precedes its
/// `result`, and the next turn starts after it.
pub async fn check_one_turn_at_a_time(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let texts = ["one", "two", "three"];
    let (id, mut stream) = server.open(&target.echo_turn("one")).await?;
    for text in texts {
        server.send(&id, &target.echo_turn(text)).await?;
    }
    next_event(&mut stream).await?; // session_ready
    for text in texts {
        let frames = stream.until("result", T).await?;
        let replies: Vec<Option<String>> = frames
            .iter()
            .filter(|f| f.event == "message_complete")
            .map(complete_text)
            .collect();
        ensure!(!replies.is_empty(), "turn {text}: {:?}", events(&frames));
        for reply in replies {
            ensure_eq!(reply, Some(target.echo_reply(text)), "turn {text}");
        }
        ensure_eq!(
            frames.iter().filter(|f| f.event == "result").count(),
            1,
            "one result per turn"
        );
    }
    Ok(())
}

/// `--max-body-bytes 1024`: larger bodies are 413 `payload_too_large`, by `Content-Length`
/// and when chunked, on input and on create; smaller ones pass. Over-limit requests go over raw
/// connections that send the whole body first, as a client does: the 413 must arrive, and the
/// connection must then either stay usable or have been closed with `Connection: close`
/// (closing silently makes keep-alive clients lose the next request, or the 413 itself).
pub async fn check_body_limit(target: &Target) -> Result<()> {
    let server = target.start(&["--max-body-bytes", "1024"]).await?;
    let turn = target.echo_turn("x");
    let id = server.create(&turn).await?;
    let too_large = json!({"detail": "Request body too large (limit 1024 bytes)",
                           "code": "payload_too_large"})
    .to_string();
    let big = format!(
        r#"{{"type":"user_message","content":"{}"}}"#,
        "x".repeat(2000)
    );
    let mut chunked = Vec::new();
    for _ in 0..20 {
        chunked.extend_from_slice(format!("64\r\n{}\r\n", "x".repeat(100)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let input = format!("/sessions/{id}/input");
    for path in [input.as_str(), "/sessions"] {
        let common = format!(
            "POST {path} HTTP/1.1\r\nHost: conformance\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\n",
            super::TOKEN
        );
        let cases = [
            (
                "content-length",
                format!("{common}Content-Length: {}\r\n\r\n", big.len()),
                big.as_bytes(),
            ),
            (
                "chunked",
                format!("{common}Transfer-Encoding: chunked\r\n\r\n"),
                chunked.as_slice(),
            ),
        ];
        for (framing, head, body) in cases {
            let (response, after) =
                super::raw_exchange(&server.process.base_url, &head, body).await?;
            ensure_eq!(response.status, 413, "{framing} body to {path}");
            ensure_eq!(response.header("content-type"), Some("application/json"));
            ensure_eq!(response.body, too_large, "{framing} body to {path}");
            ensure!(
                after == "reused" || after == "announced close",
                "{framing} body to {path}: after the 413 the connection was {after}, \
                 without `Connection: close`"
            );
        }
    }
    let ok = format!(
        r#"{{"type":"user_message","content":"{}"}}"#,
        "x".repeat(900)
    );
    ensure_eq!(
        server.client.input_raw(&id, ok).await?.status().as_u16(),
        204
    );
    Ok(())
}

/// With a long turn running, 128 queued user messages are accepted; the 129th is 503 with
/// `Retry-After: 1` and `code: backpressure`; controls still work.
pub async fn check_backpressure(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let turn = target.long_turn();
    let (id, mut stream) = server.start_turn(&turn).await?;
    next_event(&mut stream).await?; // session_ready
    next_event(&mut stream).await?; // the first message has left the queue
    for i in 0..128 {
        let reply = server.input(&id, &turn.message()).await?;
        ensure_eq!(reply.status, 204, "queued message {i}: {}", reply.body);
    }
    let reply = server.input(&id, &turn.message()).await?;
    let detail = reply.expect_error_code(503, Some("backpressure"))?;
    ensure_eq!(reply.header("retry-after"), Some("1"));
    ensure!(detail.contains("128"), "{detail}");
    ensure_eq!(
        server
            .input(&id, &json!({"type": "set_model", "model": "m"}))
            .await?
            .status,
        204,
        "controls work while the queue is full"
    );
    ensure_eq!(
        server
            .input(&id, &json!({"type": "interrupt"}))
            .await?
            .status,
        204
    );
    Ok(())
}
