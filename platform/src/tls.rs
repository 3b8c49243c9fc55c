//! TLS with rustls, TLS 1.2 and 1.3 only, certificates and keys read from
//! PEM files and read again when either file changes (a renewed
//! certificate is served, or presented, without a restart).
//!
//! - [`ServerTls`]: a listener's side (the gateway's, and in `serve` mode
//!   each tier's with `[internal.tls]`). With a client CA, client
//!   certificates (mTLS) are verified and handed to each request as its
//!   [`PeerCertificate`] fingerprint; whether one is required is the
//!   listener's choice ([`Files::client_certificate_required`]).
//! - [`ClientTls`]: a tier calling the next one: it trusts only the
//!   configured CA (not the system's roots: an internal hop has no business
//!   with a public certificate) and presents its own certificate when asked.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, SystemTime},
};

use rustls::{
    RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
};
use sha2::Digest;

/// What a TLS listener is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    /// PEM: the certificate chain, leaf first (served, or presented to a
    /// server as a client certificate).
    pub cert_file: PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM: the CAs whose client certificates are verified; none: no mTLS.
    pub client_ca_file: Option<PathBuf>,
    /// With a client CA: a connection without a client certificate fails
    /// its handshake (between tiers). Without: it completes, and the
    /// gateway decides per tenant.
    pub client_certificate_required: bool,
    /// How often the certificate and key files are checked for a change.
    pub reload_interval: Duration,
}

/// Why TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not what it should be (no certificate, no key, bad PEM, a
    /// key that does not fit rustls).
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS: {0}")]
    Config(String),
}

/// The SHA-256 of the client certificate (DER) a connection presented,
/// in each request's extensions when it presented one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCertificate(pub [u8; 32]);

impl PeerCertificate {
    /// Lower-case hex, as `openssl x509 -noout -fingerprint -sha256` prints
    /// it without the colons.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A TLS acceptor whose certificate follows its files.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls")
    }
}

impl ServerTls {
    /// Reads the files (an error names the file) and starts watching the
    /// certificate and key until `stop`.
    pub async fn load(files: &Files, stop: tokio_util::sync::CancellationToken) -> Result<Self, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = Current::load(files, &provider, stop).await?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| Error::Config(e.to_string()))?;
        let builder = match &files.client_ca_file {
            Some(path) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(roots(path).await?, provider.clone());
                let verifier =
                    if files.client_certificate_required { verifier } else { verifier.allow_unauthenticated() };
                builder.with_client_cert_verifier(verifier.build().map_err(|e| invalid(path, e))?)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(current);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self { acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)) })
    }

    /// The handshake on an accepted connection, and the fingerprint of the
    /// client certificate it presented.
    pub async fn accept<IO>(
        &self,
        io: IO,
    ) -> std::io::Result<(tokio_rustls::server::TlsStream<IO>, Option<PeerCertificate>)>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let stream = self.acceptor.accept(io).await?;
        let peer = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| PeerCertificate(sha2::Sha256::digest(leaf.as_ref()).into()));
        Ok((stream, peer))
    }
}

/// The client side of TLS to the next tier.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls")
    }
}

impl ClientTls {
    /// Trusts the CAs in `ca_file` only, and presents `identity`'s
    /// certificate (watched until `stop`) to a server that asks for one.
    pub async fn load(
        ca_file: &Path,
        identity: Option<&Files>,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<Self, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| Error::Config(e.to_string()))?
            .with_root_certificates(roots(ca_file).await?);
        let config = match identity {
            Some(files) => builder.with_client_cert_resolver(Current::load(files, &provider, stop).await?),
            None => builder.with_no_client_auth(),
        };
        Ok(Self { config: Arc::new(config) })
    }

    /// The rustls configuration, for a connector (ALPN is the connector's
    /// to set: HTTP/2 for gRPC, HTTP/1.1 for the experience hop).
    pub fn config(&self) -> rustls::ClientConfig {
        (*self.config).clone()
    }
}

/// The certificates of `path` as a trust store.
async fn roots(path: &Path) -> Result<Arc<RootCertStore>, Error> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, &read(path).await?)? {
        roots.add(cert).map_err(|e| invalid(path, e))?;
    }
    Ok(Arc::new(roots))
}

/// The certificate being served or presented, swapped when its files change.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl Current {
    /// Reads `files`' pair and watches it until `stop`.
    async fn load(
        files: &Files,
        provider: &Arc<CryptoProvider>,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<Arc<Self>, Error> {
        let (key, stamp) = read_pair(files, provider).await?;
        let current = Arc::new(Current(RwLock::new(Arc::new(key))));
        tokio::spawn(watch(files.clone(), provider.clone(), current.clone(), stamp, stop));
        Ok(current)
    }

    fn get(&self) -> Arc<CertifiedKey> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl rustls::client::ResolvesClientCert for Current {
    fn resolve(&self, _issuers: &[&[u8]], _schemes: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// When the certificate and key files were last modified.
type Stamp = (Option<SystemTime>, Option<SystemTime>);

async fn stamp(files: &Files) -> Stamp {
    let modified = |path: &Path| {
        let path = path.to_owned();
        async move { tokio::fs::metadata(path).await.and_then(|m| m.modified()).ok() }
    };
    (modified(&files.cert_file).await, modified(&files.key_file).await)
}

/// Checks the files every `reload_interval` and serves the new pair once
/// both read well. A renewal tool writes the two files one after the
/// other: a pair that does not match (or half-written PEM) is tried again
/// at the next check, and the old certificate is served meanwhile.
async fn watch(
    files: Files,
    provider: Arc<CryptoProvider>,
    current: Arc<Current>,
    mut last: Stamp,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut failing = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(files.reload_interval) => {}
            () = stop.cancelled() => return,
        }
        if stamp(&files).await == last {
            continue;
        }
        match read_pair(&files, &provider).await {
            Ok((key, now)) => {
                *current.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
                last = now;
                failing = false;
                tracing::info!(cert_file = %files.cert_file.display(), "TLS certificate reloaded");
            }
            Err(err) => {
                if !failing {
                    tracing::warn!(error = %err, "TLS certificate not reloaded; still serving the previous one");
                }
                failing = true;
            }
        }
    }
}

/// The certificate and key as rustls serves them, and when their files
/// were modified (taken before reading, so a write during the read is seen
/// at the next check).
async fn read_pair(files: &Files, provider: &CryptoProvider) -> Result<(CertifiedKey, Stamp), Error> {
    let stamp = stamp(files).await;
    let chain = certificates(&files.cert_file, &read(&files.cert_file).await?)?;
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key_file).await?).map_err(|e| invalid(&files.key_file, e))?;
    let signing = provider.key_provider.load_private_key(key).map_err(|e| invalid(&files.key_file, e))?;
    let certified = CertifiedKey::new(chain, signing);
    // A key that is not the certificate's would fail every handshake.
    certified
        .keys_match()
        .map_err(|e| invalid(&files.key_file, format!("does not match {}: {e}", files.cert_file.display())))?;
    Ok((certified, stamp))
}

async fn read(path: &Path) -> Result<Vec<u8>, Error> {
    tokio::fs::read(path).await.map_err(|source| Error::Read { path: path.to_owned(), source })
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let chain = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| invalid(path, e))?;
    if chain.is_empty() {
        return Err(invalid(path, "no certificate (PEM \"BEGIN CERTIFICATE\") in it"));
    }
    Ok(chain)
}

fn invalid(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Invalid { path: path.to_owned(), reason: reason.to_string() }
}
