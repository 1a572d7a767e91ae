//! A client's MCP server configs: parsed strictly, normalised into the shape the agent gets
//! (`{"type":"stdio","command","args","env"}` or `{"type":"http"|"sse","url","headers"}`).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// Longest server name (names become part of tool names, `mcp__<name>__<tool>`).
pub const MAX_NAME_LEN: usize = 64;

/// Most servers in one set.
pub const MAX_SERVERS: usize = 32;

/// The transport of a remote server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteTransport {
    /// Streamable HTTP.
    Http,
    /// Server-sent events.
    Sse,
}

impl RemoteTransport {
    /// `http` / `sse`.
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteTransport::Http => "http",
            RemoteTransport::Sse => "sse",
        }
    }
}

/// One server's config as a client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpServerConfig {
    /// A process the agent starts, speaking MCP over stdin/stdout.
    Stdio {
        /// The executable.
        command: String,
        /// Its arguments.
        args: Vec<String>,
        /// Variables added to its environment.
        env: BTreeMap<String, String>,
    },
    /// A server the agent reaches over the network.
    Remote {
        /// `http` or `sse`.
        transport: RemoteTransport,
        /// Its URL.
        url: String,
        /// Headers sent with every request (credentials, typically).
        headers: BTreeMap<String, String>,
    },
}

/// A malformed server set (HTTP 400 `invalid_mcp_config`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MCP server config{}: {reason}", server.as_ref().map(|s| format!(" {s:?}")).unwrap_or_default())]
pub struct McpConfigError {
    /// The server it is about (`None`: the set itself).
    pub server: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl McpConfigError {
    /// The error `code` of the 400 response.
    pub const CODE: &'static str = "invalid_mcp_config";

    fn set(reason: impl Into<String>) -> Self {
        Self {
            server: None,
            reason: reason.into(),
        }
    }

    fn server(name: &str, reason: impl Into<String>) -> Self {
        Self {
            server: Some(name.to_owned()),
            reason: reason.into(),
        }
    }
}

/// A parsed server set, by name (sorted).
pub type McpServers = BTreeMap<String, McpServerConfig>;

/// Parses a set `{"<name>": <config>, ...}` (an empty object is a valid, empty set).
pub fn parse_servers(value: &Value) -> Result<McpServers, McpConfigError> {
    let Value::Object(map) = value else {
        return Err(McpConfigError::set(
            "servers must be an object of name → config",
        ));
    };
    if map.len() > MAX_SERVERS {
        return Err(McpConfigError::set(format!(
            "at most {MAX_SERVERS} servers per set"
        )));
    }
    map.iter()
        .map(|(name, config)| {
            check_name(name)?;
            Ok((name.clone(), McpServerConfig::parse(name, config)?))
        })
        .collect()
}

/// The set as the agent gets it: each config normalised (all fields present).
pub fn to_agent_json(servers: &McpServers) -> Map<String, Value> {
    servers
        .iter()
        .map(|(name, config)| (name.clone(), config.to_agent_json()))
        .collect()
}

fn check_name(name: &str) -> Result<(), McpConfigError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(McpConfigError::server(
            name,
            format!("a server name is 1-{MAX_NAME_LEN} characters of [A-Za-z0-9_-]"),
        ))
    }
}

impl McpServerConfig {
    /// Parses one config: `type` `stdio` (the default when absent) with `command` and optional
    /// `args` / `env`, or `http` / `sse` with `url` and optional `headers`. Unknown fields are
    /// refused.
    pub fn parse(name: &str, value: &Value) -> Result<Self, McpConfigError> {
        let err = |reason: &str| McpConfigError::server(name, reason);
        let Value::Object(obj) = value else {
            return Err(err("a server config must be an object"));
        };
        let ty = match obj.get("type") {
            None | Some(Value::Null) => "stdio",
            Some(Value::String(ty)) => ty.as_str(),
            Some(_) => return Err(err("type must be \"stdio\", \"http\" or \"sse\"")),
        };
        let allowed: &[&str] = match ty {
            "stdio" => &["type", "command", "args", "env"],
            "http" | "sse" => &["type", "url", "headers"],
            _ => return Err(err("type must be \"stdio\", \"http\" or \"sse\"")),
        };
        if let Some(unknown) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(McpConfigError::server(
                name,
                format!("unknown field {unknown:?} for a {ty} server"),
            ));
        }
        match ty {
            "stdio" => {
                let command = match obj.get("command") {
                    Some(Value::String(c)) if !c.trim().is_empty() => c.clone(),
                    _ => return Err(err("a stdio server needs a non-empty string command")),
                };
                let args = match obj.get("args") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(items)) => items
                        .iter()
                        .map(|a| a.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| err("args must be an array of strings"))?,
                    Some(_) => return Err(err("args must be an array of strings")),
                };
                let env = string_map(obj.get("env"))
                    .ok_or_else(|| err("env must be an object of string values"))?;
                Ok(McpServerConfig::Stdio { command, args, env })
            }
            _ => {
                let transport = if ty == "http" {
                    RemoteTransport::Http
                } else {
                    RemoteTransport::Sse
                };
                let url = match obj.get("url") {
                    Some(Value::String(u)) if !u.is_empty() => u.clone(),
                    _ => return Err(err("an http/sse server needs a string url")),
                };
                let headers = string_map(obj.get("headers"))
                    .ok_or_else(|| err("headers must be an object of string values"))?;
                Ok(McpServerConfig::Remote {
                    transport,
                    url,
                    headers,
                })
            }
        }
    }

    /// The config as the agent gets it (every field present: the CLI fails on a missing
    /// `args` / `env`).
    pub fn to_agent_json(&self) -> Value {
        match self {
            McpServerConfig::Stdio { command, args, env } => {
                json!({"type": "stdio", "command": command, "args": args, "env": env})
            }
            McpServerConfig::Remote {
                transport,
                url,
                headers,
            } => json!({"type": transport.as_str(), "url": url, "headers": headers}),
        }
    }

    /// Every string a client chose in this config (for the policy's checks).
    pub(crate) fn strings(&self) -> Vec<&str> {
        match self {
            McpServerConfig::Stdio { command, args, env } => std::iter::once(command.as_str())
                .chain(args.iter().map(String::as_str))
                .chain(env.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]))
                .collect(),
            McpServerConfig::Remote { url, headers, .. } => std::iter::once(url.as_str())
                .chain(headers.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]))
                .collect(),
        }
    }
}

fn string_map(value: Option<&Value>) -> Option<BTreeMap<String, String>> {
    match value {
        None | Some(Value::Null) => Some(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect(),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises_both_kinds() {
        let set = parse_servers(&json!({
            "a": {"command": "/bin/x"},
            "b": {"type": "http", "url": "https://h/mcp", "headers": {"Authorization": "t"}},
        }))
        .unwrap_or_default();
        assert_eq!(
            to_agent_json(&set),
            *json!({
                "a": {"type": "stdio", "command": "/bin/x", "args": [], "env": {}},
                "b": {"type": "http", "url": "https://h/mcp", "headers": {"Authorization": "t"}},
            })
            .as_object()
            .unwrap_or(&Map::new())
        );
    }

    #[test]
    fn refuses_malformed_sets() {
        for (bad, why) in [
            (json!([]), "object"),
            (json!({"a b": {"command": "/x"}}), "server name"),
            (json!({"a": {"type": "stdio"}}), "command"),
            (json!({"a": {"type": "ws", "url": "x"}}), "type"),
            (json!({"a": {"command": "/x", "args": [1]}}), "args"),
            (json!({"a": {"command": "/x", "env": {"K": 1}}}), "env"),
            (json!({"a": {"command": "/x", "cwd": "/"}}), "unknown field"),
            (json!({"a": {"type": "sse"}}), "url"),
            (json!({"a": "x"}), "object"),
        ] {
            let err = parse_servers(&bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
