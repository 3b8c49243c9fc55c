//! HTTP caching of reads (RFC 9110 §8.8.3, §13.1.2; RFC 9111 §5.2.2.7):
//! every successful JSON `GET` answer carries a weak `ETag` naming its
//! content, and a request whose `If-None-Match` names it again gets
//! `304 Not Modified` without the body, which is what saves a phone on a
//! slow network re-reading an order that has not changed.
//!
//! The tag is a hash of the JSON (XXH3-128: a specified, fast,
//! non-cryptographic hash; the reader can only make their own cache stale,
//! and SHA-256 cost a sixth of an order read's instructions), so every
//! replica of the tier gives the same answer the same tag, and it is weak
//! because the compression layer outside it may send the same JSON in
//! another encoding. Answers for a
//! signed-in caller are `Cache-Control: private, no-cache`: a shared cache
//! must not keep them, and a client revalidates each time (orders change
//! status any moment) at the cost of a 304.

use std::fmt::Write as _;

use axum::{
    body::Body,
    extract::Request,
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body::Body as _;
use platform::{principal::Principal, problem::Problem};

/// Largest answer that gets a tag; lists are pages, far smaller. A bigger
/// (or streamed) answer goes out untagged rather than held in memory.
const MAX_TAGGED_BYTES: u64 = 4 << 20;

/// Middleware: tags `GET` answers and answers 304 for a matching `If-None-Match`.
pub async fn etag(request: Request, next: Next) -> Response {
    if request.method() != Method::GET {
        return next.run(request).await;
    }
    let if_none_match = request.headers().get(header::IF_NONE_MATCH).cloned();
    let per_user = request.extensions().get::<Principal>().is_some();
    let response = next.run(request).await;
    let taggable = response.status() == StatusCode::OK
        && is_json(response.headers())
        && response.body().size_hint().exact().is_some_and(|n| n <= MAX_TAGGED_BYTES);
    if !taggable {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_TAGGED_BYTES as usize).await else {
        tracing::error!("an answer of known size could not be read");
        return Problem::internal().into_response();
    };
    let tag = tag_of(&bytes);
    let cache_control = if per_user { "private, no-cache" } else { "no-cache" };
    parts.headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control));
    if if_none_match.as_ref().is_some_and(|header| matches(header, &tag)) {
        let mut not_modified = StatusCode::NOT_MODIFIED.into_response();
        // RFC 9110 §15.4.5: the headers a 200 would have sent for caching.
        for name in [header::CACHE_CONTROL, header::VARY] {
            if let Some(value) = parts.headers.get(&name) {
                not_modified.headers_mut().insert(name, value.clone());
            }
        }
        not_modified.headers_mut().insert(header::ETAG, tag);
        return not_modified;
    }
    parts.headers.insert(header::ETAG, tag);
    Response::from_parts(parts, Body::from(bytes))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"))
}

/// `W/"<XXH3-128 of the body, 32 hex digits>"`.
fn tag_of(body: &[u8]) -> HeaderValue {
    let mut tag = String::with_capacity(36);
    // Writing to a String cannot fail.
    let _ = write!(tag, "W/\"{:032x}\"", xxhash_rust::xxh3::xxh3_128(body));
    HeaderValue::try_from(tag).expect("hex digits and quotes are a valid header value")
}

/// Weak comparison (RFC 9110 §13.1.2): `*`, or any listed tag with the same
/// opaque part, `W/` or not.
fn matches(if_none_match: &HeaderValue, tag: &HeaderValue) -> bool {
    let Ok(list) = if_none_match.to_str() else { return false };
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    let ours = opaque(tag.to_str().unwrap_or_default());
    list.trim() == "*" || list.split(',').any(|candidate| opaque(candidate) == ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_compares_weakly_and_accepts_lists_and_any() {
        let tag = tag_of(b"{}");
        let text = tag.to_str().expect("ascii").to_owned();
        let strong = text.trim_start_matches("W/").to_owned();
        for matching in [text.clone(), strong, format!("\"x\", {text}"), "*".into()] {
            assert!(matches(&HeaderValue::try_from(matching.as_str()).expect("header"), &tag), "{matching}");
        }
        assert!(!matches(&HeaderValue::from_static("W/\"0000\""), &tag));
        assert_eq!(tag_of(b"{}"), tag_of(b"{}"), "the same JSON, the same tag on every replica");
        assert_ne!(tag_of(b"{}"), tag_of(b"[]"));
    }
}
