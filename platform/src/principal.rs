//! Who is calling, as verified by the gateway.
//!
//! The experience tier never sees a raw credential. In `up` mode the gateway
//! puts a [`Principal`] into the request's extensions; in `serve` mode, where
//! the tiers are separate processes, it sends the principal in the
//! [`HEADER`] header as a short-lived assertion MACed with a secret that only
//! the gateway and the experience tier share ([`PrincipalSigner`]), so the
//! experience tier can tell it came from the gateway.
//!
//! Both ends cache: a partner sends thousands of requests a minute as the
//! same principal, and an HMAC over freshly serialised JSON, then its
//! parse on the other side, were the most a proxied request cost after the
//! proxying itself. The gateway reuses an assertion while at least half its
//! life is left; the experience tier trusts an assertion it has verified
//! (the same bytes, so the same MAC) until it expires.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use http::HeaderValue;

use serde::{Deserialize, Serialize};

/// Header that carries the signed principal from gateway to experience tier.
pub const HEADER: &str = "x-erp-principal";

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// A signed assertion that is not a valid header value (never happens:
    /// a JWT is base64url and dots).
    #[error("the signed principal is not a header value")]
    NotAHeader,
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

/// Most assertions each cache holds; a full cache starts over, which costs
/// a signature or a verification per principal and nothing else.
const CACHE_MAX: usize = 10_000;

/// Signs and verifies principal assertions with a shared secret (HS256).
#[derive(Clone)]
pub struct PrincipalSigner {
    encoding: Arc<jsonwebtoken::EncodingKey>,
    decoding: Arc<jsonwebtoken::DecodingKey>,
    validation: Arc<jsonwebtoken::Validation>,
    /// Assertions made, by principal, with their `exp`.
    signed: Arc<Cache<Principal, HeaderValue>>,
    /// Assertions verified, by their text, with their `exp`.
    verified: Arc<Cache<Box<str>, Principal>>,
}

/// A bounded map from a key to a value that is good until an `exp`.
struct Cache<K, V>(Mutex<HashMap<K, (V, u64)>>);

impl<K: Hash + Eq, V: Clone> Cache<K, V> {
    fn new() -> Self {
        Self(Mutex::new(HashMap::new()))
    }

    /// The value for `key` if its `exp` is after `fresh_until`.
    fn get<Q>(&self, key: &Q, fresh_until: u64) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(key).filter(|(_, exp)| *exp > fresh_until).map(|(value, _)| value.clone())
    }

    fn put(&self, key: K, value: V, exp: u64) {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= CACHE_MAX {
            map.clear();
        }
        map.insert(key, (value, exp));
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
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
            signed: Arc::new(Cache::new()),
            verified: Arc::new(Cache::new()),
        })
    }

    /// The header value for `principal`: one made in the last half of
    /// [`ASSERTION_TTL`], or a new one.
    pub fn sign(&self, principal: &Principal) -> Result<HeaderValue, Error> {
        let now = unix_now();
        if let Some(value) = self.signed.get(principal, now + ASSERTION_TTL.as_secs() / 2) {
            return Ok(value);
        }
        let exp = now + ASSERTION_TTL.as_secs();
        let claims = Assertion { principal: principal.clone(), exp, aud: AUDIENCE.to_owned() };
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)?;
        // Base64url and dots: always a valid header value.
        let value = HeaderValue::try_from(token).map_err(|_| Error::NotAHeader)?;
        self.signed.put(principal.clone(), value.clone(), exp);
        Ok(value)
    }

    /// The principal in a header value, if the gateway signed it.
    pub fn verify(&self, value: &str) -> Result<Principal, Error> {
        if let Some(principal) = self.verified.get(value, unix_now()) {
            return Ok(principal);
        }
        let data = jsonwebtoken::decode::<Assertion>(value, &self.decoding, &self.validation)?;
        let Assertion { principal, exp, .. } = data.claims;
        self.verified.put(value.into(), principal.clone(), exp);
        Ok(principal)
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
        let header = header.to_str().expect("ascii");
        assert_eq!(signer.verify(header).expect("verify"), alice());
        assert!(other.verify(header).is_err());
        assert!(signer.verify("not-a-token").is_err());
    }

    #[test]
    fn cached_assertions_are_reused_only_while_fresh_and_only_for_the_same_principal() {
        let signer = PrincipalSigner::new(&[7u8; 32]).expect("signer");
        let first = signer.sign(&alice()).expect("sign");
        assert_eq!(signer.sign(&alice()).expect("sign"), first, "reused within half its life");
        let bob = Principal { subject: "bob".into(), ..alice() };
        let for_bob = signer.sign(&bob).expect("sign");
        assert_ne!(for_bob, first);
        assert_eq!(signer.verify(for_bob.to_str().expect("ascii")).expect("verify"), bob);
        // Half its life gone: a new assertion.
        let now = unix_now();
        let stale = HeaderValue::from_static("stale");
        signer.signed.put(alice(), stale.clone(), now + ASSERTION_TTL.as_secs() / 2);
        assert_ne!(signer.sign(&alice()).expect("sign"), stale);
        // A verified assertion is trusted from the cache until its exp only.
        let text = first.to_str().expect("ascii");
        assert_eq!(signer.verify(text).expect("verify"), alice());
        signer.verified.put(text.into(), bob.clone(), now);
        assert_ne!(signer.verify(text).expect("verify"), bob, "an expired entry is verified again");
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(PrincipalSigner::new(b"short"), Err(Error::WeakSecret)));
    }
}
