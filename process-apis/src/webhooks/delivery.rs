//! One delivery attempt: the event `POST`ed to an endpoint as Standard
//! Webhooks v1 (`webhook-id`, `webhook-timestamp`, `webhook-signature`),
//! and what the answer means for the delivery:
//! - a 2xx within the timeout (15 s by default) is delivered;
//! - 410 Gone asks us to stop: the endpoint is to be disabled;
//! - anything else (a 3xx included: a webhook is not redirected), a
//!   refused or reset connection, a timeout, is a failed attempt, retried
//!   on the schedule, sooner or later as the endpoint's `Retry-After` asks.
//!
//! Connections reach only addresses [`super::target`] allows: the URL is
//! checked before the attempt, and host names are resolved by
//! [`SafeResolver`], which checks every address again at connect time, so
//! a name that resolves elsewhere between the check and the connection (DNS
//! rebinding) gets no connection either.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{
        Client,
        connect::{HttpConnector, dns::Name},
    },
    rt::TokioExecutor,
};

use super::{
    signature::{Secret, signature_header},
    target::{self, Policy},
};

/// How long an endpoint has to answer, as Standard Webhooks suggests.
pub const TIMEOUT: Duration = Duration::from_secs(15);
/// Longest `Retry-After` honoured; a longer one waits this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Most of an endpoint's answer kept for the delivery log.
const MAX_LOGGED_BODY: usize = 1024;

/// One event, ready to send.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    /// The event id (`webhook-id`), the same on every attempt, so a
    /// receiver drops what it already has.
    pub id: &'a str,
    /// Unix seconds of this attempt (`webhook-timestamp`).
    pub timestamp: i64,
    /// `{"type", "timestamp", "data"}` as JSON.
    pub body: &'a [u8],
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx: done.
    Delivered {
        /// The status.
        status: u16,
    },
    /// 410: the receiver wants no more; the endpoint is to be disabled.
    Gone,
    /// Worth another attempt later.
    Failed {
        /// The status, when the endpoint answered.
        status: Option<u16>,
        /// What went wrong, for the delivery log (the answer's start, or
        /// the connection error).
        error: String,
        /// How long the endpoint asked us to wait (`Retry-After`).
        retry_after: Option<Duration>,
    },
}

/// An attempt's outcome and how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// See [`Outcome`].
    pub outcome: Outcome,
    /// From the start of the request to the answer or the failure.
    pub duration: Duration,
}

/// Sends deliveries; one per process tier, its connections reused.
#[derive(Clone)]
pub struct Sender {
    client: Client<HttpsConnector<HttpConnector<SafeResolver>>, Full<Bytes>>,
    policy: Policy,
    timeout: Duration,
}

/// Why a sender could not be built.
#[derive(Debug, thiserror::Error)]
#[error("webhook client: {0}")]
pub struct Error(String);

impl Sender {
    /// A sender allowing the targets `policy` allows, waiting `timeout` for
    /// each answer; HTTPS with the system's root certificates.
    pub fn new(policy: Policy, timeout: Duration) -> Result<Self, Error> {
        let mut http = HttpConnector::new_with_resolver(SafeResolver(policy));
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| Error(format!("root certificates: {e}")))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self { client: Client::builder(TokioExecutor::new()).build(https), policy, timeout })
    }

    /// One attempt to deliver `message` to `url`, signed with `secrets`
    /// (the current one first). Never panics and never waits past the
    /// timeout.
    pub async fn send(&self, url: &str, secrets: &[&Secret], message: &Message<'_>) -> Attempt {
        let started = Instant::now();
        let outcome = match target::check(url, self.policy).await {
            Err(refusal) => Outcome::Failed { status: None, error: refusal.to_string(), retry_after: None },
            Ok(checked) => match tokio::time::timeout(self.timeout, self.post(checked.uri, secrets, message)).await {
                Ok(outcome) => outcome,
                Err(_) => Outcome::Failed {
                    status: None,
                    error: format!("no answer within {} s", self.timeout.as_secs_f32()),
                    retry_after: None,
                },
            },
        };
        Attempt { outcome, duration: started.elapsed() }
    }

    async fn post(&self, uri: http::Uri, secrets: &[&Secret], message: &Message<'_>) -> Outcome {
        let failed = |error: String| Outcome::Failed { status: None, error, retry_after: None };
        let request = Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, concat!("erp-connect-webhooks/", env!("CARGO_PKG_VERSION")))
            .header("webhook-id", message.id)
            .header("webhook-timestamp", message.timestamp.to_string())
            .header("webhook-signature", signature_header(secrets, message.id, message.timestamp, message.body))
            .body(Full::new(Bytes::copy_from_slice(message.body)));
        let request = match request {
            Ok(request) => request,
            Err(e) => return failed(format!("request: {e}")),
        };
        let response = match self.client.request(request).await {
            Ok(response) => response,
            // The source names what failed (refused, reset, TLS, a refused address).
            Err(e) => {
                let cause = std::error::Error::source(&e).map(ToString::to_string).unwrap_or_else(|| e.to_string());
                return failed(format!("connection: {cause}"));
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        if status.is_success() {
            return Outcome::Delivered { status: status.as_u16() };
        }
        if status == StatusCode::GONE {
            return Outcome::Gone;
        }
        let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let start = String::from_utf8_lossy(&body[..body.len().min(MAX_LOGGED_BODY)]).into_owned();
        Outcome::Failed { status: Some(status.as_u16()), error: start, retry_after }
    }
}

/// Resolves an endpoint's host and refuses, before any connection, every
/// address [`target::allowed`] does not allow.
#[derive(Debug, Clone, Copy)]
pub struct SafeResolver(Policy);

impl tower::Service<Name> for SafeResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.0;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if let Some(bad) = addrs.iter().find(|a| !target::allowed(a.ip(), policy)) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("{name} resolves to {}, which is not a public address", bad.ip()),
                ));
            }
            Ok(addrs.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::{Router, extract::State, http::HeaderMap, response::IntoResponse, routing::post};

    use super::*;

    /// What the receiver saw: each request's headers and body.
    type Seen = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

    /// A receiver on loopback answering `script`'s statuses in turn (the
    /// last one from then on), with `Retry-After: 7` on 503s.
    async fn receiver(script: Vec<u16>) -> (String, Seen) {
        let seen: Seen = Arc::default();
        let state = (seen.clone(), Arc::new(Mutex::new(script)));
        let app =
            Router::new()
                .route(
                    "/hook",
                    post(
                        |State((seen, script)): State<(Seen, Arc<Mutex<Vec<u16>>>)>,
                         headers: HeaderMap,
                         body: Bytes| async move {
                            seen.lock().expect("lock").push((headers, body));
                            let mut script = script.lock().expect("lock");
                            let status = if script.len() > 1 { script.remove(0) } else { script[0] };
                            let status = StatusCode::from_u16(status).expect("status");
                            let mut response = (status, "receiver says no").into_response();
                            if status == StatusCode::SERVICE_UNAVAILABLE {
                                response.headers_mut().insert(header::RETRY_AFTER, "7".parse().expect("header"));
                            }
                            response
                        },
                    ),
                )
                .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/hook"), seen)
    }

    fn message(body: &[u8]) -> Message<'_> {
        Message { id: "evt_01JDX", timestamp: 1_765_000_000, body }
    }

    #[tokio::test]
    async fn an_event_is_posted_signed_and_failures_say_why() {
        let (url, seen) = receiver(vec![500, 503, 302, 200]).await;
        let sender = Sender::new(Policy::Dev, TIMEOUT).expect("sender");
        let (current, old) = (Secret::generate().expect("random"), Secret::generate().expect("random"));
        let body = br#"{"type":"order.confirmed","timestamp":"2025-12-06T05:46:40Z","data":{}}"#;
        let (secrets, sent) = ([&current, &old], message(body));
        let send = || sender.send(&url, &secrets, &sent);

        let first = send().await.outcome;
        assert!(
            matches!(&first, Outcome::Failed { status: Some(500), error, retry_after: None } if error == "receiver says no"),
            "{first:?}"
        );
        let second = send().await.outcome;
        assert!(
            matches!(second, Outcome::Failed { status: Some(503), retry_after: Some(d), .. } if d == Duration::from_secs(7)),
            "{second:?}"
        );
        let third = send().await.outcome;
        assert!(matches!(third, Outcome::Failed { status: Some(302), .. }), "a redirect is not followed: {third:?}");
        assert_eq!(send().await.outcome, Outcome::Delivered { status: 200 });

        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), 4);
        for (headers, received) in seen.iter() {
            assert_eq!(received.as_ref(), body);
            assert_eq!(headers["webhook-id"], "evt_01JDX", "the same id on every attempt");
            assert_eq!(headers["webhook-timestamp"], "1765000000");
            assert_eq!(headers["content-type"], "application/json");
            let signatures: Vec<&str> = headers["webhook-signature"].to_str().expect("ascii").split(' ').collect();
            assert_eq!(
                signatures,
                [current.sign("evt_01JDX", 1_765_000_000, body), old.sign("evt_01JDX", 1_765_000_000, body)]
            );
        }
    }

    #[tokio::test]
    async fn a_410_asks_for_no_more() {
        let (url, _) = receiver(vec![410]).await;
        let sender = Sender::new(Policy::Dev, TIMEOUT).expect("sender");
        let secret = Secret::generate().expect("random");
        assert_eq!(sender.send(&url, &[&secret], &message(b"{}")).await.outcome, Outcome::Gone);
    }

    #[tokio::test]
    async fn production_never_connects_to_loopback_whatever_the_url_says() {
        let (url, seen) = receiver(vec![200]).await;
        let sender = Sender::new(Policy::Production, TIMEOUT).expect("sender");
        let secret = Secret::generate().expect("random");
        let https_localhost = url.replace("http://127.0.0.1", "https://localhost");
        for url in [url.as_str(), https_localhost.as_str()] {
            let attempt = sender.send(url, &[&secret], &message(b"{}")).await;
            assert!(matches!(attempt.outcome, Outcome::Failed { status: None, .. }), "{url}: {attempt:?}");
        }
        assert!(seen.lock().expect("lock").is_empty(), "nothing reached the receiver");
    }

    /// The resolver checks again at connect time, whatever the URL check
    /// said before (a name may resolve elsewhere by then).
    #[tokio::test]
    async fn the_resolver_refuses_a_name_that_resolves_to_loopback_in_production() {
        use std::str::FromStr;
        use tower::Service;
        let name = Name::from_str("localhost").expect("name");
        let refused = SafeResolver(Policy::Production).call(name.clone()).await.expect_err("loopback");
        assert_eq!(refused.kind(), std::io::ErrorKind::PermissionDenied);
        let allowed: Vec<_> = SafeResolver(Policy::Dev).call(name).await.expect("dev allows loopback").collect();
        assert!(!allowed.is_empty() && allowed.iter().all(|a| a.ip().is_loopback()), "{allowed:?}");
    }

    #[tokio::test]
    async fn an_endpoint_that_does_not_answer_fails_at_the_timeout() {
        // Accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        let sender = Sender::new(Policy::Dev, Duration::from_millis(300)).expect("sender");
        let secret = Secret::generate().expect("random");
        let attempt = sender.send(&format!("http://{addr}/hook"), &[&secret], &message(b"{}")).await;
        assert!(
            matches!(&attempt.outcome, Outcome::Failed { status: None, error, .. } if error.starts_with("no answer within")),
            "{attempt:?}"
        );
    }
}
