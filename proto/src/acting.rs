//! Who a call to a process API acts for: the experience tier names the
//! signed-in caller (an operator's or a user's subject, a partner key's id)
//! in the `erp-actor` metadata of the calls that change state, and the
//! process tier writes it on its audit trail. Metadata rather than a field
//! in each request message: it is the same for every call, and the
//! messages' v1 shapes stay as they are. Trusted as far as the caller is:
//! the process tier is reached only by the experience tier and internal
//! services with a service token.

/// The metadata key.
pub const METADATA: &str = "erp-actor";

/// Who a call without the metadata acts for: an internal service calling
/// the process API directly.
pub const UNNAMED: &str = "service";

/// `message` as a request on behalf of `actor` (left unnamed when `actor`
/// cannot be sent as metadata).
pub fn request<T>(message: T, actor: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = actor.parse() {
        request.metadata_mut().insert(METADATA, value);
    }
    request
}

/// The actor a request names, or [`UNNAMED`].
pub fn of<T>(request: &tonic::Request<T>) -> String {
    request
        .metadata()
        .get(METADATA)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .unwrap_or(UNNAMED)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_actor_travels_in_metadata_and_its_absence_is_named() {
        assert_eq!(of(&request((), "alice")), "alice");
        assert_eq!(of(&tonic::Request::new(())), UNNAMED);
        assert_eq!(of(&request((), "bad\nvalue")), UNNAMED);
    }
}
