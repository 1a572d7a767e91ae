//! Immutable per-process configuration derived from argv and the environment.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::args::Args;
use super::out::new_uuid;

/// The version the fake claims to be.
pub(crate) const VERSION: &str = "2.1.330";
/// Model used when `--model` is absent.
pub(crate) const DEFAULT_MODEL: &str = "claude-opus-5-5";
/// Permission modes the CLI accepts.
pub(crate) const MODES: &[&str] = &[
    "acceptEdits",
    "auto",
    "bypassPermissions",
    "default",
    "dontAsk",
    "plan",
];

/// What `--resume=<id>` found at start-up.
#[derive(Debug, Clone, Default)]
pub(crate) enum Resume {
    /// Not a resume (or `--resume` without a value).
    #[default]
    None,
    /// `$CLAUDE_CONFIG_DIR/projects/<key>/<id>.jsonl` does not exist: the CLI refuses.
    Missing(String),
    /// The earlier transcript.
    Loaded(Resumed),
}

/// An earlier transcript read on `--resume`.
#[derive(Debug, Clone)]
pub(crate) struct Resumed {
    /// Every entry of the file, in order.
    pub entries: Vec<Value>,
    /// Number of `user`/`assistant` entries among them.
    pub prior_messages: usize,
    /// `uuid` of the last entry that has one (parent of the next entry).
    pub last_uuid: Option<String>,
}

/// Everything fixed for the life of the process.
pub(crate) struct Config {
    pub args: Args,
    pub session_id: String,
    pub cwd: String,
    pub config_dir: PathBuf,
    pub project_key: String,
    pub initial_model: String,
    pub mcp_servers: Vec<Value>,
    pub entrypoint: String,
    pub pid: u32,
    pub start_ms: u64,
    pub resume: Resume,
}

impl Config {
    pub(crate) fn new(args: Args) -> Self {
        let cwd_path = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let cwd_path = std::fs::canonicalize(&cwd_path).unwrap_or(cwd_path);
        let cwd = cwd_path.to_string_lossy().into_owned();
        let config_dir = match std::env::var_os("CLAUDE_CONFIG_DIR") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp"))
                .join(".claude"),
        };
        let session_id = match (&args.session_id, &args.resume) {
            (Some(id), _) => id.clone(),
            (None, Some(id)) if !id.is_empty() && !args.fork_session => id.clone(),
            _ => new_uuid(),
        };
        let initial_model = match args.model.as_deref() {
            None | Some("") | Some("default") => DEFAULT_MODEL.to_owned(),
            Some(m) => m.to_owned(),
        };
        let mcp_servers = args
            .mcp_config
            .as_deref()
            .map(mcp_servers)
            .unwrap_or_default();
        let project_key = project_key(&cwd);
        let resume = match args.resume.as_deref() {
            Some(id) if !id.is_empty() => load_resume(&config_dir, &project_key, id),
            _ => Resume::None,
        };
        Self {
            project_key,
            resume,
            session_id,
            cwd,
            config_dir,
            initial_model,
            mcp_servers,
            entrypoint: std::env::var("CLAUDE_CODE_ENTRYPOINT").unwrap_or_else(|_| "sdk-py".into()),
            pid: std::process::id(),
            start_ms: super::out::now_ms(),
            args,
        }
    }

    /// `$CLAUDE_CONFIG_DIR/projects/<project key>/<session>.jsonl`.
    pub(crate) fn transcript_path(&self) -> String {
        self.config_dir
            .join("projects")
            .join(&self.project_key)
            .join(format!("{}.jsonl", self.session_id))
            .to_string_lossy()
            .into_owned()
    }

    /// `$CLAUDE_CONFIG_DIR/projects/<project key>/memory/`.
    pub(crate) fn memory_dir(&self) -> String {
        format!(
            "{}/",
            self.config_dir
                .join("projects")
                .join(&self.project_key)
                .join("memory")
                .to_string_lossy()
        )
    }

    /// Resolves `path` against the working directory.
    pub(crate) fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            Path::new(&self.cwd).join(p)
        }
    }
}

/// Reads `<config>/projects/<key>/<id>.jsonl` like the real CLI does on `--resume=<id>`.
fn load_resume(config_dir: &Path, project_key: &str, id: &str) -> Resume {
    if id.contains('/') || id.contains('\\') || id == "." || id == ".." {
        return Resume::Missing(id.to_owned());
    }
    let path = config_dir
        .join("projects")
        .join(project_key)
        .join(format!("{id}.jsonl"));
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Resume::Missing(id.to_owned());
    };
    let entries: Vec<Value> = text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let prior_messages = entries
        .iter()
        .filter(|e| {
            matches!(
                e.get("type").and_then(Value::as_str),
                Some("user" | "assistant")
            )
        })
        .count();
    let last_uuid = entries
        .iter()
        .rev()
        .find_map(|e| e.get("uuid").and_then(Value::as_str))
        .map(str::to_owned);
    Resume::Loaded(Resumed {
        entries,
        prior_messages,
        last_uuid,
    })
}

/// The CLI's project directory name for `cwd`: every UTF-16 unit that is not ASCII
/// alphanumeric becomes `-`; over 200 units, cut and suffix a base-36 djb2-style hash.
pub(crate) fn project_key(cwd: &str) -> String {
    let units: Vec<u16> = cwd.encode_utf16().collect();
    let sanitized: String = units
        .iter()
        .map(|&u| match char::from_u32(u32::from(u)) {
            Some(c) if c.is_ascii_alphanumeric() => c,
            _ => '-',
        })
        .collect();
    if sanitized.len() <= 200 {
        return sanitized;
    }
    let mut h: i32 = 0;
    for &u in &units {
        h = (h << 5).wrapping_sub(h).wrapping_add(i32::from(u));
    }
    let mut n = h.unsigned_abs();
    let mut digits = Vec::new();
    loop {
        digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize] as char);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    let suffix: String = digits.into_iter().rev().collect();
    format!("{}-{suffix}", &sanitized[..200])
}

/// `mcp_servers` entries of `system/init` from a `--mcp-config` value (JSON or a file path).
fn mcp_servers(value: &str) -> Vec<Value> {
    let text = if value.trim_start().starts_with('{') {
        value.to_owned()
    } else {
        std::fs::read_to_string(value).unwrap_or_default()
    };
    let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    parsed
        .get("mcpServers")
        .and_then(Value::as_object)
        .map(|servers| {
            servers
                .keys()
                .map(|name| {
                    let status = if name == "failing" {
                        "failed"
                    } else {
                        "connected"
                    };
                    json!({"name": name, "status": status})
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_keys() {
        assert_eq!(
            project_key("/srv/agent/a_plain_text/work"),
            "-srv-agent-a-plain-text-work"
        );
        assert_eq!(project_key("/x/e😀é"), "-x-e---");
        let long = format!("/{}", "a".repeat(260));
        let key = project_key(&long);
        assert!(key.len() > 201 && key.starts_with("-aaa"), "{key}");
        // The cases verified against CLI 2.1.330 (docs/claude-cli-protocol.md §5.1).
        assert_eq!(
            project_key("/srv/scratch/work/e😀é"),
            "-srv-scratch-work-e---"
        );
        let long = format!(
            "/srv/scratch/{}{}0cvjlnl",
            "nested-directory/".repeat(13),
            "x".repeat(11)
        );
        assert_eq!(long.len(), 252);
        let key = project_key(&long);
        assert!(key.ends_with("-rx6dnd") && key.len() == 207, "{key}");
    }

    #[test]
    fn mcp_names() {
        let s = mcp_servers(r#"{"mcpServers":{"one":{"type":"stdio"},"failing":{}}}"#);
        assert_eq!(
            Value::Array(s),
            json!([{"name":"one","status":"connected"},{"name":"failing","status":"failed"}])
        );
    }
}
