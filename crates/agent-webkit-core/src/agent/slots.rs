//! Live-agent slots: the bound on live agent processes that a registry shares with its factory,
//! so agents started ahead of demand (warm spares) and sessions' agents are counted together.
//!
//! A slot is held from before an agent starts until after it has stopped. The registry takes one
//! for each session's agent; a factory that keeps warm spares takes one for each spare before
//! starting it (with [`AgentSlots::try_take`] or [`AgentSlots::take_when_free`], which never
//! jump ahead of a session waiting for a slot) and drops it once the spare has exited or been
//! handed to a session (which holds its own). So live agents never exceed the bound.

use std::sync::Arc;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// The live-agent slots of one registry (cheap to clone: shared).
#[derive(Clone)]
pub struct AgentSlots {
    semaphore: Arc<Semaphore>,
    /// Woken whenever a slot is returned.
    freed: Arc<Notify>,
    max: usize,
}

impl std::fmt::Debug for AgentSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSlots")
            .field("max", &self.max)
            .field("free", &self.free())
            .finish()
    }
}

/// One taken slot; dropping it returns the slot.
pub struct AgentSlot {
    permit: Option<OwnedSemaphorePermit>,
    freed: Arc<Notify>,
}

impl std::fmt::Debug for AgentSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSlot").finish_non_exhaustive()
    }
}

impl Drop for AgentSlot {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.freed.notify_waiters();
    }
}

impl AgentSlots {
    /// `max` slots (at least one).
    pub(crate) fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            semaphore: Arc::new(Semaphore::new(max)),
            freed: Arc::new(Notify::new()),
            max,
        }
    }

    /// The bound.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Slots free right now.
    pub fn free(&self) -> usize {
        self.semaphore.available_permits()
    }

    fn slot(&self, permit: OwnedSemaphorePermit) -> AgentSlot {
        AgentSlot {
            permit: Some(permit),
            freed: Arc::clone(&self.freed),
        }
    }

    /// A slot if one is free now.
    pub fn try_take(&self) -> Option<AgentSlot> {
        Arc::clone(&self.semaphore)
            .try_acquire_owned()
            .ok()
            .map(|permit| self.slot(permit))
    }

    /// Waits for a free slot without queueing: a slot returned while someone waits in
    /// line for one (a session making room) goes to them, never to this caller.
    pub async fn take_when_free(&self) -> AgentSlot {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(slot) = self.try_take() {
                return slot;
            }
            freed.await;
        }
    }

    /// Waits in line for a slot (first come, first served).
    pub(crate) async fn take(&self) -> AgentSlot {
        loop {
            // The semaphore is never closed.
            if let Ok(permit) = Arc::clone(&self.semaphore).acquire_owned().await {
                return self.slot(permit);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_slot_returned_goes_to_a_queued_taker_before_one_waiting_for_a_free_slot() {
        let slots = AgentSlots::new(1);
        let held = slots.try_take().unwrap();
        assert!(slots.try_take().is_none());
        let queued = tokio::spawn({
            let slots = slots.clone();
            async move { slots.take().await }
        });
        let opportunist = tokio::spawn({
            let slots = slots.clone();
            async move { slots.take_when_free().await }
        });
        // Let both start waiting (a current-thread runtime runs them at our yields).
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        drop(held);
        let first = queued.await.unwrap();
        assert!(!opportunist.is_finished());
        assert_eq!(slots.free(), 0);
        drop(first);
        let second = opportunist.await.unwrap();
        assert_eq!(slots.free(), 0);
        drop(second);
        assert_eq!(slots.free(), 1);
    }
}
