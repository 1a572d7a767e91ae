//! The HTTP side of fork (`POST /sessions` with `fork`) and rewind (inbound `rewind`): the
//! source session's checks and inherited settings, and the refusal codes
//! (docs/protocol-extensions.md, "Anchors, fork and rewind").

use std::sync::Arc;

use crate::agent::rewind::ForkFrom;
use crate::auth::principal::Principal;
use crate::models::anchors::{ForkRequest, RewindRequest, RewoundData};
use crate::models::CreateSessionRequest;
use crate::session::rewind::RewindRefusal;
use crate::session::Session;

use super::{Api, ApiResponse};

/// A checked fork: what the agent gets and what the create response echoes.
pub(super) struct Fork {
    pub(super) from: ForkFrom,
    pub(super) request: ForkRequest,
}

impl Api {
    /// For a create with `fork`: the source (visible to `principal`, else 404
    /// `session_not_found`), its message (else 400 `unknown_message`), and the source's model,
    /// permission mode and cwd written into `request` where it has none.
    pub(super) async fn fork_source(
        &self,
        request: &mut CreateSessionRequest,
        principal: &Principal,
    ) -> Result<Option<Fork>, ApiResponse> {
        let Some(fork) = request.fork.clone() else {
            return Ok(None);
        };
        if !self.inner.registry.can_fork() {
            return Err(ApiResponse::error(
                501,
                "This agent cannot fork sessions",
                Some("unsupported"),
            ));
        }
        let source = match self.session(&fork.session_id, principal).await {
            Ok(source) => source,
            Err(response) if response.status == 404 => {
                return Err(ApiResponse::error(
                    404,
                    "Source session not found",
                    Some("session_not_found"),
                ))
            }
            Err(response) => return Err(response),
        };
        if let Some(uuid) = &fork.message_uuid {
            if !source.has_anchor(uuid).await {
                tracing::info!(source = %fork.session_id, message_uuid = %uuid, "fork refused: unknown message");
                return Err(ApiResponse::error(
                    400,
                    "message_uuid is not a user message of the source session",
                    Some("unknown_message"),
                ));
            }
        }
        let settings = source.settings();
        if request.model.is_none() {
            request.model = settings.model;
        }
        if request.permission_mode.is_none() {
            request.permission_mode = settings.permission_mode;
        }
        if request.cwd.is_none() {
            request.cwd.clone_from(&source.meta().cwd);
        }
        tracing::info!(source = %fork.session_id, message_uuid = ?fork.message_uuid, "fork");
        let anchors = source.anchors_through(fork.message_uuid.as_deref()).await;
        Ok(Some(Fork {
            from: ForkFrom {
                agent_session_id: source.meta().agent_session_id.clone(),
                message_uuid: fork.message_uuid.clone(),
                anchors,
            },
            request: fork,
        }))
    }
}

/// Answers an inbound `rewind`: 200 with what was (dry run: would be) restored, or a refusal;
/// also returns what was done, when it was.
pub(super) async fn rewind(
    session: &Arc<Session>,
    request: RewindRequest,
) -> (ApiResponse, Option<RewoundData>) {
    match session.rewind(request).await {
        Ok(answer) => (
            ApiResponse::json(200, &serde_json::json!(answer)),
            Some(answer),
        ),
        Err(refusal) => {
            tracing::info!(session_id = session.id(), refusal = %refusal, "rewind refused");
            let (status, code) = match &refusal {
                RewindRefusal::TurnRunning => (409, "turn_running"),
                RewindRefusal::UnknownMessage => (400, "unknown_message"),
                RewindRefusal::CheckpointingDisabled => (409, "checkpointing_disabled"),
                RewindRefusal::NotLive => (409, "agent_not_live"),
                RewindRefusal::Closed => {
                    return (ApiResponse::error(404, "Session not found", None), None)
                }
                RewindRefusal::Agent(err) => {
                    let status = match err {
                        crate::agent::AgentError::Unsupported(_) => 501,
                        crate::agent::AgentError::Timeout(_) => 504,
                        crate::agent::AgentError::Exited(_)
                        | crate::agent::AgentError::Disconnected => 409,
                        _ => 502,
                    };
                    (status, err.code())
                }
            };
            (ApiResponse::error(status, &refusal, Some(code)), None)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use bytes::Bytes;
    use parking_lot::Mutex;
    use serde_json::{json, Value};

    use super::*;
    use crate::audit::{AuditEvent, AuditSink};
    use crate::auth::AuthConfig;
    use crate::config::AppConfig;
    use crate::models::EventKind;
    use crate::scripted::{result, ScriptedFactory, WAIT};

    #[derive(Default)]
    struct Captured(Mutex<Vec<AuditEvent>>);

    impl AuditSink for Captured {
        fn record(&self, event: &AuditEvent) {
            self.0.lock().push(event.clone());
        }
    }

    async fn call(api: &Api, method: &str, path: &str, body: Value) -> (u16, Value) {
        let headers = [("content-type", "application/json")];
        let r = api
            .handle(method, path, &headers, Bytes::from(body.to_string()))
            .await;
        let json = serde_json::from_slice(r.body_bytes()).unwrap_or(Value::Null);
        (r.status, json)
    }

    /// A rewind carried out is audited (a dry run is not), and the agent is told the
    /// conversation's latest user message.
    #[tokio::test]
    async fn a_rewind_is_audited_and_the_agent_gets_the_latest_message() {
        let (factory, mut agents) = ScriptedFactory::new();
        factory.with_anchors();
        let captured = Arc::new(Captured::default());
        let mut config = AppConfig::new(factory).with_auth(AuthConfig::disabled());
        config.audit_sinks = vec![captured.clone()];
        let api = Api::new(config).unwrap();
        let (status, created) = call(&api, "POST", "/sessions", json!({})).await;
        assert_eq!(status, 200, "{created}");
        let id = created["session_id"].as_str().unwrap().to_owned();
        let mut agent = agents.recv().await.unwrap();
        let session = api.registry().get(&id).unwrap();
        let mut log = session.event_log().subscribe_from_start();
        let input = format!("/sessions/{id}/input");
        let mut anchors = Vec::new();
        for text in ["one", "two"] {
            let message = json!({"type": "user_message", "content": text});
            assert_eq!(call(&api, "POST", &input, message).await.0, 204);
            agent.next_query().await;
            agent.send(result());
            loop {
                let batch = tokio::time::timeout(WAIT, log.next_batch(16))
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                for event in &batch {
                    if event.kind() == EventKind::UserMessage {
                        anchors.push(event.data()["uuid"].as_str().unwrap().to_owned());
                    }
                }
                if batch.iter().any(|e| e.kind() == EventKind::Result) {
                    break;
                }
            }
        }
        let rewind = |dry_run: bool| json!({"type": "rewind", "message_uuid": anchors[0], "files": false, "dry_run": dry_run});
        let (status, dry) = call(&api, "POST", &input, rewind(true)).await;
        assert_eq!(status, 200, "{dry}");
        let (status, done) = call(&api, "POST", &input, rewind(false)).await;
        assert_eq!(status, 200, "{done}");
        assert_eq!(
            done["conversation"]["error"],
            format!("latest {}", anchors[1]),
            "the session's latest user message goes to the agent"
        );
        let events = captured.0.lock().clone();
        let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["create", "rewind"]);
        let detail = events[1].detail.clone().unwrap();
        assert_eq!(
            detail,
            json!({"message_uuid": anchors[0], "files": null, "conversation": true})
        );
        api.shutdown().await;
    }
}
