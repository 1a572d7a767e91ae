//! Static pages served beside the API (the web console): the hook a server plugs them in
//! through, and the headers every such page gets.
//!
//! Core holds no HTML: a [`StaticSite`] (e.g. the `agent-webkit-console` crate) maps a path to
//! a file; [`Api::handle`](crate::http::Api::handle) asks it for every `GET` whose path
//! is not an API route, and answers with the file plus [`SECURITY_HEADERS`]. No site configured
//! (`--no-console`): those paths are 404, as before. Pages need no token: they hold no data,
//! and every API call they make carries the bearer token the user typed.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Serialize;

use crate::http::{ApiResponse, ResponseBody};

/// One file of a [`StaticSite`].
#[derive(Debug, Clone)]
pub struct StaticFile {
    /// Its `content-type` (with `charset` for text).
    pub content_type: &'static str,
    /// Its bytes (usually `Bytes::from_static` over `include_bytes!`).
    pub body: Bytes,
}

/// The body of the console's `GET /console/config.json`: what the page learns about the server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsoleConfig {
    /// The agent behind sessions (`replay`, `claude`).
    pub agent: String,
    /// With the replay agent, every scenario name (what a session's `model` may be; the
    /// synthetic stream as its pattern `stream:N[:ms[:bytes]]`); empty for other agents.
    pub scenarios: Vec<String>,
}

/// Static files served under the API's mount point at paths the API does not use.
pub trait StaticSite: Send + Sync + std::fmt::Debug {
    /// The file at `path` (`/`, `/console/app.js`, ...), if the site has one.
    fn file(&self, path: &str) -> Option<StaticFile>;
}

/// The Content-Security-Policy of every static page: scripts, styles and connections only from
/// this origin, no inline script or style, no plugins, no framing, no form posts elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Headers sent with every static file.
pub const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-cache"),
];

/// The answer for a path that is no API route: the site's file for `GET`, else 404.
pub(crate) fn respond(site: Option<&dyn StaticSite>, method: &str, path: &str) -> ApiResponse {
    let file = match (site, method) {
        (Some(site), "GET") => site.file(path),
        _ => None,
    };
    let Some(file) = file else {
        return ApiResponse::error(404, "Not Found", None);
    };
    let mut headers: Vec<(&'static str, Cow<'static, str>)> =
        vec![("content-type", Cow::Borrowed(file.content_type))];
    headers.extend(
        SECURITY_HEADERS
            .iter()
            .map(|(name, value)| (*name, Cow::Borrowed(*value))),
    );
    ApiResponse {
        status: 200,
        headers,
        body: ResponseBody::Full(file.body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct One;

    impl StaticSite for One {
        fn file(&self, path: &str) -> Option<StaticFile> {
            (path == "/").then(|| StaticFile {
                content_type: "text/html; charset=utf-8",
                body: Bytes::from_static(b"<p>hi</p>"),
            })
        }
    }

    #[test]
    fn serves_files_with_the_security_headers_and_404s_the_rest() {
        let ok = respond(Some(&One), "GET", "/");
        assert_eq!(ok.status, 200);
        assert_eq!(ok.body_bytes(), b"<p>hi</p>");
        assert_eq!(ok.header("content-type"), Some("text/html; charset=utf-8"));
        assert_eq!(
            ok.header("content-security-policy"),
            Some(CONTENT_SECURITY_POLICY)
        );
        assert!(CONTENT_SECURITY_POLICY.contains("script-src 'self';"));
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
        assert_eq!(ok.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(ok.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(respond(Some(&One), "GET", "/nope").status, 404);
        assert_eq!(respond(Some(&One), "POST", "/").status, 404);
        assert_eq!(respond(None, "GET", "/").status, 404);
    }
}
