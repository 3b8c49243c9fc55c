//! Errors of the experience tier and their one conversion to RFC 9457
//! problem+json. Process API statuses are mapped here, so a handler only
//! ever returns `Result<_, Error>`.

use axum::response::{IntoResponse, Response};
use platform::problem::{FieldError, Problem};
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// What can go wrong answering an experience request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad query parameters or body fields.
    #[error("invalid request: {0:?}")]
    Invalid(Vec<FieldError>),
    /// No verified principal reached the handler (a wiring fault, never the caller's).
    #[error("no verified principal on the request")]
    NoPrincipal,
    /// A process API call failed.
    #[error("process API call failed: {0}")]
    Process(#[from] Status),
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let problem = match self {
            Error::Invalid(errors) => Problem::bad_request("the request has invalid parameters", errors),
            Error::NoPrincipal => {
                tracing::error!("handler reached without a verified principal");
                Problem::internal()
            }
            Error::Process(status) => problem_from_status(&status),
        };
        problem.into_response()
    }
}

fn problem_from_status(status: &Status) -> Problem {
    match status.code() {
        Code::InvalidArgument => {
            let errors = status
                .get_error_details()
                .bad_request()
                .map(|br| {
                    br.field_violations
                        .iter()
                        .map(|v| FieldError { field: v.field.clone(), message: v.description.clone() })
                        .collect()
                })
                .unwrap_or_default();
            Problem::bad_request("the request has invalid parameters", errors)
        }
        Code::NotFound => Problem::not_found("no such object"),
        Code::Unavailable | Code::DeadlineExceeded => {
            tracing::warn!(code = ?status.code(), message = status.message(), "process tier unavailable");
            Problem::unavailable("a backend is unavailable; retry later", 5)
        }
        code => {
            tracing::error!(?code, message = status.message(), "process API call failed");
            Problem::internal()
        }
    }
}
