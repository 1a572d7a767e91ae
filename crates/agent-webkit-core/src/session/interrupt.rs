//! Interrupts, ordered after the message they stop.
//!
//! A user message is queued (`POST … user_message` answers 204 at once) and the loop hands it to
//! the agent later; an interrupt sent straight to the agent could overtake it, reach an idle agent
//! (which forgets it) and leave the turn to run to its end. So an interrupt goes through the loop,
//! which knows where the session's turn is:
//!
//! - the turn's message is still being handed over (`query` in flight): sent once it is written;
//! - a turn runs: sent now;
//! - no turn runs but a message is queued (from the client's view that is the running turn):
//!   sent once that message is written — the agent then ends the turn as it starts (the Claude
//!   CLI does, and answers with the message in `still_queued`; the replay agent does too);
//! - nothing runs or waits: sent now (an agent forgets an interrupt while idle).
//!
//! Messages queued behind a running turn are not touched (the wire protocol: an interrupt does
//! not clear queued messages). The loop never awaits an interrupt itself: each is sent on its own
//! task and answered to its caller from there.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::agent::{AgentClient, AgentError};

/// Where the caller of an interrupt waits for its outcome.
pub(crate) type InterruptReply = oneshot::Sender<Result<(), AgentError>>;

/// Where the session's turn is when an interrupt arrives (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TurnAt {
    /// The turn's message is being handed to the agent.
    Writing,
    /// A turn runs and its message has been written.
    Running,
    /// No turn runs; a message is queued and starts next.
    Queued,
    /// No turn runs and nothing is queued.
    Idle,
}

/// Interrupts the loop holds until the message they stop is written.
#[derive(Default)]
pub(crate) struct PendingInterrupts {
    /// For the message being written.
    after_write: Vec<InterruptReply>,
    /// For the queued message the loop takes next.
    next_turn: Vec<InterruptReply>,
}

impl PendingInterrupts {
    /// An interrupt arrived with the turn at `at`; `client` is the live agent's.
    pub(crate) fn request(
        &mut self,
        reply: InterruptReply,
        at: TurnAt,
        client: Option<Arc<dyn AgentClient>>,
    ) {
        match at {
            TurnAt::Writing => self.after_write.push(reply),
            TurnAt::Queued => self.next_turn.push(reply),
            TurnAt::Running | TurnAt::Idle => send(reply, client),
        }
    }

    /// The loop took the next queued message: interrupts waiting for it now wait for its write.
    pub(crate) fn turn_started(&mut self) {
        self.after_write.append(&mut self.next_turn);
    }

    /// The message being handed over is written (`client`: the agent to interrupt), or was not
    /// (`None`: there is no turn to stop, and the interrupts succeed as no-ops).
    pub(crate) fn written(&mut self, client: Option<Arc<dyn AgentClient>>) {
        for reply in self.after_write.drain(..) {
            send(reply, client.clone());
        }
    }
}

/// Interrupts `client` on a task of its own and answers `reply` from there; without a client
/// (hibernated, or nothing to stop) answers at once.
fn send(reply: InterruptReply, client: Option<Arc<dyn AgentClient>>) {
    match client {
        Some(client) => {
            tokio::spawn(async move {
                let _ = reply.send(client.interrupt().await);
            });
        }
        None => {
            let _ = reply.send(Ok(()));
        }
    }
}
