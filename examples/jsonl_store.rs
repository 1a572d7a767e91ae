//! A [`SessionStore`] in plain files: one JSON-lines file per transcript. The template for a
//! store of your own (Redis, S3, …); `docs/custom-store.md` walks through it.
//!
//! ```text
//! <root>/<project>/<session>/main.jsonl          the main transcript, one entry per line
//! <root>/<project>/<session>/sub/<subpath>.jsonl  subagent transcripts
//! <root>/<project>/<session>/summary.json         the summary sidecar (the fold's output)
//! ```
//!
//! Every key part becomes one file name through [`file_name`] (no `/`, no `.`, no `..`), so no
//! session id can point outside `root`. One process owns a directory: the uuid sets and the
//! per-session locks live in this process (several servers sharing sessions need a shared
//! store such as PostgreSQL).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use agent_webkit_core::store::{
    fold_session_summary, SessionKey, SessionListing, SessionStore, SessionSummary,
    StoreCapabilities, StoreError,
};
use async_trait::async_trait;
use serde_json::Value;

/// Longest encoded key part: file names stop at 255 bytes, and a subkey adds `.jsonl`.
const MAX_NAME: usize = 240;

/// A transcript store in a directory of JSON-lines files.
#[derive(Debug)]
pub struct JsonlSessionStore {
    root: PathBuf,
    /// One lock per session (main transcript, subkeys and summary together), so appends to a
    /// session are serialised and a delete never interleaves with them.
    sessions: Mutex<HashMap<(String, String), SessionLock>>,
    /// Last `mtime` handed out: strictly increasing epoch milliseconds.
    clock: AtomicI64,
}

/// The uuids already in each transcript of a session (`None`: the main one), read from the
/// file the first time this process writes it. They make `append` idempotent.
type Uuids = HashMap<Option<String>, HashSet<String>>;
type SessionLock = Arc<tokio::sync::Mutex<Uuids>>;

impl JsonlSessionStore {
    /// A store under `root` (created on first write, readable by this user only).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            sessions: Mutex::default(),
            clock: AtomicI64::new(0),
        }
    }

    fn session_dir(&self, project_key: &str, session_id: &str) -> Result<PathBuf, StoreError> {
        Ok(self
            .root
            .join(file_name(project_key)?)
            .join(file_name(session_id)?))
    }

    fn transcript(&self, key: &SessionKey) -> Result<PathBuf, StoreError> {
        let dir = self.session_dir(&key.project_key, &key.session_id)?;
        Ok(match &key.subpath {
            None => dir.join("main.jsonl"),
            Some(sub) => dir.join("sub").join(format!("{}.jsonl", file_name(sub)?)),
        })
    }

    /// The session's lock (created on first use; kept, so two tasks never hold different
    /// locks for one session).
    async fn lock(&self, key: &SessionKey) -> tokio::sync::OwnedMutexGuard<Uuids> {
        let id = (key.project_key.clone(), key.session_id.clone());
        let lock = {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(sessions.entry(id).or_default())
        };
        lock.lock_owned().await
    }

    /// A fresh `mtime`: now, or one past the last one if the clock has not moved.
    fn stamp(&self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let previous = self
            .clock
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or(now);
        now.max(previous + 1)
    }
}

/// One key part as one safe file name: `[a-z0-9_-]` stay, every other byte becomes `%XX`.
/// So `/`, `.` and `..` never reach the file system, and names differing only in case stay
/// apart on case-insensitive file systems. Empty or too long parts are refused.
pub fn file_name(part: &str) -> Result<String, StoreError> {
    let mut name = String::with_capacity(part.len());
    for byte in part.bytes() {
        match byte {
            b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' => name.push(char::from(byte)),
            _ => name.push_str(&format!("%{byte:02X}")),
        }
    }
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(StoreError::InvalidKey(format!(
            "{part:?}: must be 1 to {MAX_NAME} bytes once encoded"
        )));
    }
    Ok(name)
}

/// The key part a [`file_name`] came from (`None` for names this store did not write).
fn key_part(name: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(name.len());
    let mut rest = name.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(first);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

fn backend(err: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(err.to_string())
}

/// Runs blocking file I/O off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work).await.map_err(backend)?
}

/// Creates `dir` and its parents, readable by this user only (transcripts hold conversations).
fn create_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Opens `path` for appending (created `0600`).
fn open_append(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// The file's bytes; empty if it does not exist.
fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut file) => file.read_to_end(&mut bytes).map(|_| bytes),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(bytes),
        Err(err) => Err(err),
    }
}

/// The entries of a transcript file. Only complete lines count: a crash in the middle of an
/// append leaves a last line without its `\n`, and that line was never acknowledged.
fn parse(bytes: &[u8], path: &Path) -> Result<Vec<Value>, StoreError> {
    let complete = bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(&bytes[..0], |end| &bytes[..=end]);
    complete
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            serde_json::from_slice(line)
                .map_err(|e| backend(format!("{}: corrupt line: {e}", path.display())))
        })
        .collect()
}

/// Reads a transcript's uuids before the first write, and cuts off a torn last line (see
/// [`parse`]) so the next append starts on a line of its own.
fn recover(path: &Path) -> Result<HashSet<String>, StoreError> {
    let bytes = read(path).map_err(backend)?;
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if complete < bytes.len() {
        let file = OpenOptions::new().write(true).open(path).map_err(backend)?;
        file.set_len(complete as u64).map_err(backend)?;
    }
    Ok(parse(&bytes, path)?
        .iter()
        .filter_map(|entry| uuid_of(entry).map(str::to_owned))
        .collect())
}

fn uuid_of(entry: &Value) -> Option<&str> {
    entry.get("uuid").and_then(Value::as_str)
}

/// Replaces `path` atomically: write a temporary file, flush it to disk, rename it over.
fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = open_append(&tmp)?;
    file.set_len(0)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    fs::rename(tmp, path)
}

fn read_summary(path: &Path) -> Result<Option<SessionSummary>, StoreError> {
    let bytes = read(path).map_err(backend)?;
    if bytes.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| backend(format!("{}: {e}", path.display())))
}

/// The session directories of a project, with their session ids.
fn sessions_of(project_dir: &Path) -> Result<Vec<(String, PathBuf)>, StoreError> {
    let entries = match fs::read_dir(project_dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(backend(err)),
    };
    let mut sessions = Vec::new();
    for entry in entries {
        let entry = entry.map_err(backend)?;
        if let Some(id) = entry.file_name().to_str().and_then(key_part) {
            sessions.push((id, entry.path()));
        }
    }
    Ok(sessions)
}

fn modified_ms(path: &Path) -> Option<i64> {
    let modified = fs::metadata(path).ok()?.modified().ok()?;
    let since = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(since.as_millis()).ok()
}

#[async_trait]
impl SessionStore for JsonlSessionStore {
    async fn append(&self, key: &SessionKey, entries: Vec<Value>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let path = self.transcript(key)?;
        let summary_path = self
            .session_dir(&key.project_key, &key.session_id)?
            .join("summary.json");
        let mut uuids = self.lock(key).await;
        let stamp = self.stamp();
        let key = key.clone();
        blocking(move || {
            let known = match uuids.remove(&key.subpath) {
                Some(known) => known,
                None => recover(&path)?,
            };
            // Skip entries already stored (a retried batch) or repeated within this batch.
            let mut fresh = HashSet::new();
            let mut added = Vec::with_capacity(entries.len());
            let mut lines = Vec::new();
            for entry in entries {
                if let Some(uuid) = uuid_of(&entry) {
                    if known.contains(uuid) || !fresh.insert(uuid.to_owned()) {
                        continue;
                    }
                }
                serde_json::to_writer(&mut lines, &entry).map_err(backend)?;
                lines.push(b'\n');
                added.push(entry);
            }
            // The whole batch in one write to an O_APPEND file, then to disk: a crash leaves
            // whole lines plus at most one torn line, which `recover` cuts off. On an error
            // the uuid set stays out of the cache, so the next append re-reads the file.
            if let Some(dir) = path.parent() {
                create_dir(dir).map_err(backend)?;
            }
            let mut file = open_append(&path).map_err(backend)?;
            file.write_all(&lines).map_err(backend)?;
            file.sync_data().map_err(backend)?;
            uuids.insert(
                key.subpath.clone(),
                known.into_iter().chain(fresh).collect(),
            );
            // The summary sidecar: main transcripts only, folded over what was just added.
            if key.is_main() {
                let previous = read_summary(&summary_path)?;
                let mut summary = fold_session_summary(previous.as_ref(), &key, &added);
                summary.mtime = stamp;
                let json = serde_json::to_vec(&summary).map_err(backend)?;
                replace(&summary_path, &json).map_err(backend)?;
            }
            Ok(())
        })
        .await
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Vec<Value>>, StoreError> {
        let path = self.transcript(key)?;
        // Under the session's lock, so a load never sees half of a batch.
        let _session = self.lock(key).await;
        blocking(move || match fs::metadata(&path) {
            Ok(_) => Ok(Some(parse(&read(&path).map_err(backend)?, &path)?)),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
            Err(err) => Err(backend(err)),
        })
        .await
    }

    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities::ALL
    }

    async fn list_sessions(&self, project_key: &str) -> Result<Vec<SessionListing>, StoreError> {
        let project = self.root.join(file_name(project_key)?);
        blocking(move || {
            let mut listed = Vec::new();
            for (session_id, dir) in sessions_of(&project)? {
                let main = dir.join("main.jsonl");
                if !main.is_file() {
                    continue;
                }
                // The summary's stamp is this session's last write; the file's own time is
                // the fallback for a crash between the two writes.
                let mtime = match read_summary(&dir.join("summary.json"))? {
                    Some(summary) => summary.mtime,
                    None => modified_ms(&main).unwrap_or_default(),
                };
                listed.push(SessionListing { session_id, mtime });
            }
            Ok(listed)
        })
        .await
    }

    async fn list_session_summaries(
        &self,
        project_key: &str,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        let project = self.root.join(file_name(project_key)?);
        blocking(move || {
            let mut summaries = Vec::new();
            for (_, dir) in sessions_of(&project)? {
                summaries.extend(read_summary(&dir.join("summary.json"))?);
            }
            Ok(summaries)
        })
        .await
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), StoreError> {
        let dir = self.session_dir(&key.project_key, &key.session_id)?;
        let path = self.transcript(key)?;
        let mut uuids = self.lock(key).await;
        let main = key.is_main();
        let subpath = key.subpath.clone();
        blocking(move || {
            // A main key takes its subkeys and summary with it: the whole session directory.
            let removed = if main {
                uuids.clear();
                fs::remove_dir_all(&dir)
            } else {
                uuids.remove(&subpath);
                fs::remove_file(&path)
            };
            match removed {
                Err(err) if err.kind() != ErrorKind::NotFound => Err(backend(err)),
                _ => Ok(()),
            }
        })
        .await
    }

    async fn list_subkeys(&self, key: &SessionKey) -> Result<Vec<String>, StoreError> {
        let sub = self
            .session_dir(&key.project_key, &key.session_id)?
            .join("sub");
        blocking(move || {
            let entries = match fs::read_dir(&sub) {
                Ok(entries) => entries,
                Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
                Err(err) => return Err(backend(err)),
            };
            let mut subkeys = Vec::new();
            for entry in entries {
                let name = entry.map_err(backend)?.file_name();
                let stem = name.to_str().and_then(|n| n.strip_suffix(".jsonl"));
                subkeys.extend(stem.and_then(key_part));
            }
            subkeys.sort();
            Ok(subkeys)
        })
        .await
    }
}
