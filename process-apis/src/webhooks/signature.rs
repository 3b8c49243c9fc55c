//! Standard Webhooks v1 signing: an endpoint's secret is `whsec_` and the
//! base64 of random bytes; a delivery is signed with HMAC-SHA256 over
//! `<webhook-id>.<webhook-timestamp>.<body>`, sent as
//! `webhook-signature: v1,<base64>`, several space-separated while two
//! secrets are valid (the rotated one's grace period), so receivers holding
//! either verify.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The prefix of every endpoint secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a secret we create: above the specification's minimum
/// of 24.
const SECRET_BYTES: usize = 32;
/// The fewest bytes a secret may have.
const MIN_SECRET_BYTES: usize = 24;

/// Why a secret could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not `whsec_` + base64 of at least 24 bytes.
    #[error("a webhook secret is whsec_ followed by the base64 of at least {MIN_SECRET_BYTES} bytes")]
    Malformed,
    /// The system could not give random bytes.
    #[error("no randomness for a webhook secret")]
    NoRandomness,
}

/// An endpoint's signing secret. Its `Debug` shows nothing of it: secrets
/// never reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A new random secret.
    pub fn generate() -> Result<Self, Error> {
        let mut bytes = vec![0; SECRET_BYTES];
        getrandom::fill(&mut bytes).map_err(|_| Error::NoRandomness)?;
        Ok(Self(bytes))
    }

    /// A secret as `whsec_...` text.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let encoded = text.strip_prefix(SECRET_PREFIX).ok_or(Error::Malformed)?;
        let bytes = STANDARD.decode(encoded).map_err(|_| Error::Malformed)?;
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(Error::Malformed);
        }
        Ok(Self(bytes))
    }

    /// The `whsec_...` text, shown to the endpoint's owner once.
    pub fn to_text(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// `v1,<base64 HMAC-SHA256>` of `id.timestamp.body`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        // HMAC takes keys of any length; this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header value: one signature per valid secret,
/// space-separated, the current secret's first.
pub fn signature_header(secrets: &[&Secret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets.iter().map(|s| s.sign(id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's example, which the `standardwebhooks` package
    /// from PyPI signs the same way.
    #[test]
    fn the_specifications_example_signs_as_published() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid");
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, br#"{"test": 2432232314}"#),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn two_secrets_sign_side_by_side_and_any_change_changes_the_signature() {
        let (old, new) = (Secret::generate().expect("random"), Secret::generate().expect("random"));
        let header = signature_header(&[&new, &old], "msg_1", 1_700_000_000, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts, [new.sign("msg_1", 1_700_000_000, b"{}"), old.sign("msg_1", 1_700_000_000, b"{}")]);
        assert_ne!(new.sign("msg_1", 1_700_000_000, b"{}"), new.sign("msg_2", 1_700_000_000, b"{}"));
        assert_ne!(new.sign("msg_1", 1_700_000_000, b"{}"), new.sign("msg_1", 1_700_000_001, b"{}"));
        assert_ne!(new.sign("msg_1", 1_700_000_000, b"{}"), new.sign("msg_1", 1_700_000_000, b"{ }"));
    }

    #[test]
    fn secrets_round_trip_and_short_or_foreign_ones_are_refused() {
        let secret = Secret::generate().expect("random");
        let text = secret.to_text();
        assert!(text.starts_with("whsec_") && text.len() > 40, "{text}");
        assert_eq!(Secret::parse(&text), Ok(secret.clone()));
        assert_ne!(Secret::generate().expect("random"), secret, "random");
        assert_eq!(format!("{secret:?}"), "Secret(..)", "never printed");
        for bad in ["", "whsec_", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_!!!!", "whsec_c2hvcnQ="] {
            assert_eq!(Secret::parse(bad), Err(Error::Malformed), "{bad}");
        }
    }
}
