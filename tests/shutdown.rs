//! Graceful shutdown: once told to stop, the gateway stops accepting new
//! connections but lets an in-flight request finish; one still running
//! when `shutdown_grace` is over is dropped, and the server ends.
//!
//! The experience tier here is a fake that holds the request until the test
//! releases it: the only way to have a request deterministically in flight
//! while the shutdown starts.

mod harness;

use std::time::Duration;

use axum::{Router, routing::get};
use gateway::{auth::Authenticator, dev_idp, upstream::Upstream};
use platform::shutdown::{Shutdown, serve_http};
use tokio::sync::{mpsc, oneshot};

/// A gateway whose experience tier holds `GET /web/v1/products` until
/// released, served with `grace`: its address, task, shutdown, the signal
/// that a request arrived, the release, and its data directory.
struct Held {
    addr: std::net::SocketAddr,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    shutdown: Shutdown,
    arrived: mpsc::Receiver<()>,
    release: oneshot::Sender<()>,
    dir: tempfile::TempDir,
}

async fn held_gateway(grace: Duration) -> Held {
    let dir = tempfile::tempdir().expect("tempdir");
    let idp = dev_idp::DevIdp::load_or_create(dir.path()).expect("idp");
    let jwks = serde_json::from_value(idp.jwks()).expect("jwks");
    let auth = Authenticator::new(&[(dev_idp::ISSUER.into(), vec!["erp-connect".into()], jwks)], 0).expect("auth");

    let (arrived_tx, arrived) = mpsc::channel::<()>(1);
    let (release, released) = oneshot::channel::<()>();
    let released = std::sync::Arc::new(tokio::sync::Mutex::new(Some(released)));
    let held = Router::new().route(
        "/web/v1/products",
        get(move || {
            let arrived_tx = arrived_tx.clone();
            let released = released.clone();
            async move {
                arrived_tx.send(()).await.expect("test listening");
                let rx = released.lock().await.take().expect("one request");
                let _ = rx.await;
                "finished"
            }
        }),
    );
    let held = Upstream::InProcess(held, std::time::Duration::from_secs(30));
    let router = gateway::router(auth, held, None, erp_connect::forwarded_routes());
    let listener = harness::listener().await;
    let addr = listener.local_addr().expect("addr");
    let shutdown = Shutdown::new();
    let server = tokio::spawn(serve_http(listener, router, shutdown.clone(), grace, Default::default(), None));
    Held { addr, server, shutdown, arrived, release, dir }
}

#[tokio::test]
async fn graceful_shutdown_finishes_an_in_flight_request_with_a_held_fake_experience_tier() {
    let Held { addr, server, shutdown, mut arrived, release, dir } = held_gateway(Duration::from_secs(30)).await;
    let token = harness::token(dir.path(), "catalog:read");
    let url = format!("http://{addr}/web/v1/products");
    let in_flight = tokio::spawn(async move { harness::get(&url, Some(&token)).await });
    arrived.recv().await.expect("request reached the experience tier");

    shutdown.cancel();
    // New connections are refused once the accept loop has seen the signal.
    let mut refused = false;
    for _ in 0..1000 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(refused, "still accepting connections after shutdown");
    assert!(!server.is_finished(), "the server must wait for the in-flight request");

    release.send(()).expect("request still waiting");
    let reply = in_flight.await.expect("client task");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text, "finished");
    server.await.expect("server task").expect("clean shutdown");
}

#[tokio::test]
async fn a_request_still_running_when_the_grace_is_over_is_dropped_and_the_server_ends() {
    let Held { addr, server, shutdown, mut arrived, release, dir } = held_gateway(Duration::from_millis(200)).await;
    let token = harness::token(dir.path(), "catalog:read");
    let in_flight = tokio::spawn(async move {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        let request = http::Request::get(format!("http://{addr}/web/v1/products"))
            .header("authorization", format!("Bearer {token}"))
            .body(http_body_util::Full::<bytes::Bytes>::default())
            .expect("request");
        client.request(request).await.map(|r| r.status())
    });
    arrived.recv().await.expect("request reached the experience tier");
    shutdown.cancel();
    // Never released: the server gives up on it once the grace is over.
    server.await.expect("server task").expect("the drain ends without an error");
    let answered = in_flight.await.expect("client task");
    assert!(answered.is_err(), "the held request got no answer: {answered:?}");
    drop(release);
}
