//! JWT verification for users and services.
//!
//! Keys come from each trusted issuer's JWKS (a file read at start, a URL of
//! the identity provider kept fresh by [`crate::jwks`], or the dev identity
//! provider in dev mode) and are indexed by `kid`; a token is checked
//! against the one issuer that owns its key: signature with that key's
//! algorithm (EdDSA, ES256 or RS256 only; never `none` or HMAC), `iss`,
//! `aud`, `exp` and `nbf` with a bounded leeway, and claims of the right
//! JSON types.
//!
//! A token verified once is remembered until its `exp`, so a hot token costs
//! a map lookup. The remembered entry points to the key that verified it:
//! when a refresh of the issuer's JWKS drops that key (rotation, or a
//! compromised key withdrawn), the entry is refused from the next request
//! on, so the cache never outlives the key. The bound for a withdrawn key
//! is therefore the refresh itself: at most `jwks_refresh_interval` (or the
//! provider's shorter `max-age`) after the provider stops publishing it, and
//! never longer than the token's own `exp`.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    jwk::{Jwk, JwkSet, PublicKeyUse},
};
use platform::principal::Principal;
use serde::Deserialize;

use crate::jwks;

/// Longest clock skew ever tolerated.
pub const MAX_LEEWAY_SECS: u64 = 60;

/// A trusted issuer, as configured (`[[gateway.issuers]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Expected `iss`.
    pub issuer: String,
    /// A file with the issuer's JWKS, read at start. Exactly one of
    /// `jwks_file` and `jwks_url` is given.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// The identity provider's JWKS URL: `https://`, or `http://` to a
    /// loopback address only. Fetched at start (a provider that is down
    /// then does not stop the gateway) and kept fresh; see [`crate::jwks`].
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// How often a `jwks_url` is fetched again; a shorter `Cache-Control:
    /// max-age` from the provider (30 s at least) wins. Default 5 min.
    #[serde(default = "default_refresh_interval", with = "humantime_serde")]
    pub jwks_refresh_interval: Duration,
    /// Least time between two fetches of a `jwks_url`, however many tokens
    /// with an unknown `kid` arrive. Default 5 s; at most the refresh
    /// interval. Values under a second are meant for tests.
    #[serde(default = "default_refresh_min_interval", with = "humantime_serde")]
    pub jwks_refresh_min_interval: Duration,
    /// Accepted `aud` values. Default `["erp-connect"]`.
    #[serde(default = "default_audiences")]
    pub audiences: Vec<String>,
    /// Signature algorithms accepted from this issuer, out of `EdDSA`,
    /// `ES256` and `RS256` (the default: all three). A key of another kind
    /// in its JWKS file is a configuration error (in a fetched JWKS it is
    /// skipped); `none` and HMAC never pass.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
}

fn default_refresh_interval() -> Duration {
    Duration::from_secs(300)
}

fn default_refresh_min_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_algorithms() -> Vec<String> {
    ["EdDSA", "ES256", "RS256"].map(str::to_owned).to_vec()
}

fn default_audiences() -> Vec<String> {
    vec![crate::dev_idp::DEFAULT_AUDIENCE.to_owned()]
}

/// Where an issuer's keys come from.
enum KeySource<'a> {
    File(&'a PathBuf),
    Url(http::Uri),
}

impl IssuerConfig {
    /// An issuer whose keys are in `jwks_file`, with the defaults of the
    /// other fields (`..IssuerConfig::with_jwks_file(..)` in a literal).
    pub fn with_jwks_file(issuer: impl Into<String>, jwks_file: impl Into<PathBuf>) -> Self {
        Self {
            issuer: issuer.into(),
            jwks_file: Some(jwks_file.into()),
            jwks_url: None,
            jwks_refresh_interval: default_refresh_interval(),
            jwks_refresh_min_interval: default_refresh_min_interval(),
            audiences: default_audiences(),
            algorithms: default_algorithms(),
        }
    }

    /// An issuer whose keys are fetched from `jwks_url`, with the defaults
    /// of the other fields.
    pub fn with_jwks_url(issuer: impl Into<String>, jwks_url: impl Into<String>) -> Self {
        Self { jwks_file: None, jwks_url: Some(jwks_url.into()), ..Self::with_jwks_file(issuer, PathBuf::new()) }
    }

    /// Checks what can be checked without reading or fetching the JWKS.
    pub fn validate(&self) -> Result<(), Error> {
        self.key_source().map(drop)
    }

    fn key_source(&self) -> Result<KeySource<'_>, Error> {
        let jwks_error = |reason: String| Error::Jwks { issuer: self.issuer.clone(), reason };
        for name in &self.algorithms {
            if !matches!(name.as_str(), "EdDSA" | "ES256" | "RS256") {
                return Err(jwks_error(format!("algorithm {name:?} is not one of EdDSA, ES256, RS256")));
            }
        }
        match (&self.jwks_file, &self.jwks_url) {
            (Some(file), None) => Ok(KeySource::File(file)),
            (None, Some(url)) => {
                if self.jwks_refresh_interval < Duration::from_secs(1) {
                    return Err(jwks_error("jwks_refresh_interval must be at least 1s".into()));
                }
                if self.jwks_refresh_min_interval > self.jwks_refresh_interval {
                    return Err(jwks_error("jwks_refresh_min_interval must not exceed jwks_refresh_interval".into()));
                }
                jwks::check_url(url).map(KeySource::Url).map_err(|e| jwks_error(e.to_string()))
            }
            (Some(_), Some(_)) => Err(jwks_error("give either jwks_file or jwks_url, not both".into())),
            (None, None) => Err(jwks_error("needs a jwks_file or a jwks_url".into())),
        }
    }
}

/// The one algorithm a key may sign with, from its type.
fn key_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve};
    match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Some(Algorithm::ES256),
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        _ => None,
    }
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

/// How tokens of one issuer are validated.
#[derive(Clone)]
struct IssuerRules {
    issuer: String,
    audiences: Vec<String>,
    algorithms: Vec<String>,
    leeway_secs: u64,
    /// Tells the issuer's keys apart from the others' in the key ring.
    source: usize,
}

struct TrustedKey {
    key: DecodingKey,
    validation: Validation,
    /// The issuer that publishes it.
    source: usize,
    /// As published, to tell an unchanged key on refresh.
    jwk: Jwk,
    /// Set when a refresh drops the key: tokens it verified are refused
    /// even from the cache.
    withdrawn: AtomicBool,
}

impl TrustedKey {
    fn new(rules: &IssuerRules, jwk: &Jwk) -> Result<(String, Self), String> {
        let kid = jwk.common.key_id.clone().ok_or("a key has no kid")?;
        let alg = key_algorithm(jwk).ok_or_else(|| format!("key {kid} is of an unsupported type"))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid}: {e}"))?;
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&rules.issuer]);
        validation.set_audience(&rules.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = rules.leeway_secs.min(MAX_LEEWAY_SECS);
        let trusted =
            Self { key, validation, source: rules.source, jwk: jwk.clone(), withdrawn: AtomicBool::new(false) };
        Ok((kid, trusted))
    }
}

/// Every trusted key, by `kid`. Keys of files and of the dev identity
/// provider are fixed; those of URL issuers are replaced by their refreshes.
#[derive(Default)]
struct KeyRing {
    keys: RwLock<HashMap<String, Arc<TrustedKey>>>,
}

impl KeyRing {
    fn get(&self, kid: &str) -> Option<Arc<TrustedKey>> {
        self.keys.read().ok()?.get(kid).cloned()
    }

    /// Installs a fetched JWKS as all of `rules`' issuer's keys. Keys this
    /// issuer may not use (encryption keys, other algorithms, no `kid`) are
    /// skipped; a set with no usable key is refused and the old keys stay.
    fn replace(&self, rules: &IssuerRules, jwks: &JwkSet) -> Result<String, String> {
        let mut fresh = Vec::new();
        let mut skipped = 0;
        for jwk in &jwks.keys {
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                skipped += 1;
                continue;
            }
            match check_key(jwk, &rules.algorithms).and_then(|_| TrustedKey::new(rules, jwk)) {
                Ok(key) => fresh.push(key),
                Err(reason) => {
                    tracing::debug!(issuer = %rules.issuer, %reason, "JWKS key skipped");
                    skipped += 1;
                }
            }
        }
        if fresh.is_empty() {
            return Err(format!("the JWKS has no usable signing key ({skipped} skipped)"));
        }
        let (mut added, mut kept) = (0, 0);
        let mut published = HashSet::new();
        let mut keys = self.keys.write().map_err(|_| "key ring poisoned".to_owned())?;
        for (kid, key) in fresh {
            if !published.insert(kid.clone()) {
                tracing::warn!(issuer = %rules.issuer, %kid, "JWKS names a kid twice; the first key is used");
                continue;
            }
            match keys.get(&kid) {
                Some(old) if old.source != rules.source => {
                    published.remove(&kid);
                    tracing::warn!(issuer = %rules.issuer, %kid, "kid already belongs to another issuer; key skipped");
                    continue;
                }
                // The same key keeps its tokens in the cache.
                Some(old) if old.jwk == key.jwk => kept += 1,
                Some(old) => {
                    old.withdrawn.store(true, Ordering::Release);
                    keys.insert(kid, Arc::new(key));
                    added += 1;
                }
                None => {
                    keys.insert(kid, Arc::new(key));
                    added += 1;
                }
            }
        }
        let mut removed = 0;
        keys.retain(|kid, key| {
            let gone = key.source == rules.source && !published.contains(kid);
            if gone {
                key.withdrawn.store(true, Ordering::Release);
                removed += 1;
            }
            !gone
        });
        Ok(format!("{added} added, {kept} kept, {removed} removed, {skipped} skipped"))
    }
}

/// Verifies bearer JWTs against the trusted issuers.
#[derive(Clone)]
pub struct Authenticator {
    keys: Arc<KeyRing>,
    /// Tokens verified before, so a hot token costs a map lookup rather than
    /// a signature check; an entry never outlives the token's `exp`, nor
    /// the key that verified it (see the module doc).
    verified: Arc<VerifiedTokens>,
    /// Partner API keys, when the gateway has a key store.
    api_keys: Option<crate::key_store::KeyStore>,
    /// Partner tenants bound to client certificates (`[gateway.tls]`).
    client_certificates: crate::tls::ClientCertificates,
    /// The refresh tasks of issuers with a `jwks_url`; they stop when the
    /// last clone of the authenticator is dropped.
    remotes: Arc<[jwks::Remote]>,
}

/// Most tokens kept verified at once; beyond it expired ones are dropped,
/// and if that is not enough, all of them (they are verified again).
const MAX_CACHED_TOKENS: usize = 50_000;

#[derive(Default)]
struct VerifiedTokens {
    tokens: RwLock<HashMap<Box<str>, Verified>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Clone)]
struct Verified {
    principal: Principal,
    exp: u64,
    key: Arc<TrustedKey>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids = self.keys.keys.read().map(|k| k.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
        let remotes = self.remotes.iter().map(jwks::Remote::issuer).collect::<Vec<_>>();
        f.debug_struct("Authenticator").field("kids", &kids).field("jwks_urls_of", &remotes).finish()
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
        Self::configured(&[], issuers, leeway_secs)
    }

    /// Trusts the `configured` issuers (JWKS files are read now, JWKS URLs
    /// are fetched by background tasks, which needs a tokio runtime) and
    /// the `fixed` ones (e.g. the dev identity provider), like [`Self::new`].
    /// An identity provider that is down does not fail this: its tokens are
    /// refused until its keys arrive.
    pub fn configured(
        configured: &[IssuerConfig],
        fixed: &[(String, Vec<String>, JwkSet)],
        leeway_secs: u64,
    ) -> Result<Self, Error> {
        let ring = Arc::new(KeyRing::default());
        let mut static_sets = Vec::new();
        let mut urls = Vec::new();
        for issuer in configured {
            let rules = |source| IssuerRules {
                issuer: issuer.issuer.clone(),
                audiences: issuer.audiences.clone(),
                algorithms: issuer.algorithms.clone(),
                leeway_secs,
                source,
            };
            match issuer.key_source()? {
                KeySource::File(_) => static_sets.push((rules(static_sets.len()), read_jwks_file(issuer)?)),
                KeySource::Url(url) => urls.push((rules(0), url, issuer)),
            }
        }
        for (issuer, audiences, jwks) in fixed {
            let rules = IssuerRules {
                issuer: issuer.clone(),
                audiences: audiences.clone(),
                algorithms: default_algorithms(),
                leeway_secs,
                source: static_sets.len(),
            };
            static_sets.push((rules, jwks.clone()));
        }
        if let Ok(mut keys) = ring.keys.write() {
            for (rules, jwks) in &static_sets {
                for jwk in &jwks.keys {
                    let (kid, key) = TrustedKey::new(rules, jwk)
                        .map_err(|reason| Error::Jwks { issuer: rules.issuer.clone(), reason })?;
                    if keys.insert(kid.clone(), Arc::new(key)).is_some() {
                        let reason = format!("kid {kid} is used twice");
                        return Err(Error::Jwks { issuer: rules.issuer.clone(), reason });
                    }
                }
            }
        }
        let mut remotes = Vec::new();
        if !urls.is_empty() {
            let client =
                jwks::client().map_err(|e| Error::Jwks { issuer: urls[0].0.issuer.clone(), reason: e.to_string() })?;
            for (n, (mut rules, url, issuer)) in urls.into_iter().enumerate() {
                rules.source = static_sets.len() + n;
                let schedule = jwks::Schedule {
                    interval: issuer.jwks_refresh_interval,
                    min_interval: issuer.jwks_refresh_min_interval,
                };
                let name = rules.issuer.clone();
                let target = ring.clone();
                let apply: jwks::Apply = Box::new(move |set| target.replace(&rules, set));
                let remote = jwks::Remote::spawn(&name, url, schedule, client.clone(), apply)
                    .map_err(|e| Error::Jwks { issuer: name.clone(), reason: e.to_string() })?;
                remotes.push(remote);
            }
        }
        Ok(Self {
            keys: ring,
            verified: Arc::default(),
            api_keys: None,
            client_certificates: Default::default(),
            remotes: remotes.into(),
        })
    }

    /// Also accepts the partner API keys of `store`.
    pub fn with_api_keys(mut self, store: crate::key_store::KeyStore) -> Self {
        self.api_keys = Some(store);
        self
    }

    /// Also requires the client certificates bound to partner tenants.
    pub fn with_client_certificates(mut self, bound: crate::tls::ClientCertificates) -> Self {
        self.client_certificates = bound;
        self
    }

    /// The client certificates partner tenants are bound to.
    pub fn client_certificates(&self) -> &crate::tls::ClientCertificates {
        &self.client_certificates
    }

    /// The partner API key store, if any.
    pub fn api_keys(&self) -> Option<&crate::key_store::KeyStore> {
        self.api_keys.as_ref()
    }

    /// How many verifications the cache answered, and how many it did not.
    pub fn cache_stats(&self) -> (u64, u64) {
        (self.verified.hits.load(Ordering::Relaxed), self.verified.misses.load(Ordering::Relaxed))
    }

    /// The state of each issuer whose keys come from a `jwks_url`.
    pub fn jwks_status(&self) -> Vec<jwks::Status> {
        self.remotes.iter().map(jwks::Remote::status).collect()
    }

    /// Verifies `token` and returns who it names. Never waits: a token with
    /// an unknown `kid` from an issuer with a `jwks_url` is refused, and
    /// asks that issuer's keys to be fetched again (at most once per
    /// `jwks_refresh_min_interval`), so a retry may pass.
    pub fn verify(&self, token: &str) -> Result<Principal, Error> {
        let result = self.verify_now(token);
        if matches!(result, Err(Error::UnknownKey))
            && let Some(remote) = self.remote_for(token)
        {
            remote.ask();
        }
        result
    }

    /// Like [`Self::verify`], but a token with an unknown `kid` from an
    /// issuer with a `jwks_url` waits for that issuer's keys to be fetched
    /// again, at most [`jwks::MAX_WAIT`], and only when a fetch may start
    /// within that bound (the least interval between fetches holds).
    pub async fn verify_with_refresh(&self, token: &str) -> Result<Principal, Error> {
        let result = self.verify_now(token);
        if !matches!(result, Err(Error::UnknownKey)) {
            return result;
        }
        let Some(remote) = self.remote_for(token) else { return result };
        if remote.ask_and_wait().await {
            // Not `verify`: a kid still unknown after a fetch asks nothing more.
            self.verify_now(token)
        } else {
            result
        }
    }

    /// The cache, then the full check.
    fn verify_now(&self, token: &str) -> Result<Principal, Error> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(u64::MAX);
        let cached = self.verified.tokens.read().ok().and_then(|t| {
            t.get(token)
                .filter(|v| now < v.exp && !v.key.withdrawn.load(Ordering::Acquire))
                .map(|v| v.principal.clone())
        });
        if let Some(principal) = cached {
            self.verified.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(principal);
        }
        self.verified.misses.fetch_add(1, Ordering::Relaxed);
        let verified = self.verify_signed(token)?;
        let principal = verified.principal.clone();
        if let Ok(mut tokens) = self.verified.tokens.write() {
            if tokens.len() >= MAX_CACHED_TOKENS {
                tokens.retain(|_, v| now < v.exp && !v.key.withdrawn.load(Ordering::Acquire));
                if tokens.len() >= MAX_CACHED_TOKENS {
                    tokens.clear();
                }
            }
            tokens.insert(token.into(), verified);
        }
        Ok(principal)
    }

    /// The URL issuer a token claims to come from, read without verifying
    /// anything: it only picks whose keys to fetch again.
    fn remote_for(&self, token: &str) -> Option<&jwks::Remote> {
        #[derive(Deserialize)]
        struct Iss {
            iss: String,
        }
        if self.remotes.is_empty() {
            return None;
        }
        let payload = token.split('.').nth(1)?;
        let json = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).ok()?;
        let iss = serde_json::from_slice::<Iss>(&json).ok()?.iss;
        self.remotes.iter().find(|r| r.issuer() == iss)
    }

    /// The full check: signature, algorithm, issuer, audience, times, types.
    fn verify_signed(&self, token: &str) -> Result<Verified, Error> {
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
        let principal = Principal { subject: claims.sub, tenant: claims.tenant, scopes, email: claims.email };
        Ok(Verified { principal, exp: claims.exp, key: trusted })
    }
}

/// Checks `issuer`'s configuration and reads its JWKS file, held to the
/// issuer's algorithm allow-list. An issuer with a `jwks_url` has no file:
/// its configuration is checked and it gives an empty set, for its keys
/// arrive at run time.
pub fn read_jwks_file(issuer: &IssuerConfig) -> Result<JwkSet, Error> {
    let jwks_error = |reason: String| Error::Jwks { issuer: issuer.issuer.clone(), reason };
    let path = match issuer.key_source()? {
        KeySource::File(path) => path,
        KeySource::Url(_) => return Ok(JwkSet { keys: Vec::new() }),
    };
    let text = std::fs::read_to_string(path).map_err(|e| jwks_error(format!("{}: {e}", path.display())))?;
    let jwks: JwkSet = serde_json::from_str(&text).map_err(|e| jwks_error(format!("{}: {e}", path.display())))?;
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
    jwks.keys.iter().try_for_each(|jwk| check_key(jwk, allowed))
}

/// One key must sign with an allowed algorithm, and say so if it says.
fn check_key(jwk: &Jwk, allowed: &[String]) -> Result<(), String> {
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
            entry.exp = 0;
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
    fn a_refresh_keeps_unchanged_keys_withdraws_changed_ones_and_skips_unusable_ones() {
        let (_dir, idp, _) = setup();
        let (_other_dir, other, _) = setup();
        let ring = KeyRing::default();
        let rules = IssuerRules {
            issuer: crate::dev_idp::ISSUER.to_owned(),
            audiences: default_audiences(),
            algorithms: default_algorithms(),
            leeway_secs: 30,
            source: 1,
        };
        let jwks = |value: serde_json::Value| -> JwkSet { serde_json::from_value(value).expect("jwks") };
        let kid = idp.jwks()["keys"][0]["kid"].as_str().expect("kid").to_owned();
        ring.replace(&rules, &jwks(idp.jwks())).expect("installed");
        let first = ring.get(&kid).expect("trusted");

        assert_eq!(ring.replace(&rules, &jwks(idp.jwks())).expect("same set"), "0 added, 1 kept, 0 removed, 0 skipped");
        assert!(Arc::ptr_eq(&first, &ring.get(&kid).expect("trusted")), "an unchanged key is the same key");

        // The provider reuses the kid for other key material, and adds an
        // encryption key: the old key is withdrawn, the other one skipped.
        let mut changed = other.jwks();
        changed["keys"][0]["kid"] = kid.clone().into();
        let mut encryption = other.jwks()["keys"][0].clone();
        encryption["use"] = "enc".into();
        changed["keys"].as_array_mut().expect("keys").push(encryption);
        ring.replace(&rules, &jwks(changed)).expect("replaced");
        assert!(first.withdrawn.load(Ordering::Acquire));
        assert!(!Arc::ptr_eq(&first, &ring.get(&kid).expect("trusted")));

        // Nothing usable: refused, and the keys there are stay.
        let mut unusable = other.jwks();
        unusable["keys"][0]["use"] = "enc".into();
        assert!(ring.replace(&rules, &jwks(unusable)).is_err());
        assert!(ring.get(&kid).is_some());
        // A kid of another issuer is never taken over.
        let foreign = IssuerRules { source: 2, ..rules.clone() };
        ring.replace(&foreign, &jwks(other.jwks())).expect("installed");
        let mut clash = idp.jwks();
        clash["keys"][0]["kid"] = other.jwks()["keys"][0]["kid"].clone();
        ring.replace(&rules, &jwks(clash)).expect("applied without the clashing key");
        assert_eq!(ring.get(other.jwks()["keys"][0]["kid"].as_str().expect("kid")).expect("kept").source, 2);
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
