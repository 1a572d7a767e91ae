//! CLI → host control requests (docs/claude-cli-protocol.md §3.3): `can_use_tool` and
//! `hook_callback` become client prompts, `mcp_message` is answered "no such server", anything
//! else is refused; each runs in its own task and can be withdrawn by the CLI.

use std::sync::Arc;

use agent_webkit_core::permission::{PermissionDecision, PermissionError};
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use crate::control::{CliRequest, Shared};

impl Shared {
    pub(crate) fn spawn_cli_request(self: &Arc<Self>, frame: &Value) {
        let Some(request_id) = frame.get("request_id").and_then(Value::as_str) else {
            tracing::warn!(session_id = %self.session_id, "control_request without request_id ignored");
            return;
        };
        let request_id = request_id.to_owned();
        let request = frame.get("request").cloned().unwrap_or(Value::Null);
        let subtype = request
            .get("subtype")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let correlation_id = match subtype.as_str() {
            "can_use_tool" => Some(
                request
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .unwrap_or(&request_id)
                    .to_owned(),
            ),
            "hook_callback" => Some(request_id.clone()),
            _ => None,
        };
        let token = CancellationToken::new();
        self.cli_requests.lock().insert(
            request_id.clone(),
            CliRequest {
                token: token.clone(),
                correlation_id: correlation_id.clone(),
            },
        );
        tracing::debug!(session_id = %self.session_id, request_id, subtype, correlation_id, "CLI request");
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            let outcome = tokio::select! {
                biased;
                () = token.cancelled() => None,
                outcome = shared.handle_cli_request(&subtype, request, correlation_id) => outcome,
            };
            shared.cli_requests.lock().remove(&request_id);
            let Some(outcome) = outcome else {
                tracing::debug!(session_id = %shared.session_id, request_id, "CLI request withdrawn; not answered");
                return;
            };
            let response = match outcome {
                Ok(payload) => json!({"type": "control_response", "response": {
                    "subtype": "success", "request_id": request_id, "response": payload}}),
                Err(error) => json!({"type": "control_response", "response": {
                    "subtype": "error", "request_id": request_id, "error": error}}),
            };
            if let Err(err) = shared.write(&response).await {
                tracing::debug!(session_id = %shared.session_id, request_id, error = %err, "could not answer a CLI request");
            }
        });
    }

    /// `None`: withdrawn, do not answer. `Some(Err)`: answer with an error response.
    async fn handle_cli_request(
        &self,
        subtype: &str,
        request: Value,
        correlation_id: Option<String>,
    ) -> Option<Result<Value, String>> {
        match subtype {
            "can_use_tool" => self.can_use_tool(request).await,
            "hook_callback" => {
                self.hook_callback(request, correlation_id.unwrap_or_default())
                    .await
            }
            "mcp_message" => {
                let server = request
                    .get("server_name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let id = request
                    .get("message")
                    .and_then(|m| m.get("id"))
                    .cloned()
                    .unwrap_or(Value::Null);
                Some(Ok(json!({"mcp_response": {"jsonrpc": "2.0", "id": id,
                    "error": {"code": -32601, "message": format!("Server '{server}' not found")}}})))
            }
            other => {
                tracing::info!(session_id = %self.session_id, subtype = other, "refusing unsupported CLI request");
                Some(Err(format!("Unsupported control request subtype: {other}")))
            }
        }
    }

    async fn can_use_tool(&self, request: Value) -> Option<Result<Value, String>> {
        let tool_name = request
            .get("tool_name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let input = request.get("input").cloned().unwrap_or_else(|| json!({}));
        let mut context = Map::new();
        if let Some(id) = request.get("tool_use_id") {
            context.insert("tool_use_id".into(), id.clone());
        }
        for (from, to) in [
            ("permission_suggestions", "suggestions"),
            ("blocked_path", "blocked_path"),
            ("decision_reason", "decision_reason"),
            ("title", "title"),
            ("display_name", "display_name"),
            ("description", "description"),
            ("agent_id", "agent_id"),
        ] {
            if let Some(value) = request.get(from).filter(|v| !v.is_null()) {
                context.insert(to.into(), value.clone());
            }
        }
        let decision = self
            .permissions
            .can_use_tool(&tool_name, input.clone(), Value::Object(context))
            .await;
        match decision {
            Ok(PermissionDecision::Allow {
                updated_input,
                updated_permissions,
            }) => {
                let mut out = json!({
                    "behavior": "allow",
                    "updatedInput": updated_input.map(Value::Object).unwrap_or(input),
                });
                if let Some(perms) = updated_permissions {
                    out["updatedPermissions"] = Value::Array(perms);
                }
                Some(Ok(out))
            }
            Ok(PermissionDecision::Deny { message, interrupt }) => {
                let mut out = json!({"behavior": "deny", "message": message});
                if interrupt {
                    out["interrupt"] = Value::Bool(true);
                }
                Some(Ok(out))
            }
            Err(PermissionError::Cancelled(_)) => None,
            Err(err) => Some(Err(err.to_string())),
        }
    }

    async fn hook_callback(
        &self,
        request: Value,
        correlation_id: String,
    ) -> Option<Result<Value, String>> {
        let callback_id = request
            .get("callback_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let hook = callback_id
            .strip_prefix("hook_")
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| self.hooks.get(n));
        let Some(hook) = hook else {
            return Some(Err(format!("No hook callback found for ID: {callback_id}")));
        };
        let input = request.get("input").cloned().unwrap_or_else(|| json!({}));
        let event = input
            .get("hook_event_name")
            .and_then(Value::as_str)
            .unwrap_or(&hook.event)
            .to_owned();
        let decision = self
            .permissions
            .hook_decision(&correlation_id, &event, input);
        tokio::pin!(decision);
        tokio::select! {
            outcome = &mut decision => match outcome {
                Ok(decision) => Some(Ok(Value::Object(decision))),
                Err(PermissionError::Cancelled(_)) => None,
                Err(err) => Some(Err(err.to_string())),
            },
            () = tokio::time::sleep(hook.timeout) => {
                // Nobody answered: withdraw it from clients and give no opinion.
                self.permissions.cancel(&correlation_id, "hook decision timed out");
                Some(Ok(json!({})))
            }
        }
    }

    pub(crate) fn cancel_cli_request(&self, request_id: &str) {
        let Some(request) = self.cli_requests.lock().remove(request_id) else {
            return;
        };
        if let Some(correlation_id) = &request.correlation_id {
            if self
                .permissions
                .cancel(correlation_id, "withdrawn by the Claude CLI")
            {
                tracing::info!(session_id = %self.session_id, correlation_id, "prompt withdrawn by the CLI");
            }
        }
        request.token.cancel();
    }
}
