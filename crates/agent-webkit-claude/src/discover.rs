//! Finding the `claude` executable (docs/claude-cli-protocol.md §1.1): an explicit path, else
//! `PATH`, else the SDK's fallback locations.

use std::path::{Path, PathBuf};

/// The message shown when no CLI can be found.
pub const NOT_FOUND_HINT: &str = "Claude Code CLI not found — install it with `npm install -g @anthropic-ai/claude-code` or set --claude-path";

/// Why no executable could be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoverError {
    /// Nothing found anywhere.
    #[error("{NOT_FOUND_HINT}")]
    NotFound,
    /// The explicit path does not name an executable file.
    #[error("Claude Code CLI not found at {0} — install it with `npm install -g @anthropic-ai/claude-code` or fix --claude-path")]
    BadExplicitPath(PathBuf),
}

fn is_executable_file(path: &Path) -> bool {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                meta.permissions().mode() & 0o111 != 0
            }
            #[cfg(not(unix))]
            {
                true
            }
        }
        _ => false,
    }
}

/// Where the SDK looks when `claude` is not on `PATH`.
pub fn fallback_locations(home: Option<&Path>) -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from("/usr/local/bin/claude")];
    if let Some(home) = home {
        out.insert(0, home.join(".npm-global/bin/claude"));
        out.extend([
            home.join(".local/bin/claude"),
            home.join("node_modules/.bin/claude"),
            home.join(".yarn/bin/claude"),
            home.join(".claude/local/claude"),
        ]);
    }
    out
}

/// Resolves the executable to launch.
pub fn find_cli(explicit: Option<&Path>) -> Result<PathBuf, DiscoverError> {
    if let Some(path) = explicit {
        // A bare name ("claude") is looked up on PATH; anything with a separator is a path.
        if path.components().count() == 1 && !path.is_absolute() {
            if let Some(found) = search_path(path.as_os_str()) {
                return Ok(found);
            }
        }
        return if is_executable_file(path) {
            Ok(path.to_path_buf())
        } else {
            Err(DiscoverError::BadExplicitPath(path.to_path_buf()))
        };
    }
    if let Some(found) = search_path(std::ffi::OsStr::new("claude")) {
        return Ok(found);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    fallback_locations(home.as_deref())
        .into_iter()
        .find(|p| is_executable_file(p))
        .ok_or(DiscoverError::NotFound)
}

fn search_path(name: &std::ffi::OsStr) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable_file(candidate))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn explicit_path_must_exist() {
        let err = find_cli(Some(Path::new("/nonexistent/claude"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/claude"));
        assert!(err
            .to_string()
            .contains("npm install -g @anthropic-ai/claude-code"));
    }

    #[test]
    fn explicit_executable_is_used() {
        // `sh` exists on every unix machine; found through PATH by bare name, or by path.
        assert!(find_cli(Some(Path::new("sh"))).is_ok());
        assert!(find_cli(Some(Path::new("/bin/sh"))).is_ok());
    }

    #[test]
    fn fallbacks_cover_the_sdk_list() {
        let list = fallback_locations(Some(Path::new("/home/u")));
        assert_eq!(list.len(), 6);
        assert_eq!(list[0], PathBuf::from("/home/u/.npm-global/bin/claude"));
    }
}
