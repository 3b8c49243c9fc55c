//! `x-request-id` on every response: the caller's own id when it is a sane
//! token, a fresh ULID otherwise, so a support ticket can quote it.

use axum::{extract::Request, middleware::Next, response::Response};
use http::{HeaderName, HeaderValue};

/// The request id header.
pub static HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest caller-supplied id kept.
const MAX_LEN: usize = 128;

fn is_acceptable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_LEN
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Middleware: ensures the request has an acceptable id and echoes it.
pub async fn ensure(mut request: Request, next: Next) -> Response {
    let id = match request.headers().get(&HEADER) {
        Some(v) if is_acceptable(v) => v.clone(),
        _ => {
            let minted = HeaderValue::try_from(ulid::Ulid::new().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
            request.headers_mut().insert(HEADER.clone(), minted.clone());
            minted
        }
    };
    let mut response = next.run(request).await;
    response.headers_mut().insert(HEADER.clone(), id);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_ids_are_kept() {
        assert!(is_acceptable(&HeaderValue::from_static("req-42_a.b:c")));
        assert!(!is_acceptable(&HeaderValue::from_static("")));
        assert!(!is_acceptable(&HeaderValue::from_static("has space")));
        assert!(!is_acceptable(&HeaderValue::from_str(&"x".repeat(129)).expect("ascii")));
    }
}
