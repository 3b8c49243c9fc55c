//! JWKS fetched from an identity provider's URL (`jwks_url` of
//! `[[gateway.issuers]]`) and kept fresh in the background.
//!
//! One tokio task per issuer owns all fetching; the request path never
//! fetches itself, it only asks the task (and may wait a short, bounded
//! while, see [`MAX_WAIT`]). The task fetches:
//! - at once at start; an identity provider that is down then is retried
//!   with backoff, and the gateway starts all the same (its tokens are
//!   refused with 401 until the keys arrive);
//! - every `jwks_refresh_interval` (default 5 min), sooner when the
//!   provider's `Cache-Control: max-age` says so;
//! - when a token names a `kid` it does not know (key rotation), but never
//!   twice within `jwks_refresh_min_interval` (default 5 s): however many
//!   such tokens arrive, asks in between collapse into one fetch.
//!
//! A failed fetch keeps the keys there are, so tokens keep verifying while
//! the provider is down; a successful one replaces the issuer's keys, and a
//! key that is gone stops verifying (see [`crate::auth`] for the cache of
//! verified tokens).
//!
//! Identity providers are reached over HTTPS (rustls, the operating system's
//! root certificates); plain `http://` is accepted for loopback addresses
//! only (tests, local development).

use std::{
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::body::Body;
use http::{Request, StatusCode, Uri, header};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use jsonwebtoken::jwk::JwkSet;
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
    time::Instant,
};

/// Longest a request waits for a fetch asked for by its unknown `kid`. A
/// request that would have to wait longer (the last fetch was too recent)
/// does not wait at all.
pub const MAX_WAIT: Duration = Duration::from_secs(2);

/// Deadline of one fetch: connect, TLS, response and body.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest JWKS accepted; real ones are a few kilobytes.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// Shortest refresh period a `Cache-Control: max-age` may impose, so that a
/// provider answering `max-age=0` does not make us poll it.
const MIN_MAX_AGE: Duration = Duration::from_secs(30);

/// Longest pause between two fetches while the provider keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Why a JWKS URL was refused or could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configured URL is not acceptable (configuration time only).
    #[error("jwks_url {url:?}: {reason}")]
    Url {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No HTTPS client could be built (no root certificates, no runtime).
    #[error("JWKS client: {0}")]
    Client(String),
    /// The identity provider could not be reached.
    #[error("identity provider unreachable: {0}")]
    Unreachable(#[from] hyper_util::client::legacy::Error),
    /// The identity provider did not answer in time.
    #[error("identity provider timed out")]
    Timeout,
    /// The identity provider answered with an error status.
    #[error("identity provider answered {0}")]
    Status(StatusCode),
    /// The body could not be read (or was too large).
    #[error("JWKS body: {0}")]
    Body(String),
    /// The body is not a JWKS.
    #[error("not a JWKS: {0}")]
    Parse(#[from] serde_json::Error),
    /// The JWKS holds no key this issuer may sign with.
    #[error("{0}")]
    Keys(String),
}

impl Error {
    /// Whether fetching again may help. Every fetch failure is retried by
    /// the refresh task anyway; this tells a provider outage from a
    /// provider that serves something we will never accept.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unreachable(_) | Error::Timeout | Error::Body(_))
            || matches!(self, Error::Status(s) if s.is_server_error() || *s == StatusCode::TOO_MANY_REQUESTS)
    }
}

/// Checks a `jwks_url`: `https://`, or `http://` to a loopback address.
pub fn check_url(url: &str) -> Result<Uri, Error> {
    let refuse = |reason| Error::Url { url: url.to_owned(), reason };
    let uri: Uri = url.parse().map_err(|_| refuse("not a URL"))?;
    let authority = uri.authority().ok_or_else(|| refuse("has no host"))?;
    if authority.as_str().contains('@') {
        return Err(refuse("must not carry credentials"));
    }
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if is_loopback(authority.host()) => Ok(uri),
        Some("http") => {
            Err(refuse("plain http is allowed only to a loopback address (127.0.0.1, [::1], localhost); use https"))
        }
        _ => Err(refuse("must be an https:// URL")),
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    host.eq_ignore_ascii_case("localhost") || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The HTTP client of all JWKS fetches: HTTPS with the system's roots, plain
/// HTTP for the loopback URLs that [`check_url`] lets through. No pooled
/// connections: one fetch every few minutes gains nothing from keep-alive,
/// and a fresh connection follows the provider's DNS.
pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, String>;

/// Builds the client (loads the root certificates).
pub(crate) fn client() -> Result<HttpClient, Error> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| Error::Client(format!("root certificates: {e}")))?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(https))
}

/// Fetches a JWKS; also returns the `max-age` the provider asked for.
async fn fetch(client: &HttpClient, url: &Uri) -> Result<(JwkSet, Option<Duration>), Error> {
    let request = Request::get(url.clone())
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, concat!("erp-connect/", env!("CARGO_PKG_VERSION")))
        .body(String::new())
        .map_err(|e| Error::Body(e.to_string()))?;
    let fetched = async {
        let response = client.request(request).await?;
        if !response.status().is_success() {
            return Err(Error::Status(response.status()));
        }
        let max_age = response.headers().get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).and_then(max_age);
        let body = axum::body::to_bytes(Body::new(response.into_body()), MAX_JWKS_BYTES)
            .await
            .map_err(|e| Error::Body(e.to_string()))?;
        Ok((serde_json::from_slice(&body)?, max_age))
    };
    tokio::time::timeout(FETCH_TIMEOUT, fetched).await.map_err(|_| Error::Timeout)?
}

/// `max-age` of a `Cache-Control` value, if it has a plain one.
fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control
        .split(',')
        .find_map(|directive| {
            let (name, value) = directive.trim().split_once('=')?;
            name.trim().eq_ignore_ascii_case("max-age").then(|| value.trim().trim_matches('"').parse().ok())?
        })
        .map(Duration::from_secs)
}

/// How the refresh task treats one issuer's URL.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    /// The periodic refresh.
    pub interval: Duration,
    /// Least time between the starts of two fetches.
    pub min_interval: Duration,
}

/// Installs a fetched JWKS as the issuer's keys; says what changed (for the
/// log), or why the set was refused (the old keys stay).
pub(crate) type Apply = Box<dyn Fn(&JwkSet) -> Result<String, String> + Send + Sync>;

/// What a URL issuer's keys look like from outside, for readiness and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The issuer.
    pub issuer: String,
    /// Fetches tried, including failed ones.
    pub fetches: u64,
    /// Fetches that failed (the keys before them were kept).
    pub failures: u64,
    /// Whether keys were ever installed.
    pub loaded: bool,
}

/// What the request path and the refresh task share.
struct Shared {
    issuer: String,
    min_interval: Duration,
    /// A request asked for a fetch since the last one started; asks in
    /// between only set it, so a flood wakes the task once.
    asked: AtomicBool,
    wake: Notify,
    /// Counts finished fetches; a waiting request watches it.
    done: watch::Sender<u64>,
    state: Mutex<State>,
    fetches: AtomicU64,
    failures: AtomicU64,
    loaded: AtomicBool,
}

struct State {
    /// A fetch is running (or the first one has not started yet).
    in_flight: bool,
    /// Earliest start of the next fetch.
    next_allowed: Instant,
}

/// One URL issuer's refresh task, and the handle the request path uses to
/// ask it for a fetch. The task stops when this is dropped.
pub(crate) struct Remote {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Remote {
    /// Starts the refresh task of `issuer` (the first fetch at once). Needs
    /// a tokio runtime.
    pub(crate) fn spawn(
        issuer: &str,
        url: Uri,
        schedule: Schedule,
        client: HttpClient,
        apply: Apply,
    ) -> Result<Self, Error> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Client("a jwks_url needs the tokio runtime".into()))?;
        let shared = Arc::new(Shared {
            issuer: issuer.to_owned(),
            min_interval: schedule.min_interval,
            asked: AtomicBool::new(false),
            wake: Notify::new(),
            done: watch::Sender::new(0),
            state: Mutex::new(State { in_flight: true, next_allowed: Instant::now() }),
            fetches: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            loaded: AtomicBool::new(false),
        });
        let task = runtime.spawn(refresh(shared.clone(), url, schedule.interval, client, apply));
        Ok(Self { shared, task })
    }

    /// The issuer whose keys this fetches.
    pub(crate) fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// Asks for a fetch without waiting; cheap, and safe to call on every
    /// request.
    pub(crate) fn ask(&self) {
        if !self.shared.asked.swap(true, Ordering::AcqRel) {
            self.shared.wake.notify_one();
        }
    }

    /// Asks for a fetch and waits, at most [`MAX_WAIT`], for the next one
    /// to finish (successful or not). Returns at once, `false`, when no
    /// fetch can finish within that bound because the last one was too
    /// recent.
    pub(crate) async fn ask_and_wait(&self) -> bool {
        let mut done = self.shared.done.subscribe();
        let soon = self.shared.state.lock().map(|s| s.in_flight || s.next_allowed <= Instant::now() + MAX_WAIT);
        self.ask();
        if !soon.unwrap_or(false) {
            return false;
        }
        tokio::time::timeout(MAX_WAIT, done.changed()).await.is_ok_and(|changed| changed.is_ok())
    }

    /// Counters, for readiness and tests.
    pub(crate) fn status(&self) -> Status {
        Status {
            issuer: self.shared.issuer.clone(),
            fetches: self.shared.fetches.load(Ordering::Relaxed),
            failures: self.shared.failures.load(Ordering::Relaxed),
            loaded: self.shared.loaded.load(Ordering::Relaxed),
        }
    }
}

/// The refresh task of one issuer: runs until its [`Remote`] is dropped.
async fn refresh(shared: Arc<Shared>, url: Uri, interval: Duration, client: HttpClient, apply: Apply) {
    let mut delay = Duration::ZERO;
    let mut failures = 0u32;
    loop {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shared.wake.notified() => {}
        }
        let not_before = shared.state.lock().map(|s| s.next_allowed).unwrap_or_else(|_| Instant::now());
        tokio::time::sleep_until(not_before).await;
        // Whoever asked until now is served by this fetch.
        shared.asked.store(false, Ordering::Release);
        if let Ok(mut state) = shared.state.lock() {
            state.in_flight = true;
            state.next_allowed = Instant::now() + shared.min_interval;
        }
        shared.fetches.fetch_add(1, Ordering::Relaxed);
        let outcome = fetch(&client, &url).await.and_then(|(set, max_age)| {
            let summary = apply(&set).map_err(Error::Keys)?;
            Ok((summary, max_age))
        });
        delay = match outcome {
            Ok((summary, max_age)) => {
                failures = 0;
                shared.loaded.store(true, Ordering::Relaxed);
                tracing::debug!(issuer = %shared.issuer, %summary, "JWKS refreshed");
                max_age.map_or(interval, |age| age.max(MIN_MAX_AGE).min(interval))
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                shared.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    issuer = %shared.issuer,
                    %error,
                    retryable = error.is_retryable(),
                    "JWKS refresh failed; the keys fetched before stay in use"
                );
                backoff(shared.min_interval, failures).min(interval)
            }
        };
        if let Ok(mut state) = shared.state.lock() {
            state.in_flight = false;
        }
        shared.done.send_modify(|n| *n += 1);
    }
}

/// Pause after the `failures`-th failure in a row: the product's backoff
/// rule from the least interval (at least 1 s), up to [`MAX_BACKOFF`].
fn backoff(min_interval: Duration, failures: u32) -> Duration {
    let base = min_interval.max(Duration::from_secs(1));
    platform::backoff::Backoff::new(base, MAX_BACKOFF).delay(failures.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http_urls_are_accepted() {
        for ok in [
            "https://idp.example.com/.well-known/jwks.json",
            "http://127.0.0.1:8080/jwks.json",
            "http://127.1.2.3/jwks",
            "http://[::1]:9000/jwks",
            "http://localhost:8080/jwks",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://idp.example.com/jwks.json",
            "http://10.0.0.1/jwks",
            "http://127.0.0.1.example.com/jwks",
            "ftp://idp.example.com/jwks",
            "https://user:pw@idp.example.com/jwks",
            "/jwks.json",
            "not a url",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_plain_max_age_is_read_and_anything_else_ignored() {
        assert_eq!(max_age("public, max-age=600"), Some(Duration::from_secs(600)));
        assert_eq!(max_age("max-age=\"60\", must-revalidate"), Some(Duration::from_secs(60)));
        assert_eq!(max_age("no-store"), None);
        assert_eq!(max_age("max-age=soon"), None);
    }

    #[test]
    fn backoff_doubles_from_the_least_interval_up_to_a_minute() {
        let five = Duration::from_secs(5);
        let within = |d: Duration, low: Duration, high: Duration| assert!(d >= low && d < high, "{d:?}");
        within(backoff(five, 1), five / 2, five);
        within(backoff(five, 2), five, five * 2);
        within(backoff(five, 40), MAX_BACKOFF / 2, MAX_BACKOFF);
        within(backoff(Duration::ZERO, 1), Duration::from_millis(500), Duration::from_secs(1));
    }
}
