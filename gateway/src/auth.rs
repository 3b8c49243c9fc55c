//! JWT verification for users and services.
//!
//! Keys come from each trusted issuer's JWKS (a file, or the dev identity
//! provider in dev mode) and are indexed by `kid`; a token is checked
//! against the one issuer that owns its key: signature with that key's
//! algorithm (EdDSA, ES256 or RS256 only; never `none` or HMAC), `iss`,
//! `aud`, `exp` and `nbf` with a bounded leeway, and claims of the right
//! JSON types.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use platform::principal::Principal;
use serde::Deserialize;

/// Longest clock skew ever tolerated.
pub const MAX_LEEWAY_SECS: u64 = 60;

/// A trusted issuer, as configured (`[[gateway.issuers]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Expected `iss`.
    pub issuer: String,
    /// A file with the issuer's JWKS.
    pub jwks_file: PathBuf,
    /// Accepted `aud` values. Default `["erp-connect"]`.
    #[serde(default = "default_audiences")]
    pub audiences: Vec<String>,
    /// Signature algorithms accepted from this issuer, out of `EdDSA`,
    /// `ES256` and `RS256` (the default: all three). A key of another kind
    /// in its JWKS is a configuration error; `none` and HMAC never pass.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
}

fn default_algorithms() -> Vec<String> {
    ["EdDSA", "ES256", "RS256"].map(str::to_owned).to_vec()
}

/// The one algorithm a key may sign with, from its type.
fn key_algorithm(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve};
    match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Some(Algorithm::ES256),
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        _ => None,
    }
}

fn default_audiences() -> Vec<String> {
    vec![crate::dev_idp::DEFAULT_AUDIENCE.to_owned()]
}

/// Why a credential was refused. The detail is safe to show the caller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token")]
    Missing,
    /// The token is not a well-formed JWT from a trusted key.
    #[error("token not issued by a trusted issuer")]
    UnknownKey,
    /// The token failed verification.
    #[error("invalid token: {0}")]
    Invalid(jsonwebtoken::errors::Error),
    /// A JWKS could not be loaded (configuration time only).
    #[error("JWKS of issuer {issuer}: {reason}")]
    Jwks {
        /// The issuer.
        issuer: String,
        /// What went wrong.
        reason: String,
    },
}

struct TrustedKey {
    key: DecodingKey,
    validation: Validation,
}

/// Verifies bearer JWTs against the trusted issuers.
#[derive(Clone)]
pub struct Authenticator {
    keys: Arc<HashMap<String, TrustedKey>>,
    /// Tokens verified before, so a hot token costs a map lookup rather than
    /// a signature check; an entry never outlives the token's `exp`.
    verified: Arc<VerifiedTokens>,
    /// Partner API keys, when the gateway has a key store.
    api_keys: Option<crate::key_store::KeyStore>,
}

/// Most tokens kept verified at once; beyond it expired ones are dropped,
/// and if that is not enough, all of them (they are verified again).
const MAX_CACHED_TOKENS: usize = 50_000;

#[derive(Default)]
struct VerifiedTokens {
    tokens: RwLock<HashMap<Box<str>, (Principal, u64)>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("kids", &self.keys.keys().collect::<Vec<_>>()).finish()
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeList {
    Space(String),
    List(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    scope: Option<ScopeList>,
    #[serde(default)]
    scp: Option<ScopeList>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

impl ScopeList {
    fn into_vec(self) -> Vec<String> {
        match self {
            ScopeList::Space(s) => s.split_ascii_whitespace().map(str::to_owned).collect(),
            ScopeList::List(v) => v,
        }
    }
}

impl Authenticator {
    /// Trusts each `(issuer, audiences, jwks)`; `leeway_secs` is capped at [`MAX_LEEWAY_SECS`].
    pub fn new(issuers: &[(String, Vec<String>, JwkSet)], leeway_secs: u64) -> Result<Self, Error> {
        let mut keys = HashMap::new();
        for (issuer, audiences, jwks) in issuers {
            for jwk in &jwks.keys {
                let jwks_error = |reason: String| Error::Jwks { issuer: issuer.clone(), reason };
                let kid = jwk.common.key_id.clone().ok_or_else(|| jwks_error("a key has no kid".into()))?;
                let alg =
                    key_algorithm(jwk).ok_or_else(|| jwks_error(format!("key {kid} is of an unsupported type")))?;
                let key = DecodingKey::from_jwk(jwk).map_err(|e| jwks_error(format!("key {kid}: {e}")))?;
                let mut validation = Validation::new(alg);
                validation.set_issuer(&[issuer]);
                validation.set_audience(audiences);
                validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
                validation.validate_nbf = true;
                validation.leeway = leeway_secs.min(MAX_LEEWAY_SECS);
                if keys.insert(kid.clone(), TrustedKey { key, validation }).is_some() {
                    return Err(jwks_error(format!("kid {kid} is used twice")));
                }
            }
        }
        Ok(Self { keys: Arc::new(keys), verified: Arc::default(), api_keys: None })
    }

    /// Also accepts the partner API keys of `store`.
    pub fn with_api_keys(mut self, store: crate::key_store::KeyStore) -> Self {
        self.api_keys = Some(store);
        self
    }

    /// The partner API key store, if any.
    pub fn api_keys(&self) -> Option<&crate::key_store::KeyStore> {
        self.api_keys.as_ref()
    }

    /// How many verifications the cache answered, and how many it did not.
    pub fn cache_stats(&self) -> (u64, u64) {
        (self.verified.hits.load(Ordering::Relaxed), self.verified.misses.load(Ordering::Relaxed))
    }

    /// Verifies `token` and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Principal, Error> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(u64::MAX);
        let cached = self.verified.tokens.read().ok().and_then(|t| t.get(token).cloned());
        if let Some((principal, exp)) = cached
            && now < exp
        {
            self.verified.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(principal);
        }
        self.verified.misses.fetch_add(1, Ordering::Relaxed);
        let (principal, exp) = self.verify_signed(token)?;
        if let Ok(mut tokens) = self.verified.tokens.write() {
            if tokens.len() >= MAX_CACHED_TOKENS {
                tokens.retain(|_, (_, exp)| now < *exp);
                if tokens.len() >= MAX_CACHED_TOKENS {
                    tokens.clear();
                }
            }
            tokens.insert(token.into(), (principal.clone(), exp));
        }
        Ok(principal)
    }

    /// The full check: signature, algorithm, issuer, audience, times, types.
    fn verify_signed(&self, token: &str) -> Result<(Principal, u64), Error> {
        let header = jsonwebtoken::decode_header(token).map_err(Error::Invalid)?;
        if let Some(typ) = header.typ.as_deref()
            && !typ.eq_ignore_ascii_case("JWT")
            && !typ.eq_ignore_ascii_case("at+jwt")
        {
            return Err(Error::UnknownKey);
        }
        let trusted = header.kid.as_deref().and_then(|kid| self.keys.get(kid)).ok_or(Error::UnknownKey)?;
        let data = jsonwebtoken::decode::<Claims>(token, &trusted.key, &trusted.validation).map_err(Error::Invalid)?;
        let claims = data.claims;
        let mut scopes = claims.scope.map(ScopeList::into_vec).unwrap_or_default();
        scopes.extend(claims.scp.map(ScopeList::into_vec).unwrap_or_default());
        Ok((Principal { subject: claims.sub, tenant: claims.tenant, scopes, email: claims.email }, claims.exp))
    }
}

/// Reads a JWKS file and holds it to the issuer's algorithm allow-list.
pub fn read_jwks_file(issuer: &IssuerConfig) -> Result<JwkSet, Error> {
    let jwks_error = |reason: String| Error::Jwks { issuer: issuer.issuer.clone(), reason };
    let text = std::fs::read_to_string(&issuer.jwks_file)
        .map_err(|e| jwks_error(format!("{}: {e}", issuer.jwks_file.display())))?;
    let jwks: JwkSet =
        serde_json::from_str(&text).map_err(|e| jwks_error(format!("{}: {e}", issuer.jwks_file.display())))?;
    check_algorithms(&jwks, &issuer.algorithms).map_err(jwks_error)?;
    Ok(jwks)
}

/// Every key must sign with an allowed algorithm, and say so if it says.
fn check_algorithms(jwks: &JwkSet, allowed: &[String]) -> Result<(), String> {
    for name in allowed {
        if !matches!(name.as_str(), "EdDSA" | "ES256" | "RS256") {
            return Err(format!("algorithm {name:?} is not one of EdDSA, ES256, RS256"));
        }
    }
    for jwk in &jwks.keys {
        let kid = jwk.common.key_id.as_deref().unwrap_or("(no kid)");
        let alg = key_algorithm(jwk).ok_or_else(|| format!("key {kid} is of an unsupported type"))?;
        if !allowed.iter().any(|a| a == &format!("{alg:?}")) {
            return Err(format!("key {kid} signs with {alg:?}, which this issuer is not allowed to use"));
        }
        if let Some(declared) = jwk.common.key_algorithm
            && format!("{declared:?}") != format!("{alg:?}")
        {
            return Err(format!("key {kid} declares alg {declared:?} but is a {alg:?} key"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dev_idp::{DevIdp, TokenRequest};

    fn setup() -> (tempfile::TempDir, DevIdp, Authenticator) {
        let dir = tempfile::tempdir().expect("tempdir");
        let idp = DevIdp::load_or_create(dir.path()).expect("idp");
        let jwks: JwkSet = serde_json::from_value(idp.jwks()).expect("jwks");
        let auth = Authenticator::new(&[(crate::dev_idp::ISSUER.to_owned(), vec!["erp-connect".to_owned()], jwks)], 30)
            .expect("auth");
        (dir, idp, auth)
    }

    fn request(aud: &str, ttl: Duration) -> TokenRequest {
        TokenRequest {
            subject: "alice".into(),
            scope: "catalog:read orders:read".into(),
            audience: aud.into(),
            tenant: Some("acme".into()),
            email: None,
            ttl,
        }
    }

    #[test]
    fn a_dev_token_verifies_into_a_principal() {
        let (_dir, idp, auth) = setup();
        let token = idp.mint(&request("erp-connect", Duration::from_secs(60))).expect("mint");
        let principal = auth.verify(&token).expect("verify");
        assert_eq!(principal.subject, "alice");
        assert_eq!(principal.tenant.as_deref(), Some("acme"));
        assert!(principal.has_scope("catalog:read") && principal.has_scope("orders:read"));
    }

    #[test]
    fn wrong_audience_expired_foreign_and_garbage_tokens_are_refused() {
        let (_dir, idp, auth) = setup();
        let wrong_aud = idp.mint(&request("process-apis", Duration::from_secs(60))).expect("mint");
        assert!(matches!(auth.verify(&wrong_aud), Err(Error::Invalid(_))));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
        let claims = |exp: serde_json::Value, nbf: u64| serde_json::json!({"iss": crate::dev_idp::ISSUER, "aud": "erp-connect", "sub": "alice", "exp": exp, "nbf": nbf});
        let expired = idp.sign(&claims((now - 120).into(), now - 300)).expect("sign");
        assert!(matches!(auth.verify(&expired), Err(Error::Invalid(_))));
        let not_yet = idp.sign(&claims((now + 600).into(), now + 300)).expect("sign");
        assert!(matches!(auth.verify(&not_yet), Err(Error::Invalid(_))));
        let exp_as_string = idp.sign(&claims(format!("{}", now + 600).into(), now)).expect("sign");
        assert!(matches!(auth.verify(&exp_as_string), Err(Error::Invalid(_))));
        let fine = idp.sign(&claims((now + 600).into(), now)).expect("sign");
        assert!(auth.verify(&fine).is_ok(), "the control token must pass");
        let (_other_dir, other_idp, _) = setup();
        let foreign = other_idp.mint(&request("erp-connect", Duration::from_secs(60))).expect("mint");
        assert!(matches!(auth.verify(&foreign), Err(Error::UnknownKey)));
        assert!(auth.verify("abc.def.ghi").is_err());
        assert!(auth.verify("").is_err());
    }

    #[test]
    fn a_hot_token_is_verified_once_and_a_changed_one_again() {
        let (_dir, idp, auth) = setup();
        let token = idp.mint(&request("erp-connect", Duration::from_secs(60))).expect("mint");
        let first = auth.verify(&token).expect("verify");
        for _ in 0..5 {
            assert_eq!(auth.verify(&token).expect("verify"), first);
        }
        assert_eq!(auth.cache_stats(), (5, 1));
        let mut tampered = token.clone();
        tampered.push('A');
        assert!(auth.verify(&tampered).is_err(), "a different token is checked in full");
        assert_eq!(auth.cache_stats(), (5, 2));
    }

    #[test]
    fn a_cached_token_is_refused_once_its_exp_has_passed() {
        let (_dir, idp, auth) = setup();
        let token = idp.mint(&request("erp-connect", Duration::from_secs(60))).expect("mint");
        auth.verify(&token).expect("verify");
        // As if the token's exp had passed while it sat in the cache.
        if let Ok(mut tokens) = auth.verified.tokens.write()
            && let Some(entry) = tokens.get_mut(token.as_str())
        {
            entry.1 = 0;
        }
        auth.verify(&token).expect("verified again in full, still valid");
        assert_eq!(auth.cache_stats(), (0, 2));
    }

    #[test]
    fn a_jwks_is_held_to_its_issuers_algorithm_allow_list() {
        let (_dir, idp, _) = setup();
        let mut jwks: JwkSet = serde_json::from_value(idp.jwks()).expect("jwks");
        check_algorithms(&jwks, &default_algorithms()).expect("EdDSA is allowed by default");
        let only_rsa = vec!["RS256".to_owned()];
        assert!(check_algorithms(&jwks, &only_rsa).is_err_and(|e| e.contains("not allowed")));
        assert!(check_algorithms(&jwks, &["HS256".to_owned()]).is_err_and(|e| e.contains("not one of")));
        jwks.keys[0].common.key_algorithm = Some(jsonwebtoken::jwk::KeyAlgorithm::HS256);
        assert!(check_algorithms(&jwks, &default_algorithms()).is_err_and(|e| e.contains("declares alg")));
    }

    #[test]
    fn alg_none_is_refused() {
        let (_dir, idp, auth) = setup();
        let token = idp.mint(&request("erp-connect", Duration::from_secs(60))).expect("mint");
        let mut parts = token.split('.');
        let (_, claims) = (parts.next(), parts.next().expect("claims"));
        let header = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            format!(r#"{{"alg":"none","kid":"{}"}}"#, idp.jwks()["keys"][0]["kid"].as_str().expect("kid")),
        );
        assert!(auth.verify(&format!("{header}.{claims}.")).is_err());
    }
}
