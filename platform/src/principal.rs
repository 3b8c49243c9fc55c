//! Who is calling, as verified by the gateway.
//!
//! The experience tier never sees a raw credential. In `up` mode the gateway
//! puts a [`Principal`] into the request's extensions; in `serve` mode, where
//! the tiers are separate processes, it sends the principal in the
//! [`HEADER`] header as a short-lived assertion MACed with a secret that only
//! the gateway and the experience tier share ([`PrincipalSigner`]), so the
//! experience tier can tell it came from the gateway.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Header that carries the signed principal from gateway to experience tier.
pub const HEADER: &str = "x-erp-principal";

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The subject: a user id, a service id or a partner key id.
    pub subject: String,
    /// The tenant the caller acts for, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Granted scopes, e.g. `catalog:read`.
    pub scopes: Vec<String>,
    /// The user's e-mail, when the token had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

impl Principal {
    /// Whether `scope` was granted.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Errors verifying a principal assertion.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The assertion is missing, forged, expired or malformed.
    #[error("principal assertion rejected: {0}")]
    Rejected(#[from] jsonwebtoken::errors::Error),
    /// The shared secret is too short to be safe.
    #[error("the principal secret must be at least 32 bytes")]
    WeakSecret,
}

#[derive(Serialize, Deserialize)]
struct Assertion {
    #[serde(flatten)]
    principal: Principal,
    exp: u64,
    aud: String,
}

const AUDIENCE: &str = "erp-connect-experience";
/// An assertion only has to survive one hop.
const ASSERTION_TTL: Duration = Duration::from_secs(30);

/// Signs and verifies principal assertions with a shared secret (HS256).
#[derive(Clone)]
pub struct PrincipalSigner {
    encoding: Arc<jsonwebtoken::EncodingKey>,
    decoding: Arc<jsonwebtoken::DecodingKey>,
    validation: Arc<jsonwebtoken::Validation>,
}

impl std::fmt::Debug for PrincipalSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrincipalSigner([redacted])")
    }
}

impl PrincipalSigner {
    /// A signer from the shared secret (at least 32 bytes).
    pub fn new(secret: &[u8]) -> Result<Self, Error> {
        if secret.len() < 32 {
            return Err(Error::WeakSecret);
        }
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        validation.leeway = 5;
        Ok(Self {
            encoding: Arc::new(jsonwebtoken::EncodingKey::from_secret(secret)?),
            decoding: Arc::new(jsonwebtoken::DecodingKey::from_secret(secret)?),
            validation: Arc::new(validation),
        })
    }

    /// The header value for `principal`.
    pub fn sign(&self, principal: &Principal) -> Result<String, Error> {
        let exp =
            SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().saturating_add(ASSERTION_TTL).as_secs();
        let claims = Assertion { principal: principal.clone(), exp, aud: AUDIENCE.to_owned() };
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        Ok(jsonwebtoken::encode(&header, &claims, &self.encoding)?)
    }

    /// The principal in a header value, if the gateway signed it.
    pub fn verify(&self, value: &str) -> Result<Principal, Error> {
        let data = jsonwebtoken::decode::<Assertion>(value, &self.decoding, &self.validation)?;
        Ok(data.claims.principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Principal {
        Principal {
            subject: "alice".into(),
            tenant: Some("acme".into()),
            scopes: vec!["catalog:read".into()],
            email: None,
        }
    }

    #[test]
    fn a_signed_principal_verifies_with_the_same_secret_only() {
        let signer = PrincipalSigner::new(&[7u8; 32]).expect("signer");
        let other = PrincipalSigner::new(&[8u8; 32]).expect("signer");
        let header = signer.sign(&alice()).expect("sign");
        assert_eq!(signer.verify(&header).expect("verify"), alice());
        assert!(other.verify(&header).is_err());
        assert!(signer.verify("not-a-token").is_err());
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(PrincipalSigner::new(b"short"), Err(Error::WeakSecret)));
    }
}
