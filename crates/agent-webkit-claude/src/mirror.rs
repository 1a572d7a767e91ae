//! Transcript mirroring (docs/claude-cli-protocol.md §5.2–5.4): `transcript_mirror` frames are
//! batched and appended to the configured [`SessionStore`].
//!
//! Semantics follow the SDK's `TranscriptMirrorBatcher`: a drain starts in the background when
//! more than 500 entries or 1 MiB are pending; the bridge flushes before delivering each
//! `result` (so a client that saw `result` can load the turn from the store) and when stdout
//! ends. Each append is tried 3 times (backoff 0.2 s, 0.8 s), but a timed-out attempt is not
//! retried (it may still land). Final failures are reported, never raised.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agent_webkit_core::store::{SessionKey, SessionStore};
use parking_lot::Mutex;
use serde_json::Value;

/// Pending entries that trigger a background drain.
pub const MAX_PENDING_ENTRIES: usize = 500;
/// Pending bytes that trigger a background drain.
pub const MAX_PENDING_BYTES: usize = 1024 * 1024;
const BACKOFF: [Duration; 2] = [Duration::from_millis(200), Duration::from_millis(800)];

/// Maps a mirror frame's `filePath` to a store key (docs/claude-cli-protocol.md §5.3); `None`
/// when the path is not under
/// `projects_dir` or has an unexpected shape.
pub fn file_path_to_key(projects_dir: &Path, file_path: &Path) -> Option<SessionKey> {
    let rel = file_path.strip_prefix(projects_dir).ok()?;
    let parts: Vec<&str> = rel
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    match parts.as_slice() {
        [project, file] => {
            let session = file.strip_suffix(".jsonl")?;
            (!session.is_empty()).then(|| SessionKey::main(*project, session))
        }
        [project, session, rest @ ..] if rest.len() >= 2 => {
            let mut sub: Vec<&str> = rest.to_vec();
            if let Some(last) = sub.last_mut() {
                *last = last.strip_suffix(".jsonl").unwrap_or(last);
            }
            Some(SessionKey::main(*project, *session).with_subpath(sub.join("/")))
        }
        _ => None,
    }
}

/// A mirror failure to report as a session `error` event.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorError {
    /// The key that failed (`None`: the path could not be mapped).
    pub key: Option<SessionKey>,
    /// What went wrong.
    pub error: String,
}

#[derive(Default)]
struct Pending {
    batches: Vec<(String, Vec<Value>)>,
    entries: usize,
    bytes: usize,
}

/// Batches `transcript_mirror` entries into `SessionStore::append` calls.
pub struct MirrorBatcher {
    store: Arc<dyn SessionStore>,
    projects_dirs: Vec<PathBuf>,
    pending: Mutex<Pending>,
    drain_lock: tokio::sync::Mutex<()>,
    append_timeout: Duration,
    session_id: String,
}

impl std::fmt::Debug for MirrorBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorBatcher")
            .field("projects_dirs", &self.projects_dirs)
            .finish_non_exhaustive()
    }
}

impl MirrorBatcher {
    /// A batcher for a CLI whose `CLAUDE_CONFIG_DIR` is `config_dir`.
    pub fn new(
        store: Arc<dyn SessionStore>,
        config_dir: &Path,
        append_timeout: Duration,
        session_id: &str,
    ) -> Self {
        let projects = config_dir.join("projects");
        let mut projects_dirs = vec![projects.clone()];
        // The CLI reports real paths; accept the canonical spelling too.
        if let Ok(real) = config_dir.canonicalize() {
            let real = real.join("projects");
            if real != projects {
                projects_dirs.push(real);
            }
        }
        Self {
            store,
            projects_dirs,
            pending: Mutex::new(Pending::default()),
            drain_lock: tokio::sync::Mutex::new(()),
            append_timeout,
            session_id: session_id.to_owned(),
        }
    }

    /// Queues a frame's entries; returns whether a background drain should start.
    pub fn enqueue(&self, file_path: String, entries: Vec<Value>) -> bool {
        if entries.is_empty() {
            return false;
        }
        let bytes: usize = entries.iter().map(|e| e.to_string().len()).sum();
        let mut pending = self.pending.lock();
        pending.entries += entries.len();
        pending.bytes += bytes;
        pending.batches.push((file_path, entries));
        pending.entries > MAX_PENDING_ENTRIES || pending.bytes > MAX_PENDING_BYTES
    }

    fn key_for(&self, file_path: &str) -> Option<SessionKey> {
        let path = Path::new(file_path);
        self.projects_dirs
            .iter()
            .find_map(|dir| file_path_to_key(dir, path))
    }

    /// Appends everything pending, in enqueue order; returns the failures.
    pub async fn drain(&self) -> Vec<MirrorError> {
        let batch = std::mem::take(&mut *self.pending.lock());
        let _serial = self.drain_lock.lock().await;
        // Group by path in first-seen order.
        let mut groups: Vec<(String, Vec<Value>)> = Vec::new();
        for (path, entries) in batch.batches {
            match groups.iter_mut().find(|(p, _)| *p == path) {
                Some((_, list)) => list.extend(entries),
                None => groups.push((path, entries)),
            }
        }
        let mut errors = Vec::new();
        for (path, entries) in groups {
            let Some(key) = self.key_for(&path) else {
                tracing::warn!(session_id = %self.session_id, file_path = %path, "transcript_mirror path is outside the CLI's projects dir; dropped (CLAUDE_CONFIG_DIR differs?)");
                continue;
            };
            let count = entries.len();
            if let Err(error) = self.append_with_retry(&key, entries).await {
                tracing::warn!(session_id = %self.session_id, ?key, error = %error, "transcript mirror append failed");
                errors.push(MirrorError {
                    key: Some(key),
                    error,
                });
            } else {
                tracing::trace!(session_id = %self.session_id, ?key, count, "transcript mirrored");
            }
        }
        errors
    }

    async fn append_with_retry(&self, key: &SessionKey, entries: Vec<Value>) -> Result<(), String> {
        let mut attempt = 0;
        loop {
            match tokio::time::timeout(self.append_timeout, self.store.append(key, entries.clone()))
                .await
            {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(err)) => {
                    let Some(delay) = BACKOFF.get(attempt) else {
                        return Err(err.to_string());
                    };
                    tracing::debug!(session_id = %self.session_id, attempt, error = %err, "retrying transcript append");
                    tokio::time::sleep(*delay).await;
                    attempt += 1;
                }
                Err(_) => {
                    return Err(format!(
                        "append timed out after {:?} (not retried: it may still land)",
                        self.append_timeout
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use agent_webkit_core::store::InMemorySessionStore;
    use agent_webkit_core::store::{StoreCapabilities, StoreError};
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn paths_map_like_the_sdk() {
        let dir = Path::new("/c/projects");
        assert_eq!(
            file_path_to_key(dir, Path::new("/c/projects/-w/abc.jsonl")),
            Some(SessionKey::main("-w", "abc"))
        );
        assert_eq!(
            file_path_to_key(dir, Path::new("/c/projects/-w/abc/subagents/agent-1.jsonl")),
            Some(SessionKey::main("-w", "abc").with_subpath("subagents/agent-1"))
        );
        assert_eq!(
            file_path_to_key(dir, Path::new("/c/projects/-w/abc/x.jsonl")),
            None
        );
        assert_eq!(
            file_path_to_key(dir, Path::new("/elsewhere/-w/abc.jsonl")),
            None
        );
        assert_eq!(
            file_path_to_key(dir, Path::new("/c/projects/-w/abc.txt")),
            None
        );
    }

    #[tokio::test]
    async fn drains_in_order_grouped_by_path() {
        let store = Arc::new(InMemorySessionStore::new());
        let b = MirrorBatcher::new(
            store.clone(),
            Path::new("/cfg"),
            Duration::from_secs(5),
            "s",
        );
        let main = "/cfg/projects/p/s.jsonl".to_owned();
        let sub = "/cfg/projects/p/s/subagents/agent-1.jsonl".to_owned();
        assert!(!b.enqueue(main.clone(), vec![json!({"type":"user","uuid":"1"})]));
        b.enqueue(sub.clone(), vec![json!({"type":"user","uuid":"a"})]);
        b.enqueue(main.clone(), vec![json!({"type":"last-prompt"})]);
        b.enqueue("/other/x.jsonl".into(), vec![json!({"type":"x"})]);
        assert!(b.drain().await.is_empty());
        let loaded = store
            .load(&SessionKey::main("p", "s"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            loaded,
            vec![
                json!({"type":"user","uuid":"1"}),
                json!({"type":"last-prompt"})
            ]
        );
        let loaded = store
            .load(&SessionKey::main("p", "s").with_subpath("subagents/agent-1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(loaded.len(), 1);
        // Thresholds trigger a background drain.
        let many: Vec<Value> = (0..=MAX_PENDING_ENTRIES)
            .map(|i| json!({"type":"x","i":i}))
            .collect();
        assert!(b.enqueue(main, many));
    }

    struct Flaky {
        fails: AtomicUsize,
        inner: InMemorySessionStore,
    }

    #[async_trait::async_trait]
    impl SessionStore for Flaky {
        async fn append(&self, key: &SessionKey, entries: Vec<Value>) -> Result<(), StoreError> {
            if self.fails.load(Ordering::SeqCst) > 0 {
                self.fails.fetch_sub(1, Ordering::SeqCst);
                return Err(StoreError::Backend("down".into()));
            }
            self.inner.append(key, entries).await
        }
        async fn load(&self, key: &SessionKey) -> Result<Option<Vec<Value>>, StoreError> {
            self.inner.load(key).await
        }
        fn capabilities(&self) -> StoreCapabilities {
            StoreCapabilities::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_twice_then_reports() {
        let store = Arc::new(Flaky {
            fails: AtomicUsize::new(2),
            inner: InMemorySessionStore::new(),
        });
        let b = MirrorBatcher::new(
            store.clone(),
            Path::new("/cfg"),
            Duration::from_secs(5),
            "s",
        );
        b.enqueue("/cfg/projects/p/s.jsonl".into(), vec![json!({"type":"x"})]);
        assert!(b.drain().await.is_empty(), "third attempt succeeds");
        store.fails.store(3, Ordering::SeqCst);
        b.enqueue("/cfg/projects/p/s.jsonl".into(), vec![json!({"type":"y"})]);
        let errors = b.drain().await;
        assert_eq!(errors.len(), 1);
        assert!(errors[0].error.contains("down"));
        assert_eq!(
            store
                .load(&SessionKey::main("p", "s"))
                .await
                .unwrap()
                .unwrap(),
            vec![json!({"type":"x"})]
        );
    }
}
