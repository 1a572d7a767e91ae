//! The attachment flags (`--attachments-dir`, `--max-attachment-bytes`,
//! `--max-attachments-per-session`) and where attachments go by default: `attachments` in the
//! data directory, or, with `--store memory`, a temporary directory removed at a clean stop.

use std::path::PathBuf;

use agent_webkit_core::attachments::{
    AttachmentsConfig, DEFAULT_MAX_ATTACHMENTS_PER_SESSION, DEFAULT_MAX_ATTACHMENT_BYTES,
};
use agent_webkit_core::config::AppConfig;

/// Files clients upload to a session for its agent to read.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Attachments")]
pub(crate) struct AttachmentArgs {
    /// Directory of session attachments, one subdirectory per session (0700, files 0600).
    /// Default: `attachments` in --data-dir; with --store memory a temporary directory removed
    /// when the server stops. Keep it outside the allowed roots.
    #[arg(long, env = "AGENT_WEBKIT_ATTACHMENTS_DIR")]
    attachments_dir: Option<PathBuf>,
    /// Largest attachment a client may upload, in bytes (larger: 413 `attachment_too_large`).
    #[arg(long, env = "AGENT_WEBKIT_MAX_ATTACHMENT_BYTES", default_value_t = DEFAULT_MAX_ATTACHMENT_BYTES)]
    max_attachment_bytes: usize,
    /// Most attachments one session holds (more: 409 `too_many_attachments`); 0 turns
    /// attachments off (the endpoints answer 501).
    #[arg(long, env = "AGENT_WEBKIT_MAX_ATTACHMENTS_PER_SESSION", default_value_t = DEFAULT_MAX_ATTACHMENTS_PER_SESSION)]
    max_attachments_per_session: usize,
}

/// Sets `config.attachments` from the flags; `data_dir` is asked only when the default
/// directory is needed (without one, a temporary directory is used).
pub(crate) fn configure(
    args: &AttachmentArgs,
    mut config: AppConfig,
    memory_store: bool,
    data_dir: impl FnOnce() -> Result<PathBuf, String>,
) -> Result<AppConfig, String> {
    if args.max_attachments_per_session == 0 {
        return Ok(config);
    }
    let temporary = || {
        std::env::temp_dir().join(format!(
            "agent-webkit-attachments-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ))
    };
    let (root, temporary) = match &args.attachments_dir {
        Some(dir) => (dir.clone(), false),
        None if memory_store => (temporary(), true),
        None => match data_dir() {
            Ok(dir) => (dir.join("attachments"), false),
            // No data directory (PostgreSQL without HOME): kept for this run only.
            Err(_) => (temporary(), true),
        },
    };
    warn_if_agents_can_reach(&root, &config.allowed_roots);
    let mut attachments = AttachmentsConfig::new(root);
    attachments.max_bytes = args.max_attachment_bytes;
    attachments.max_per_session = args.max_attachments_per_session;
    attachments.remove_on_shutdown = temporary;
    config.attachments = Some(attachments);
    Ok(config)
}

/// Inside an allowed root, every session's agent could read every session's attachments.
fn warn_if_agents_can_reach(root: &std::path::Path, roots: &[PathBuf]) {
    let cwd = std::env::current_dir().ok();
    let roots = if roots.is_empty() {
        cwd.as_slice()
    } else {
        roots
    };
    let absolute = std::path::absolute(root).unwrap_or_else(|_| root.to_owned());
    for allowed in roots {
        let allowed = allowed.canonicalize().unwrap_or_else(|_| allowed.clone());
        if absolute.starts_with(&allowed) {
            tracing::warn!(
                attachments_dir = %absolute.display(),
                allowed_root = %allowed.display(),
                "the attachment directory is inside an allowed root: agents of other sessions can read its files; choose an --attachments-dir outside it"
            );
        }
    }
}
