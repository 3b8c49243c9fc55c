//! Deprecated operations: what a caller of one is told, and who still calls.
//!
//! An operator lists an operation in `[[gateway.deprecations]]` once its
//! replacement (a `/v2` path beside it) is out. From then on every answer
//! to it carries `Deprecation` (RFC 9745: since when, as `@<unix seconds>`),
//! `Sunset` (RFC 8594: when it stops working, as an HTTP date) when one is
//! set, and `Link: <note>; rel="deprecation"` to the migration note; and
//! `erp_connect_deprecated_calls_total{route,consumer}` counts the calls per
//! consumer (the partner tenant, or `users` for end users' tokens, whose
//! subjects are too many for a label), so an operator knows whom to chase
//! before the sunset.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Deserialize;

use crate::Route;

/// One `[[gateway.deprecations]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The operation: method and path as the API lists them, e.g.
    /// `"GET /web/v1/orders/{id}"`.
    pub operation: String,
    /// When it was deprecated, RFC 3339, e.g. `2026-12-01T00:00:00Z`.
    pub since: String,
    /// When it stops working, RFC 3339; none: not decided yet.
    pub sunset: Option<String>,
    /// The migration note, an absolute `https://` (or `http://`) URL.
    pub link: String,
}

/// What is wrong with a `[[gateway.deprecations]]` entry.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// Not `"METHOD /path"` of an operation the gateway routes.
    #[error("gateway.deprecations: {0:?} is not an operation of the API (\"GET /web/v1/orders\", say)")]
    UnknownOperation(String),
    /// `since` or `sunset` is not an RFC 3339 time.
    #[error("gateway.deprecations: {operation}: {field} {value:?} is not an RFC 3339 time")]
    BadTime {
        /// The entry's operation.
        operation: String,
        /// `since` or `sunset`.
        field: &'static str,
        /// What was given.
        value: String,
    },
    /// `link` is not an absolute http(s) URL fit for a header.
    #[error("gateway.deprecations: {operation}: link {link:?} is not an absolute http(s) URL")]
    BadLink {
        /// The entry's operation.
        operation: String,
        /// What was given.
        link: String,
    },
}

/// One deprecated operation, its headers made once.
#[derive(Debug, Clone)]
pub struct Notice {
    method: Method,
    route: Arc<str>,
    /// `GET /web/v1/orders`, the metric's `route` label.
    label: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// Every deprecated operation; empty, the usual case, costs one length check.
#[derive(Debug, Clone, Default)]
pub struct Deprecations(Vec<Notice>);

impl Deprecations {
    /// Checks `configured` against `routes` and makes each entry's headers.
    pub fn new(configured: &[Config], routes: &[Route]) -> Result<Self, Error> {
        platform::metrics::facade::describe_counter!(
            "erp_connect_deprecated_calls_total",
            "Calls of deprecated operations ([[gateway.deprecations]]), by operation and consumer \
             (partner tenant, or `users`)."
        );
        configured.iter().map(|c| Notice::new(c, routes)).collect::<Result<_, _>>().map(Self)
    }

    /// The notice of `method` `route` (a path template), if deprecated.
    pub fn find(&self, method: &Method, route: &str) -> Option<&Notice> {
        if self.0.is_empty() {
            return None;
        }
        self.0.iter().find(|n| *n.route == *route && n.method == method)
    }
}

impl Notice {
    /// Counts a call by `consumer` and puts the notice into `headers`.
    pub fn apply(&self, consumer: &str, headers: &mut HeaderMap) {
        platform::metrics::facade::counter!(
            "erp_connect_deprecated_calls_total",
            "route" => self.label.clone(),
            "consumer" => consumer.to_owned()
        )
        .increment(1);
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
    }
}

impl Notice {
    fn new(config: &Config, routes: &[Route]) -> Result<Self, Error> {
        let unknown = || Error::UnknownOperation(config.operation.clone());
        let (method, path) = config.operation.trim().split_once(' ').ok_or_else(unknown)?;
        let (method, route) = routes
            .iter()
            .find(|r| r.method.as_str() == method && *r.path == *path.trim())
            .map(|r| (r.method.clone(), Arc::clone(&r.path)))
            .ok_or_else(unknown)?;
        let time = |field: &'static str, value: &str| {
            humantime::parse_rfc3339_weak(value).map_err(|_| Error::BadTime {
                operation: config.operation.clone(),
                field,
                value: value.to_owned(),
            })
        };
        let since = time("since", &config.since)?;
        let seconds = since.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
        let mut headers = vec![(HeaderName::from_static("deprecation"), HeaderValue::from(seconds).with_at())];
        if let Some(sunset) = &config.sunset {
            let at: SystemTime = time("sunset", sunset)?;
            let date = httpdate::fmt_http_date(at);
            headers.push((HeaderName::from_static("sunset"), HeaderValue::try_from(date).expect("an HTTP date")));
        }
        let bad_link = || Error::BadLink { operation: config.operation.clone(), link: config.link.clone() };
        let link = config.link.trim();
        let absolute = link
            .parse::<http::Uri>()
            .is_ok_and(|u| matches!(u.scheme_str(), Some("https" | "http")) && u.host().is_some_and(|h| !h.is_empty()));
        if !absolute || link.contains(['<', '>', '"']) {
            return Err(bad_link());
        }
        let value = HeaderValue::try_from(format!("<{link}>; rel=\"deprecation\"")).map_err(|_| bad_link())?;
        headers.push((http::header::LINK, value));
        Ok(Self { label: format!("{} {}", method, route), method, route, headers })
    }
}

/// `@<seconds>`: an RFC 9651 date, as RFC 9745 writes `Deprecation`.
trait WithAt {
    fn with_at(self) -> HeaderValue;
}

impl WithAt for HeaderValue {
    fn with_at(self) -> HeaderValue {
        let text = format!("@{}", self.to_str().unwrap_or("0"));
        HeaderValue::try_from(text).expect("digits")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Vec<Route> {
        vec![Route::new(Method::GET, "/web/v1/orders/{id}", "orders:read")]
    }

    fn entry(operation: &str, sunset: Option<&str>, link: &str) -> Config {
        Config {
            operation: operation.into(),
            since: "2026-12-01T00:00:00Z".into(),
            sunset: sunset.map(Into::into),
            link: link.into(),
        }
    }

    #[test]
    fn a_deprecated_operation_answers_with_rfc_9745_and_8594_headers() {
        let config = entry("GET /web/v1/orders/{id}", Some("2027-06-30T00:00:00Z"), "https://docs.example/migrate-v2");
        let deprecations = Deprecations::new(&[config], &routes()).expect("valid");
        assert!(deprecations.find(&Method::POST, "/web/v1/orders/{id}").is_none(), "another method is not deprecated");
        let mut headers = HeaderMap::new();
        let notice = deprecations.find(&Method::GET, "/web/v1/orders/{id}").expect("deprecated");
        notice.apply("acme", &mut headers);
        assert_eq!(headers["deprecation"], "@1796083200");
        assert_eq!(headers["sunset"], "Wed, 30 Jun 2027 00:00:00 GMT");
        assert_eq!(headers["link"], "<https://docs.example/migrate-v2>; rel=\"deprecation\"");
    }

    #[test]
    fn entries_naming_no_operation_a_bad_time_or_a_bad_link_are_refused() {
        let refused = |c: Config| Deprecations::new(&[c], &routes()).expect_err("refused");
        assert!(matches!(refused(entry("GET /web/v1/nothing", None, "https://x.example")), Error::UnknownOperation(_)));
        assert!(matches!(refused(entry("/web/v1/orders/{id}", None, "https://x.example")), Error::UnknownOperation(_)));
        assert!(matches!(
            refused(entry("GET /web/v1/orders/{id}", Some("next summer"), "https://x.example")),
            Error::BadTime { field: "sunset", .. }
        ));
        for link in ["docs/migrate", "ftp://x.example/a", "https://x.example/a>; rel=\"x\""] {
            assert!(matches!(refused(entry("GET /web/v1/orders/{id}", None, link)), Error::BadLink { .. }), "{link}");
        }
    }
}
