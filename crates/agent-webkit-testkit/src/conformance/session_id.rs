//! Session ids chosen by the caller (`"session_id"` in `POST /sessions`): accepted as given,
//! used everywhere (create, stream, input, detail, delete), unique (409 `session_exists`, also
//! under concurrent creates), validated (400 `invalid_session_id`).

use reqwest::Method;
use serde_json::{json, Value};

use super::{Reply, Target, T};
use crate::Result;

/// The checks' non-UUID id (every allowed punctuation character).
const ID: &str = "order-123.a_b~c";

async fn create(server: &super::Server, body: &Value) -> Result<Reply> {
    Reply::read(
        server
            .client
            .request(Method::POST, "/sessions")
            .json(body)
            .send()
            .await?,
    )
    .await
}

/// A non-UUID id works through create, stream, input, detail and delete; taken → 409
/// `session_exists` (nothing else changes); reusable after DELETE; invalid ids → 400
/// `invalid_session_id` and no session.
pub async fn check_caller_chosen_session_id(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let turn = target.echo_turn("hello chosen id");
    let mut body = server.session_body(&turn);
    body["session_id"] = json!(ID);
    let reply = create(&server, &body).await?;
    ensure_eq!(reply.status, 200, "create: {}", reply.body);
    ensure_eq!(
        reply.body,
        format!(r#"{{"session_id":"{ID}","protocol_version":"1.0"}}"#),
        "create body"
    );
    let mut stream = server.client.stream(ID, None).await?;
    let ready = stream
        .next_event_within(T)
        .await?
        .ok_or_else(|| crate::TestkitError::Unexpected("no session_ready".into()))?;
    ensure_eq!(ready.event, "session_ready");
    ensure_eq!(ready.json()["session_id"], ID, "session_ready names the id");
    server.send(ID, &turn).await?;
    let frames = stream.until("result", T).await?;
    let text = target.echo_reply("hello chosen id");
    ensure!(
        frames.iter().any(|f| f.raw.contains(&text)),
        "the agent answered: {frames:?}"
    );

    // Taken: 409, whatever else the body says; the session is untouched.
    let again = create(&server, &body).await?;
    again.expect_error_code(409, Some("session_exists"))?;
    let detail = Reply::read(
        server
            .client
            .request(Method::GET, &format!("/sessions/{ID}"))
            .send()
            .await?,
    )
    .await?;
    ensure_eq!(detail.status, 200, "detail: {}", detail.body);
    ensure_eq!(detail.json()["session_id"], ID);

    // Invalid: 400 and nothing created.
    let long = "x".repeat(129);
    for bad in [
        json!(""),
        json!(".hidden"),
        json!("a/b"),
        json!("a b"),
        json!("é"),
        json!(long),
        json!(5),
    ] {
        let mut body = server.session_body(&turn);
        body["session_id"] = bad.clone();
        let reply = create(&server, &body).await?;
        if bad.is_string() {
            reply.expect_error_code(400, Some("invalid_session_id"))?;
        } else {
            // Not a string: the body's shape is wrong, like any other field of the wrong type.
            ensure_eq!(reply.status, 400, "session_id {bad}: {}", reply.body);
        }
    }
    ensure_eq!(server.client.delete(ID).await?, 204, "delete the chosen id");
    // Gone: the id is free again.
    let reply = create(&server, &body).await?;
    ensure_eq!(reply.status, 200, "re-create after delete: {}", reply.body);
    Ok(())
}

/// Eight concurrent creates of one id: exactly one 200, seven 409 `session_exists`.
pub async fn check_concurrent_creates_of_one_id(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let mut body = server.session_body(&target.echo_turn("x"));
    body["session_id"] = json!("same-id");
    let replies = futures_util::future::join_all((0..8).map(|_| create(&server, &body))).await;
    let mut won = 0;
    for reply in replies {
        let reply = reply?;
        match reply.status {
            200 => won += 1,
            _ => {
                reply.expect_error_code(409, Some("session_exists"))?;
            }
        }
    }
    ensure_eq!(won, 1, "exactly one create wins");
    Ok(())
}
