//! Attachments: files a client uploads to one session, which its agent can read.
//!
//! Each session with attachments has its own directory, `<root>/<session id>` (created 0700
//! when the session's agent is started, so the Claude CLI gets it as an additional working
//! directory and reads it without a permission prompt; no other session gets it). A file is
//! written there under its checked name ([`names`]), 0600, through a temporary file and a
//! rename, so the agent never sees half a file; its metadata (id, name, size, media type) is
//! kept beside it in `.meta/<attachment id>.json`, so the list survives a restart. A user
//! message names an attachment with `{"type": "attachment", "attachment_id": "..."}`; the
//! session turns that block, just before the message reaches the agent (`expand`), into a
//! text block naming the file's path, name, size and type, followed for a small image by an
//! image content block. The session's directory is removed when the session is deleted, and
//! by a sweep once the session is gone otherwise (ended, retention over).

pub mod names;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::models::UserContent;

/// Default largest attachment (10 MiB).
pub const DEFAULT_MAX_ATTACHMENT_BYTES: usize = 10 * 1024 * 1024;
/// Default most attachments per session.
pub const DEFAULT_MAX_ATTACHMENTS_PER_SESSION: usize = 20;
/// Largest image sent to the model as an image block: the Messages API takes images up to
/// 5 MB of base64, i.e. 3 750 000 bytes. Larger images are named by path only (the agent's
/// Read tool can still open them).
pub const MAX_INLINE_IMAGE_BYTES: u64 = 3_750_000;

const META_DIR: &str = ".meta";

/// Where attachments are kept and how many, how large (`AppConfig::attachments`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentsConfig {
    /// The directory holding one directory per session (created 0700 if missing).
    pub root: PathBuf,
    /// Largest attachment in bytes (larger uploads: 413 `attachment_too_large`).
    pub max_bytes: usize,
    /// Most attachments one session holds (more: 409 `too_many_attachments`).
    pub max_per_session: usize,
    /// Remove `root` when the API shuts down (a temporary root, e.g. with an in-memory store).
    pub remove_on_shutdown: bool,
}

impl AttachmentsConfig {
    /// Attachments under `root` with the default limits, kept across restarts.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            max_bytes: DEFAULT_MAX_ATTACHMENT_BYTES,
            max_per_session: DEFAULT_MAX_ATTACHMENTS_PER_SESSION,
            remove_on_shutdown: false,
        }
    }
}

/// One stored attachment, as the endpoints return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Attachment {
    /// Its id in the session (what a user message's `attachment` block names).
    pub attachment_id: String,
    /// The file's name in the session's directory (as uploaded, or with a `-N` suffix when
    /// the session already held that name).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Media type (the upload's `Content-Type`, else guessed from the name).
    pub media_type: String,
    /// Absolute path of the file, as the agent reads it.
    pub path: String,
}

/// Body of `GET /sessions/{id}/attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttachmentList {
    /// Oldest first.
    pub attachments: Vec<Attachment>,
}

/// Why an attachment request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachmentError {
    /// A name that is not a plain base name (400 `invalid_attachment_name`).
    #[error("invalid attachment name: {0}")]
    InvalidName(#[from] names::NameError),
    /// Larger than the limit (413 `attachment_too_large`).
    #[error("attachment larger than {0} bytes")]
    TooLarge(usize),
    /// The session holds the most attachments allowed (409 `too_many_attachments`).
    #[error("the session already holds {0} attachments (the most allowed); delete one first")]
    TooMany(usize),
    /// A user message names an attachment the session does not hold (400 `unknown_attachment`).
    #[error("unknown attachment: {0}")]
    Unknown(String),
    /// The file system failed (500).
    #[error("attachment storage failed: {0}")]
    Io(String),
}

impl AttachmentError {
    /// HTTP status and error code.
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            AttachmentError::InvalidName(_) => (400, "invalid_attachment_name"),
            AttachmentError::TooLarge(_) => (413, "attachment_too_large"),
            AttachmentError::TooMany(_) => (409, "too_many_attachments"),
            AttachmentError::Unknown(_) => (400, "unknown_attachment"),
            AttachmentError::Io(_) => (500, "attachment_storage_failed"),
        }
    }
}

fn io(err: impl std::fmt::Display) -> AttachmentError {
    AttachmentError::Io(err.to_string())
}

/// Whether `id` is safe as a directory name (session ids are UUIDs or `[A-Za-z0-9._~-]`).
fn safe_component(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

/// Whether `id` can be an attachment id this module issued (`att_` + 16 hex digits).
fn is_attachment_id(id: &str) -> bool {
    id.strip_prefix("att_")
        .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// Writes `bytes` to `path` through a private (0600) temporary file in the same directory and
/// a rename: readers see the whole file or none.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    match written.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(err) => {
            let _ = std::fs::remove_file(&tmp);
            Err(err)
        }
    }
}

/// Creates session `id`'s attachment directory under `root` (0700) and returns it; `None`
/// (logged) when it cannot be made. Called when the session's agent starts.
pub(crate) fn prepare_session_dir(root: &Path, id: &str) -> Option<PathBuf> {
    if !safe_component(id) {
        return None;
    }
    let dir = root.join(id);
    match create_private_dir(&dir) {
        Ok(()) => Some(dir),
        Err(err) => {
            tracing::warn!(session_id = id, dir = %dir.display(), error = %err, "cannot create the session's attachment directory");
            None
        }
    }
}

/// The media type of an upload: its `Content-Type` (without parameters) when it is a valid
/// `type/subtype`, else guessed from the name's extension.
pub(crate) fn media_type(content_type: Option<&[u8]>, name: &str) -> String {
    let given = content_type
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| {
            v.len() <= 100
                && v.split_once('/').is_some_and(|(t, s)| {
                    let token = |x: &str| {
                        !x.is_empty()
                            && x.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
                    };
                    token(t) && token(s)
                })
        })
        .filter(|v| v != "application/octet-stream");
    if let Some(given) = given {
        return given;
    }
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        "json" => "application/json",
        "txt" | "log" => "text/plain",
        "md" => "text/markdown",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        _ => "application/octet-stream",
    }
    .to_owned()
}

/// The attachments of every session (see the module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct AttachmentStore {
    config: Arc<AttachmentsConfig>,
    /// Serialises the commit step (count check, unique name, rename, metadata).
    commit: Arc<tokio::sync::Mutex<()>>,
    /// Cancelled at shutdown (stops the sweeper).
    stop: tokio_util::sync::CancellationToken,
}

impl AttachmentStore {
    /// A store over `config.root` (created 0700 now, so a bad root fails at startup).
    pub(crate) fn new(config: AttachmentsConfig) -> std::io::Result<Self> {
        create_private_dir(&config.root)?;
        let root = config.root.canonicalize()?;
        Ok(Self {
            config: Arc::new(AttachmentsConfig { root, ..config }),
            commit: Arc::new(tokio::sync::Mutex::new(())),
            stop: tokio_util::sync::CancellationToken::new(),
        })
    }

    /// Cancelled when the API shuts down.
    pub(crate) fn stopped(&self) -> tokio_util::sync::CancellationToken {
        self.stop.clone()
    }

    /// The settings (root canonicalised).
    pub(crate) fn config(&self) -> &AttachmentsConfig {
        &self.config
    }

    fn session_dir(&self, session_id: &str) -> Result<PathBuf, AttachmentError> {
        if !safe_component(session_id) {
            return Err(AttachmentError::Unknown(session_id.to_owned()));
        }
        Ok(self.config.root.join(session_id))
    }

    /// The session's attachments, oldest first.
    pub(crate) async fn list(&self, session_id: &str) -> Result<Vec<Attachment>, AttachmentError> {
        let dir = self.session_dir(session_id)?;
        blocking(move || Ok(read_all(&dir))).await
    }

    /// Stores an upload under a unique name; refuses it beyond the session's count.
    pub(crate) async fn add(
        &self,
        session_id: &str,
        name: String,
        media_type: String,
        bytes: bytes::Bytes,
    ) -> Result<Attachment, AttachmentError> {
        if bytes.len() > self.config.max_bytes {
            return Err(AttachmentError::TooLarge(self.config.max_bytes));
        }
        let dir = self.session_dir(session_id)?;
        let max = self.config.max_per_session;
        let _commit = self.commit.lock().await;
        let session_id = session_id.to_owned();
        blocking(move || {
            create_private_dir(&dir.join(META_DIR)).map_err(io)?;
            let existing = read_all(&dir);
            if existing.len() >= max {
                return Err(AttachmentError::TooMany(max));
            }
            let name = names::unique_name(&name, |n| {
                existing.iter().any(|a| a.name == n) || dir.join(n).exists()
            });
            let path = dir.join(&name);
            write_atomically(&path, &bytes).map_err(io)?;
            let attachment = Attachment {
                attachment_id: format!("att_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]),
                name,
                size: bytes.len() as u64,
                media_type,
                path: path.to_string_lossy().into_owned(),
            };
            let meta = serde_json::to_vec(&attachment).map_err(io)?;
            let meta_path = dir
                .join(META_DIR)
                .join(format!("{}.json", attachment.attachment_id));
            if let Err(err) = write_atomically(&meta_path, &meta) {
                let _ = std::fs::remove_file(&path);
                return Err(io(err));
            }
            tracing::info!(session_id = %session_id, attachment_id = %attachment.attachment_id, size = attachment.size, "attachment stored");
            Ok(attachment)
        })
        .await
    }

    /// Deletes one attachment; `false` when the session holds no such attachment.
    pub(crate) async fn remove(
        &self,
        session_id: &str,
        attachment_id: &str,
    ) -> Result<bool, AttachmentError> {
        if !is_attachment_id(attachment_id) {
            return Ok(false);
        }
        let dir = self.session_dir(session_id)?;
        let _commit = self.commit.lock().await;
        let id = attachment_id.to_owned();
        blocking(move || {
            let Some(found) = read_all(&dir).into_iter().find(|a| a.attachment_id == id) else {
                return Ok(false);
            };
            let _ = std::fs::remove_file(dir.join(&found.name));
            std::fs::remove_file(dir.join(META_DIR).join(format!("{id}.json"))).map_err(io)?;
            Ok(true)
        })
        .await
    }

    /// Removes the session's directory and everything in it.
    pub(crate) async fn remove_session(&self, session_id: &str) {
        let Ok(dir) = self.session_dir(session_id) else {
            return;
        };
        let id = session_id.to_owned();
        let _ = blocking(move || {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => tracing::info!(session_id = %id, "attachments removed"),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    tracing::warn!(session_id = %id, error = %err, "could not remove the session's attachments")
                }
            }
            Ok(())
        })
        .await;
    }

    /// Checks that every `attachment` block of `content` names an attachment of the session
    /// (before the message is queued: a refused message is not queued at all).
    pub(crate) async fn check_references(
        &self,
        session_id: &str,
        content: &UserContent,
    ) -> Result<(), AttachmentError> {
        let ids = referenced_ids(content)?;
        if ids.is_empty() {
            return Ok(());
        }
        let held = self.list(session_id).await?;
        match ids
            .into_iter()
            .find(|id| !held.iter().any(|a| &a.attachment_id == id))
        {
            Some(unknown) => Err(AttachmentError::Unknown(unknown)),
            None => Ok(()),
        }
    }

    /// At API shutdown: removes the root when it is temporary ([`AttachmentsConfig::remove_on_shutdown`]).
    pub(crate) async fn shutdown(&self) {
        self.stop.cancel();
        if !self.config.remove_on_shutdown {
            return;
        }
        let root = self.config.root.clone();
        let _ = blocking(move || {
            if let Err(err) = std::fs::remove_dir_all(&root) {
                tracing::warn!(dir = %root.display(), error = %err, "could not remove the attachment directory");
            }
            Ok(())
        })
        .await;
    }

    /// Removes the directories of sessions that are gone (`alive` says which are not), left
    /// alone for a minute after their last change so a session still starting keeps its own.
    pub(crate) async fn sweep<F>(&self, alive: F)
    where
        F: Fn(String) -> futures_util::future::BoxFuture<'static, bool>,
    {
        let root = self.config.root.clone();
        let Ok(candidates) = blocking(move || {
            let Ok(entries) = std::fs::read_dir(&root) else {
                return Ok(Vec::new());
            };
            Ok(entries
                .flatten()
                .filter(|e| {
                    e.metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|m| m.elapsed().ok())
                        .is_some_and(|age| age > std::time::Duration::from_secs(60))
                })
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|id| safe_component(id))
                .collect::<Vec<_>>())
        })
        .await
        else {
            return;
        };
        for id in candidates {
            if !alive(id.clone()).await {
                self.remove_session(&id).await;
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AttachmentError> + Send + 'static,
) -> Result<T, AttachmentError> {
    tokio::task::spawn_blocking(f).await.map_err(io)?
}

/// The attachments described in `dir/.meta`, oldest first (a file without metadata, e.g. after
/// a crash between the two renames, is not an attachment).
fn read_all(dir: &Path) -> Vec<Attachment> {
    let Ok(entries) = std::fs::read_dir(dir.join(META_DIR)) else {
        return Vec::new();
    };
    let mut found: Vec<(std::time::SystemTime, Attachment)> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| {
            let modified = e.metadata().and_then(|m| m.modified()).ok()?;
            let bytes = std::fs::read(e.path()).ok()?;
            let attachment: Attachment = serde_json::from_slice(&bytes).ok()?;
            Some((modified, attachment))
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
    found.into_iter().map(|(_, a)| a).collect()
}

/// The ids the `attachment` blocks of `content` name (an `attachment` block without a string
/// `attachment_id` is refused).
fn referenced_ids(content: &UserContent) -> Result<Vec<String>, AttachmentError> {
    let UserContent::Blocks(blocks) = content else {
        return Ok(Vec::new());
    };
    blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("attachment"))
        .map(|b| match b.get("attachment_id").and_then(Value::as_str) {
            Some(id) => Ok(id.to_owned()),
            None => Err(AttachmentError::Unknown(
                "an attachment block needs a string attachment_id".into(),
            )),
        })
        .collect()
}

/// Whether `content` holds an `attachment` block.
pub(crate) fn has_references(content: &UserContent) -> bool {
    matches!(content, UserContent::Blocks(blocks)
        if blocks.iter().any(|b| b.get("type").and_then(Value::as_str) == Some("attachment")))
}

/// `content` as the agent gets it: each `attachment` block of the session whose attachments
/// are in `dir` becomes a text block naming the file (path, name, size, type), followed for an
/// image the Messages API takes by an image block. An attachment deleted since the message was
/// accepted becomes a text block saying so.
pub(crate) async fn expand(dir: Option<PathBuf>, content: UserContent) -> UserContent {
    if !has_references(&content) {
        return content;
    }
    let UserContent::Blocks(blocks) = content else {
        return content;
    };
    let expanded = tokio::task::spawn_blocking(move || {
        let held = dir.as_deref().map(read_all).unwrap_or_default();
        let mut out = Vec::with_capacity(blocks.len() + 1);
        for block in blocks {
            if block.get("type").and_then(Value::as_str) != Some("attachment") {
                out.push(block);
                continue;
            }
            let id = block
                .get("attachment_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            match held.iter().find(|a| a.attachment_id == id) {
                Some(attachment) => out.extend(blocks_for(attachment)),
                None => out.push(json!({
                    "type": "text",
                    "text": format!("[The attachment {id} was deleted before this message was sent.]"),
                })),
            }
        }
        out
    })
    .await;
    match expanded {
        Ok(blocks) => UserContent::Blocks(blocks),
        Err(err) => {
            tracing::warn!(error = %err, "attachment expansion failed");
            UserContent::Blocks(vec![
                json!({"type": "text", "text": "[The attachments of this message could not be read.]"}),
            ])
        }
    }
}

/// The image media types the Messages API takes, with their file signatures.
fn image_kind(media_type: &str, head: &[u8]) -> bool {
    match media_type {
        "image/png" => head.starts_with(b"\x89PNG\r\n\x1a\n"),
        "image/jpeg" => head.starts_with(&[0xFF, 0xD8, 0xFF]),
        "image/gif" => head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a"),
        "image/webp" => head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP",
        _ => false,
    }
}

fn blocks_for(attachment: &Attachment) -> Vec<Value> {
    let mut blocks = vec![json!({
        "type": "text",
        "text": format!(
            "The user attached a file. Path: {} (name: {}, {} bytes, type: {}). Use your tools to read it from that path when you need its content.",
            attachment.path, attachment.name, attachment.size, attachment.media_type
        ),
    })];
    if attachment.media_type.starts_with("image/") && attachment.size <= MAX_INLINE_IMAGE_BYTES {
        match std::fs::read(&attachment.path) {
            Ok(bytes) if image_kind(&attachment.media_type, &bytes) => blocks.push(json!({
                "type": "image",
                "source": {
                    "type": "base64",
                    "media_type": attachment.media_type,
                    "data": base64(&bytes),
                },
            })),
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(path = %attachment.path, error = %err, "cannot read an image attachment")
            }
        }
    }
    blocks
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(TABLE[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn temp_root(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "aw-att-{tag}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ))
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xFF, 0xFE, 0xFD]), "//79");
    }

    #[test]
    fn media_types_from_header_or_name() {
        assert_eq!(
            media_type(Some(b"Text/Plain; charset=utf-8"), "a.bin"),
            "text/plain"
        );
        assert_eq!(
            media_type(Some(b"application/octet-stream"), "a.PNG"),
            "image/png"
        );
        assert_eq!(media_type(None, "x.jpeg"), "image/jpeg");
        assert_eq!(
            media_type(Some(b"not a type"), "x"),
            "application/octet-stream"
        );
    }

    #[tokio::test]
    async fn store_lists_counts_renames_and_removes() {
        let root = temp_root("store");
        let mut config = AttachmentsConfig::new(&root);
        config.max_per_session = 2;
        config.max_bytes = 8;
        let store = AttachmentStore::new(config).unwrap();
        let dir = prepare_session_dir(&store.config().root, "s1").unwrap();
        let a = store
            .add("s1", "a.txt".into(), "text/plain".into(), "hello".into())
            .await
            .unwrap();
        let b = store
            .add("s1", "a.txt".into(), "text/plain".into(), "again".into())
            .await
            .unwrap();
        assert_eq!(b.name, "a-2.txt");
        assert_eq!(std::fs::read(dir.join("a.txt")).unwrap(), b"hello");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir.join("a.txt")), 0o600);
            assert_eq!(mode(&dir), 0o700);
        }
        assert_eq!(
            store
                .add("s1", "c".into(), "text/plain".into(), "x".into())
                .await,
            Err(AttachmentError::TooMany(2))
        );
        assert_eq!(
            store
                .add("s2", "c".into(), "text/plain".into(), "123456789".into())
                .await,
            Err(AttachmentError::TooLarge(8))
        );
        let listed = store.list("s1").await.unwrap();
        assert_eq!(listed, vec![a.clone(), b.clone()]);
        let refs = UserContent::Blocks(vec![
            json!({"type": "attachment", "attachment_id": a.attachment_id}),
        ]);
        store.check_references("s1", &refs).await.unwrap();
        assert!(matches!(
            store.check_references("s2", &refs).await,
            Err(AttachmentError::Unknown(_))
        ));
        let expanded = expand(Some(dir.clone()), refs.clone()).await.to_blocks();
        assert_eq!(expanded.len(), 1);
        assert!(expanded[0]["text"].as_str().unwrap().contains(&a.path));
        assert!(store.remove("s1", &a.attachment_id).await.unwrap());
        assert!(!store.remove("s1", &a.attachment_id).await.unwrap());
        assert!(!dir.join("a.txt").exists());
        let gone = expand(Some(dir.clone()), refs).await.to_blocks();
        assert!(gone[0]["text"].as_str().unwrap().contains("deleted"));
        store.remove_session("s1").await;
        assert!(!dir.exists());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[tokio::test]
    async fn small_images_become_image_blocks() {
        let root = temp_root("img");
        let store = AttachmentStore::new(AttachmentsConfig::new(&root)).unwrap();
        let dir = prepare_session_dir(&store.config().root, "s").unwrap();
        let png = b"\x89PNG\r\n\x1a\nrest".to_vec();
        let img = store
            .add("s", "p.png".into(), "image/png".into(), png.clone().into())
            .await
            .unwrap();
        let fake = store
            .add("s", "q.png".into(), "image/png".into(), "not a png".into())
            .await
            .unwrap();
        let content = UserContent::Blocks(vec![
            json!({"type": "text", "text": "look"}),
            json!({"type": "attachment", "attachment_id": img.attachment_id}),
            json!({"type": "attachment", "attachment_id": fake.attachment_id}),
        ]);
        let blocks = expand(Some(dir), content).await.to_blocks();
        let types: Vec<&str> = blocks.iter().map(|b| b["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["text", "text", "image", "text"]);
        assert_eq!(blocks[2]["source"]["data"], base64(&png));
        assert_eq!(blocks[2]["source"]["media_type"], "image/png");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn only_safe_ids_map_to_directories() {
        assert!(safe_component("3f1c2a9e-0000-4000-8000-000000000000"));
        assert!(safe_component("order-123"));
        for bad in ["", ".", "..", "../x", "a/b", ".hidden", "a b"] {
            assert!(!safe_component(bad), "{bad}");
        }
        assert!(is_attachment_id("att_0123456789abcdef"));
        assert!(!is_attachment_id("att_../x"));
    }
}
