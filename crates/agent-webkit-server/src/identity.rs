//! Identity flags: JWT verification (`--jwt-*`), the per-user session quota, and the
//! `mint-token` subcommand that signs a token for local testing (see docs/auth.md).

use std::path::PathBuf;
use std::time::Duration;

use agent_webkit_core::auth::jwt::{ClaimRestrictions, JwtSettings, JwtVerifier};
use agent_webkit_core::auth::mint::{SigningKey, TokenClaims};
use agent_webkit_core::auth::AuthConfig;

/// JWTs minted by the app's backend, one user (`sub`) each; see docs/auth.md.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Identity (JWT, one user per token)")]
pub(crate) struct IdentityArgs {
    /// Accept HS256 JWTs signed with this shared secret (prefer the environment variable).
    #[arg(long, env = "AGENT_WEBKIT_JWT_SECRET", hide_env_values = true)]
    pub(crate) jwt_secret: Option<String>,
    /// Accept RS256 / ES256 JWTs signed by the private half of this PEM public key
    /// (repeatable).
    #[arg(long, env = "AGENT_WEBKIT_JWT_PUBLIC_KEY", value_delimiter = ',')]
    jwt_public_key: Vec<PathBuf>,
    /// Accept JWTs signed by any key of this JWKS file (`{"keys": [...]}`; RS256, ES256,
    /// HS256 `oct`), chosen by the token's `kid`: list the old and the new key to rotate.
    #[arg(long, env = "AGENT_WEBKIT_JWT_JWKS")]
    jwt_jwks: Option<PathBuf>,
    /// Required JWT audience (`aud`).
    #[arg(long, env = "AGENT_WEBKIT_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// Required JWT issuer (`iss`).
    #[arg(long, env = "AGENT_WEBKIT_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// Seconds of clock skew allowed on a JWT's `exp` and `nbf`.
    #[arg(long, env = "AGENT_WEBKIT_JWT_LEEWAY", default_value_t = 30)]
    jwt_leeway: u64,
    /// Most concurrent sessions per JWT user on this server (a token's
    /// `agent_webkit.max_sessions` claim can lower it; over it: 429 `quota_exceeded`);
    /// unlimited when absent.
    #[arg(long, env = "AGENT_WEBKIT_MAX_SESSIONS_PER_USER")]
    max_sessions_per_user: Option<usize>,
}

impl IdentityArgs {
    /// Adds JWT verification and the quota to `auth` (unless auth is disabled).
    pub(crate) fn apply(&self, mut auth: AuthConfig) -> Result<AuthConfig, String> {
        auth.max_sessions_per_principal = self.max_sessions_per_user;
        if auth.disabled {
            return Ok(auth);
        }
        let settings = JwtSettings {
            secret: self.jwt_secret.clone().filter(|s| !s.is_empty()),
            public_key_files: self.jwt_public_key.clone(),
            jwks_file: self.jwt_jwks.clone(),
            audience: self.jwt_audience.iter().cloned().collect(),
            issuer: self.jwt_issuer.iter().cloned().collect(),
            leeway: Duration::from_secs(self.jwt_leeway),
        };
        if settings.secret.is_none()
            && settings.public_key_files.is_empty()
            && settings.jwks_file.is_none()
        {
            return Ok(auth);
        }
        let verifier = JwtVerifier::new(settings).map_err(|e| e.to_string())?;
        Ok(auth.with_jwt(verifier))
    }
}

/// Subcommands of the server binary.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print a signed JWT for local testing (what an app's backend does for its users; see
    /// docs/auth.md). Reads the same AGENT_WEBKIT_JWT_* variables as the server.
    MintToken(MintTokenArgs),
}

/// `mint-token` flags.
#[derive(Debug, clap::Args)]
pub struct MintTokenArgs {
    /// The user (`sub`).
    #[arg(long)]
    sub: String,
    /// Seconds until the token expires.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    /// HS256 secret (the server's --jwt-secret).
    #[arg(long, env = "AGENT_WEBKIT_JWT_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Sign RS256 / ES256 with this PEM private key instead of the secret.
    #[arg(long, conflicts_with = "secret")]
    private_key: Option<PathBuf>,
    /// Key id (`kid`) for the header, to pick a key of a JWKS.
    #[arg(long)]
    kid: Option<String>,
    /// Audience (`aud`).
    #[arg(long, env = "AGENT_WEBKIT_JWT_AUDIENCE")]
    audience: Option<String>,
    /// Issuer (`iss`).
    #[arg(long, env = "AGENT_WEBKIT_JWT_ISSUER")]
    issuer: Option<String>,
    /// Claim `agent_webkit.admin`: sees every session.
    #[arg(long)]
    admin: bool,
    /// Claim `agent_webkit.cwd_root`.
    #[arg(long)]
    cwd_root: Option<String>,
    /// Claim `agent_webkit.max_sessions`.
    #[arg(long)]
    max_sessions: Option<usize>,
    /// Claim `agent_webkit.permission_modes` (repeatable).
    #[arg(long = "permission-mode", value_delimiter = ',')]
    permission_modes: Vec<String>,
}

impl MintTokenArgs {
    /// The signed token.
    pub fn mint(&self) -> Result<String, String> {
        let key = match (&self.private_key, &self.secret) {
            (Some(path), _) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                SigningKey::from_pem(&pem).map_err(|e| e.to_string())?
            }
            (None, Some(secret)) if !secret.is_empty() => {
                SigningKey::hs256(secret.as_bytes()).map_err(|e| e.to_string())?
            }
            _ => {
                return Err(
                    "mint-token needs --secret (or AGENT_WEBKIT_JWT_SECRET) or --private-key"
                        .into(),
                )
            }
        };
        let key = match &self.kid {
            Some(kid) => key.with_kid(kid),
            None => key,
        };
        let restrictions = ClaimRestrictions {
            admin: self.admin,
            cwd_root: self.cwd_root.clone(),
            max_sessions: self.max_sessions,
            permission_modes: Some(self.permission_modes.clone()).filter(|m| !m.is_empty()),
        };
        let claims = TokenClaims {
            aud: self.audience.clone(),
            iss: self.issuer.clone(),
            agent_webkit: Some(restrictions).filter(|r| *r != ClaimRestrictions::default()),
            ..TokenClaims::new(&self.sub, Duration::from_secs(self.ttl))
        };
        key.sign(&claims).map_err(|e| e.to_string())
    }
}
