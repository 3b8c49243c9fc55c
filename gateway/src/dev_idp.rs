//! The dev identity provider: an Ed25519 key kept in the data directory,
//! used by `erp-connect token` to mint dev JWTs and trusted by `up` (and
//! `serve` in dev mode) through its JWKS at `GET /dev-idp/jwks.json`.
//! Never used in production mode.

use std::{
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{SigningKey, pkcs8::EncodePrivateKey};
use serde::Serialize;

/// `iss` of every dev token.
pub const ISSUER: &str = "urn:erp-connect:dev-idp";
/// Default `aud` of dev tokens for the HTTP APIs.
pub const DEFAULT_AUDIENCE: &str = "erp-connect";

/// Errors of the dev identity provider.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key file cannot be read or created.
    #[error("dev identity provider key: {0}")]
    Key(#[from] platform::secret_file::Error),
    /// The in-memory key could not be encoded for signing.
    #[error("dev identity provider key cannot be encoded")]
    Encode,
    /// Signing failed.
    #[error("signing the token failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// What goes into a dev token.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// `sub`.
    pub subject: String,
    /// Space-separated scopes.
    pub scope: String,
    /// `aud`.
    pub audience: String,
    /// Tenant claim.
    pub tenant: Option<String>,
    /// E-mail claim.
    pub email: Option<String>,
    /// Lifetime.
    pub ttl: Duration,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
    scope: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
}

/// The dev identity provider of one data directory.
pub struct DevIdp {
    key: SigningKey,
    kid: String,
}

impl std::fmt::Debug for DevIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIdp").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl DevIdp {
    /// Loads the key of `data_dir`, creating it on first use. Safe when
    /// `up` and `token` race for the first start.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, Error> {
        let seed = platform::secret_file::load_or_create(&data_dir.join("dev-idp").join("ed25519.key"))?;
        let key = SigningKey::from_bytes(&seed);
        let public = key.verifying_key().to_bytes();
        let kid = format!("dev-{}", URL_SAFE_NO_PAD.encode(&public[..9]));
        Ok(Self { key, kid })
    }

    /// The JWKS that verifies this provider's tokens.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "alg": "EdDSA",
                "use": "sig",
                "kid": self.kid,
                "x": URL_SAFE_NO_PAD.encode(self.key.verifying_key().to_bytes()),
            }]
        })
    }

    /// A signed JWT for `request`.
    pub fn mint(&self, request: &TokenRequest) -> Result<String, Error> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = Claims {
            iss: ISSUER,
            sub: &request.subject,
            aud: &request.audience,
            iat: now,
            nbf: now,
            exp: now.saturating_add(request.ttl.as_secs()),
            scope: &request.scope,
            tenant: request.tenant.as_deref(),
            email: request.email.as_deref(),
        };
        self.sign(&claims)
    }

    /// Signs any claim set with this provider's key (tests use it to make
    /// expired or malformed tokens that `mint` never would).
    pub fn sign(&self, claims: &impl Serialize) -> Result<String, Error> {
        let der = self.key.to_pkcs8_der().map_err(|_| Error::Encode)?;
        let key = jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes());
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &key)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DevIdp::load_or_create(dir.path()).expect("create");
        let again = DevIdp::load_or_create(dir.path()).expect("load");
        assert_eq!(first.jwks(), again.jwks());
    }
}
