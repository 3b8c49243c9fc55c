//! TLS on an HTTP listener (the gateway's): rustls with TLS 1.2 and 1.3
//! only, a certificate and key read from PEM files and read again when
//! either file changes (a renewed certificate is served without a restart),
//! and, with a client CA, client certificates (mTLS) verified and handed to
//! each request as its [`PeerCertificate`] fingerprint. Whether a caller
//! must present one is the gateway's business, not this module's: a client
//! without a certificate completes the handshake.

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
    /// PEM: the server's certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM: the CAs whose client certificates are verified; none: no mTLS.
    pub client_ca_file: Option<PathBuf>,
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
        let (key, stamp) = read_pair(files, &provider).await?;
        let current = Arc::new(Current(RwLock::new(Arc::new(key))));
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| Error::Config(e.to_string()))?;
        let builder = match &files.client_ca_file {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in certificates(path, &read(path).await?)? {
                    roots.add(cert).map_err(|e| invalid(path, e))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| invalid(path, e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio::spawn(watch(files.clone(), provider, current, stamp, stop));
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

/// The certificate being served, swapped when its files change.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(PoisonError::into_inner).clone())
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
