//! Server configuration shared by every adapter.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::agent::AgentClientFactory;
use crate::auth::{AuthConfig, MissingTokenError};
use crate::limits::ServerLimits;
use crate::policy::ClientPolicy;
use crate::registry::{Failover, RegistryConfig};
use crate::store::{InMemorySessionStore, SessionStore};

/// Default request body limit: 10 MiB (images arrive base64-encoded).
pub const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
/// Default SSE keepalive interval.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(15);

/// Everything needed to build the HTTP API; adapters take it as is.
#[derive(Clone)]
pub struct AppConfig {
    /// Bearer-token auth (default: from the environment, see [`AuthConfig::from_env`]).
    pub auth: AuthConfig,
    /// Builds each session's agent.
    pub agent_factory: Arc<dyn AgentClientFactory>,
    /// Transcript store handed to agents (default: in memory).
    pub session_store: Option<Arc<dyn SessionStore>>,
    /// Session lifetime and limits.
    pub registry: RegistryConfig,
    /// Largest accepted request body (larger: 413).
    pub max_body_bytes: usize,
    /// SSE keepalive interval.
    pub keepalive: Duration,
    /// A session's `cwd` must resolve inside one of these (default: the server's working
    /// directory).
    pub allowed_roots: Vec<PathBuf>,
    /// Cross-host failover (session persistence + this host's id); `None`: sessions live and
    /// die with this process.
    pub failover: Option<Failover>,
    /// What clients may choose (permission modes, models, permission-rule destinations).
    pub policy: ClientPolicy,
    /// Timeouts and caps against slow or greedy clients.
    pub limits: ServerLimits,
    /// Browser origins allowed to call the API (exact `scheme://host[:port]`); empty: no CORS.
    pub cors_origins: Vec<String>,
    /// Where audit events go (see [`crate::audit`]); default: one
    /// [`TracingAuditSink`](crate::audit::TracingAuditSink).
    pub audit_sinks: Vec<Arc<dyn crate::audit::AuditSink>>,
    /// Static pages served at paths the API does not use (the web console); `None`: 404.
    pub site: Option<Arc<dyn crate::site::StaticSite>>,
    /// Where session attachments are kept (`None`: the attachment endpoints answer 501).
    pub attachments: Option<crate::attachments::AttachmentsConfig>,
}

impl std::fmt::Debug for AppConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppConfig")
            .field("auth", &self.auth)
            .field("session_store", &self.session_store.is_some())
            .field("registry", &self.registry)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("keepalive", &self.keepalive)
            .field("allowed_roots", &self.allowed_roots)
            .field("failover", &self.failover)
            .field("policy", &self.policy)
            .field("limits", &self.limits)
            .field("cors_origins", &self.cors_origins)
            .field("audit_sinks", &self.audit_sinks.len())
            .field("site", &self.site)
            .field("attachments", &self.attachments)
            .finish_non_exhaustive()
    }
}

impl AppConfig {
    /// The defaults of the original server: auth from the environment, an in-memory store,
    /// idle timeout 300 s, ring of 1000, body limit 10 MiB, keepalive 15 s.
    pub fn new(agent_factory: Arc<dyn AgentClientFactory>) -> Self {
        Self {
            auth: AuthConfig::from_env(),
            agent_factory,
            session_store: Some(Arc::new(InMemorySessionStore::new())),
            registry: RegistryConfig::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            keepalive: DEFAULT_KEEPALIVE,
            allowed_roots: Vec::new(),
            failover: None,
            policy: ClientPolicy::default(),
            limits: ServerLimits::default(),
            cors_origins: Vec::new(),
            audit_sinks: vec![Arc::new(crate::audit::TracingAuditSink)],
            site: None,
            attachments: None,
        }
    }

    /// Sets the auth configuration.
    pub fn with_auth(mut self, auth: AuthConfig) -> Self {
        self.auth = auth;
        self
    }

    /// Sets the registry configuration.
    pub fn with_registry(mut self, registry: RegistryConfig) -> Self {
        self.registry = registry;
        self
    }

    /// Enables cross-host failover over `persistence`, as host `host_id`.
    pub fn with_failover(
        mut self,
        persistence: Arc<dyn crate::persist::SessionPersistence>,
        host_id: impl Into<String>,
    ) -> Self {
        self.failover = Some(Failover {
            persistence,
            host_id: host_id.into(),
        });
        self
    }

    /// Sets the session store.
    pub fn with_store(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.session_store = Some(store);
        self
    }
}

/// A configuration that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Auth enabled without a token.
    #[error(transparent)]
    MissingToken(#[from] MissingTokenError),
    /// An allowed root does not exist.
    #[error("allowed root {path} is not usable: {reason}")]
    BadRoot {
        /// The root.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Built outside a Tokio runtime.
    #[error("agent-webkit must be started inside a Tokio runtime")]
    NoRuntime,
    /// The attachment directory cannot be created.
    #[error("attachment directory {path} is not usable: {reason}")]
    BadAttachmentsDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Canonical allowed roots for session working directories.
#[derive(Debug, Clone)]
pub(crate) struct AllowedRoots {
    roots: Vec<PathBuf>,
}

impl AllowedRoots {
    pub(crate) fn new(roots: &[PathBuf]) -> Result<Self, ConfigError> {
        let roots = if roots.is_empty() {
            vec![std::env::current_dir().map_err(|e| ConfigError::BadRoot {
                path: PathBuf::from("."),
                reason: e.to_string(),
            })?]
        } else {
            roots.to_vec()
        };
        let roots = roots
            .into_iter()
            .map(|root| {
                root.canonicalize().map_err(|e| ConfigError::BadRoot {
                    path: root.clone(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { roots })
    }

    /// Resolves a requested cwd (relative paths against the first root) to a canonical
    /// directory inside a root, or explains why not (for the log only: the explanation is a
    /// filesystem oracle, so clients get one uniform answer).
    pub(crate) fn resolve(&self, requested: &str) -> Result<PathBuf, String> {
        if requested.contains('\0') {
            return Err("cwd must not contain NUL bytes".to_owned());
        }
        let requested_path = Path::new(requested);
        let joined = match self.roots.first() {
            Some(first) if requested_path.is_relative() => first.join(requested_path),
            _ => requested_path.to_path_buf(),
        };
        let canonical = joined
            .canonicalize()
            .map_err(|_| format!("cwd {requested:?} does not exist"))?;
        if !canonical.is_dir() {
            return Err(format!("cwd {requested:?} is not a directory"));
        }
        if self.roots.iter().any(|root| canonical.starts_with(root)) {
            Ok(canonical)
        } else {
            Err(format!(
                "cwd {requested:?} is outside the allowed roots ({})",
                self.roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }
}
