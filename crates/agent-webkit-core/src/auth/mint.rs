//! Minting tokens the way an app's backend would: the server's `mint-token` subcommand (for
//! local testing) and the tests use it, so both write exactly the claims
//! [`JwtVerifier`](super::jwt::JwtVerifier) reads.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::jwt::ClaimRestrictions;

/// The claims of a minted token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TokenClaims {
    /// The principal.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not valid before, seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Audience.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Restrictions (claim `agent_webkit`), omitted when there are none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_webkit: Option<ClaimRestrictions>,
}

impl TokenClaims {
    /// Claims for `sub`, issued now, valid for `ttl`.
    pub fn new(sub: impl Into<String>, ttl: Duration) -> Self {
        let now = now_secs();
        Self {
            sub: sub.into(),
            exp: now.saturating_add(ttl.as_secs()),
            iat: Some(now),
            ..Self::default()
        }
    }
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A key that signs tokens.
pub struct SigningKey {
    alg: Algorithm,
    key: EncodingKey,
    kid: Option<String>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// A key or token that cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot mint a token: {0}")]
pub struct MintError(String);

impl SigningKey {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8]) -> Result<Self, MintError> {
        Ok(Self {
            alg: Algorithm::HS256,
            key: EncodingKey::from_secret(secret).map_err(|e| MintError(e.to_string()))?,
            kid: None,
        })
    }

    /// A private key in PEM (PKCS#1 / PKCS#8 RSA → RS256; PKCS#8 / SEC1 EC P-256 → ES256).
    pub fn from_pem(pem: &[u8]) -> Result<Self, MintError> {
        if let Ok(key) = EncodingKey::from_rsa_pem(pem) {
            return Ok(Self {
                alg: Algorithm::RS256,
                key,
                kid: None,
            });
        }
        let key = EncodingKey::from_ec_pem(pem)
            .map_err(|e| MintError(format!("not an RSA or EC P-256 private key in PEM: {e}")))?;
        Ok(Self {
            alg: Algorithm::ES256,
            key,
            kid: None,
        })
    }

    /// Names the key in the token header (`kid`), for a JWKS with several keys.
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// `"HS256"`, `"RS256"` or `"ES256"`.
    pub fn algorithm(&self) -> &'static str {
        match self.alg {
            Algorithm::RS256 => "RS256",
            Algorithm::ES256 => "ES256",
            _ => "HS256",
        }
    }

    /// Signs `claims`.
    pub fn sign(&self, claims: &TokenClaims) -> Result<String, MintError> {
        let mut header = Header::new(self.alg);
        header.kid.clone_from(&self.kid);
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|e| MintError(e.to_string()))
    }
}
