//! [`ListRequest`]: the query string of `GET /sessions` (`limit`, `cursor`, `state`).

use super::{cursor, SessionState};

/// Sessions per page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 50;
/// Most sessions per page.
pub const MAX_LIMIT: usize = 200;

/// A parsed `GET /sessions` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    /// Page size (1..=[`MAX_LIMIT`], default [`DEFAULT_LIMIT`]).
    pub limit: usize,
    /// Continue after this sort key (from a previous page's `next_cursor`).
    pub cursor: Option<(i64, String)>,
    /// Only these states (empty: all).
    pub states: Vec<SessionState>,
}

impl Default for ListRequest {
    fn default() -> Self {
        Self {
            limit: DEFAULT_LIMIT,
            cursor: None,
            states: Vec::new(),
        }
    }
}

/// A query string `GET /sessions` cannot use (HTTP 400, code `invalid_query`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

impl ListRequest {
    /// Parses `limit=N`, `cursor=<next_cursor>` and `state=a,b` (repeatable); other
    /// parameters are ignored.
    pub fn parse(query: &str) -> Result<Self, QueryError> {
        let mut request = Self::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "limit" => {
                    request.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            QueryError(format!("limit must be an integer from 1 to {MAX_LIMIT}"))
                        })?;
                }
                "cursor" if value.is_empty() => request.cursor = None,
                "cursor" => {
                    request.cursor = Some(cursor::decode(value).ok_or_else(|| {
                        QueryError("cursor is not a next_cursor this server returned".into())
                    })?);
                }
                "state" => {
                    for name in value.split(',').flat_map(|v| v.split("%2C")) {
                        let state = SessionState::ALL
                            .into_iter()
                            .find(|s| s.as_str().eq_ignore_ascii_case(name))
                            .ok_or_else(|| {
                                let names: Vec<&str> =
                                    SessionState::ALL.iter().map(|s| s.as_str()).collect();
                                QueryError(format!(
                                    "state must be one of {} (comma-separated)",
                                    names.join(", ")
                                ))
                            })?;
                        if !request.states.contains(&state) {
                            request.states.push(state);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!(ListRequest::parse("").unwrap(), ListRequest::default());
        let key = (12, "abc".to_owned());
        let q = format!(
            "limit=5&cursor={}&state=idle,waiting&state=idle&x=1",
            cursor::encode(&key)
        );
        let r = ListRequest::parse(&q).unwrap();
        assert_eq!(r.limit, 5);
        assert_eq!(r.cursor, Some(key));
        assert_eq!(r.states, vec![SessionState::Idle, SessionState::Waiting]);
        assert_eq!(
            ListRequest::parse("state=running%2Cended").unwrap().states,
            vec![SessionState::Running, SessionState::Ended]
        );
        for bad in ["limit=0", "limit=201", "limit=x", "cursor=zz", "state=busy"] {
            assert!(ListRequest::parse(bad).is_err(), "{bad}");
        }
    }
}
