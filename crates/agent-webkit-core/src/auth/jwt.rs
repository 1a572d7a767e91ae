//! JWT verification: the keys an app's backend signs its users' tokens with, and the rules a
//! token must pass to become a [`Principal`].
//!
//! Accepted: HS256 with a shared secret, RS256 / ES256 (P-256) with public keys from PEM files
//! or a JWKS file (several keys, chosen by `kid`: rotation). A token's `alg` selects the key
//! family before anything is verified, so a token can only be checked with a key of the kind
//! its algorithm names (an HS256 token is never checked against an RSA public key's bytes:
//! no algorithm confusion), and `alg: none` or any other algorithm is refused. `exp` and `sub`
//! are required; `exp` / `nbf` are checked with [`JwtSettings::leeway`]; `aud` / `iss` when
//! configured. Restrictions come from the `agent_webkit` claim ([`ClaimRestrictions`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use super::principal::Principal;

/// The name of the claim holding a token's [`ClaimRestrictions`].
pub const CLAIM: &str = "agent_webkit";
/// Default leeway for `exp` / `nbf`: clocks of the minting backend and this server may differ.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// What the `agent_webkit` claim may restrict (every field optional; unknown fields make the
/// token invalid, so a misspelt restriction never silently grants more).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRestrictions {
    /// Sees and drives every session.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
    /// Directory the principal's sessions must live under (and start in by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd_root: Option<String>,
    /// Most concurrent sessions (can only lower the server's per-principal default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<usize>,
    /// Permission modes the principal may choose (within the server's policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_modes: Option<Vec<String>>,
}

impl ClaimRestrictions {
    fn into_principal(self, sub: String) -> Principal {
        Principal {
            sub: Some(sub),
            admin: self.admin,
            cwd_root: self.cwd_root.map(PathBuf::from),
            max_sessions: self.max_sessions,
            permission_modes: self.permission_modes,
        }
    }
}

/// How tokens are verified.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct JwtSettings {
    /// HS256 shared secret.
    pub secret: Option<String>,
    /// PEM files, one public key each (RSA → RS256, EC P-256 → ES256).
    pub public_key_files: Vec<PathBuf>,
    /// A JWKS file (`{"keys": [...]}`): RSA and EC P-256 keys (and `oct` secrets for HS256),
    /// picked by the token's `kid`.
    pub jwks_file: Option<PathBuf>,
    /// Required `aud` (any of them), when non-empty.
    pub audience: Vec<String>,
    /// Required `iss` (any of them), when non-empty.
    pub issuer: Vec<String>,
    /// Clock-skew allowance for `exp` / `nbf`.
    pub leeway: Duration,
}

impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSettings")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("public_key_files", &self.public_key_files)
            .field("jwks_file", &self.jwks_file)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway", &self.leeway)
            .finish()
    }
}

/// A key set that cannot be used (a startup error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtKeyError {
    /// A key file could not be read or parsed.
    #[error("JWT key file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The HS256 secret is empty.
    #[error("the JWT secret is empty")]
    EmptySecret,
    /// No key at all.
    #[error("JWT verification needs a secret, a public key file or a JWKS file")]
    NoKeys,
}

/// One verification key.
struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// Verifies tokens into [`Principal`]s. Built once at startup; cheap to clone.
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    keys: Vec<Key>,
    settings: JwtSettings,
}

impl PartialEq for JwtVerifier {
    fn eq(&self, other: &Self) -> bool {
        self.inner.settings == other.inner.settings
    }
}

impl Eq for JwtVerifier {}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("keys", &self.inner.keys.len())
            .field("settings", &self.inner.settings)
            .finish()
    }
}

/// Why a token was refused (logged; the client gets a plain 401 `Invalid token`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, or an algorithm this server does not accept (`none` included).
    #[error("malformed token or unsupported algorithm: {0}")]
    Malformed(String),
    /// No configured key of the token's algorithm (and `kid`).
    #[error("no key for algorithm {alg} and kid {kid:?}")]
    NoKey {
        /// The token's algorithm.
        alg: String,
        /// The token's key id.
        kid: Option<String>,
    },
    /// Signature, time, audience, issuer or claim check failed.
    #[error("token rejected: {0}")]
    Rejected(String),
}

/// The claims read from a verified token (registered ones are checked by the library).
#[derive(Deserialize)]
struct VerifiedClaims {
    sub: String,
    #[serde(default)]
    agent_webkit: Option<ClaimRestrictions>,
}

impl JwtVerifier {
    /// Loads the keys `settings` names.
    pub fn new(settings: JwtSettings) -> Result<Self, JwtKeyError> {
        let mut keys = Vec::new();
        if let Some(secret) = &settings.secret {
            if secret.is_empty() {
                return Err(JwtKeyError::EmptySecret);
            }
            let key = DecodingKey::from_secret(secret.as_bytes())
                .map_err(|_| JwtKeyError::EmptySecret)?;
            keys.push(Key {
                kid: None,
                alg: Algorithm::HS256,
                key,
            });
        }
        for path in &settings.public_key_files {
            keys.push(pem_key(path)?);
        }
        if let Some(path) = &settings.jwks_file {
            keys.extend(jwks_keys(path)?);
        }
        if keys.is_empty() {
            return Err(JwtKeyError::NoKeys);
        }
        Ok(Self {
            inner: Arc::new(Inner { keys, settings }),
        })
    }

    /// Verifies `token` and returns its principal.
    pub fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        if !matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::RS256 | Algorithm::ES256
        ) {
            return Err(TokenError::Malformed(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let of_alg = || self.inner.keys.iter().filter(|k| k.alg == header.alg);
        // A `kid` naming a key picks that key; otherwise every key of the algorithm is tried.
        let named: Vec<&Key> = match &header.kid {
            Some(kid) => of_alg()
                .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
                .collect(),
            None => Vec::new(),
        };
        let candidates: Vec<&Key> = if named.is_empty() {
            of_alg()
                .filter(|k| header.kid.is_none() || k.kid.is_none())
                .collect()
        } else {
            named
        };
        if candidates.is_empty() {
            return Err(TokenError::NoKey {
                alg: format!("{:?}", header.alg),
                kid: header.kid,
            });
        }
        let validation = self.validation(header.alg);
        let mut last = None;
        for key in candidates {
            match jsonwebtoken::decode::<VerifiedClaims>(token, &key.key, &validation) {
                Ok(data) => {
                    let claims = data.claims;
                    if claims.sub.is_empty() {
                        return Err(TokenError::Rejected("empty sub".into()));
                    }
                    return Ok(claims
                        .agent_webkit
                        .unwrap_or_default()
                        .into_principal(claims.sub));
                }
                Err(err) => last = Some(err.to_string()),
            }
        }
        Err(TokenError::Rejected(last.unwrap_or_default()))
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let settings = &self.inner.settings;
        let mut validation = Validation::new(alg);
        validation.leeway = settings.leeway.as_secs();
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if settings.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&settings.audience);
            required.push("aud");
        }
        if !settings.issuer.is_empty() {
            validation.set_issuer(&settings.issuer);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        validation
    }
}

fn read(path: &Path) -> Result<Vec<u8>, JwtKeyError> {
    std::fs::read(path).map_err(|e| JwtKeyError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// A public key from a PEM file: RSA (RS256) or EC (ES256).
fn pem_key(path: &Path) -> Result<Key, JwtKeyError> {
    let pem = read(path)?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok(Key {
            kid: None,
            alg: Algorithm::RS256,
            key,
        });
    }
    match DecodingKey::from_ec_pem(&pem) {
        Ok(key) => Ok(Key {
            kid: None,
            alg: Algorithm::ES256,
            key,
        }),
        Err(err) => Err(JwtKeyError::File {
            path: path.to_owned(),
            reason: format!("not an RSA or EC public key in PEM: {err}"),
        }),
    }
}

/// The usable keys of a JWKS file; keys for encryption or other algorithms are skipped.
fn jwks_keys(path: &Path) -> Result<Vec<Key>, JwtKeyError> {
    let bad = |reason: String| JwtKeyError::File {
        path: path.to_owned(),
        reason,
    };
    let set: JwkSet = serde_json::from_slice(&read(path)?).map_err(|e| bad(e.to_string()))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let kid = jwk.common.key_id.clone();
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            tracing::warn!(kid = ?kid, "JWKS: skipping an encryption key");
            continue;
        }
        let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
            (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
            (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
                if ec.curve == EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            (AlgorithmParameters::OctetKey(_), None | Some(KeyAlgorithm::HS256)) => {
                Algorithm::HS256
            }
            _ => {
                tracing::warn!(kid = ?kid, "JWKS: skipping a key that is not RS256, ES256 (P-256) or HS256");
                continue;
            }
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(format!("key {kid:?}: {e}")))?;
        keys.push(Key { kid, alg, key });
    }
    if keys.is_empty() {
        return Err(bad("no RS256, ES256 or HS256 key in the set".into()));
    }
    Ok(keys)
}
