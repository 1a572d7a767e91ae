//! `Principal`: who a request comes from, and what that caller may do.
//!
//! Authentication ([`AuthConfig::authenticate`](crate::auth::AuthConfig::authenticate))
//! turns a request's `Authorization` header into a [`Principal`]: the shared one for the shared
//! token (or with auth disabled), or a user named by a JWT's `sub` with the restrictions its
//! `agent_webkit` claim carries (see `docs/auth.md`). The HTTP layer checks every session
//! request against it: a session belongs to the principal that created it
//! ([`Session::owner`](crate::session::Session::owner)), and anyone else is answered as if the
//! session did not exist.

use std::path::PathBuf;

/// The caller of a request, as authentication established it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Principal {
    /// The JWT `sub`; `None` for the shared principal (shared token, or auth disabled).
    pub sub: Option<String>,
    /// Sees and drives every session, whoever owns it (claim `agent_webkit.admin`).
    pub admin: bool,
    /// Sessions of this principal must have their `cwd` under this directory, besides the
    /// server's allowed roots; a create without `cwd` starts here (claim
    /// `agent_webkit.cwd_root`).
    pub cwd_root: Option<PathBuf>,
    /// Most concurrent sessions of this principal, when lower than the server's per-principal
    /// default (claim `agent_webkit.max_sessions`).
    pub max_sessions: Option<usize>,
    /// Permission modes this principal may choose, within the server's policy; `None`: any the
    /// server allows (claim `agent_webkit.permission_modes`).
    pub permission_modes: Option<Vec<String>>,
}

/// A permission mode this principal may not choose (HTTP 403, code
/// `permission_mode_forbidden`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("permission mode {mode:?} is not allowed for this user; allowed: {allowed}")]
pub struct ModeForbidden {
    /// The mode asked for.
    pub mode: String,
    /// The modes the principal may choose, comma-separated.
    pub allowed: String,
}

impl ModeForbidden {
    /// The error `code` of the 403 response.
    pub const CODE: &'static str = "permission_mode_forbidden";
}

/// The permission mode a create without one is checked as.
pub const DEFAULT_MODE: &str = "default";

impl Principal {
    /// The shared principal: the shared bearer token, or any caller with auth disabled. It owns
    /// the sessions it creates as "nobody" (`owner: None`), so it sees exactly those.
    pub fn shared() -> Self {
        Self::default()
    }

    /// A principal named by `sub`, with no restrictions.
    pub fn user(sub: impl Into<String>) -> Self {
        Self {
            sub: Some(sub.into()),
            ..Self::default()
        }
    }

    /// What a session created by this principal records as its owner.
    pub fn owner(&self) -> Option<&str> {
        self.sub.as_deref()
    }

    /// Whether this principal may see and drive a session owned by `owner`: its own (the
    /// shared principal: the unowned ones), or any when admin.
    pub fn may_access(&self, owner: Option<&str>) -> bool {
        self.admin || owner == self.sub.as_deref()
    }

    /// Checks a permission mode against the principal's allowed modes (`None`: the session
    /// starts in the agent's default mode, checked as [`DEFAULT_MODE`]).
    pub fn check_mode(&self, mode: Option<&str>) -> Result<(), ModeForbidden> {
        let Some(allowed) = &self.permission_modes else {
            return Ok(());
        };
        let mode = mode.unwrap_or(DEFAULT_MODE);
        if allowed.iter().any(|m| m == mode) {
            return Ok(());
        }
        Err(ModeForbidden {
            mode: mode.to_owned(),
            allowed: allowed.join(", "),
        })
    }

    /// Checks the `setMode` updates of a `permission_response`'s `updated_permissions`.
    pub(crate) fn check_updates(&self, updates: &[serde_json::Value]) -> Result<(), ModeForbidden> {
        for update in updates {
            if update.get("type").and_then(serde_json::Value::as_str) == Some("setMode") {
                let mode = update.get("mode").and_then(serde_json::Value::as_str);
                self.check_mode(Some(mode.unwrap_or("")))?;
            }
        }
        Ok(())
    }

    /// The cwd a session of this principal starts in: `requested` (relative paths against the
    /// principal's `cwd_root`, else the first allowed root), which must resolve inside the
    /// server's allowed roots and under `cwd_root`; without a request, `cwd_root` itself (or
    /// `None`: the agent's default). `Err` carries the reason, for the log only.
    pub(crate) fn resolve_cwd(
        &self,
        roots: &crate::config::AllowedRoots,
        requested: Option<&str>,
    ) -> Result<Option<PathBuf>, String> {
        let Some(root) = &self.cwd_root else {
            return requested.map(|cwd| roots.resolve(cwd)).transpose();
        };
        if root.is_relative() {
            return Err(format!(
                "the principal's cwd_root {} is not absolute",
                root.display()
            ));
        }
        let root = root.canonicalize().map_err(|e| {
            format!(
                "the principal's cwd_root {} is not usable: {e}",
                root.display()
            )
        })?;
        let wanted = match requested {
            Some(cwd) => root.join(cwd),
            None => root.clone(),
        };
        let wanted = wanted
            .to_str()
            .ok_or_else(|| "cwd is not UTF-8".to_owned())?;
        let cwd = roots.resolve(wanted)?;
        if cwd.starts_with(&root) {
            Ok(Some(cwd))
        } else {
            Err(format!(
                "cwd {} is outside the principal's cwd_root {}",
                cwd.display(),
                root.display()
            ))
        }
    }

    /// The session limit for this principal: the lower of the server's per-principal default
    /// and the principal's own. Only JWT principals have one (the shared principal is bounded
    /// by the server's `max_sessions` alone).
    pub fn session_limit(&self, server_default: Option<usize>) -> Option<usize> {
        self.sub.as_ref()?;
        match (server_default, self.max_sessions) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn access_follows_ownership() {
        let alice = Principal::user("alice");
        let shared = Principal::shared();
        let admin = Principal {
            admin: true,
            ..Principal::user("root")
        };
        assert!(alice.may_access(Some("alice")));
        assert!(!alice.may_access(Some("bob")));
        assert!(!alice.may_access(None));
        assert!(shared.may_access(None));
        assert!(!shared.may_access(Some("alice")));
        assert!(admin.may_access(Some("alice")) && admin.may_access(None));
    }

    #[test]
    fn modes_and_limits() {
        let p = Principal {
            permission_modes: Some(vec!["plan".into()]),
            max_sessions: Some(2),
            ..Principal::user("a")
        };
        assert!(p.check_mode(Some("plan")).is_ok());
        assert_eq!(p.check_mode(None).unwrap_err().mode, "default");
        assert!(Principal::user("b").check_mode(Some("acceptEdits")).is_ok());
        assert_eq!(p.session_limit(Some(5)), Some(2));
        assert_eq!(p.session_limit(Some(1)), Some(1));
        assert_eq!(p.session_limit(None), Some(2));
        assert_eq!(Principal::user("b").session_limit(None), None);
        assert_eq!(Principal::shared().session_limit(Some(1)), None);
    }
}
