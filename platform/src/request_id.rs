//! `x-request-id` on every response: the caller's own id when it is a sane
//! token, a fresh ULID otherwise, so a support ticket can quote it.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use axum::{extract::Request, response::Response};
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

/// Layer: ensures every request has an acceptable id and echoes it on the
/// response. A plain service (no boxing, no per-request clone of the inner
/// service), since it wraps every request of every tier.
#[derive(Debug, Clone, Copy, Default)]
pub struct Layer;

impl<S> tower::Layer<S> for Layer {
    type Service = Service<S>;

    fn layer(&self, inner: S) -> Service<S> {
        Service { inner }
    }
}

/// [`Layer`]'s service.
#[derive(Debug, Clone)]
pub struct Service<S> {
    inner: S,
}

impl<S> tower::Service<Request> for Service<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let id = match request.headers().get(&HEADER) {
            Some(v) if is_acceptable(v) => v.clone(),
            _ => {
                let minted = HeaderValue::try_from(ulid::Ulid::new().to_string())
                    .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
                request.headers_mut().insert(HEADER.clone(), minted.clone());
                minted
            }
        };
        ResponseFuture { inner: self.inner.call(request), id: Some(id) }
    }
}

pin_project_lite::pin_project! {
    /// [`Service`]'s future: the inner answer with the id echoed.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        id: Option<HeaderValue>,
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = std::task::ready!(this.inner.poll(cx));
        if let (Ok(response), Some(id)) = (&mut result, this.id.take()) {
            response.headers_mut().insert(HEADER.clone(), id);
        }
        Poll::Ready(result)
    }
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
