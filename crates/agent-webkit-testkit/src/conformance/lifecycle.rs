//! Session lifetime: DELETE, idle eviction, a crashing agent.

use std::time::Duration;

use serde_json::json;

use super::{events, expect_session_ready, next_event, Target, T};
use crate::{Result, SseStream, TestkitError};

/// Reads a stream to its end and checks it ends with exactly one `done` (`{}`), last.
async fn ends_with_done(stream: &mut SseStream) -> Result<Vec<crate::SseFrame>> {
    let rest = stream.collect_to_end(T).await?;
    let last = rest
        .last()
        .ok_or_else(|| TestkitError::Unexpected("stream ended without done".into()))?;
    ensure_eq!(last.event, "done", "last event of {:?}", events(&rest));
    ensure_eq!(last.data, "{}");
    ensure_eq!(rest.iter().filter(|f| f.event == "done").count(), 1);
    Ok(rest)
}

/// DELETE ends every open stream (fresh and resumed) with the same `done` frame (seq 2 on an
/// idle session) and closes it; afterwards the session is 404, and DELETE stays 204.
pub async fn check_delete_ends_every_stream(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let (id, mut a) = server.open(&target.echo_turn("x")).await?;
    let mut b = server.client.stream(&id, None).await?;
    let mut resumed = server.client.stream(&id, Some("1")).await?;
    expect_session_ready(&mut a, &id).await?;
    expect_session_ready(&mut b, &id).await?;
    ensure_eq!(server.client.delete(&id).await?, 204);
    for stream in [&mut a, &mut b, &mut resumed] {
        let rest = ends_with_done(stream).await?;
        ensure_eq!(
            rest.iter().map(|f| f.raw.as_str()).collect::<Vec<_>>(),
            vec!["id: 2\nevent: done\ndata: {}\n\n"]
        );
    }
    ensure_eq!(
        server.client.delete(&id).await?,
        204,
        "DELETE is idempotent"
    );
    let not_found = json!({"detail": "Session not found"});
    super::Reply::read(server.client.stream_raw(&id, None).await?)
        .await?
        .expect_error(404, &not_found)?;
    server
        .input(&id, &json!({"type": "interrupt"}))
        .await?
        .expect_error(404, &not_found)?;
    Ok(())
}

/// DELETE during a running turn and during a pending permission prompt returns 204 promptly
/// and ends the streams with `done`.
pub async fn check_delete_during_turn(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let (long, mut long_stream) = server.start_turn(&target.long_turn()).await?;
    next_event(&mut long_stream).await?; // session_ready
    next_event(&mut long_stream).await?; // the turn runs
    let (prompt, mut prompt_stream) = server.start_turn(&target.permission_turn()).await?;
    prompt_stream.until("permission_request", T).await?;
    for (id, stream) in [(long, &mut long_stream), (prompt, &mut prompt_stream)] {
        let started = tokio::time::Instant::now();
        ensure_eq!(server.client.delete(&id).await?, 204);
        ensure!(
            started.elapsed() < Duration::from_secs(5),
            "DELETE took {:?}",
            started.elapsed()
        );
        ends_with_done(stream).await?;
        ensure_eq!(
            server.client.stream_raw(&id, None).await?.status().as_u16(),
            404
        );
    }
    Ok(())
}

/// `--idle-timeout 0.3`: a session without input and without a subscriber is evicted, also
/// after its last subscriber left.
pub async fn check_idle_eviction_without_subscriber(target: &Target) -> Result<()> {
    let server = target.start(&["--idle-timeout", "0.3"]).await?;
    let turn = target.echo_turn("x");
    let lonely = server.create(&turn).await?;
    let (visited, mut stream) = server.open(&turn).await?;
    expect_session_ready(&mut stream, &visited).await?;
    drop(stream);
    server.wait_gone(&lonely, T).await?;
    server.wait_gone(&visited, T).await?;
    Ok(())
}

/// `--idle-timeout 0.3`: a session with a live subscriber is not evicted (no `done` arrives
/// within three idle timeouts, and it still takes input); once the subscriber leaves it is.
pub async fn check_idle_eviction_waits_for_subscriber(target: &Target) -> Result<()> {
    let server = target.start(&["--idle-timeout", "0.3"]).await?;
    let (id, mut stream) = server.open(&target.echo_turn("x")).await?;
    expect_session_ready(&mut stream, &id).await?;
    // A bounded wait for something that must NOT happen.
    let ended = tokio::time::timeout(Duration::from_millis(1000), stream.next_event()).await;
    ensure!(
        ended.is_err(),
        "no event (no done) while subscribed: {ended:?}"
    );
    ensure_eq!(
        server
            .input(&id, &json!({"type": "set_model", "model": "m"}))
            .await?
            .status,
        204,
        "still alive"
    );
    drop(stream);
    server.wait_gone(&id, T).await?;
    Ok(())
}

/// Checks the `error` frame of a crashed session: `agent_exited` with a message naming the
/// crash.
fn expect_crash_error(frames: &[crate::SseFrame]) -> Result<()> {
    let error = frames
        .iter()
        .find(|f| f.event == "error")
        .ok_or_else(|| TestkitError::Unexpected(format!("no error: {:?}", events(frames))))?
        .json();
    ensure_eq!(error["code"], json!("agent_exited"), "{error}");
    ensure!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("crash")),
        "the message names the crash: {error}"
    );
    Ok(())
}

/// An ended session is readable: a new stream replays the whole log (dense from 1) and ends
/// with `error` then `done`; returns the replayed frames.
async fn expect_ended_replay(server: &super::Server, id: &str) -> Result<Vec<crate::SseFrame>> {
    let mut stream = server.client.stream(id, None).await?;
    let frames = ends_with_done(&mut stream).await?;
    super::ensure_dense(&frames, 1)?;
    ensure_eq!(
        frames.first().map(|f| f.event.as_str()),
        Some("session_ready")
    );
    let tail: Vec<&str> = events(&frames).into_iter().rev().take(2).collect();
    ensure_eq!(tail, vec!["done", "error"], "replay ends with error, done");
    expect_crash_error(&frames)?;
    Ok(frames)
}

/// An agent that dies mid-turn: `error {code: agent_exited, message}`, then `done`. The
/// session stays readable (a new stream replays the same frames to `done`; input is 409
/// `session_ended`) until DELETE, which removes it at once (404 after, DELETE stays 204).
pub async fn check_crash_ends_session(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let (id, mut stream) = server.start_turn(&target.crash_turn()).await?;
    let frames = ends_with_done(&mut stream).await?;
    super::ensure_dense(&frames, 1)?;
    expect_crash_error(&frames)?;
    let replay = expect_ended_replay(&server, &id).await?;
    ensure_eq!(
        replay.iter().map(|f| f.raw.as_str()).collect::<Vec<_>>(),
        frames.iter().map(|f| f.raw.as_str()).collect::<Vec<_>>(),
        "the replay is the live stream"
    );
    server
        .input(&id, &target.echo_turn("x").message())
        .await?
        .expect_error_code(409, Some("session_ended"))?;
    server
        .input(&id, &json!({"type": "interrupt"}))
        .await?
        .expect_error_code(409, Some("session_ended"))?;
    ensure_eq!(server.client.delete(&id).await?, 204);
    let not_found = json!({"detail": "Session not found"});
    super::Reply::read(server.client.stream_raw(&id, None).await?)
        .await?
        .expect_error(404, &not_found)?;
    server
        .input(&id, &target.echo_turn("x").message())
        .await?
        .expect_error(404, &not_found)?;
    ensure_eq!(server.client.delete(&id).await?, 204);
    Ok(())
}

/// Crash first, subscribe after (a page reload, a slow client): the new stream still tells
/// why, with `error {code: agent_exited}` then `done`.
pub async fn check_crash_then_subscribe(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let turn = target.crash_turn();
    let id = server.create(&turn).await?;
    server.send(&id, &turn).await?;
    // Wait (bounded) for the crash without subscribing: inputs say `session_ended` once it
    // happened.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        // A queued user message does not disturb the crashing turn (it waits for a `result`
        // that never comes).
        let reply = server.input(&id, &target.echo_turn("x").message()).await?;
        if reply.status == 409 {
            reply.expect_error_code(409, Some("session_ended"))?;
            break;
        }
        ensure_eq!(reply.status, 204, "input before the crash ({})", reply.body);
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the agent did not crash within {T:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    expect_ended_replay(&server, &id).await?;
    Ok(())
}

/// `--ended-retention`: an ended session leaves on its own after the retention (0: at once,
/// as a client that reads `done` and asks again sees: 404).
pub async fn check_ended_retention(target: &Target) -> Result<()> {
    let server = target.start(&["--ended-retention", "0.3"]).await?;
    let (id, mut stream) = server.start_turn(&target.crash_turn()).await?;
    ends_with_done(&mut stream).await?;
    expect_ended_replay(&server, &id).await?;
    server.wait_gone(&id, T).await?;
    let server = target.start(&["--ended-retention", "0"]).await?;
    let (id, mut stream) = server.start_turn(&target.crash_turn()).await?;
    ends_with_done(&mut stream).await?;
    ensure_eq!(
        server.client.stream_raw(&id, None).await?.status().as_u16(),
        404,
        "without retention an ended session is gone once `done` is read"
    );
    Ok(())
}
