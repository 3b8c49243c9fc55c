//! Issuers whose keys come from a JWKS URL, against a real identity
//! provider stand-in: an axum server on a loopback port serving a JWKS the
//! test can rotate, take down, and count the fetches of.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Json, Router, extract::State, response::IntoResponse, routing::get};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use gateway::{
    auth::{Authenticator, Error, IssuerConfig},
    dev_idp::{DevIdp, ISSUER, TokenRequest},
};
use http::StatusCode;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

/// What the stand-in identity provider serves.
struct IdpState {
    jwks: Mutex<serde_json::Value>,
    fetches: AtomicUsize,
    down: AtomicBool,
}

struct FakeIdp {
    url: String,
    state: Arc<IdpState>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
}

impl FakeIdp {
    async fn start(jwks: serde_json::Value) -> Self {
        let state =
            Arc::new(IdpState { jwks: Mutex::new(jwks), fetches: AtomicUsize::new(0), down: AtomicBool::new(false) });
        let app = Router::new().route("/jwks.json", get(serve_jwks)).with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
        });
        Self { url, state, stop: Some(stop), server }
    }

    fn serve(&self, jwks: serde_json::Value) {
        *self.state.jwks.lock().expect("lock") = jwks;
    }

    fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    /// Stops listening and waits until the server is gone.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.server).await.expect("server task");
    }
}

async fn serve_jwks(State(state): State<Arc<IdpState>>) -> axum::response::Response {
    if state.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    state.fetches.fetch_add(1, Ordering::SeqCst);
    let jwks = state.jwks.lock().expect("lock").clone();
    ([(http::header::CACHE_CONTROL, "public, max-age=3600")], Json(jwks)).into_response()
}

fn issuer(url: &str, min_interval: &str) -> IssuerConfig {
    serde_json::from_value(serde_json::json!({
        "issuer": ISSUER,
        "jwks_url": url,
        "jwks_refresh_min_interval": min_interval,
    }))
    .expect("issuer config")
}

fn idp() -> (tempfile::TempDir, DevIdp) {
    let dir = tempfile::tempdir().expect("tempdir");
    let idp = DevIdp::load_or_create(dir.path()).expect("idp");
    (dir, idp)
}

fn token(idp: &DevIdp, subject: &str) -> String {
    idp.mint(&TokenRequest {
        subject: subject.into(),
        scope: "catalog:read".into(),
        audience: "erp-connect".into(),
        tenant: None,
        email: None,
        ttl: Duration::from_secs(300),
    })
    .expect("mint")
}

/// A token of the trusted issuer naming a key nobody published.
fn token_with_unknown_kid(n: usize) -> String {
    let header =
        URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"rnd-{n}-{}"}}"#, ulid::Ulid::new()));
    let claims = URL_SAFE_NO_PAD.encode(
        serde_json::json!({"iss": ISSUER, "aud": "erp-connect", "sub": "mallory", "exp": u32::MAX}).to_string(),
    );
    format!("{header}.{claims}.{}", URL_SAFE_NO_PAD.encode([0u8; 64]))
}

#[tokio::test]
async fn a_token_signed_by_a_key_served_at_the_url_verifies() {
    let (_dir, signer) = idp();
    let server = FakeIdp::start(signer.jwks()).await;
    let auth = Authenticator::configured(&[issuer(&server.url, "5s")], &[], 30).expect("auth");
    // The first request may arrive while the keys are still being fetched.
    let principal = auth.verify_with_refresh(&token(&signer, "alice")).await.expect("verifies");
    assert_eq!(principal.subject, "alice");
    assert_eq!(auth.verify(&token(&signer, "bob")).expect("verifies from the cached keys").subject, "bob");
    assert_eq!(server.fetches(), 1);
    let status = auth.jwks_status();
    assert!(status[0].loaded && status[0].failures == 0, "{status:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_rotated_key_verifies_after_a_refresh_on_its_unknown_kid_and_the_old_one_stops() {
    let (_old_dir, old) = idp();
    let (_new_dir, new) = idp();
    let server = FakeIdp::start(old.jwks()).await;
    let auth = Authenticator::configured(&[issuer(&server.url, "50ms")], &[], 30).expect("auth");
    let old_token = token(&old, "alice");
    auth.verify_with_refresh(&old_token).await.expect("the old key verifies");
    auth.verify(&old_token).expect("and its token is cached");

    server.serve(new.jwks());
    let principal = auth.verify_with_refresh(&token(&new, "alice")).await.expect("the new kid triggers a refresh");
    assert_eq!(principal.subject, "alice");
    assert_eq!(server.fetches(), 2);
    assert!(matches!(auth.verify(&token(&old, "bob")), Err(Error::UnknownKey)), "the withdrawn key no longer verifies");
    assert!(matches!(auth.verify(&old_token), Err(Error::UnknownKey)), "nor does the cache answer for it");
    server.stop().await;
}

#[tokio::test]
async fn cached_keys_keep_verifying_while_the_identity_provider_is_down() {
    let (_dir, signer) = idp();
    let server = FakeIdp::start(signer.jwks()).await;
    let auth = Authenticator::configured(&[issuer(&server.url, "50ms")], &[], 30).expect("auth");
    auth.verify_with_refresh(&token(&signer, "alice")).await.expect("verifies");
    server.stop().await;

    // An unknown kid makes the gateway fetch again, which fails.
    assert!(matches!(auth.verify_with_refresh(&token_with_unknown_kid(0)).await, Err(Error::UnknownKey)));
    assert!(auth.jwks_status()[0].failures >= 1, "{:?}", auth.jwks_status());
    // A token never seen before (so not from the token cache) still verifies.
    assert_eq!(auth.verify(&token(&signer, "bob")).expect("verifies from the kept keys").subject, "bob");
}

#[tokio::test]
async fn an_identity_provider_down_at_start_is_retried_and_its_tokens_wait_for_it() {
    let (_dir, signer) = idp();
    let server = FakeIdp::start(signer.jwks()).await;
    server.state.down.store(true, Ordering::SeqCst);
    let auth = Authenticator::configured(&[issuer(&server.url, "50ms")], &[], 30).expect("starts all the same");
    let alice = token(&signer, "alice");
    assert!(matches!(auth.verify_with_refresh(&alice).await, Err(Error::UnknownKey)), "refused: no keys yet");
    assert!(!auth.jwks_status()[0].loaded);

    server.state.down.store(false, Ordering::SeqCst);
    assert_eq!(auth.verify_with_refresh(&alice).await.expect("verifies once the keys arrive").subject, "alice");
    server.stop().await;
}

#[tokio::test]
async fn a_burst_of_tokens_with_random_kids_fetches_at_most_twice() {
    let (_dir, signer) = idp();
    let server = FakeIdp::start(signer.jwks()).await;
    let auth = Authenticator::configured(&[issuer(&server.url, "300ms")], &[], 30).expect("auth");
    auth.verify_with_refresh(&token(&signer, "alice")).await.expect("verifies");
    let before = server.fetches();

    // Requests that do not wait, then requests that wait for the refresh
    // their unknown kid asked for: one fetch serves them all.
    for n in 0..100 {
        assert!(matches!(auth.verify(&token_with_unknown_kid(n)), Err(Error::UnknownKey)));
    }
    let burst = (100..200).map(|n| {
        let auth = auth.clone();
        tokio::spawn(async move { auth.verify_with_refresh(&token_with_unknown_kid(n)).await })
    });
    for refused in join_all(burst).await {
        assert!(matches!(refused, Err(Error::UnknownKey)));
    }
    let burst_fetches = server.fetches() - before;
    assert!(burst_fetches <= 2, "{burst_fetches} fetches for 200 unknown kids");
    auth.verify(&token(&signer, "bob")).expect("the real key still verifies");
    server.stop().await;
}

async fn join_all<T: Send + 'static>(tasks: impl Iterator<Item = JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for task in tasks.collect::<Vec<_>>() {
        out.push(task.await.expect("task"));
    }
    out
}

#[test]
fn plain_http_to_another_host_and_unclear_key_sources_are_refused_at_config() {
    let refused = |config: serde_json::Value| {
        let issuer: IssuerConfig = serde_json::from_value(config).expect("parses");
        gateway::auth::read_jwks_file(&issuer).expect_err("refused").to_string()
    };
    let reason = refused(serde_json::json!({"issuer": ISSUER, "jwks_url": "http://idp.example.com/jwks.json"}));
    assert!(reason.contains("loopback"), "{reason}");
    let reason = refused(serde_json::json!({"issuer": ISSUER, "jwks_url": "http://10.1.2.3/jwks.json"}));
    assert!(reason.contains("loopback"), "{reason}");
    let reason = refused(
        serde_json::json!({"issuer": ISSUER, "jwks_url": "https://idp.example.com/jwks", "jwks_file": "/etc/jwks.json"}),
    );
    assert!(reason.contains("not both"), "{reason}");
    let reason = refused(serde_json::json!({"issuer": ISSUER}));
    assert!(reason.contains("jwks_file or a jwks_url"), "{reason}");
    let reason = refused(serde_json::json!({
        "issuer": ISSUER, "jwks_url": "https://idp.example.com/jwks",
        "jwks_refresh_interval": "10s", "jwks_refresh_min_interval": "1m",
    }));
    assert!(reason.contains("must not exceed"), "{reason}");

    let accepted: IssuerConfig =
        serde_json::from_value(serde_json::json!({"issuer": ISSUER, "jwks_url": "https://idp.example.com/jwks"}))
            .expect("parses");
    accepted.validate().expect("https is fine");
    assert_eq!(accepted.jwks_refresh_interval, Duration::from_secs(300));
    assert_eq!(accepted.jwks_refresh_min_interval, Duration::from_secs(5));
    // Configuration checks never fetch: an https issuer has no file to read.
    assert!(gateway::auth::read_jwks_file(&accepted).expect("checked").keys.is_empty());
}
