//! User-message anchors and rewind: the session chooses each user message's uuid (announced by
//! a `user_message` event when its turn starts, used by the agent as the message's transcript
//! id), remembers the anchors of its conversation, and rewinds files and/or the conversation
//! to one of them between turns (docs/protocol-extensions.md, "Anchors, fork and rewind").

use serde::Serialize;

use crate::agent::rewind::RewindError;
use crate::agent::{AgentClient, AgentError};
use crate::event_log::{EventLog, LoggedEvent};
use crate::models::anchors::{RewindRequest, RewoundData, NOT_RESTORED};
use crate::models::{EventKind, UserContent};

use super::Session;

/// Why a rewind was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewindRefusal {
    /// A turn runs or user messages are queued (409 `turn_running`).
    #[error("a turn is running; rewind between turns")]
    TurnRunning,
    /// `message_uuid` is no user message of this session's conversation (400
    /// `unknown_message`).
    #[error("message_uuid is not a user message of this session")]
    UnknownMessage,
    /// Files were asked but file checkpointing is off (409 `checkpointing_disabled`).
    #[error("file checkpointing is off for this session")]
    CheckpointingDisabled,
    /// The session's agent is hibernated and could not be woken for the rewind (409
    /// `agent_not_live`).
    #[error("the session's agent is hibernated and could not be woken; retry")]
    NotLive,
    /// The session is closed.
    #[error("session closed")]
    Closed,
    /// The agent failed.
    #[error(transparent)]
    Agent(AgentError),
}

/// `user_message` data, serialised without copying the content.
#[derive(Serialize)]
struct Announce<'a> {
    uuid: &'a str,
    content: &'a UserContent,
}

/// The anchors a session knows: the uuids of its conversation's user messages, in order.
pub(super) struct Anchors {
    list: Vec<String>,
    /// `list` was read from the whole log. Not yet for a log restored with a stored part:
    /// `list` then holds the anchors of the events in memory and those announced since, and
    /// the first lookup of an unknown uuid reads the rest (`Session::has_anchor`).
    complete: bool,
}

/// The anchors of a (restored) log, after those a fork inherited.
pub(super) fn anchors_of(inherited: &[String], log: &EventLog) -> Anchors {
    Anchors {
        list: anchors_in(inherited, log.snapshot()),
        complete: !log.has_stored_part(),
    }
}

/// `inherited` then the `user_message` uuids of `events`, less those a `rewound` event cut.
fn anchors_in(inherited: &[String], events: Vec<LoggedEvent>) -> Vec<String> {
    let mut anchors: Vec<String> = inherited.to_vec();
    for event in events {
        match event.kind() {
            EventKind::UserMessage => {
                if let Some(uuid) = event.data().get("uuid").and_then(|v| v.as_str()) {
                    anchors.push(uuid.to_owned());
                }
            }
            EventKind::Rewound => {
                let data = event.data();
                let cut = data["conversation"]["rewound"].as_bool() == Some(true);
                if let (true, Some(uuid)) = (cut, data["message_uuid"].as_str()) {
                    if let Some(at) = anchors.iter().position(|a| a == uuid) {
                        anchors.truncate(at);
                    }
                }
            }
            _ => {}
        }
    }
    anchors
}

impl Session {
    /// The user messages of this session's conversation up to and including `uuid` (all of
    /// them with `None`): what a fork from it inherits.
    pub(crate) async fn anchors_through(&self, uuid: Option<&str>) -> Vec<String> {
        self.complete_anchors().await;
        let list = self.anchors.lock().list.clone();
        match uuid.and_then(|u| list.iter().position(|a| a == u)) {
            Some(at) => list[..=at].to_vec(),
            None => list,
        }
    }

    /// Whether `uuid` is a user message of this session's conversation (the first lookup of
    /// an unknown uuid in a restored session reads the ring's stored part).
    pub(crate) async fn has_anchor(&self, uuid: &str) -> bool {
        let known = |anchors: &Anchors| anchors.list.iter().any(|a| a == uuid);
        if known(&self.anchors.lock()) {
            return true;
        }
        self.complete_anchors().await;
        known(&self.anchors.lock())
    }

    /// Reads the anchors of a restored log's stored part, once (see [`Anchors::complete`]).
    async fn complete_anchors(&self) {
        if self.anchors.lock().complete {
            return;
        }
        let mut list = anchors_in(&self.meta.inherited_anchors, self.log.history().await);
        let mut anchors = self.anchors.lock();
        if !anchors.complete {
            // Announced while the history was read: keep them.
            for announced in anchors.list.drain(..) {
                if !list.contains(&announced) {
                    list.push(announced);
                }
            }
            anchors.list = list;
            anchors.complete = true;
        }
    }

    /// For an agent with anchors: a fresh uuid for the user message about to be sent,
    /// announced with a `user_message` event (the start of its turn).
    pub(super) fn announce_user_message(
        &self,
        client: &dyn AgentClient,
        content: &UserContent,
    ) -> Option<String> {
        if !client.supports_anchors() {
            return None;
        }
        let uuid = uuid::Uuid::new_v4().to_string();
        self.anchors.lock().list.push(uuid.clone());
        self.append(
            EventKind::UserMessage,
            &Announce {
                uuid: &uuid,
                content,
            },
        );
        tracing::debug!(session_id = %self.id, message_uuid = %uuid, "user message anchored");
        Some(uuid)
    }

    /// Rewinds files and/or the conversation to just before the user message
    /// `request.message_uuid`, between turns; unless a dry run, appends `rewound` and forgets
    /// the anchors the conversation lost.
    pub async fn rewind(&self, request: RewindRequest) -> Result<RewoundData, RewindRefusal> {
        if self.cancel.is_cancelled() {
            return Err(RewindRefusal::Closed);
        }
        self.input();
        let queued = self.inbound.max_capacity() - self.inbound.capacity();
        if self.turn_running() || queued > 0 {
            return Err(RewindRefusal::TurnRunning);
        }
        if !self.has_anchor(&request.message_uuid).await {
            return Err(RewindRefusal::UnknownMessage);
        }
        // A client's request: a hibernated agent is woken for it (its file checkpoints are
        // gone with its process: the bridge reports files as not rewound).
        self.touch();
        if self.client().is_none() && !self.wake_for_request().await {
            if self.cancel.is_cancelled() {
                return Err(RewindRefusal::Closed);
            }
            return Err(RewindRefusal::NotLive);
        }
        self.touch();
        let client = self.client().ok_or(RewindRefusal::NotLive)?;
        let latest = self.anchors.lock().list.last().cloned();
        let outcome =
            client
                .rewind(&request, latest.as_deref())
                .await
                .map_err(|err| match err {
                    RewindError::CheckpointingDisabled => RewindRefusal::CheckpointingDisabled,
                    RewindError::UnknownMessage(_) => RewindRefusal::UnknownMessage,
                    RewindError::Agent(err) => RewindRefusal::Agent(err),
                })?;
        let cut = outcome.conversation.as_ref().is_some_and(|c| c.rewound);
        let data = RewoundData {
            message_uuid: request.message_uuid.clone(),
            dry_run: request.dry_run,
            files: outcome.files,
            conversation: outcome.conversation,
            not_restored: NOT_RESTORED.to_owned(),
        };
        if !request.dry_run {
            if cut {
                let list = &mut self.anchors.lock().list;
                if let Some(at) = list.iter().position(|a| *a == request.message_uuid) {
                    list.truncate(at);
                }
            }
            self.append(EventKind::Rewound, &data);
        }
        tracing::info!(session_id = %self.id, message_uuid = %request.message_uuid, dry_run = request.dry_run, conversation = cut, "rewind");
        Ok(data)
    }
}
