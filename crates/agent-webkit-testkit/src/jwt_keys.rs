//! Test-only JWT keys, generated at test time with the `openssl` CLI (no private key is
//! committed), and the tokens an identity test needs: well-formed ones minted with core's
//! `auth::mint` (what the server's `mint-token` and an app backend write), and forged ones
//! (`alg: none`, HS256 signed with an RSA public key's bytes).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use agent_webkit_core::auth::jwt::ClaimRestrictions;
use agent_webkit_core::auth::mint::{SigningKey, TokenClaims};
use serde_json::json;

use crate::real_cli::TempDir;
use crate::{Result, TestkitError};

/// The HS256 secret identity tests start servers with.
pub const SECRET: &str = "test-only-jwt-secret-0123456789abcdef";

/// A key pair in PEM files.
#[derive(Debug)]
pub struct KeyPair {
    /// The private key (PKCS#8 PEM).
    pub private: PathBuf,
    /// The public key (SPKI PEM).
    pub public: PathBuf,
}

impl KeyPair {
    /// A signer with this key (RS256 or ES256).
    pub fn signer(&self) -> Result<SigningKey> {
        SigningKey::from_pem(&std::fs::read(&self.private)?)
            .map_err(|e| TestkitError::Unexpected(e.to_string()))
    }

    /// The public key as a JWK named `kid` (`{"kty": ..., "kid": ...}`).
    pub fn jwk(&self, kid: &str) -> Result<serde_json::Value> {
        let pem = std::fs::read(&self.private)?;
        let (key, alg) = match jsonwebtoken::EncodingKey::from_rsa_pem(&pem) {
            Ok(key) => (key, jsonwebtoken::Algorithm::RS256),
            Err(_) => (
                jsonwebtoken::EncodingKey::from_ec_pem(&pem)
                    .map_err(|e| TestkitError::Unexpected(e.to_string()))?,
                jsonwebtoken::Algorithm::ES256,
            ),
        };
        let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, alg)
            .map_err(|e| TestkitError::Unexpected(e.to_string()))?;
        jwk.common.key_id = Some(kid.to_owned());
        serde_json::to_value(&jwk).map_err(|e| TestkitError::Unexpected(e.to_string()))
    }
}

/// Freshly generated keys in a temporary directory (removed on drop).
#[derive(Debug)]
pub struct TestKeys {
    dir: TempDir,
}

fn openssl(args: &[&str]) -> Result<()> {
    let out = Command::new("openssl").args(args).output().map_err(|e| {
        TestkitError::Unexpected(format!("the identity tests need the openssl CLI: {e}"))
    })?;
    if !out.status.success() {
        return Err(TestkitError::Unexpected(format!(
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

impl TestKeys {
    /// A fresh directory for keys.
    pub fn new() -> Result<Self> {
        Ok(Self {
            dir: TempDir::new("jwt-keys")?,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn pair(&self, name: &str, genpkey: &[&str]) -> Result<KeyPair> {
        let private = self.dir.path().join(format!("{name}.key.pem"));
        let public = self.dir.path().join(format!("{name}.pub.pem"));
        let private_s = private.display().to_string();
        let public_s = public.display().to_string();
        let mut args = vec!["genpkey"];
        args.extend_from_slice(genpkey);
        args.extend_from_slice(&["-out", &private_s]);
        openssl(&args)?;
        openssl(&["pkey", "-in", &private_s, "-pubout", "-out", &public_s])?;
        Ok(KeyPair { private, public })
    }

    /// A new RSA 2048 key pair.
    pub fn rsa(&self, name: &str) -> Result<KeyPair> {
        self.pair(
            name,
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        )
    }

    /// A new EC P-256 key pair.
    pub fn ec(&self, name: &str) -> Result<KeyPair> {
        self.pair(
            name,
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        )
    }

    /// Writes a JWKS file holding `jwks` and returns its path.
    pub fn jwks(&self, name: &str, jwks: &[serde_json::Value]) -> Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, json!({ "keys": jwks }).to_string())?;
        Ok(path)
    }
}

/// Claims for `sub`, valid for an hour.
pub fn claims(sub: &str) -> TokenClaims {
    TokenClaims::new(sub, Duration::from_secs(3600))
}

/// Claims for `sub` with `restrictions`.
pub fn restricted(sub: &str, restrictions: ClaimRestrictions) -> TokenClaims {
    TokenClaims {
        agent_webkit: Some(restrictions),
        ..claims(sub)
    }
}

/// An HS256 token for `claims` signed with [`SECRET`].
pub fn hs256(claims: &TokenClaims) -> Result<String> {
    hs256_with(SECRET.as_bytes(), claims)
}

/// An HS256 token for `claims` signed with `secret`.
pub fn hs256_with(secret: &[u8], claims: &TokenClaims) -> Result<String> {
    SigningKey::hs256(secret)
        .and_then(|key| key.sign(claims))
        .map_err(|e| TestkitError::Unexpected(e.to_string()))
}

/// An HS256 token over arbitrary JSON claims, signed with [`SECRET`].
pub fn hs256_json(claims: &serde_json::Value) -> Result<String> {
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes())
        .map_err(|e| TestkitError::Unexpected(e.to_string()))?;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &key,
    )
    .map_err(|e| TestkitError::Unexpected(e.to_string()))
}

/// Signs `claims` with `key`.
pub fn sign(key: &SigningKey, claims: &TokenClaims) -> Result<String> {
    key.sign(claims)
        .map_err(|e| TestkitError::Unexpected(e.to_string()))
}

/// An unsigned token (`alg: none`, empty signature) for `claims`.
pub fn alg_none(claims: &TokenClaims) -> Result<String> {
    let header = json!({"alg": "none", "typ": "JWT"}).to_string();
    let payload =
        serde_json::to_string(claims).map_err(|e| TestkitError::Unexpected(e.to_string()))?;
    Ok(format!(
        "{}.{}.",
        base64url(header.as_bytes()),
        base64url(payload.as_bytes())
    ))
}

/// Unpadded base64url.
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn base64url_matches_known_values() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }
}
