//! The operator's policy for the MCP servers clients name themselves (create option
//! `mcp_servers`, inbound `mcp_set_servers`). Default: none at all. The operator opens it with
//! URL prefixes (http/sse servers whose URL starts with one) and exact commands (stdio
//! servers whose command is one of them; arguments and environment are the client's, within
//! the limits below). A client can never make the server start another program: a command is
//! compared byte for byte, variables that change what a program loads (`LD_PRELOAD`,
//! `NODE_OPTIONS`, `PATH`, ...) are refused, and so is `${...}` anywhere (the agent expands
//! it from its own environment, which would hand the client the server's variables).

use super::config::{McpServerConfig, McpServers};

/// What clients may add.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct McpPolicy {
    /// An http/sse server is allowed when its URL starts with one of these
    /// (`scheme://host[:port]/...`, see [`check_url_prefix`]).
    pub url_prefixes: Vec<String>,
    /// A stdio server is allowed when its command is exactly one of these.
    pub commands: Vec<String>,
}

/// Environment variables a client may not set for a stdio server: they change which code the
/// allowed program runs (loader, interpreter and shell hooks, the command search path).
pub const FORBIDDEN_ENV: &[&str] = &[
    "PATH",
    "NODE_OPTIONS",
    "NODE_PATH",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PYTHONHOME",
    "PYTHONINSPECT",
    "PERL5LIB",
    "PERL5OPT",
    "PERLLIB",
    "RUBYOPT",
    "RUBYLIB",
    "BASH_ENV",
    "ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "IFS",
    "GCONV_PATH",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
];

/// Prefixes of variable names a client may not set (dynamic loader hooks).
pub const FORBIDDEN_ENV_PREFIXES: &[&str] = &["LD_", "DYLD_", "BASH_FUNC_"];

/// A server config the policy refuses (HTTP 403 [`CODE`](Self::CODE)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MCP server {server:?} is not allowed on this server: {reason}")]
pub struct McpForbidden {
    /// The server's name.
    pub server: String,
    /// Why.
    pub reason: String,
}

impl McpForbidden {
    /// The error `code` of the 403 response.
    pub const CODE: &'static str = "mcp_forbidden";
}

impl McpPolicy {
    /// Whether clients may add any server at all.
    pub fn allows_any(&self) -> bool {
        !self.url_prefixes.is_empty() || !self.commands.is_empty()
    }

    /// Checks every server of a set; the first refusal wins (servers in name order).
    pub fn check_all(&self, servers: &McpServers) -> Result<(), McpForbidden> {
        servers
            .iter()
            .try_for_each(|(name, config)| self.check(name, config))
    }

    /// Checks one server.
    pub fn check(&self, name: &str, config: &McpServerConfig) -> Result<(), McpForbidden> {
        let refuse = |reason: String| McpForbidden {
            server: name.to_owned(),
            reason,
        };
        if !self.allows_any() {
            return Err(refuse(
                "clients may not add MCP servers here (the operator allows none: \
                 --client-mcp-command / --client-mcp-url-prefix)"
                    .to_owned(),
            ));
        }
        if config.strings().iter().any(|s| s.contains("${")) {
            return Err(refuse(
                "\"${\" (variable expansion) is not allowed in a client's MCP config".to_owned(),
            ));
        }
        match config {
            McpServerConfig::Stdio { command, env, .. } => {
                if !self.commands.iter().any(|c| c == command) {
                    return Err(refuse(format!(
                        "command {command:?} is not one the operator allows"
                    )));
                }
                if let Some(var) = env.keys().find(|k| forbidden_env(k)) {
                    return Err(refuse(format!(
                        "environment variable {var:?} may not be set by a client"
                    )));
                }
                Ok(())
            }
            McpServerConfig::Remote { url, .. } => {
                if url
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
                    || url
                        .split(['/', '?', '#'])
                        .any(|seg| seg == ".." || seg == ".")
                {
                    return Err(refuse(format!("url {url:?} is not a plain URL")));
                }
                if !self
                    .url_prefixes
                    .iter()
                    .any(|p| url.starts_with(p.as_str()))
                {
                    return Err(refuse(format!(
                        "url {url:?} does not start with a prefix the operator allows"
                    )));
                }
                Ok(())
            }
        }
    }
}

fn forbidden_env(name: &str) -> bool {
    let valid = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let upper = name.to_ascii_uppercase();
    !valid
        || FORBIDDEN_ENV.contains(&upper.as_str())
        || FORBIDDEN_ENV_PREFIXES.iter().any(|p| upper.starts_with(p))
}

/// Validates an operator's URL prefix: `http://` or `https://`, a host, and a `/` after it
/// (so `https://mcp.example.com` cannot also match `https://mcp.example.com.evil.org`).
pub fn check_url_prefix(prefix: &str) -> Result<(), String> {
    let rest = prefix
        .strip_prefix("https://")
        .or_else(|| prefix.strip_prefix("http://"))
        .ok_or_else(|| format!("MCP URL prefix {prefix:?} must start with http:// or https://"))?;
    match rest.find('/') {
        Some(slash) if slash > 0 => Ok(()),
        _ => Err(format!(
            "MCP URL prefix {prefix:?} must name a host and end the host with '/' \
             (e.g. https://mcp.example.com/)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::parse_servers;
    use super::*;
    use serde_json::json;

    fn policy() -> McpPolicy {
        McpPolicy {
            url_prefixes: vec!["https://mcp.example.com/".into()],
            commands: vec!["/opt/mcp/server".into()],
        }
    }

    fn verdict(p: &McpPolicy, set: serde_json::Value) -> Result<(), String> {
        let set = parse_servers(&set).map_err(|e| e.to_string())?;
        p.check_all(&set).map_err(|e| e.reason)
    }

    #[test]
    fn default_allows_nothing() {
        let err = verdict(
            &McpPolicy::default(),
            json!({"a": {"type": "http", "url": "https://mcp.example.com/x"}}),
        );
        assert!(err.is_err_and(|e| e.contains("allows none")));
    }

    #[test]
    fn allows_exact_commands_and_prefixed_urls() {
        let p = policy();
        assert_eq!(
            verdict(
                &p,
                json!({"a": {"command": "/opt/mcp/server", "args": ["--x"], "env": {"TOKEN": "t"}},
                       "b": {"type": "sse", "url": "https://mcp.example.com/sse", "headers": {"A": "b"}}})
            ),
            Ok(())
        );
    }

    #[test]
    fn refuses_other_commands_urls_env_and_expansion() {
        let p = policy();
        for (set, why) in [
            (json!({"a": {"command": "/opt/mcp/server2"}}), "command"),
            (json!({"a": {"command": "/bin/sh"}}), "command"),
            (
                json!({"a": {"command": "/opt/mcp/../mcp/server"}}),
                "command",
            ),
            (
                json!({"a": {"type": "http", "url": "https://mcp.example.com.evil.org/"}}),
                "prefix",
            ),
            (
                json!({"a": {"type": "http", "url": "https://mcp.example.com/../x"}}),
                "plain",
            ),
            (
                json!({"a": {"type": "http", "url": "http://mcp.example.com/"}}),
                "prefix",
            ),
            (
                json!({"a": {"command": "/opt/mcp/server", "env": {"LD_PRELOAD": "/x.so"}}}),
                "LD_PRELOAD",
            ),
            (
                json!({"a": {"command": "/opt/mcp/server", "env": {"node_options": "-r x"}}}),
                "node_options",
            ),
            (
                json!({"a": {"command": "/opt/mcp/server", "env": {"PATH": "/tmp"}}}),
                "PATH",
            ),
            (
                json!({"a": {"command": "/opt/mcp/server", "env": {"K": "${ANTHROPIC_API_KEY}"}}}),
                "expansion",
            ),
            (
                json!({"a": {"type": "http", "url": "https://mcp.example.com/", "headers": {"A": "${X}"}}}),
                "expansion",
            ),
        ] {
            let err = verdict(&p, set.clone());
            assert!(
                err.as_ref().is_err_and(|e| e.contains(why)),
                "{set}: {err:?}"
            );
        }
    }

    #[test]
    fn url_prefixes_must_end_their_host() {
        assert!(check_url_prefix("https://mcp.example.com/").is_ok());
        assert!(check_url_prefix("http://127.0.0.1:8080/mcp").is_ok());
        assert!(check_url_prefix("https://mcp.example.com").is_err());
        assert!(check_url_prefix("ftp://x/").is_err());
        assert!(check_url_prefix("https:///").is_err());
    }
}
