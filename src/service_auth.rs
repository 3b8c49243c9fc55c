//! Service JWTs between internal callers and the process tier in `serve`
//! mode: the process tier admits a gRPC call only with
//! `authorization: Bearer <JWT>` whose `aud` is `process-apis`, and the
//! experience tier presents such a token on every call it makes there.
//!
//! - [`require_service_token`] wraps the process tier's routes. gRPC
//!   reflection and `grpc.health.v1` stay open, so tools and probes can
//!   discover and watch the tier without a credential. A missing or invalid
//!   token gets the gRPC status `UNAUTHENTICATED`, a valid one for a subject
//!   outside `process.service_subjects` (when set) `PERMISSION_DENIED`, both
//!   with a fixed message; why a token failed is logged here, never sent.
//! - [`authenticator`] trusts `[[process.service_issuers]]`, plus the dev
//!   identity provider of the data directory in dev mode, for the one
//!   audience [`AUDIENCE`].
//! - [`ServiceToken`] is the experience tier's own token: minted by the dev
//!   identity provider (dev mode) or read from `experience.service_token_file`
//!   (e.g. a Kubernetes projected service account token), cached as a ready
//!   header and refreshed well before it expires.
//!
//! `up` mode needs none of this: the experience tier calls the process tier
//! in-process, through no socket another caller could reach.
//!
//! The check lives in the launcher rather than in `process-apis` because it
//! verifies with the gateway's [`gateway::auth::Authenticator`], and one tier
//! never imports another.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, Instant},
};

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use gateway::{
    auth::{Authenticator, IssuerConfig},
    dev_idp::{self, DevIdp, TokenRequest},
};
use http::HeaderValue;
use tonic::Code;

use crate::{
    StartError,
    config::{self, Config, Mode},
};

/// The `aud` of every service token for the process APIs.
pub const AUDIENCE: &str = "process-apis";

/// `sub` of the tokens the experience tier mints for itself in dev mode.
pub const EXPERIENCE_SUBJECT: &str = "experience-apis";

/// Lifetime of a minted dev token; it is replaced halfway through.
const MINTED_TTL: Duration = Duration::from_secs(600);

/// How often a token file is read again. A Kubernetes projected token is
/// rotated at 80 % of a lifetime of at least 10 minutes, so a replacement is
/// picked up long before the old token expires.
const FILE_REREAD: Duration = Duration::from_secs(30);

/// After a failed refresh, how long the previous token is used before the
/// next attempt.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// The refusals' messages: fixed, so nothing about the token or the
/// verifier leaks.
const MISSING: &str = "a service token is required: authorization: Bearer <JWT> with aud process-apis";
const INVALID: &str = "invalid service token";
const NOT_ALLOWED: &str = "this service may not call the process APIs";

/// Paths open without a token: discovery and health probes.
const OPEN_PREFIXES: [&str; 2] = ["/grpc.reflection.", "/grpc.health.v1.Health/"];

/// `[[process.service_issuers]]` as the gateway's issuer type, with the one
/// audience a service token may carry.
pub fn issuer_config(issuer: &process_apis::ServiceIssuer) -> IssuerConfig {
    IssuerConfig {
        jwks_file: issuer.jwks_file.clone(),
        jwks_url: issuer.jwks_url.clone(),
        audiences: vec![AUDIENCE.to_owned()],
        algorithms: issuer.algorithms.clone(),
        ..IssuerConfig::with_jwks_file(issuer.issuer.clone(), PathBuf::new())
    }
}

/// Checks a service issuer as far as can be done before serving: its key
/// source, and the JWKS file if it has one.
pub fn validate_issuer(issuer: &process_apis::ServiceIssuer) -> Result<(), gateway::auth::Error> {
    let config = issuer_config(issuer);
    config.validate()?;
    if config.jwks_file.is_some() {
        gateway::auth::read_jwks_file(&config)?;
    }
    Ok(())
}

/// The process tier's verifier of service tokens: the configured service
/// issuers, plus the dev identity provider of the data directory in dev
/// mode. Production mode without a service issuer is a configuration error:
/// the tier would refuse every call.
pub fn authenticator(config: &Config) -> Result<Authenticator, StartError> {
    let configured: Vec<IssuerConfig> = config.process.service_issuers.iter().map(issuer_config).collect();
    let mut dev = Vec::new();
    if config.mode == Mode::Dev {
        let idp = DevIdp::load_or_create(&config.data_dir)?;
        let jwks = serde_json::from_value(idp.jwks())
            .map_err(|e| gateway::auth::Error::Jwks { issuer: dev_idp::ISSUER.into(), reason: e.to_string() })?;
        dev.push((dev_idp::ISSUER.to_owned(), vec![AUDIENCE.to_owned()], jwks));
    }
    if configured.is_empty() && dev.is_empty() {
        return Err(config::Error::Invalid {
            key: "process.service_issuers",
            reason: "production mode needs at least one trusted issuer of service tokens".into(),
        }
        .into());
    }
    // JWKS URLs are fetched in the background, as for the gateway.
    Ok(Authenticator::configured(&configured, &dev, config.gateway.jwt_leeway.as_secs())?)
}

/// Who may call the process tier.
#[derive(Clone)]
struct Guard {
    auth: Authenticator,
    /// Allowed subjects; empty allows any.
    subjects: Arc<[String]>,
}

/// `routes`, admitting a call only with a valid service token for one of
/// `subjects` (any, if empty), except for reflection and health. The
/// verified caller is put into the request's extensions as a
/// [`platform::principal::Principal`].
pub fn require_service_token(
    routes: tonic::service::Routes,
    auth: Authenticator,
    subjects: &[String],
) -> tonic::service::Routes {
    let guard = Guard { auth, subjects: subjects.into() };
    let router = routes.into_axum_router().layer(axum::middleware::from_fn_with_state(guard, check));
    tonic::service::Routes::from(router)
}

async fn check(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    if OPEN_PREFIXES.iter().any(|open| request.uri().path().starts_with(open)) {
        return next.run(request).await;
    }
    // Owned, so that no borrow of the request is held across the await.
    let token = request.headers().get(http::header::AUTHORIZATION).and_then(|v| bearer(v.to_str().ok()?));
    let Some(token) = token.map(str::to_owned) else {
        return refuse(Code::Unauthenticated, MISSING);
    };
    match guard.auth.verify_with_refresh(&token).await {
        Ok(principal) if !guard.subjects.is_empty() && !guard.subjects.contains(&principal.subject) => {
            let path = request.uri().path();
            tracing::info!(subject = %principal.subject, path, "service not allowed to call the process APIs");
            refuse(Code::PermissionDenied, NOT_ALLOWED)
        }
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(err) => {
            // The reason stays in the log; the caller learns only that it failed.
            tracing::info!(reason = %err, path = request.uri().path(), "service token refused");
            refuse(Code::Unauthenticated, INVALID)
        }
    }
}

/// The token of an `authorization` header value, if it is a bearer.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn refuse(code: Code, message: &'static str) -> Response {
    tonic::Status::new(code, message).into_http::<axum::body::Body>().into_response()
}

/// Why the experience tier has no service token. Never shows the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The configured file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no usable token.
    #[error("{path}: {reason}")]
    Unusable {
        /// The configured file.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// The dev identity provider could not mint one.
    #[error(transparent)]
    Mint(#[from] dev_idp::Error),
}

/// The experience tier's token for the process tier, per its configuration:
/// `experience.service_token_file` if set; otherwise minted by the dev
/// identity provider in dev mode; production mode without a file is a
/// configuration error.
pub fn service_token(config: &Config) -> Result<ServiceToken, StartError> {
    let invalid = |reason: String| config::Error::Invalid { key: "experience.service_token_file", reason };
    match &config.experience.service_token_file {
        Some(path) => ServiceToken::from_file(path.clone()).map_err(|e| invalid(e.to_string()).into()),
        None if config.mode == Mode::Dev => {
            ServiceToken::minted(DevIdp::load_or_create(&config.data_dir)?).map_err(|e| match e {
                TokenError::Mint(e) => StartError::DevIdp(e),
                other => invalid(other.to_string()).into(),
            })
        }
        None => Err(invalid("production mode needs a service token for the process tier".into()).into()),
    }
}

enum Source {
    Minted(Box<DevIdp>),
    File(PathBuf),
}

impl Source {
    fn fetch(&self) -> Result<HeaderValue, TokenError> {
        let token = match self {
            Source::Minted(idp) => idp.mint(&TokenRequest {
                subject: EXPERIENCE_SUBJECT.into(),
                scope: String::new(),
                audience: AUDIENCE.into(),
                tenant: None,
                email: None,
                ttl: MINTED_TTL,
            })?,
            Source::File(path) => read_token(path)?,
        };
        let mut header = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| TokenError::Unusable {
            path: self.path().to_owned(),
            reason: "not a token (characters a header cannot carry)",
        })?;
        header.set_sensitive(true);
        Ok(header)
    }

    fn path(&self) -> &Path {
        match self {
            Source::Minted(_) => Path::new("(dev identity provider)"),
            Source::File(path) => path,
        }
    }
}

fn read_token(path: &Path) -> Result<String, TokenError> {
    // A small file read at most every FILE_REREAD; not worth a blocking task.
    let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read { path: path.to_owned(), source })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenError::Unusable { path: path.to_owned(), reason: "the file is empty" });
    }
    Ok(token.to_owned())
}

struct Cached {
    header: HeaderValue,
    refresh_at: Instant,
}

/// A service token kept as a ready `authorization` header and refreshed on
/// the first call after `refresh_at`, so a call costs a read lock and a
/// clone, and a token is minted or read at most once per period whatever the
/// traffic.
#[derive(Clone)]
pub struct ServiceToken(Arc<Inner>);

struct Inner {
    source: Source,
    every: Duration,
    cached: RwLock<Cached>,
}

impl ServiceToken {
    /// Tokens minted by `idp` for [`EXPERIENCE_SUBJECT`], valid 10 minutes
    /// and replaced after 5.
    pub fn minted(idp: DevIdp) -> Result<Self, TokenError> {
        Self::start(Source::Minted(Box::new(idp)), MINTED_TTL / 2)
    }

    /// The token in `path`, read again every 30 s.
    pub fn from_file(path: PathBuf) -> Result<Self, TokenError> {
        Self::start(Source::File(path), FILE_REREAD)
    }

    fn start(source: Source, every: Duration) -> Result<Self, TokenError> {
        let header = source.fetch()?;
        let cached = RwLock::new(Cached { header, refresh_at: Instant::now() + every });
        Ok(Self(Arc::new(Inner { source, every, cached })))
    }

    /// The `authorization` header to send now.
    pub fn header(&self) -> HeaderValue {
        let now = Instant::now();
        {
            let cached = self.0.cached.read().unwrap_or_else(PoisonError::into_inner);
            if now < cached.refresh_at {
                return cached.header.clone();
            }
        }
        let mut cached = self.0.cached.write().unwrap_or_else(PoisonError::into_inner);
        if now < cached.refresh_at {
            return cached.header.clone(); // another call refreshed it meanwhile
        }
        match self.0.source.fetch() {
            Ok(header) => {
                cached.header = header;
                cached.refresh_at = now + self.0.every;
            }
            Err(err) => {
                // The previous token may well be valid still; the process
                // tier says so if not.
                tracing::warn!(error = %err, "service token not refreshed; sending the previous one");
                cached.refresh_at = now + RETRY_AFTER_FAILURE.min(self.0.every);
            }
        }
        cached.header.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(idp: &DevIdp) -> Authenticator {
        let jwks = serde_json::from_value(idp.jwks()).expect("jwks");
        Authenticator::new(&[(dev_idp::ISSUER.to_owned(), vec![AUDIENCE.to_owned()], jwks)], 0).expect("auth")
    }

    fn token_of(header: &HeaderValue) -> String {
        bearer(header.to_str().expect("ascii")).expect("a bearer").to_owned()
    }

    #[test]
    fn a_minted_token_is_for_the_process_apis_and_reused_between_calls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = ServiceToken::minted(DevIdp::load_or_create(dir.path()).expect("idp")).expect("token");
        let first = token.header();
        assert!(first.is_sensitive(), "kept out of debug output");
        assert_eq!(token.header(), first, "not minted per call");
        let principal = verifier(&DevIdp::load_or_create(dir.path()).expect("idp"))
            .verify(&token_of(&first))
            .expect("a valid process-apis token");
        assert_eq!(principal.subject, EXPERIENCE_SUBJECT);
    }

    #[test]
    fn a_token_file_is_read_again_and_a_failed_read_keeps_the_last_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "first.token.value\n").expect("write");
        // Refreshed on every call, as if each came after the re-read period.
        let token = ServiceToken::start(Source::File(path.clone()), Duration::ZERO).expect("token");
        assert_eq!(token.header(), "Bearer first.token.value");
        std::fs::write(&path, "second.token.value").expect("rotate");
        assert_eq!(token.header(), "Bearer second.token.value");
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(token.header(), "Bearer second.token.value");
    }

    #[test]
    fn an_empty_or_missing_token_file_is_refused_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        assert!(matches!(ServiceToken::from_file(path.clone()), Err(TokenError::Read { .. })));
        std::fs::write(&path, " \n").expect("write");
        assert!(matches!(ServiceToken::from_file(path), Err(TokenError::Unusable { .. })));
    }

    #[test]
    fn only_a_bearer_with_a_token_is_taken() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
    }

    #[test]
    fn production_needs_a_service_issuer_and_a_token_file() {
        let config = Config { mode: Mode::Production, ..Config::default() };
        assert!(matches!(
            authenticator(&config),
            Err(StartError::Config(config::Error::Invalid { key: "process.service_issuers", .. }))
        ));
        assert!(matches!(
            service_token(&config),
            Err(StartError::Config(config::Error::Invalid { key: "experience.service_token_file", .. }))
        ));
    }
}
