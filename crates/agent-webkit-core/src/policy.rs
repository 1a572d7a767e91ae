//! The operator's policy for what clients may choose: permission modes, models, and where
//! permission rules sent back in a `permission_response` may be written.

use serde_json::Value;

/// Permission modes that keep the agent asking (allowed unless the operator says otherwise).
pub const PROMPTING_MODES: &[&str] = &["default", "acceptEdits", "plan"];

/// Where a client's `updated_permissions` rules may go without an operator opt-in.
const SESSION_DESTINATION: &str = "session";
/// Destinations the CLI writes to settings files (later sessions inherit them).
pub const SETTINGS_DESTINATIONS: &[&str] = &["userSettings", "projectSettings", "localSettings"];

/// What clients may choose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPolicy {
    /// Permission modes a client may request (at create, `set_permission_mode`, and a
    /// `setMode` permission update). Default: [`PROMPTING_MODES`].
    pub permission_modes: Vec<String>,
    /// Models a client may request; `None`: any.
    pub models: Option<Vec<String>>,
    /// Whether `updated_permissions` may name settings-file destinations
    /// ([`SETTINGS_DESTINATIONS`]); otherwise only `session`.
    pub allow_settings_rules: bool,
    /// Which MCP servers clients may add (default: none).
    pub mcp: crate::mcp::policy::McpPolicy,
}

impl Default for ClientPolicy {
    fn default() -> Self {
        Self {
            permission_modes: PROMPTING_MODES.iter().map(|m| (*m).to_owned()).collect(),
            models: None,
            allow_settings_rules: false,
            mcp: crate::mcp::policy::McpPolicy::default(),
        }
    }
}

/// A client's choice the policy refuses (HTTP 400 with [`code`](Self::code)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The permission mode is not allowed.
    #[error("permission mode {mode:?} is not allowed on this server; allowed: {allowed}")]
    PermissionMode {
        /// The requested mode.
        mode: String,
        /// The allowed modes, comma-separated.
        allowed: String,
    },
    /// The model is not allowed.
    #[error("model {model:?} is not allowed on this server; allowed: {allowed}")]
    Model {
        /// The requested model.
        model: String,
        /// The allowed models, comma-separated.
        allowed: String,
    },
    /// A permission update names a destination the client may not write to.
    #[error("updated_permissions destination {destination:?} is not allowed on this server; allowed: {allowed}")]
    Destination {
        /// The destination asked for (`(missing)` when absent).
        destination: String,
        /// The allowed destinations, comma-separated.
        allowed: String,
    },
}

impl PolicyError {
    /// The error `code` of the 400 response.
    pub fn code(&self) -> &'static str {
        match self {
            PolicyError::PermissionMode { .. } => "permission_mode_not_allowed",
            PolicyError::Model { .. } => "model_not_allowed",
            PolicyError::Destination { .. } => "permission_destination_not_allowed",
        }
    }
}

impl ClientPolicy {
    /// The policy with `mode` allowed too (the server's own configured default mode).
    pub fn allowing_mode(mut self, mode: &str) -> Self {
        if !self.permission_modes.iter().any(|m| m == mode) {
            self.permission_modes.push(mode.to_owned());
        }
        self
    }

    /// Checks a requested permission mode.
    pub fn check_mode(&self, mode: &str) -> Result<(), PolicyError> {
        if self.permission_modes.iter().any(|m| m == mode) {
            return Ok(());
        }
        Err(PolicyError::PermissionMode {
            mode: mode.to_owned(),
            allowed: self.permission_modes.join(", "),
        })
    }

    /// Checks a requested model.
    pub fn check_model(&self, model: &str) -> Result<(), PolicyError> {
        match &self.models {
            Some(models) if !models.iter().any(|m| m == model) => Err(PolicyError::Model {
                model: model.to_owned(),
                allowed: models.join(", "),
            }),
            _ => Ok(()),
        }
    }

    /// Checks the optional mode and model of a session configuration.
    pub fn check_session(
        &self,
        model: Option<&str>,
        permission_mode: Option<&str>,
    ) -> Result<(), PolicyError> {
        if let Some(mode) = permission_mode {
            self.check_mode(mode)?;
        }
        if let Some(model) = model {
            self.check_model(model)?;
        }
        Ok(())
    }

    /// Checks a client's `updated_permissions`: each update's `destination` must be allowed,
    /// and a `setMode` update's `mode` must be an allowed permission mode.
    pub fn check_updates(&self, updates: &[Value]) -> Result<(), PolicyError> {
        for update in updates {
            let destination = update.get("destination").and_then(Value::as_str);
            let allowed = destination == Some(SESSION_DESTINATION)
                || (self.allow_settings_rules
                    && destination.is_some_and(|d| SETTINGS_DESTINATIONS.contains(&d)));
            if !allowed {
                let mut allowed = vec![SESSION_DESTINATION];
                if self.allow_settings_rules {
                    allowed.extend_from_slice(SETTINGS_DESTINATIONS);
                }
                return Err(PolicyError::Destination {
                    destination: destination.unwrap_or("(missing)").to_owned(),
                    allowed: allowed.join(", "),
                });
            }
            if update.get("type").and_then(Value::as_str) == Some("setMode") {
                let mode = update.get("mode").and_then(Value::as_str).unwrap_or("");
                self.check_mode(mode)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn default_allows_only_prompting_modes() {
        let policy = ClientPolicy::default();
        for mode in ["default", "acceptEdits", "plan"] {
            assert_eq!(policy.check_mode(mode), Ok(()));
        }
        for mode in ["bypassPermissions", "dontAsk", "auto", ""] {
            let err = policy.check_mode(mode).unwrap_err();
            assert_eq!(err.code(), "permission_mode_not_allowed");
            assert!(
                err.to_string().contains("default, acceptEdits, plan"),
                "{err}"
            );
        }
        let server_default = policy.allowing_mode("bypassPermissions");
        assert_eq!(server_default.check_mode("bypassPermissions"), Ok(()));
    }

    #[test]
    fn models_optional_allow_list() {
        let mut policy = ClientPolicy::default();
        assert_eq!(policy.check_model("anything"), Ok(()));
        policy.models = Some(vec!["sonnet".into()]);
        assert_eq!(policy.check_model("sonnet"), Ok(()));
        assert_eq!(
            policy.check_model("opus").map_err(|e| e.code()),
            Err("model_not_allowed")
        );
        assert!(policy.check_session(Some("opus"), None).is_err());
        assert!(policy.check_session(None, Some("plan")).is_ok());
    }

    #[test]
    fn permission_updates_limited_to_session_by_default() {
        let mut policy = ClientPolicy::default();
        let session = json!({"type": "addRules", "rules": [{"toolName": "Bash"}], "behavior": "allow", "destination": "session"});
        let user = json!({"type": "addRules", "rules": [{"toolName": "Bash"}], "behavior": "allow", "destination": "userSettings"});
        let missing = json!({"type": "addRules", "rules": []});
        assert_eq!(policy.check_updates(std::slice::from_ref(&session)), Ok(()));
        for bad in [&user, &missing] {
            assert_eq!(
                policy
                    .check_updates(&[session.clone(), bad.clone()])
                    .map_err(|e| e.code()),
                Err("permission_destination_not_allowed")
            );
        }
        policy.allow_settings_rules = true;
        assert_eq!(policy.check_updates(&[user]), Ok(()));
        assert!(policy.check_updates(&[missing]).is_err());
        let bypass =
            json!({"type": "setMode", "mode": "bypassPermissions", "destination": "session"});
        assert_eq!(
            policy.check_updates(&[bypass]).map_err(|e| e.code()),
            Err("permission_mode_not_allowed")
        );
    }
}
