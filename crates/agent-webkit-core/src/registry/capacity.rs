//! The bound on live agents: slots ([`AgentSlots`](crate::agent::slots::AgentSlots) of
//! `max_live_agents`, one held by each live agent and by each of the factory's idle warm
//! spares), making room when a slot is needed (an idle spare first, then the least recently
//! active hibernatable session), idle hibernation, and the [`Revive`] that wakes a hibernated
//! session.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::future::join_all;
use futures_util::FutureExt;

use super::{Inner, SessionRegistry};
use crate::agent::slots::AgentSlot;
use crate::agent::{AgentContext, AgentError, SessionConfig};
use crate::permission::{PermissionHandle, PermissionRouter};
use crate::session::{AgentState, Revive, RuntimeSettings, Session, WakeError, Woken};

/// How often a waiting wake-up looks again for a session to hibernate (sessions become
/// hibernatable when their turn ends, which nothing signals to the registry).
const EVICT_RETRY: Duration = Duration::from_millis(100);

/// No free slot within the wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NoSlot;

impl SessionRegistry {
    /// A live-agent slot, when none is free releasing an idle warm spare first, then
    /// hibernating the least recently active hibernatable session (other than `exclude`),
    /// waiting at most `wait`. `Ok(None)`: unbounded.
    ///
    /// Idle spares hold slots of their own ([`crate::agent::slots`]), so sessions' agents plus
    /// spares never exceed the bound; the factory starts a spare only when a slot is free.
    pub(super) async fn agent_slot(
        &self,
        wait: Duration,
        exclude: Option<&str>,
    ) -> Result<Option<AgentSlot>, NoSlot> {
        let Some(slots) = self.inner.live_agents.clone() else {
            return Ok(None);
        };
        if let Some(slot) = slots.try_take() {
            return Ok(Some(slot));
        }
        let deadline = Instant::now() + wait;
        // In line for the next slot before making room, so the slot a released spare or a
        // hibernated session returns comes to this caller, not to a spare being started.
        let take = slots.take();
        tokio::pin!(take);
        loop {
            if let Some(slot) = take.as_mut().now_or_never() {
                return Ok(Some(slot));
            }
            // Spares are the first to go: releasing one returns its slot once it has exited.
            if self.inner.factory.release_spare().await {
                tracing::info!("released a warm spare to free an agent slot");
                continue;
            }
            if self.evict_one(exclude).await {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(NoSlot);
            }
            tokio::select! {
                slot = take.as_mut() => return Ok(Some(slot)),
                () = tokio::time::sleep(left.min(EVICT_RETRY)) => {}
            }
        }
    }

    /// Hibernates the least recently active session that can be; whether one was.
    async fn evict_one(&self, exclude: Option<&str>) -> bool {
        if !self.inner.hibernation {
            return false;
        }
        let mut candidates: Vec<(Instant, Arc<Session>)> = self
            .inner
            .sessions
            .read()
            .values()
            .filter(|s| {
                Some(s.id()) != exclude && !s.has_ended() && s.agent_state() == AgentState::Live
            })
            .map(|s| (s.last_active(), Arc::clone(s)))
            .collect();
        // Least recently active first. By instant, not by time since (each read at its own
        // "now", two sessions active microseconds apart could swap).
        candidates.sort_by_key(|c| c.0);
        for (_, session) in candidates {
            if session.hibernate().await {
                tracing::info!(session_id = %session.id(), "hibernated to free an agent slot");
                return true;
            }
        }
        false
    }

    /// Hibernates every live session whose agent has been quiet for `hibernate_after`.
    /// Returns how many were hibernated.
    pub(crate) async fn hibernate_quiet(&self) -> usize {
        let Some(after) = self.inner.config.hibernate_after else {
            return 0;
        };
        if !self.inner.hibernation {
            return 0;
        }
        let quiet: Vec<Arc<Session>> = self
            .inner
            .sessions
            .read()
            .values()
            .filter(|s| {
                !s.has_ended() && s.agent_state() == AgentState::Live && s.quiet_for() >= after
            })
            .cloned()
            .collect();
        join_all(quiet.iter().map(|s| s.hibernate()))
            .await
            .into_iter()
            .filter(|hibernated| *hibernated)
            .count()
    }

    /// Live agents right now (sessions whose agent runs or is starting).
    pub fn live_agents(&self) -> usize {
        self.inner
            .sessions
            .read()
            .values()
            .filter(|s| !s.has_ended() && s.agent_state() != AgentState::Hibernated)
            .count()
    }

    /// Sessions whose agent is hibernated right now.
    pub fn hibernated_agents(&self) -> usize {
        self.inner
            .sessions
            .read()
            .values()
            .filter(|s| !s.has_ended() && s.agent_state() == AgentState::Hibernated)
            .count()
    }

    /// Idle warm spares the factory holds right now (they count against `max_live_agents`).
    pub fn warm_spares(&self) -> usize {
        self.inner.factory.spare_count()
    }

    /// How a session started with `config` (and `resume`) gets its agent back after
    /// hibernation; `None` when its agent cannot resume.
    pub(super) fn reviver(
        &self,
        id: &str,
        config: &SessionConfig,
        resume: Option<&str>,
    ) -> Option<Arc<dyn Revive>> {
        if !self.inner.hibernation {
            return None;
        }
        Some(Arc::new(Reviver {
            inner: Arc::downgrade(&self.inner),
            id: id.to_owned(),
            config: config.clone(),
            resume: resume.unwrap_or(id).to_owned(),
        }))
    }
}

/// Wakes one hibernated session: a slot, then the factory with `AgentContext::resume`.
struct Reviver {
    inner: Weak<Inner>,
    id: String,
    config: SessionConfig,
    /// The agent's own session id to resume.
    resume: String,
}

#[async_trait]
impl Revive for Reviver {
    async fn revive(
        &self,
        router: Arc<PermissionRouter>,
        settings: RuntimeSettings,
    ) -> Result<Woken, WakeError> {
        let Some(inner) = self.inner.upgrade() else {
            return Err(AgentError::Disconnected.into());
        };
        let registry = SessionRegistry { inner };
        let inner = &registry.inner;
        let wait = inner.config.capacity_wait;
        let permit = registry
            .agent_slot(wait, Some(&self.id))
            .await
            .map_err(|NoSlot| WakeError::AtCapacity(wait))?;
        let (permissions, prompts) = PermissionHandle::for_session(router);
        let mut config = self.config.clone();
        config.model = settings.model;
        config.permission_mode = settings.permission_mode;
        config.mcp_servers = settings.mcp_servers;
        let ctx = AgentContext {
            session_id: self.id.clone(),
            config,
            permissions,
            store: inner.store.clone(),
            resume: Some(self.resume.clone()),
        };
        let connection = match crate::metrics::timed_agent_start(tokio::time::timeout(
            inner.config.start_timeout,
            inner.factory.create(ctx),
        ))
        .await
        {
            Ok(Ok(connection)) => connection,
            Ok(Err(err)) => return Err(err.into()),
            Err(_) => {
                return Err(AgentError::StartFailed(format!(
                    "the agent did not start within {:?}",
                    inner.config.start_timeout
                ))
                .into())
            }
        };
        Ok(Woken {
            connection,
            prompts,
            permit,
        })
    }
}
