//! The one definition of the cache folder xtask installs into and tests read from.
//!
//! `$AGENT_WEBKIT_CACHE_DIR`, else `$XDG_CACHE_HOME/agent-webkit`, else `~/.cache/agent-webkit`.
//! Each pinned download lives in a subfolder of it (`claude-code-<version>`,
//! `js-client-<version>`, `python-original-<version>`).
//!
//! Std only, on purpose: xtask compiles this same file (`#[path]`) instead of depending on the
//! testkit, which would pull the whole engine, tokio and reqwest into `cargo xtask`'s build.

use std::ffi::OsString;
use std::path::PathBuf;

/// The cache folder, or `None` when none of `AGENT_WEBKIT_CACHE_DIR`, `XDG_CACHE_HOME` and
/// `HOME` is set (empty counts as unset).
pub fn cache_root() -> Option<PathBuf> {
    cache_root_from(|key| std::env::var_os(key))
}

/// [`cache_root`] over any environment lookup (a pure function, for tests).
pub fn cache_root_from(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let non_empty = |key: &str| env(key).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty("AGENT_WEBKIT_CACHE_DIR") {
        Some(PathBuf::from(dir))
    } else if let Some(xdg) = non_empty("XDG_CACHE_HOME") {
        Some(PathBuf::from(xdg).join("agent-webkit"))
    } else {
        non_empty("HOME").map(|home| PathBuf::from(home).join(".cache").join("agent-webkit"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |key| {
            vars.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn precedence_and_empty_values() {
        let all = [
            ("AGENT_WEBKIT_CACHE_DIR", "/c"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(cache_root_from(env(&all)), Some(PathBuf::from("/c")));
        let no_override = [
            ("AGENT_WEBKIT_CACHE_DIR", ""),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(
            cache_root_from(env(&no_override)),
            Some(PathBuf::from("/x/agent-webkit"))
        );
        let home_only = [("XDG_CACHE_HOME", ""), ("HOME", "/h")];
        assert_eq!(
            cache_root_from(env(&home_only)),
            Some(PathBuf::from("/h/.cache/agent-webkit"))
        );
        assert_eq!(cache_root_from(env(&[])), None);
    }
}
