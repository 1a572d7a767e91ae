//! Command-line parsing for the fake CLI: accepts everything the real CLI is given.

/// Flags that always take a value (`--flag value` or `--flag=value`).
const VALUE_FLAGS: &[&str] = &[
    "--output-format",
    "--input-format",
    "--system-prompt",
    "--system-prompt-file",
    "--append-system-prompt",
    "--append-system-prompt-file",
    "--tools",
    "--allowedTools",
    "--allowed-tools",
    "--max-turns",
    "--max-budget-usd",
    "--disallowedTools",
    "--disallowed-tools",
    "--task-budget",
    "--model",
    "--fallback-model",
    "--betas",
    "--permission-prompt-tool",
    "--permission-mode",
    "--session-id",
    "--settings",
    "--add-dir",
    "--mcp-config",
    "--resume-session-at",
    "--resume-drops-turn",
    "--setting-sources",
    "--plugin-dir",
    "--thinking",
    "--max-thinking-tokens",
    "--thinking-display",
    "--effort",
    "--json-schema",
    "--agents",
    "--debug-file",
];

/// Flags that never take a value.
const BOOL_FLAGS: &[&str] = &[
    "--verbose",
    "--include-partial-messages",
    "--session-mirror",
    "--include-hook-events",
    "--strict-mcp-config",
    "--fork-session",
    "--continue",
    "-c",
    "--print",
    "-p",
    "--replay-user-messages",
    "--await-initialize",
    "--plugin-dir-no-mcp",
    "--dangerously-skip-permissions",
    "--debug",
    "--prompt-suggestions",
];

/// Parsed command line.
#[derive(Debug, Clone, Default)]
pub(crate) struct Args {
    pub output_format: Option<String>,
    pub verbose: bool,
    pub session_id: Option<String>,
    pub model: Option<String>,
    pub permission_mode: Option<String>,
    pub include_partial_messages: bool,
    pub session_mirror: bool,
    pub resume: Option<String>,
    pub fork_session: bool,
    pub mcp_config: Option<String>,
    pub add_dirs: Vec<String>,
}

impl Args {
    /// Parses `argv` (without the program name). Unknown flags are ignored; an unknown
    /// `--flag` followed by a word not starting with `-` consumes that word as its value.
    pub(crate) fn parse(argv: &[String]) -> Self {
        let mut args = Args::default();
        let mut i = 0;
        while i < argv.len() {
            let raw = &argv[i];
            i += 1;
            let (name, inline) = match raw.split_once('=') {
                Some((n, v)) if raw.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
                _ => (raw.clone(), None),
            };
            if !name.starts_with('-') {
                continue; // stray positional (e.g. a prompt): ignored
            }
            let value = if inline.is_some() {
                inline
            } else if BOOL_FLAGS.contains(&name.as_str()) {
                None
            } else if VALUE_FLAGS.contains(&name.as_str()) {
                let v = argv.get(i).cloned();
                i += 1;
                v
            } else if name == "--resume" || name == "-r" {
                // Optional value: only a following word that is not a flag.
                match argv.get(i) {
                    Some(v) if !v.starts_with('-') => {
                        i += 1;
                        Some(v.clone())
                    }
                    _ => None,
                }
            } else {
                match argv.get(i) {
                    Some(v) if !v.starts_with('-') => {
                        i += 1;
                        Some(v.clone())
                    }
                    _ => None,
                }
            };
            match name.as_str() {
                "--output-format" => args.output_format = value,
                "--verbose" => args.verbose = true,
                "--session-id" => args.session_id = value,
                "--model" => args.model = value,
                "--permission-mode" => args.permission_mode = value,
                "--include-partial-messages" => args.include_partial_messages = true,
                "--session-mirror" => args.session_mirror = true,
                "--resume" | "-r" => args.resume = Some(value.unwrap_or_default()),
                "--fork-session" => args.fork_session = true,
                "--mcp-config" => args.mcp_config = value,
                "--add-dir" => args.add_dirs.extend(value),
                _ => {}
            }
        }
        args
    }

    /// The startup error the real CLI prints for this command line, if any.
    pub(crate) fn startup_error(&self) -> Option<&'static str> {
        if self.output_format.as_deref() == Some("stream-json") && !self.verbose {
            return Some(
                "Error: When using --print, --output-format=stream-json requires --verbose",
            );
        }
        if self.session_id.is_some() && self.resume.is_some() && !self.fork_session {
            return Some(
                "Error: --session-id with --continue or --resume also needs --fork-session.",
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(v: &[&str]) -> Args {
        Args::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn parses_both_forms_and_ignores_unknown() {
        let a = parse(&[
            "--output-format",
            "stream-json",
            "--verbose",
            "--system-prompt",
            "",
            "--unknown-thing",
            "value",
            "--model=m1",
            "--session-id=abc",
            "--include-partial-messages",
            "--weird",
            "--session-mirror",
            "--permission-mode",
            "plan",
            "--add-dir",
            "/a",
            "--add-dir=/b",
            "--input-format",
            "stream-json",
        ]);
        assert_eq!(a.output_format.as_deref(), Some("stream-json"));
        assert!(a.verbose && a.include_partial_messages && a.session_mirror);
        assert_eq!(a.model.as_deref(), Some("m1"));
        assert_eq!(a.session_id.as_deref(), Some("abc"));
        assert_eq!(a.permission_mode.as_deref(), Some("plan"));
        assert_eq!(a.add_dirs, vec!["/a", "/b"]);
        assert!(a.startup_error().is_none());
    }

    #[test]
    fn stream_json_needs_verbose() {
        let a = parse(&["--output-format", "stream-json"]);
        assert!(a.startup_error().unwrap().contains("requires --verbose"));
    }
}
