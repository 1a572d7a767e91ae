//! Bearer-token authentication: the shared token (single-tenant) and JWTs naming a user
//! ([`jwt`]); [`AuthConfig::authenticate`] turns a request into its [`Principal`].

pub mod jwt;
pub mod mint;
pub(crate) mod ownership;
pub mod principal;
pub(crate) mod quota;

use subtle::ConstantTimeEq;

use jwt::JwtVerifier;
use principal::Principal;

/// Env var holding the bearer token.
pub const TOKEN_ENV: &str = "AGENT_WEBKIT_AUTH_TOKEN";
/// The original server's name for the same variable (also accepted).
pub const LEGACY_TOKEN_ENV: &str = "AGENT_WEBKIT_TOKEN";
/// Set to `1` to disable auth (development only).
pub const NO_AUTH_ENV: &str = "AGENT_WEBKIT_NO_AUTH";

/// Auth settings: the shared token and / or JWT verification, or auth disabled.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// The shared bearer token (its holder is [`Principal::shared`]).
    pub token: Option<String>,
    /// Accept every request without a token.
    pub disabled: bool,
    /// Verifies JWTs minted by the app's backend, one principal per `sub`.
    pub jwt: Option<JwtVerifier>,
    /// Most concurrent sessions per JWT principal on this host (a token's `max_sessions`
    /// claim can lower it); `None`: only the claim limits.
    pub max_sessions_per_principal: Option<usize>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("disabled", &self.disabled)
            .field("jwt", &self.jwt)
            .field(
                "max_sessions_per_principal",
                &self.max_sessions_per_principal,
            )
            .finish()
    }
}

/// Auth is enabled but no token is configured: a startup error, not a server that rejects all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "auth is enabled but no token is configured: set {TOKEN_ENV} (or pass --token) and / or JWT keys (--jwt-secret, --jwt-public-key, --jwt-jwks), or disable auth with {NO_AUTH_ENV}=1 / --no-auth"
)]
pub struct MissingTokenError;

/// Why a request was rejected (HTTP 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer ...` header.
    #[error("Missing bearer token")]
    Missing,
    /// A token that does not match.
    #[error("Invalid token")]
    Invalid,
}

impl AuthConfig {
    /// Requires `token` on every request.
    pub fn with_token(token: impl Into<String>) -> Self {
        Self {
            token: Some(token.into()),
            ..Self::default()
        }
    }

    /// Accepts JWTs verified by `verifier` (besides the shared token, if one is set).
    pub fn with_jwt(mut self, verifier: JwtVerifier) -> Self {
        self.jwt = Some(verifier);
        self
    }

    /// Accepts every request.
    pub fn disabled() -> Self {
        Self {
            disabled: true,
            ..Self::default()
        }
    }

    /// Reads `AGENT_WEBKIT_NO_AUTH=1`, else `AGENT_WEBKIT_AUTH_TOKEN` (or `AGENT_WEBKIT_TOKEN`).
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) over any variable source (for tests and embedding).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        if lookup(NO_AUTH_ENV).as_deref() == Some("1") {
            return Self::disabled();
        }
        let token = lookup(TOKEN_ENV)
            .filter(|t| !t.is_empty())
            .or_else(|| lookup(LEGACY_TOKEN_ENV).filter(|t| !t.is_empty()));
        Self {
            token,
            ..Self::default()
        }
    }

    /// Checks the configuration is usable (enabled auth needs a non-empty token or JWT keys).
    pub fn validate(&self) -> Result<(), MissingTokenError> {
        match (&self.token, self.disabled) {
            (_, true) => Ok(()),
            (Some(token), false) if !token.is_empty() => Ok(()),
            _ if self.jwt.is_some() => Ok(()),
            _ => Err(MissingTokenError),
        }
    }

    /// Checks an `Authorization` header value (see [`authenticate`](Self::authenticate)).
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(), AuthError> {
        self.authenticate(authorization).map(|_| ())
    }

    /// The principal an `Authorization` header value names: [`Principal::shared`] with auth
    /// disabled or for the shared token (constant-time comparison), the token's user for a
    /// valid JWT. Why a JWT was refused goes to the log, never to the client.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Principal, AuthError> {
        if self.disabled {
            return Ok(Principal::shared());
        }
        let header = authorization.ok_or(AuthError::Missing)?;
        let presented = strip_bearer(header).ok_or(AuthError::Missing)?;
        let expected = self.token.as_deref().unwrap_or_default().as_bytes();
        if !expected.is_empty() && bool::from(presented.ct_eq(expected)) {
            return Ok(Principal::shared());
        }
        let Some(verifier) = &self.jwt else {
            return Err(AuthError::Invalid);
        };
        let token = std::str::from_utf8(presented).map_err(|_| AuthError::Invalid)?;
        verifier.verify(token).map_err(|err| {
            tracing::info!(reason = %err, "bearer JWT refused");
            AuthError::Invalid
        })
    }
}

fn strip_bearer(header: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if header.len() < SCHEME.len() || !header[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    Some(header[SCHEME.len()..].trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lookup_prefers_new_name_and_accepts_old() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(
            AuthConfig::from_lookup(env(&[(TOKEN_ENV, "a"), (LEGACY_TOKEN_ENV, "b")])),
            AuthConfig::with_token("a")
        );
        assert_eq!(
            AuthConfig::from_lookup(env(&[(LEGACY_TOKEN_ENV, "b")])),
            AuthConfig::with_token("b")
        );
        assert_eq!(
            AuthConfig::from_lookup(env(&[(NO_AUTH_ENV, "1"), (TOKEN_ENV, "a")])),
            AuthConfig::disabled()
        );
        assert_eq!(
            AuthConfig::from_lookup(env(&[])).validate(),
            Err(MissingTokenError)
        );
    }

    #[test]
    fn check_distinguishes_missing_and_invalid() {
        let auth = AuthConfig::with_token("s3cret");
        assert_eq!(auth.check(None), Err(AuthError::Missing));
        assert_eq!(auth.check(Some(b"Basic abc")), Err(AuthError::Missing));
        assert_eq!(auth.check(Some(b"Bearer nope")), Err(AuthError::Invalid));
        assert_eq!(auth.check(Some(b"Bearer ")), Err(AuthError::Invalid));
        assert_eq!(auth.check(Some(b"Bearer s3cret")), Ok(()));
        assert_eq!(auth.check(Some(b"bearer  s3cret ")), Ok(()));
        assert_eq!(AuthConfig::disabled().check(None), Ok(()));
        assert_eq!(
            AuthConfig::default().check(Some(b"Bearer x")),
            Err(AuthError::Invalid)
        );
    }
}
