//! JSON request bodies: declared as JSON, at most [`MAX_BODY`] bytes, and
//! refused with a problem that names the field when they do not fit the
//! route's type. And JSON answers ([`Json`]).
//!
//! Written here rather than taken from `axum::Json` because its rejections
//! are plain text and quote serde's messages, and the contract wants
//! problem+json with a caller-sized explanation: which field, and what it
//! should have been.

use axum::{
    body::Body,
    extract::{FromRequest, Request},
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use platform::problem::FieldError;
use serde::{Serialize, de::DeserializeOwned};

use crate::error::Error;

/// Largest request body accepted: an order of a few hundred lines fits
/// easily, and nothing larger has a reason to reach the process tier.
pub const MAX_BODY: usize = 64 * 1024;

/// A JSON answer (`application/json`).
///
/// In place of `axum::Json`, which serialises through a `BytesMut` writer
/// grown from 128 bytes: every few bytes of output a `BufMut` round trip,
/// and a copy at each growth. Here the JSON goes into one `Vec` that
/// starts at a size most answers fit, handed to the body without a copy;
/// a products page of 20 costs a fifth fewer instructions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

/// What a JSON answer's buffer starts at: an order or a short page.
const ANSWER_CAPACITY: usize = 4096;

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        let mut json = Vec::with_capacity(ANSWER_CAPACITY);
        match serde_json::to_writer(&mut json, &self.0) {
            Ok(()) => ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], json).into_response(),
            Err(err) => {
                // Only a type whose Serialize fails gets here (a map with
                // non-string keys, say): a bug, not the caller's doing.
                tracing::error!(error = %err, "an answer could not be written as JSON");
                platform::problem::Problem::internal().into_response()
            }
        }
    }
}

/// A required JSON body of type `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

/// An optional JSON body: an empty body is `None` whatever its content
/// type, so `curl -X POST` with no data works for routes that take options.
#[derive(Debug)]
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Error> {
        // The content type first: a form post or a stray upload is told
        // what to send before its bytes are read.
        if !is_json(request.headers()) {
            return Err(Error::UnsupportedMediaType);
        }
        let bytes = read_limited(request.into_body()).await?;
        parse(&bytes).map(JsonBody)
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = Error;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Error> {
        let json = is_json(request.headers());
        let bytes = read_limited(request.into_body()).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(None));
        }
        if !json {
            return Err(Error::UnsupportedMediaType);
        }
        // A JSON `null` says "no body" as plainly as an empty one.
        if bytes.trim_ascii() == b"null" {
            return Ok(OptionalJsonBody(None));
        }
        parse(&bytes).map(|v| OptionalJsonBody(Some(v)))
    }
}

/// `application/json` or any `application/*+json`, parameters ignored.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The whole body, refusing it as soon as it passes [`MAX_BODY`] so an
/// oversized upload is never buffered in full.
async fn read_limited(body: Body) -> Result<Vec<u8>, Error> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(Error::PayloadTooLarge { limit: MAX_BODY }),
        Err(err) if stalled(err.as_ref()) => Err(Error::BodyTimeout),
        Err(err) => {
            tracing::info!(error = %err, "request body could not be read");
            Err(Error::UnreadableBody)
        }
    }
}

/// Whether a body's error is the listener cutting off a stalled body
/// (`platform::shutdown::serve_http`), wrapped as it may be.
pub(crate) fn stalled(err: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(err), |e| e.source()).any(|e| e.is::<tower_http::timeout::TimeoutError>())
}

/// Parses `bytes` as one JSON value of type `T`.
///
/// Every body of this API is a JSON object. serde would also build a
/// struct from an array of its fields in order; that undocumented form is
/// refused at the top level, where a client could plausibly send it.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Err(malformed("the request needs a JSON body", Vec::new())),
        Some(b'{') => {}
        Some(_) => return Err(malformed("the body must be a JSON object", Vec::new())),
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(describe)?;
    // Trailing bytes after the value are as malformed as a missing brace.
    deserializer.end().map_err(|e| syntax_error(&e))?;
    Ok(value)
}

fn malformed(detail: impl Into<String>, errors: Vec<FieldError>) -> Error {
    Error::MalformedBody { detail: detail.into(), errors }
}

fn syntax_error(err: &serde_json::Error) -> Error {
    malformed(format!("the body is not valid JSON (line {}, column {})", err.line(), err.column()), Vec::new())
}

/// Turns a deserialization error into a field and a message of our own.
///
/// serde's messages follow a small, stable set of templates (`unknown
/// field`, `missing field`, `invalid type: …, expected …`); each is
/// recognised and rephrased, and anything unrecognised gets a generic
/// message rather than serde's words.
fn describe(err: serde_path_to_error::Error<serde_json::Error>) -> Error {
    let path = err.path().to_string();
    let inner = err.into_inner();
    if !inner.is_data() {
        return syntax_error(&inner);
    }
    // serde_json appends " at line L column C"; only the template matters.
    let text = inner.to_string();
    let text = text.rsplit_once(" at line ").map_or(text.as_str(), |(head, _)| head);
    let join = |name: &str| if path == "." { name.to_owned() } else { format!("{path}.{name}") };
    let (field, message) = if text.starts_with("unknown field `") {
        // serde_path_to_error's path already ends in the unknown key.
        (path.clone(), "unknown field".to_owned())
    } else if let Some(name) = backticked(text, "missing field `") {
        (join(name), "is required".to_owned())
    } else if let Some(name) = backticked(text, "duplicate field `") {
        (join(name), "is given more than once".to_owned())
    } else if text.starts_with("unknown variant `") {
        let allowed = text.split_once("expected ").map_or("", |(_, rest)| rest);
        let names: Vec<&str> = allowed.split('`').skip(1).step_by(2).collect();
        (path.clone(), format!("must be one of: {}", names.join(", ")))
    } else if text.starts_with("invalid type: ") || text.starts_with("invalid value: ") {
        let expected = text.split_once(", expected ").map_or("", |(_, rest)| rest);
        (path.clone(), format!("must be {}", plain_expectation(expected)))
    } else if text.starts_with("invalid length ") {
        (path.clone(), "has the wrong number of elements".to_owned())
    } else {
        (path.clone(), "has an invalid value".to_owned())
    };
    let field = if field == "." { "body".to_owned() } else { field };
    let detail = format!("the body does not fit this request: {field} {message}");
    malformed(detail, vec![FieldError { field, message }])
}

/// The text between `prefix` and the next backtick, if `text` starts with `prefix`.
fn backticked<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.strip_prefix(prefix)?.split('`').next()
}

/// serde's name of an expected type, in the words of a JSON API.
fn plain_expectation(expected: &str) -> &'static str {
    match expected {
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "isize" | "usize" => "an integer",
        "f32" | "f64" => "a number",
        "a string" | "a borrowed string" | "a character" => "a string",
        "a boolean" => "true or false",
        "a sequence" => "an array",
        e if e.starts_with("struct ") || e == "a map" => "an object",
        e if e.starts_with("internally tagged enum") || e.starts_with("enum ") => "an object",
        _ => "of another type",
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // fields are read through Debug only
    struct Thing {
        name: String,
        items: Vec<Item>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        count: i64,
    }

    fn field_error(result: Result<Thing, Error>) -> (String, String, String) {
        match result {
            Err(Error::MalformedBody { detail, errors }) => {
                let e = errors
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| FieldError { field: String::new(), message: String::new() });
                (detail, e.field, e.message)
            }
            other => panic!("expected a malformed body, got {other:?}"),
        }
    }

    #[test]
    fn type_errors_name_the_field_in_our_own_words() {
        let (detail, field, message) = field_error(parse(br#"{"name": "x", "items": [{"count": "3"}]}"#));
        assert_eq!((field.as_str(), message.as_str()), ("items[0].count", "must be an integer"));
        assert!(!detail.contains("i64") && !detail.contains("line"), "{detail}");
        let (_, field, message) = field_error(parse(br#"{"name": "x", "items": [{"count": 1.5}]}"#));
        assert_eq!((field.as_str(), message.as_str()), ("items[0].count", "must be an integer"));
        let (_, field, message) = field_error(parse(br#"{"name": 7, "items": []}"#));
        assert_eq!((field.as_str(), message.as_str()), ("name", "must be a string"));
        let (_, field, message) = field_error(parse(br#"{"name": "x", "items": {}}"#));
        assert_eq!((field.as_str(), message.as_str()), ("items", "must be an array"));
        let (detail, _, _) = field_error(parse(br#"["x", []]"#));
        assert_eq!(detail, "the body must be a JSON object");
    }

    #[test]
    fn unknown_missing_and_repeated_fields_are_named() {
        let (_, field, message) = field_error(parse(br#"{"name": "x", "items": [], "colour": "red"}"#));
        assert_eq!((field.as_str(), message.as_str()), ("colour", "unknown field"));
        let (_, field, message) = field_error(parse(br#"{"name": "x", "items": [{"count": 1, "extra": 2}]}"#));
        assert_eq!((field.as_str(), message.as_str()), ("items[0].extra", "unknown field"));
        let (_, field, message) = field_error(parse(br#"{"items": []}"#));
        assert_eq!((field.as_str(), message.as_str()), ("name", "is required"));
        let (_, field, message) = field_error(parse(br#"{"name": "x", "name": "y", "items": []}"#));
        assert_eq!((field.as_str(), message.as_str()), ("name", "is given more than once"));
    }

    #[test]
    fn broken_json_is_reported_by_position_only() {
        for bytes in [
            &br#"{"name": "x", "items": [}"#[..],
            br#"{"name": "x""#,
            b"",
            b"  ",
            br#"{"name": "x", "items": []} trailing"#,
        ] {
            let Err(Error::MalformedBody { detail, errors }) = parse::<Thing>(bytes) else {
                panic!("{:?} must be malformed", String::from_utf8_lossy(bytes));
            };
            assert!(errors.is_empty());
            assert!(detail.contains("JSON"), "{detail}");
        }
        assert!(parse::<Thing>(br#" {"name": "x", "items": [{"count": 2}]} "#).is_ok());
    }

    fn request(content_type: Option<&str>, body: Vec<u8>) -> Request {
        let mut builder = http::Request::post("/");
        if let Some(ct) = content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        builder.body(Body::from(body)).expect("request")
    }

    #[tokio::test]
    async fn the_content_type_and_size_are_checked() {
        let ok = br#"{"name": "x", "items": []}"#.to_vec();
        for ct in
            ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/merge-patch+json"]
        {
            let extracted = JsonBody::<Thing>::from_request(request(Some(ct), ok.clone()), &()).await;
            assert!(extracted.is_ok(), "{ct}");
        }
        for ct in [None, Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("application/jsonp")] {
            let extracted = JsonBody::<Thing>::from_request(request(ct, ok.clone()), &()).await;
            assert!(matches!(extracted, Err(Error::UnsupportedMediaType)), "{ct:?}");
        }
        let mut big = br#"{"name": ""#.to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_BODY));
        big.extend(br#"", "items": []}"#);
        let extracted = JsonBody::<Thing>::from_request(request(Some("application/json"), big), &()).await;
        assert!(matches!(extracted, Err(Error::PayloadTooLarge { limit: MAX_BODY })));
    }

    #[tokio::test]
    async fn an_optional_body_may_be_empty_whatever_its_type() {
        let none = OptionalJsonBody::<Thing>::from_request(request(None, Vec::new()), &()).await.expect("empty");
        assert!(none.0.is_none());
        let some = OptionalJsonBody::<Thing>::from_request(
            request(Some("application/json"), br#"{"name": "x", "items": []}"#.to_vec()),
            &(),
        )
        .await
        .expect("json");
        assert!(some.0.is_some());
        let null = OptionalJsonBody::<Thing>::from_request(request(Some("application/json"), b" null ".to_vec()), &())
            .await
            .expect("null");
        assert!(null.0.is_none());
        let untyped = OptionalJsonBody::<Thing>::from_request(request(None, b"{}".to_vec()), &()).await;
        assert!(matches!(untyped, Err(Error::UnsupportedMediaType)));
    }
}
