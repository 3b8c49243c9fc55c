//! Errors of the experience tier and their one conversion to RFC 9457
//! problem+json. Process API statuses are mapped here, so a handler only
//! ever returns `Result<_, Error>` and never picks a status code itself.
//!
//! Which side failed decides what the caller learns: the caller's own
//! mistakes (400, 403, 404, 413, 415, 422) carry a detail written for them;
//! faults behind this tier (500, 503) carry none of the process tier's text,
//! only a request id to quote, and are logged here, once.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use platform::problem::{FieldError, Problem};
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// Seconds a caller should wait after a 503 when the process tier gave no hint.
const DEFAULT_RETRY_AFTER: u32 = 5;
/// Bounds on a `Retry-After` taken from the process tier's `RetryInfo`, so a
/// bad hint neither makes clients hammer nor makes them give up.
const RETRY_AFTER_BOUNDS: (u32, u32) = (1, 60);

/// What can go wrong answering an experience request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad query parameters (400).
    #[error("invalid query: {0:?}")]
    Invalid(Vec<FieldError>),
    /// The body is not the JSON this route takes: malformed, unknown
    /// fields, wrong types (400).
    #[error("malformed body: {detail}")]
    MalformedBody {
        /// What is wrong, for the caller; never serde's or the parser's own text.
        detail: String,
        /// The offending fields, when one can be named.
        errors: Vec<FieldError>,
    },
    /// The body is well-formed but its content is not acceptable, found
    /// here rather than by the process tier: a custom field that is not
    /// the audience's, read-only or of the wrong type (422).
    #[error("invalid input: {0:?}")]
    InvalidInput(Vec<FieldError>),
    /// A header the route reads has a value it cannot use (400).
    #[error("invalid header {header}: {message}")]
    InvalidHeader {
        /// The header's name.
        header: &'static str,
        /// What is wrong with it.
        message: &'static str,
    },
    /// The body is not declared as JSON (415).
    #[error("the body is not declared as application/json")]
    UnsupportedMediaType,
    /// An order file is neither CSV nor JSON lines (415).
    #[error("the file is neither text/csv nor application/x-ndjson")]
    UnsupportedFile,
    /// The body is over the limit (413).
    #[error("the body is over {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body could not be read off the connection (400): the client
    /// went away or sent a broken stream.
    #[error("the body could not be read")]
    UnreadableBody,
    /// The body stalled longer than the listener allows
    /// (`gateway.request_body_timeout`) and was cut off (408).
    #[error("the body stalled")]
    BodyTimeout,
    /// The principal may not use this audience's API: a partner route
    /// without a tenant (403).
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// The object does not exist for this caller (404). Someone else's
    /// object answers the same, so its existence does not leak.
    #[error("not found: {0}")]
    NotFound(&'static str),
    /// No verified principal reached the handler (a wiring fault, never the caller's).
    #[error("no verified principal on the request")]
    NoPrincipal,
    /// A process API call failed.
    #[error("process API call failed: {0}")]
    Process(#[from] Status),
}

impl Error {
    /// A process call made for query parameters (a list's page token, say):
    /// `INVALID_ARGUMENT` there means a bad parameter, which the contract
    /// answers with 400 rather than the 422 a bad body gets.
    pub fn from_query_status(status: Status) -> Self {
        if status.code() == Code::InvalidArgument {
            Error::Invalid(field_violations(&status))
        } else {
            Error::Process(status)
        }
    }

    /// A process call that looks up one object: its `NOT_FOUND` answers
    /// `detail`, the same words this tier uses when it hides someone
    /// else's object itself, so the two cannot be told apart.
    pub fn lookup(detail: &'static str) -> impl FnOnce(Status) -> Self {
        move |status| if status.code() == Code::NotFound { Error::NotFound(detail) } else { Error::Process(status) }
    }

    /// Whether retrying the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Process(s) if matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled))
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let problem = match self {
            Error::Invalid(errors) => Problem::bad_request("the request has invalid parameters", errors),
            Error::MalformedBody { detail, errors } => Problem::bad_request(detail, errors),
            Error::InvalidInput(errors) => invalid_input(errors),
            Error::InvalidHeader { header, message } => Problem::bad_request(
                format!("the {header} header {message}"),
                vec![FieldError { field: header.to_owned(), message: message.to_owned() }],
            ),
            Error::UnsupportedMediaType => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                "send the body as JSON with Content-Type: application/json",
            ),
            Error::UnsupportedFile => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                "send the file as text/csv or application/x-ndjson",
            ),
            Error::PayloadTooLarge { limit } => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
                format!("the body must not exceed {limit} bytes"),
            ),
            Error::UnreadableBody => Problem::bad_request("the body could not be read", Vec::new()),
            Error::BodyTimeout => Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "request-timeout",
                "Request timeout",
                "the request body stopped arriving; send it again without pauses",
            ),
            Error::Forbidden(detail) => Problem::forbidden(detail),
            Error::NotFound(detail) => Problem::not_found(detail),
            Error::NoPrincipal => {
                tracing::error!("handler reached without a verified principal");
                Problem::internal()
            }
            Error::Process(status) => problem_from_status(&status),
        };
        problem.into_response()
    }
}

/// 422: the request is well-formed, its content is not acceptable.
fn invalid_input(errors: Vec<FieldError>) -> Problem {
    let mut p = Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-input",
        "Invalid input",
        "the request is well-formed but its content is not acceptable",
    );
    p.errors = errors;
    p
}

/// The contract's mapping of process API statuses (see `order_to_cash.proto`).
fn problem_from_status(status: &Status) -> Problem {
    match status.code() {
        Code::InvalidArgument | Code::OutOfRange => invalid_input(field_violations(status)),
        // The process tier answers ALREADY_EXISTS only for an idempotency
        // key reused with another request, which the contract makes a 422.
        Code::AlreadyExists => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "Idempotency key reused",
            "this Idempotency-Key was already used with a different request; use a new key for a new request",
        ),
        Code::FailedPrecondition | Code::Aborted => {
            // PreconditionFailure descriptions are written for callers
            // ("the order is already shipped"); the status message is not
            // promised to be, so it stays in the log.
            let detail = status
                .get_error_details()
                .precondition_failure()
                .map(|pf| pf.violations.iter().map(|v| v.description.as_str()).collect::<Vec<_>>().join("; "))
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| "the object's current state does not allow this request".to_owned());
            tracing::info!(code = ?status.code(), message = status.message(), "state conflict");
            Problem::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
        }
        Code::NotFound => Problem::not_found("no such object"),
        // tonic reports its own client deadline (`process_timeout`) as
        // Cancelled, "Timeout expired": the process tier was too slow, which
        // a later retry with the same Idempotency-Key may not be.
        // RESOURCE_EXHAUSTED: a tier behind us is overloaded, which passes.
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted => {
            tracing::warn!(code = ?status.code(), message = status.message(), "process tier unavailable");
            Problem::unavailable("a backend is unavailable; retry later", retry_after(status))
        }
        code => {
            tracing::error!(?code, message = status.message(), "process API call failed");
            Problem::internal()
        }
    }
}

/// `BadRequest` field violations of `status`, as the problem's `errors`.
fn field_violations(status: &Status) -> Vec<FieldError> {
    status
        .get_error_details()
        .bad_request()
        .map(|br| {
            br.field_violations
                .iter()
                .map(|v| FieldError { field: v.field.clone(), message: v.description.clone() })
                .collect()
        })
        .unwrap_or_default()
}

/// `Retry-After` seconds: the process tier's `RetryInfo` hint when it gave
/// one, bounded, else the default.
fn retry_after(status: &Status) -> u32 {
    status
        .get_error_details()
        .retry_info()
        .and_then(|info| info.retry_delay)
        .map(|delay: Duration| {
            let secs = u32::try_from(delay.as_secs()).unwrap_or(u32::MAX);
            // Round up: "retry after 0.3 s" must not become "retry now".
            let secs = if delay.subsec_nanos() > 0 { secs.saturating_add(1) } else { secs };
            secs.clamp(RETRY_AFTER_BOUNDS.0, RETRY_AFTER_BOUNDS.1)
        })
        .unwrap_or(DEFAULT_RETRY_AFTER)
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use tonic_types::{ErrorDetails, FieldViolation};

    use super::*;

    async fn render(err: Error) -> (StatusCode, http::HeaderMap, serde_json::Value) {
        let response = err.into_response();
        let (parts, body) = response.into_parts();
        let bytes = to_bytes(body, 1 << 20).await.expect("body");
        (parts.status, parts.headers, serde_json::from_slice(&bytes).expect("problem json"))
    }

    fn invalid_argument() -> Status {
        let details = ErrorDetails::with_bad_request(vec![FieldViolation::new("lines[0].sku", "no such product")]);
        Status::with_error_details(Code::InvalidArgument, "sku NOPE not in ERP table products", details)
    }

    #[tokio::test]
    async fn process_statuses_map_to_the_contract() {
        let (status, headers, body) = render(Error::Process(invalid_argument())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(headers["content-type"], "application/problem+json");
        assert_eq!(body["errors"][0]["field"], "lines[0].sku");
        assert_eq!(body["errors"][0]["message"], "no such product");
        assert!(!body.to_string().contains("ERP table"), "the status message is internal: {body}");

        // Every code a process API can answer: the caller's problems are
        // 4xx, outages 503 with Retry-After, and only faults of ours
        // (including a tier refusing another tier's credential) 500.
        let cases = [
            (Code::InvalidArgument, 422),
            (Code::OutOfRange, 422),
            (Code::AlreadyExists, 422),
            (Code::FailedPrecondition, 409),
            (Code::Aborted, 409),
            (Code::NotFound, 404),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 503),
            (Code::Cancelled, 503),
            (Code::ResourceExhausted, 503),
            (Code::Internal, 500),
            (Code::Unknown, 500),
            (Code::PermissionDenied, 500),
            (Code::Unauthenticated, 500),
            (Code::Unimplemented, 500),
            (Code::DataLoss, 500),
        ];
        for (code, expected) in cases {
            let (status, headers, body) =
                render(Error::Process(Status::new(code, "secret internal text at 10.0.0.7"))).await;
            assert_eq!(status.as_u16(), expected, "{code:?}");
            assert_eq!(body["status"], expected);
            assert!(!body.to_string().contains("10.0.0.7"), "{code:?} leaked: {body}");
            assert_eq!(headers.contains_key("retry-after"), expected == 503, "{code:?}");
        }
    }

    #[tokio::test]
    async fn a_precondition_failure_explains_itself_and_retry_info_sets_retry_after() {
        let details =
            ErrorDetails::with_precondition_failure_violation("STATE", "ord_1", "the order is already shipped");
        let status = Status::with_error_details(Code::FailedPrecondition, "row locked", details);
        let (_, _, body) = render(Error::Process(status)).await;
        assert_eq!(body["detail"], "the order is already shipped");

        let details = ErrorDetails::with_retry_info(Some(Duration::from_millis(2500)));
        let status = Status::with_error_details(Code::Unavailable, "erp down", details);
        let (_, headers, _) = render(Error::Process(status)).await;
        assert_eq!(headers["retry-after"], "3");
        let details = ErrorDetails::with_retry_info(Some(Duration::from_secs(3600)));
        let status = Status::with_error_details(Code::Unavailable, "erp down", details);
        assert_eq!(render(Error::Process(status)).await.1["retry-after"], "60");
    }

    #[tokio::test]
    async fn invalid_argument_on_a_query_stays_a_400() {
        let (status, _, body) = render(Error::from_query_status(invalid_argument())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["errors"][0]["field"], "lines[0].sku");
        let (status, _, _) = render(Error::from_query_status(Status::unavailable("down"))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn a_lookup_names_what_was_not_found() {
        let (status, _, body) = render(Error::lookup("no such order")(Status::not_found("row 7 missing"))).await;
        assert_eq!((status, body["detail"].as_str()), (StatusCode::NOT_FOUND, Some("no such order")));
        let (status, _, _) = render(Error::lookup("no such order")(Status::unavailable("down"))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn body_and_caller_errors_have_their_own_statuses() {
        assert_eq!(render(Error::UnsupportedMediaType).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let (status, _, body) = render(Error::PayloadTooLarge { limit: 65536 }).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["type"], "https://erp-connect.dev/problems/payload-too-large");
        assert_eq!(render(Error::Forbidden("no tenant")).await.0, StatusCode::FORBIDDEN);
        assert_eq!(render(Error::NotFound("no such order")).await.0, StatusCode::NOT_FOUND);
        assert_eq!(render(Error::NoPrincipal).await.0, StatusCode::INTERNAL_SERVER_ERROR);
        let (status, _, body) =
            render(Error::InvalidHeader { header: "Idempotency-Key", message: "must be 1 to 255 visible characters" })
                .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["errors"][0]["field"], "Idempotency-Key");
    }
}
