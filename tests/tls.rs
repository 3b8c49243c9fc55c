//! `[gateway.tls]` end to end, with certificates made at test time
//! (rcgen): HTTPS with HSTS and no clear text on the same port, a partner
//! bound to its client certificate (mTLS) refused without it or with
//! another's, and a renewed certificate served without a restart. And
//! `[internal.tls]`: in `serve` mode the inner tiers answer only TLS
//! callers holding a certificate of the internal CA.

mod harness;

use std::{path::Path, sync::Arc, time::Duration};

use harness::Running;
use http_body_util::{BodyExt, Full};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A test CA that issues the server's and the partners' certificates.
struct Ca(CertifiedIssuer<'static, KeyPair>);

impl Ca {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "erp-connect test CA");
        Self(CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA"))
    }

    /// A leaf certificate and its key, PEM.
    fn issue(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params = CertificateParams::new(vec![name.to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.0).expect("signed");
        (cert.pem(), key.serialize_pem())
    }
}

/// A TLS client trusting `ca`, presenting `identity` (certificate and key
/// PEM) when given.
fn client(ca: &CertificateDer<'_>, identity: Option<&(String, String)>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone().into_owned()).expect("CA");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<_, _>>().expect("cert"),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
            )
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// What a GET over HTTPS answered: status, HSTS header, body, and the
/// certificate the server presented.
struct Answer {
    status: u16,
    hsts: Option<String>,
    body: serde_json::Value,
    server_cert: Vec<u8>,
}

async fn get(app: &Running, tls: &tokio_rustls::TlsConnector, path: &str, api_key: Option<&str>) -> Answer {
    let tcp = tokio::net::TcpStream::connect(app.http).await.expect("connect");
    let stream = tls.connect(ServerName::try_from("localhost").expect("name"), tcp).await.expect("handshake");
    let server_cert = stream.get_ref().1.peer_certificates().expect("server certificate")[0].to_vec();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("http/1.1");
    tokio::spawn(connection);
    let mut request = http::Request::get(path).header("host", "localhost");
    if let Some(key) = api_key {
        request = request.header("x-api-key", key);
    }
    let response =
        sender.send_request(request.body(Full::<bytes::Bytes>::default()).expect("request")).await.expect("answer");
    let status = response.status().as_u16();
    let hsts = response.headers().get("strict-transport-security").map(|v| v.to_str().expect("ascii").to_owned());
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    Answer { status, hsts, body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null), server_cert }
}

fn write(dir: &Path, name: &str, pem: &str) {
    // Written aside and renamed, as a renewal tool does: never half a file.
    let aside = dir.join(format!("{name}.new"));
    std::fs::write(&aside, pem).expect("write");
    std::fs::rename(aside, dir.join(name)).expect("rename");
}

fn fingerprint(cert_pem: &str) -> String {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert");
    sha2::Sha256::digest(der.as_ref()).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

#[tokio::test]
async fn the_gateway_speaks_tls_binds_partners_to_their_client_certificates_and_follows_a_renewed_certificate() {
    let ca = Ca::new();
    let certs = tempfile::tempdir().expect("tempdir");
    let server = ca.issue("localhost", ExtendedKeyUsagePurpose::ServerAuth);
    write(certs.path(), "server.pem", &server.0);
    write(certs.path(), "server.key", &server.1);
    write(certs.path(), "ca.pem", &ca.0.pem());
    let acme = ca.issue("acme", ExtendedKeyUsagePurpose::ClientAuth);
    let globex = ca.issue("globex", ExtendedKeyUsagePurpose::ClientAuth);

    let dir = certs.path().to_owned();
    let acme_fingerprint = fingerprint(&acme.0);
    let app = harness::spawn_up_with(move |config| {
        config.gateway.tls = Some(
            serde_json::from_value(serde_json::json!({
                "cert_file": dir.join("server.pem"),
                "key_file": dir.join("server.key"),
                "client_ca_file": dir.join("ca.pem"),
                "client_certificates": {"acme": [acme_fingerprint]},
                "reload_interval": "20ms",
            }))
            .expect("tls config"),
        );
    })
    .await;

    // HTTPS, with HSTS; clear text on the same port gets no answer.
    let anonymous = client(ca.0.der(), None);
    let health = get(&app, &anonymous, "/healthz", None).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.hsts.as_deref(), Some("max-age=31536000"));
    let mut plain = tokio::net::TcpStream::connect(app.http).await.expect("connect");
    plain.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n").await.expect("write");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "a plain-HTTP request is not served: {:?}",
        String::from_utf8_lossy(&answer)
    );

    // acme is bound to its certificate: its key alone is refused, and so is
    // another partner's certificate; globex is bound to none.
    let acme_key = harness::create_key(&app, "acme", "orders:read", "bronze");
    let usage = "/partner/v1/usage";
    let without = get(&app, &anonymous, usage, Some(&acme_key)).await;
    assert_eq!(without.status, 401, "{}", without.body);
    assert!(without.body["detail"].as_str().is_some_and(|d| d.contains("client certificate")), "{}", without.body);
    let wrong = get(&app, &client(ca.0.der(), Some(&globex)), usage, Some(&acme_key)).await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    let right = get(&app, &client(ca.0.der(), Some(&acme)), usage, Some(&acme_key)).await;
    assert_eq!(right.status, 200, "{}", right.body);
    let globex_key = harness::create_key(&app, "globex", "orders:read", "bronze");
    assert_eq!(get(&app, &anonymous, usage, Some(&globex_key)).await.status, 200);

    // A client certificate of another CA fails the handshake.
    let stranger = Ca::new().issue("acme", ExtendedKeyUsagePurpose::ClientAuth);
    let tcp = tokio::net::TcpStream::connect(app.http).await.expect("connect");
    let refused =
        client(ca.0.der(), Some(&stranger)).connect(ServerName::try_from("localhost").expect("name"), tcp).await;
    let refused = match refused {
        // TLS 1.3 reports the client certificate's rejection on first read.
        Ok(mut stream) => {
            let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n").await;
            let mut buf = [0u8; 1];
            stream.read(&mut buf).await.map(|n| n > 0).unwrap_or(false)
        }
        Err(_) => false,
    };
    assert!(!refused, "a certificate of an unknown CA is refused");

    // Renewed: new files, the new certificate on the next handshakes, no restart.
    let before = health.server_cert;
    let renewed = ca.issue("localhost", ExtendedKeyUsagePurpose::ServerAuth);
    write(certs.path(), "server.key", &renewed.1);
    write(certs.path(), "server.pem", &renewed.0);
    let renewed_der = CertificateDer::from_pem_slice(renewed.0.as_bytes()).expect("cert").to_vec();
    let mut served = before.clone();
    for _ in 0..500 {
        // A new client each time: a resumed session would show the certificate of its first handshake.
        served = get(&app, &client(ca.0.der(), None), "/healthz", None).await.server_cert;
        if served != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(served, renewed_der, "the renewed certificate is served");
    app.stop_all().await;
}

#[tokio::test]
async fn a_tls_file_that_cannot_be_used_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "server.pem", "not a certificate");
    write(dir.path(), "server.key", "not a key");
    let config_file = dir.path().join("erp-connect.toml");
    std::fs::write(&config_file, "[gateway.tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\n")
        .expect("config");
    let run = tokio::process::Command::new(harness::BIN)
        .args(["up", "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--config"])
        .arg(&config_file)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("ERP_CONNECT_CONFIG")
        .kill_on_drop(true)
        .output();
    // Bounded, so that a start that wrongly succeeds fails the test rather than hanging it.
    let out = tokio::time::timeout(Duration::from_secs(120), run).await.expect("up stops on its own").expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("gateway.tls") && stderr.contains("server.pem"), "{stderr}");
}

/// `GET /metrics` over `stream`: the answer's status line, if it answered.
async fn status_line<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut stream: S) -> Option<String> {
    stream.write_all(b"GET /metrics HTTP/1.1\r\nhost: tier\r\nconnection: close\r\n\r\n").await.ok()?;
    let mut answer = Vec::new();
    // A refused client certificate shows as an error here (TLS 1.3).
    let _ = stream.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer);
    text.starts_with("HTTP/").then(|| text.lines().next().unwrap_or_default().to_owned())
}

/// [`status_line`] over TLS to `addr` with `tls`; none if the handshake fails.
async fn status_line_tls(addr: std::net::SocketAddr, tls: &tokio_rustls::TlsConnector) -> Option<String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let stream = tls.connect(ServerName::try_from("127.0.0.1").expect("name"), tcp).await.ok()?;
    status_line(stream).await
}

#[tokio::test]
async fn serve_mode_inner_tiers_answer_only_tls_callers_holding_a_certificate_of_the_internal_ca() {
    let app = harness::spawn_serve_with(|config| {
        config.internal.tls = Some(harness::internal_tls(&config.data_dir.join("tls"), true));
    })
    .await;
    let dir = app.data_dir.path().join("tls");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect("pem");
    let ca = CertificateDer::from_pem_slice(read("ca.pem").as_bytes()).expect("ca");
    let tier = (read("tier.pem"), read("tier.key"));

    // Every hop behind the gateway is TLS: a catalogue read crosses them all.
    let products = harness::get(&app.url("/web/v1/products"), Some(&app.token("catalog:read"))).await;
    assert_eq!(products.status, 200, "{}", products.text);

    let stranger = Ca::new().issue("127.0.0.1", ExtendedKeyUsagePurpose::ClientAuth);
    for (target, addr) in &app.grpc {
        let plain = tokio::net::TcpStream::connect(addr).await.expect("connect");
        assert_eq!(status_line(plain).await, None, "{target:?} answers clear text");
        assert_eq!(status_line_tls(*addr, &client(&ca, None)).await, None, "{target:?}: no client certificate");
        assert_eq!(
            status_line_tls(*addr, &client(&ca, Some(&stranger))).await,
            None,
            "{target:?}: a client certificate of another CA"
        );
        assert_eq!(
            status_line_tls(*addr, &client(&ca, Some(&tier))).await.as_deref(),
            Some("HTTP/1.1 200 OK"),
            "{target:?}: a tier's certificate"
        );
    }
    app.stop_all().await;
}

#[test]
fn an_https_tier_address_without_internal_tls_and_a_clear_one_with_it_are_refused() {
    let mut config = erp_connect::config::Config::default();
    config.process.system_url = "https://system.internal:8083".into();
    let err = config.validate().expect_err("https without [internal.tls]").to_string();
    assert!(err.contains("process.system_url") && err.contains("[internal.tls]"), "{err}");

    let dir = tempfile::tempdir().expect("tempdir");
    config.internal.tls = Some(harness::internal_tls(dir.path(), false));
    config.validate().expect("https with [internal.tls]");
    let err = config.validate_serve().expect_err("http:// with [internal.tls] in serve mode").to_string();
    assert!(err.contains("gateway.experience_url") && err.contains("https://"), "{err}");
}

#[tokio::test]
async fn a_request_head_left_unfinished_over_tls_is_answered_408() {
    let ca = Ca::new();
    let certs = tempfile::tempdir().expect("tempdir");
    let server = ca.issue("localhost", ExtendedKeyUsagePurpose::ServerAuth);
    write(certs.path(), "server.pem", &server.0);
    write(certs.path(), "server.key", &server.1);
    let dir = certs.path().to_owned();
    let app = harness::spawn_up_with(move |config| {
        config.gateway.request_head_timeout = Duration::from_secs(1);
        config.gateway.tls = Some(
            serde_json::from_value(serde_json::json!({
                "cert_file": dir.join("server.pem"),
                "key_file": dir.join("server.key"),
            }))
            .expect("tls config"),
        );
    })
    .await;
    let tcp = tokio::net::TcpStream::connect(app.http).await.expect("connect");
    let mut stream = client(ca.0.der(), None)
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("handshake");
    stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n").await.expect("half a head");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json") && answer.contains("request-timeout"), "{answer}");
    app.stop_all().await;
}
