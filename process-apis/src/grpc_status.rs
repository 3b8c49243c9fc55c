//! The gRPC statuses with details that every process API answers alike,
//! built once here so each module's error enum converts to them the same
//! way (the experience tier reads the details back into problem+json).

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `INVALID_ARGUMENT` naming every bad field in `BadRequest` details.
pub fn invalid_argument(errors: &[(String, String)]) -> Status {
    let mut details = ErrorDetails::new();
    for (field, message) in errors {
        details.add_bad_request_violation(field.clone(), message.clone());
    }
    let summary = errors.iter().map(|(f, m)| format!("{f}: {m}")).collect::<Vec<_>>().join("; ");
    Status::with_error_details(Code::InvalidArgument, summary, details)
}

/// `FAILED_PRECONDITION` with one `PreconditionFailure` violation.
pub fn failed_precondition(kind: &str, subject: &str, description: String) -> Status {
    let mut details = ErrorDetails::new();
    details.add_precondition_failure_violation(kind, subject, description.clone());
    Status::with_error_details(Code::FailedPrecondition, description, details)
}
