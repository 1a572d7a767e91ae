//! Resuming a session on this host from the `SessionStore` (docs/claude-cli-protocol.md §5.5).
//!
//! When the core asks to resume CLI session `<id>` ([`AgentContext::resume`]) and a store is
//! configured, the transcript is **materialized** before the CLI starts: a private temporary
//! directory (`claude-resume-*`, mode 0700) gets `projects/<project key>/<id>.jsonl` (and the
//! subagent transcripts), and the CLI runs with `CLAUDE_CONFIG_DIR=<that dir>` and
//! `--resume=<id>`. The mirror maps that directory's files to the same store keys, so the
//! entries of the resumed run are appended to the same session. The directory is deleted once
//! the CLI has exited ([`ResumeDir::remove`]).
//!
//! [`AgentContext::resume`]: agent_webkit_core::agent::AgentContext::resume

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agent_webkit_core::agent::AgentError;
use agent_webkit_core::store::{SessionKey, SessionStore, StoreError};
use serde_json::{Map, Value};

use crate::project_key::project_key;

/// Prefix of the materialized directories (under the system temp dir).
pub const RESUME_DIR_PREFIX: &str = "claude-resume-";
/// Removal attempts of a materialized directory.
const REMOVE_ATTEMPTS: usize = 4;
/// Pause between removal attempts.
const REMOVE_PAUSE: Duration = Duration::from_millis(100);
/// Config files copied (best-effort) into the materialized directory, with keys that must not
/// follow a session to another config dir.
const COPIED_SETTINGS: &[&str] = &["settings.json", "cowork_settings.json"];

/// Why a resume could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// A store call failed.
    #[error("session store {op} failed during resume materialization: {error}")]
    Store {
        /// The call (`load`, `list_subkeys`).
        op: &'static str,
        /// The store's error.
        error: StoreError,
    },
    /// A store call did not answer in time.
    #[error("session store {op} timed out after {ms} ms during resume materialization")]
    Timeout {
        /// The call.
        op: &'static str,
        /// The limit.
        ms: u128,
    },
    /// Writing the temporary directory failed.
    #[error("cannot materialize the transcript: {0}")]
    Io(#[from] std::io::Error),
    /// The working directory cannot be resolved (its real path names the project).
    #[error("cannot resolve the working directory {path}: {error}")]
    Cwd {
        /// The directory.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
}

/// A materialized config directory; deleted by [`ResumeDir::remove`] (or, as a last resort,
/// synchronously on drop).
#[derive(Debug)]
pub struct ResumeDir {
    path: PathBuf,
    done: bool,
}

impl ResumeDir {
    /// Creates `<system temp>/claude-resume-<random>` with mode 0700 (real path).
    pub fn create() -> std::io::Result<Self> {
        Self::create_in(&std::env::temp_dir())
    }

    /// Creates `<parent>/claude-resume-<random>` with mode 0700 (real path).
    pub fn create_in(parent: &Path) -> std::io::Result<Self> {
        let mut last = None;
        for _ in 0..16 {
            let random = uuid::Uuid::new_v4().simple().to_string();
            let path = parent.join(format!("{RESUME_DIR_PREFIX}{}", &random[..12]));
            match DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    let mut dir = Self { path, done: false };
                    // The CLI reports real paths in mirror frames: use the real spelling.
                    dir.path = dir.path.canonicalize()?;
                    return Ok(dir);
                }
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => last = Some(err),
                Err(err) => return Err(err),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no unique directory name")))
    }

    /// The directory (`CLAUDE_CONFIG_DIR` of the resumed CLI).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deletes the directory: 4 tries 0.1 s apart, then gives up (logged).
    pub async fn remove(mut self) {
        self.done = true;
        for attempt in 1..=REMOVE_ATTEMPTS {
            match tokio::fs::remove_dir_all(&self.path).await {
                Ok(()) => {
                    tracing::debug!(dir = %self.path.display(), "resume directory removed");
                    return;
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => return,
                Err(err) if attempt == REMOVE_ATTEMPTS => {
                    tracing::warn!(dir = %self.path.display(), error = %err, "could not remove the resume directory; left behind");
                }
                Err(_) => tokio::time::sleep(REMOVE_PAUSE).await,
            }
        }
    }
}

impl Drop for ResumeDir {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// How to launch the CLI for a session.
#[derive(Debug)]
pub struct ResumePlan {
    /// The CLI session id: `--session-id` when `resume` is `None`.
    pub session_id: String,
    /// `--resume=<id>`.
    pub resume: Option<String>,
    /// The materialized config directory (`CLAUDE_CONFIG_DIR`), if any.
    pub dir: Option<ResumeDir>,
}

/// Decides how a session starts (docs/claude-cli-protocol.md §5.5): a new session (`resume`
/// unset) uses `session_id`; a resume with a store is materialized from it (or started fresh
/// under the same id when the store has nothing for it); a resume without a store, or of an id
/// that is not a UUID (a title, say), is passed to the CLI as is.
pub async fn plan(
    session_id: &str,
    resume: Option<&str>,
    store: Option<&Arc<dyn SessionStore>>,
    cwd: &Path,
    source_config_dir: &Path,
    load_timeout: Duration,
) -> Result<ResumePlan, AgentError> {
    let Some(id) = resume else {
        return Ok(ResumePlan {
            session_id: session_id.to_owned(),
            resume: None,
            dir: None,
        });
    };
    let as_is = ResumePlan {
        session_id: id.to_owned(),
        resume: Some(id.to_owned()),
        dir: None,
    };
    let Some(store) = store else {
        tracing::info!(
            session_id,
            resume = id,
            "no session store: resuming from the CLI's local transcript"
        );
        return Ok(as_is);
    };
    if !is_uuid(id) {
        tracing::info!(
            session_id,
            resume = id,
            "resume value is not a session UUID; passed to the CLI as is"
        );
        return Ok(as_is);
    }
    match materialize(store.as_ref(), cwd, id, source_config_dir, load_timeout).await {
        Ok(Some(dir)) => Ok(ResumePlan {
            session_id: id.to_owned(),
            resume: Some(id.to_owned()),
            dir: Some(dir),
        }),
        Ok(None) => {
            tracing::info!(session_id, resume = id, "the session store has no transcript for this id; starting a fresh CLI session under it");
            Ok(ResumePlan {
                session_id: id.to_owned(),
                resume: None,
                dir: None,
            })
        }
        Err(err) => Err(AgentError::StartFailed(format!(
            "cannot resume Claude session {id}: {err}"
        ))),
    }
}

/// Writes the stored transcript of `session_id` (project of `cwd`'s real path) into a fresh
/// [`ResumeDir`]; `None` when the store has no entries for it. On failure nothing is left
/// behind.
pub async fn materialize(
    store: &dyn SessionStore,
    cwd: &Path,
    session_id: &str,
    source_config_dir: &Path,
    load_timeout: Duration,
) -> Result<Option<ResumeDir>, ResumeError> {
    let real = cwd.canonicalize().map_err(|error| ResumeError::Cwd {
        path: cwd.to_path_buf(),
        error,
    })?;
    let key = SessionKey::main(project_key(&real), session_id);
    let entries = match timed(load_timeout, "load", store.load(&key)).await? {
        Some(entries) if !entries.is_empty() => entries,
        _ => return Ok(None),
    };
    let dir = ResumeDir::create()?;
    // On error `dir` is dropped, which removes it.
    let project_dir = dir.path().join("projects").join(&key.project_key);
    create_private_dirs(&project_dir)?;
    write_jsonl(&project_dir.join(format!("{session_id}.jsonl")), &entries)?;
    tracing::debug!(session_id, count = entries.len(), dir = %dir.path().display(), "transcript materialized");

    if store.capabilities().list_subkeys {
        let session_dir = project_dir.join(session_id);
        let subpaths = timed(load_timeout, "list_subkeys", store.list_subkeys(&key)).await?;
        for subpath in subpaths {
            if !is_safe_subpath(&subpath) {
                tracing::warn!(
                    session_id,
                    subpath,
                    "unsafe subagent transcript path skipped"
                );
                continue;
            }
            let sub_key = key.with_subpath(subpath.clone());
            let Some(entries) = timed(load_timeout, "load", store.load(&sub_key)).await? else {
                continue;
            };
            let mut metadata: Option<Map<String, Value>> = None;
            let mut lines = Vec::with_capacity(entries.len());
            for entry in entries {
                if entry.get("type").and_then(Value::as_str) == Some("agent_metadata") {
                    if let Value::Object(mut map) = entry {
                        map.remove("type");
                        metadata = Some(map);
                    }
                } else {
                    lines.push(entry);
                }
            }
            let base = session_dir.join(&subpath);
            if let Some(parent) = base.parent() {
                create_private_dirs(parent)?;
            }
            let file_name = |ext: &str| {
                let mut name = base.file_name().unwrap_or_default().to_os_string();
                name.push(ext);
                base.with_file_name(name)
            };
            if !lines.is_empty() {
                write_jsonl(&file_name(".jsonl"), &lines)?;
            }
            if let Some(metadata) = metadata {
                let text = serde_json::to_string(&Value::Object(metadata))
                    .map_err(std::io::Error::other)?;
                write_private(&file_name(".meta.json"), text.as_bytes())?;
            }
        }
    }

    for name in COPIED_SETTINGS {
        copy_settings(&source_config_dir.join(name), &dir.path().join(name));
    }
    Ok(Some(dir))
}

async fn timed<T>(
    limit: Duration,
    op: &'static str,
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, ResumeError> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(ResumeError::Store { op, error }),
        Err(_) => Err(ResumeError::Timeout {
            op,
            ms: limit.as_millis(),
        }),
    }
}

/// `8-4-4-4-12` hex digits, any case (the SDK materializes only such ids).
pub fn is_uuid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A store subpath that may become a file under the session directory
/// (docs/claude-cli-protocol.md §5.5):
/// non-empty, relative, no drive/UNC prefix, no backslash, no empty/`.`/`..` segment, no NUL.
pub fn is_safe_subpath(subpath: &str) -> bool {
    if subpath.is_empty() || subpath.contains('\0') || subpath.contains('\\') {
        return false;
    }
    if subpath.starts_with('/') {
        return false;
    }
    let bytes = subpath.as_bytes();
    if bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
        return false; // `C:…`
    }
    subpath
        .split('/')
        .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

fn create_private_dirs(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.flush()
}

/// One compact JSON value per line.
fn write_jsonl(path: &Path, entries: &[Value]) -> std::io::Result<()> {
    let mut text = String::new();
    for entry in entries {
        text.push_str(&serde_json::to_string(entry).map_err(std::io::Error::other)?);
        text.push('\n');
    }
    write_private(path, text.as_bytes())
}

/// Copies a settings file without the keys that would point the CLI elsewhere; best-effort.
fn copy_settings(from: &Path, to: &Path) {
    match std::fs::metadata(from) {
        Ok(meta) if meta.is_file() => {}
        _ => return,
    }
    let Ok(bytes) = std::fs::read(from) else {
        return;
    };
    let bytes = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(mut map)) => {
            let mut removed = map.remove("enabledPlugins").is_some();
            removed |= map.remove("extraKnownMarketplaces").is_some();
            if let Some(Value::Object(env)) = map.get_mut("env") {
                removed |= env.remove("CLAUDE_CONFIG_DIR").is_some();
            }
            if removed {
                serde_json::to_vec(&Value::Object(map)).unwrap_or(bytes)
            } else {
                bytes
            }
        }
        _ => bytes,
    };
    if let Err(err) = write_private(to, &bytes) {
        tracing::debug!(file = %from.display(), error = %err, "settings not copied into the resume directory");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use agent_webkit_core::store::InMemorySessionStore;
    use agent_webkit_core::store::StoreCapabilities;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;

    const SID: &str = "0b7e2a51-6c3d-4e8f-9a10-b2c3d4e5f601";

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    struct Scratch(PathBuf);
    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "agent-webkit-resume-{name}-{}",
                uuid::Uuid::new_v4().simple()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir.canonicalize().unwrap())
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn uuids_and_subpaths() {
        assert!(is_uuid(SID));
        assert!(is_uuid(&SID.to_uppercase()));
        assert!(!is_uuid("my-title"));
        assert!(!is_uuid("0b7e2a51-6c3d-4e8f-9a10-b2c3d4e5f60g"));
        assert!(is_safe_subpath("subagents/agent-1"));
        assert!(is_safe_subpath("subagents/workflows/run-1/agent-def"));
        for bad in [
            "",
            "/abs",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "C:/x",
            "\\\\server\\share",
            "a\0b",
        ] {
            assert!(!is_safe_subpath(bad), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn materializes_main_and_subagent_transcripts_privately() {
        let work = Scratch::new("work");
        let config = Scratch::new("config");
        std::fs::write(
            config.0.join("settings.json"),
            r#"{"model":"x","enabledPlugins":{"p":true},"env":{"CLAUDE_CONFIG_DIR":"/elsewhere","A":"1"}}"#,
        )
        .unwrap();
        std::fs::write(config.0.join("cowork_settings.json"), "not json").unwrap();
        let store = InMemorySessionStore::new();
        let key = SessionKey::main(project_key(&work.0), SID);
        let main = vec![
            json!({"type":"user","uuid":"u1","message":{"role":"user","content":"hi"}}),
            json!({"type":"last-prompt","lastPrompt":"hi"}),
        ];
        store.append(&key, main.clone()).await.unwrap();
        let sub = key.with_subpath("subagents/agent-a1");
        store
            .append(
                &sub,
                vec![
                    json!({"type":"user","uuid":"s1","isSidechain":true}),
                    json!({"type":"agent_metadata","agentType":"old"}),
                    json!({"type":"agent_metadata","agentType":"general-purpose","finished":true}),
                ],
            )
            .await
            .unwrap();
        store
            .append(&key.with_subpath("../escape"), vec![json!({"type":"x"})])
            .await
            .ok();

        let dir = materialize(&store, &work.0, SID, &config.0, Duration::from_secs(5))
            .await
            .unwrap()
            .expect("entries exist");
        let root = dir.path().to_path_buf();
        assert!(root
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(RESUME_DIR_PREFIX));
        assert_eq!(mode(&root), 0o700);
        let project = root.join("projects").join(&key.project_key);
        let file = project.join(format!("{SID}.jsonl"));
        assert_eq!(mode(&file), 0o600);
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines, main);
        let compact: String = main.iter().map(|e| format!("{e}\n")).collect();
        assert_eq!(text, compact);
        let sub_dir = project.join(SID).join("subagents");
        let sub_lines = std::fs::read_to_string(sub_dir.join("agent-a1.jsonl")).unwrap();
        assert_eq!(sub_lines.lines().count(), 1);
        let meta: Value =
            serde_json::from_slice(&std::fs::read(sub_dir.join("agent-a1.meta.json")).unwrap())
                .unwrap();
        assert_eq!(meta, json!({"agentType":"general-purpose","finished":true}));
        assert_eq!(mode(&sub_dir.join("agent-a1.meta.json")), 0o600);
        assert!(!project.join("escape.jsonl").exists());
        let settings: Value =
            serde_json::from_slice(&std::fs::read(root.join("settings.json")).unwrap()).unwrap();
        assert_eq!(settings, json!({"model":"x","env":{"A":"1"}}));
        assert_eq!(mode(&root.join("settings.json")), 0o600);
        assert_eq!(
            std::fs::read_to_string(root.join("cowork_settings.json")).unwrap(),
            "not json"
        );

        dir.remove().await;
        assert!(!root.exists());

        // Nothing stored for another id → no directory.
        let none = materialize(
            &store,
            &work.0,
            "11111111-2222-4333-8444-555555555555",
            &config.0,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert!(none.is_none());
    }

    struct Broken;
    #[async_trait::async_trait]
    impl SessionStore for Broken {
        async fn append(&self, _: &SessionKey, _: Vec<Value>) -> Result<(), StoreError> {
            Ok(())
        }
        async fn load(&self, _: &SessionKey) -> Result<Option<Vec<Value>>, StoreError> {
            Err(StoreError::Backend("database is down".into()))
        }
        fn capabilities(&self) -> StoreCapabilities {
            StoreCapabilities::default()
        }
    }

    #[tokio::test]
    async fn plans() {
        let work = Scratch::new("plan");
        let cfg = work.0.join("cfg");
        let t = Duration::from_secs(5);
        let fresh = plan("server-id", None, None, &work.0, &cfg, t)
            .await
            .unwrap();
        assert_eq!(
            (fresh.session_id.as_str(), fresh.resume, fresh.dir.is_none()),
            ("server-id", None, true)
        );
        let local = plan("s", Some(SID), None, &work.0, &cfg, t).await.unwrap();
        assert_eq!(local.resume.as_deref(), Some(SID));
        let store: Arc<dyn SessionStore> = Arc::new(InMemorySessionStore::new());
        let title = plan("s", Some("a title"), Some(&store), &work.0, &cfg, t)
            .await
            .unwrap();
        assert_eq!(title.resume.as_deref(), Some("a title"));
        let missing = plan("s", Some(SID), Some(&store), &work.0, &cfg, t)
            .await
            .unwrap();
        assert_eq!(
            (
                missing.session_id.as_str(),
                missing.resume,
                missing.dir.is_none()
            ),
            (SID, None, true)
        );
        let broken: Arc<dyn SessionStore> = Arc::new(Broken);
        let err = plan("s", Some(SID), Some(&broken), &work.0, &cfg, t)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, AgentError::StartFailed(m) if m.contains("database is down") && m.contains("load")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn dropping_a_resume_dir_removes_it() {
        let dir = ResumeDir::create().unwrap();
        let path = dir.path().to_path_buf();
        std::fs::write(path.join("f"), "x").unwrap();
        drop(dir);
        assert!(!path.exists());
    }
}
