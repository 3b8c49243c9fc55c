//! The caller's deadline, carried from hop to hop so that no call a tier
//! makes on a caller's behalf outlives the caller's own patience.
//!
//! A gRPC caller states its deadline in the `grpc-timeout` header (tonic
//! sends it for `Request::set_timeout`, and [`with_grpc_timeout`] adds the
//! channel's own when a call gives none). [`layer`] reads it on the way in
//! and keeps the deadline for the handler's task; [`bounded`] then cuts a
//! tier's configured timeout for a downstream call (the process tier's
//! system timeout, the ERP connector's attempt deadline) to what is left
//! of it. Work a tier does for itself, such as a saga step in the
//! background, has no caller's deadline and keeps its configured one.

use std::{
    task::{Context, Poll},
    time::Duration,
};

use futures_util::future::Either;
use http::{HeaderMap, HeaderValue};
use tokio::{task::futures::TaskLocalFuture, time::Instant};

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Header in which gRPC callers state their timeout.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// What is left of the caller's deadline, if the task serves a caller
/// that stated one (zero once it has passed).
pub fn remaining() -> Option<Duration> {
    DEADLINE.try_with(|deadline| deadline.saturating_duration_since(Instant::now())).ok()
}

/// `timeout`, cut to what is left of the caller's deadline.
pub fn bounded(timeout: Duration) -> Duration {
    remaining().map_or(timeout, |left| left.min(timeout))
}

/// Runs `work` as on behalf of a caller with `timeout` left, e.g. to
/// give a batch job's calls one deadline.
pub fn scope<F: std::future::Future>(timeout: Duration, work: F) -> TaskLocalFuture<Instant, F> {
    DEADLINE.scope(Instant::now() + timeout, work)
}

/// Parses a `grpc-timeout` value: at most 8 digits and a unit (`H`, `M`,
/// `S`, `m`, `u`, `n`).
pub fn parse_grpc_timeout(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `timeout` as a `grpc-timeout` value, in milliseconds (rounded up, so a
/// deadline never grows) or, past 8 digits of them, in seconds.
pub fn grpc_timeout_value(timeout: Duration) -> HeaderValue {
    let millis = timeout.as_nanos().div_ceil(1_000_000);
    let text =
        if millis < 100_000_000 { format!("{millis}m") } else { format!("{}S", timeout.as_secs().min(99_999_999)) };
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("99999999S"))
}

/// Adds `grpc-timeout: timeout` to a call that states no deadline of its own.
pub fn with_grpc_timeout(headers: &mut HeaderMap, timeout: Duration) {
    if !headers.contains_key(GRPC_TIMEOUT) {
        headers.insert(GRPC_TIMEOUT, grpc_timeout_value(timeout));
    }
}

/// A tower layer for a gRPC server: each call with a `grpc-timeout` runs
/// with that deadline for [`remaining`] and [`bounded`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Layer;

impl<S> tower::Layer<S> for Layer {
    type Service = Service<S>;

    fn layer(&self, inner: S) -> Service<S> {
        Service(inner)
    }
}

/// See [`Layer`].
#[derive(Debug, Clone)]
pub struct Service<S>(S);

impl<S, B> tower::Service<http::Request<B>> for Service<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, TaskLocalFuture<Instant, S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        match request.headers().get(GRPC_TIMEOUT).and_then(parse_grpc_timeout) {
            Some(timeout) => Either::Right(DEADLINE.scope(Instant::now() + timeout, self.0.call(request))),
            None => Either::Left(self.0.call(request)),
        }
    }
}

/// `routes` with [`Layer`].
pub fn grpc_server(routes: tonic::service::Routes) -> tonic::service::Routes {
    tonic::service::Routes::from(routes.into_axum_router().layer(Layer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_and_print_as_the_protocol_says() {
        let parse = |s: &'static str| parse_grpc_timeout(&HeaderValue::from_static(s));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "123456789m", "5s", "-5S", "5.5S"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout_value(Duration::from_secs(5)), "5000m");
        assert_eq!(grpc_timeout_value(Duration::from_micros(1500)), "2m", "rounded up");
        assert_eq!(grpc_timeout_value(Duration::from_secs(200_000)), "200000S");
    }

    #[tokio::test]
    async fn the_layer_gives_the_handler_the_deadline_its_caller_stated() {
        use tower::{Layer as _, ServiceExt};
        let handler =
            tower::service_fn(|_: http::Request<()>| async { Ok::<_, std::convert::Infallible>(remaining()) });
        let service = Layer.layer(handler);
        let stated = http::Request::builder().header(GRPC_TIMEOUT, "250m").body(()).expect("request");
        let left = service.clone().oneshot(stated).await.expect("answer").expect("a deadline");
        assert!(left <= Duration::from_millis(250) && left > Duration::from_millis(200), "{left:?}");
        let none = http::Request::builder().body(()).expect("request");
        assert_eq!(service.oneshot(none).await.expect("answer"), None);
    }

    #[tokio::test]
    async fn a_callers_deadline_bounds_the_calls_made_for_it_and_nothing_else() {
        assert_eq!(bounded(Duration::from_secs(5)), Duration::from_secs(5), "no caller, no cut");
        let cut =
            DEADLINE.scope(Instant::now() + Duration::from_secs(2), async { bounded(Duration::from_secs(5)) }).await;
        assert!(cut <= Duration::from_secs(2) && cut > Duration::from_secs(1), "{cut:?}");
        let kept =
            DEADLINE.scope(Instant::now() + Duration::from_secs(60), async { bounded(Duration::from_secs(5)) }).await;
        assert_eq!(kept, Duration::from_secs(5), "never longer than the tier's own timeout");
        let passed = DEADLINE.scope(Instant::now(), async { bounded(Duration::from_secs(5)) }).await;
        assert_eq!(passed, Duration::ZERO);
    }
}
