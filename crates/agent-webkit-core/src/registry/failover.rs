//! Cross-host failover: sessions persisted while they run, taken over by whichever host is
//! asked for one it does not hold, handed off on shutdown, and held by renewed leases.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{CreateError, SessionRegistry, Started};
use crate::event_log::{EventLog, OlderEvents, StoredEvent};
use crate::models::{ErrorData, EventKind};
use crate::persist::{spawn_event_writer, ActivityCell, Lease, SessionPersistence};
use crate::session::{Session, SessionMeta};

/// Failover settings: where sessions are persisted and who this host is.
#[derive(Clone)]
pub struct Failover {
    /// Shared by every host.
    pub persistence: Arc<dyn SessionPersistence>,
    /// This host's identity in leases (unique per process).
    pub host_id: String,
}

impl std::fmt::Debug for Failover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failover")
            .field("host_id", &self.host_id)
            .finish_non_exhaustive()
    }
}

/// Events a take-over renders at once: the newest of the ring (what a reconnecting client
/// asks for); the rest of the ring stays in the store, read back only if a client asks (see
/// `event_log`'s stored part). More are rendered when the tail does not reach back to the last
/// `result` (the unfinished turn is read from them).
const RESTORE_TAIL: usize = 64;

/// A session's persisted events, as the stored part of its restored log.
struct PersistedEvents {
    persistence: Arc<dyn SessionPersistence>,
    session_id: String,
}

#[async_trait::async_trait]
impl OlderEvents for PersistedEvents {
    async fn fetch(&self, after_seq: u64, limit: usize) -> Result<Vec<StoredEvent>, String> {
        self.persistence
            .load_events(&self.session_id, after_seq, limit)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Why a session this host does not hold could not be taken over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// Another live host owns it (HTTP 503 + `Retry-After`).
    #[error("Session is active on another host ({owner}); retry in {retry_after_secs} s")]
    HeldElsewhere {
        /// The owning host.
        owner: String,
        /// Seconds until its lease expires.
        retry_after_secs: u64,
    },
    /// The persistence backend failed (HTTP 503).
    #[error("Session persistence unavailable: {0}")]
    Persistence(String),
    /// Resuming the agent failed.
    #[error(transparent)]
    Create(#[from] CreateError),
    /// This host's policy refuses the stored session (cwd outside its roots, or a permission
    /// mode or model it does not allow); details in the log.
    #[error("This host may not run this session: its working directory, permission mode or model is not allowed here")]
    Refused(String),
}
/// Whether the log ends inside a turn (events after the last `result`, other than
/// `session_ready`), and the prompts asked in that unfinished turn.
fn unfinished_turn(events: &[StoredEvent]) -> (bool, Vec<String>) {
    let start = events
        .iter()
        .rposition(|e| e.event == EventKind::Result.as_str())
        .map_or(0, |i| i + 1);
    let tail = &events[start..];
    // The `usage` event that follows a `result` belongs to the ended turn.
    let interrupted = tail.iter().any(|e| {
        e.event != EventKind::SessionReady.as_str() && e.event != EventKind::Usage.as_str()
    });
    let prompts = tail
        .iter()
        .filter(|e| {
            e.event == EventKind::PermissionRequest.as_str()
                || e.event == EventKind::AskUserQuestion.as_str()
                || e.event == EventKind::HookDecisionRequest.as_str()
        })
        .filter_map(|e| {
            serde_json::from_str::<serde_json::Value>(&e.data)
                .ok()?
                .get("correlation_id")?
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    (interrupted, prompts)
}

impl SessionRegistry {
    /// Waits until a session's event writer has persisted everything (its log is closed).
    pub(super) async fn finish_writer(&self, id: &str) {
        let writer = self.inner.writers.lock().remove(id);
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }

    pub(super) fn attach_writer(
        &self,
        id: &str,
        log: &Arc<EventLog>,
        failover: &Failover,
        activity: Arc<ActivityCell>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        log.set_sink(tx);
        let writer = spawn_event_writer(
            Arc::clone(&failover.persistence),
            id.to_owned(),
            rx,
            Arc::downgrade(log),
            activity,
        );
        self.inner.writers.lock().insert(id.to_owned(), writer);
    }

    /// The session with this id: the live one here, or — with failover — the one another host
    /// held, taken over now (its log restored so `Last-Event-ID` continues, its agent resumed).
    /// `Ok(None)`: no such session anywhere.
    pub async fn get_or_resume(&self, id: &str) -> Result<Option<Arc<Session>>, ResumeError> {
        if let Some(session) = self.get(id) {
            return Ok(Some(session));
        }
        let Some(failover) = self.inner.failover.clone() else {
            return Ok(None);
        };
        if self.inner.shutting_down.load(Ordering::Acquire)
            || crate::session_id::validate(id).is_err()
        {
            return Ok(None);
        }
        self.gated(id, async {
            match self.get(id) {
                Some(session) => Ok(Some(session)),
                None => self.take_over(id, &failover).await,
            }
        })
        .await
    }

    /// Runs `work` holding `id`'s gate: take-overs of `id` wait until it is done. Removals and
    /// hand-offs hold it too, so this host never takes back a session it is still closing
    /// (its lease is still this host's; a restarted host with the same id relies on that).
    pub(super) async fn gated<T>(&self, id: &str, work: impl std::future::Future<Output = T>) -> T {
        let gate = Arc::clone(self.inner.resuming.lock().entry(id.to_owned()).or_default());
        let outcome = {
            let _turn = gate.lock().await;
            work.await
        };
        self.inner.drop_gate(id, &gate);
        outcome
    }

    async fn take_over(
        &self,
        id: &str,
        failover: &Failover,
    ) -> Result<Option<Arc<Session>>, ResumeError> {
        let inner = &self.inner;
        let persistence = &failover.persistence;
        let backend = |e: crate::persist::PersistError| ResumeError::Persistence(e.to_string());
        let ring = inner.config.ring_size;
        let tail = ring.min(RESTORE_TAIL);
        let Some((record, mut events)) = persistence.load(id, tail).await.map_err(backend)? else {
            return Ok(None);
        };
        let mut partial = events.len() >= tail && ring > tail;
        if partial && !events.iter().any(|e| e.event == EventKind::Result.as_str()) {
            // A long turn without its start in the tail: render the whole ring.
            match persistence.load(id, ring).await.map_err(backend)? {
                Some((_, all)) => events = all,
                None => return Ok(None),
            }
            partial = false;
        }
        // The oldest seq the store holds: the stored part runs from there to the tail.
        let older = if partial {
            let oldest = persistence.load_events(id, 0, 1).await.map_err(backend)?;
            oldest.first().map(|e| {
                let source: Arc<dyn OlderEvents> = Arc::new(PersistedEvents {
                    persistence: Arc::clone(persistence),
                    session_id: id.to_owned(),
                });
                (e.seq, source)
            })
        } else {
            None
        };
        if events
            .last()
            .is_some_and(|e| e.event == EventKind::Done.as_str())
        {
            // It ended (agent exit) on its host: gone for good.
            let _ = persistence.delete(id).await;
            return Ok(None);
        }
        // The listing's totals continue from what the previous host wrote, and the agent
        // resumes with the model and mode the client last set (as a wake-up does).
        let activity = match persistence.get(id).await.map_err(backend)? {
            Some(listed) => listed.activity,
            None => return Ok(None),
        };
        let mut config = record.config();
        config.model.clone_from(&activity.model);
        config.permission_mode.clone_from(&activity.permission_mode);
        if let Some(servers) = &activity.mcp_servers {
            config.mcp_servers = (!servers.is_empty()).then(|| servers.clone());
        }
        if let Some(check) = inner.take_over_check.get() {
            check(&config).map_err(ResumeError::Refused)?;
        }
        match persistence
            .acquire(id, &failover.host_id, inner.config.lease)
            .await
            .map_err(backend)?
        {
            Lease::Acquired => {}
            Lease::Gone => return Ok(None),
            Lease::HeldBy {
                owner,
                expires_at_ms,
            } => {
                let left = expires_at_ms.saturating_sub(crate::persist::now_ms());
                return Err(ResumeError::HeldElsewhere {
                    owner,
                    retry_after_secs: u64::try_from(left.max(0))
                        .unwrap_or(0)
                        .div_ceil(1000)
                        .max(1),
                });
            }
        }
        let reserved = inner.reserved.fetch_add(1, Ordering::AcqRel);
        if inner.config.max_sessions.is_some_and(|max| reserved >= max) {
            inner.reserved.fetch_sub(1, Ordering::AcqRel);
            let _ = persistence.release(id, &failover.host_id).await;
            return Err(CreateError::AtCapacity(inner.config.max_sessions.unwrap_or(0)).into());
        }
        let activity = Arc::new(ActivityCell::new(activity));
        let log = Arc::new(
            EventLog::restore(ring, &events, older).with_lag_budget(inner.config.lag_budget),
        );
        self.attach_writer(id, &log, failover, Arc::clone(&activity));
        tracing::info!(session_id = %id, host = %failover.host_id, last_seq = log.last_seq(), "taking over session");
        // The turn that was running on the old host is gone with its agent process: withdraw
        // its prompts and say so, so clients do not wait for what will not come.
        let (interrupted, prompts) = unfinished_turn(&events);
        for correlation_id in prompts {
            let mut data = ErrorData::new(
                "permission_cancelled",
                "the session's server restarted or handed it to another host; ask again",
            );
            data.correlation_id = Some(correlation_id);
            let _ = log.append(EventKind::Error, &data);
        }
        if interrupted {
            let _ = log.append(
                EventKind::Error,
                &ErrorData::new(
                    "agent_restarted",
                    "The session's server restarted or handed it to another host, and its agent was resumed from the saved conversation; the turn in progress was interrupted.",
                ),
            );
        }
        let started = Started {
            activity,
            meta: SessionMeta::of(&record),
        };
        match self
            .launch(id, log, config, Some(record.agent_session_id), started)
            .await
        {
            Ok(session) => Ok(Some(session)),
            Err(err) => {
                inner.reserved.fetch_sub(1, Ordering::AcqRel);
                self.finish_writer(id).await;
                let _ = persistence.release(id, &failover.host_id).await;
                Err(err.into())
            }
        }
    }

    /// Stops a session here without ending it: streams end without `done`, its events are
    /// flushed and its lease released, so another host can take it over at once.
    pub(super) async fn hand_off(&self, id: &str) {
        self.gated(id, async {
            let Some(session) = self.inner.forget(id) else {
                return;
            };
            session.close_for_handoff().await;
            if let Some(failover) = &self.inner.failover {
                self.finish_writer(id).await;
                if let Err(err) = failover.persistence.release(id, &failover.host_id).await {
                    tracing::warn!(session_id = %id, error = %err, "could not release the lease");
                }
            }
        })
        .await;
    }

    /// Renews this host's leases; sessions it lost (deleted elsewhere, or taken over after a
    /// missed renewal) stop here: deleted ones end with `done`, taken-over ones without.
    pub(crate) async fn renew_leases(&self) {
        let Some(failover) = self.inner.failover.clone() else {
            return;
        };
        // Ended sessions are not renewed: their stored log ends with `done`, so no host takes
        // them over (see `take_over`), and they stay readable here until their retention ends.
        let ids: Vec<String> = self
            .inner
            .sessions
            .read()
            .values()
            .filter(|s| !s.has_ended())
            .map(|s| s.id().to_owned())
            .collect();
        if ids.is_empty() {
            return;
        }
        let lost = match failover
            .persistence
            .renew(&failover.host_id, &ids, self.inner.config.lease)
            .await
        {
            Ok(lost) => lost,
            Err(err) => {
                tracing::warn!(error = %err, "lease renewal failed; retrying next tick");
                return;
            }
        };
        for id in lost {
            let deleted = matches!(failover.persistence.load(&id, 0).await, Ok(None));
            tracing::info!(session_id = %id, deleted, "lease lost");
            let Some(session) = self.inner.forget(&id) else {
                continue;
            };
            if deleted {
                session.close().await;
            } else {
                session.close_for_handoff().await;
            }
            self.inner.writers.lock().remove(&id);
        }
    }
}
