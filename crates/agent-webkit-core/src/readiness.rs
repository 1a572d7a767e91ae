//! Readiness (`GET /readyz`): whether this server can create a working session right now.
//!
//! Not ready while draining for shutdown ([`Api::start_draining`](crate::http::Api::start_draining)),
//! while the agent factory reports it cannot start agents
//! ([`AgentClientFactory::check_ready`]: for the Claude CLI, a missing or non-executable
//! `claude`), or while the failover persistence does not answer a read. The two checks are
//! cheap (no agent is started) and their verdict is cached for [`CACHE_FOR`], so a probe every
//! second costs at most one check per interval; draining is seen at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::agent::AgentClientFactory;
use crate::persist::SessionPersistence;

/// How long a check's verdict is reused.
pub const CACHE_FOR: Duration = Duration::from_secs(1);
/// How long the persistence may take to answer before it counts as unreachable.
pub const PERSISTENCE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the server is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    /// Stable reason code: `draining`, `agent_unavailable`, `persistence_unavailable`.
    pub reason: &'static str,
    /// For people.
    pub detail: String,
}

impl NotReady {
    /// The `/readyz` body.
    pub fn body(&self) -> serde_json::Value {
        json!(NotReadyBody {
            status: "not_ready",
            reason: self.reason,
            detail: self.detail.clone(),
        })
    }
}

/// The `GET /readyz` body when ready (200).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadyBody {
    /// Always `ready`.
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^ready$"))]
    pub status: &'static str,
}

impl ReadyBody {
    /// The only value: `{"status":"ready"}`.
    pub const READY: ReadyBody = ReadyBody { status: "ready" };
}

/// The `GET /readyz` body when not ready (503), from [`NotReady::body`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NotReadyBody {
    /// Always `not_ready`.
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^not_ready$"))]
    pub status: &'static str,
    /// Stable reason code: `draining` (shutting down), `agent_unavailable` (e.g. the CLI is
    /// missing), `persistence_unavailable` (the session database does not answer).
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = String, pattern = "^(draining|agent_unavailable|persistence_unavailable)$")
    )]
    pub reason: &'static str,
    /// For people.
    pub detail: String,
}

/// The readiness state an [`Api`](crate::http::Api) keeps.
pub(crate) struct Readiness {
    draining: AtomicBool,
    factory: Arc<dyn AgentClientFactory>,
    persistence: Option<Arc<dyn SessionPersistence>>,
    cached: tokio::sync::Mutex<Option<(Instant, Result<(), NotReady>)>>,
}

impl Readiness {
    pub(crate) fn new(
        factory: Arc<dyn AgentClientFactory>,
        persistence: Option<Arc<dyn SessionPersistence>>,
    ) -> Self {
        Self {
            draining: AtomicBool::new(false),
            factory,
            persistence,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// From now on the server reports `draining`.
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// The current verdict (concurrent probes share one check).
    pub(crate) async fn check(&self) -> Result<(), NotReady> {
        if self.draining.load(Ordering::Acquire) {
            return Err(NotReady {
                reason: "draining",
                detail: "the server is shutting down".into(),
            });
        }
        let mut cached = self.cached.lock().await;
        if let Some((at, verdict)) = &*cached {
            if at.elapsed() < CACHE_FOR {
                return verdict.clone();
            }
        }
        let verdict = self.check_now().await;
        let before = cached
            .as_ref()
            .map(|(_, v)| v.as_ref().map_err(|n| n.reason));
        if before != Some(verdict.as_ref().map_err(|n| n.reason)) {
            // Logged when it changes, not at every probe.
            match &verdict {
                Ok(()) => tracing::info!("ready"),
                Err(not_ready) => {
                    tracing::warn!(reason = not_ready.reason, detail = %not_ready.detail, "not ready")
                }
            }
        }
        *cached = Some((Instant::now(), verdict.clone()));
        verdict
    }

    async fn check_now(&self) -> Result<(), NotReady> {
        if let Err(detail) = self.factory.check_ready() {
            return Err(NotReady {
                reason: "agent_unavailable",
                detail,
            });
        }
        if let Some(persistence) = &self.persistence {
            // A read of a session that never exists: one indexed lookup.
            let probe = persistence.load("00000000-0000-0000-0000-000000000000", 1);
            let failed = match tokio::time::timeout(PERSISTENCE_TIMEOUT, probe).await {
                Ok(Ok(_)) => None,
                Ok(Err(err)) => Some(err.to_string()),
                Err(_) => Some(format!(
                    "no answer within {} s",
                    PERSISTENCE_TIMEOUT.as_secs()
                )),
            };
            if let Some(err) = failed {
                tracing::debug!(error = %err, "readiness: the session database does not answer");
                return Err(NotReady {
                    reason: "persistence_unavailable",
                    detail: "the session database does not answer".into(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The bodies on the wire (`docs/protocol-extensions.md`).
    #[test]
    fn bodies() {
        assert_eq!(
            serde_json::to_string(&ReadyBody::READY).unwrap(),
            r#"{"status":"ready"}"#
        );
        let not_ready = NotReady {
            reason: "draining",
            detail: "the server is shutting down".into(),
        };
        assert_eq!(
            not_ready.body().to_string(),
            r#"{"status":"not_ready","reason":"draining","detail":"the server is shutting down"}"#
        );
    }
}
