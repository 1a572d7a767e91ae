//! The web console: a page served by the server at `/` that speaks only the public wire
//! protocol (create, stream with `Last-Event-ID`, input, delete) and its documented extensions
//! (fork and rewind from a user message, attachments, context and cost), as any client would.
//!
//! Its assets are plain ES modules and CSS under `assets/`, embedded with `include_bytes!`: no
//! bundler, no npm, no CDN, nothing fetched at run time. [`Console`] is a
//! [`StaticSite`], which the server plugs into
//! [`AppConfig::site`](agent_webkit_core::config::AppConfig::site); core adds the
//! Content-Security-Policy and the other security headers. Besides the assets it serves
//! `/console/config.json` ([`ConsoleConfig`], from [`ConsoleInfo`]): which agent runs and, for
//! the replay agent, the scenario names, so the page can offer them in a list.

use agent_webkit_core::site::{ConsoleConfig, StaticFile, StaticSite};
use bytes::Bytes;

/// What the page learns from `/console/config.json`.
#[derive(Debug, Clone, Default)]
pub struct ConsoleInfo {
    /// The agent behind sessions (`"replay"`, `"claude"`).
    pub agent: String,
    /// Replay scenario names (a session's `model` picks one); empty for other agents.
    pub scenarios: Vec<String>,
}

/// The embedded files: path, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("/", HTML, include_bytes!("../assets/index.html")),
    (
        "/console/console.css",
        CSS,
        include_bytes!("../assets/console.css"),
    ),
    ("/console/app.js", JS, include_bytes!("../assets/app.js")),
    ("/console/api.js", JS, include_bytes!("../assets/api.js")),
    ("/console/sse.js", JS, include_bytes!("../assets/sse.js")),
    (
        "/console/markdown.js",
        JS,
        include_bytes!("../assets/markdown.js"),
    ),
    (
        "/console/transcript.js",
        JS,
        include_bytes!("../assets/transcript.js"),
    ),
    (
        "/console/prompts.js",
        JS,
        include_bytes!("../assets/prompts.js"),
    ),
    (
        "/console/anchors.js",
        JS,
        include_bytes!("../assets/anchors.js"),
    ),
    (
        "/console/attachments.js",
        JS,
        include_bytes!("../assets/attachments.js"),
    ),
    (
        "/console/usage.js",
        JS,
        include_bytes!("../assets/usage.js"),
    ),
    (
        "/console/icon.svg",
        SVG,
        include_bytes!("../assets/icon.svg"),
    ),
];

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";
const JSON: &str = "application/json";

/// The console's files (see the crate docs).
#[derive(Debug, Clone)]
pub struct Console {
    config: Bytes,
}

impl Console {
    /// The console for a server running `info.agent`.
    pub fn new(info: &ConsoleInfo) -> Self {
        let config = ConsoleConfig {
            agent: info.agent.clone(),
            scenarios: info.scenarios.clone(),
        };
        Self {
            config: Bytes::from(serde_json::to_vec(&config).unwrap_or_default()),
        }
    }

    /// Every path the console serves.
    pub fn paths() -> impl Iterator<Item = &'static str> {
        ASSETS
            .iter()
            .map(|(path, _, _)| *path)
            .chain(["/console/config.json"])
    }
}

impl StaticSite for Console {
    fn file(&self, path: &str) -> Option<StaticFile> {
        if path == "/console/config.json" {
            return Some(StaticFile {
                content_type: JSON,
                body: self.config.clone(),
            });
        }
        let path = if path == "/index.html" { "/" } else { path };
        ASSETS
            .iter()
            .find(|(p, _, _)| *p == path)
            .map(|(_, content_type, body)| StaticFile {
                content_type,
                body: Bytes::from_static(body),
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn serves_every_asset_and_the_config() {
        let console = Console::new(&ConsoleInfo {
            agent: "replay".into(),
            scenarios: vec!["read_allow".into()],
        });
        for path in Console::paths() {
            let file = console.file(path).unwrap();
            assert!(!file.body.is_empty(), "{path}");
        }
        let config = console.file("/console/config.json").unwrap();
        assert_eq!(
            &config.body[..],
            br#"{"agent":"replay","scenarios":["read_allow"]}"#
        );
        let config: serde_json::Value = serde_json::from_slice(&config.body).unwrap();
        assert_eq!(config["scenarios"][0], "read_allow");
        assert!(console.file("/console/nope.js").is_none());
        assert!(console.file("/sessions").is_none());
    }

    /// Every module the page imports is served, and no asset loads anything from elsewhere or
    /// inline (the CSP would refuse it anyway; this catches it before a browser does).
    #[test]
    fn assets_are_self_contained() {
        let console = Console::new(&ConsoleInfo::default());
        for (path, content_type, body) in ASSETS {
            if *content_type == SVG {
                continue;
            }
            let text = std::str::from_utf8(body).unwrap();
            for needle in [
                "http://",
                "https://",
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "eval(",
                "style=",
            ] {
                assert!(!text.contains(needle), "{path} contains {needle}");
            }
            for line in text.lines() {
                if let Some(rest) = line.trim().strip_prefix("import ") {
                    let target = rest.split('"').nth(1).unwrap();
                    let served = format!("/console/{}", target.trim_start_matches("./"));
                    assert!(console.file(&served).is_some(), "{path} imports {target}");
                }
            }
        }
        let html = std::str::from_utf8(ASSETS[0].2).unwrap();
        assert!(!html.contains("<script>"), "inline script in index.html");
        assert!(!html.contains("<style"), "inline style in index.html");
    }
}
