//! Cross-origin requests from browsers: exact allowed origins, preflight answers, and the
//! `Access-Control-*` headers on every response (SSE included). Off (no headers, preflights
//! unanswered) unless origins are configured.

use std::borrow::Cow;

/// Methods the API serves.
const ALLOW_METHODS: &str = "GET, POST, DELETE";
/// Request headers a browser client may send.
const ALLOW_HEADERS: &str = "authorization, content-type, last-event-id";
/// Response headers a browser client may read beyond the CORS-safelisted ones.
const EXPOSE_HEADERS: &str = "retry-after";
/// How long a browser may cache a preflight answer, in seconds.
const MAX_AGE: &str = "600";

/// The allowed origins (exact, case-sensitive `scheme://host[:port]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Cors {
    origins: Vec<String>,
}

impl Cors {
    /// A policy allowing exactly `origins` (empty: CORS off). A trailing `/` is ignored.
    pub(crate) fn new(origins: &[String]) -> Self {
        Self {
            origins: origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
        }
    }

    /// The request's `Origin`, when it is allowed.
    pub(crate) fn allowed<'a>(&self, origin: Option<&'a [u8]>) -> Option<&'a str> {
        let origin = std::str::from_utf8(origin?).ok()?;
        self.origins.iter().any(|o| o == origin).then_some(origin)
    }

    /// The headers of a successful preflight answer for `origin`.
    pub(crate) fn preflight_headers(origin: &str) -> Vec<(&'static str, Cow<'static, str>)> {
        let mut headers = Self::response_headers(origin);
        headers.extend([
            ("access-control-allow-methods", Cow::Borrowed(ALLOW_METHODS)),
            ("access-control-allow-headers", Cow::Borrowed(ALLOW_HEADERS)),
            ("access-control-max-age", Cow::Borrowed(MAX_AGE)),
        ]);
        headers
    }

    /// The headers added to any response to an allowed `origin`.
    pub(crate) fn response_headers(origin: &str) -> Vec<(&'static str, Cow<'static, str>)> {
        vec![
            ("access-control-allow-origin", Cow::Owned(origin.to_owned())),
            (
                "access-control-expose-headers",
                Cow::Borrowed(EXPOSE_HEADERS),
            ),
            ("vary", Cow::Borrowed("Origin")),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_origins_only() {
        let cors = Cors::new(&[
            "https://app.example".into(),
            "http://localhost:3000/".into(),
        ]);
        assert_eq!(
            cors.allowed(Some(b"https://app.example")),
            Some("https://app.example")
        );
        assert_eq!(
            cors.allowed(Some(b"http://localhost:3000")),
            Some("http://localhost:3000")
        );
        assert_eq!(cors.allowed(Some(b"https://app.example.evil")), None);
        assert_eq!(cors.allowed(Some(b"http://app.example")), None);
        assert_eq!(cors.allowed(None), None);
        assert_eq!(Cors::new(&[]).allowed(Some(b"https://app.example")), None);
    }
}
