//! The attachment endpoints (`/sessions/{id}/attachments`, see [`crate::attachments`]) and
//! the check of a user message's `attachment` blocks before it is queued.

use std::time::Duration;

use serde_json::json;

use super::{content_length, Api, ApiResponse, BodyError, RequestBody, RequestHeaders};
use crate::attachments::{names, AttachmentError, AttachmentStore};
use crate::auth::principal::Principal;
use crate::models::InboundMessage;
use crate::registry::SessionRegistry;

/// How often the directories of sessions that are gone are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

fn refusal(err: &AttachmentError) -> ApiResponse {
    let (status, code) = err.status_and_code();
    if status >= 500 {
        tracing::warn!(error = %err, "attachment request failed");
    }
    ApiResponse::error(status, err, Some(code))
}

fn disabled() -> ApiResponse {
    ApiResponse::error(
        501,
        "attachments are not enabled on this server",
        Some("unsupported"),
    )
}

impl Api {
    fn attachment_store(&self) -> Result<&AttachmentStore, ApiResponse> {
        self.inner.attachments.as_ref().ok_or_else(disabled)
    }

    /// `GET /sessions/{id}/attachments`.
    pub(super) async fn list_attachments(&self, id: &str, principal: &Principal) -> ApiResponse {
        let store = match self.attachment_store() {
            Ok(store) => store,
            Err(response) => return response,
        };
        if let Err(response) = self.session(id, principal).await {
            return response;
        }
        match store.list(id).await {
            Ok(attachments) => ApiResponse::json(
                200,
                &json!(crate::attachments::AttachmentList { attachments }),
            ),
            Err(err) => refusal(&err),
        }
    }

    /// `POST /sessions/{id}/attachments?name=...`: the raw body is the file, read with the
    /// attachment limit (not the general body limit); refusals come before the body is read
    /// whenever the request already shows them.
    pub(super) async fn upload_attachment<H, B>(
        &self,
        id: &str,
        query: &str,
        headers: &H,
        body: B,
        principal: &Principal,
    ) -> ApiResponse
    where
        H: RequestHeaders + Sync + ?Sized,
        B: RequestBody,
    {
        let store = match self.attachment_store() {
            Ok(store) => store,
            Err(response) => return response,
        };
        if let Err(response) = self.session(id, principal).await {
            return response;
        }
        let raw_name = query
            .split('&')
            .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
            .find(|(key, _)| *key == "name")
            .map(|(_, value)| value)
            .unwrap_or_default();
        let name = match names::name_from_query(raw_name) {
            Ok(name) => name,
            Err(err) => return refusal(&AttachmentError::InvalidName(err)),
        };
        let limit = store.config().max_bytes;
        if content_length(headers).is_some_and(|len| len > limit as u64) {
            tracing::info!(
                session_id = id,
                limit,
                "attachment refused before reading: too large"
            );
            return refusal(&AttachmentError::TooLarge(limit));
        }
        let held = match store.list(id).await {
            Ok(held) => held.len(),
            Err(err) => return refusal(&err),
        };
        if held >= store.config().max_per_session {
            return refusal(&AttachmentError::TooMany(store.config().max_per_session));
        }
        let timeout = self.inner.limits.body_read_timeout;
        let bytes = match tokio::time::timeout(timeout, body.collect(limit)).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(BodyError::TooLarge)) => return refusal(&AttachmentError::TooLarge(limit)),
            Ok(Err(err @ BodyError::Read(_))) => return ApiResponse::error(400, err, None),
            Err(_) => {
                return ApiResponse::error(
                    408,
                    format!(
                        "Request body not received within {} s",
                        timeout.as_secs_f64()
                    ),
                    Some("body_timeout"),
                )
            }
        };
        let media_type = crate::attachments::media_type(headers.get("content-type"), &name);
        match store.add(id, name, media_type, bytes).await {
            Ok(attachment) => ApiResponse::json(201, &json!(attachment)),
            Err(err) => refusal(&err),
        }
    }

    /// `DELETE /sessions/{id}/attachments/{attachment_id}`.
    pub(super) async fn delete_attachment(
        &self,
        id: &str,
        attachment_id: &str,
        principal: &Principal,
    ) -> ApiResponse {
        let store = match self.attachment_store() {
            Ok(store) => store,
            Err(response) => return response,
        };
        if let Err(response) = self.session(id, principal).await {
            return response;
        }
        match store.remove(id, attachment_id).await {
            Ok(true) => ApiResponse::no_content(),
            Ok(false) => ApiResponse::error(
                404,
                AttachmentError::Unknown(attachment_id.to_owned()),
                Some("unknown_attachment"),
            ),
            Err(err) => refusal(&err),
        }
    }

    /// A user message may only name attachments its session holds: 400 `unknown_attachment`
    /// otherwise, before anything is queued.
    pub(super) async fn check_attachment_references(
        &self,
        id: &str,
        message: &InboundMessage,
    ) -> Result<(), ApiResponse> {
        let InboundMessage::UserMessage { content } = message else {
            return Ok(());
        };
        if !crate::attachments::has_references(content) {
            return Ok(());
        }
        let Some(store) = &self.inner.attachments else {
            return Err(refusal(&AttachmentError::Unknown(
                "attachments are not enabled on this server".into(),
            )));
        };
        store.check_references(id, content).await.map_err(|err| {
            tracing::info!(session_id = id, error = %err, "user message refused: attachment");
            refusal(&err)
        })
    }
}

/// Removes, once a minute, the attachment directories of sessions that are gone (ended and
/// out of retention, or deleted on another host).
pub(super) fn start_sweeper(store: AttachmentStore, registry: &SessionRegistry) {
    let registry = registry.clone();
    let stopped = store.stopped();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(SWEEP_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stopped.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let registry = registry.clone();
            store
                .sweep(move |id| {
                    let registry = registry.clone();
                    Box::pin(async move { alive(&registry, &id).await })
                })
                .await;
        }
    });
}

/// Whether session `id` still exists here or in the shared persistence (when unsure: yes).
async fn alive(registry: &SessionRegistry, id: &str) -> bool {
    if registry.get(id).is_some() {
        return true;
    }
    let Some(failover) = registry.failover() else {
        return false;
    };
    match failover.persistence.get(id).await {
        Ok(Some(listed)) => !listed.activity.ended,
        Ok(None) => false,
        Err(_) => true,
    }
}
