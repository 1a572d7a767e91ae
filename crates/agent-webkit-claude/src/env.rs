//! The CLI's environment, built on purpose: what it inherits from the server, what is never
//! passed (the server's own `AGENT_WEBKIT_*` variables, any configured secret value), and the
//! redaction of those secrets from text that reaches the log.
//!
//! Every Bash command the model runs sees the CLI's environment, so a prompt injection can read
//! anything in it: the bridge therefore starts the child from an empty environment and adds
//! exactly what this module decides.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};

/// Prefix of the server's own variables (bearer token, database URL, ...): never inherited.
pub const SERVER_PREFIX: &str = "AGENT_WEBKIT_";

/// Variables never inherited: they would make the CLI believe it runs nested inside another
/// Claude Code, or misreport which SDK host started it, or put it in the server's own trace
/// (`TRACEPARENT` / `TRACESTATE` are set per session from the request instead), or hand it the
/// credentials of the server's trace export (OTLP headers; pass them with `--claude-env` if
/// the CLI should export its own telemetry).
pub const NEVER_INHERITED: &[&str] = &[
    "CLAUDECODE",
    "CLAUDE_AGENT_SDK_DERIVED_CLIENT_APP",
    "TRACEPARENT",
    "TRACESTATE",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
];

/// Variables a clean environment still inherits (the CLI needs `PATH` to find its tools and
/// `HOME` for `~/.claude`).
pub const CLEAN_ENV_KEEPS: &[&str] = &["PATH", "HOME"];

/// `PATH` given to a clean environment when the server itself has none.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// What replaces a secret in redacted text.
pub const REDACTED: &str = "[redacted]";

/// Values that must never reach the CLI or the log (bearer token, database URL, ...).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(Vec<String>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} values)", self.0.len())
    }
}

impl Secrets {
    /// The non-empty values of `values`, longest first (so a secret containing another is
    /// redacted whole).
    pub fn new<I, S>(values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut list: Vec<String> = values
            .into_iter()
            .map(Into::into)
            .filter(|s| !s.is_empty())
            .collect();
        list.sort_by_key(|s| std::cmp::Reverse(s.len()));
        list.dedup();
        Self(list)
    }

    /// Whether `value` contains any secret.
    pub fn found_in(&self, value: &OsStr) -> bool {
        let value = value.to_string_lossy();
        self.0.iter().any(|secret| value.contains(secret.as_str()))
    }

    /// `text` with every secret replaced by [`REDACTED`].
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.0 {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        out
    }

    /// Whether no secret is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How the CLI's environment starts, before the bridge adds its own variables.
#[derive(Debug, Clone, Copy)]
pub struct Inheritance<'a> {
    /// Start empty: only [`CLEAN_ENV_KEEPS`] and `pass` are taken from the server.
    pub clean: bool,
    /// Server variables passed in a clean environment.
    pub pass: &'a [String],
    /// Values never passed, whatever the variable's name.
    pub secrets: &'a Secrets,
}

/// Variables that tell the CLI where its files live: withholding one (because its value contains
/// a secret, e.g. a short token that happens to occur in a path) sends the CLI's transcripts
/// elsewhere, so the mirror finds none and hibernation / failover cannot resume.
const LOCATION_VARIABLES: &[&str] = &["HOME", "CLAUDE_CONFIG_DIR", "TMPDIR", "PATH"];

/// Warns once per process that a location variable was withheld (the next ones go to debug).
fn warn_location_withheld(variable: &str) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::debug!(
            variable,
            "server variable holding a secret not passed to the Claude CLI"
        );
    } else {
        tracing::warn!(
            variable,
            "the value of this variable contains a configured secret (a token or database URL), so \
             it is not passed to the Claude CLI; the CLI then keeps its files elsewhere and \
             sessions may not resume after hibernation or failover: choose a secret that occurs \
             in no path"
        );
    }
}

/// The part of the server's environment `server_env` the CLI inherits.
///
/// Never inherited: `AGENT_WEBKIT_*` (even when named in `pass`), [`NEVER_INHERITED`], and any
/// variable whose value contains a secret. In a clean environment, only `PATH` (defaulting to
/// [`DEFAULT_PATH`]), `HOME` and the `pass` names are inherited.
pub fn inherited<I>(server_env: I, how: Inheritance<'_>) -> BTreeMap<OsString, OsString>
where
    I: IntoIterator<Item = (OsString, OsString)>,
{
    let mut out: BTreeMap<OsString, OsString> = server_env
        .into_iter()
        .filter(|(name, value)| {
            let text = name.to_string_lossy();
            if text.starts_with(SERVER_PREFIX) || NEVER_INHERITED.contains(&text.as_ref()) {
                return false;
            }
            if how.secrets.found_in(value) {
                if LOCATION_VARIABLES.contains(&text.as_ref()) {
                    warn_location_withheld(&text);
                } else {
                    tracing::debug!(variable = %text, "server variable holding a secret not passed to the Claude CLI");
                }
                return false;
            }
            !how.clean
                || CLEAN_ENV_KEEPS.contains(&text.as_ref())
                || how.pass.iter().any(|p| p.as_str() == text)
        })
        .collect();
    if how.clean {
        out.entry("PATH".into())
            .or_insert_with(|| DEFAULT_PATH.into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> Vec<(OsString, OsString)> {
        [
            ("PATH", "/opt/bin:/usr/bin"),
            ("HOME", "/home/op"),
            ("LANG", "C.UTF-8"),
            ("AGENT_WEBKIT_AUTH_TOKEN", "tok-123456"),
            ("AGENT_WEBKIT_DATABASE_URL", "postgres://u:pw@db/x"),
            ("COPY_OF_TOKEN", "Bearer tok-123456"),
            ("CLAUDECODE", "1"),
            ("ANTHROPIC_API_KEY", "sk-ant"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
    }

    fn names(env: &BTreeMap<OsString, OsString>) -> Vec<String> {
        env.keys()
            .map(|k| k.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn server_variables_and_secrets_are_never_inherited() {
        let secrets = Secrets::new(["tok-123456", "postgres://u:pw@db/x"]);
        let env = inherited(
            server(),
            Inheritance {
                clean: false,
                pass: &["AGENT_WEBKIT_AUTH_TOKEN".to_owned()],
                secrets: &secrets,
            },
        );
        assert_eq!(names(&env), ["ANTHROPIC_API_KEY", "HOME", "LANG", "PATH"]);
    }

    #[test]
    fn a_clean_environment_keeps_path_home_and_what_is_passed() {
        let secrets = Secrets::default();
        let pass = [
            "ANTHROPIC_API_KEY".to_owned(),
            "AGENT_WEBKIT_AUTH_TOKEN".to_owned(),
        ];
        let how = Inheritance {
            clean: true,
            pass: &pass,
            secrets: &secrets,
        };
        let env = inherited(server(), how);
        assert_eq!(names(&env), ["ANTHROPIC_API_KEY", "HOME", "PATH"]);
        assert_eq!(env[OsStr::new("PATH")], "/opt/bin:/usr/bin");
        let env = inherited(Vec::new(), how);
        assert_eq!(names(&env), ["PATH"]);
        assert_eq!(env[OsStr::new("PATH")], DEFAULT_PATH);
    }

    #[test]
    fn redaction_replaces_every_secret_longest_first() {
        let secrets = Secrets::new(["abc", "abcdef", ""]);
        assert_eq!(
            secrets.redact("x abcdef y abc z"),
            format!("x {REDACTED} y {REDACTED} z")
        );
        assert_eq!(Secrets::new([""; 0]).redact("abc"), "abc");
        assert!(Secrets::new([""]).is_empty());
    }
}
