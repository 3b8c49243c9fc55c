//! The `erp-connect` launcher: the one place that links all tiers together.
//!
//! # Layout
//! - [`config`]: the configuration file and environment overrides.
//! - [`up`]: all tiers in one process, composed in-process.
//! - [`serve`]: one tier per process, talking gRPC/HTTP to the next.
//! - [`service_auth`]: service JWTs from internal callers to the process
//!   tier in `serve` mode.
//! - [`token`]: dev tokens from the dev identity provider.
//! - [`reconcile`]: `erp-connect reconcile`, the order-to-cash invariants.
//! - [`mapping`]: `erp-connect mapping test`, a partner mapping tried on a sample.
//! - [`import`]: `erp-connect import orders`, an order file through a running process tier.
//! - [`audit`]: `erp-connect audit verify`, the audit trails' hash chains.
//! - [`master_data`]: `erp-connect master-data resync`, through a running process tier.
//!
//! Each mode builds everything that can fail (configuration, databases,
//! keys) before it binds a port, so a bad setup never half-starts.
//!
//! The gateway does not link the experience tier, yet must know which of
//! its routes to forward and with which scope: [`forwarded_routes`] hands
//! it the table the experience tier declares (`experience_apis::routes()`).

pub mod audit;
pub mod config;
pub mod export;
pub mod import;
pub mod mapping;
pub mod master_data;
pub mod reconcile;
pub mod serve;
pub mod service_auth;
pub mod token;
pub mod up;

use config::{Config, Mode};
use platform::principal::PrincipalSigner;

/// Errors starting a tier, other than configuration errors.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable (exit status 64).
    #[error("invalid configuration: {0}")]
    Config(#[from] config::Error),
    /// A backend of the system tier could not be opened.
    #[error("{0}")]
    System(#[from] system_apis::StartError),
    /// The process tier's flows (saga store, event bus, webhooks) could not start.
    #[error("process tier: {0}")]
    Process(#[from] process_apis::StartError),
    /// Reconciliation could not finish.
    #[error("reconcile: {0}")]
    Reconcile(#[from] process_apis::order_to_cash::reconcile::Error),
    /// The dev identity provider's key could not be loaded.
    #[error("{0}")]
    DevIdp(#[from] gateway::dev_idp::Error),
    /// A secret could not be loaded.
    #[error("{0}")]
    Secret(#[from] platform::secret_file::Error),
    /// A channel to the next tier could not be built.
    #[error("{0}")]
    Channel(#[from] platform::channel::Error),
    /// The gateway could not be set up.
    #[error("{0}")]
    Auth(#[from] gateway::auth::Error),
    /// The experience tier could not be reached.
    #[error("{0}")]
    Upstream(#[from] gateway::upstream::Error),
    /// A partner API key operation failed.
    #[error("{0}")]
    Keys(#[from] gateway::key_store::Error),
    /// The gateway's TLS certificate, key or client CA cannot be used
    /// (exit status 64).
    #[error("gateway.tls: {0}")]
    Tls(#[from] platform::tls::Error),
    /// The rate limits are misconfigured.
    #[error("{0}")]
    Limits(#[from] gateway::limits::Error),
    /// A deprecated operation is misconfigured.
    #[error("{0}")]
    Deprecations(#[from] gateway::deprecation::Error),
    /// `reconcile` found broken invariants (its report says which).
    #[error("order-to-cash invariants are broken")]
    InvariantsBroken,
    /// The audit trail could not be read.
    #[error("audit trail: {0}")]
    Audit(#[from] platform::audit::Error),
    /// `audit verify` found a broken chain (its report says where).
    #[error("the audit trail is broken")]
    AuditBroken,
    /// An export could not be written.
    #[error("export: {0}")]
    Export(String),
    /// A master data command failed (the process tier's answer).
    #[error("master data: {0}")]
    MasterData(String),
    /// An order file could not be imported.
    #[error("import: {0}")]
    Import(String),
    /// `mapping test` rejected records (its output says which and why).
    #[error("records were rejected")]
    RecordsRejected,
    /// Serving failed.
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// The routes the gateway forwards, with the scope each needs: the
/// experience tier's, as its handlers declare them (and as `/openapi.json`
/// documents them). Read once; every gateway built shares the table.
pub fn forwarded_routes() -> &'static [gateway::Route] {
    static ROUTES: std::sync::LazyLock<Vec<gateway::Route>> = std::sync::LazyLock::new(|| {
        experience_apis::routes()
            .into_iter()
            .map(|route| gateway::Route::new(route.method, &route.path, &route.scope))
            .collect()
    });
    &ROUTES
}

/// The gateway's authenticator: configured issuers, plus the dev identity
/// provider of the data directory in dev mode. Returns the dev JWKS too,
/// for `/dev-idp/jwks.json`.
pub fn authenticator(config: &Config) -> Result<(gateway::auth::Authenticator, Option<serde_json::Value>), StartError> {
    let mut fixed = Vec::new();
    let mut dev_jwks = None;
    if config.mode == Mode::Dev {
        let idp = gateway::dev_idp::DevIdp::load_or_create(&config.data_dir)?;
        let jwks = idp.jwks();
        let set = serde_json::from_value(jwks.clone()).map_err(|e| gateway::auth::Error::Jwks {
            issuer: gateway::dev_idp::ISSUER.into(),
            reason: e.to_string(),
        })?;
        fixed.push((gateway::dev_idp::ISSUER.to_owned(), vec![gateway::dev_idp::DEFAULT_AUDIENCE.to_owned()], set));
        dev_jwks = Some(jwks);
    }
    let leeway = config.gateway.jwt_leeway.as_secs();
    let api_keys = gateway::key_store::KeyStore::lazy(config.gateway.database_url.clone(), config.data_dir.clone())
        .with_plans(config.gateway.plans().into_keys());
    // JWKS files are read here; JWKS URLs are fetched by background tasks
    // (an identity provider that is down does not stop the start).
    let auth = gateway::auth::Authenticator::configured(&config.gateway.issuers, &fixed, leeway)?;
    let bound = match &config.gateway.tls {
        Some(tls) => {
            tls.client_certificates().map_err(|reason| config::Error::Invalid { key: "gateway.tls", reason })?
        }
        None => Default::default(),
    };
    Ok((auth.with_api_keys(api_keys).with_client_certificates(bound), dev_jwks))
}

/// The gateway's router and listener TLS as `[gateway.tls]` asks: without
/// it, plain HTTP; with it, the certificate loaded (and watched until
/// `stop`) and HSTS on every answer.
pub async fn gateway_tls(
    config: &Config,
    router: axum::Router,
    stop: tokio_util::sync::CancellationToken,
) -> Result<(axum::Router, Option<platform::tls::ServerTls>), StartError> {
    let Some(tls) = &config.gateway.tls else {
        return Ok((router, None));
    };
    let server = platform::tls::ServerTls::load(&tls.files(&config.config_dir), stop).await?;
    Ok((gateway::tls::with_hsts(router, tls.hsts()), Some(server)))
}

/// `[internal.tls]`, the listener's side: an inner tier in `serve` mode
/// serves TLS only, its certificate watched until `stop`.
pub async fn internal_server_tls(
    config: &Config,
    stop: tokio_util::sync::CancellationToken,
) -> Result<Option<platform::tls::ServerTls>, StartError> {
    let Some(tls) = &config.internal.tls else { return Ok(None) };
    Ok(Some(platform::tls::ServerTls::load(&tls.files(&config.config_dir), stop).await?))
}

/// `[internal.tls]`, the caller's side: the CA trusted for the next tier,
/// and this tier's certificate for when it asks for one.
pub async fn internal_client_tls(
    config: &Config,
    stop: tokio_util::sync::CancellationToken,
) -> Result<Option<platform::tls::ClientTls>, StartError> {
    let Some(tls) = &config.internal.tls else { return Ok(None) };
    let files = tls.files(&config.config_dir);
    Ok(Some(platform::tls::ClientTls::load(&config.config_dir.join(&tls.ca_file), Some(&files), stop).await?))
}

/// The webhooks' settings: the run mode's targets and the key that seals
/// endpoint secrets (`webhooks.secret_key`, created in the data directory
/// in dev mode).
pub fn webhook_settings(config: &Config) -> Result<process_apis::webhooks::Settings, StartError> {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    use process_apis::webhooks::target::Policy;
    let invalid = |reason: String| config::Error::Invalid { key: "webhooks.secret_key", reason };
    let webhooks = &config.webhooks;
    let text = match (&webhooks.secret_key, &webhooks.secret_key_file) {
        (Some(inline), _) => Some(inline.trim().to_owned()),
        (None, Some(file)) => Some(
            std::fs::read_to_string(file).map_err(|e| invalid(format!("{}: {e}", file.display())))?.trim().to_owned(),
        ),
        (None, None) => None,
    };
    let key: [u8; 32] = match text {
        Some(text) => STANDARD
            .decode(text)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| invalid("must be the base64 of 32 bytes".into()))?,
        None if config.mode == Mode::Dev => {
            platform::secret_file::load_or_create(&config.data_dir.join("internal").join("webhooks.key"))?
        }
        None => return Err(invalid("production mode needs a key to seal webhook secrets".into()).into()),
    };
    let policy = if config.mode == Mode::Dev { Policy::Dev } else { Policy::Production };
    Ok(webhooks.settings(policy, key))
}

/// The secret the gateway and the experience tier share in `serve` mode.
pub fn principal_signer(config: &Config) -> Result<PrincipalSigner, StartError> {
    let invalid = |reason: String| config::Error::Invalid { key: "internal.principal_secret", reason };
    let secret: Vec<u8> = match (&config.internal.principal_secret, &config.internal.principal_secret_file) {
        (Some(inline), _) => inline.as_bytes().to_vec(),
        (None, Some(file)) => {
            std::fs::read(file).map_err(|e| invalid(format!("{}: {e}", file.display())))?.trim_ascii().to_vec()
        }
        (None, None) if config.mode == Mode::Dev => {
            platform::secret_file::load_or_create(&config.data_dir.join("internal").join("principal.key"))?.to_vec()
        }
        (None, None) => {
            return Err(invalid("serve mode in production needs a principal secret".into()).into());
        }
    };
    PrincipalSigner::new(&secret).map_err(|e| invalid(e.to_string()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_needs_a_32_byte_key_to_seal_webhook_secrets_and_dev_makes_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let production = |key: Option<&str>| Config {
            mode: Mode::Production,
            data_dir: dir.path().to_owned(),
            webhooks: process_apis::webhooks::Config { secret_key: key.map(str::to_owned), ..Default::default() },
            ..Config::default()
        };
        for key in [None, Some("c2hvcnQ="), Some("not base64!")] {
            let Err(StartError::Config(err)) = webhook_settings(&production(key)) else { panic!("{key:?} accepted") };
            assert!(err.to_string().starts_with("webhooks.secret_key: "), "{err}");
        }
        let settings =
            webhook_settings(&production(Some("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="))).expect("a key");
        assert_eq!(settings.policy, process_apis::webhooks::target::Policy::Production);
        assert_eq!(&settings.key, b"0123456789abcdef0123456789abcdef");
        let dev = Config { data_dir: dir.path().to_owned(), ..Config::default() };
        let first = webhook_settings(&dev).expect("dev makes a key");
        assert_eq!(webhook_settings(&dev).expect("and keeps it").key, first.key);
        assert!(dir.path().join("internal/webhooks.key").is_file());
    }
}
