//! RFC 9457 problem details: the one error body every HTTP response of the
//! product uses. `type` URIs are stable; `detail` is written for the caller
//! and never carries internal text (SQL, backend URLs, stacks).
//!
//! When traces are exported, a body also names the trace it was answered
//! in (`trace_id`), so that a ticket quoting it leads to the trace.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

/// Base of every problem `type` URI.
pub const TYPE_BASE: &str = "https://erp-connect.dev/problems/";

/// One invalid input field.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    /// Name of the field or query parameter, e.g. `page_size`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// An `application/problem+json` body.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// Stable URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind of problem; the same for every occurrence.
    pub title: &'static str,
    /// The HTTP status, repeated in the body.
    pub status: u16,
    /// What went wrong this time, for the caller.
    pub detail: String,
    /// Invalid fields, for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Seconds after which a retry may succeed (sent as `Retry-After`).
    #[serde(skip)]
    pub retry_after: Option<u32>,
    /// The `WWW-Authenticate` challenge for 401 answers.
    #[serde(skip)]
    pub www_authenticate: Option<&'static str>,
    /// The trace this answer belongs to (32 hex digits), when traces are
    /// exported; filled in when the response is made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

impl Problem {
    /// A problem of kind `slug` (appended to [`TYPE_BASE`]).
    pub fn new(status: StatusCode, slug: &str, title: &'static str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("{TYPE_BASE}{slug}"),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
            www_authenticate: None,
            trace_id: None,
        }
    }

    /// 400 with the offending fields.
    pub fn bad_request(detail: impl Into<String>, errors: Vec<FieldError>) -> Self {
        let mut p = Self::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request", detail);
        p.errors = errors;
        p
    }

    /// 401 with a Bearer challenge.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let mut p = Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", detail);
        p.www_authenticate = Some("Bearer realm=\"erp-connect\"");
        p
    }

    /// 403: the credential is valid but does not allow this.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    /// 404 for unknown routes and objects.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// 405 for a known path with another method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            "this path does not accept that method",
        )
    }

    /// 503: a backend is down; the caller may retry after `retry_after` seconds.
    pub fn unavailable(detail: impl Into<String>, retry_after: u32) -> Self {
        let mut p = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable", detail);
        p.retry_after = Some(retry_after);
        p
    }

    /// 500 with no internal detail; the cause is logged where it happened.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the request could not be completed; quote the x-request-id header when reporting it",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(mut self) -> Response {
        if self.trace_id.is_none() {
            self.trace_id = crate::telemetry::current_trace_id();
        }
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // Serializing this struct cannot fail: every field is a string, number or list of them.
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut res = (status, body).into_response();
        let headers = res.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(challenge) = self.www_authenticate {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        res
    }
}
