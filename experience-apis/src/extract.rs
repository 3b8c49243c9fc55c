//! Extractors every audience shares: who is calling ([`Caller`]), the id in
//! a path ([`ObjectId`]) and the `Idempotency-Key` header
//! ([`IdempotencyKey`]). Each rejects with the tier's [`Error`], so a bad
//! request is a problem+json like every other answer.

use axum::extract::{FromRequestParts, Path};
use http::request::Parts;
use platform::principal::Principal;

use crate::error::Error;

/// The principal the gateway verified.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Error> {
        parts.extensions.get::<Principal>().cloned().map(Caller).ok_or(Error::NoPrincipal)
    }
}

/// Longest id accepted in a path; real ones are far shorter.
const MAX_ID_LEN: usize = 128;

/// The `{id}` of a path, checked to look like an id of ours or the ERP's.
///
/// Anything else cannot name an object, so it answers 404 without a call
/// to the process tier, and odd bytes never reach its logs or queries.
#[derive(Debug, Clone)]
pub struct ObjectId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ObjectId {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let Path(id) = Path::<String>::from_request_parts(parts, state).await.map_err(|rejection| {
            tracing::error!(error = %rejection, "route without an {{id}} or with a bad one");
            Error::NotFound("no such object")
        })?;
        if is_plausible_id(&id) { Ok(ObjectId(id)) } else { Err(Error::NotFound("no such object")) }
    }
}

fn is_plausible_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// The `Idempotency-Key` header (IETF httpapi draft), or a fresh ULID when
/// the request has none: the process tier needs a key on every create, and
/// a fresh one promises nothing, which is right for a caller that sent none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The key.
    pub key: String,
    /// Whether the caller sent it (false: minted here).
    pub from_caller: bool,
}

/// The draft's header name.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Longest key accepted; UUIDs and ULIDs are well under it.
const MAX_KEY_LEN: usize = 255;

impl IdempotencyKey {
    /// Parses the header's value. The draft defines it as a structured
    /// field string (`"abc"`, quoted); most clients send it bare, so both
    /// are accepted.
    pub fn parse(value: Option<&http::HeaderValue>) -> Result<Self, Error> {
        let Some(value) = value else {
            return Ok(IdempotencyKey { key: ulid::Ulid::new().to_string(), from_caller: false });
        };
        let invalid =
            || Error::InvalidHeader { header: "Idempotency-Key", message: "must be 1 to 255 visible ASCII characters" };
        let text = value.to_str().map_err(|_| invalid())?;
        let text = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
        if text.is_empty() || text.len() > MAX_KEY_LEN || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid());
        }
        Ok(IdempotencyKey { key: text.to_owned(), from_caller: true })
    }

    /// The key as sent to the process tier, in the namespace of one client.
    ///
    /// The process tier scopes keys by tenant, but several clients can share
    /// a tenant (every web shop customer is tenant "web"); two customers
    /// who both send key "1" must neither collide nor see each other's orders.
    pub fn scoped_to(&self, client: &str) -> String {
        format!("{client}/{}", self.key)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Error> {
        let mut values = parts.headers.get_all(IDEMPOTENCY_KEY).iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(Error::InvalidHeader { header: "Idempotency-Key", message: "must be given once" });
        }
        IdempotencyKey::parse(first)
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn keys_are_taken_bare_or_quoted_and_minted_when_absent() {
        let bare = IdempotencyKey::parse(Some(&HeaderValue::from_static("8e03978e-40d5"))).expect("bare");
        assert_eq!(bare, IdempotencyKey { key: "8e03978e-40d5".into(), from_caller: true });
        let quoted = IdempotencyKey::parse(Some(&HeaderValue::from_static("\"8e03978e-40d5\""))).expect("quoted");
        assert_eq!(quoted.key, "8e03978e-40d5");
        let minted = IdempotencyKey::parse(None).expect("minted");
        assert!(!minted.from_caller && minted.key.len() == 26);
        assert_ne!(minted.key, IdempotencyKey::parse(None).expect("minted").key);
        assert_eq!(bare.scoped_to("web:alice"), "web:alice/8e03978e-40d5");
    }

    #[test]
    fn empty_long_and_odd_keys_are_refused() {
        for value in ["", "\"\"", "has space", &"k".repeat(256)] {
            let header = HeaderValue::from_str(value).expect("header");
            assert!(matches!(IdempotencyKey::parse(Some(&header)), Err(Error::InvalidHeader { .. })), "{value:?}");
        }
        let latin1 = HeaderValue::from_bytes(b"caf\xe9").expect("header");
        assert!(IdempotencyKey::parse(Some(&latin1)).is_err());
    }

    #[test]
    fn only_id_like_path_segments_are_ids() {
        for ok in ["ord_01JDX3", "42", "INV-000045", "shp.1:a"] {
            assert!(is_plausible_id(ok), "{ok}");
        }
        for bad in ["", "a b", "../etc", "x;drop", &"a".repeat(129), "ü"] {
            assert!(!is_plausible_id(bad), "{bad}");
        }
    }
}
