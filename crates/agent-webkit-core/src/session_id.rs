//! Session ids chosen by the caller (`"session_id"` in `POST /sessions`): the rule they follow.
//!
//! An id is 1 to [`MAX_LEN`] characters of `[A-Za-z0-9._~-]` (the URL path characters that
//! need no escaping) and does not start with `.` (so `.` and `..` can never be path segments).
//! UUIDs and application keys such as `order-123` fit. Uniqueness is the registry's business:
//! an id taken by a session held here, being created here, or stored in the persistence (live,
//! hibernated, ended but retained, or held by another host) is refused with
//! [`CreateError::Exists`](crate::registry::CreateError::Exists) (HTTP 409 `session_exists`).

/// Longest id accepted.
pub const MAX_LEN: usize = 128;

/// The refusal code of an invalid id (HTTP 400).
pub const INVALID_CODE: &str = "invalid_session_id";

/// The refusal code of an id already taken (HTTP 409).
pub const EXISTS_CODE: &str = "session_exists";

/// Why a caller-chosen session id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSessionId {
    /// The id is empty.
    #[error("session_id must not be empty")]
    Empty,
    /// The id is longer than [`MAX_LEN`] bytes.
    #[error("session_id is longer than {MAX_LEN} characters")]
    TooLong,
    /// The id holds a character outside `[A-Za-z0-9._~-]`.
    #[error("session_id may only hold the characters A-Z a-z 0-9 . _ ~ -")]
    BadCharacter,
    /// The id starts with `.`.
    #[error("session_id must not start with '.'")]
    LeadingDot,
}

/// Checks `id` against the rule in the module docs.
pub fn validate(id: &str) -> Result<(), InvalidSessionId> {
    if id.is_empty() {
        return Err(InvalidSessionId::Empty);
    }
    if id.len() > MAX_LEN {
        return Err(InvalidSessionId::TooLong);
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
    {
        return Err(InvalidSessionId::BadCharacter);
    }
    if id.starts_with('.') {
        return Err(InvalidSessionId::LeadingDot);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        for ok in [
            "a",
            "order-123",
            "A.b_c~d-e",
            "0123e4567-e89b-12d3-a456-426614174000",
            &"x".repeat(MAX_LEN),
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate(""), Err(InvalidSessionId::Empty));
        assert_eq!(
            validate(&"x".repeat(MAX_LEN + 1)),
            Err(InvalidSessionId::TooLong)
        );
        for bad in ["a/b", "a b", "ä", "a%2F", "a?b", "a#b", "a\0", "a\n"] {
            assert_eq!(
                validate(bad),
                Err(InvalidSessionId::BadCharacter),
                "{bad:?}"
            );
        }
        assert_eq!(validate("."), Err(InvalidSessionId::LeadingDot));
        assert_eq!(validate(".."), Err(InvalidSessionId::LeadingDot));
        assert_eq!(validate(".hidden"), Err(InvalidSessionId::LeadingDot));
    }
}
