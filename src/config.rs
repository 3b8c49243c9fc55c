//! The configuration of every tier: one TOML file plus `ERP_CONNECT__...`
//! environment overrides (`ERP_CONNECT__GATEWAY__LISTEN=0.0.0.0:8080` sets
//! `[gateway] listen`). Unknown keys are rejected, and the whole thing is
//! validated before any port is bound; [`Error`] is what `main` reports
//! with exit status 64.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use serde::Deserialize;

/// Whether dev conveniences (dev identity provider, generated secrets) are on.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Laptop defaults: the dev identity provider is trusted and `token` works.
    #[default]
    Dev,
    /// Only configured issuers are trusted; secrets must be configured.
    Production,
}

/// What the tiers share in `serve` mode (`[internal]`): the principal's
/// signing secret and TLS between them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Internal {
    /// TLS between the tiers (`[internal.tls]`); none: plain HTTP/2 and
    /// HTTP, for one host or a mesh that encrypts for us.
    pub tls: Option<InternalTls>,
    /// File holding the secret (at least 32 bytes) with which the gateway
    /// signs the principal it hands to the experience tier in `serve` mode.
    /// Dev mode creates `<data dir>/internal/principal.key` when neither
    /// this nor `principal_secret` is set.
    pub principal_secret_file: Option<PathBuf>,
    /// The same secret inline; meant for `ERP_CONNECT__INTERNAL__PRINCIPAL_SECRET`.
    pub principal_secret: Option<String>,
}

/// `[internal.tls]`: in `serve` mode the experience, process and system
/// tiers serve TLS only, and each caller (gateway, experience, process,
/// and `import`/`reconcile`) trusts `ca_file` alone for the next tier and
/// reaches it at an `https://` address whose host its certificate names.
/// File names are relative to the config file's folder; certificate and
/// key are read again when they change. `up` mode has no hop to encrypt.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InternalTls {
    /// PEM: the CA (or CAs) that issued the tiers' certificates.
    pub ca_file: PathBuf,
    /// PEM: this tier's certificate chain, served to callers and presented
    /// to the next tier when it asks (mTLS). For both, its extended key
    /// usage names server and client authentication.
    pub cert_file: PathBuf,
    /// PEM: its private key.
    pub key_file: PathBuf,
    /// mTLS: a tier refuses a connection without a certificate `ca_file`
    /// issued, so only tiers reach each other (besides the service JWT the
    /// process tier checks). Scrapers of `/metrics` then need one too.
    #[serde(default)]
    pub require_client_certificate: bool,
    /// How often the certificate and key files are checked for a change.
    /// Default 10 s.
    #[serde(default = "ten_seconds", with = "humantime_serde")]
    pub reload_interval: Duration,
}

fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}

impl InternalTls {
    /// A tier's listener and its certificate, file names resolved from `base`.
    pub fn files(&self, base: &Path) -> platform::tls::Files {
        platform::tls::Files {
            cert_file: base.join(&self.cert_file),
            key_file: base.join(&self.key_file),
            client_ca_file: Some(base.join(&self.ca_file)),
            client_certificate_required: self.require_client_certificate,
            reload_interval: self.reload_interval,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `dev` (default) or `production`.
    pub mode: Mode,
    /// Where embedded state lives (SQLite files, dev keys). Default `./data`.
    pub data_dir: PathBuf,
    /// How long in-flight requests may take to finish after SIGTERM. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Secrets shared between tiers.
    pub internal: Internal,
    /// The gateway.
    pub gateway: gateway::Config,
    /// The experience tier.
    pub experience: experience_apis::Config,
    /// The process tier.
    pub process: process_apis::Config,
    /// The system tier.
    pub system: system_apis::Config,
    /// The ERP behind the system tier's `erp.v1`.
    pub erp: system_apis::erp::Config,
    /// The payment provider behind the system tier's `payments.v1`.
    pub payments: system_apis::payments::Config,
    /// The CRM behind the system tier's `crm.v1`.
    pub crm: system_apis::crm::Config,
    /// Partner webhooks (delivered by the process tier).
    pub webhooks: process_apis::webhooks::Config,
    /// Each partner tenant's mapping and rules (`[partners.<tenant>]`).
    pub partners: std::collections::BTreeMap<String, process_apis::partners::mapping::PartnerConfig>,
    /// Validation rules every partner's orders meet (`[rules]`).
    pub rules: process_apis::partners::rules::RulesConfig,
    /// Files in and out: the inbox and the exports (`[files]`).
    pub files: process_apis::FilesConfig,
    /// Customer master data across the CRM and the ERP, run by the process
    /// tier: on when the file has a `[master_data]` section (or
    /// `[master_data.customer]`), off without one.
    pub master_data: Option<process_apis::master_data::Config>,
    /// The config file's folder, which relative file names in it start
    /// from; the working directory without a file.
    #[serde(skip)]
    pub config_dir: PathBuf,
    /// Trace export (OTLP); off unless an endpoint is configured.
    pub telemetry: platform::telemetry::Config,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::Dev,
            data_dir: PathBuf::from("./data"),
            shutdown_grace: Duration::from_secs(30),
            internal: Internal::default(),
            gateway: gateway::Config::default(),
            experience: experience_apis::Config::default(),
            process: process_apis::Config::default(),
            system: system_apis::Config::default(),
            erp: system_apis::erp::Config::default(),
            payments: system_apis::payments::Config::default(),
            crm: system_apis::crm::Config::default(),
            webhooks: process_apis::webhooks::Config::default(),
            partners: Default::default(),
            rules: Default::default(),
            files: Default::default(),
            master_data: Default::default(),
            config_dir: PathBuf::from("."),
            telemetry: platform::telemetry::Config::default(),
        }
    }
}

/// A configuration that cannot be used. Displayed on one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file or an environment override does not parse or has unknown keys.
    #[error("{0}")]
    Parse(String),
    /// A partner's mapping or a rule cannot work; the text names its key.
    #[error("{0}")]
    Partners(String),
    /// A value is well-formed but unusable.
    #[error("{key}: {reason}")]
    Invalid {
        /// Dotted key, e.g. `gateway.experience_url`.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

impl Config {
    /// The deployment's custom fields (`[[erp.custom_fields]]`), which the
    /// experience tier shows and checks per audience. [`Config::load`]
    /// has validated them.
    pub fn custom_fields(&self) -> erp_connect_proto::custom_fields::Definitions {
        erp_connect_proto::custom_fields::Definitions::new(self.erp.custom_fields.clone()).unwrap_or_default()
    }

    /// Reads `file` (if any) and the environment, then validates.
    pub fn load(file: Option<&Path>) -> Result<Self, Error> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            if !file.is_file() {
                return Err(Error::Parse(format!("config file {} does not exist", file.display())));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment.merge(Env::prefixed("ERP_CONNECT__").split("__"));
        let mut config: Config = figment.extract().map_err(|e| Error::Parse(one_line(&e)))?;
        if let Some(dir) = file.and_then(Path::parent).filter(|d| !d.as_os_str().is_empty()) {
            config.config_dir = dir.to_owned();
        }
        config.validate()?;
        Ok(config)
    }

    /// Every partner's mapping and the rules, compiled (files read from
    /// [`Config::config_dir`]).
    pub fn partners(&self) -> Result<process_apis::partners::Partners, Error> {
        process_apis::partners::Partners::compile(&self.partners, &self.rules, &self.config_dir)
            .map_err(Error::Partners)
    }

    /// The tiers' addresses of each other, by their keys.
    fn upstream_urls(&self) -> [(&'static str, &str); 3] {
        [
            ("gateway.experience_url", &self.gateway.experience_url),
            ("experience.process_url", &self.experience.process_url),
            ("process.system_url", &self.process.system_url),
        ]
    }

    /// For `serve` mode: with `[internal.tls]` every tier's address is
    /// `https://` (the next tier serves TLS only), else none is.
    pub fn validate_serve(&self) -> Result<(), Error> {
        let tls = self.internal.tls.is_some();
        for (key, url) in self.upstream_urls() {
            if tls && !url.starts_with("https://") {
                return Err(Error::Invalid {
                    key,
                    reason: format!("{url:?} must be https:// with [internal.tls]: the next tier speaks TLS only"),
                });
            }
        }
        Ok(())
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), Error> {
        self.partners()?;
        for (key, url) in self.upstream_urls() {
            upstream_url(key, url, self.internal.tls.is_some())?;
        }
        if self.gateway.jwt_leeway > Duration::from_secs(gateway::auth::MAX_LEEWAY_SECS) {
            return Err(Error::Invalid { key: "gateway.jwt_leeway", reason: "must be at most 60s".into() });
        }
        self.erp.validate().map_err(|reason| Error::Invalid { key: "erp", reason })?;
        self.payments.validate().map_err(|reason| Error::Invalid { key: "payments", reason })?;
        self.crm.validate().map_err(|reason| Error::Invalid { key: "crm", reason })?;
        if let Some(master_data) = &self.master_data {
            master_data.validate().map_err(|reason| Error::Invalid { key: "master_data", reason })?;
        }
        if let Some(url) = &self.gateway.database_url
            && platform::database::Dialect::of(url).is_none()
        {
            // Not echoed: the URL may carry a password.
            return Err(Error::Invalid {
                key: "gateway.database_url",
                reason: "must be a sqlite: or postgres: URL".into(),
            });
        }
        if let Some(url) = &self.process.database_url
            && platform::database::Dialect::of(url).is_none()
        {
            // Not echoed: the URL may carry a password.
            return Err(Error::Invalid {
                key: "process.database_url",
                reason: "must be a sqlite: or postgres: URL".into(),
            });
        }
        if let Err(err) = self.gateway.limits() {
            let key = match err {
                gateway::limits::Error::RedisUrl(_) => "gateway.redis_url",
                gateway::limits::Error::BurstWithoutRate(_) => "gateway.plans",
            };
            return Err(Error::Invalid { key, reason: err.to_string() });
        }
        if let Err(err) = self.gateway.deprecations(crate::forwarded_routes()) {
            return Err(Error::Invalid { key: "gateway.deprecations", reason: err.to_string() });
        }
        if let Some(tls) = &self.gateway.tls {
            tls.client_certificates().map_err(|reason| Error::Invalid { key: "gateway.tls", reason })?;
        }
        self.telemetry.validate().map_err(|e| Error::Invalid { key: "telemetry", reason: e.to_string() })?;
        if self.shutdown_grace.is_zero() {
            return Err(Error::Invalid { key: "shutdown_grace", reason: "must be more than 0s".into() });
        }
        if let Some(template) = &self.experience.trace_url_template
            && !((template.starts_with("https://") || template.starts_with("http://"))
                && template.contains("{trace_id}"))
        {
            return Err(Error::Invalid {
                key: "experience.trace_url_template",
                reason: "must be an http(s) URL with {trace_id} in it".into(),
            });
        }
        for issuer in &self.gateway.issuers {
            gateway::auth::read_jwks_file(issuer)
                .map_err(|e| Error::Invalid { key: "gateway.issuers", reason: e.to_string() })?;
        }
        for issuer in &self.process.service_issuers {
            crate::service_auth::validate_issuer(issuer)
                .map_err(|e| Error::Invalid { key: "process.service_issuers", reason: e.to_string() })?;
        }
        if self.mode == Mode::Production && self.gateway.issuers.is_empty() {
            return Err(Error::Invalid {
                key: "gateway.issuers",
                reason: "production mode needs at least one trusted issuer".into(),
            });
        }
        if let Some(secret) = &self.internal.principal_secret
            && secret.len() < 32
        {
            return Err(Error::Invalid {
                key: "internal.principal_secret",
                reason: "must be at least 32 bytes".into(),
            });
        }
        Ok(())
    }
}

/// `url` is a tier's address: `http://host:port`, or `https://` with TLS.
fn upstream_url(key: &'static str, url: &str, tls: bool) -> Result<(), Error> {
    let uri: http::Uri = url.parse().map_err(|_| Error::Invalid { key, reason: format!("{url:?} is not a URL") })?;
    let scheme = if tls { "https" } else { "http" };
    if uri.scheme_str() == Some("https") && !tls {
        return Err(Error::Invalid { key, reason: format!("{url:?} needs [internal.tls]: the CA to trust") });
    }
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() || uri.path() != "/" {
        return Err(Error::Invalid { key, reason: format!("{url:?} must look like {scheme}://host:port") });
    }
    Ok(())
}

fn one_line(err: &figment::Error) -> String {
    err.clone().into_iter().map(|e| e.to_string().replace('\n', " ")).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partner_mapping_or_rule_that_cannot_work_is_refused_naming_its_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("erp-connect.toml");
        std::fs::write(dir.path().join("acme-skus.csv"), "partner_sku,sku\nACME-7,GADGET-2\n").expect("xref");
        let config = |partner: &str| {
            std::fs::write(&file, format!("[partners.acme]\n{partner}\n[rules]\nmax_order_value = \"10000.00\"\n"))
                .expect("config");
            Config::load(Some(&file))
        };
        let loaded = config("sku_xref_file = \"acme-skus.csv\"\nunits = { BOX10 = 10 }").expect("valid");
        assert_eq!(
            loaded.partners().expect("compiles").mapping("acme").map(|m| m.sku("ACME-7").to_owned()).as_deref(),
            Some("GADGET-2")
        );
        for (partner, key) in [
            ("units = { BOX10 = 0 }", "partners.acme.units.BOX10"),
            ("sku_xref_file = \"missing.csv\"", "partners.acme.sku_xref_file"),
            ("[partners.acme.rules]\nallowed_countries = [\"Deutschland\"]", "partners.acme.rules.allowed_countries"),
            ("transform = '{sku: .Artikel'", "partners.acme.transform: does not parse"),
            ("transform = 'env.HOME'", "partners.acme.transform: does not compile: unknown env"),
        ] {
            let err = config(partner).expect_err(partner).to_string();
            assert!(err.starts_with(key), "{err}");
        }
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().expect("defaults validate");
    }

    #[test]
    fn non_http_upstreams_are_refused() {
        let mut config = Config::default();
        config.process.system_url = "ftp://x:1".into();
        assert!(matches!(config.validate(), Err(Error::Invalid { key: "process.system_url", .. })));
        config.process.system_url = "not a url".into();
        assert!(config.validate().is_err());
    }

    #[test]
    fn the_deployment_configs_hold_known_keys_only() {
        let parse = |toml: &str| -> Config {
            Figment::new().merge(Toml::string(toml)).extract().expect("known keys, right types")
        };
        let kubernetes = parse(include_str!("../deploy/kubernetes/base/erp-connect.toml"));
        assert_eq!(kubernetes.mode, Mode::Production);
        assert!(kubernetes.process.events.bus == process_apis::order_to_cash::outbox::BusKind::Nats);
        assert_eq!(kubernetes.process.service_issuers.len(), 1, "service tokens are verified in production");
        assert!(kubernetes.experience.service_token_file.is_some(), "the experience tier has a service token");
        let compose = parse(include_str!("../deploy/compose/erp-connect.toml"));
        assert_eq!(compose.mode, Mode::Dev, "the Compose tiers share the dev identity provider");
        assert!(compose.process.events.bus == process_apis::order_to_cash::outbox::BusKind::Nats);
    }

    #[test]
    fn a_saga_store_url_of_another_kind_is_refused() {
        let mut config = Config::default();
        config.process.database_url = Some("mysql://u:secret@h/db".into());
        assert!(matches!(config.validate(), Err(Error::Invalid { key: "process.database_url", .. })));
        config.process.database_url = Some("postgres://u@h/db".into());
        config.gateway.database_url = Some("mysql://u:secret@h/db".into());
        assert!(matches!(config.validate(), Err(Error::Invalid { key: "gateway.database_url", .. })));
        config.gateway.database_url = None;
        config.validate().expect("postgres is fine");
    }

    #[test]
    fn a_crm_store_url_of_another_kind_is_refused() {
        let mut config = Config::default();
        config.crm.database_url = Some("mysql://u:secret@h/db".into());
        match config.validate() {
            Err(err @ Error::Invalid { key: "crm", .. }) => {
                assert!(!err.to_string().contains("secret"), "the URL is not echoed: {err}");
            }
            other => panic!("{other:?}"),
        }
        config.crm.database_url = Some("postgres://u@h/crm".into());
        config.validate().expect("postgres is fine");
    }

    #[test]
    fn a_trace_link_needs_an_http_url_with_the_trace_id() {
        let mut config = Config::default();
        config.experience.trace_url_template = Some("javascript:alert({trace_id})".into());
        assert!(matches!(config.validate(), Err(Error::Invalid { key: "experience.trace_url_template", .. })));
        config.experience.trace_url_template = Some("https://tempo.example/trace/".into());
        assert!(config.validate().is_err(), "no {{trace_id}}");
        config.experience.trace_url_template = Some("https://tempo.example/trace/{trace_id}".into());
        config.validate().expect("a trace UI's URL");
    }

    #[test]
    fn production_without_issuers_is_refused() {
        let config = Config { mode: Mode::Production, ..Config::default() };
        assert!(matches!(config.validate(), Err(Error::Invalid { key: "gateway.issuers", .. })));
    }
}
