//! `GET /sessions/{id}/context` where the agent cannot tell (the replay agent, the fake CLI:
//! 501 `unsupported`), its 404 / 405, and the `usage` event after a `result` that reports
//! usage per model (`modelUsage`), equal to the detail's `cost` (none without it). (The values themselves are checked against the real
//! CLI: `crates/agent-webkit-server/tests/context_cost_real_cli.rs`.)

use reqwest::Method;
use serde_json::{json, Value};

use super::{Reply, Target, T};
use crate::{Result, TestkitError};

/// See the module docs.
pub async fn check_context_unsupported_and_usage_event(target: &Target) -> Result<()> {
    let server = target.start(&[]).await?;
    let turn = target.echo_turn("usage please");
    let (id, mut stream) = server.start_turn(&turn).await?;
    let frames = stream.until("result", T).await?;
    let result = frames
        .last()
        .map(crate::SseFrame::json)
        .unwrap_or(Value::Null);
    let per_model = result["modelUsage"].is_object();
    let get = |path: String| {
        let request = server.client.request(Method::GET, &path);
        async move { Reply::read(request.send().await?).await }
    };
    let detail = get(format!("/sessions/{id}")).await?;
    ensure_eq!(detail.status, 200, "detail: {}", detail.body);
    let cost = detail.json()["cost"].clone();
    ensure!(
        cost["by_model"].is_object() && cost["total_cost_usd"].is_number(),
        "detail cost: {}",
        detail.body
    );
    if per_model {
        let next = stream
            .next_event_within(T)
            .await?
            .ok_or_else(|| TestkitError::Unexpected("stream ended after result".into()))?;
        ensure_eq!(next.event, "usage", "after a result that reports usage");
        let usage = next.json();
        ensure_eq!(usage["turn"], result["usage"], "turn = the result's usage");
        ensure_eq!(usage["cost"], cost, "the event's cost = the detail's");
    } else {
        // No per-model usage (the replay agent): no `usage` event, the stream goes on as the
        // original's; the detail still has the reported total.
        ensure_eq!(cost["by_model"], json!({}), "no per-model usage reported");
        let total = result["total_cost_usd"].as_f64().unwrap_or(0.0);
        let detail_total = cost["total_cost_usd"].as_f64().unwrap_or(-1.0);
        let close = (detail_total - total).abs() < 1e-12;
        ensure!(close, "detail total {cost} vs the result's {total}");
        // A `usage` event would be appended with the `result`, in the same batch.
        if let Ok(Some(next)) = stream
            .next_event_within(std::time::Duration::from_millis(500))
            .await
        {
            ensure!(
                next.event != "usage",
                "a usage event without per-model usage"
            );
        }
    }
    let context = get(format!("/sessions/{id}/context")).await?;
    context.expect_error_code(501, Some("unsupported"))?;
    let unknown = get("/sessions/no-such-session/context".to_owned()).await?;
    ensure_eq!(unknown.status, 404, "unknown session: {}", unknown.body);
    let post = Reply::read(
        server
            .client
            .request(Method::POST, &format!("/sessions/{id}/context"))
            .send()
            .await?,
    )
    .await?;
    ensure_eq!(post.status, 405, "POST: {}", post.body);
    ensure_eq!(post.header("allow"), Some("GET"));
    Ok(())
}
