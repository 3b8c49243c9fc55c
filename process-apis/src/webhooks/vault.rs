//! Endpoint secrets at rest. A secret must be read back to sign, so it
//! cannot be hashed; it is sealed with AES-256-GCM under the deployment's
//! key (`webhooks.secret_key`; dev mode keeps one in the data directory),
//! bound to its endpoint's id, so a sealed secret copied onto another
//! endpoint's row does not open.

use base64::{Engine, engine::general_purpose::STANDARD};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use super::signature::Secret;

/// Seals and opens endpoint secrets.
pub struct Vault(LessSafeKey);

/// Why a sealed secret does not open.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not sealed with this key for this endpoint, or damaged.
    #[error("the endpoint's secret does not open with the configured webhooks.secret_key")]
    Sealed,
    /// The system's random source failed.
    #[error("no randomness for a nonce")]
    Random,
}

impl Vault {
    /// A vault over a 32-byte key.
    pub fn new(key: &[u8; 32]) -> Self {
        // A 32-byte key is always a valid AES-256 key.
        Self(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("32 bytes")))
    }

    /// `secret` sealed for `endpoint_id`: base64 of nonce, ciphertext, tag.
    pub fn seal(&self, endpoint_id: &str, secret: &Secret) -> Result<String, Error> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| Error::Random)?;
        let mut sealed = secret.to_text().into_bytes();
        self.0
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(endpoint_id), &mut sealed)
            .map_err(|_| Error::Sealed)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(STANDARD.encode(out))
    }

    /// The secret `sealed` holds for `endpoint_id`.
    pub fn open(&self, endpoint_id: &str, sealed: &str) -> Result<Secret, Error> {
        let bytes = STANDARD.decode(sealed).map_err(|_| Error::Sealed)?;
        if bytes.len() < NONCE_LEN {
            return Err(Error::Sealed);
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Error::Sealed)?;
        let mut rest = rest.to_vec();
        let text = self.0.open_in_place(nonce, Aad::from(endpoint_id), &mut rest).map_err(|_| Error::Sealed)?;
        Secret::parse(std::str::from_utf8(text).map_err(|_| Error::Sealed)?).map_err(|_| Error::Sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_for_its_endpoint() {
        let vault = Vault::new(&[7; 32]);
        let secret = Secret::generate().expect("random");
        let sealed = vault.seal("whe_1", &secret).expect("seal");
        assert!(!sealed.contains(&secret.to_text()[6..]), "the secret is not readable in the row");
        assert_eq!(vault.open("whe_1", &sealed).expect("open").to_text(), secret.to_text());
        assert!(vault.open("whe_2", &sealed).is_err(), "moved to another endpoint");
        assert!(Vault::new(&[8; 32]).open("whe_1", &sealed).is_err(), "another key");
        assert!(vault.open("whe_1", "AAAA").is_err());
        assert_ne!(vault.seal("whe_1", &secret).expect("seal"), sealed, "a fresh nonce each time");
    }
}
