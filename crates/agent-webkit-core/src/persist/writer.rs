//! The event writer: persists a session's events as its log appends them, in batches.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{ActivityCell, SessionPersistence};
use crate::event_log::{EventLog, LoggedEvent, StoredEvent};
use crate::models::{ErrorData, EventKind};

/// Most events written in one `append_events` call.
const WRITE_BATCH: usize = 256;
/// How long the writer keeps retrying a failed write before it reports the store as down.
const WRITE_RETRY_BUDGET: Duration = Duration::from_secs(30);

/// Persists a session's events as the log appends them: whatever has accumulated while the
/// previous write was in flight goes in the next one (so batches grow with load and an idle
/// session's event is written at once). A failed write is retried with backoff, in order, for
/// [`WRITE_RETRY_BUDGET`]; past it the batch is reported as lost with an `error` event
/// (`code: "persistence_failed"`) and later events still go through. Each batch carries a
/// snapshot of the session's `activity` (the listing's fields), written in the same call.
/// Ends (after writing everything) when the log closes.
pub(crate) fn spawn_event_writer(
    persistence: Arc<dyn SessionPersistence>,
    session_id: String,
    mut events: mpsc::UnboundedReceiver<LoggedEvent>,
    log: Weak<EventLog>,
    activity: Arc<ActivityCell>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut batch: Vec<StoredEvent> = Vec::with_capacity(WRITE_BATCH);
        while let Some(first) = events.recv().await {
            batch.push(first.to_stored());
            while batch.len() < WRITE_BATCH {
                match events.try_recv() {
                    Ok(event) => batch.push(event.to_stored()),
                    Err(_) => break,
                }
            }
            let started = tokio::time::Instant::now();
            let mut delay = Duration::from_millis(50);
            let last_seq = batch[batch.len() - 1].seq;
            let activity = activity.snapshot();
            loop {
                let attempt = std::time::Instant::now();
                let written = persistence
                    .append_batch(&session_id, &batch, Some(&activity))
                    .await;
                crate::metrics::persist_write(attempt.elapsed(), written.is_ok());
                match written {
                    Ok(()) => {
                        if let Some(log) = log.upgrade() {
                            log.mark_durable(last_seq);
                        }
                        break;
                    }
                    Err(err) if started.elapsed() < WRITE_RETRY_BUDGET => {
                        tracing::warn!(session_id = %session_id, error = %err, first_seq = batch[0].seq, "persisting events failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(2));
                    }
                    Err(err) => {
                        tracing::error!(session_id = %session_id, error = %err, first_seq = batch[0].seq, count = batch.len(), "persisting events failed past the retry budget");
                        if let Some(log) = log.upgrade() {
                            // Do not hold the stream back forever: deliver them anyway.
                            log.mark_durable(last_seq);
                            let data = ErrorData::new(
                                "persistence_failed",
                                format!(
                                    "Events {}..={} could not be saved for failover: {err}",
                                    batch[0].seq,
                                    batch[batch.len() - 1].seq
                                ),
                            );
                            let _ = log.append(EventKind::Error, &data);
                        }
                        break;
                    }
                }
            }
            batch.clear();
        }
    })
}
