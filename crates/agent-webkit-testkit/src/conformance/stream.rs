//! `GET /sessions/{id}/stream`: headers, framing, keepalive, resume, subscribers.

use serde_json::{json, Value};

use super::{
    ensure_dense, expect_session_ready, next_event, session_ready_frame, Reply, Target, T,
};
use crate::{Result, SseFrame, SseStream, TestkitError};

/// SSE response headers: exactly `text/event-stream`, `no-cache`, `x-accel-buffering: no`, no
/// content encoding; the same on a resumed stream.
pub async fn check_stream_headers(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let id = server.create(&target.echo_turn("x")).await?;
    for last in [None, Some("1"), Some("")] {
        let response = server.client.stream_raw(&id, last).await?;
        ensure_eq!(
            response.status().as_u16(),
            200,
            "stream (Last-Event-ID {last:?})"
        );
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        ensure_eq!(header("content-type").as_deref(), Some("text/event-stream"));
        ensure_eq!(header("cache-control").as_deref(), Some("no-cache"));
        ensure_eq!(header("x-accel-buffering").as_deref(), Some("no"));
        ensure_eq!(header("content-encoding"), None, "SSE is not compressed");
    }
    Ok(())
}

/// Checks one event frame: exactly `id: <seq>\nevent: <name>\ndata: <compact JSON>\n\n`.
fn ensure_frame_format(frame: &SseFrame) -> Result<()> {
    let id = frame
        .id
        .ok_or_else(|| TestkitError::Unexpected(format!("frame without id: {:?}", frame.raw)))?;
    let value: Value = serde_json::from_str(&frame.data).map_err(|e| {
        TestkitError::Unexpected(format!("data is not JSON ({e}): {:?}", frame.raw))
    })?;
    ensure!(value.is_object(), "data is an object: {}", frame.data);
    ensure_eq!(frame.data, value.to_string(), "data is compact JSON");
    ensure_eq!(
        frame.raw,
        format!("id: {id}\nevent: {}\ndata: {}\n\n", frame.event, frame.data),
        "frame layout"
    );
    Ok(())
}

/// Frames: `session_ready` is seq 1 with the exact bytes; seqs rise by one; every frame is
/// `id`/`event`/`data` with compact JSON; a turn's `message_complete` carries the reply and the
/// turn ends with `result`; DELETE appends `done` `{}` and ends the stream.
pub async fn check_stream_framing(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let turn = target.echo_turn("hello framing");
    let (id, mut stream) = server.open(&turn).await?;
    let ready = expect_session_ready(&mut stream, &id).await?;
    server.send(&id, &turn).await?;
    let mut frames = vec![ready];
    frames.extend(stream.until("result", T).await?);
    let complete = frames
        .iter()
        .rev()
        .find(|f| f.event == "message_complete")
        .ok_or_else(|| TestkitError::Unexpected("no message_complete".into()))?;
    let data = complete.json();
    ensure_eq!(data["message"]["role"], json!("assistant"));
    ensure_eq!(data["message_id"], data["message"]["id"], "message ids");
    ensure_eq!(
        super::complete_text(complete),
        Some(target.echo_reply("hello framing")),
        "reply text"
    );
    let result = frames.last().map(SseFrame::json).unwrap_or(Value::Null);
    ensure!(
        result["subtype"].is_string() && result["session_id"].is_string(),
        "result carries session_id and subtype: {result}"
    );
    ensure_eq!(server.client.delete(&id).await?, 204);
    frames.extend(stream.collect_to_end(T).await?);
    ensure_dense(&frames, 1)?;
    for frame in &frames {
        ensure_frame_format(frame)?;
    }
    let last = frames
        .last()
        .ok_or_else(|| TestkitError::Unexpected("no frames".into()))?;
    ensure_eq!(last.event, "done");
    ensure_eq!(last.data, "{}");
    ensure_eq!(
        frames.iter().filter(|f| f.event == "done").count(),
        1,
        "one done"
    );
    ensure_eq!(
        frames.iter().filter(|f| f.event == "session_ready").count(),
        1,
        "one session_ready"
    );
    Ok(())
}

/// `--keepalive 0.2`: an idle stream gets the comment frame `: keepalive\n\n`, repeatedly.
pub async fn check_keepalive(target: &Target) -> Result<()> {
    let server = target.start(&["--keepalive", "0.2"]).await?;
    let (id, mut stream) = server.open(&target.echo_turn("x")).await?;
    let first = stream
        .next_frame()
        .await?
        .ok_or_else(|| TestkitError::Unexpected("stream ended".into()))?;
    ensure_eq!(first.raw, session_ready_frame(&id));
    for n in 0..2 {
        let frame = tokio::time::timeout(T, stream.next_frame())
            .await
            .map_err(|_| TestkitError::Timeout("keepalive".into()))??
            .ok_or_else(|| TestkitError::Unexpected("stream ended".into()))?;
        ensure_eq!(frame.raw, ": keepalive\n\n", "keepalive {n}");
    }
    Ok(())
}

/// `Last-Event-ID: n` replays exactly the events after `n` (byte-identical), then tails live;
/// an empty header means from the start; the last seq replays nothing and tails.
pub async fn check_resume_last_event_id(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let turn = target.burst_turn();
    let (id, mut live) = server.start_turn(&turn).await?;
    let all = live.until("result", T).await?;
    ensure_dense(&all, 1)?;
    let n = all.len();
    ensure!(n >= 6, "the burst turn has enough events ({n})");
    let cut = n / 2;
    let mut resumed = server.client.stream(&id, Some(&cut.to_string())).await?;
    let replay = resumed.until("result", T).await?;
    ensure_eq!(
        replay.iter().map(|f| f.raw.as_str()).collect::<Vec<_>>(),
        all[cut..]
            .iter()
            .map(|f| f.raw.as_str())
            .collect::<Vec<_>>(),
        "exact continuation after {cut}"
    );
    let mut at_end = server.client.stream(&id, Some(&n.to_string())).await?;
    let mut from_start = server.client.stream(&id, Some("")).await?;
    let first = next_event(&mut from_start).await?;
    ensure_eq!(
        first.raw,
        session_ready_frame(&id),
        "empty header: from the start"
    );
    // Live tail: the next turn's first event reaches every resumed stream.
    server.send(&id, &turn).await?;
    let next_live = next_event(&mut live).await?;
    ensure_eq!(next_live.id, Some(n as u64 + 1));
    for (name, stream) in [("resumed", &mut resumed), ("at_end", &mut at_end)] {
        let frame = next_event(stream).await?;
        ensure_eq!(frame.raw, next_live.raw, "{name} stream tails live");
    }
    Ok(())
}

/// A malformed `Last-Event-ID` is 400; one beyond the last seq is 412 `evicted`; both before
/// any stream bytes.
pub async fn check_resume_rejects_bad_cursors(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let id = server.create(&target.echo_turn("x")).await?;
    for bad in ["abc", "-1", "1.5", "0x1", "1 2", "+1"] {
        Reply::read(server.client.stream_raw(&id, Some(bad)).await?)
            .await?
            .expect_error(
                400,
                &json!({"detail": "Last-Event-ID must be a non-negative integer"}),
            )?;
    }
    // Only session_ready (seq 1) exists: 1 is the last seq (fine), 2 and beyond are not ours.
    let ok = server.client.stream_raw(&id, Some("1")).await?;
    ensure_eq!(ok.status().as_u16(), 200, "cursor at the last seq");
    drop(ok);
    for future in ["2", "500", "99999999999999999999999"] {
        Reply::read(server.client.stream_raw(&id, Some(future)).await?)
            .await?
            .expect_error_code(412, Some("evicted"))?;
    }
    Ok(())
}

/// `--ring-size 5`: after a turn ending at seq L, cursors from L-5 on resume exactly; L-6 and
/// `0` are 412 `evicted` with the exact detail, as JSON, before any stream bytes.
pub async fn check_resume_evicted_cursor(target: &Target) -> Result<()> {
    let server = target.start(&["--ring-size", "5"]).await?;
    let turn = target.paced_turn();
    let (id, mut live) = server.start_turn(&turn).await?;
    // The paced turn leaves the live subscriber plenty of time: it never falls a ring behind.
    let mut all = live.until("result", T).await?;
    // A result that reports usage is followed by the `usage` event (an extension).
    let reports_usage = all.last().is_some_and(|f| !f.json()["usage"].is_null());
    let end = if reports_usage { "usage" } else { "result" };
    if reports_usage {
        all.extend(live.until(end, T).await?);
    }
    ensure_dense(&all, 1)?;
    let last = all.len() as u64;
    ensure!(last >= 10, "the paced turn has enough events ({last})");
    let oldest = last - 4;
    let mut ok = server
        .client
        .stream(&id, Some(&(oldest - 1).to_string()))
        .await?;
    let replay = ok.until(end, T).await?;
    ensure_eq!(
        replay.iter().map(|f| f.raw.as_str()).collect::<Vec<_>>(),
        all[(oldest - 1) as usize..]
            .iter()
            .map(|f| f.raw.as_str())
            .collect::<Vec<_>>(),
        "replay of the ring"
    );
    let evicted = oldest - 2;
    Reply::read(
        server
            .client
            .stream_raw(&id, Some(&evicted.to_string()))
            .await?,
    )
    .await?
    .expect_error(
        412,
        &json!({"detail": format!("Last-Event-ID {evicted} evicted; oldest available is {oldest}"),
                "code": "evicted"}),
    )?;
    Reply::read(server.client.stream_raw(&id, Some("0")).await?)
        .await?
        .expect_error(
            412,
            &json!({"detail": format!("Last-Event-ID 0 evicted; oldest available is {oldest}"),
                    "code": "evicted"}),
        )?;
    // Without a cursor, a new subscriber starts at the oldest event still held.
    let mut fresh = server.client.stream(&id, None).await?;
    ensure_eq!(next_event(&mut fresh).await?.id, Some(oldest));
    Ok(())
}

async fn subscribers_see_identical_bytes(target: &Target, n: usize) -> Result<()> {
    let server = target.start(&[]).await?;
    let turn = target.burst_turn();
    let id = server.create(&turn).await?;
    let mut subs: Vec<SseStream> = Vec::new();
    for _ in 0..n {
        subs.push(server.client.stream(&id, None).await?);
    }
    // One subscriber leaving disturbs nobody.
    let mut quitter = server.client.stream(&id, None).await?;
    next_event(&mut quitter).await?;
    drop(quitter);
    server.send(&id, &turn).await?;
    let mut all: Vec<Vec<String>> = Vec::new();
    for sub in &mut subs {
        let frames = sub.until("result", T).await?;
        all.push(frames.into_iter().map(|f| f.raw).collect());
    }
    // A late subscriber replays the same bytes from the ring.
    let mut late = server.client.stream(&id, None).await?;
    all.push(
        late.until("result", T)
            .await?
            .into_iter()
            .map(|f| f.raw)
            .collect(),
    );
    let first = all.first().cloned().unwrap_or_default();
    ensure!(first.len() >= 6, "enough events ({})", first.len());
    for (i, seq) in all.iter().enumerate() {
        ensure!(seq == &first, "subscriber {i} saw different bytes");
    }
    Ok(())
}

/// Two concurrent subscribers (and a late one) see byte-identical sequences.
pub async fn check_two_subscribers_identical(target: &Target) -> Result<()> {
    subscribers_see_identical_bytes(target, 2).await
}

/// Fifty concurrent subscribers (and a late one) see byte-identical sequences; one leaving
/// disturbs nobody.
pub async fn check_fifty_subscribers_identical(target: &Target) -> Result<()> {
    subscribers_see_identical_bytes(target, 50).await
}

/// Reads from `tcp` into `buf` until `done(buf)` holds or the peer closes; bounded by [`T`].
async fn read_until(
    tcp: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    done: impl Fn(&[u8]) -> bool,
) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let wait = async {
        while !done(buf) {
            let mut chunk = [0u8; 8192];
            let n = tcp.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, TestkitError>(())
    };
    tokio::time::timeout(T, wait)
        .await
        .map_err(|_| TestkitError::Timeout("raw HTTP/1.0 response".into()))?
}

/// An HTTP/1.0 client (nginx proxies speak HTTP/1.0 upstream by default) gets the stream as
/// plain SSE bytes: no chunked framing (HTTP/1.1 only), the body ended by closing the
/// connection after `done`.
pub async fn check_stream_over_http10(target: &Target) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let server = target.start(&[]).await?;
    let id = server.create(&target.echo_turn("x")).await?;
    let addr = server
        .process
        .base_url
        .trim_start_matches("http://")
        .to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await?;
    let request = format!(
        "GET /sessions/{id}/stream HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Accept: text/event-stream\r\n\r\n",
        super::TOKEN
    );
    tcp.write_all(request.as_bytes()).await?;
    let ready = session_ready_frame(&id);
    let mut buf = Vec::new();
    let head_end = |b: &[u8]| b.windows(4).position(|w| w == b"\r\n\r\n");
    read_until(&mut tcp, &mut buf, |b| {
        head_end(b).is_some_and(|at| b.len() >= at + 4 + ready.len())
    })
    .await?;
    let at = head_end(&buf).ok_or_else(|| TestkitError::Unexpected("no response head".into()))?;
    let head = String::from_utf8_lossy(&buf[..at]).to_ascii_lowercase();
    ensure!(
        head.starts_with("http/1.0 200") || head.starts_with("http/1.1 200"),
        "status line: {head}"
    );
    ensure!(
        !head.contains("transfer-encoding"),
        "no transfer-encoding towards an HTTP/1.0 client:\n{head}"
    );
    ensure_eq!(
        String::from_utf8_lossy(&buf[at + 4..]).into_owned(),
        ready,
        "the body is the plain SSE bytes"
    );
    ensure_eq!(server.client.delete(&id).await?, 204);
    let mut rest = Vec::new();
    read_until(&mut tcp, &mut rest, |_| false).await?;
    ensure_eq!(
        String::from_utf8_lossy(&rest).into_owned(),
        "id: 2\nevent: done\ndata: {}\n\n",
        "done, then the connection closes"
    );
    Ok(())
}
