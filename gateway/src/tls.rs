//! `[gateway.tls]`: the gateway terminates TLS itself. The handshakes and
//! the certificate's reloading are [`platform::tls`]'s; here are the
//! settings, the client certificates bound to partner tenants (mTLS: a key
//! of a bound tenant is refused without one of its certificates, so a
//! leaked key alone is not enough), and HSTS on answers over HTTPS.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use http::{HeaderValue, header};
use platform::tls::PeerCertificate;
use serde::Deserialize;

/// `[gateway.tls]` in the config file. File names are relative to the
/// config file's folder.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// PEM: the certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM: its private key.
    pub key_file: PathBuf,
    /// PEM: the CAs that issue partners' client certificates. Without it no
    /// client certificate is asked for.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// Partner tenants whose callers must present one of these client
    /// certificates, as SHA-256 fingerprints of the certificate (hex,
    /// colons allowed: `openssl x509 -noout -fingerprint -sha256`). Several
    /// per tenant, so a certificate can be renewed without a gap.
    #[serde(default)]
    pub client_certificates: BTreeMap<String, Vec<String>>,
    /// `Strict-Transport-Security: max-age` on every answer; 0 sends none.
    /// Default one year.
    #[serde(default = "one_year", with = "humantime_serde")]
    pub hsts_max_age: Duration,
    /// How often the certificate and key files are checked for a change.
    /// Default 10 s.
    #[serde(default = "ten_seconds", with = "humantime_serde")]
    pub reload_interval: Duration,
}

fn one_year() -> Duration {
    Duration::from_secs(365 * 24 * 3600)
}

fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}

impl Config {
    /// What the listener is built from, file names resolved from `base`.
    pub fn files(&self, base: &Path) -> platform::tls::Files {
        platform::tls::Files {
            cert_file: base.join(&self.cert_file),
            key_file: base.join(&self.key_file),
            client_ca_file: self.client_ca_file.as_ref().map(|f| base.join(f)),
            // The gateway decides per tenant (`client_certificates`).
            client_certificate_required: false,
            reload_interval: self.reload_interval,
        }
    }

    /// The tenants' certificates, checked: an error says what is wrong.
    pub fn client_certificates(&self) -> Result<ClientCertificates, String> {
        if !self.client_certificates.is_empty() && self.client_ca_file.is_none() {
            return Err(
                "client_certificates needs client_ca_file: no client certificate is asked for without it".into()
            );
        }
        let mut bound = HashMap::new();
        for (tenant, fingerprints) in &self.client_certificates {
            if fingerprints.is_empty() {
                return Err(format!("client_certificates.{tenant}: no fingerprint"));
            }
            let parsed = fingerprints
                .iter()
                .map(|f| {
                    fingerprint(f)
                        .ok_or_else(|| format!("client_certificates.{tenant}: {f:?} is no SHA-256 fingerprint"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            bound.insert(tenant.clone(), parsed);
        }
        Ok(ClientCertificates(Arc::new(bound)))
    }

    /// The HSTS header's value, if one is sent.
    pub fn hsts(&self) -> Option<HeaderValue> {
        let seconds = self.hsts_max_age.as_secs();
        (seconds > 0).then(|| format!("max-age={seconds}")).and_then(|v| HeaderValue::try_from(v).ok())
    }
}

/// 64 hex digits, with or without colons between the bytes.
fn fingerprint(text: &str) -> Option<[u8; 32]> {
    let hex: Vec<u8> = text.bytes().filter(|b| *b != b':').collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// Partner tenants and the client certificates their callers must present.
#[derive(Debug, Clone, Default)]
pub struct ClientCertificates(Arc<HashMap<String, Vec<[u8; 32]>>>);

impl ClientCertificates {
    /// Whether a caller of `tenant` that presented `presented` may go on;
    /// the refusal's reason otherwise (for the caller: it names no
    /// fingerprint).
    pub fn check(&self, tenant: Option<&str>, presented: Option<&PeerCertificate>) -> Result<(), &'static str> {
        let Some(bound) = tenant.and_then(|t| self.0.get(t)) else {
            return Ok(());
        };
        match presented {
            None => Err("this partner must present its client certificate (mutual TLS)"),
            Some(cert) if bound.contains(&cert.0) => Ok(()),
            Some(_) => Err("the client certificate presented is not this partner's"),
        }
    }
}

/// Adds `Strict-Transport-Security` to every answer (over HTTPS only: the
/// router behind a TLS listener).
pub fn with_hsts(router: axum::Router, value: Option<HeaderValue>) -> axum::Router {
    match value {
        Some(value) => router.layer(tower_http::set_header::SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            value,
        )),
        None => router,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config binding acme to `fingerprint` (none when empty).
    fn config(fingerprint: &str) -> Config {
        serde_json::from_value(serde_json::json!({"cert_file": "c.pem", "key_file": "k.pem"}))
            .map(|mut c: Config| {
                if !fingerprint.is_empty() {
                    c.client_ca_file = Some("ca.pem".into());
                    c.client_certificates.insert("acme".into(), vec![fingerprint.into()]);
                }
                c
            })
            .expect("config")
    }

    #[test]
    fn fingerprints_are_read_with_or_without_colons_and_bound_to_their_tenant() {
        let hex = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        for written in [hex.as_str(), colons.as_str()] {
            let bound = config(written).client_certificates().expect("valid");
            let theirs = PeerCertificate([0xab; 32]);
            assert_eq!(bound.check(Some("acme"), Some(&theirs)), Ok(()));
            assert!(bound.check(Some("acme"), None).is_err(), "a bound tenant needs its certificate");
            assert!(bound.check(Some("acme"), Some(&PeerCertificate([1; 32]))).is_err(), "another's certificate");
            assert_eq!(bound.check(Some("other"), None), Ok(()), "an unbound tenant needs none");
            assert_eq!(bound.check(None, None), Ok(()));
        }
    }

    #[test]
    fn a_binding_that_cannot_work_is_refused() {
        assert!(config("abc").client_certificates().expect_err("not hex").contains("client_certificates.acme"));
        let mut without_ca = config(&"ab".repeat(32));
        without_ca.client_ca_file = None;
        assert!(without_ca.client_certificates().expect_err("no CA").contains("client_ca_file"));
        assert_eq!(config("").hsts().expect("on by default"), "max-age=31536000");
    }
}
